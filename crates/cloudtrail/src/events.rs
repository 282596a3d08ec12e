//! The events of a CloudTrail log file, and which of them a query selects.
//!
//! A log file is `{"Records": [event, …]}`; each event is read into an
//! [`Event`] (its time, principal, source IP, name, resources and error
//! code, and the whole record). An [`EventQuery`] selects by time, event
//! name (a glob), principal (a glob over the caller's ARN and, for an
//! assumed role, the role's ARN), source IP (a CIDR) and, with
//! [`EventQuery::destructive`], the events in [`DESTRUCTIVE`]: those that
//! delete or weaken data or its protection.

use std::net::IpAddr;

use globset::{Glob, GlobMatcher};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;

use escrow_sync_core::{Error, Result};

use crate::time::parse_rfc3339;

/// The events `--destructive` selects, as (event source, event name) globs:
/// what deletes data or its copies, or weakens logging, keys, access or
/// protection. A call CloudTrail marks `readOnly` is never selected
/// (`ListAccessKeys` matches `*AccessKey*` but changes nothing).
/// `docs/forensics.md` lists the same pairs.
pub const DESTRUCTIVE: &[(&str, &str)] = &[
    // Data and its copies gone.
    ("*", "Delete*"),
    ("ec2.amazonaws.com", "DeregisterImage"),
    ("ec2.amazonaws.com", "TerminateInstances"),
    ("s3.amazonaws.com", "PutBucketLifecycle*"),
    ("dynamodb.amazonaws.com", "UpdateTimeToLive"),
    ("dynamodb.amazonaws.com", "UpdateContinuousBackups"),
    ("dynamodb.amazonaws.com", "UpdateTable"),
    ("rds.amazonaws.com", "ModifyDBInstance"),
    ("rds.amazonaws.com", "ModifyDBCluster"),
    // Logging and detection stopped or narrowed.
    ("cloudtrail.amazonaws.com", "StopLogging"),
    ("cloudtrail.amazonaws.com", "UpdateTrail"),
    ("cloudtrail.amazonaws.com", "PutEventSelectors"),
    ("config.amazonaws.com", "StopConfigurationRecorder"),
    ("cloudtrail.amazonaws.com", "StopEventDataStoreIngestion"),
    ("cloudtrail.amazonaws.com", "UpdateEventDataStore"),
    ("guardduty.amazonaws.com", "UpdateDetector"),
    ("guardduty.amazonaws.com", "DisassociateFromAdministratorAccount"),
    ("guardduty.amazonaws.com", "StopMonitoringMembers"),
    ("guardduty.amazonaws.com", "CreateFilter"),
    ("securityhub.amazonaws.com", "DisableSecurityHub"),
    ("securityhub.amazonaws.com", "BatchDisableStandards"),
    // Keys disabled or destroyed.
    ("kms.amazonaws.com", "ScheduleKeyDeletion"),
    ("kms.amazonaws.com", "DisableKey"),
    ("kms.amazonaws.com", "DisableKeyRotation"),
    ("kms.amazonaws.com", "CreateGrant"),
    ("kms.amazonaws.com", "RevokeGrant"),
    ("kms.amazonaws.com", "RetireGrant"),
    ("kms.amazonaws.com", "UpdateAlias"),
    ("kms.amazonaws.com", "ImportKeyMaterial"),
    // Access opened, credentials made, trust changed.
    ("*", "Put*Policy"),
    ("iam.amazonaws.com", "*AccessKey*"),
    ("iam.amazonaws.com", "UpdateAssumeRolePolicy"),
    ("iam.amazonaws.com", "Attach*Policy"),
    ("iam.amazonaws.com", "CreateLoginProfile"),
    ("iam.amazonaws.com", "UpdateLoginProfile"),
    ("iam.amazonaws.com", "DeactivateMFADevice"),
    ("iam.amazonaws.com", "Detach*Policy"),
    ("iam.amazonaws.com", "CreatePolicyVersion"),
    ("iam.amazonaws.com", "SetDefaultPolicyVersion"),
    ("iam.amazonaws.com", "Put*PermissionsBoundary"),
    ("iam.amazonaws.com", "AddUserToGroup"),
    ("iam.amazonaws.com", "CreateUser"),
    ("iam.amazonaws.com", "CreateRole"),
    ("iam.amazonaws.com", "CreateSAMLProvider"),
    ("iam.amazonaws.com", "UpdateSAMLProvider"),
    ("iam.amazonaws.com", "CreateOpenIDConnectProvider"),
    ("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress"),
    ("ec2.amazonaws.com", "ModifyInstanceAttribute"),
    ("ec2.amazonaws.com", "ModifySnapshotAttribute"),
    ("ec2.amazonaws.com", "ModifyImageAttribute"),
    ("rds.amazonaws.com", "ModifyDBSnapshotAttribute"),
    ("rds.amazonaws.com", "ModifyDBClusterSnapshotAttribute"),
    ("redshift.amazonaws.com", "AuthorizeSnapshotAccess"),
    ("redshift.amazonaws.com", "ModifyCluster"),
    ("redshift.amazonaws.com", "ModifyClusterSnapshot"),
    ("redshift.amazonaws.com", "DisableSnapshotCopy"),
    ("backup.amazonaws.com", "UpdateRecoveryPointLifecycle"),
    ("s3.amazonaws.com", "PutBucketAcl"),
    ("s3.amazonaws.com", "PutObjectAcl"),
    ("s3.amazonaws.com", "PutBucketPublicAccessBlock"),
    ("s3.amazonaws.com", "PutBucketOwnershipControls"),
    ("s3.amazonaws.com", "PutPublicAccessBlock"),
    ("organizations.amazonaws.com", "LeaveOrganization"),
    ("organizations.amazonaws.com", "DetachPolicy"),
    ("organizations.amazonaws.com", "RemoveAccountFromOrganization"),
    // Protection weakened.
    ("s3.amazonaws.com", "PutBucketVersioning"),
    ("s3.amazonaws.com", "PutBucketReplication"),
    ("s3.amazonaws.com", "PutBucketEncryption"),
    ("s3.amazonaws.com", "PutObjectLockConfiguration"),
    ("s3.amazonaws.com", "PutObjectRetention"),
    ("s3.amazonaws.com", "PutObjectLegalHold"),
    ("ec2.amazonaws.com", "UnlockSnapshot"),
    ("ec2.amazonaws.com", "DisableImageDeregistrationProtection"),
    ("ec2.amazonaws.com", "DisableEbsEncryptionByDefault"),
    ("ec2.amazonaws.com", "DisableSnapshotBlockPublicAccess"),
    ("rbin.amazonaws.com", "UnlockRule"),
    ("rbin.amazonaws.com", "UpdateRule"),
];

/// Whether an event of `source` named `name` is in [`DESTRUCTIVE`].
pub fn is_destructive(source: &str, name: &str) -> bool {
    DESTRUCTIVE.iter().any(|(s, n)| glob_match(s, source) && glob_match(n, name))
}

/// `*` any run of characters, the rest literal (the globs of [`DESTRUCTIVE`]).
fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else { return false };
            if rest.is_empty() {
                return true;
            }
            (0..=tail.len())
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob_match(rest, &tail[i..]))
        }
    }
}

/// The request parameters that name what an event acted on, in the order
/// they are shown.
const RESOURCE_PARAMETERS: &[&str] = &[
    "bucketName",
    "key",
    "name",
    "trailName",
    "tableName",
    "snapshotId",
    "imageId",
    "keyId",
    "userName",
    "roleName",
    "policyArn",
    "accessKeyId",
    "dBSnapshotIdentifier",
    "dBClusterSnapshotIdentifier",
    "snapshotIdentifier",
    "resourceArn",
];

/// One CloudTrail event.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Event {
    /// `eventTime` as logged (RFC 3339).
    pub time: String,
    /// `eventTime` in seconds since the epoch (0 when unreadable).
    #[serde(skip)]
    pub epoch: i64,
    /// Who called: the caller's ARN (for a role session, the session's), the
    /// account's root, or the AWS service that called on its behalf.
    pub principal: String,
    /// The role an assumed-role session belongs to, when it is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `sourceIPAddress` (an address, or a service's name).
    pub source_ip: String,
    /// `eventSource` (`s3.amazonaws.com`, …).
    pub event_source: String,
    /// `eventName`.
    pub event_name: String,
    /// `awsRegion`.
    pub region: String,
    /// `recipientAccountId`.
    pub account: String,
    /// What it acted on: `resources[].ARN`, then the request parameters
    /// that name a resource (`bucketName=…`).
    pub resources: Vec<String>,
    /// `errorCode`, when the call failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// `eventID`.
    pub event_id: String,
    /// Whether [`DESTRUCTIVE`] lists it and CloudTrail does not mark it
    /// `readOnly`.
    pub destructive: bool,
    /// The whole record, as logged.
    pub record: Value,
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    let mut at = v;
    for p in path {
        at = at.get(p)?;
    }
    match at {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Event {
    /// Reads one record of a log file.
    pub fn from_record(record: Value) -> Event {
        let s = |path: &[&str]| text(&record, path).unwrap_or_default();
        let time = s(&["eventTime"]);
        let account = s(&["recipientAccountId"]);
        let kind = s(&["userIdentity", "type"]);
        let principal = text(&record, &["userIdentity", "arn"])
            .or_else(|| match kind.as_str() {
                "Root" => text(&record, &["userIdentity", "accountId"])
                    .map(|a| format!("arn:aws:iam::{a}:root")),
                "AWSService" => text(&record, &["userIdentity", "invokedBy"]),
                _ => None,
            })
            .or_else(|| {
                text(&record, &["userIdentity", "principalId"]).map(|p| format!("{kind}:{p}"))
            })
            .unwrap_or_else(|| if kind.is_empty() { "unknown".into() } else { kind.clone() });
        let role = text(&record, &["userIdentity", "sessionContext", "sessionIssuer", "arn"]);
        let mut resources: Vec<String> = record
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| text(r, &["ARN"]).or_else(|| text(r, &["arn"])))
            .collect();
        if let Some(params) = record.get("requestParameters").filter(|p| p.is_object()) {
            for p in RESOURCE_PARAMETERS {
                if let Some(v) = text(params, &[p]) {
                    let shown = format!("{p}={v}");
                    if !resources.iter().any(|r| r.ends_with(&v)) {
                        resources.push(shown);
                    }
                }
            }
        }
        let event_source = s(&["eventSource"]);
        let event_name = s(&["eventName"]);
        Event {
            epoch: parse_rfc3339(&time).unwrap_or(0),
            time,
            principal,
            role,
            source_ip: s(&["sourceIPAddress"]),
            destructive: is_destructive(&event_source, &event_name)
                && !matches!(record.get("readOnly"), Some(Value::Bool(true)))
                && text(&record, &["readOnly"]).as_deref() != Some("true"),
            event_source,
            event_name,
            region: s(&["awsRegion"]),
            account,
            resources,
            error_code: text(&record, &["errorCode"]),
            event_id: s(&["eventID"]),
            record,
        }
    }
}

/// The events of a log file's (uncompressed) content; `Err` says why it is
/// not a log file.
pub fn parse_log_file(content: &[u8]) -> std::result::Result<Vec<Event>, String> {
    #[derive(serde::Deserialize)]
    struct LogFile {
        #[serde(rename = "Records")]
        records: Vec<Value>,
    }
    let file: LogFile = serde_json::from_slice(content).map_err(|e| e.to_string())?;
    Ok(file.records.into_iter().map(Event::from_record).collect())
}

/// Which events to list. Every condition set must hold.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    from: Option<i64>,
    to: Option<i64>,
    event_name: Option<(String, GlobMatcher)>,
    principal: Option<(String, GlobMatcher)>,
    source_ip: Option<IpNet>,
    destructive: bool,
}

fn glob(what: &str, pattern: &str) -> Result<(String, GlobMatcher)> {
    Glob::new(pattern).map(|g| (pattern.to_string(), g.compile_matcher())).map_err(|e| {
        Error::invalid_config(format!(
            "{what} {pattern:?} is not a glob ({e}): use * for any characters, e.g. 'Delete*'"
        ))
    })
}

impl EventQuery {
    /// Every event.
    pub fn new() -> Self {
        EventQuery::default()
    }

    /// Only events at or after `secs` (epoch seconds).
    pub fn from(mut self, secs: i64) -> Self {
        self.from = Some(secs);
        self
    }

    /// Only events at or before `secs` (epoch seconds).
    pub fn to(mut self, secs: i64) -> Self {
        self.to = Some(secs);
        self
    }

    /// Only events whose name matches the glob (`Delete*`); an invalid glob
    /// is an error naming it.
    pub fn event_name(mut self, pattern: &str) -> Result<Self> {
        self.event_name = Some(glob("--event-name", pattern)?);
        Ok(self)
    }

    /// Only events whose caller's ARN, or the role of its session, matches
    /// the glob (`arn:aws:iam::*:user/*`).
    pub fn principal(mut self, pattern: &str) -> Result<Self> {
        self.principal = Some(glob("--principal", pattern)?);
        Ok(self)
    }

    /// Only events from an address in `cidr` (`203.0.113.0/24`, or one
    /// address); an event whose source is a service name never matches.
    pub fn source_ip(mut self, cidr: &str) -> Result<Self> {
        let net = cidr
            .parse::<IpNet>()
            .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| {
                Error::invalid_config(format!(
                    "--source-ip {cidr:?} is not an address or CIDR block: use e.g. \
                     203.0.113.7 or 203.0.113.0/24"
                ))
            })?;
        self.source_ip = Some(net);
        Ok(self)
    }

    /// Only the events in [`DESTRUCTIVE`].
    pub fn destructive(mut self, on: bool) -> Self {
        self.destructive = on;
        self
    }

    /// The time range asked for (epoch seconds).
    pub fn range(&self) -> (Option<i64>, Option<i64>) {
        (self.from, self.to)
    }

    /// Whether `e` is selected.
    pub fn matches(&self, e: &Event) -> bool {
        self.from.is_none_or(|f| e.epoch >= f)
            && self.to.is_none_or(|t| e.epoch <= t)
            && self.event_name.as_ref().is_none_or(|(_, g)| g.is_match(&e.event_name))
            && self.principal.as_ref().is_none_or(|(_, g)| {
                g.is_match(&e.principal) || e.role.as_ref().is_some_and(|r| g.is_match(r))
            })
            && self
                .source_ip
                .is_none_or(|net| e.source_ip.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)))
            && (!self.destructive || e.destructive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(name: &str, source: &str, ip: &str, arn: &str) -> Value {
        json!({"eventTime": "2026-12-01T10:00:00Z", "eventSource": source, "eventName": name,
               "sourceIPAddress": ip, "userIdentity": {"type": "IAMUser", "arn": arn},
               "requestParameters": {"bucketName": "prod-data"}, "eventID": "e1",
               "recipientAccountId": "111122223333"})
    }

    #[test]
    fn the_destructive_list_selects_what_the_issue_names_and_not_reads() {
        for (s, n) in [
            ("s3.amazonaws.com", "DeleteBucket"),
            ("ec2.amazonaws.com", "DeleteSnapshot"),
            ("s3.amazonaws.com", "PutBucketPolicy"),
            ("kms.amazonaws.com", "PutKeyPolicy"),
            ("s3.amazonaws.com", "PutBucketLifecycleConfiguration"),
            ("cloudtrail.amazonaws.com", "StopLogging"),
            ("cloudtrail.amazonaws.com", "DeleteTrail"),
            ("ec2.amazonaws.com", "ModifySnapshotAttribute"),
            ("kms.amazonaws.com", "ScheduleKeyDeletion"),
            ("kms.amazonaws.com", "DisableKey"),
            ("iam.amazonaws.com", "CreateAccessKey"),
            ("iam.amazonaws.com", "UpdateAccessKey"),
            ("iam.amazonaws.com", "UpdateAssumeRolePolicy"),
        ] {
            assert!(is_destructive(s, n), "{s} {n}");
        }
        for (s, n) in [
            ("s3.amazonaws.com", "GetObject"),
            ("s3.amazonaws.com", "PutObject"),
            ("signin.amazonaws.com", "ConsoleLogin"),
            ("kms.amazonaws.com", "Decrypt"),
            ("iam.amazonaws.com", "ListAccessKeys2"),
            ("kms.amazonaws.com", "DisableKeyX"),
        ] {
            assert_eq!(is_destructive(s, n), n.contains("AccessKey"), "{s} {n}");
        }
    }

    #[test]
    fn the_docs_list_every_destructive_pair() {
        let doc = include_str!("../../../docs/forensics.md");
        for (s, n) in DESTRUCTIVE {
            assert!(doc.contains(&format!("| `{s}` | `{n}` |")), "docs/forensics.md lacks {s} {n}");
        }
    }

    #[test]
    fn an_event_names_its_caller_resources_and_error() {
        let mut r =
            record("DeleteBucket", "s3.amazonaws.com", "203.0.113.9", "arn:aws:iam::1:user/m");
        r["errorCode"] = json!("AccessDenied");
        let e = Event::from_record(r);
        assert_eq!(e.principal, "arn:aws:iam::1:user/m");
        assert_eq!(e.resources, vec!["bucketName=prod-data".to_string()]);
        assert_eq!(e.error_code.as_deref(), Some("AccessDenied"));
        assert!(e.destructive);
        let root = Event::from_record(json!({"userIdentity": {"type": "Root", "accountId": "7"}}));
        assert_eq!(root.principal, "arn:aws:iam::7:root");
        let svc = Event::from_record(
            json!({"userIdentity": {"type": "AWSService", "invokedBy": "backup.amazonaws.com"}}),
        );
        assert_eq!(svc.principal, "backup.amazonaws.com");
        assert!(parse_log_file(b"{\"Records\": 3}").is_err());
        let mut read = record("ListAccessKeys", "iam.amazonaws.com", "1.2.3.4", "arn:x");
        read["readOnly"] = json!(true);
        assert!(!Event::from_record(read).destructive, "a read call is never destructive");
        let detach = record("DetachRolePolicy", "iam.amazonaws.com", "1.2.3.4", "arn:x");
        assert!(Event::from_record(detach).destructive);
    }

    #[test]
    fn a_query_holds_every_condition() {
        let e = Event::from_record(record(
            "DeleteBucket",
            "s3.amazonaws.com",
            "203.0.113.9",
            "arn:aws:sts::1:assumed-role/Admin/mallory",
        ));
        let mut assumed = e.clone();
        assumed.role = Some("arn:aws:iam::1:role/Admin".into());
        let q = EventQuery::new();
        assert!(q.matches(&e));
        assert!(q.clone().source_ip("203.0.113.0/24").unwrap().matches(&e));
        assert!(q.clone().source_ip("203.0.113.9").unwrap().matches(&e));
        assert!(!q.clone().source_ip("198.51.100.0/24").unwrap().matches(&e));
        assert!(q.clone().event_name("Delete*").unwrap().matches(&e));
        assert!(!q.clone().event_name("Put*").unwrap().matches(&e));
        assert!(q.clone().principal("arn:aws:sts::*:assumed-role/Admin/*").unwrap().matches(&e));
        assert!(q.clone().principal("arn:aws:iam::*:role/Admin").unwrap().matches(&assumed));
        assert!(!q.clone().principal("arn:aws:iam::*:role/Admin").unwrap().matches(&e));
        assert!(q.clone().destructive(true).matches(&e));
        assert!(!q.clone().from(e.epoch + 1).matches(&e));
        assert!(!q.clone().to(e.epoch - 1).matches(&e));
        let mut svc = e.clone();
        svc.source_ip = "s3.amazonaws.com".into();
        assert!(!q.clone().source_ip("0.0.0.0/0").unwrap().matches(&svc));
        let err = q.clone().source_ip("10.0.0.0/99").unwrap_err().to_string();
        assert!(err.contains("--source-ip") && err.contains("203.0.113.0/24"), "{err}");
        assert!(q.event_name("Delete[").is_err());
    }
}
