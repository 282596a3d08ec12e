//! Digest files and the names CloudTrail gives its files.
//!
//! A digest file (`…/CloudTrail-Digest/<region>/…/<account>_CloudTrail-Digest_<region>_<trail>_<region>_<end>.json.gz`)
//! lists the log files delivered in its hour with the SHA-256 of each
//! (uncompressed), and the signature and SHA-256 of the previous digest.
//! Its own signature is the `signature` user metadata of the object: hex
//! SHA256withRSA over
//!
//! ```text
//! <digestEndTime>\n<digestS3Bucket>/<digestS3Object>\n<hex SHA-256 of the uncompressed digest>\n<previousDigestSignature or "null">
//! ```

use std::io::Read;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The user metadata key holding a digest's signature.
pub const SIGNATURE_META: &str = "signature";
/// The user metadata key holding a digest's signature algorithm.
pub const SIGNATURE_ALGORITHM_META: &str = "signature-algorithm";

/// A digest file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Digest {
    /// The account whose logs it covers.
    pub aws_account_id: String,
    /// Start of the hour it covers (RFC 3339).
    pub digest_start_time: String,
    /// End of the hour it covers (RFC 3339); part of the signed string.
    pub digest_end_time: String,
    /// The bucket it was delivered to.
    pub digest_s3_bucket: String,
    /// The key it was delivered to.
    pub digest_s3_object: String,
    /// The fingerprint of the public key that verifies it.
    #[serde(default)]
    pub digest_public_key_fingerprint: String,
    /// `SHA256withRSA`.
    #[serde(default)]
    pub digest_signature_algorithm: String,
    /// Newest event in the log files it lists.
    #[serde(default)]
    pub newest_event_time: Option<String>,
    /// Oldest event in the log files it lists.
    #[serde(default)]
    pub oldest_event_time: Option<String>,
    /// The previous digest's bucket (absent at the start of a chain).
    #[serde(default)]
    pub previous_digest_s3_bucket: Option<String>,
    /// The previous digest's key.
    #[serde(default)]
    pub previous_digest_s3_object: Option<String>,
    /// Hex SHA-256 of the previous digest (uncompressed).
    #[serde(default)]
    pub previous_digest_hash_value: Option<String>,
    /// `SHA-256`.
    #[serde(default)]
    pub previous_digest_hash_algorithm: Option<String>,
    /// The previous digest's signature (hex).
    #[serde(default)]
    pub previous_digest_signature: Option<String>,
    /// The log files delivered in the hour.
    #[serde(default)]
    pub log_files: Vec<LogFileEntry>,
}

/// One log file a digest lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFileEntry {
    /// Its bucket.
    pub s3_bucket: String,
    /// Its key.
    pub s3_object: String,
    /// Hex SHA-256 of its uncompressed content.
    pub hash_value: String,
    /// `SHA-256`.
    #[serde(default)]
    pub hash_algorithm: String,
    /// Newest event in it.
    #[serde(default)]
    pub newest_event_time: Option<String>,
    /// Oldest event in it.
    #[serde(default)]
    pub oldest_event_time: Option<String>,
}

impl Digest {
    /// The string CloudTrail signs, given the hex SHA-256 of this digest's
    /// uncompressed content.
    pub fn signing_string(&self, content_sha256: &str) -> String {
        format!(
            "{}\n{}/{}\n{}\n{}",
            self.digest_end_time,
            self.digest_s3_bucket,
            self.digest_s3_object,
            content_sha256,
            self.previous_digest_signature.as_deref().unwrap_or("null")
        )
    }
}

/// The most bytes a CloudTrail log file may decompress to (CloudTrail's own
/// are far smaller): a planted gzip bomb is refused, not decompressed.
/// Log files are hashed as they decompress, never held whole.
pub const MAX_UNCOMPRESSED: u64 = 512 << 20;

/// The most bytes a digest file may decompress to: a digest lists one
/// hour's log files (a few hundred bytes each), so real ones stay far below.
/// Digests are parsed, so they are held whole: this bounds that memory.
pub const MAX_DIGEST_UNCOMPRESSED: u64 = 64 << 20;

/// Gunzips a CloudTrail file (plain content is returned as is: S3 may
/// have served it decoded); more than [`MAX_UNCOMPRESSED`] bytes is an
/// error.
pub fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    gunzip_capped(bytes, MAX_UNCOMPRESSED)
}

/// Gunzips `bytes` (plain content as is), reading at most `cap` + 1
/// decompressed bytes: more than `cap` is an error, and a gzip bomb costs
/// no more memory than `cap`.
pub fn gunzip_capped(bytes: &[u8], cap: u64) -> std::io::Result<Vec<u8>> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        if bytes.len() as u64 > cap {
            return Err(over_cap(cap));
        }
        return Ok(bytes.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes).take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(over_cap(cap));
    }
    Ok(out)
}

/// Hex SHA-256 of what `bytes` decompress to (plain content as is),
/// hashed as it streams: more than `cap` decompressed bytes is an error.
pub fn sha256_of_gunzip(bytes: &[u8], cap: u64) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut feed = |reader: &mut dyn Read| -> std::io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut limited = reader.take(cap + 1);
        loop {
            let n = limited.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            total += n as u64;
            if total > cap {
                return Err(over_cap(cap));
            }
            hasher.update(&buf[..n]);
        }
    };
    if bytes.starts_with(&[0x1f, 0x8b]) {
        feed(&mut flate2::read::MultiGzDecoder::new(bytes))?;
    } else {
        feed(&mut { bytes })?;
    }
    Ok(hex::encode(hasher.finalize()))
}

fn over_cap(cap: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "it decompresses to more than {} MiB, more than any CloudTrail file: a gzip bomb or \
         not a CloudTrail file",
        cap >> 20
    ))
}

/// Hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What a digest file's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestName {
    /// The account.
    pub account: String,
    /// The region whose logs it covers.
    pub region: String,
    /// The trail's home region (another one for the digests a multi-region
    /// trail writes for the other regions).
    pub home_region: String,
    /// The trail's name.
    pub trail: String,
    /// The end of the hour it covers (epoch seconds).
    pub end: i64,
    /// A backfill digest (delivered late, outside the chain).
    pub backfill: bool,
}

impl DigestName {
    /// Parses `<account>_CloudTrail-Digest_<region>_<trail>_<region>_<end>[_backfill].json.gz`
    /// (the last path segment of `key`).
    pub fn parse(key: &str) -> Option<DigestName> {
        let file = key.rsplit('/').next()?;
        let stem = file.strip_suffix(".json.gz")?;
        let (stem, backfill) = match stem.strip_suffix("_backfill") {
            Some(s) => (s, true),
            None => (stem, false),
        };
        let (account, rest) = stem.split_once("_CloudTrail-Digest_")?;
        let (rest, end) = rest.rsplit_once('_')?;
        let end = crate::time::parse_compact(end)?;
        let (region, rest) = rest.split_once('_')?;
        let (trail, home_region) = rest.rsplit_once('_')?;
        if account.is_empty() || region.is_empty() || trail.is_empty() || home_region.is_empty() {
            return None;
        }
        Some(DigestName {
            account: account.to_string(),
            region: region.to_string(),
            home_region: home_region.to_string(),
            trail: trail.to_string(),
            end,
            backfill,
        })
    }
}

/// What a log file's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogName {
    /// The account.
    pub account: String,
    /// The region.
    pub region: String,
    /// When it was written (epoch seconds, to the minute).
    pub time: i64,
}

impl LogName {
    /// Parses `<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz`.
    pub fn parse(key: &str) -> Option<LogName> {
        let file = key.rsplit('/').next()?;
        let stem = file.strip_suffix(".json.gz")?;
        let (account, rest) = stem.split_once("_CloudTrail_")?;
        let (region, rest) = rest.split_once('_')?;
        let (time, _unique) = rest.split_once('_')?;
        Some(LogName {
            account: account.to_string(),
            region: region.to_string(),
            time: crate::time::parse_compact(time)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gz(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_gzip_bomb_is_refused_within_the_cap() {
        // Many small members of zeros: 8 MiB from a few KiB, past a 4 MiB cap.
        let member = gz(&vec![0u8; 1 << 20]);
        let bomb: Vec<u8> = member.iter().copied().cycle().take(member.len() * 8).collect();
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let err = gunzip_capped(&bomb, 4 << 20).unwrap_err();
        assert!(err.to_string().contains("more than 4 MiB"), "{err}");
        let err = sha256_of_gunzip(&bomb, 4 << 20).unwrap_err();
        assert!(err.to_string().contains("gzip bomb"), "{err}");
        // At the cap exactly it is read.
        assert_eq!(gunzip_capped(&bomb, 8 << 20).unwrap().len(), 8 << 20);
        assert_eq!(sha256_of_gunzip(&bomb, 8 << 20).unwrap(), sha256_hex(&vec![0u8; 8 << 20]));
    }

    #[test]
    fn hashing_while_decompressing_matches_hashing_the_content() {
        let text = br#"{"Records":[{"eventName":"PutObject"}]}"#;
        assert_eq!(sha256_of_gunzip(&gz(text), 1 << 20).unwrap(), sha256_hex(text));
        assert_eq!(sha256_of_gunzip(text, 1 << 20).unwrap(), sha256_hex(text), "plain content");
        assert!(sha256_of_gunzip(text, 8).is_err(), "plain content over the cap");
        let mut broken = gz(text);
        broken.truncate(broken.len() / 2);
        assert!(sha256_of_gunzip(&broken, 1 << 20).is_err(), "a truncated gzip is an error");
        assert!(gunzip_capped(&broken, 1 << 20).is_err());
    }

    #[test]
    fn names_parse() {
        let d = DigestName::parse(
            "p/AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/\
             111122223333_CloudTrail-Digest_us-east-2_my_trail-1_us-east-2_20150817T150131Z.json.gz",
        )
        .unwrap();
        assert_eq!(
            (d.account.as_str(), d.region.as_str(), d.trail.as_str()),
            ("111122223333", "us-east-2", "my_trail-1")
        );
        assert!(!d.backfill);
        assert_eq!(Some(d.end), crate::time::parse_rfc3339("2015-08-17T15:01:31Z"));
        let b = DigestName::parse(
            "111122223333_CloudTrail-Digest_eu-west-1_t_eu-west-1_20150817T150131Z_backfill.json.gz",
        )
        .unwrap();
        assert!(b.backfill && b.trail == "t");
        // A multi-region trail's digest for another region than its home.
        let m = DigestName::parse(
            "AWSLogs/o-abc/111122223333/CloudTrail-Digest/eu-west-1/2015/08/17/\
             111122223333_CloudTrail-Digest_eu-west-1_org_trail_us-east-1_20150817T150131Z.json.gz",
        )
        .unwrap();
        assert_eq!(
            (m.region.as_str(), m.trail.as_str(), m.home_region.as_str()),
            ("eu-west-1", "org_trail", "us-east-1")
        );

        assert_eq!(
            DigestName::parse("111122223333_CloudTrail_us-east-1_20150817T1501Z_ab.json.gz"),
            None
        );
        let l = LogName::parse(
            "AWSLogs/111122223333/CloudTrail/us-east-1/2015/08/17/111122223333_CloudTrail_us-east-1_20150817T1501Z_Abc_def.json.gz",
        )
        .unwrap();
        assert_eq!((l.account.as_str(), l.region.as_str()), ("111122223333", "us-east-1"));
        assert_eq!(Some(l.time), crate::time::parse_rfc3339("2015-08-17T15:01:00Z"));
    }

    #[test]
    fn the_signing_string_is_the_documented_one() {
        let d: Digest = serde_json::from_str(
            r#"{"awsAccountId":"1","digestStartTime":"2015-08-17T14:01:31Z",
                "digestEndTime":"2015-08-17T15:01:31Z","digestS3Bucket":"b","digestS3Object":"k",
                "previousDigestSignature":null,"logFiles":[]}"#,
        )
        .unwrap();
        assert_eq!(d.signing_string("ab"), "2015-08-17T15:01:31Z\nb/k\nab\nnull");
        let json = serde_json::to_value(&d).unwrap();
        assert!(json.get("digestS3Bucket").is_some() && json.get("awsAccountId").is_some());
    }
}
