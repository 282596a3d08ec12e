//! The Redshift source against aws-smithy-mocks (an in-memory Redshift,
//! `fake`): selection by tags (all of them), by ids and of everything the
//! primary owns; the share (AuthorizeSnapshotAccess for the escrow account)
//! as a snapshot is read and its removal when it is finished, and for an item
//! not read only when the listing shows a share left for the escrow; an automated
//! snapshot copied once to a manual one in the primary, tagged, reused, and
//! that copy shared; a snapshot under the AWS-managed key refused with what
//! to do (Redshift has no re-encryption path); `assess` changing nothing.
//!
//! The emulator suite (tests/redshift_two_accounts.rs) runs the same calls
//! against moto; these pin the request shapes and the paths the emulator
//! cannot produce (AWS-managed keys).

mod fake;

use std::time::Duration;

use futures::TryStreamExt;

use escrow_sync_core::{ErrorKind, Item, ItemKind, Payload, Scope, Source};
use escrow_sync_redshift::RedshiftSnapshotSource;
use fake::{
    AWS_MANAGED_KEY, ESCROW, PRIMARY, PRIMARY_KEY, REGION, Shared, encrypted, snap, snapshot,
    with_tags, world,
};

fn source(w: &Shared) -> RedshiftSnapshotSource {
    RedshiftSnapshotSource::from_client(
        fake::primary_client(w),
        fake::kms(),
        REGION,
        PRIMARY,
        ESCROW,
    )
    .with_wait(Duration::from_secs(5), Duration::from_millis(1))
}

fn add(w: &Shared, s: aws_sdk_redshift::types::Snapshot) {
    let id = s.snapshot_identifier().unwrap().to_string();
    w.lock().unwrap().primary.insert(id, snap(s));
}

fn item(key: &str) -> Item {
    Item::new(key, ItemKind::Snapshot, 10 << 20, key)
}

async fn keys(src: &RedshiftSnapshotSource) -> Vec<String> {
    let items: Vec<Item> = src.list(&Scope::all()).try_collect().await.unwrap();
    items.into_iter().map(|i| i.key).collect()
}

#[tokio::test]
async fn the_listing_selects_available_snapshots_carrying_every_tag() {
    let w = world();
    add(
        &w,
        with_tags(
            snapshot("both", "sales", "manual", PRIMARY),
            &[("backup", "yes"), ("tier", "gold")],
        ),
    );
    add(&w, with_tags(snapshot("one", "sales", "manual", PRIMARY), &[("backup", "yes")]));
    add(&w, snapshot("rs:sales-2026-11-28-00-00", "sales", "automated", PRIMARY));
    let mut creating = snapshot("creating", "sales", "manual", PRIMARY);
    creating.status = Some("creating".into());
    add(&w, creating);
    // escrow-sync's own manual copy of an automated snapshot stands for it.
    add(
        &w,
        with_tags(
            snapshot("escrow-sync-rs-sales-2026-11-27-00-00", "sales", "manual", PRIMARY),
            &[(escrow_sync_core::tags::COPIED_FROM, "rs:sales-2026-11-27-00-00")],
        ),
    );

    assert_eq!(keys(&source(&w)).await, ["both", "one", "rs:sales-2026-11-28-00-00"]);
    let tagged = source(&w).with_tags(
        [("backup".to_string(), "yes".to_string()), ("tier".to_string(), "gold".to_string())]
            .into(),
    );
    let items: Vec<Item> = tagged.list(&Scope::all()).try_collect().await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!((items[0].key.as_str(), items[0].fingerprint.as_str()), ("both", "both"));
    assert_eq!(items[0].size, 10 << 20, "the backup size, in bytes");
    assert_eq!(keys(&source(&w)).await.len(), 3);
    assert!(w.lock().unwrap().calls.is_empty(), "listing changes nothing");
}

#[tokio::test]
async fn the_listing_by_ids_names_an_id_that_is_missing() {
    let w = world();
    add(&w, snapshot("a", "sales", "manual", PRIMARY));
    let src = source(&w).with_ids(vec!["a".into()]);
    assert_eq!(keys(&src).await, ["a"]);
    let missing = source(&w).with_ids(vec!["a".into(), "gone".into()]);
    let err = missing.list(&Scope::all()).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("gone") && err.to_string().contains("ids"), "{err}");
}

#[tokio::test]
async fn reading_shares_with_the_escrow_and_finishing_unshares() {
    let w = world();
    add(&w, encrypted(snapshot("weekly", "sales", "manual", PRIMARY), PRIMARY_KEY));
    let src = source(&w);
    let Payload::Reference(r) = src.read(&item("weekly")).await.unwrap() else {
        panic!("a reference")
    };
    assert_eq!(
        (r.service.as_str(), r.container.as_str(), r.key.as_str()),
        ("redshift", REGION, "weekly")
    );
    assert_eq!(r.owner.as_deref(), Some(PRIMARY));
    assert_eq!(r.attributes["cluster"], "sales");
    assert_eq!(
        r.attributes["arn"],
        "arn:aws:redshift:us-east-1:111111111111:snapshot:sales/weekly"
    );
    assert_eq!(r.attributes["start-time"], "2023-11-14T22:13:20Z");
    assert!(w.lock().unwrap().primary["weekly"].authorized.contains(ESCROW));
    // Reading again (a retry) finds the share in place: fine.
    src.read(&item("weekly")).await.unwrap();
    src.finish(&item("weekly")).await.unwrap();
    assert!(w.lock().unwrap().primary["weekly"].authorized.is_empty());
    assert_eq!(
        w.lock().unwrap().mutations(),
        [
            "authorize weekly 222222222222",
            "authorize weekly 222222222222",
            "revoke weekly 222222222222"
        ]
    );
    // Finishing twice (a retry) finds nothing to revoke: fine.
    src.finish(&item("weekly")).await.unwrap();
}

#[tokio::test]
async fn a_share_only_source_keeps_the_share() {
    let w = world();
    add(&w, snapshot("weekly", "sales", "manual", PRIMARY));
    let src = source(&w).with_unshare_after_copy(false);
    src.read(&item("weekly")).await.unwrap();
    src.finish(&item("weekly")).await.unwrap();
    assert!(w.lock().unwrap().primary["weekly"].authorized.contains(ESCROW));
    assert_eq!(w.lock().unwrap().count("revoke"), 0);
}

#[tokio::test]
async fn a_snapshot_under_the_aws_managed_key_is_refused_with_what_to_do() {
    let w = world();
    add(&w, encrypted(snapshot("weekly", "sales", "manual", PRIMARY), AWS_MANAGED_KEY));
    let src = source(&w);
    let err = src.read(&item("weekly")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let text = err.to_string();
    for needle in
        ["weekly", "aws/redshift", "no re-encryption", "sales", "customer-managed", ESCROW]
    {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }
    let assessed = src.assess(&item("weekly")).await.unwrap_err();
    assert_eq!(assessed.kind(), ErrorKind::Unsupported);
    assert!(w.lock().unwrap().calls.is_empty(), "nothing shared");
}

#[tokio::test]
async fn an_automated_snapshot_is_copied_to_a_manual_one_once_and_that_is_shared() {
    let w = world();
    let auto = "rs:sales-2026-11-28-00-00";
    add(&w, snapshot(auto, "sales", "automated", PRIMARY));
    let src = source(&w);
    assert_eq!(
        src.assess(&item(auto)).await.unwrap().as_deref(),
        Some("automated: copied to a manual snapshot in the primary first")
    );
    assert!(w.lock().unwrap().calls.is_empty(), "assess changes nothing");

    let Payload::Reference(r) = src.read(&item(auto)).await.unwrap() else { panic!("a reference") };
    let copy = "escrow-sync-rs-sales-2026-11-28-00-00";
    assert_eq!(r.key, copy, "the manual copy is what is shared");
    assert_eq!(
        r.attributes["arn"],
        format!("arn:aws:redshift:us-east-1:111111111111:snapshot:sales/{auto}")
    );
    {
        let w = w.lock().unwrap();
        assert_eq!(
            w.mutations(),
            [
                format!("copy {auto} {copy}"),
                format!("tag {copy}"),
                format!("authorize {copy} {ESCROW}")
            ]
        );
        assert_eq!(
            fake::tag_of(&w.primary[copy].snapshot, escrow_sync_core::tags::COPIED_FROM),
            Some(auto)
        );
    }
    src.finish(&item(auto)).await.unwrap();
    assert!(w.lock().unwrap().primary[copy].authorized.is_empty(), "the copy is unshared");

    // A later run reuses the copy, and the listing still names the original.
    src.read(&item(auto)).await.unwrap();
    assert_eq!(w.lock().unwrap().count("copy"), 1, "no second copy");
    assert_eq!(keys(&src).await, [auto]);
    assert!(src.assess(&item(auto)).await.unwrap().unwrap().contains(copy));
}

#[tokio::test]
async fn a_plain_manual_snapshot_assesses_as_a_plain_copy() {
    let w = world();
    add(&w, encrypted(snapshot("weekly", "sales", "manual", PRIMARY), PRIMARY_KEY));
    assert_eq!(source(&w).assess(&item("weekly")).await.unwrap(), None);
    assert_eq!(source(&w).assess(&item("gone")).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert!(w.lock().unwrap().calls.is_empty());
}

#[tokio::test]
async fn describe_names_the_account_and_region() {
    let w = world();
    assert_eq!(source(&w).describe(), "redshift://111111111111/us-east-1");
}

#[tokio::test]
async fn a_manual_copy_an_interrupted_run_left_untagged_is_not_an_item_of_its_own() {
    let w = world();
    let auto = "rs:sales-2026-11-28-00-00";
    let copy = "escrow-sync-rs-sales-2026-11-28-00-00";
    add(&w, snapshot(auto, "sales", "automated", PRIMARY));
    // CopyClusterSnapshot cannot tag: the run stopped before CreateTags.
    add(&w, snapshot(copy, "sales", "manual", PRIMARY));
    let src = source(&w);
    assert_eq!(keys(&src).await, [auto], "the untagged copy stands for its original");

    let Payload::Reference(r) = src.read(&item(auto)).await.unwrap() else { panic!("a reference") };
    assert_eq!(r.key, copy, "the copy is reused");
    let w = w.lock().unwrap();
    assert_eq!(w.mutations(), [format!("tag {copy}"), format!("authorize {copy} {ESCROW}")]);
    assert_eq!(
        fake::tag_of(&w.primary[copy].snapshot, escrow_sync_core::tags::COPIED_FROM),
        Some(auto)
    );
}

#[tokio::test]
async fn a_manual_copy_name_held_by_the_copy_of_another_snapshot_is_not_shared() {
    let w = world();
    let auto = "rs:sales-2026-11-28-00-00";
    let copy = "escrow-sync-rs-sales-2026-11-28-00-00";
    add(&w, snapshot(auto, "sales", "automated", PRIMARY));
    add(
        &w,
        with_tags(
            snapshot(copy, "sales", "manual", PRIMARY),
            &[(escrow_sync_core::tags::COPIED_FROM, "rs:other-2026-11-28-00-00")],
        ),
    );
    let err = source(&w).read(&item(auto)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    assert!(err.to_string().contains("rs:other-2026-11-28-00-00"), "{err}");
    assert!(w.lock().unwrap().calls.is_empty(), "nothing retagged or shared");
}

/// Items escrow already holds are finished without being read: only a
/// share an interrupted run left (AccountsWithRestoreAccess naming the
/// escrow, as the listing shows it) is revoked, on the snapshot or on the
/// manual copy of an automated one; other accounts' access stays.
#[tokio::test]
async fn finishing_an_item_not_read_revokes_only_a_share_left_for_the_escrow() {
    let w = world();
    let auto = "rs:sales-2026-11-28-00-00";
    let copy = "escrow-sync-rs-sales-2026-11-28-00-00";
    let mut weekly = snap(snapshot("weekly", "sales", "manual", PRIMARY));
    weekly.authorized.extend([ESCROW.to_string(), "333333333333".to_string()]);
    let mut other = snap(snapshot("other", "sales", "manual", PRIMARY));
    other.authorized.insert("333333333333".into());
    let mut manual = snap(with_tags(
        snapshot(copy, "sales", "manual", PRIMARY),
        &[(escrow_sync_core::tags::COPIED_FROM, auto)],
    ));
    manual.authorized.insert(ESCROW.into());
    {
        let mut w = w.lock().unwrap();
        w.primary.insert("weekly".into(), weekly);
        w.primary.insert("other".into(), other);
        w.primary.insert("clean".into(), snap(snapshot("clean", "sales", "manual", PRIMARY)));
        w.primary.insert(copy.into(), manual);
    }
    add(&w, snapshot(auto, "sales", "automated", PRIMARY));
    let src = source(&w);
    assert!(src.finishes_skipped());
    assert_eq!(keys(&src).await.len(), 4, "the manual copy is no item");
    for key in ["weekly", "other", "clean", auto] {
        src.finish(&item(key)).await.unwrap();
    }
    assert_eq!(
        w.lock().unwrap().mutations(),
        [format!("revoke weekly {ESCROW}"), format!("revoke {copy} {ESCROW}")]
    );
    assert!(w.lock().unwrap().primary["weekly"].authorized.contains("333333333333"));
    assert!(w.lock().unwrap().primary["other"].authorized.contains("333333333333"));
    // Finished again (a retry), or after a new listing: nothing is left.
    src.finish(&item("weekly")).await.unwrap();
    keys(&src).await;
    for key in ["weekly", "other", "clean", auto] {
        src.finish(&item(key)).await.unwrap();
    }
    assert_eq!(w.lock().unwrap().count("revoke"), 2, "no further mutating call");

    // A share-only source never revokes.
    w.lock().unwrap().primary.get_mut("weekly").unwrap().authorized.insert(ESCROW.into());
    let keep = source(&w).with_unshare_after_copy(false);
    assert!(!keep.finishes_skipped());
    keys(&keep).await;
    keep.finish(&item("weekly")).await.unwrap();
    assert_eq!(w.lock().unwrap().count("revoke"), 2);
}

/// Listed by ids (or tags), the manual copy of an automated snapshot is not
/// in the listing: it is described by its name, and revoked only when it is
/// escrow-sync's copy of that snapshot.
#[tokio::test]
async fn a_manual_copy_the_listing_did_not_show_is_looked_up_by_name() {
    let w = world();
    let auto = "rs:sales-2026-11-28-00-00";
    let copy = "escrow-sync-rs-sales-2026-11-28-00-00";
    add(&w, snapshot(auto, "sales", "automated", PRIMARY));
    let mut manual = snap(with_tags(
        snapshot(copy, "sales", "manual", PRIMARY),
        &[(escrow_sync_core::tags::COPIED_FROM, auto)],
    ));
    manual.authorized.insert(ESCROW.into());
    w.lock().unwrap().primary.insert(copy.into(), manual);
    let src = source(&w).with_ids(vec![auto.into()]);
    assert_eq!(keys(&src).await, [auto]);
    src.finish(&item(auto)).await.unwrap();
    assert_eq!(w.lock().unwrap().mutations(), [format!("revoke {copy} {ESCROW}")]);

    // The name held by another snapshot's copy: not this item's share.
    let w = world();
    add(&w, snapshot(auto, "sales", "automated", PRIMARY));
    let mut theirs = snap(with_tags(
        snapshot(copy, "sales", "manual", PRIMARY),
        &[(escrow_sync_core::tags::COPIED_FROM, "rs:someone-else")],
    ));
    theirs.authorized.insert(ESCROW.into());
    w.lock().unwrap().primary.insert(copy.into(), theirs);
    let src = source(&w).with_ids(vec![auto.into()]);
    keys(&src).await;
    src.finish(&item(auto)).await.unwrap();
    assert!(w.lock().unwrap().mutations().is_empty(), "left alone");
}
