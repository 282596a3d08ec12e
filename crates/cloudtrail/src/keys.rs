//! CloudTrail's public keys (one pair per region and period), from
//! `ListPublicKeys` or from a file holding its output, and the
//! SHA256withRSA check of a digest signature.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use aws_sdk_cloudtrail::Client;
use serde::Deserialize;

use escrow_sync_core::{Error, Result};

/// One public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Its fingerprint, as digests name it.
    pub fingerprint: String,
    /// DER (PKCS#1 `RSAPublicKey`, or X.509 `SubjectPublicKeyInfo`).
    pub der: Vec<u8>,
    /// Start of its validity (epoch seconds), if stated.
    pub valid_from: Option<i64>,
    /// End of its validity (epoch seconds), if stated.
    pub valid_to: Option<i64>,
}

/// What checking a signature found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureCheck {
    /// The signature is valid under the key the digest names.
    Valid,
    /// No key with the digest's fingerprint is known.
    UnknownKey,
    /// The signature does not verify: the digest was altered or forged.
    Invalid,
}

/// The public keys a validation may use.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<PublicKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListOutput {
    #[serde(alias = "publicKeyList")]
    public_key_list: Vec<KeyJson>,
}

/// One region's output, or a list of several regions' outputs.
#[derive(Deserialize)]
#[serde(untagged)]
enum KeysFile {
    One(ListOutput),
    Many(Vec<ListOutput>),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyJson {
    #[serde(alias = "value")]
    value: String,
    #[serde(alias = "fingerprint")]
    fingerprint: String,
    #[serde(default, alias = "validityStartTime")]
    validity_start_time: Option<serde_json::Value>,
    #[serde(default, alias = "validityEndTime")]
    validity_end_time: Option<serde_json::Value>,
}

fn json_time(v: Option<&serde_json::Value>) -> Option<i64> {
    match v? {
        serde_json::Value::Number(n) => n.as_f64().map(|f| f as i64),
        serde_json::Value::String(s) => crate::time::parse_rfc3339(s)
            .or_else(|| s.parse::<f64>().ok().map(|f| f as i64))
            .or_else(|| {
                // `aws` prints e.g. 2015-08-17T15:01:31+00:00.
                s.strip_suffix("+00:00").and_then(|s| crate::time::parse_rfc3339(&format!("{s}Z")))
            }),
        _ => None,
    }
}

impl Keyring {
    /// A keyring of these keys.
    pub fn new(keys: Vec<PublicKey>) -> Self {
        Keyring { keys }
    }

    /// The keys.
    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }

    /// Adds another keyring's keys (e.g. another region's).
    pub fn extend(&mut self, other: Keyring) {
        for k in other.keys {
            if !self.keys.contains(&k) {
                self.keys.push(k);
            }
        }
    }

    /// The keys of the client's region valid at any time from `start` to
    /// `end` (`cloudtrail:ListPublicKeys`, every page).
    pub async fn fetch(client: &Client, start: SystemTime, end: SystemTime) -> Result<Keyring> {
        let region = client.config().region().map(|r| r.to_string()).unwrap_or_default();
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = client
                .list_public_keys()
                .start_time(start.into())
                .end_time(end.into())
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| {
                    escrow_sync_aws::sdk_error(
                        e,
                        "cloudtrail:ListPublicKeys",
                        format!("public keys of region {region}"),
                    )
                })?;
            for k in out.public_key_list() {
                let (Some(value), Some(fp)) = (k.value(), k.fingerprint()) else { continue };
                keys.push(PublicKey {
                    fingerprint: fp.to_string(),
                    der: value.as_ref().to_vec(),
                    valid_from: k.validity_start_time().map(|t| t.secs()),
                    valid_to: k.validity_end_time().map(|t| t.secs()),
                });
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(Keyring { keys })
    }

    /// The output of `aws cloudtrail list-public-keys --output json`
    /// (base64 `Value`, times as RFC 3339 or epoch seconds), or a JSON list
    /// of such outputs (one per region), read from `origin` (named in
    /// errors).
    pub fn from_json(text: &str, origin: &str) -> Result<Keyring> {
        let file: KeysFile = serde_json::from_str(text).map_err(|e| {
            Error::invalid_config(format!(
                "{origin}: not the output of `aws cloudtrail list-public-keys --output json`, nor \
                 a list of such outputs ({e})"
            ))
        })?;
        let lists = match file {
            KeysFile::One(one) => vec![one],
            KeysFile::Many(many) => many,
        };
        let mut keys = Vec::new();
        for k in lists.into_iter().flat_map(|l| l.public_key_list) {
            let der = aws_smithy_types::base64::decode(k.value.trim()).map_err(|e| {
                Error::invalid_config(format!(
                    "{origin}: key {} has a Value that is not base64 ({e})",
                    k.fingerprint
                ))
            })?;
            keys.push(PublicKey {
                fingerprint: k.fingerprint,
                der,
                valid_from: json_time(k.validity_start_time.as_ref()),
                valid_to: json_time(k.validity_end_time.as_ref()),
            });
        }
        Ok(Keyring { keys })
    }

    /// Checks `signature` over `message` with the key `fingerprint` names.
    /// Keys are matched by fingerprint alone, as `aws cloudtrail
    /// validate-logs` does: a digest delivered late (a backfill) may be
    /// signed after its hour with a key whose validity starts later.
    pub fn verify(&self, fingerprint: &str, message: &[u8], signature: &[u8]) -> SignatureCheck {
        let mut known = false;
        for k in self.keys.iter().filter(|k| k.fingerprint.eq_ignore_ascii_case(fingerprint)) {
            known = true;
            let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &k.der);
            if key.verify(message, signature).is_ok() {
                return SignatureCheck::Valid;
            }
        }
        if known { SignatureCheck::Invalid } else { SignatureCheck::UnknownKey }
    }
}

/// Where a validation gets the public keys of the regions whose digests
/// it checks.
#[async_trait]
pub trait KeySource: Send + Sync {
    /// The keys of `regions` valid at any time from `from` to `to` (epoch
    /// seconds).
    async fn keyring(&self, regions: &BTreeSet<String>, from: i64, to: i64) -> Result<Keyring>;
}

#[async_trait]
impl KeySource for Keyring {
    async fn keyring(&self, _: &BTreeSet<String>, _: i64, _: i64) -> Result<Keyring> {
        Ok(self.clone())
    }
}

/// `ListPublicKeys` in each region, with clients `client_for` makes (the
/// escrow's credentials: validation does not depend on the primary).
pub struct ListPublicKeys<F: Fn(&str) -> Client + Send + Sync> {
    client_for: F,
}

impl<F: Fn(&str) -> Client + Send + Sync> ListPublicKeys<F> {
    /// Keys from `ListPublicKeys`, through `client_for(region)`.
    pub fn new(client_for: F) -> Self {
        ListPublicKeys { client_for }
    }
}

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64)
}

#[async_trait]
impl<F: Fn(&str) -> Client + Send + Sync> KeySource for ListPublicKeys<F> {
    async fn keyring(&self, regions: &BTreeSet<String>, from: i64, to: i64) -> Result<Keyring> {
        let mut ring = Keyring::default();
        for region in regions {
            let client = (self.client_for)(region);
            ring.extend(Keyring::fetch(&client, at(from), at(to)).await?);
        }
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_output_parses_with_either_time_form() {
        let json = r#"{"PublicKeyList":[
            {"Value":"AAEC","ValidityStartTime":"2015-08-17T14:00:00+00:00",
             "ValidityEndTime":1439827200.0,"Fingerprint":"ab"}]}"#;
        let ring = Keyring::from_json(json, "keys.json").unwrap();
        let k = &ring.keys()[0];
        assert_eq!((k.der.as_slice(), k.fingerprint.as_str()), (&[0u8, 1, 2][..], "ab"));
        assert_eq!(k.valid_from, crate::time::parse_rfc3339("2015-08-17T14:00:00Z"));
        assert_eq!(k.valid_to, Some(1_439_827_200));
        let two = format!(
            "[{json}, {{\"publicKeyList\": [{{\"value\": \"AAM=\", \"fingerprint\": \"cd\"}}]}}]"
        );
        assert_eq!(Keyring::from_json(&two, "keys.json").unwrap().keys().len(), 2);
        let err = Keyring::from_json("{}", "keys.json").unwrap_err().to_string();
        assert!(err.contains("keys.json") && err.contains("list-public-keys"), "{err}");
    }
}
