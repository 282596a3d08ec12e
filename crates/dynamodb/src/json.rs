//! DynamoDB JSON: the typed JSON that DynamoDB's ImportTable and
//! ExportTableToPointInTime read and write, one item per line as
//! `{"Item":{"attr":{"S":"..."}}}`.
//!
//! Every attribute type round-trips exactly: numbers stay the decimal
//! strings DynamoDB returned (no float conversion, full 38-digit precision),
//! binary values are base64, sets keep their members, and maps and lists
//! nest to any depth.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Value};

use escrow_sync_core::{Error, ErrorKind, Result};

/// One item: attribute name to value.
pub type Record = HashMap<String, AttributeValue>;

/// The DynamoDB JSON of one attribute value, e.g. `{"N":"1.50"}`.
pub fn value_to_json(value: &AttributeValue) -> Value {
    let one = |tag: &str, v: Value| {
        let mut m = Map::with_capacity(1);
        m.insert(tag.to_string(), v);
        Value::Object(m)
    };
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    match value {
        AttributeValue::S(s) => one("S", Value::String(s.clone())),
        AttributeValue::N(n) => one("N", Value::String(n.clone())),
        AttributeValue::B(b) => {
            one("B", Value::String(aws_smithy_types::base64::encode(b.as_ref())))
        }
        AttributeValue::Ss(v) => one("SS", strings(v)),
        AttributeValue::Ns(v) => one("NS", strings(v)),
        AttributeValue::Bs(v) => one(
            "BS",
            Value::Array(
                v.iter()
                    .map(|b| Value::String(aws_smithy_types::base64::encode(b.as_ref())))
                    .collect(),
            ),
        ),
        AttributeValue::M(m) => one("M", record_to_json(m)),
        AttributeValue::L(l) => one("L", Value::Array(l.iter().map(value_to_json).collect())),
        AttributeValue::Null(b) => one("NULL", Value::Bool(*b)),
        AttributeValue::Bool(b) => one("BOOL", Value::Bool(*b)),
        // A type this SDK version does not know: kept as null, and refused
        // on the way back, so nothing unknown is silently rewritten.
        _ => Value::Null,
    }
}

/// The DynamoDB JSON object of an item's attributes.
pub fn record_to_json(record: &Record) -> Value {
    let mut names: Vec<&String> = record.keys().collect();
    names.sort();
    Value::Object(names.into_iter().map(|k| (k.clone(), value_to_json(&record[k]))).collect())
}

/// One ImportTable line: `{"Item":{...}}`.
pub fn to_line(record: &Record) -> String {
    let mut m = Map::with_capacity(1);
    m.insert("Item".to_string(), record_to_json(record));
    Value::Object(m).to_string()
}

fn bad(path: &str, what: &str) -> Error {
    Error::new(ErrorKind::Failed, "decode DynamoDB JSON", path, what)
}

fn string_of(v: &Value, path: &str) -> Result<String> {
    v.as_str().map(str::to_string).ok_or_else(|| bad(path, "expected a string"))
}

fn strings_of(v: &Value, path: &str) -> Result<Vec<String>> {
    v.as_array()
        .ok_or_else(|| bad(path, "expected an array"))?
        .iter()
        .map(|s| string_of(s, path))
        .collect()
}

fn blob_of(v: &Value, path: &str) -> Result<Blob> {
    let text = string_of(v, path)?;
    aws_smithy_types::base64::decode(&text)
        .map(Blob::new)
        .map_err(|e| bad(path, &format!("invalid base64: {e}")))
}

/// An attribute value from its DynamoDB JSON; `path` names it in errors.
pub fn value_from_json(json: &Value, path: &str) -> Result<AttributeValue> {
    let obj =
        json.as_object().ok_or_else(|| bad(path, "expected an object such as {\"S\":\"...\"}"))?;
    let (tag, v) = match (obj.len(), obj.iter().next()) {
        (1, Some(pair)) => pair,
        _ => return Err(bad(path, "expected exactly one type tag")),
    };
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(string_of(v, path)?),
        "N" => AttributeValue::N(string_of(v, path)?),
        "B" => AttributeValue::B(blob_of(v, path)?),
        "SS" => AttributeValue::Ss(strings_of(v, path)?),
        "NS" => AttributeValue::Ns(strings_of(v, path)?),
        "BS" => AttributeValue::Bs(
            v.as_array()
                .ok_or_else(|| bad(path, "expected an array"))?
                .iter()
                .map(|b| blob_of(b, path))
                .collect::<Result<_>>()?,
        ),
        "M" => AttributeValue::M(record_from_json(v, path)?),
        "L" => AttributeValue::L(
            v.as_array()
                .ok_or_else(|| bad(path, "expected an array"))?
                .iter()
                .enumerate()
                .map(|(i, e)| value_from_json(e, &format!("{path}[{i}]")))
                .collect::<Result<_>>()?,
        ),
        "NULL" => AttributeValue::Null(v.as_bool().ok_or_else(|| bad(path, "expected true"))?),
        "BOOL" => AttributeValue::Bool(v.as_bool().ok_or_else(|| bad(path, "expected a boolean"))?),
        other => return Err(bad(path, &format!("unknown type tag {other:?}"))),
    })
}

/// An item's attributes from their DynamoDB JSON object.
pub fn record_from_json(json: &Value, path: &str) -> Result<Record> {
    json.as_object()
        .ok_or_else(|| bad(path, "expected an object of attributes"))?
        .iter()
        .map(|(k, v)| Ok((k.clone(), value_from_json(v, &format!("{path}.{k}"))?)))
        .collect()
}

/// An item from one ImportTable line.
pub fn from_line(line: &str) -> Result<Record> {
    let json: Value =
        serde_json::from_str(line).map_err(|e| bad("line", &format!("not JSON: {e}")))?;
    let item = json.get("Item").ok_or_else(|| bad("line", "missing the \"Item\" key"))?;
    record_from_json(item, "Item")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_look_like_import_table_input() {
        let mut r = Record::new();
        r.insert("pk".into(), AttributeValue::S("order#1".into()));
        r.insert(
            "total".into(),
            AttributeValue::N("12345678901234567890123456789012345678".into()),
        );
        r.insert("blob".into(), AttributeValue::B(Blob::new(vec![0, 255, 1])));
        r.insert("gone".into(), AttributeValue::Null(true));
        assert_eq!(
            to_line(&r),
            r#"{"Item":{"blob":{"B":"AP8B"},"gone":{"NULL":true},"pk":{"S":"order#1"},"total":{"N":"12345678901234567890123456789012345678"}}}"#
        );
        assert_eq!(from_line(&to_line(&r)).unwrap(), r);
    }

    #[test]
    fn malformed_json_is_refused_with_its_path() {
        let err = from_line(r#"{"Item":{"a":{"M":{"b":{"X":"1"}}}}}"#).unwrap_err().to_string();
        assert!(err.contains("Item.a.b") && err.contains("unknown type tag \"X\""), "{err}");
        let err = from_line(r#"{"Item":{"a":{"S":"x","N":"1"}}}"#).unwrap_err().to_string();
        assert!(err.contains("exactly one type tag"), "{err}");
        assert!(from_line("{}").unwrap_err().to_string().contains("missing the \"Item\" key"));
        let err = from_line(r#"{"Item":{"b":{"B":"%%%"}}}"#).unwrap_err().to_string();
        assert!(err.contains("invalid base64"), "{err}");
    }
}
