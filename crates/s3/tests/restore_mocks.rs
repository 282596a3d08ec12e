//! The restore source against aws-smithy-mocks: ListObjectVersions pages in
//! which a key's versions continue on the next page, delete markers, the
//! job's escrow prefix stripped, escrow-sync's journal left out, and reads
//! of one exact version (`versionId`, `If-Match`) without escrow-sync's own
//! metadata. The emulator suite (tests/restore_drills.rs) restores for real.

use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_s3::Client;
use aws_sdk_s3::operation::get_object_tagging::GetObjectTaggingOutput;
use aws_sdk_s3::operation::head_object::HeadObjectOutput;
use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
use aws_sdk_s3::types::{DeleteMarkerEntry, ObjectVersion, Tag};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_types::DateTime;
use futures::TryStreamExt;

use escrow_sync_core::{Item, Payload, Scope, Source};
use escrow_sync_s3::S3RestoreSource;

fn at(secs: i64) -> DateTime {
    DateTime::from_secs(secs)
}

fn version(key: &str, id: &str, secs: i64) -> ObjectVersion {
    ObjectVersion::builder()
        .key(key)
        .version_id(id)
        .e_tag(format!("\"{id}\""))
        .size(secs)
        .last_modified(at(secs))
        .build()
}

fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_s3, RuleMode::MatchAny, rules)
}

fn pages() -> [Rule; 2] {
    [
        mock!(Client::list_object_versions)
            .match_requests(|r| r.key_marker().is_none() && r.prefix() == Some("esc/"))
            .then_output(|| {
                ListObjectVersionsOutput::builder()
                    .versions(version("esc/.escrow-sync-uploads/x", "j1", 50))
                    .versions(version("esc/a", "a3", 300))
                    .versions(version("esc/a", "a2", 200))
                    .is_truncated(true)
                    .next_key_marker("esc/a")
                    .next_version_id_marker("a2")
                    .build()
            }),
        mock!(Client::list_object_versions)
            .match_requests(|r| r.key_marker() == Some("esc/a"))
            .then_output(|| {
                ListObjectVersionsOutput::builder()
                    .versions(version("esc/a", "a1", 100))
                    .versions(version("esc/b", "b1", 150))
                    .delete_markers(
                        DeleteMarkerEntry::builder()
                            .key("esc/b")
                            .version_id("bdel")
                            .last_modified(at(250))
                            .build(),
                    )
                    .is_truncated(false)
                    .build()
            }),
    ]
}

async fn listed(at_secs: Option<u64>) -> Vec<(String, String, Option<String>)> {
    let [p1, p2] = pages();
    let source = S3RestoreSource::from_client(client(&[&p1, &p2]), "escrow")
        .with_dest_prefix("esc/")
        .with_as_of(at_secs.map(|s| UNIX_EPOCH + Duration::from_secs(s)));
    let items: Vec<Item> = source.list(&Scope::all()).try_collect().await.unwrap();
    items.into_iter().map(|i| (i.key, i.fingerprint, i.version)).collect()
}

#[tokio::test]
async fn each_key_as_escrow_held_it_across_pages() {
    let v = |k: &str, id: &str| (k.to_string(), format!("\"{id}\""), Some(id.to_string()));
    // The newest: a3; b's newest entry is a delete marker.
    assert_eq!(listed(None).await, [v("a", "a3")]);
    // At 220: a2 (the page break after it does not bring a1 back), and b1.
    assert_eq!(listed(Some(220)).await, [v("a", "a2"), v("b", "b1")]);
    // Before anything was copied: nothing.
    assert!(listed(Some(10)).await.is_empty());
}

#[tokio::test]
async fn a_read_is_of_the_exact_version_without_escrow_syncs_metadata() {
    let tags = mock!(Client::get_object_tagging)
        .match_requests(|r| r.key() == Some("esc/a") && r.version_id() == Some("a2"))
        .then_output(|| {
            GetObjectTaggingOutput::builder()
                .tag_set(Tag::builder().key("team").value("media").build().unwrap())
                .build()
                .unwrap()
        });
    let head = mock!(Client::head_object)
        .match_requests(|r| {
            r.key() == Some("esc/a")
                && r.version_id() == Some("a2")
                && r.if_match() == Some("\"a2\"")
        })
        .then_output(|| {
            HeadObjectOutput::builder()
                .content_length(200)
                .content_type("text/plain")
                .metadata("camera", "north")
                .metadata("escrow-sync-source-etag", "\"x\"")
                .build()
        });
    let source =
        S3RestoreSource::from_client(client(&[&tags, &head]), "escrow").with_dest_prefix("esc/");
    let item = Item::new("a", escrow_sync_core::ItemKind::Object, 200, "\"a2\"")
        .with_version(Some("a2".into()));
    let Payload::Ranged(range) = source.read(&item).await.unwrap() else {
        panic!("a streamed payload")
    };
    let attributes = range.attributes();
    assert_eq!(attributes.get("tag:team").map(String::as_str), Some("media"));
    assert_eq!(attributes.get("meta:camera").map(String::as_str), Some("north"));
    assert_eq!(attributes.get("content-type").map(String::as_str), Some("text/plain"));
    assert!(!attributes.keys().any(|k| k.contains("escrow-sync")), "{attributes:?}");
    assert_eq!(range.len(), 200);
}

/// `versions = true`: escrow copied the source's versions out of order (an
/// interrupted run copied the newer source version first). The restore
/// takes the newest *source* version by the time recorded on each copy, not
/// the newest copy; without source order it would take the stale one.
#[tokio::test]
async fn versions_are_ordered_by_the_source_time_recorded_on_each_copy() {
    let listing = mock!(Client::list_object_versions).then_output(|| {
        ListObjectVersionsOutput::builder()
            // Copied last (t=300), but the older source version.
            .versions(version("esc/a", "copied-last", 300))
            // Copied first (t=200), the newer source version.
            .versions(version("esc/a", "copied-first", 200))
            .versions(version("esc/b", "b1", 100))
            .is_truncated(false)
            .build()
    });
    let recorded = |id: &'static str, source_time: &'static str| {
        mock!(Client::head_object).match_requests(move |r| r.version_id() == Some(id)).then_output(
            move || {
                HeadObjectOutput::builder()
                    .metadata(escrow_sync_s3::SOURCE_MODIFIED_META, source_time)
                    .build()
            },
        )
    };
    let old = recorded("copied-last", "2026-01-01T00:00:00Z");
    let new = recorded("copied-first", "2026-02-01T00:00:00Z");
    let pick = |source_order: bool| {
        let rules = [&listing, &old, &new];
        let source = S3RestoreSource::from_client(client(&rules), "escrow")
            .with_dest_prefix("esc/")
            .with_source_order(source_order);
        async move {
            let items: Vec<Item> = source.list(&Scope::all()).try_collect().await.unwrap();
            items.into_iter().map(|i| (i.key, i.version.unwrap())).collect::<Vec<_>>()
        }
    };
    assert_eq!(
        pick(true).await,
        [("a".to_string(), "copied-first".to_string()), ("b".into(), "b1".into())]
    );
    assert_eq!(pick(false).await[0].1, "copied-last");
    // One HeadObject per version of the key with two; none for b.
    assert_eq!(old.num_calls() + new.num_calls(), 2);
}

/// A version as listed with its `IsLatest` flag.
fn listed_version(key: &str, id: &str, secs: i64, latest: bool) -> ObjectVersion {
    ObjectVersion::builder()
        .key(key)
        .version_id(id)
        .e_tag(format!("\"{id}\""))
        .size(secs)
        .last_modified(at(secs))
        .is_latest(latest)
        .build()
}

/// A delete marker as listed with its `IsLatest` flag.
fn marker(key: &str, id: &str, secs: i64, latest: bool) -> DeleteMarkerEntry {
    DeleteMarkerEntry::builder()
        .key(key)
        .version_id(id)
        .last_modified(at(secs))
        .is_latest(latest)
        .build()
}

/// The (key, version) pairs a restore as of `at_secs` takes from `rules`.
async fn restored(rules: &[&Rule], at_secs: Option<u64>) -> Vec<(String, String)> {
    let source = S3RestoreSource::from_client(client(rules), "escrow")
        .with_dest_prefix("esc/")
        .with_as_of(at_secs.map(|s| UNIX_EPOCH + Duration::from_secs(s)));
    let items: Vec<Item> = source.list(&Scope::all()).try_collect().await.unwrap();
    items.into_iter().map(|i| (i.key, i.version.unwrap())).collect()
}

fn pairs(of: &[(&str, &str)]) -> Vec<(String, String)> {
    of.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// S3 gives LastModified to the second. A delete marker put in the same
/// second as the version it hides is the newer entry (AWS lists it first
/// and marks it `IsLatest`): the key stays deleted, as of now and as of that
/// very second. A key deleted and put again in one second is held (its
/// version is the latest).
#[tokio::test]
async fn a_delete_marker_in_the_same_second_as_its_version_keeps_the_key_deleted() {
    let listing = mock!(Client::list_object_versions).then_output(|| {
        ListObjectVersionsOutput::builder()
            // a: put at 100, deleted at 100 (listed: marker, then version).
            .versions(listed_version("esc/a", "a1", 100, false))
            // b: deleted at 100, put again at 100 (listed: version, then marker).
            .versions(listed_version("esc/b", "b2", 100, true))
            .versions(listed_version("esc/b", "b1", 90, false))
            // c: untouched.
            .versions(listed_version("esc/c", "c1", 100, true))
            .delete_markers(marker("esc/a", "adel", 100, true))
            .delete_markers(marker("esc/b", "bdel", 100, false))
            .is_truncated(false)
            .build()
    });
    let want = pairs(&[("b", "b2"), ("c", "c1")]);
    assert_eq!(restored(&[&listing], None).await, want);
    assert_eq!(restored(&[&listing], Some(100)).await, want);
    // Before that second: a1 was not copied yet, b1 was held.
    assert_eq!(restored(&[&listing], Some(99)).await, pairs(&[("b", "b1")]));
}

/// Several versions copied in one second: the listing's order (newest
/// first) decides, with or without `IsLatest`, as of now and as of that
/// second.
#[tokio::test]
async fn versions_copied_in_one_second_go_by_the_listing_order() {
    let listing = mock!(Client::list_object_versions).then_output(|| {
        ListObjectVersionsOutput::builder()
            .versions(listed_version("esc/a", "a3", 200, true))
            .versions(listed_version("esc/a", "a2", 200, false))
            .versions(listed_version("esc/a", "a1", 200, false))
            .versions(version("esc/b", "b3", 200))
            .versions(version("esc/b", "b2", 200))
            .versions(version("esc/b", "b1", 100))
            .is_truncated(false)
            .build()
    });
    let want = pairs(&[("a", "a3"), ("b", "b3")]);
    assert_eq!(restored(&[&listing], None).await, want);
    assert_eq!(restored(&[&listing], Some(200)).await, want);
    assert_eq!(restored(&[&listing], Some(150)).await, pairs(&[("b", "b1")]));
}

/// A version and a delete marker of one second that are both older than the
/// key's latest entry: ListObjectVersions' two lists do not say which of the
/// two came first, so the restore asks S3 for the entries listed after the
/// version (`VersionIdMarker`): the marker among them is older than the
/// version. Either answer is followed, as of any time in that second or
/// after it, before the next entry.
#[tokio::test]
async fn a_same_second_tie_under_a_newer_version_is_settled_by_the_listing_after_the_version() {
    let listing = || {
        mock!(Client::list_object_versions)
            .match_requests(|r| r.key_marker().is_none())
            .then_output(|| {
                ListObjectVersionsOutput::builder()
                    .versions(listed_version("esc/a", "a2", 300, true))
                    .versions(listed_version("esc/a", "a1", 100, false))
                    .versions(listed_version("esc/a", "a0", 50, false))
                    .delete_markers(marker("esc/a", "adel", 100, false))
                    .is_truncated(false)
                    .build()
            })
    };
    // What S3 lists after a1: the marker (a1 was copied after the delete).
    let after_marker_older = mock!(Client::list_object_versions)
        .match_requests(|r| {
            r.prefix() == Some("esc/a")
                && r.key_marker() == Some("esc/a")
                && r.version_id_marker() == Some("a1")
        })
        .then_output(|| {
            ListObjectVersionsOutput::builder()
                .versions(listed_version("esc/a", "a0", 50, false))
                .delete_markers(marker("esc/a", "adel", 100, false))
                .is_truncated(false)
                .build()
        });
    // What S3 lists after a1: no marker (the delete came after a1).
    let after_marker_newer = mock!(Client::list_object_versions)
        .match_requests(|r| r.version_id_marker() == Some("a1"))
        .then_output(|| {
            ListObjectVersionsOutput::builder()
                .versions(listed_version("esc/a", "a0", 50, false))
                .is_truncated(false)
                .build()
        });
    let first = listing();
    for secs in [100, 200] {
        assert_eq!(
            restored(&[&first, &after_marker_older], Some(secs)).await,
            pairs(&[("a", "a1")]),
            "as of {secs}"
        );
    }
    assert_eq!(after_marker_older.num_calls(), 2);
    let first = listing();
    for secs in [100, 200] {
        assert!(restored(&[&first, &after_marker_newer], Some(secs)).await.is_empty(), "{secs}");
    }
    assert_eq!(after_marker_newer.num_calls(), 2);
    // As of now, or before the tie, nothing needs asking.
    let first = listing();
    let unused = mock!(Client::list_object_versions)
        .match_requests(|r| r.version_id_marker().is_some())
        .then_output(|| ListObjectVersionsOutput::builder().build());
    assert_eq!(restored(&[&first, &unused], None).await, pairs(&[("a", "a2")]));
    assert_eq!(restored(&[&first, &unused], Some(99)).await, pairs(&[("a", "a0")]));
    assert_eq!(unused.num_calls(), 0);
}

/// Many entries of one second under a newer version: the walk after the
/// newest of them goes on page by page while it sees only that second, and
/// stops at the first older entry.
#[tokio::test]
async fn a_long_same_second_run_is_walked_page_by_page() {
    let listing = mock!(Client::list_object_versions)
        .match_requests(|r| r.key_marker().is_none())
        .then_output(|| {
            ListObjectVersionsOutput::builder()
                .versions(listed_version("esc/a", "a9", 300, true))
                .versions(listed_version("esc/a", "a3", 100, false))
                .versions(listed_version("esc/a", "a2", 100, false))
                .versions(listed_version("esc/a", "a1", 100, false))
                .versions(listed_version("esc/a", "a0", 50, false))
                .delete_markers(marker("esc/a", "adel", 100, false))
                .is_truncated(false)
                .build()
        });
    // After a3, one page per entry of that second, the marker on the third.
    let after = |id: &'static str, next: Option<&'static str>| {
        mock!(Client::list_object_versions)
            .match_requests(move |r| r.version_id_marker() == Some(id) && r.max_keys() == Some(4))
            .then_output(move || {
                let out = ListObjectVersionsOutput::builder();
                match next {
                    Some(next) => out
                        .versions(listed_version("esc/a", next, 100, false))
                        .is_truncated(true)
                        .next_key_marker("esc/a")
                        .next_version_id_marker(next),
                    None => out.delete_markers(marker("esc/a", "adel", 100, false)),
                }
                .build()
            })
    };
    let (p1, p2, p3) = (after("a3", Some("a2")), after("a2", Some("a1")), after("a1", None));
    assert_eq!(restored(&[&listing, &p1, &p2, &p3], Some(200)).await, pairs(&[("a", "a3")]));
    assert_eq!((p1.num_calls(), p2.num_calls(), p3.num_calls()), (1, 1, 1));
    // An older entry before the marker: the marker is newer than a3, the
    // key was deleted.
    let older = mock!(Client::list_object_versions)
        .match_requests(|r| r.version_id_marker() == Some("a3"))
        .then_output(|| {
            ListObjectVersionsOutput::builder()
                .versions(listed_version("esc/a", "a0", 50, false))
                .is_truncated(true)
                .next_key_marker("esc/a")
                .next_version_id_marker("a0")
                .build()
        });
    let never = mock!(Client::list_object_versions)
        .match_requests(|r| r.version_id_marker() == Some("a0"))
        .then_output(|| ListObjectVersionsOutput::builder().build());
    assert!(restored(&[&listing, &older, &never], Some(200)).await.is_empty());
    assert_eq!((older.num_calls(), never.num_calls()), (1, 0));
}
