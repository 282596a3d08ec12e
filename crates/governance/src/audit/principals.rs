//! Who a policy document admits: trust policies, bucket policies and key
//! policies, read for principals outside the escrow account.
//!
//! Only `Allow` statements grant anything. A statement admits its
//! `Principal` (a string `"*"`, or an object whose `AWS` / `Service` /
//! `Federated` / `CanonicalUser` entries are a string or a list), or, with
//! `NotPrincipal`, everyone but those named. An `AWS` principal is `*`, a
//! bare account id, or an ARN whose fifth field is the account. Service
//! principals (`ec2.amazonaws.com`) are AWS itself and fine. A federated
//! principal is fine when it is an identity provider ARN of the escrow
//! account; a provider named by host (`accounts.google.com`,
//! `cognito-identity.amazonaws.com`) admits identities from outside. A `*`
//! principal is narrowed by a condition that pins the caller's account
//! (`aws:PrincipalAccount`, `aws:SourceAccount`, `kms:CallerAccount`,
//! `aws:SourceOwner`, or the account in `aws:PrincipalArn` /
//! `aws:SourceArn`) under a plain `StringEquals` / `StringLike` /
//! `ArnEquals` / `ArnLike` operator.

use serde_json::Value;

/// One principal a policy admits from outside the escrow account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outsider {
    /// The principal as written (`arn:aws:iam::111111111111:root`, `*`...).
    pub principal: String,
    /// Its account, when the principal names one.
    pub account: Option<String>,
}

impl Outsider {
    fn new(principal: impl Into<String>, account: Option<String>) -> Self {
        Outsider { principal: principal.into(), account }
    }

    /// How a finding names it: the primary account said as such.
    pub fn describe(&self, primary: &str) -> String {
        match self.account.as_deref() {
            Some(a) if a == primary && self.principal == a => {
                format!("the primary account {a}")
            }
            Some(a) if a == primary => format!("{} (the primary account {a})", self.principal),
            Some(a) if self.principal == a => format!("account {a}"),
            Some(a) => format!("{} (account {a})", self.principal),
            None if self.principal == "*" => "everyone (*)".to_string(),
            None => self.principal.clone(),
        }
    }
}

/// A policy document as IAM returns it: URL-encoded JSON (RFC 3986) in
/// ListRoles / GetRole, plain JSON elsewhere. Accepts both.
pub(crate) fn parse_document(text: &str) -> Result<Value, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).map_err(|e| format!("not valid JSON: {e}"));
    }
    let decoded = percent_decode(text)?;
    serde_json::from_str(&decoded).map_err(|e| format!("not valid JSON once URL-decoded: {e}"))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-escape at byte {i}"))?;
                out.push(hex);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|e| format!("not UTF-8 once URL-decoded: {e}"))
}

/// The principals outside `own` (the escrow account) that `doc` allows, in
/// document order, without repeats.
pub(crate) fn outsiders(doc: &Value, own: &str) -> Vec<Outsider> {
    let mut out = Vec::new();
    let statements: Vec<&Value> = match doc.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    for st in statements {
        let allow = st
            .get("Effect")
            .and_then(Value::as_str)
            .is_some_and(|e| e.eq_ignore_ascii_case("allow"));
        if !allow {
            continue;
        }
        let pinned = pinned_accounts(st.get("Condition"));
        if let Some(not) = st.get("NotPrincipal") {
            let named = principal_strings(not).into_iter().map(|(_, v)| v).collect::<Vec<_>>();
            push(
                &mut out,
                Outsider::new(format!("everyone except {}", named.join(", ")), None),
                &pinned,
                own,
            );
            continue;
        }
        let Some(principal) = st.get("Principal") else { continue };
        for (kind, value) in principal_strings(principal) {
            if let Some(o) = judge(&kind, &value, own) {
                push(&mut out, o, &pinned, own);
            }
        }
    }
    out
}

/// Adds `o` unless a condition pins the caller to the escrow account (for
/// `*` and other account-less principals); a condition that pins other
/// accounts names them instead.
fn push(out: &mut Vec<Outsider>, o: Outsider, pinned: &Option<Vec<String>>, own: &str) {
    let found: Vec<Outsider> = match (o.account.is_none(), pinned) {
        (true, Some(accounts)) => accounts
            .iter()
            .filter(|a| a.as_str() != own)
            .map(|a| Outsider::new(a.clone(), account_of(a)))
            .collect(),
        _ => vec![o],
    };
    for f in found {
        if !out.contains(&f) {
            out.push(f);
        }
    }
}

/// `(kind, value)` for every principal in a `Principal` element.
fn principal_strings(p: &Value) -> Vec<(String, String)> {
    match p {
        Value::String(s) => vec![("AWS".to_string(), s.clone())],
        Value::Object(map) => map
            .iter()
            .flat_map(|(kind, v)| {
                let values: Vec<String> = match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a.iter().map(value_string).collect(),
                    other => vec![value_string(other)],
                };
                values.into_iter().map(move |s| (kind.clone(), s))
            })
            .collect(),
        other => vec![("AWS".to_string(), value_string(other))],
    }
}

fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether one principal is outside `own`; `None` when it is fine.
fn judge(kind: &str, value: &str, own: &str) -> Option<Outsider> {
    match kind {
        "Service" => None,
        "AWS" => {
            if value == "*" {
                return Some(Outsider::new("*", None));
            }
            match account_of(value) {
                Some(a) if a == own => None,
                account => Some(Outsider::new(value, account)),
            }
        }
        "Federated" => match account_of(value) {
            Some(a) if a == own => None,
            account => Some(Outsider::new(format!("federated {value}"), account)),
        },
        "CanonicalUser" => Some(Outsider::new(format!("canonical user {value}"), None)),
        other => Some(Outsider::new(format!("{other} {value}"), None)),
    }
}

/// The account a principal names: a bare 12-digit id, or the account field
/// of an ARN (`arn:aws:iam::111111111111:root`).
pub(crate) fn account_of(value: &str) -> Option<String> {
    let is_account = |s: &str| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit());
    if is_account(value) {
        return Some(value.to_string());
    }
    let mut parts = value.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let account = parts.nth(3)?;
    is_account(account).then(|| account.to_string())
}

const ACCOUNT_KEYS: &[&str] =
    &["aws:principalaccount", "aws:sourceaccount", "kms:calleraccount", "aws:sourceowner"];
const ARN_KEYS: &[&str] = &["aws:principalarn", "aws:sourcearn"];
const PINNING_OPERATORS: &[&str] =
    &["stringequals", "stringlike", "arnequals", "arnlike", "stringequalsignorecase"];

/// The accounts a statement's condition pins the caller to, if any.
fn pinned_accounts(condition: Option<&Value>) -> Option<Vec<String>> {
    let Some(Value::Object(ops)) = condition else { return None };
    let mut accounts: Option<Vec<String>> = None;
    for (op, keys) in ops {
        if !PINNING_OPERATORS.contains(&op.to_ascii_lowercase().as_str()) {
            continue;
        }
        let Value::Object(keys) = keys else { continue };
        for (key, values) in keys {
            let key = key.to_ascii_lowercase();
            let values: Vec<String> = match values {
                Value::Array(a) => a.iter().map(value_string).collect(),
                v => vec![value_string(v)],
            };
            let found: Vec<String> = if ACCOUNT_KEYS.contains(&key.as_str()) {
                values
            } else if ARN_KEYS.contains(&key.as_str()) {
                // An ARN without an account (a wildcard there) pins nothing.
                match values.iter().map(|v| account_of(v)).collect::<Option<Vec<_>>>() {
                    Some(a) => a,
                    None => continue,
                }
            } else {
                continue;
            };
            // Several pinning keys must all hold: keep what they share.
            accounts = Some(match accounts {
                None => found,
                Some(prev) => prev.into_iter().filter(|a| found.contains(a)).collect(),
            });
        }
    }
    accounts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OWN: &str = "222222222222";

    fn names(doc: Value) -> Vec<String> {
        outsiders(&doc, OWN).into_iter().map(|o| o.principal).collect()
    }

    #[test]
    fn url_encoded_and_plain_documents_parse() {
        let plain = r#"{"Version":"2012-10-17","Statement":[]}"#;
        let encoded = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(parse_document(plain).unwrap(), parse_document(encoded).unwrap());
        assert!(parse_document("%7B%ZZ").unwrap_err().contains("percent-escape"));
        assert!(parse_document("%7Bnot json").unwrap_err().contains("URL-decoded"));
    }

    #[test]
    fn accounts_come_from_ids_and_arns() {
        assert_eq!(account_of("111111111111").as_deref(), Some("111111111111"));
        assert_eq!(account_of("arn:aws:iam::111111111111:root").as_deref(), Some("111111111111"));
        assert_eq!(
            account_of("arn:aws:sts::111111111111:assumed-role/r/s").as_deref(),
            Some("111111111111")
        );
        assert_eq!(account_of("arn:aws:s3:::bucket"), None);
        assert_eq!(account_of("ec2.amazonaws.com"), None);
        assert_eq!(account_of("1111"), None);
    }

    #[test]
    fn every_principal_shape_is_read() {
        // A string principal.
        assert_eq!(names(json!({"Statement": {"Effect": "Allow", "Principal": "*"}})), ["*"]);
        // AWS as a string: own account fine, another named.
        assert!(
            names(json!({"Statement": [{"Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::222222222222:root"}}]}))
            .is_empty()
        );
        assert_eq!(
            names(json!({"Statement": [{"Effect": "Allow",
                "Principal": {"AWS": "111111111111"}}]})),
            ["111111111111"]
        );
        // AWS as a list, mixed with Service and Federated.
        let doc = json!({"Statement": [{"Effect": "Allow", "Principal": {
            "AWS": ["arn:aws:iam::222222222222:role/ops", "arn:aws:iam::333333333333:user/x", "*"],
            "Service": ["ec2.amazonaws.com", "lambda.amazonaws.com"],
            "Federated": "arn:aws:iam::222222222222:saml-provider/sso"}}]});
        assert_eq!(names(doc), ["arn:aws:iam::333333333333:user/x", "*"]);
        // A federated provider by host admits outsiders; one of another account too.
        let doc = json!({"Statement": [{"Effect": "Allow", "Principal": {
            "Federated": ["accounts.google.com", "arn:aws:iam::444444444444:oidc-provider/x"]}}]});
        assert_eq!(
            names(doc),
            [
                "federated accounts.google.com",
                "federated arn:aws:iam::444444444444:oidc-provider/x"
            ]
        );
        // Service principals alone are fine.
        assert!(
            names(json!({"Statement": [{"Effect": "Allow",
                "Principal": {"Service": "cloudtrail.amazonaws.com"}}]}))
            .is_empty()
        );
        // A canonical user cannot be placed.
        assert_eq!(
            names(json!({"Statement": [{"Effect": "Allow",
                "Principal": {"CanonicalUser": "abc123"}}]})),
            ["canonical user abc123"]
        );
    }

    #[test]
    fn deny_statements_grant_nothing_and_not_principal_grants_everyone_else() {
        let doc = json!({"Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:*"},
            {"Effect": "Allow", "NotPrincipal": {"AWS": "arn:aws:iam::222222222222:root"}}]});
        assert_eq!(names(doc), ["everyone except arn:aws:iam::222222222222:root"]);
    }

    #[test]
    fn conditions_pin_a_wildcard_to_accounts() {
        let pinned = |cond: Value| {
            names(json!({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                "Condition": cond}]}))
        };
        assert!(pinned(json!({"StringEquals": {"kms:CallerAccount": "222222222222"}})).is_empty());
        assert!(
            pinned(json!({"StringEquals": {"aws:PrincipalAccount": ["222222222222"]}})).is_empty()
        );
        assert!(
            pinned(json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::222222222222:role/*"}}))
                .is_empty()
        );
        assert_eq!(
            pinned(
                json!({"StringEquals": {"aws:SourceAccount": ["222222222222", "111111111111"]}})
            ),
            ["111111111111"]
        );
        // IfExists passes when the key is absent: it pins nothing.
        assert_eq!(
            pinned(json!({"StringEqualsIfExists": {"aws:PrincipalAccount": "222222222222"}})),
            ["*"]
        );
        // An account-scoped condition does not excuse a named outsider.
        let doc = json!({"Statement": [{"Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
            "Condition": {"StringEquals": {"sts:ExternalId": "x"}}}]});
        assert_eq!(names(doc), ["arn:aws:iam::111111111111:root"]);
    }

    #[test]
    fn the_primary_is_named_as_such() {
        let o = Outsider::new("arn:aws:iam::111111111111:root", Some("111111111111".into()));
        assert_eq!(
            o.describe("111111111111"),
            "arn:aws:iam::111111111111:root (the primary account 111111111111)"
        );
        assert_eq!(
            Outsider::new("111111111111", Some("111111111111".into())).describe("111111111111"),
            "the primary account 111111111111"
        );
        assert_eq!(Outsider::new("*", None).describe("111111111111"), "everyone (*)");
    }
}
