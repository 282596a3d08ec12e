//! Redshift snapshots for escrow-sync on the emulator, across two accounts.
//!
//! moto is started through xtask's launcher, whose Redshift patch
//! (xtask/src/moto_patch_redshift.py) adds AuthorizeSnapshotAccess /
//! RevokeSnapshotAccess and lets an account describe and restore another
//! account's snapshot only while that owner authorizes it.
//!
//! - the emulator itself: an unshared snapshot stays invisible to escrow and
//!   cannot be restored; shared, it can; unshared again, it is hidden again;
//! - share-only mode: a run shares the tagged snapshot and records the share,
//!   verify flags that escrow holds only a share the primary can revoke, a
//!   re-run makes no mutating call;
//! - independent mode: a run restores a temporary cluster in escrow with the
//!   escrow key, takes a manual snapshot with indefinite retention and the
//!   provenance tags, deletes the cluster and unshares; a re-run makes no
//!   mutating call, verify is clean, retention sees the copy; a share an
//!   interrupted run left is revoked by the next run, which copies nothing;
//! - an automated snapshot: copied to a manual snapshot in the primary
//!   first, which is what is shared.
//!
//! Restores and snapshots that fail or stay in progress, quota errors and
//! AWS-managed keys are covered by the mocks in crates/redshift/tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_redshift::Client;
use aws_sdk_redshift::types::Tag;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use escrow_sync_core::{Executor, ExecutorOptions, Mode, Retained, Scope};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_kms_key, sessions, unique};
use escrow_sync_redshift::{RESTORE_CLUSTER_PREFIX, RedshiftSnapshotSink, RedshiftSnapshotSource};

/// Records the name of every operation a client calls.
#[derive(Debug, Clone, Default)]
struct Calls(Arc<Mutex<Vec<String>>>);

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "Calls"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            self.0.lock().expect("calls").push(m.name().to_string());
        }
        Ok(())
    }
}

impl Calls {
    /// The calls that are not reads.
    fn mutating(&self) -> Vec<String> {
        let calls = self.0.lock().expect("calls");
        calls.iter().filter(|c| !c.starts_with("Describe")).cloned().collect()
    }

    fn count(&self) -> usize {
        self.0.lock().expect("calls").len()
    }
}

fn recorded(session: &escrow_sync_aws::Session, calls: &Calls) -> Client {
    Client::from_conf(
        aws_sdk_redshift::config::Builder::from(session.sdk_config())
            .interceptor(calls.clone())
            .build(),
    )
}

/// A primary cluster (encrypted with `key` when given) and a manual
/// snapshot of it tagged `backup = tag`; returns (cluster, snapshot).
async fn primary_snapshot(rs: &Client, key: Option<&str>, tag: &str) -> (String, String) {
    let cluster = unique("sales");
    rs.create_cluster()
        .cluster_identifier(&cluster)
        .node_type("ra3.xlplus")
        .cluster_type("multi-node")
        .number_of_nodes(2)
        .master_username("admin")
        .master_user_password("Passw0rd1")
        .set_encrypted(key.map(|_| true))
        .set_kms_key_id(key.map(str::to_string))
        .send()
        .await
        .expect("create a primary cluster");
    let snapshot = format!("{cluster}-weekly");
    rs.create_cluster_snapshot()
        .cluster_identifier(&cluster)
        .snapshot_identifier(&snapshot)
        .tags(Tag::builder().key("backup").value(tag).build())
        .send()
        .await
        .expect("create a primary snapshot");
    (cluster, snapshot)
}

async fn visible_to_escrow(escrow: &Client, id: &str) -> bool {
    escrow
        .describe_cluster_snapshots()
        .owner_account(PRIMARY)
        .snapshot_identifier(id)
        .send()
        .await
        .is_ok()
}

fn executor() -> Executor {
    Executor::new(ExecutorOptions::new().with_concurrency(4))
}

fn backup(tag: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("backup".to_string(), tag.to_string())])
}

#[tokio::test]
async fn the_emulator_shows_a_shared_snapshot_only_while_it_is_shared() {
    let primary = escrow_sync_redshift::client(&admin(PRIMARY).await);
    let escrow = escrow_sync_redshift::client(&admin(ESCROW).await);
    let (cluster, id) = primary_snapshot(&primary, None, "emulator").await;
    let restore = |name: String| {
        escrow
            .restore_from_cluster_snapshot()
            .cluster_identifier(name)
            .snapshot_identifier(&id)
            .owner_account(PRIMARY)
            .send()
    };
    let (p, i) = (&primary, &id);
    let access = move |add: bool| async move {
        if add {
            p.authorize_snapshot_access()
                .snapshot_identifier(i)
                .account_with_restore_access(ESCROW)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_redshift::error::DisplayErrorContext(e).to_string())
        } else {
            p.revoke_snapshot_access()
                .snapshot_identifier(i)
                .account_with_restore_access(ESCROW)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_redshift::error::DisplayErrorContext(e).to_string())
        }
    };
    assert!(!visible_to_escrow(&escrow, &id).await, "unshared: invisible");
    assert!(restore(unique("nope")).await.is_err(), "an unshared snapshot cannot be restored");

    access(true).await.unwrap();
    assert!(visible_to_escrow(&escrow, &id).await, "shared: visible");
    let shared = escrow
        .describe_cluster_snapshots()
        .owner_account(PRIMARY)
        .snapshot_identifier(&id)
        .send()
        .await
        .unwrap()
        .snapshots
        .unwrap_or_default();
    let accounts: Vec<_> =
        shared[0].accounts_with_restore_access().iter().filter_map(|a| a.account_id()).collect();
    assert_eq!(accounts, [ESCROW]);
    assert_eq!(shared[0].owner_account(), Some(PRIMARY));
    let restored = unique("restored");
    restore(restored.clone()).await.expect("a shared snapshot can be restored");
    escrow
        .delete_cluster()
        .cluster_identifier(&restored)
        .skip_final_cluster_snapshot(true)
        .send()
        .await
        .unwrap();

    access(false).await.unwrap();
    assert!(!visible_to_escrow(&escrow, &id).await, "unsharing hides it again");
    assert!(restore(unique("again")).await.is_err());
    assert!(access(false).await.unwrap_err().contains("AuthorizationNotFound"));

    let automated = primary
        .describe_cluster_snapshots()
        .cluster_identifier(&cluster)
        .snapshot_type("automated")
        .send()
        .await
        .unwrap()
        .snapshots
        .unwrap_or_default();
    let auto_id = automated[0].snapshot_identifier().unwrap();
    let refused = primary
        .authorize_snapshot_access()
        .snapshot_identifier(auto_id)
        .account_with_restore_access(ESCROW)
        .send()
        .await;
    assert!(refused.is_err(), "automated snapshots cannot be shared");
}

#[tokio::test]
async fn share_only_records_the_share_verify_flags_it_and_a_rerun_changes_nothing() {
    let primary_admin = escrow_sync_redshift::client(&admin(PRIMARY).await);
    let escrow_admin = escrow_sync_redshift::client(&admin(ESCROW).await);
    let tag = unique("share");
    let (_, selected) = primary_snapshot(&primary_admin, None, &tag).await;
    let (_, other) = primary_snapshot(&primary_admin, None, "no").await;
    assert!(!visible_to_escrow(&escrow_admin, &selected).await);

    let s = sessions().await;
    let (primary_calls, escrow_calls) = (Calls::default(), Calls::default());
    let source = RedshiftSnapshotSource::from_client(
        recorded(&s.primary, &primary_calls),
        escrow_sync_redshift::kms_client(&s.primary),
        "us-east-1",
        PRIMARY,
        ESCROW,
    )
    .with_tags(backup(&tag))
    .with_unshare_after_copy(false);
    let sink = RedshiftSnapshotSink::from_client(recorded(&s.escrow, &escrow_calls), "us-east-1")
        .with_accounts(PRIMARY, ESCROW);
    let ex = executor();

    let run = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");
    assert!(visible_to_escrow(&escrow_admin, &selected).await, "the share is the escrow");
    assert!(!visible_to_escrow(&escrow_admin, &other).await, "the unselected one never shared");
    assert_eq!(primary_calls.mutating(), ["AuthorizeSnapshotAccess"]);
    assert!(escrow_calls.mutating().is_empty(), "{:?}", escrow_calls.mutating());

    let verify = ex.execute(Mode::Verify, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((verify.missing, verify.unprotected), (0, 1), "{verify:?}");
    assert_eq!(verify.findings[0].key, selected);
    assert!(
        verify.findings[0].problem.contains("only a share")
            && verify.findings[0].problem.contains("independent_copy = true"),
        "{:?}",
        verify.findings
    );

    let before = (primary_calls.count(), primary_calls.mutating().len());
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    assert!(primary_calls.count() > before.0, "the re-run listed the primary");
    assert_eq!(primary_calls.mutating().len(), before.1, "no mutating call in the primary");
    assert!(escrow_calls.mutating().is_empty(), "none in escrow");
    assert!(Retained::copies(&sink).await.unwrap().is_empty(), "escrow owns no copy");
}

#[tokio::test]
async fn an_independent_copy_is_restored_snapshotted_with_the_escrow_key_and_unshared() {
    let primary_session = admin(PRIMARY).await;
    let primary_admin = escrow_sync_redshift::client(&primary_session);
    let escrow_session = admin(ESCROW).await;
    let escrow_admin = escrow_sync_redshift::client(&escrow_session);
    let primary_key = create_kms_key(&primary_session).await;
    let escrow_key = create_kms_key(&escrow_session).await;
    let tag = unique("independent");
    let (cluster, selected) = primary_snapshot(&primary_admin, Some(&primary_key), &tag).await;

    let s = sessions().await;
    let (primary_calls, escrow_calls) = (Calls::default(), Calls::default());
    let source = RedshiftSnapshotSource::from_client(
        recorded(&s.primary, &primary_calls),
        escrow_sync_redshift::kms_client(&s.primary),
        "us-east-1",
        PRIMARY,
        ESCROW,
    )
    .with_tags(backup(&tag));
    let sink = RedshiftSnapshotSink::from_client(recorded(&s.escrow, &escrow_calls), "us-east-1")
        .with_independent_copy(true)
        .with_kms_key_id(Some(escrow_key.clone()))
        .with_accounts(PRIMARY, ESCROW)
        .with_wait(Duration::from_secs(60), Duration::from_millis(100));
    let ex = executor();

    let plan = ex.execute(Mode::Plan, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((plan.missing, plan.copied), (1, 1), "{plan:?}");
    let run = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert!(!visible_to_escrow(&escrow_admin, &selected).await, "unshared after the copy");
    assert_eq!(
        escrow_calls.mutating(),
        ["RestoreFromClusterSnapshot", "CreateTags", "CreateClusterSnapshot", "DeleteCluster"]
    );

    let copies: Vec<_> = escrow_admin
        .describe_cluster_snapshots()
        .snapshot_type("manual")
        .send()
        .await
        .unwrap()
        .snapshots
        .unwrap_or_default()
        .into_iter()
        .filter(|c| {
            c.tags().iter().any(|t| {
                t.key() == Some(escrow_sync_core::tags::SOURCE_SNAPSHOT_ID)
                    && t.value() == Some(selected.as_str())
            })
        })
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    assert_eq!(copy.owner_account(), Some(ESCROW));
    assert_eq!((copy.encrypted(), copy.kms_key_id()), (Some(true), Some(escrow_key.as_str())));
    assert_eq!(copy.manual_snapshot_retention_period(), Some(-1), "kept indefinitely");
    let tags: BTreeMap<_, _> =
        copy.tags().iter().map(|t| (t.key().unwrap_or(""), t.value().unwrap_or(""))).collect();
    assert_eq!(tags.get(escrow_sync_core::tags::SOURCE_ACCOUNT), Some(&PRIMARY));
    assert_eq!(tags.get(escrow_sync_core::tags::LINEAGE), Some(&cluster.as_str()));
    assert_eq!(
        tags.get(escrow_sync_core::tags::SOURCE_ARN).copied(),
        Some(
            format!("arn:aws:redshift:us-east-1:{PRIMARY}:snapshot:{cluster}/{selected}").as_str()
        )
    );
    assert!(
        tags.contains_key(escrow_sync_core::tags::SOURCE_START_TIME)
            && tags.contains_key("escrow-sync:copied-at")
    );
    let restore_cluster = copy.cluster_identifier().unwrap();
    assert!(restore_cluster.starts_with(RESTORE_CLUSTER_PREFIX), "{restore_cluster}");
    let gone = escrow_admin.describe_clusters().cluster_identifier(restore_cluster).send().await;
    assert!(gone.is_err(), "the restore cluster is deleted");

    let before = primary_calls.mutating().len();
    let escrow_before = escrow_calls.mutating().len();
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 1), "{again:?}");
    assert_eq!(primary_calls.mutating().len(), before, "no mutating call in the primary");
    assert_eq!(escrow_calls.mutating().len(), escrow_before, "none in escrow");

    // A run stopped between the copy and the revoke left the share: the
    // next run revokes it and copies nothing; the one after changes nothing.
    primary_admin
        .authorize_snapshot_access()
        .snapshot_identifier(&selected)
        .snapshot_cluster_identifier(&cluster)
        .account_with_restore_access(ESCROW)
        .send()
        .await
        .expect("share by hand");
    assert!(visible_to_escrow(&escrow_admin, &selected).await, "shared again");
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert!(!visible_to_escrow(&escrow_admin, &selected).await, "the leftover share revoked");
    assert_eq!(primary_calls.mutating()[before..], ["RevokeSnapshotAccess"], "nothing else");
    assert_eq!(escrow_calls.mutating().len(), escrow_before, "nothing copied");
    let before = primary_calls.mutating().len();
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    assert_eq!(primary_calls.mutating().len(), before, "nothing left: no mutating call");
    assert_eq!(escrow_calls.mutating().len(), escrow_before, "none in escrow");

    let verify = ex.execute(Mode::Verify, &source, &sink, &Scope::all()).await.unwrap();
    assert!(verify.is_clean(), "{verify:?}");
    assert_eq!((verify.missing, verify.unprotected), (0, 0), "{verify:?}");

    let retained = Retained::copies(&sink).await.unwrap();
    let mine: Vec<_> = retained.iter().filter(|c| c.source == selected).collect();
    assert_eq!(mine.len(), 1, "{retained:?}");
    assert!(mine[0].complete);
    assert_eq!(mine[0].lineage, cluster);
    assert_eq!(Some(mine[0].id.as_str()), copy.snapshot_identifier());
}

#[tokio::test]
async fn an_automated_snapshot_is_shared_through_a_manual_copy_in_the_primary() {
    let primary_admin = escrow_sync_redshift::client(&admin(PRIMARY).await);
    let escrow_admin = escrow_sync_redshift::client(&admin(ESCROW).await);
    let (cluster, _) = primary_snapshot(&primary_admin, None, "automated").await;
    let automated = primary_admin
        .describe_cluster_snapshots()
        .cluster_identifier(&cluster)
        .snapshot_type("automated")
        .send()
        .await
        .unwrap()
        .snapshots
        .unwrap_or_default();
    let auto_id = automated[0].snapshot_identifier().unwrap().to_string();

    let s = sessions().await;
    let source = RedshiftSnapshotSource::from_client(
        escrow_sync_redshift::client(&s.primary),
        escrow_sync_redshift::kms_client(&s.primary),
        "us-east-1",
        PRIMARY,
        ESCROW,
    )
    .with_ids(vec![auto_id.clone()])
    .with_unshare_after_copy(false)
    .with_wait(Duration::from_secs(60), Duration::from_millis(100));
    let sink =
        RedshiftSnapshotSink::from_client(escrow_sync_redshift::client(&s.escrow), "us-east-1")
            .with_accounts(PRIMARY, ESCROW);
    let ex = executor();

    let plan = ex.execute(Mode::Plan, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!(plan.missing, 1, "{plan:?}");
    let run = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");

    let copy_id = format!("escrow-sync-{}", auto_id.replace(':', "-"));
    let copy = primary_admin
        .describe_cluster_snapshots()
        .snapshot_identifier(&copy_id)
        .send()
        .await
        .expect("the manual copy in the primary")
        .snapshots
        .unwrap_or_default();
    assert_eq!(copy[0].snapshot_type(), Some("manual"));
    let from = copy[0].tags().iter().find(|t| t.key() == Some(escrow_sync_core::tags::COPIED_FROM));
    assert_eq!(from.and_then(|t| t.value()), Some(auto_id.as_str()));
    assert!(visible_to_escrow(&escrow_admin, &copy_id).await, "the copy is what is shared");
    assert!(!visible_to_escrow(&escrow_admin, &auto_id).await);

    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 1), "{again:?}");
}
