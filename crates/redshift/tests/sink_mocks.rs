//! The Redshift sink against aws-smithy-mocks (an in-memory Redshift for
//! both accounts, `fake`).
//!
//! Independent copies: the restore request (the shared snapshot by
//! OwnerAccount, the escrow key, a deterministic cluster name), the manual
//! snapshot (indefinite retention, provenance tags at creation), the
//! cluster deleted without a final snapshot; a restore that fails (reported
//! with its state, the cluster deleted, the next run restoring again); a
//! run resumed from an existing restore cluster or a snapshot in progress;
//! a snapshot that fails (reported, the cluster kept, the next run taking a
//! new one); snapshot quota errors retried by the executor; whole runs
//! through the core executor, re-runs making no mutating call, verify and
//! retention. Share-only: the share recorded, verify flagging it.
//!
//! The emulator suite (tests/redshift_two_accounts.rs) runs the happy paths
//! against moto; restores and snapshots that fail or stay in progress, and
//! quota errors, only happen here.

mod fake;

use std::time::Duration;

use futures::TryStreamExt;

use escrow_sync_core::{
    ErrorKind, Executor, ExecutorOptions, Item, ItemKind, Mode, Payload, Retained, RetryPolicy,
    Scope, ServerSideRef, Sink, Source,
};
use escrow_sync_redshift::{RESTORE_CLUSTER_PREFIX, RedshiftSnapshotSink, RedshiftSnapshotSource};
use fake::{
    Clu, ESCROW, ESCROW_KEY, PRIMARY, PRIMARY_KEY, REGION, Shared, encrypted, snap, snapshot,
    tag_of, with_tags, world,
};

fn sink(w: &Shared) -> RedshiftSnapshotSink {
    RedshiftSnapshotSink::from_client(fake::escrow_client(w), REGION)
        .with_independent_copy(true)
        .with_kms_key_id(Some(ESCROW_KEY.into()))
        .with_accounts(PRIMARY, ESCROW)
        .with_wait(Duration::from_secs(5), Duration::from_millis(1))
}

fn source(w: &Shared, unshare: bool) -> RedshiftSnapshotSource {
    RedshiftSnapshotSource::from_client(
        fake::primary_client(w),
        fake::kms(),
        REGION,
        PRIMARY,
        ESCROW,
    )
    .with_tags([("backup".to_string(), "yes".to_string())].into())
    .with_unshare_after_copy(unshare)
}

/// A primary snapshot `id`, tagged for backup and shared with escrow.
fn shared(w: &Shared, id: &str) {
    let mut s = snap(with_tags(
        encrypted(snapshot(id, "sales", "manual", PRIMARY), PRIMARY_KEY),
        &[("backup", "yes")],
    ));
    s.authorized.insert(ESCROW.into());
    w.lock().unwrap().primary.insert(id.into(), s);
}

fn item(key: &str) -> Item {
    Item::new(key, ItemKind::Snapshot, 10 << 20, key)
}

fn reference(key: &str) -> Payload {
    Payload::Reference(
        ServerSideRef::new("redshift", REGION, key, key)
            .with_owner(Some(PRIMARY.into()))
            .with_attributes(
                [
                    ("cluster".to_string(), "sales".to_string()),
                    ("shared-cluster".to_string(), "sales".to_string()),
                    ("start-time".to_string(), "2023-11-14T22:13:20Z".to_string()),
                    (
                        "arn".to_string(),
                        format!("arn:aws:redshift:us-east-1:111111111111:snapshot:sales/{key}"),
                    ),
                ]
                .into(),
            ),
    )
}

/// The restore cluster escrow-sync uses for `key` (found from the first
/// restore request of a run).
fn restore_cluster(w: &Shared) -> String {
    w.lock().unwrap().restores[0].cluster_identifier().unwrap().to_string()
}

#[tokio::test]
async fn an_independent_copy_restores_with_the_escrow_key_snapshots_and_deletes_the_cluster() {
    let w = world();
    shared(&w, "weekly");
    let receipt = sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap();

    let w = w.lock().unwrap();
    let restore = &w.restores[0];
    let cluster = restore.cluster_identifier().unwrap();
    assert!(cluster.starts_with(RESTORE_CLUSTER_PREFIX) && cluster.len() <= 63, "{cluster}");
    assert_eq!(restore.snapshot_identifier(), Some("weekly"));
    assert_eq!(restore.snapshot_cluster_identifier(), Some("sales"));
    assert_eq!(restore.owner_account(), Some(PRIMARY));
    assert_eq!(restore.kms_key_id(), Some(ESCROW_KEY));
    assert_eq!(restore.encrypted(), Some(true));
    assert_eq!(restore.publicly_accessible(), Some(false));
    assert_eq!(restore.node_type(), None, "node type and count from the snapshot");

    let create = &w.creates[0];
    assert_eq!(create.cluster_identifier(), Some(cluster));
    assert_eq!(create.manual_snapshot_retention_period(), Some(-1), "kept indefinitely");
    let tags: std::collections::BTreeMap<_, _> =
        create.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap())).collect();
    assert_eq!(tags[escrow_sync_core::tags::SOURCE_SNAPSHOT_ID], "weekly");
    assert_eq!(tags[escrow_sync_core::tags::SOURCE_ACCOUNT], PRIMARY);
    assert_eq!(
        tags[escrow_sync_core::tags::SOURCE_ARN],
        "arn:aws:redshift:us-east-1:111111111111:snapshot:sales/weekly"
    );
    assert_eq!(tags[escrow_sync_core::tags::SOURCE_START_TIME], "2023-11-14T22:13:20Z");
    assert_eq!(tags[escrow_sync_core::tags::LINEAGE], "sales");
    assert!(tags.contains_key("escrow-sync:copied-at"), "{tags:?}");

    let snapshot_id = create.snapshot_identifier().unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some(snapshot_id));
    assert_eq!(w.escrow[snapshot_id].snapshot.kms_key_id(), Some(ESCROW_KEY));
    assert_eq!(
        w.mutations(),
        [
            format!("restore {cluster}"),
            format!("tag {cluster}"),
            format!("snapshot {snapshot_id}"),
            format!("delete-cluster {cluster}")
        ]
    );
    assert!(w.clusters.is_empty(), "the restore cluster is gone");
}

#[tokio::test]
async fn restore_options_reach_the_restore_request() {
    let w = world();
    shared(&w, "weekly");
    let options = escrow_sync_redshift::RestoreOptions::new()
        .with_node_type(Some("ra3.large".into()))
        .with_number_of_nodes(Some(1))
        .with_cluster_subnet_group_name(Some("escrow-private".into()))
        .with_vpc_security_group_ids(vec!["sg-1".into()]);
    sink(&w)
        .with_restore_options(options)
        .write(&item("weekly"), reference("weekly"))
        .await
        .unwrap();
    let w = w.lock().unwrap();
    let r = &w.restores[0];
    assert_eq!((r.node_type(), r.number_of_nodes()), (Some("ra3.large"), Some(1)));
    assert_eq!(r.cluster_subnet_group_name(), Some("escrow-private"));
    assert_eq!(r.vpc_security_group_ids(), ["sg-1"]);
}

#[tokio::test]
async fn a_restore_that_fails_is_reported_deleted_and_restored_again_next_run() {
    let w = world();
    shared(&w, "weekly");
    w.lock().unwrap().restore_states =
        vec!["creating".into(), "creating".into(), "incompatible-restore".into()];
    let err = sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    let text = err.to_string();
    assert!(text.contains("incompatible-restore") && text.contains("restores again"), "{text}");
    let cluster = restore_cluster(&w);
    {
        let w = w.lock().unwrap();
        assert_eq!(w.count("snapshot"), 0, "no snapshot of a failed restore");
        assert_eq!(
            w.count(&format!("delete-cluster {cluster}")),
            1,
            "the failed cluster is deleted"
        );
        assert!(w.clusters.is_empty());
    }
    w.lock().unwrap().restore_states.clear();
    sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap();
    let w = w.lock().unwrap();
    assert_eq!((w.count("restore"), w.count("snapshot")), (2, 1));
}

#[tokio::test]
async fn a_run_resumes_from_the_restore_cluster_an_interrupted_run_left() {
    let w = world();
    shared(&w, "weekly");
    // An interrupted run: the restore was started, nothing else.
    let first = world();
    shared(&first, "weekly");
    first.lock().unwrap().restore_states = vec!["creating".into(); 50];
    let err = RedshiftSnapshotSink::from_client(fake::escrow_client(&first), REGION)
        .with_independent_copy(true)
        .with_kms_key_id(Some(ESCROW_KEY.into()))
        .with_wait(Duration::from_millis(20), Duration::from_millis(1))
        .write(&item("weekly"), reference("weekly"))
        .await
        .unwrap_err();
    // Not retryable: the executor would otherwise wait the whole timeout again.
    assert_eq!(err.kind(), ErrorKind::Failed, "timed out: {err}");
    assert!(!err.is_retryable() && err.to_string().contains("the next run waits"), "{err}");
    let cluster = restore_cluster(&first);

    // The next run finds the cluster (still restoring) and continues.
    w.lock().unwrap().clusters.insert(
        cluster.clone(),
        Clu {
            status: "creating".into(),
            next: ["available".to_string()].into(),
            kms_key_id: Some(ESCROW_KEY.into()),
        },
    );
    sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap();
    let w = w.lock().unwrap();
    assert_eq!(w.count("restore"), 0, "not restored twice");
    assert_eq!(w.count("snapshot"), 1);
    assert_eq!(w.count(&format!("delete-cluster {cluster}")), 1);
}

#[tokio::test]
async fn a_snapshot_left_in_progress_is_waited_on_and_the_cluster_deleted() {
    let w = world();
    shared(&w, "weekly");
    // First run: restore and snapshot, but the snapshot is never done.
    w.lock().unwrap().snapshot_states = vec!["creating".into(); 50];
    let err = sink(&w)
        .with_wait(Duration::from_millis(20), Duration::from_millis(1))
        .write(&item("weekly"), reference("weekly"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed, "{err}");
    let cluster = restore_cluster(&w);
    let snapshot_id = w.lock().unwrap().creates[0].snapshot_identifier().unwrap().to_string();
    assert_eq!(
        w.lock().unwrap().count("delete-cluster"),
        0,
        "the cluster stays until the snapshot is done"
    );

    // It completes; the next run waits on it, takes no second snapshot.
    w.lock().unwrap().escrow.get_mut(&snapshot_id).unwrap().next = ["available".to_string()].into();
    let receipt = sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some(snapshot_id.as_str()));
    let w = w.lock().unwrap();
    assert_eq!((w.count("restore"), w.count("snapshot")), (1, 1));
    assert_eq!(w.count(&format!("delete-cluster {cluster}")), 1);
}

#[tokio::test]
async fn a_snapshot_that_fails_is_reported_and_the_next_run_takes_a_new_one() {
    let w = world();
    shared(&w, "weekly");
    w.lock().unwrap().snapshot_states = vec!["creating".into(), "failed".into()];
    let err = sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    assert!(err.to_string().contains("failed") && err.to_string().contains("is kept"), "{err}");
    let first = w.lock().unwrap().creates[0].snapshot_identifier().unwrap().to_string();
    assert!(first.ends_with("-1"), "{first}");
    assert_eq!(w.lock().unwrap().clusters.len(), 1, "the cluster is kept for the next run");

    w.lock().unwrap().snapshot_states.clear();
    let receipt = sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap();
    let second = receipt.fingerprint.unwrap();
    assert_eq!(second, first.replace("-1", "-2"), "a new name: the failed one stays");
    let w = w.lock().unwrap();
    assert_eq!(w.count("restore"), 1, "the kept cluster is snapshotted again");
    assert!(w.clusters.is_empty());
}

fn executor() -> Executor {
    Executor::new(ExecutorOptions::new().with_concurrency(4).with_retry(RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }))
}

#[tokio::test]
async fn a_snapshot_quota_error_is_retried_with_back_off() {
    let w = world();
    shared(&w, "weekly");
    w.lock().unwrap().quota_failures = 2;
    let err = sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Throttled, "{err}");
    assert!(
        err.is_retryable() && err.chain().contains("ClusterSnapshotQuotaExceeded"),
        "{}",
        err.chain()
    );

    let run =
        executor().execute(Mode::Run, &source(&w, true), &sink(&w), &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");
    assert!(run.throttled >= 1, "{run:?}");
    let w = w.lock().unwrap();
    assert_eq!((w.count("restore"), w.count("snapshot")), (1, 1), "one cluster, one snapshot");
}

#[tokio::test]
async fn a_run_copies_unshares_and_a_rerun_makes_no_mutating_call() {
    let w = world();
    shared(&w, "weekly");
    shared(&w, "monthly");
    for s in w.lock().unwrap().primary.values_mut() {
        s.authorized.clear();
    }
    let (src, dst) = (source(&w, true), sink(&w));
    let ex = executor();

    let plan = ex.execute(Mode::Plan, &src, &dst, &Scope::all()).await.unwrap();
    assert_eq!((plan.missing, plan.copied), (2, 2), "{plan:?}");
    assert!(w.lock().unwrap().calls.is_empty(), "plan changes nothing");

    let run = ex.execute(Mode::Run, &src, &dst, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (2, 0), "{run:?}");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    {
        let w = w.lock().unwrap();
        assert_eq!((w.count("authorize"), w.count("restore"), w.count("snapshot")), (2, 2, 2));
        assert_eq!((w.count("delete-cluster"), w.count("revoke")), (2, 2));
        assert!(w.primary.values().all(|s| s.authorized.is_empty()), "unshared after");
        assert!(w.clusters.is_empty());
    }
    let before = w.lock().unwrap().mutations();
    let again = ex.execute(Mode::Run, &src, &dst, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 2), "{again:?}");
    assert_eq!(w.lock().unwrap().mutations(), before, "no mutating call");

    let verify = ex.execute(Mode::Verify, &src, &dst, &Scope::all()).await.unwrap();
    assert!(verify.is_clean(), "{verify:?}");
    assert_eq!((verify.missing, verify.unprotected), (0, 0), "{verify:?}");

    let copies = Retained::copies(&dst).await.unwrap();
    assert_eq!(copies.len(), 2);
    let weekly = copies.iter().find(|c| c.source == "weekly").unwrap();
    assert!(weekly.complete);
    assert_eq!(
        (weekly.lineage.as_str(), weekly.created.as_str()),
        ("sales", "2023-11-14T22:13:20Z")
    );
    dst.delete_copy(weekly).await.unwrap();
    assert_eq!(w.lock().unwrap().count(&format!("delete-snapshot {}", weekly.id)), 1);
    let listed: Vec<Item> = dst.list(&Scope::all()).try_collect().await.unwrap();
    assert_eq!(listed.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["monthly"]);
}

#[tokio::test]
async fn a_share_an_interrupted_run_left_is_revoked_by_the_next_run_which_copies_nothing() {
    let w = world();
    shared(&w, "weekly");
    w.lock().unwrap().primary.get_mut("weekly").unwrap().authorized.clear();
    let (src, dst) = (source(&w, true), sink(&w));
    assert!(src.finishes_skipped());
    let ex = executor();
    let run = ex.execute(Mode::Run, &src, &dst, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");

    // The run stopped between the copy and the revoke: the share is left.
    w.lock().unwrap().primary.get_mut("weekly").unwrap().authorized.insert(ESCROW.into());
    let before = w.lock().unwrap().mutations().len();
    let again = ex.execute(Mode::Run, &src, &dst, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(
        w.lock().unwrap().mutations()[before..],
        [format!("revoke weekly {ESCROW}")],
        "the revoke, nothing else"
    );
    assert!(w.lock().unwrap().primary["weekly"].authorized.is_empty());

    // Nothing left: no mutating call.
    let before = w.lock().unwrap().mutations();
    let again = ex.execute(Mode::Run, &src, &dst, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 1), "{again:?}");
    assert_eq!(w.lock().unwrap().mutations(), before, "no mutating call");

    // A share-only job (no independent copy) keeps its share.
    w.lock().unwrap().primary.get_mut("weekly").unwrap().authorized.insert(ESCROW.into());
    let keep = source(&w, false);
    assert!(!keep.finishes_skipped());
    let kept = ex.execute(Mode::Run, &keep, &dst, &Scope::all()).await.unwrap();
    assert_eq!(kept.skipped, 1, "{kept:?}");
    assert_eq!(w.lock().unwrap().mutations(), before, "never revoked");
    assert!(w.lock().unwrap().primary["weekly"].authorized.contains(ESCROW));
}

#[tokio::test]
async fn a_copy_whose_cluster_is_still_there_is_not_complete_and_the_next_run_deletes_it() {
    let w = world();
    shared(&w, "weekly");
    sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap();
    let cluster = restore_cluster(&w);
    // As if the run stopped before deleting the cluster.
    w.lock().unwrap().clusters.insert(
        cluster.clone(),
        Clu { status: "available".into(), next: Default::default(), kms_key_id: None },
    );
    let listed: Vec<Item> = sink(&w).list(&Scope::all()).try_collect().await.unwrap();
    assert!(listed.is_empty(), "not complete while its restore cluster exists");
    let run =
        executor().execute(Mode::Run, &source(&w, false), &sink(&w), &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");
    let w = w.lock().unwrap();
    assert_eq!((w.count("restore"), w.count("snapshot")), (1, 1), "nothing made twice");
    assert_eq!(w.count(&format!("delete-cluster {cluster}")), 2);
    assert!(w.clusters.is_empty());
}

#[tokio::test]
async fn verify_flags_a_copy_under_another_key_or_with_a_retention_limit() {
    let w = world();
    shared(&w, "weekly");
    sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap();
    assert!(sink(&w).audit(&item("weekly")).await.unwrap().is_empty());
    {
        let mut w = w.lock().unwrap();
        let copy = w.escrow.values_mut().next().unwrap();
        copy.snapshot.kms_key_id = Some(PRIMARY_KEY.into());
        copy.snapshot.manual_snapshot_retention_period = Some(7);
    }
    let problems = sink(&w).audit(&item("weekly")).await.unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains(PRIMARY_KEY) && problems[0].contains(ESCROW_KEY), "{problems:?}");
    assert!(problems[1].contains("7 days") && problems[1].contains("-1"), "{problems:?}");
    let unkeyed = RedshiftSnapshotSink::from_client(fake::escrow_client(&w), REGION)
        .with_independent_copy(true)
        .audit(&item("weekly"))
        .await
        .unwrap();
    assert!(unkeyed.iter().any(|p| p.contains("the primary's key")), "{unkeyed:?}");
}

#[tokio::test]
async fn verify_takes_a_key_alias_for_the_key_it_names() {
    let w = world();
    shared(&w, "weekly");
    sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap();
    for alias in ["alias/escrow", "arn:aws:kms:us-east-1:222222222222:alias/escrow", "escrow"] {
        let by_alias = sink(&w).with_kms_key_id(Some(alias.into()));
        assert!(by_alias.audit(&item("weekly")).await.unwrap().is_empty(), "{alias}");
    }
    let other =
        sink(&w).with_kms_key_id(Some("arn:aws:kms:us-east-1:222222222222:key/other".into()));
    assert_eq!(other.audit(&item("weekly")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn copies_of_another_primarys_snapshot_of_the_same_name_are_not_this_jobs() {
    let w = world();
    shared(&w, "weekly");
    sink(&w).write(&item("weekly"), reference("weekly")).await.unwrap();
    let other = RedshiftSnapshotSink::from_client(fake::escrow_client(&w), REGION)
        .with_independent_copy(true)
        .with_kms_key_id(Some(ESCROW_KEY.into()))
        .with_accounts("333333333333", ESCROW);
    let listed: Vec<Item> = other.list(&Scope::all()).try_collect().await.unwrap();
    assert!(listed.is_empty(), "{listed:?}");
    assert!(other.copies().await.unwrap().is_empty());
    assert_eq!(sink(&w).copies().await.unwrap().len(), 1);
    let listed: Vec<Item> = sink(&w).list(&Scope::all()).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
}

fn share_only(w: &Shared) -> RedshiftSnapshotSink {
    RedshiftSnapshotSink::from_client(fake::escrow_client(w), REGION)
        .with_accounts(PRIMARY, ESCROW)
        .with_wait(Duration::from_secs(5), Duration::from_millis(1))
}

#[tokio::test]
async fn share_only_records_the_share_and_verify_flags_it() {
    let w = world();
    shared(&w, "weekly");
    for s in w.lock().unwrap().primary.values_mut() {
        s.authorized.clear();
    }
    let (src, dst) = (source(&w, false), share_only(&w));
    let ex = executor();
    let run = ex.execute(Mode::Run, &src, &dst, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");
    {
        let w = w.lock().unwrap();
        assert_eq!(w.mutations(), ["authorize weekly 222222222222"], "only the share");
        assert!(w.primary["weekly"].authorized.contains(ESCROW), "the share stays");
    }
    let again = ex.execute(Mode::Run, &src, &dst, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 1), "{again:?}");
    assert_eq!(w.lock().unwrap().mutations().len(), 1, "no mutating call");

    let verify = ex.execute(Mode::Verify, &src, &dst, &Scope::all()).await.unwrap();
    assert_eq!((verify.missing, verify.unprotected), (0, 1), "{verify:?}");
    assert!(!verify.is_clean());
    assert!(
        verify.findings[0].problem.contains("only a share of weekly that the primary can revoke")
            && verify.findings[0].problem.contains("independent_copy = true"),
        "{:?}",
        verify.findings
    );
    assert!(Retained::copies(&dst).await.unwrap().is_empty(), "escrow owns no copy");
}

#[tokio::test]
async fn share_only_fails_when_escrow_cannot_see_the_share() {
    let w = world();
    w.lock()
        .unwrap()
        .primary
        .insert("weekly".into(), snap(snapshot("weekly", "sales", "manual", PRIMARY)));
    let err = share_only(&w).write(&item("weekly"), reference("weekly")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("does not see weekly"), "{err}");
    let no_primary = RedshiftSnapshotSink::from_client(fake::escrow_client(&w), REGION);
    let listing = no_primary.list(&Scope::all()).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!(listing.kind(), ErrorKind::InvalidConfig);
    assert!(listing.to_string().contains("with_accounts"), "{listing}");
}

#[tokio::test]
async fn share_only_lists_an_automated_snapshot_by_its_original_name() {
    let w = world();
    let mut copy =
        snap(snapshot("escrow-sync-rs-sales-2026-11-28-00-00", "sales", "manual", PRIMARY));
    copy.authorized.insert(ESCROW.into());
    w.lock().unwrap().primary.insert("escrow-sync-rs-sales-2026-11-28-00-00".into(), copy);
    let listed: Vec<Item> = share_only(&w).list(&Scope::all()).try_collect().await.unwrap();
    assert_eq!(listed[0].key, "rs:sales-2026-11-28-00-00");
    assert_eq!(Sink::describe(&share_only(&w)), "redshift://escrow/us-east-1");
    assert_eq!(Retained::describe(&share_only(&w)), "redshift://escrow/us-east-1");
    let _ = tag_of;
}
