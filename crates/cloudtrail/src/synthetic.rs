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
        let mut files = Vec::new();
        let mut previous: Option<(Digest, String, String)> = None; // digest, sha, signature
        for h in 0..hours as i64 {
            let (from, to) = (start + h * 3600, start + (h + 1) * 3600);
            let mut entries = Vec::new();
            for i in 0..logs_per_hour as i64 {
                let at = from + (i + 1) * 3600 / (logs_per_hour as i64 + 1);
                let content = serde_json::json!({"Records": [{
                    "eventVersion": "1.08",
                    "eventTime": rfc3339(at - 30),
                    "eventSource": "s3.amazonaws.com",
                    "eventName": if i % 2 == 0 { "PutObject" } else { "DeleteBucket" },
                    "eventID": format!("{h}-{i}"),
                    "recipientAccountId": self.account,
                }]})
                .to_string()
                .into_bytes();
                let key = self.log_key(at, &format!("h{h}i{i}"));
                entries.push(LogFileEntry {
                    s3_bucket: self.bucket.clone(),
                    s3_object: key.clone(),
                    hash_value: sha256_hex(&content),
                    hash_algorithm: "SHA-256".into(),
                    newest_event_time: Some(rfc3339(at - 30)),
                    oldest_event_time: Some(rfc3339(at - 30)),
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
