//! Primary keys and digests: the canonical text of an item's key (how
//! reports name an item), a content digest that ignores the order DynamoDB
//! happens to return set members and attributes in, and an order-independent
//! digest of a set of keys.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use escrow_sync_core::{Error, ErrorKind, Result};

use crate::json::{Record, record_to_json, value_to_json};

/// A table's primary key: the partition (hash) key and, when the table has
/// one, the sort (range) key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchema {
    /// The partition key attribute.
    pub hash: String,
    /// The sort key attribute, if any.
    pub range: Option<String>,
}

impl KeySchema {
    /// A key of `hash` and optionally `range`.
    pub fn new(hash: impl Into<String>, range: Option<String>) -> Self {
        KeySchema { hash: hash.into(), range }
    }

    /// The key attribute names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.hash.as_str()).chain(self.range.as_deref())
    }

    /// The key attributes of `record`; fails if one is missing.
    pub fn key_of(&self, record: &Record) -> Result<Record> {
        self.names()
            .map(|n| {
                record.get(n).map(|v| (n.to_string(), v.clone())).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Failed,
                        "read item",
                        record_to_json(record).to_string(),
                        format!("the item has no key attribute {n:?}"),
                    )
                })
            })
            .collect()
    }

    /// The text that names `record`'s key in listings and reports: for a
    /// table keyed by one string attribute, the string itself (unless it
    /// starts with `{`); otherwise the key in canonical DynamoDB JSON, e.g.
    /// `{"customer":{"S":"c1"},"order":{"N":"7"}}` (names sorted).
    pub fn key_text(&self, record: &Record) -> Result<String> {
        let key = self.key_of(record)?;
        if self.range.is_none()
            && let Some(AttributeValue::S(s)) = key.get(&self.hash)
            && !s.starts_with('{')
        {
            return Ok(s.clone());
        }
        Ok(record_to_json(&key).to_string())
    }

    /// The key a [`KeySchema::key_text`] names.
    pub fn parse_key(&self, text: &str) -> Result<Record> {
        if !text.starts_with('{') {
            return Ok(Record::from([(self.hash.clone(), AttributeValue::S(text.to_string()))]));
        }
        let json: Value = serde_json::from_str(text).map_err(|e| {
            Error::new(ErrorKind::Failed, "parse key", text, format!("not a key: {e}"))
        })?;
        let key = crate::json::record_from_json(&json, "key")?;
        if key.len() != self.names().count() || self.names().any(|n| !key.contains_key(n)) {
            return Err(Error::new(
                ErrorKind::Failed,
                "parse key",
                text,
                format!(
                    "not a key of this table (attributes {:?})",
                    self.names().collect::<Vec<_>>()
                ),
            ));
        }
        Ok(key)
    }
}

fn canonical(value: &AttributeValue) -> Value {
    // Sets are unordered: DynamoDB may return their members in any order.
    let sorted = |tag: &str, mut members: Vec<Value>| {
        members.sort_by_key(|v| v.to_string());
        let mut m = serde_json::Map::with_capacity(1);
        m.insert(tag.to_string(), Value::Array(members));
        Value::Object(m)
    };
    match value {
        AttributeValue::Ss(_) | AttributeValue::Ns(_) | AttributeValue::Bs(_) => {
            let json = value_to_json(value);
            let (tag, members) = json.as_object().and_then(|o| o.iter().next()).expect("one tag");
            sorted(tag, members.as_array().cloned().unwrap_or_default())
        }
        AttributeValue::M(m) => {
            let mut names: Vec<&String> = m.keys().collect();
            names.sort();
            let inner: serde_json::Map<String, Value> =
                names.into_iter().map(|k| (k.clone(), canonical(&m[k]))).collect();
            let mut o = serde_json::Map::with_capacity(1);
            o.insert("M".into(), Value::Object(inner));
            Value::Object(o)
        }
        AttributeValue::L(l) => {
            let mut o = serde_json::Map::with_capacity(1);
            o.insert("L".into(), Value::Array(l.iter().map(canonical).collect()));
            Value::Object(o)
        }
        other => value_to_json(other),
    }
}

/// A SHA-256 of the item's content that two equal items share whatever
/// order their attributes and set members come in.
pub fn content_digest(record: &Record) -> [u8; 32] {
    sha256(canonical(&AttributeValue::M(record.clone())).to_string().as_bytes())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// An order-independent digest of a set of keys: the XOR of each key
/// text's SHA-256, with a count. Two sides hold the same keys exactly when
/// counts and digests agree (up to SHA-256 collisions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeySetDigest {
    /// Keys added.
    pub count: u64,
    xor: [u8; 32],
}

impl KeySetDigest {
    /// Adds one key (its canonical text).
    pub fn add(&mut self, key_text: &str) {
        let h = sha256(key_text.as_bytes());
        for (a, b) in self.xor.iter_mut().zip(h) {
            *a ^= b;
        }
        self.count += 1;
    }

    /// Merges another digest (of a disjoint set of keys).
    pub fn merge(&mut self, other: &KeySetDigest) {
        for (a, b) in self.xor.iter_mut().zip(other.xor) {
            *a ^= b;
        }
        self.count += other.count;
    }

    /// The digest in hex.
    pub fn hex(&self) -> String {
        self.xor.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_is_canonical_and_names_missing_key_attributes() {
        let keys = KeySchema::new("pk", Some("sk".into()));
        let mut r = Record::new();
        r.insert("sk".into(), AttributeValue::N("7".into()));
        r.insert("pk".into(), AttributeValue::S("a".into()));
        r.insert("x".into(), AttributeValue::Bool(true));
        assert_eq!(keys.key_text(&r).unwrap(), r#"{"pk":{"S":"a"},"sk":{"N":"7"}}"#);
        let text = keys.key_text(&r).unwrap();
        assert_eq!(keys.parse_key(&text).unwrap(), keys.key_of(&r).unwrap());
        // One string key: the string itself, unless it looks like JSON.
        let simple = KeySchema::new("pk", None);
        assert_eq!(simple.key_text(&r).unwrap(), "a");
        assert_eq!(
            simple.parse_key("a").unwrap(),
            Record::from([("pk".into(), AttributeValue::S("a".into()))])
        );
        let tricky = Record::from([("pk".into(), AttributeValue::S("{x".into()))]);
        let text = simple.key_text(&tricky).unwrap();
        assert_eq!(text, r#"{"pk":{"S":"{x"}}"#);
        assert_eq!(simple.parse_key(&text).unwrap(), tricky);
        let number = Record::from([("pk".into(), AttributeValue::N("5".into()))]);
        assert_eq!(simple.key_text(&number).unwrap(), r#"{"pk":{"N":"5"}}"#);
        assert!(simple.parse_key(r#"{"other":{"S":"x"}}"#).is_err());
        r.remove("sk");
        let err = keys.key_text(&r).unwrap_err().to_string();
        assert!(err.contains("no key attribute \"sk\""), "{err}");
    }

    #[test]
    fn content_digest_ignores_set_and_map_order_but_not_content() {
        let a = Record::from([
            ("s".into(), AttributeValue::Ss(vec!["x".into(), "y".into()])),
            ("n".into(), AttributeValue::N("1".into())),
        ]);
        let b = Record::from([
            ("n".into(), AttributeValue::N("1".into())),
            ("s".into(), AttributeValue::Ss(vec!["y".into(), "x".into()])),
        ]);
        assert_eq!(content_digest(&a), content_digest(&b));
        let mut c = b.clone();
        c.insert("n".into(), AttributeValue::N("2".into()));
        assert_ne!(content_digest(&a), content_digest(&c));
        let l1 = Record::from([(
            "l".into(),
            AttributeValue::L(vec![AttributeValue::S("x".into()), AttributeValue::S("y".into())]),
        )]);
        let l2 = Record::from([(
            "l".into(),
            AttributeValue::L(vec![AttributeValue::S("y".into()), AttributeValue::S("x".into())]),
        )]);
        assert_ne!(content_digest(&l1), content_digest(&l2), "lists keep their order");
    }

    #[test]
    fn key_set_digest_is_order_independent() {
        let mut a = KeySetDigest::default();
        let mut b = KeySetDigest::default();
        for k in ["1", "2", "3"] {
            a.add(k);
        }
        for k in ["3", "1"] {
            b.add(k);
        }
        assert_ne!(a, b);
        let mut c = KeySetDigest::default();
        c.add("2");
        b.merge(&c);
        assert_eq!(a, b);
        assert_eq!(a.count, 3);
        assert_eq!(a.hex().len(), 64);
    }
}
