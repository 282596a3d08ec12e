//! The listings of a sharded run's parts, against a mocked ListObjectsV2
//! that serves a key space as S3 does: each part starts after its lower
//! bound and stops past its upper one, split or not, on the source and the
//! sink alike; the parts together are the whole listing, each key once.

use std::sync::{Arc, Mutex};

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::types::Object;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use futures::TryStreamExt;

use escrow_sync_core::{Scope, Sink, Source};
use escrow_sync_s3::{Boundaries, KeyRange, S3Sink, S3Source, Shard};

/// Each request: (StartAfter, continuation token).
type Requests = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// ListObjectsV2 over `keys` (sorted), 1,000 a page, after `StartAfter` or
/// the continuation token (the last key sent); records each request.
fn keyspace(keys: Vec<String>, requests: Requests) -> Client {
    let rule = mock!(Client::list_objects_v2).then_compute_output(move |req| {
        requests.lock().unwrap().push((
            req.start_after().map(str::to_string),
            req.continuation_token().map(str::to_string),
        ));
        let after = req.continuation_token().or(req.start_after()).unwrap_or("");
        let prefix = req.prefix().unwrap_or("");
        let page: Vec<&String> = keys
            .iter()
            .filter(|k| k.as_str() > after && k.starts_with(prefix))
            .take(1001)
            .collect();
        let mut out = ListObjectsV2Output::builder();
        for k in page.iter().take(1000) {
            out = out.contents(Object::builder().key(k.as_str()).size(1).e_tag("\"e\"").build());
        }
        if page.len() > 1000 {
            out = out.is_truncated(true).next_continuation_token(page[999].clone());
        }
        out.build()
    });
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&rule])
}

fn keys() -> Vec<String> {
    let mut keys: Vec<String> = (0..30_000).map(|i| format!("data/obj/{i:06}")).collect();
    keys.extend(
        ["data/obj/001", "data/obj/0~", "data/obj/Z", "data/obj/é", "data/obj/01/x"]
            .map(String::from),
    );
    keys.extend((0..1500).map(|i| format!("data/z{i}")));
    keys.push("other/outside".to_string());
    keys.sort();
    keys
}

/// Boundaries on keys, between keys and past every key; part 2 is longer
/// than the pages a listing reads before it splits.
fn boundaries() -> Boundaries {
    Boundaries::new(
        ["data/obj/000050", "data/obj/025000", "data/obj/025000x", "data/obj/é", "data/zz"]
            .map(String::from)
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parts_list_their_ranges_and_together_the_whole_key_space() {
    let keys = keys();
    let requests: Requests = Arc::default();
    let c = keyspace(keys.clone(), requests.clone());
    let want: Vec<String> = keys.iter().filter(|k| k.starts_with("data/")).cloned().collect();
    let b = boundaries();
    let n = b.parts();
    for ranges in [1, 8] {
        let mut all = Vec::new();
        for i in 1..=n {
            let range = b.range(Shard::new(i, n).unwrap()).unwrap();
            requests.lock().unwrap().clear();
            let source = S3Source::from_client(c.clone(), "src")
                .with_prefix("data/")
                .with_list_ranges(ranges)
                .with_key_range(range.clone());
            let got: Vec<String> =
                source.list(&Scope::all()).map_ok(|i| i.key).try_collect().await.unwrap();
            assert!(got.iter().all(|k| range.contains(k)), "part {i}/{n}: only its range");
            assert!(got.windows(2).all(|w| w[0] < w[1]), "part {i}/{n}: in key order");
            let requests = requests.lock().unwrap().clone();
            assert_eq!(
                requests[0].0.as_deref(),
                range.after(),
                "part {i}/{n} starts after its bound"
            );
            if i == 2 && ranges > 1 {
                let split = requests.iter().filter(|r| r.0.is_some()).count();
                assert!(split >= 2, "part 2 is listed in key ranges ({split} StartAfter)");
            }
            all.extend(got);
        }
        assert!(all == want, "ranges {ranges}: the parts make the whole listing, each key once");
    }
    // Part 1 ends at data/obj/000050: one page, no request past it.
    requests.lock().unwrap().clear();
    let first = b.range(Shard::new(1, n).unwrap()).unwrap();
    let source = S3Source::from_client(c.clone(), "src").with_prefix("data/").with_key_range(first);
    let got: Vec<String> =
        source.list(&Scope::all()).map_ok(|i| i.key).try_collect().await.unwrap();
    assert_eq!(got.last().map(String::as_str), Some("data/obj/000050"));
    assert_eq!(requests.lock().unwrap().len(), 1, "stops past its upper bound");
}

#[tokio::test]
async fn the_sink_cuts_its_listing_to_the_same_range_below_its_dest_prefix() {
    // Escrow holds the logical keys under `esc/`.
    let keys: Vec<String> = ["a", "b", "c", "c/1", "d", "e"].map(|k| format!("esc/{k}")).into();
    let requests: Requests = Arc::default();
    let c = keyspace(keys, requests.clone());
    let range = KeyRange::new(Some("b".into()), Some("c/1".into()));
    let sink = S3Sink::from_client(c, "dst").with_dest_prefix("esc/").with_key_range(range);
    let got: Vec<String> = sink.list(&Scope::all()).map_ok(|i| i.key).try_collect().await.unwrap();
    assert_eq!(got, ["c", "c/1"]);
    assert_eq!(
        requests.lock().unwrap()[0].0.as_deref(),
        Some("esc/b"),
        "StartAfter below the prefix"
    );
}

/// A boundary store over one mocked object: GetObject answers 404 until
/// PutObject stores a body, then that body; the bodies put are counted.
fn boundary_store() -> (escrow_sync_s3::BoundaryStore, Arc<Mutex<Option<Vec<u8>>>>) {
    let stored: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let none = stored.clone();
    let missing = mock!(Client::get_object)
        .match_requests(move |_| none.lock().unwrap().is_none())
        .then_http_response(|| {
            aws_smithy_runtime_api::http::Response::new(
                aws_smithy_runtime_api::http::StatusCode::try_from(404).unwrap(),
                aws_smithy_types::body::SdkBody::empty(),
            )
        });
    let held = stored.clone();
    let get = mock!(Client::get_object).then_compute_output(move |_| {
        let body = held.lock().unwrap().clone().unwrap();
        aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
            .content_length(body.len() as i64)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .build()
    });
    let put_into = stored.clone();
    let put = mock!(Client::put_object).then_compute_output(move |req| {
        *put_into.lock().unwrap() = Some(req.body().bytes().unwrap().to_vec());
        aws_sdk_s3::operation::put_object::PutObjectOutput::builder().build()
    });
    let client = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&missing, &get, &put]);
    let store = escrow_sync_s3::BoundaryStore::from_client(client, "m", "shards/j/3.json");
    (store, stored)
}

#[tokio::test]
async fn a_boundary_record_that_would_be_refused_is_never_stored() {
    let (store, stored) = boundary_store();
    let b = Boundaries::new(vec!["a".into(), "b".into()]).unwrap();
    let agreed = store
        .agree(3, || async {
            let mut record = escrow_sync_s3::BoundaryRecord::new("j", &b, 2, "run");
            record.digest = "sha256:00".into();
            Ok(record)
        })
        .await;
    assert!(agreed.is_err(), "{agreed:?}");
    assert!(stored.lock().unwrap().is_none(), "a record this build refuses is not stored");
}

#[tokio::test]
async fn the_largest_boundary_record_stored_is_read_back() {
    // 255 boundaries of about 1,024 bytes of control characters each: JSON
    // escapes each byte as six.
    let (store, stored) = boundary_store();
    let keys: Vec<String> = (0..255).map(|i| format!("{}{i:03}", "\u{1}".repeat(1020))).collect();
    let b = Boundaries::new(keys).unwrap();
    let agreed = store
        .agree(256, || async { Ok(escrow_sync_s3::BoundaryRecord::new("j", &b, 256, "run")) })
        .await
        .unwrap();
    assert!(agreed.made_here);
    let len = stored.lock().unwrap().as_ref().map(Vec::len).unwrap();
    assert!(len > 1_500_000, "{len}");
    let again = store.agree(256, || async { unreachable!("stored") }).await.unwrap();
    assert!(!again.made_here && again.boundaries == b);
}

#[tokio::test]
async fn a_versioned_part_lists_from_its_lower_bound_and_stops_past_its_upper_one() {
    let keys: Vec<String> = (0..5000).map(|i| format!("v/{i:05}")).collect();
    let markers: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = markers.clone();
    let rule = mock!(Client::list_object_versions).then_compute_output(move |req| {
        seen.lock().unwrap().push(req.key_marker().map(str::to_string));
        let after = req.key_marker().unwrap_or("");
        let page: Vec<&String> = keys.iter().filter(|k| k.as_str() > after).take(1001).collect();
        let mut out =
            aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput::builder();
        for k in page.iter().take(1000) {
            out = out.versions(
                aws_sdk_s3::types::ObjectVersion::builder()
                    .key(k.as_str())
                    .version_id("v1")
                    .is_latest(true)
                    .e_tag("\"e\"")
                    .size(1)
                    .build(),
            );
        }
        if page.len() > 1000 {
            out = out.is_truncated(true).next_key_marker(page[999].clone());
        }
        out.build()
    });
    let c = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&rule]);
    let range = KeyRange::new(Some("v/01000".into()), Some("v/01500".into()));
    let source = S3Source::from_client(c, "src").with_versions(true).with_key_range(range);
    let got: Vec<String> =
        source.list(&Scope::all()).map_ok(|i| i.key).try_collect().await.unwrap();
    assert_eq!(got.len(), 500, "{:?}", got.first());
    assert_eq!(got.first().map(String::as_str), Some("v/01001"));
    assert_eq!(got.last().map(String::as_str), Some("v/01500"));
    let markers = markers.lock().unwrap().clone();
    assert_eq!(markers, [Some("v/01000".to_string())], "one page, from the lower bound");
}
