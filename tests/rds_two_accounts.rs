//! RDS DB snapshots and Aurora cluster snapshots for escrow-sync on the emulator, across two accounts.
//!
//! moto runs through xtask's launcher, whose RDS patch lets an account copy
//! another account's snapshot by ARN only while the owner's `restore`
//! attribute names it. A DB snapshot and an Aurora cluster snapshot, selected
//! by tag, are shared during the run, copied into the escrow under the escrow
//! key with their provenance tags, and unshared after; a re-run copies
//! nothing and verify is clean; a share an interrupted run left is removed
//! by the next run, which copies nothing, and the run after makes no mutating
//! call. Unshared snapshots stay invisible and
//! uncopyable to the escrow, and unsharing hides them again. An automated
//! snapshot (moto makes one with each instance) goes through a manual copy in
//! the primary.
//!
//! What moto cannot produce (AWS-managed keys, copies in progress or failed,
//! quotas, throttling, the refusal to encrypt a copy of an unencrypted Aurora
//! snapshot) is covered with aws-smithy-mocks in
//! crates/rds/tests/snapshot_mocks.rs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_rds::types::Tag;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use escrow_sync_core::{
    Executor, ExecutorOptions, Item, ItemStream, Mode, Payload, Result, Retained, Scope, Sink,
    Source,
};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_kms_key, sessions, unique};
use escrow_sync_rds::{RdsKind, RdsSnapshotSink, RdsSnapshotSource};

const PASSWORD: &str = "not-a-secret-1";

/// A DB instance in the primary tagged `backup` = `tag` (copied to its
/// snapshots); returns its identifier.
async fn primary_instance(rds: &aws_sdk_rds::Client, tag: &str) -> String {
    let id = unique("rdsdb");
    rds.create_db_instance()
        .db_instance_identifier(&id)
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .allocated_storage(20)
        .master_username("admin1")
        .master_user_password(PASSWORD)
        .backup_retention_period(1)
        .copy_tags_to_snapshot(true)
        .tags(Tag::builder().key("backup").value(tag).build())
        .send()
        .await
        .expect("create a DB instance");
    id
}

/// A manual snapshot of `instance` tagged `backup` = `tag`; returns its ARN.
async fn db_snapshot(rds: &aws_sdk_rds::Client, instance: &str, id: &str, tag: &str) -> String {
    rds.create_db_snapshot()
        .db_instance_identifier(instance)
        .db_snapshot_identifier(id)
        .tags(Tag::builder().key("backup").value(tag).build())
        .send()
        .await
        .expect("create a DB snapshot")
        .db_snapshot
        .and_then(|s| s.db_snapshot_arn)
        .expect("a snapshot ARN")
}

/// An Aurora cluster in the primary encrypted with `key` and a manual
/// snapshot of it tagged `backup` = `tag`; returns (cluster, snapshot ARN).
async fn aurora_snapshot(
    rds: &aws_sdk_rds::Client,
    key: &str,
    id: &str,
    tag: &str,
) -> (String, String) {
    let cluster = unique("aurora");
    rds.create_db_cluster()
        .db_cluster_identifier(&cluster)
        .engine("aurora-postgresql")
        .master_username("admin1")
        .master_user_password(PASSWORD)
        .storage_encrypted(true)
        .kms_key_id(key)
        .send()
        .await
        .expect("create an Aurora cluster");
    let arn = rds
        .create_db_cluster_snapshot()
        .db_cluster_identifier(&cluster)
        .db_cluster_snapshot_identifier(id)
        .tags(Tag::builder().key("backup").value(tag).build())
        .send()
        .await
        .expect("create a cluster snapshot")
        .db_cluster_snapshot
        .and_then(|s| s.db_cluster_snapshot_arn)
        .expect("a cluster snapshot ARN");
    (cluster, arn)
}

/// Whether the escrow sees `arn` among the snapshots shared with it.
async fn shared_with_escrow(escrow: &aws_sdk_rds::Client, kind: RdsKind, arn: &str) -> bool {
    let arns: Vec<String> = match kind {
        RdsKind::Db => escrow
            .describe_db_snapshots()
            .snapshot_type("shared")
            .include_shared(true)
            .send()
            .await
            .expect("describe shared DB snapshots")
            .db_snapshots
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.db_snapshot_arn)
            .collect(),
        RdsKind::Cluster => escrow
            .describe_db_cluster_snapshots()
            .snapshot_type("shared")
            .include_shared(true)
            .send()
            .await
            .expect("describe shared cluster snapshots")
            .db_cluster_snapshots
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.db_cluster_snapshot_arn)
            .collect(),
    };
    arns.iter().any(|a| a == arn)
}

/// Whether the escrow can copy `arn` (the copy, if made, is named `target`).
async fn escrow_can_copy(
    escrow: &aws_sdk_rds::Client,
    kind: RdsKind,
    arn: &str,
    target: &str,
) -> bool {
    match kind {
        RdsKind::Db => escrow
            .copy_db_snapshot()
            .source_db_snapshot_identifier(arn)
            .target_db_snapshot_identifier(target)
            .send()
            .await
            .is_ok(),
        RdsKind::Cluster => escrow
            .copy_db_cluster_snapshot()
            .source_db_cluster_snapshot_identifier(arn)
            .target_db_cluster_snapshot_identifier(target)
            .send()
            .await
            .is_ok(),
    }
}

/// The escrow's copies tagged as copies of `source`: (id, encrypted, key, tags).
async fn escrow_copies(
    escrow: &aws_sdk_rds::Client,
    kind: RdsKind,
    source: &str,
) -> Vec<(String, bool, Option<String>, BTreeMap<String, String>)> {
    let tags = |list: &[Tag]| -> BTreeMap<String, String> {
        list.iter()
            .map(|t| (t.key().unwrap_or("").to_string(), t.value().unwrap_or("").to_string()))
            .collect()
    };
    let all: Vec<_> = match kind {
        RdsKind::Db => escrow
            .describe_db_snapshots()
            .send()
            .await
            .expect("describe escrow DB snapshots")
            .db_snapshots
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                let t = tags(s.tag_list());
                (
                    s.db_snapshot_identifier.unwrap_or_default(),
                    s.encrypted == Some(true),
                    s.kms_key_id,
                    t,
                )
            })
            .collect(),
        RdsKind::Cluster => escrow
            .describe_db_cluster_snapshots()
            .send()
            .await
            .expect("describe escrow cluster snapshots")
            .db_cluster_snapshots
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                let t = tags(s.tag_list());
                (
                    s.db_cluster_snapshot_identifier.unwrap_or_default(),
                    s.storage_encrypted == Some(true),
                    s.kms_key_id,
                    t,
                )
            })
            .collect(),
    };
    all.into_iter()
        .filter(|c| {
            c.3.get(escrow_sync_core::tags::SOURCE_SNAPSHOT_ID).map(String::as_str) == Some(source)
        })
        .collect()
}

/// Records the name of every operation a client sends.
#[derive(Debug, Clone, Default)]
struct Recorder(Arc<Mutex<Vec<String>>>);

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            self.0.lock().unwrap().push(m.name().to_string());
        }
        Ok(())
    }
}

impl Recorder {
    /// The calls that change something sent since the last call.
    fn take_mutating(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
            .into_iter()
            .filter(|o| !["Describe", "List", "Get"].iter().any(|p| o.starts_with(p)))
            .collect()
    }
}

/// An RDS client of `session` whose operations `recorder` records.
fn recorded(session: &escrow_sync_aws::Session, recorder: &Recorder) -> aws_sdk_rds::Client {
    aws_sdk_rds::Client::from_conf(
        aws_sdk_rds::config::Builder::from(session.sdk_config())
            .interceptor(recorder.clone())
            .build(),
    )
}

/// Adds the escrow account to (or removes it from) snapshot `id`'s
/// `restore` attribute, by hand (as a run does).
async fn share_by_hand(primary: &aws_sdk_rds::Client, kind: RdsKind, id: &str, add: bool) {
    let (to_add, to_remove) = if add {
        (Some(vec![ESCROW.to_string()]), None)
    } else {
        (None, Some(vec![ESCROW.to_string()]))
    };
    match kind {
        RdsKind::Db => {
            primary
                .modify_db_snapshot_attribute()
                .db_snapshot_identifier(id)
                .attribute_name("restore")
                .set_values_to_add(to_add)
                .set_values_to_remove(to_remove)
                .send()
                .await
                .expect("share the DB snapshot");
        }
        RdsKind::Cluster => {
            primary
                .modify_db_cluster_snapshot_attribute()
                .db_cluster_snapshot_identifier(id)
                .attribute_name("restore")
                .set_values_to_add(to_add)
                .set_values_to_remove(to_remove)
                .send()
                .await
                .expect("share the cluster snapshot");
        }
    }
}

/// A source that records, as each item is read, whether the escrow then
/// sees what the read shared.
struct Watched {
    inner: RdsSnapshotSource,
    escrow: aws_sdk_rds::Client,
    kind: RdsKind,
    shared_while_read: Mutex<Vec<bool>>,
}

#[async_trait]
impl Source for Watched {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        self.inner.list(scope)
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        let payload = self.inner.read(item).await?;
        if let Payload::Reference(r) = &payload {
            let seen = shared_with_escrow(&self.escrow, self.kind, &r.key).await;
            self.shared_while_read.lock().unwrap().push(seen);
        }
        Ok(payload)
    }

    async fn finish(&self, item: &Item) -> Result<()> {
        self.inner.finish(item).await
    }

    fn finishes_skipped(&self) -> bool {
        self.inner.finishes_skipped()
    }

    async fn assess(&self, item: &Item) -> Result<Option<String>> {
        self.inner.assess(item).await
    }
}

fn executor() -> Executor {
    Executor::new(ExecutorOptions::new().with_concurrency(20))
}

/// The whole dance for one kind: a run shares, copies and unshares; the
/// copy is under the escrow key with its provenance; a re-run copies
/// nothing; verify is clean; the retention store sees the copy.
async fn escrow_one(kind: RdsKind, snapshot_id: &str, arn: &str, lineage: &str, tag: &str) {
    let s = sessions().await;
    let escrow_admin_session = admin(ESCROW).await;
    let escrow_admin = escrow_sync_rds::client(&escrow_admin_session);
    let key = create_kms_key(&escrow_admin_session).await;
    let (calls, escrow_calls) = (Recorder::default(), Recorder::default());
    let source = Watched {
        inner: RdsSnapshotSource::from_client(
            recorded(&s.primary, &calls),
            escrow_sync_rds::kms_client(&s.primary),
            kind,
            "us-east-1",
            PRIMARY,
            ESCROW,
        )
        .with_tags(BTreeMap::from([("backup".to_string(), tag.to_string())])),
        escrow: escrow_admin.clone(),
        kind,
        shared_while_read: Mutex::new(Vec::new()),
    };
    let sink = RdsSnapshotSink::from_client(recorded(&s.escrow, &escrow_calls), kind, "us-east-1")
        .with_kms_key_id(Some(key.clone()))
        .with_wait(Duration::from_secs(60), Duration::from_millis(100));
    let ex = executor();

    let item = Item::new(snapshot_id, escrow_sync_core::ItemKind::Snapshot, 0, snapshot_id);
    match kind {
        RdsKind::Db => assert_eq!(source.assess(&item).await.unwrap(), None, "a plain copy"),
        RdsKind::Cluster => {
            assert_eq!(source.assess(&item).await.unwrap(), None, "encrypted: plain")
        }
    }
    let plan = ex.execute(Mode::Plan, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((plan.copied, plan.missing), (1, 1), "{plan:?}");
    assert!(!shared_with_escrow(&escrow_admin, kind, arn).await, "plan shares nothing");

    let run = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert_eq!(*source.shared_while_read.lock().unwrap(), [true], "shared during the copy");
    assert!(!shared_with_escrow(&escrow_admin, kind, arn).await, "unshared after the copy");

    let copies = escrow_copies(&escrow_admin, kind, snapshot_id).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    let (copy_id, encrypted, copy_key, tags) = &copies[0];
    assert_eq!(copy_id, &escrow_sync_rds::escrow_identifier(snapshot_id));
    assert!(encrypted, "{copies:?}");
    assert_eq!(copy_key.as_deref(), Some(key.as_str()), "under the escrow key");
    assert_eq!(tags["escrow-sync:source-account"], PRIMARY);
    assert_eq!(tags["escrow-sync:source-arn"], arn);
    assert_eq!(tags["escrow-sync:lineage"], lineage);
    assert!(tags["escrow-sync:source-start-time"].ends_with('Z'), "{tags:?}");
    assert!(tags["escrow-sync:copied-at"].ends_with('Z'), "{tags:?}");
    assert!(!tags.contains_key("backup"), "the source's tags are not copied: {tags:?}");

    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    assert_eq!(source.shared_while_read.lock().unwrap().len(), 1, "no second share");
    assert_eq!(escrow_copies(&escrow_admin, kind, snapshot_id).await.len(), 1);
    let verify = ex.execute(Mode::Verify, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((verify.missing, verify.unprotected, verify.failed), (0, 0, 0), "{verify:?}");

    // A run stopped between the copy and the unshare left the share: the
    // next run removes it and copies nothing; the one after changes nothing.
    let primary_admin = escrow_sync_rds::client(&admin(PRIMARY).await);
    share_by_hand(&primary_admin, kind, snapshot_id, true).await;
    assert!(shared_with_escrow(&escrow_admin, kind, arn).await, "shared again");
    calls.take_mutating();
    escrow_calls.take_mutating();
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert!(!shared_with_escrow(&escrow_admin, kind, arn).await, "the leftover share removed");
    let unshare = match kind {
        RdsKind::Db => "ModifyDBSnapshotAttribute",
        RdsKind::Cluster => "ModifyDBClusterSnapshotAttribute",
    };
    assert_eq!(calls.take_mutating(), [unshare], "the unshare, nothing else");
    assert!(escrow_calls.take_mutating().is_empty(), "nothing copied");
    assert_eq!(escrow_copies(&escrow_admin, kind, snapshot_id).await.len(), 1);
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    let (ops, escrow_ops) = (calls.take_mutating(), escrow_calls.take_mutating());
    assert!(ops.is_empty() && escrow_ops.is_empty(), "no mutating call: {ops:?} {escrow_ops:?}");

    let retained = sink.copies().await.unwrap();
    let mine: Vec<_> = retained.iter().filter(|c| c.source == snapshot_id).collect();
    assert_eq!(mine.len(), 1, "{retained:?}");
    assert_eq!((mine[0].id.as_str(), mine[0].lineage.as_str()), (copy_id.as_str(), lineage));
    assert!(mine[0].complete && mine[0].created.ends_with('Z'), "{mine:?}");
}

#[tokio::test]
async fn a_db_snapshot_is_shared_copied_with_the_escrow_key_and_unshared() {
    let primary = escrow_sync_rds::client(&admin(PRIMARY).await);
    let tag = unique("db-run");
    let instance = primary_instance(&primary, "no").await;
    let selected = unique("snap");
    let arn = db_snapshot(&primary, &instance, &selected, &tag).await;
    let other = unique("snap");
    let other_arn = db_snapshot(&primary, &instance, &other, "no").await;
    escrow_one(RdsKind::Db, &selected, &arn, &instance, &tag).await;
    let escrow = escrow_sync_rds::client(&admin(ESCROW).await);
    assert!(
        !shared_with_escrow(&escrow, RdsKind::Db, &other_arn).await,
        "the other one never shared"
    );
}

#[tokio::test]
async fn an_aurora_cluster_snapshot_is_shared_copied_with_the_escrow_key_and_unshared() {
    let primary_session = admin(PRIMARY).await;
    let primary = escrow_sync_rds::client(&primary_session);
    let primary_key = create_kms_key(&primary_session).await;
    let tag = unique("aurora-run");
    let selected = unique("csnap");
    let (cluster, arn) = aurora_snapshot(&primary, &primary_key, &selected, &tag).await;
    escrow_one(RdsKind::Cluster, &selected, &arn, &cluster, &tag).await;
}

/// Unshared: invisible and uncopyable; shared: both; unshared again: neither.
async fn visible_only_while_shared(kind: RdsKind, id: &str, arn: &str) {
    let primary = escrow_sync_rds::client(&admin(PRIMARY).await);
    let escrow = escrow_sync_rds::client(&admin(ESCROW).await);
    let share = |add: bool| share_by_hand(&primary, kind, id, add);
    assert!(!shared_with_escrow(&escrow, kind, arn).await, "unshared: invisible");
    assert!(!escrow_can_copy(&escrow, kind, arn, &unique("try")).await, "unshared: uncopyable");
    share(true).await;
    assert!(shared_with_escrow(&escrow, kind, arn).await, "shared: visible");
    assert!(escrow_can_copy(&escrow, kind, arn, &unique("try")).await, "shared: copyable");
    share(false).await;
    assert!(!shared_with_escrow(&escrow, kind, arn).await, "unsharing hides it again");
    assert!(
        !escrow_can_copy(&escrow, kind, arn, &unique("try")).await,
        "and it is uncopyable again"
    );
}

#[tokio::test]
async fn the_emulator_shows_a_shared_db_snapshot_only_while_it_is_shared() {
    let primary = escrow_sync_rds::client(&admin(PRIMARY).await);
    let instance = primary_instance(&primary, "no").await;
    let id = unique("vis");
    let arn = db_snapshot(&primary, &instance, &id, "no").await;
    visible_only_while_shared(RdsKind::Db, &id, &arn).await;
}

#[tokio::test]
async fn the_emulator_shows_a_shared_cluster_snapshot_only_while_it_is_shared() {
    let session = admin(PRIMARY).await;
    let primary = escrow_sync_rds::client(&session);
    let key = create_kms_key(&session).await;
    let id = unique("cvis");
    let (_, arn) = aurora_snapshot(&primary, &key, &id, "no").await;
    visible_only_while_shared(RdsKind::Cluster, &id, &arn).await;
}

#[tokio::test]
async fn an_automated_snapshot_goes_through_a_manual_copy_in_the_primary() {
    let primary = escrow_sync_rds::client(&admin(PRIMARY).await);
    let escrow_admin_session = admin(ESCROW).await;
    let escrow_admin = escrow_sync_rds::client(&escrow_admin_session);
    let tag = unique("auto-run");
    // moto takes an automated snapshot when it creates the instance; the
    // instance copies its tags to its snapshots.
    let instance = primary_instance(&primary, &tag).await;
    let automated: Vec<String> = primary
        .describe_db_snapshots()
        .db_instance_identifier(&instance)
        .snapshot_type("automated")
        .send()
        .await
        .unwrap()
        .db_snapshots
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| s.db_snapshot_identifier)
        .collect();
    assert_eq!(automated.len(), 1, "moto makes one automated snapshot: {automated:?}");
    let automated = &automated[0];
    assert!(automated.starts_with("rds:"), "{automated}");

    let s = sessions().await;
    let key = create_kms_key(&escrow_admin_session).await;
    let calls = Recorder::default();
    let source = RdsSnapshotSource::from_client(
        recorded(&s.primary, &calls),
        escrow_sync_rds::kms_client(&s.primary),
        RdsKind::Db,
        "us-east-1",
        PRIMARY,
        ESCROW,
    )
    .with_tags(BTreeMap::from([("backup".to_string(), tag.clone())]))
    .with_wait(Duration::from_secs(60), Duration::from_millis(100));
    let sink =
        RdsSnapshotSink::from_client(escrow_sync_rds::client(&s.escrow), RdsKind::Db, "us-east-1")
            .with_kms_key_id(Some(key.clone()))
            .with_wait(Duration::from_secs(60), Duration::from_millis(100));
    let item =
        Item::new(automated.as_str(), escrow_sync_core::ItemKind::Snapshot, 0, automated.as_str());
    assert_eq!(
        source.assess(&item).await.unwrap().as_deref(),
        Some("automated: copied to a manual snapshot in the primary first")
    );

    let ex = executor();
    let run = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "only the automated snapshot: {run:?}");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);

    // The manual copy in the primary: tagged with what it was copied from,
    // left in place, shared no more.
    let manual_id = escrow_sync_rds::primary_copy_identifier(automated);
    let manual = primary
        .describe_db_snapshots()
        .db_snapshot_identifier(&manual_id)
        .send()
        .await
        .expect("the manual copy is in the primary")
        .db_snapshots
        .unwrap_or_default()
        .remove(0);
    assert_eq!(manual.snapshot_type(), Some("manual"));
    assert!(
        manual.tag_list().iter().any(|t| t.key() == Some(escrow_sync_core::tags::COPIED_FROM)
            && t.value() == Some(automated)),
        "{manual:?}"
    );
    let manual_arn = manual.db_snapshot_arn().unwrap().to_string();
    assert!(
        !shared_with_escrow(&escrow_admin, RdsKind::Db, &manual_arn).await,
        "unshared after the copy"
    );

    // The escrow copy is keyed by the automated snapshot.
    let copies = escrow_copies(&escrow_admin, RdsKind::Db, automated).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].2.as_deref(), Some(key.as_str()));
    assert!(copies[0].3["escrow-sync:source-arn"].ends_with(&format!(":snapshot:{automated}")));
    assert_eq!(copies[0].3["escrow-sync:lineage"], instance);

    let assessed = source.assess(&item).await.unwrap().unwrap();
    assert!(assessed.contains(&manual_id), "a later plan names the manual copy: {assessed}");
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!(
        (again.copied, again.skipped),
        (0, 1),
        "the manual copy is never a source: {again:?}"
    );
    let verify = ex.execute(Mode::Verify, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((verify.missing, verify.unprotected, verify.failed), (0, 0, 0), "{verify:?}");

    // A run stopped before the unshare left the manual copy shared: the
    // next run removes that share (the listing by tags does not show the
    // copy, whose tags are escrow-sync's own, so its name is looked at).
    share_by_hand(&primary, RdsKind::Db, &manual_id, true).await;
    assert!(shared_with_escrow(&escrow_admin, RdsKind::Db, &manual_arn).await);
    calls.take_mutating();
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    assert!(!shared_with_escrow(&escrow_admin, RdsKind::Db, &manual_arn).await, "unshared");
    assert_eq!(calls.take_mutating(), ["ModifyDBSnapshotAttribute"]);
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    assert!(calls.take_mutating().is_empty(), "nothing left: no mutating call");

    // Prune's store deletes that copy, and a later listing no longer has it.
    let retained = sink.copies().await.unwrap();
    let copy = retained.iter().find(|c| &c.source == automated).expect("retained copy").clone();
    sink.delete_copy(&copy).await.unwrap();
    assert!(escrow_copies(&escrow_admin, RdsKind::Db, automated).await.is_empty());
    use futures::TryStreamExt;
    let listed: Vec<Item> = Sink::list(&sink, &Scope::all()).try_collect().await.unwrap();
    assert!(!listed.iter().any(|i| &i.key == automated));
}
