//! Caps and schema checks on what the DynamoDB crate reads back from
//! escrow: data files (exact cap boundary, malformed lines), generation
//! manifests (malformed ones are clear errors naming the object, over-cap
//! ones are refused before they are read), objects whose stream is longer
//! than their listed length, and checkpoints (a head naming more chunks
//! than the cap).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use bytes::Bytes;
use serde_json::json;

mod common;

use escrow_sync_core::{ErrorKind, Mode, Payload};
use escrow_sync_dynamodb::export::{
    MANIFEST_CAP, collect_capped, parse_manifest, read_data_file_capped,
};
use escrow_sync_dynamodb::json::{Record, to_line};
use escrow_sync_dynamodb::{CheckpointStore, ExportJob, ExportTarget, TableInfo};
use escrow_sync_testkit::{MemBucket, MemSink, MemSource};

fn item(pk: &str) -> Record {
    HashMap::from([("pk".to_string(), AttributeValue::S(pk.to_string()))])
}

fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

fn client(rules: &[Rule]) -> Client {
    let rules: Vec<&Rule> = rules.iter().collect();
    mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, &rules)
}

#[test]
fn a_data_file_of_exactly_the_cap_is_read_and_one_byte_more_is_not() {
    let text = format!("{}\n{}\n", to_line(&item("a")), to_line(&item("b")));
    let data = gz(&text);
    let cap = text.len() as u64;
    assert_eq!(read_data_file_capped(&data, "f", cap).unwrap(), vec![item("a"), item("b")]);
    let err = read_data_file_capped(&data, "f", cap - 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    assert!(err.to_string().contains(&format!("over the cap of {} bytes", cap - 1)), "{err}");
}

#[test]
fn malformed_data_files_are_errors_naming_the_file() {
    let err = read_data_file_capped(b"not gzip at all", "s3://b/f.json.gz", 1 << 20).unwrap_err();
    assert!(err.to_string().contains("s3://b/f.json.gz") && err.to_string().contains("gzip"));
    let err =
        read_data_file_capped(&gz("{\"Item\": 3}\n"), "s3://b/f.json.gz", 1 << 20).unwrap_err();
    assert!(err.to_string().contains("s3://b/f.json.gz"), "{err}");
    let err = read_data_file_capped(&gz("\u{0}\u{ff}"), "f", 1 << 20).unwrap_err();
    assert!(err.to_string().contains("not JSON") || err.to_string().contains("UTF-8"), "{err}");
}

fn manifest() -> serde_json::Value {
    json!({
        "format": "escrow-sync-dynamodb-export/1",
        "item_count": 3,
        "files": [
            {"key": "data/00000-00000.json.gz", "items": 1, "bytes": 10, "compressed_bytes": 9,
             "sha256": "a".repeat(64)},
            {"key": "data/00001-00000.json.gz", "items": 2, "bytes": 20, "compressed_bytes": 19,
             "sha256": "b".repeat(64)},
        ],
    })
}

#[test]
fn malformed_manifests_are_clear_errors() {
    let name = "s3://escrow-exports/dynamodb/orders/g/manifest.json";
    let ok = manifest();
    assert_eq!(parse_manifest(ok.to_string().as_bytes(), name).unwrap(), ok);
    let refused = |text: String, why: &str| {
        let err = parse_manifest(text.as_bytes(), name).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{msg}");
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains("not a valid export generation manifest"), "{msg}");
        assert!(msg.contains(why), "{why}: {msg}");
        assert!(msg.contains("run escrow-sync run to write a new generation"), "{msg}");
    };
    refused("{\"files\": [".into(), "not JSON");
    refused("[1, 2]".into(), "not a JSON object");
    let mut m = manifest();
    m["format"] = json!("something-else/9");
    refused(m.to_string(), "format is \"something-else/9\"");
    let mut m = manifest();
    m["files"] = json!("everything");
    refused(m.to_string(), "no \"files\" list");
    let mut m = manifest();
    m["files"][1].as_object_mut().unwrap().remove("sha256");
    refused(m.to_string(), "files[1] lacks");
    let mut m = manifest();
    m["files"][0]["key"] = json!("../../other-table/data.json.gz");
    refused(m.to_string(), "files[0] has key");
    let mut m = manifest();
    m["files"][0]["sha256"] = json!("zz");
    refused(m.to_string(), "not a SHA-256");
    let mut m = manifest();
    m["item_count"] = json!(30);
    refused(m.to_string(), "item_count is 30 but its files hold 3 items");
}

async fn export_job(bucket: &MemBucket) -> ExportJob {
    let rules = common::table_rules("orders", true, vec![]);
    let c = client(&rules);
    let info = TableInfo::describe(&c, "orders").await.unwrap();
    ExportJob::new(
        "orders",
        c,
        info,
        "111111111111",
        ExportTarget {
            files: Arc::new(MemSink::new(bucket.clone())),
            reader: Arc::new(MemSource::new(bucket.clone())),
            location: "mem://escrow/".into(),
            dest_prefix: "dynamodb/".into(),
        },
        "2026-11-28T00:00:00Z",
    )
    .unwrap()
}

#[tokio::test]
async fn verify_against_a_malformed_manifest_is_a_clear_error() {
    let bucket = MemBucket::new("escrow");
    bucket.put("dynamodb/orders/20261128T000000000Z/manifest.json", "{\"format\": 1");
    let err = export_job(&bucket).await.execute(Mode::Verify).await.unwrap_err().to_string();
    assert!(
        err.contains("mem://escrow/dynamodb/orders/20261128T000000000Z/manifest.json")
            && err.contains("not a valid export generation manifest"),
        "{err}"
    );
}

#[tokio::test]
async fn an_over_cap_manifest_is_refused_before_it_is_read() {
    let bucket = MemBucket::new("escrow");
    let big = vec![b' '; MANIFEST_CAP as usize + 1];
    bucket.put("dynamodb/orders/20261128T000000000Z/manifest.json", big);
    let err = export_job(&bucket).await.manifest("20261128T000000000Z").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    assert!(err.to_string().contains(&format!("over the cap of {MANIFEST_CAP} bytes")), "{err}");
}

#[tokio::test]
async fn a_stream_longer_than_its_listed_length_is_cut_at_the_cap() {
    // The length says 4 bytes; the stream brings 12.
    let stream = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"abcd")),
        Ok(Bytes::from_static(b"efgh")),
        Ok(Bytes::from_static(b"ijkl")),
    ]);
    let payload = Payload::Bytes { len: 4, stream: Box::pin(stream), attributes: BTreeMap::new() };
    let err = collect_capped(payload, "s3://b/k", 8).await.unwrap_err();
    assert!(err.to_string().contains("s3://b/k") && err.to_string().contains("cap of 8"), "{err}");
    let ok = collect_capped(
        Payload::from_bytes(Bytes::from_static(b"12345678"), BTreeMap::new()),
        "k",
        8,
    )
    .await
    .unwrap();
    assert_eq!(&ok[..], b"12345678");
    let err = collect_capped(
        Payload::from_bytes(Bytes::from_static(b"123456789"), BTreeMap::new()),
        "k",
        8,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
}

#[tokio::test]
async fn a_checkpoint_head_naming_too_many_chunks_is_refused_and_the_scan_starts_over() {
    let head = mock!(Client::get_item)
        .match_requests(|r| {
            r.key().and_then(|k| k.get("part")) == Some(&AttributeValue::S("head".into()))
        })
        .then_output(|| {
            GetItemOutput::builder()
                .set_item(Some(HashMap::from([
                    ("job".to_string(), AttributeValue::S("orders".into())),
                    ("part".to_string(), AttributeValue::S("head".into())),
                    ("version".to_string(), AttributeValue::S("1".into())),
                    ("chunks".to_string(), AttributeValue::N("100000".into())),
                ])))
                .build()
        });
    let chunk = mock!(Client::get_item).then_output(|| GetItemOutput::builder().build());
    let rules = vec![head, chunk];
    let store = CheckpointStore::from_client(client(&rules), "escrow-sync-checkpoints");
    let err = store.load("orders").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    let msg = err.to_string();
    assert!(
        msg.contains("escrow-sync-checkpoints")
            && msg.contains("100000 chunks")
            && msg.contains("delete job orders's items"),
        "{msg}"
    );
    assert_eq!(rules[1].num_calls(), 0, "no chunk was read");
    let source_rules = common::table_rules("orders", true, vec![]);
    let info = TableInfo::describe(&client(&source_rules), "orders").await.unwrap();
    let mut warnings = Vec::new();
    let loaded = store
        .load_for(
            "orders",
            &info,
            "dynamodb://escrow-orders",
            &mut warnings,
            "the scan starts over",
        )
        .await
        .unwrap();
    assert!(loaded.is_none());
    assert!(
        warnings[0].contains("ignored a checkpoint of job orders")
            && warnings[0].ends_with("the scan starts over"),
        "{warnings:?}"
    );
}
