//! Synthetic signed trails for tests (feature `test-util`): log files and
//! hourly digest files chained and signed exactly as CloudTrail does, with
//! a test RSA key whose public half a test serves (through a mock of
//! `ListPublicKeys`, or a keys file). The emulator writes no CloudTrail
//! files, so this is how the validation is exercised.

use std::collections::BTreeMap;
use std::io::Write;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};

use crate::digest::{Digest, LogFileEntry, SIGNATURE_ALGORITHM_META, SIGNATURE_META, sha256_hex};
use crate::keys::PublicKey;
use crate::time::rfc3339;

/// A trail writing into `bucket` under `prefix` (`""` or ending in `/`).
pub struct SyntheticTrail {
    /// The account.
    pub account: String,
    /// The region.
    pub region: String,
    /// The trail's name.
    pub trail: String,
    /// The trail's home region (another than `region` for the digests a
    /// multi-region trail writes for other regions).
    pub home_region: String,
    /// The log bucket.
    pub bucket: String,
    /// The trail's key prefix, with its `/`.
    pub prefix: String,
    key: KeyPair,
    fingerprint: String,
}

/// One file as CloudTrail would deliver it.
#[derive(Debug, Clone)]
pub struct SyntheticFile {
    /// Its key in the log bucket.
    pub key: String,
    /// Its bytes (gzip).
    pub body: Vec<u8>,
    /// Its user metadata (a digest's signature).
    pub metadata: BTreeMap<String, String>,
}

/// `2015-08-17T15:01:31Z` → `20150817T150131Z`.
fn compact(secs: i64) -> String {
    rfc3339(secs).replace(['-', ':'], "")
}

fn date_path(secs: i64) -> String {
    rfc3339(secs)[..10].replace('-', "/")
}

/// Gzips `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip into memory");
    enc.finish().expect("gzip into memory")
}

impl SyntheticTrail {
    /// A trail with a fresh 2048-bit key.
    pub fn new(account: &str, region: &str, trail: &str, bucket: &str, prefix: &str) -> Self {
        let key = KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        let fingerprint = sha256_hex(key.public_key().as_ref())[..32].to_string();
        SyntheticTrail {
            account: account.into(),
            region: region.into(),
            trail: trail.into(),
            home_region: region.into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            key,
            fingerprint,
        }
    }

    /// The same trail's files for another `region`, signed with that
    /// region's own (fresh) key, as a multi-region trail writes them.
    pub fn in_region(&self, region: &str) -> SyntheticTrail {
        SyntheticTrail {
            region: region.into(),
            ..SyntheticTrail::new(
                &self.account,
                &self.home_region,
                &self.trail,
                &self.bucket,
                &self.prefix,
            )
        }
    }

    /// The fingerprint digests name.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The public key, valid for all time.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            fingerprint: self.fingerprint.clone(),
            der: self.key.public_key().as_ref().to_vec(),
            valid_from: None,
            valid_to: None,
        }
    }

    /// What `aws cloudtrail list-public-keys --output json` would print.
    pub fn list_public_keys_json(&self) -> String {
        serde_json::json!({"PublicKeyList": [{
            "Value": aws_smithy_types::base64::encode(self.key.public_key().as_ref()),
            "ValidityStartTime": "2000-01-01T00:00:00Z",
            "ValidityEndTime": "2100-01-01T00:00:00Z",
            "Fingerprint": self.fingerprint,
        }]})
        .to_string()
    }

    /// Hex SHA256withRSA of `message` with the trail's key.
    pub fn sign(&self, message: &[u8]) -> String {
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig).expect("sign");
        hex::encode(sig)
    }

    /// The log file key written at `secs`.
    pub fn log_key(&self, secs: i64, unique: &str) -> String {
        let (acct, region) = (&self.account, &self.region);
        format!(
            "{}AWSLogs/{acct}/CloudTrail/{region}/{}/{acct}_CloudTrail_{region}_{}Z_{unique}.json.gz",
            self.prefix,
            date_path(secs),
            &compact(secs)[..13]
        )
    }

    /// The digest key for the hour ending at `end`.
    pub fn digest_key(&self, end: i64) -> String {
        let (acct, region, trail, home) =
            (&self.account, &self.region, &self.trail, &self.home_region);
        format!(
            "{}AWSLogs/{acct}/CloudTrail-Digest/{region}/{}/{acct}_CloudTrail-Digest_{region}_{trail}_{home}_{}.json.gz",
            self.prefix,
            date_path(end),
            compact(end)
        )
    }

    /// The digest object for `digest`: its gzip body and signature metadata.
    pub fn digest_file(&self, digest: &Digest) -> SyntheticFile {
        let content = serde_json::to_vec(digest).expect("digest serialises");
        let signature = self.sign(digest.signing_string(&sha256_hex(&content)).as_bytes());
        SyntheticFile {
            key: digest.digest_s3_object.clone(),
            body: gzip(&content),
            metadata: BTreeMap::from([
                (SIGNATURE_META.to_string(), signature),
                (SIGNATURE_ALGORITHM_META.to_string(), "SHA256withRSA".to_string()),
            ]),
        }
    }

    /// `hours` hours of delivery from `start` (epoch seconds), with
    /// `logs_per_hour` log files an hour and one digest at the end of each
    /// hour, chained to the previous one. Files come in delivery order.
    pub fn hours(&self, start: i64, hours: usize, logs_per_hour: usize) -> Vec<SyntheticFile> {
        self.hours_with(start, hours, logs_per_hour, |h, i, at| {
            vec![serde_json::json!({
                "eventVersion": "1.08",
                "eventTime": rfc3339(at - 30),
                "eventSource": "s3.amazonaws.com",
                "eventName": if i % 2 == 0 { "PutObject" } else { "DeleteBucket" },
                "eventID": format!("{h}-{i}"),
                "recipientAccountId": self.account,
            })]
        })
    }

    /// As [`SyntheticTrail::hours`], with the records of log file `i` of
    /// hour `h`, written at `at`, from `records(h, i, at)`.
    pub fn hours_with(
        &self,
        start: i64,
        hours: usize,
        logs_per_hour: usize,
        records: impl Fn(usize, usize, i64) -> Vec<serde_json::Value>,
    ) -> Vec<SyntheticFile> {
        let mut files = Vec::new();
        let mut previous: Option<(Digest, String, String)> = None; // digest, sha, signature
        for h in 0..hours as i64 {
            let (from, to) = (start + h * 3600, start + (h + 1) * 3600);
            let mut entries = Vec::new();
            for i in 0..logs_per_hour as i64 {
                let at = from + (i + 1) * 3600 / (logs_per_hour as i64 + 1);
                let records = records(h as usize, i as usize, at);
                let times: Vec<i64> = records
                    .iter()
                    .filter_map(|r| r["eventTime"].as_str().and_then(crate::time::parse_rfc3339))
                    .collect();
                let (oldest, newest) = (
                    times.iter().min().copied().unwrap_or(at - 30),
                    times.iter().max().copied().unwrap_or(at - 30),
                );
                let content = serde_json::json!({ "Records": records }).to_string().into_bytes();
                let key = self.log_key(at, &format!("h{h}i{i}"));
                entries.push(LogFileEntry {
                    s3_bucket: self.bucket.clone(),
                    s3_object: key.clone(),
                    hash_value: sha256_hex(&content),
                    hash_algorithm: "SHA-256".into(),
                    newest_event_time: Some(rfc3339(newest)),
                    oldest_event_time: Some(rfc3339(oldest)),
                });
                files.push(SyntheticFile { key, body: gzip(&content), metadata: BTreeMap::new() });
            }
            let digest = Digest {
                aws_account_id: self.account.clone(),
                digest_start_time: rfc3339(from),
                digest_end_time: rfc3339(to),
                digest_s3_bucket: self.bucket.clone(),
                digest_s3_object: self.digest_key(to),
                digest_public_key_fingerprint: self.fingerprint.clone(),
                digest_signature_algorithm: "SHA256withRSA".into(),
                newest_event_time: entries.last().and_then(|e| e.newest_event_time.clone()),
                oldest_event_time: entries.first().and_then(|e| e.oldest_event_time.clone()),
                previous_digest_s3_bucket: previous.as_ref().map(|_| self.bucket.clone()),
                previous_digest_s3_object: previous
                    .as_ref()
                    .map(|(d, ..)| d.digest_s3_object.clone()),
                previous_digest_hash_value: previous.as_ref().map(|(_, sha, _)| sha.clone()),
                previous_digest_hash_algorithm: previous.as_ref().map(|_| "SHA-256".into()),
                previous_digest_signature: previous.as_ref().map(|(.., sig)| sig.clone()),
                log_files: entries,
            };
            let file = self.digest_file(&digest);
            let content = serde_json::to_vec(&digest).expect("digest serialises");
            previous = Some((digest, sha256_hex(&content), file.metadata[SIGNATURE_META].clone()));
            files.push(file);
        }
        files
    }
}

/// One record of a scripted intrusion (see [`intrusion`]).
fn record(
    account: &str,
    at: i64,
    id: &str,
    (source, name): (&str, &str),
    identity: serde_json::Value,
    ip: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "eventVersion": "1.08",
        "userIdentity": identity,
        "eventTime": rfc3339(at),
        "eventSource": source,
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": ip,
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": params,
        "eventID": id,
        "readOnly": false,
        "eventType": "AwsApiCall",
        "recipientAccountId": account,
    })
}

/// The address a scripted intrusion comes from.
pub const INTRUDER_IP: &str = "203.0.113.66";

/// A scripted intrusion into `account`, starting at `at` (epoch seconds):
/// a console login of the `admin` user from a new address
/// ([`INTRUDER_IP`]), an access key created for a new user, CloudTrail's
/// logging stopped, a bucket and a snapshot deleted, each a few minutes
/// apart, with the event ids `intrusion-1` … `intrusion-5` in order; and
/// ordinary work of the team (reads, writes) from their usual address
/// around it. Returns the records, in time order.
pub fn intrusion(account: &str, at: i64) -> Vec<serde_json::Value> {
    let admin = serde_json::json!({"type": "IAMUser", "principalId": "AIDAADMIN",
        "arn": format!("arn:aws:iam::{account}:user/admin"), "accountId": account,
        "userName": "admin"});
    let team = serde_json::json!({"type": "AssumedRole", "principalId": "AROATEAM:ci",
        "arn": format!("arn:aws:sts::{account}:assumed-role/deploy/ci"), "accountId": account,
        "sessionContext": {"sessionIssuer": {"type": "Role",
            "arn": format!("arn:aws:iam::{account}:role/deploy"), "accountId": account}}});
    let ip = INTRUDER_IP;
    vec![
        record(
            account,
            at - 600,
            "team-1",
            ("s3.amazonaws.com", "PutObject"),
            team.clone(),
            "198.51.100.10",
            serde_json::json!({"bucketName": "prod-data", "key": "a.csv"}),
        ),
        record(
            account,
            at,
            "intrusion-1",
            ("signin.amazonaws.com", "ConsoleLogin"),
            admin.clone(),
            ip,
            serde_json::Value::Null,
        ),
        record(
            account,
            at + 120,
            "intrusion-2",
            ("iam.amazonaws.com", "CreateAccessKey"),
            admin.clone(),
            ip,
            serde_json::json!({"userName": "backdoor"}),
        ),
        record(
            account,
            at + 240,
            "intrusion-3",
            ("cloudtrail.amazonaws.com", "StopLogging"),
            admin.clone(),
            ip,
            serde_json::json!({"name": format!("arn:aws:cloudtrail:us-east-1:{account}:trail/main")}),
        ),
        record(
            account,
            at + 300,
            "team-2",
            ("s3.amazonaws.com", "GetObject"),
            team,
            "198.51.100.10",
            serde_json::json!({"bucketName": "prod-data", "key": "a.csv"}),
        ),
        record(
            account,
            at + 360,
            "intrusion-4",
            ("s3.amazonaws.com", "DeleteBucket"),
            admin.clone(),
            ip,
            serde_json::json!({"bucketName": "prod-data"}),
        ),
        record(
            account,
            at + 480,
            "intrusion-5",
            ("ec2.amazonaws.com", "DeleteSnapshot"),
            admin,
            ip,
            serde_json::json!({"snapshotId": "snap-0123456789abcdef0"}),
        ),
    ]
}

/// Versions of each (bucket, key), oldest first; `None` is a delete marker.
type Versions = BTreeMap<(String, String), Vec<Option<crate::StoredObject>>>;

/// An in-memory versioned [`crate::TrailStore`] of one log bucket, like the
/// escrow bucket (every version kept; version ids `v0`, `v1`, …).
#[derive(Clone)]
pub struct MemoryStore {
    bucket: String,
    versions: std::sync::Arc<std::sync::Mutex<Versions>>,
}

impl MemoryStore {
    /// An empty store of `bucket`.
    pub fn new(bucket: &str) -> Self {
        MemoryStore { bucket: bucket.into(), versions: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Versions> {
        self.versions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `f` as a new version.
    pub fn put(&self, f: &SyntheticFile) {
        let obj = crate::StoredObject { body: f.body.clone(), metadata: f.metadata.clone() };
        self.lock().entry((self.bucket.clone(), f.key.clone())).or_default().push(Some(obj));
    }

    /// Puts a delete marker on `key`.
    pub fn delete(&self, key: &str) {
        self.lock().entry((self.bucket.clone(), key.into())).or_default().push(None);
    }

    /// The current version of `key` (panics when there is none).
    pub fn current(&self, key: &str) -> crate::StoredObject {
        self.lock()[&(self.bucket.clone(), key.to_string())]
            .last()
            .cloned()
            .flatten()
            .expect("a current version")
    }
}

#[async_trait::async_trait]
impl crate::TrailStore for MemoryStore {
    async fn list(&self, bucket: &str, prefix: &str) -> escrow_sync_core::Result<Vec<String>> {
        Ok(self
            .lock()
            .iter()
            .filter(|((b, k), v)| {
                b == bucket && k.starts_with(prefix) && v.last().is_some_and(Option::is_some)
            })
            .map(|((_, k), _)| k.clone())
            .collect())
    }
    async fn get(
        &self,
        bucket: &str,
        key: &str,
    ) -> escrow_sync_core::Result<Option<crate::StoredObject>> {
        Ok(self.lock().get(&(bucket.into(), key.into())).and_then(|v| v.last().cloned().flatten()))
    }
    async fn earlier_versions(
        &self,
        bucket: &str,
        key: &str,
    ) -> escrow_sync_core::Result<Vec<crate::StoredVersion>> {
        let m = self.lock();
        let Some(v) = m.get(&(bucket.into(), key.into())) else { return Ok(Vec::new()) };
        Ok(v[..v.len().saturating_sub(1)]
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, o)| o.is_some())
            .map(|(i, _)| crate::StoredVersion { version_id: format!("v{i}"), stored_at: None })
            .collect())
    }
    async fn get_version(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> escrow_sync_core::Result<Option<Vec<u8>>> {
        let m = self.lock();
        let i: Option<usize> = version.strip_prefix('v').and_then(|v| v.parse().ok());
        Ok(m.get(&(bucket.to_string(), key.to_string()))
            .and_then(|v| i.and_then(|i| v.get(i)))
            .and_then(|o| o.as_ref().map(|o| o.body.clone())))
    }
    async fn get_version_object(
        &self,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> escrow_sync_core::Result<Option<crate::StoredObject>> {
        let m = self.lock();
        let i: Option<usize> = version.strip_prefix('v').and_then(|v| v.parse().ok());
        Ok(m.get(&(bucket.to_string(), key.to_string()))
            .and_then(|v| i.and_then(|i| v.get(i)))
            .cloned()
            .flatten())
    }
    async fn deleted(&self, bucket: &str, prefix: &str) -> escrow_sync_core::Result<Vec<String>> {
        Ok(self
            .lock()
            .iter()
            .filter(|((b, k), v)| {
                b == bucket && k.starts_with(prefix) && v.last().is_some_and(Option::is_none)
            })
            .map(|((_, k), _)| k.clone())
            .collect())
    }
    fn location(&self, bucket: &str, key: &str) -> String {
        format!("memory://{bucket}/{key}")
    }
}
