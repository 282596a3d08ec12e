//! Logs never carry a secret: every log line goes through [`redact`] on its
//! way to stderr, which masks AWS access key ids (`AKIA…`, `ASIA…`), the
//! values of `external_id`, `session_token`, `secret_access_key` and
//! security-token fields as the SDK's debug output prints them, and any
//! value registered with [`register_secret`] (the config's external id).
//!
//! The SDK already redacts secret keys and session tokens in its own debug
//! output, but at trace level it prints access key ids and, in the
//! AssumeRole provider's configuration, the external id.
//!
//! ```
//! let line = r#"access_key_id: "ASIATHPL2AOHGBCQVQHE", external_id: Some("x-1")"#;
//! assert_eq!(
//!     escrow_sync_cli::redact::redact(line),
//!     r#"access_key_id: "ASIA****************", external_id: Some("** redacted **")"#
//! );
//! ```

use std::io::Write;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Masks `secret` wherever it appears in a log line from now on (empty
/// strings are ignored).
pub fn register_secret(secret: &str) {
    if secret.is_empty() {
        return;
    }
    // As a JSON string escapes it too (`--log-format json`, `--output json`).
    let json = serde_json::to_string(secret).unwrap_or_default();
    let escaped = json.trim_start_matches('"').trim_end_matches('"');
    for form in [secret, escaped] {
        if let Ok(mut s) = SECRETS.write()
            && !form.is_empty()
            && !s.iter().any(|x| x == form)
        {
            s.push(form.to_string());
        }
    }
}

/// Fields whose quoted value is masked wherever they appear.
const FIELDS: [&str; 5] =
    ["external_id", "session_token", "secret_access_key", "x-amz-security-token", "ExternalId"];

/// `line` with secrets masked.
pub fn redact(line: &str) -> String {
    let mut out = mask_key_ids(line);
    for field in FIELDS {
        out = mask_field(&out, field);
    }
    if let Ok(secrets) = SECRETS.read() {
        for s in secrets.iter() {
            out = out.replace(s.as_str(), "** redacted **");
        }
    }
    out
}

/// `AKIA`/`ASIA` followed by 16 upper-case letters or digits: the key id
/// prefix is kept, the rest masked.
fn mask_key_ids(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < b.len() {
        let is_key = i + 20 <= b.len()
            && (b[i..].starts_with(b"AKIA") || b[i..].starts_with(b"ASIA"))
            && b[i + 4..i + 20].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if is_key {
            out.push_str(&line[i..i + 4]);
            out.push_str("****************");
            i += 20;
        } else {
            let ch = line[i..].chars().next().expect("a char");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// The quoted value after each `field` (`field: Some("v")`, `field: "v"`,
/// `field=v`, `field: v`) replaced by `** redacted **`.
fn mask_field(line: &str, field: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(at) = rest.find(field) {
        let (head, tail) = rest.split_at(at + field.len());
        out.push_str(head);
        // Skip separators and an optional `Some(`.
        let value_start =
            tail.find(|c: char| !matches!(c, ':' | '=' | ' ' | '"' | '\\')).unwrap_or(tail.len());
        let (sep, value) = tail.split_at(value_start);
        let (sep, value) = match value.strip_prefix("Some(\"").or(value.strip_prefix("Some(\\\"")) {
            Some(v) => (tail[..tail.len() - v.len()].to_string(), v),
            None => (sep.to_string(), value),
        };
        if value.starts_with("None") || value.starts_with("** redacted") || value.is_empty() {
            out.push_str(&sep);
            rest = value;
            continue;
        }
        // A JSON-escaped quote (`\"`) ends the value too.
        let end = value.find(['"', '\\', ',', ' ', '&', '\n', ')', '}']).unwrap_or(value.len());
        out.push_str(&sep);
        out.push_str("** redacted **");
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// A `tracing_subscriber` writer: each event is buffered, redacted and
/// written to stderr whole.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

/// One event's bytes, written (redacted) when dropped.
#[derive(Debug, Default)]
pub struct Buffered(Vec<u8>);

impl Write for Buffered {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().lock().write_all(redact(&text).as_bytes());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Buffered;

    fn make_writer(&'a self) -> Self::Writer {
        Buffered::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_fields_and_registered_secrets_are_masked() {
        let line = r#"Credentials { access_key_id: "AKIAIOSFODNN7EXAMPLE", secret_access_key: "** redacted **" } external_id: Some("abc-123"), session_token: Some("FQo/x+y"), ExternalId=abc-123&RoleArn=r"#;
        let out = redact(line);
        assert!(!out.contains("IOSFODNN7EXAMPLE") && !out.contains("abc-123"), "{out}");
        assert!(!out.contains("FQo/x+y"), "{out}");
        assert!(out.contains("AKIA****************") && out.contains("RoleArn=r"), "{out}");
        assert_eq!(
            redact("external_id: None, ASIA is a continent"),
            "external_id: None, ASIA is a continent"
        );
        // Error messages and JSON output: a TOML error quoting the line,
        // and the same inside a JSON string.
        let toml = "5 | external_id = \"ext-9f3\" x\n";
        assert!(!redact(toml).contains("ext-9f3"), "{}", redact(toml));
        let json = serde_json::json!({ "error": toml, "b": "external_id: Some(\"ext-9f3\")" });
        let out = redact(&json.to_string());
        assert!(!out.contains("ext-9f3"), "{out}");
        assert!(serde_json::from_str::<serde_json::Value>(&out).is_ok(), "{out}");
        register_secret("my-config-external-id");
        assert_eq!(redact("x my-config-external-id y"), "x ** redacted ** y");
    }

    #[test]
    fn a_secret_is_masked_in_json_lines_too() {
        register_secret(r#"ext"id\9"#);
        let line = serde_json::json!({ "fields": { "message": r#"role with ext"id\9 assumed"# } })
            .to_string();
        let out = redact(&line);
        assert!(!out.contains(r#"ext\"id"#), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["fields"]["message"], "role with ** redacted ** assumed");
    }
}
