//! The text formats of S3 Batch Operations, pure: the CSV manifest a job
//! reads (`S3BatchOperations_CSV_20180820`), the client request token that
//! makes a job's creation idempotent, and the completion report a job
//! writes (`Report_CSV_20180820`: a `manifest.json` naming result CSVs).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// What a manifest key keeps as is: RFC 3986's unreserved characters and
/// `/`. Everything else, commas, quotes, newlines, `%` and `+` included, is
/// percent-encoded, so a key can neither break a CSV row nor decode into
/// another key (AWS: "object keys must be URL-encoded").
const KEY: &AsciiSet =
    &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// One object of a Batch Operations manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRow {
    /// The source bucket.
    pub bucket: String,
    /// The source key, as is (encoded when written).
    pub key: String,
    /// The source version, pinned when known.
    pub version: Option<String>,
}

/// The CSV manifest of `rows`: `Bucket,Key[,VersionId]` per line, keys
/// URL-encoded. `with_versions` writes the third column (every row must then
/// carry a version: AWS reads one field list for the whole manifest).
pub fn manifest_csv(rows: &[ManifestRow], with_versions: bool) -> Vec<u8> {
    let mut out = String::new();
    for row in rows {
        out.push_str(&row.bucket);
        out.push(',');
        out.push_str(&encode_key(&row.key));
        if with_versions {
            out.push(',');
            out.extend(utf8_percent_encode(row.version.as_deref().unwrap_or(""), KEY));
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// A key as a manifest row holds it (URL-encoded): the exact string a
/// completion report echoes in its key field.
pub fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, KEY).to_string()
}

/// The `ClientRequestToken` of a job: the SHA-256 of its manifest and
/// settings, hex (64 characters, AWS's limit). The same plan and settings
/// give the same token, so a re-run gets the job it created before instead
/// of a second one.
pub fn client_token(manifest: &[u8], settings: &str) -> String {
    let mut h = Sha256::new();
    h.update((manifest.len() as u64).to_be_bytes());
    h.update(manifest);
    h.update(settings.as_bytes());
    hex_lower(&h.finalize())
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One task of a completion report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskResult {
    /// The source bucket.
    pub bucket: String,
    /// The source key, decoded.
    pub key: String,
    /// The key field exactly as the report holds it (still encoded): a
    /// task answers a manifest row only when this is the row's string.
    pub key_field: String,
    /// The source version, if the manifest named one.
    pub version: Option<String>,
    /// Whether the task succeeded (`TaskStatus` = `succeeded`).
    pub succeeded: bool,
    /// The error code of a failed task (`AccessDenied`, `PreconditionFailed`...).
    pub error_code: Option<String>,
    /// The HTTP status of the task's request.
    pub http_status: Option<u16>,
    /// The result message (for a failure: the reason).
    pub message: String,
}

/// A completion report's result files, as its `manifest.json` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// Each result CSV: its bucket (the name, from the ARN) and key.
    pub files: Vec<(String, String)>,
}

/// Reads a completion report's `manifest.json`: the (bucket, key) of each
/// result CSV. An unreadable manifest is an error naming what is wrong.
pub fn parse_report_manifest(text: &[u8]) -> std::result::Result<ReportFiles, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Manifest {
        format: Option<String>,
        results: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        bucket: String,
        key: String,
    }
    let m: Manifest = serde_json::from_slice(text)
        .map_err(|e| format!("the completion report's manifest.json is not valid: {e}"))?;
    if let Some(f) = &m.format
        && f != "Report_CSV_20180820"
    {
        return Err(format!("the completion report has format {f}, expected Report_CSV_20180820"));
    }
    let files = m
        .results
        .into_iter()
        .map(|e| {
            let bucket = e.bucket.rsplit(':').next().unwrap_or(&e.bucket).to_string();
            (bucket, e.key)
        })
        .collect();
    Ok(ReportFiles { files })
}

/// Parses one result CSV of a completion report (`Bucket, Key, VersionId,
/// TaskStatus, ErrorCode, HTTPStatusCode, ResultMessage`; fields may be
/// quoted, a quoted field may hold commas, quotes and newlines). Returns the
/// tasks read and a problem for each line that could not be read: a report
/// is input, never trusted to be well formed.
pub fn parse_report_csv(text: &str) -> (Vec<TaskResult>, Vec<String>) {
    let mut tasks = Vec::new();
    let mut problems = Vec::new();
    for (n, record) in csv_records(text).into_iter().enumerate() {
        let fields = match record {
            Ok(f) => f,
            Err(e) => {
                problems.push(format!("line {}: {e}", n + 1));
                continue;
            }
        };
        if fields.len() == 1 && fields[0].is_empty() {
            continue;
        }
        match task(&fields) {
            Ok(t) => tasks.push(t),
            Err(e) => problems.push(format!("line {}: {e}", n + 1)),
        }
    }
    (tasks, problems)
}

fn task(fields: &[String]) -> std::result::Result<TaskResult, String> {
    if fields.len() < 4 {
        return Err(format!("{} field(s), expected at least 4", fields.len()));
    }
    let key = percent_decode_str(&fields[1])
        .decode_utf8()
        .map_err(|_| "the key is not URL-encoded UTF-8".to_string())?
        .into_owned();
    let succeeded = match fields[3].as_str() {
        "succeeded" => true,
        "failed" => false,
        other => return Err(format!("task status {other:?} is neither succeeded nor failed")),
    };
    let opt = |i: usize| fields.get(i).filter(|s| !s.is_empty()).cloned();
    let http_status = match opt(5) {
        Some(s) => {
            Some(s.parse::<u16>().map_err(|_| format!("HTTP status {s:?} is not a number"))?)
        }
        None => None,
    };
    Ok(TaskResult {
        bucket: fields[0].clone(),
        key,
        key_field: fields[1].clone(),
        version: opt(2),
        succeeded,
        error_code: opt(4),
        http_status,
        message: fields.get(6..).map(|m| m.join(",")).unwrap_or_default(),
    })
}

/// Splits RFC 4180 CSV text into records of fields. A quote left open ends
/// its record with an error.
fn csv_records(text: &str) -> Vec<std::result::Result<Vec<String>, String>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut at_start = true;
        let mut ended = false;
        let mut error = None;
        while let Some(c) = chars.next() {
            if quoted {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        field.push('"');
                    } else {
                        quoted = false;
                    }
                } else {
                    field.push(c);
                }
                continue;
            }
            match c {
                '"' if at_start => {
                    quoted = true;
                    at_start = false;
                }
                ',' => {
                    fields.push(std::mem::take(&mut field));
                    at_start = true;
                }
                '\r' if chars.peek() == Some(&'\n') => {}
                '\n' => {
                    ended = true;
                    break;
                }
                c => {
                    field.push(c);
                    at_start = false;
                }
            }
        }
        if quoted {
            error = Some("a quoted field is not closed".to_string());
        }
        fields.push(field);
        let _ = ended;
        out.push(match error {
            Some(e) => Err(e),
            None => Ok(fields),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn quote(s: &str) -> String {
        format!("\"{}\"", s.replace('"', "\"\""))
    }

    #[test]
    fn manifest_encodes_keys_that_would_break_a_row() {
        let rows = vec![ManifestRow {
            bucket: "b".into(),
            key: "a,b\nc%d e+f\"g/h".into(),
            version: None,
        }];
        let csv = String::from_utf8(manifest_csv(&rows, false)).unwrap();
        assert_eq!(csv, "b,a%2Cb%0Ac%25d%20e%2Bf%22g/h\n");
    }

    #[test]
    fn manifest_pins_versions() {
        let rows =
            vec![ManifestRow { bucket: "b".into(), key: "k".into(), version: Some("v1".into()) }];
        assert_eq!(manifest_csv(&rows, true), b"b,k,v1\n");
    }

    #[test]
    fn token_is_64_chars_and_follows_the_plan() {
        let a = client_token(b"b,k\n", "s");
        assert_eq!(a.len(), 64);
        assert_eq!(a, client_token(b"b,k\n", "s"));
        assert_ne!(a, client_token(b"b,k2\n", "s"));
        assert_ne!(a, client_token(b"b,k\n", "t"));
    }

    #[test]
    fn reads_aws_documented_report_lines() {
        let text = "src,a%20b,,succeeded,,200,Successful\n\
                    src,c,v2,failed,AccessDenied,403,\"Access Denied, really\"\n";
        let (tasks, problems) = parse_report_csv(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].key, "a b");
        assert!(tasks[0].succeeded);
        assert_eq!(tasks[1].version.as_deref(), Some("v2"));
        assert_eq!(tasks[1].error_code.as_deref(), Some("AccessDenied"));
        assert_eq!(tasks[1].http_status, Some(403));
        assert_eq!(tasks[1].message, "Access Denied, really");
    }

    #[test]
    fn bad_lines_are_problems_not_panics() {
        let text =
            "src,k\nsrc,k,,maybe,,200,x\nsrc,%FF,,failed,,500,x\nsrc,k,,failed,,abc,x\n\"open";
        let (tasks, problems) = parse_report_csv(text);
        assert!(tasks.is_empty());
        assert_eq!(problems.len(), 5, "{problems:?}");
    }

    #[test]
    fn reads_the_report_manifest() {
        let m = br#"{"Format":"Report_CSV_20180820","ReportCreationDate":"2019-04-05T17:48:39.725Z",
            "Results":[{"TaskExecutionStatus":"succeeded","Bucket":"arn:aws:s3:::escrow-batch",
            "MD5Checksum":"x","Key":"p/job-1/results/a.csv"}],"ReportSchema":"Bucket, Key, VersionId, TaskStatus, ErrorCode, HTTPStatusCode, Result"}"#;
        let files = parse_report_manifest(m).unwrap();
        assert_eq!(files.files, vec![("escrow-batch".into(), "p/job-1/results/a.csv".into())]);
        assert!(parse_report_manifest(b"{").is_err());
        assert!(parse_report_manifest(br#"{"Format":"Other","Results":[]}"#).is_err());
    }

    proptest! {
        /// Any key written into a manifest, echoed by a report as AWS echoes
        /// it, reads back as the same key, with its status and message.
        #[test]
        fn report_round_trips_any_key(
            key in "\\PC{0,40}|[,\"\n\r%+ a-z/]{0,20}",
            ok in any::<bool>(),
            message in "[^\u{0}]{0,30}",
        ) {
            let row = ManifestRow { bucket: "src".into(), key: key.clone(), version: None };
            let line = String::from_utf8(manifest_csv(&[row], false)).unwrap();
            let line = line.trim_end_matches('\n');
            prop_assert_eq!(line.matches(',').count(), 1);
            let status = if ok { "succeeded,,200" } else { "failed,InternalError,500" };
            let text = format!("{line},,{status},{}\n", quote(&message));
            let (tasks, problems) = parse_report_csv(&text);
            prop_assert!(problems.is_empty(), "{:?}", problems);
            prop_assert_eq!(tasks.len(), 1);
            prop_assert_eq!(&tasks[0].key, &key);
            prop_assert_eq!(&tasks[0].key_field, &encode_key(&key));
            prop_assert_eq!(tasks[0].succeeded, ok);
            prop_assert_eq!(&tasks[0].message, &message);
        }

        /// Arbitrary report text never panics, and every line is either a
        /// task or a problem.
        #[test]
        fn any_report_text_parses_without_panic(text in "\\PC{0,200}|[,\"\n%a-z0-9]{0,200}") {
            let (tasks, problems) = parse_report_csv(&text);
            prop_assert!(tasks.len() + problems.len() <= text.len() + 1);
        }
    }
}
