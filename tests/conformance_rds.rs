//! The RDS Source/Sink pairs under the conformance suite, DB snapshots and
//! Aurora cluster snapshots, on the emulator across two accounts (moto
//! through xtask's launcher, whose RDS patch lets the escrow copy another
//! account's snapshot by ARN only while the owner's `restore` attribute
//! names it).
//!
//! Items are manual snapshots of one DB instance (or one Aurora cluster,
//! encrypted with a primary key) per fixture, tagged for it; their content
//! is what escrow's copy shows: the snapshot it copies (its provenance tag),
//! its status, and the escrow key it is encrypted with. Snapshots are
//! immutable, so a change is a new snapshot of the same instance or cluster,
//! and escrow keeps the earlier copy. Every source and sink call is logged,
//! so the re-run check also proves that a second run, a plan and a verify
//! make no mutating call (no CopyDBSnapshot, no share).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_rds::types::Tag;
use bytes::Bytes;
use tokio::sync::OnceCell;

use escrow_sync_core::tags::SOURCE_SNAPSHOT_ID as SOURCE_SNAPSHOT_TAG;
use escrow_sync_core::{Executor, ExecutorOptions, Mode, Result, Scope, Sink, Source};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_kms_key, sessions, unique};
use escrow_sync_rds::{RdsKind, RdsSnapshotSink, RdsSnapshotSource};
use escrow_sync_testkit::calls::CallLog;
use escrow_sync_testkit::conformance::{self, Capabilities, Fixture};

const PASSWORD: &str = "not-a-secret-1";

struct RdsFixture {
    kind: RdsKind,
    tag: String,
    primary: aws_sdk_rds::Client,
    escrow: aws_sdk_rds::Client,
    escrow_key: String,
    /// The instance or cluster every snapshot is taken of.
    origin: OnceCell<String>,
    calls: CallLog,
    source: RdsSnapshotSource,
    sink: RdsSnapshotSink,
}

fn logged(session: &escrow_sync_aws::Session, calls: &CallLog) -> aws_sdk_rds::Client {
    aws_sdk_rds::Client::from_conf(
        aws_sdk_rds::config::Builder::from(session.sdk_config()).interceptor(calls.clone()).build(),
    )
}

impl RdsFixture {
    async fn new(kind: RdsKind) -> Self {
        let escrow_admin = admin(ESCROW).await;
        let escrow_key = create_kms_key(&escrow_admin).await;
        let tag = unique("conf-rds");
        let s = sessions().await;
        let calls = CallLog::new();
        let source = RdsSnapshotSource::from_client(
            logged(&s.primary, &calls),
            escrow_sync_rds::kms_client(&s.primary),
            kind,
            "us-east-1",
            PRIMARY,
            ESCROW,
        )
        .with_tags(BTreeMap::from([("backup".to_string(), tag.clone())]))
        .with_wait(Duration::from_secs(60), Duration::from_millis(50));
        let sink = RdsSnapshotSink::from_client(logged(&s.escrow, &calls), kind, "us-east-1")
            .with_kms_key_id(Some(escrow_key.clone()))
            .with_wait(Duration::from_secs(60), Duration::from_millis(50));
        RdsFixture {
            kind,
            primary: escrow_sync_rds::client(&admin(PRIMARY).await),
            escrow: escrow_sync_rds::client(&escrow_admin),
            tag,
            escrow_key,
            origin: OnceCell::new(),
            calls,
            source,
            sink,
        }
    }

    /// The DB instance or Aurora cluster (untagged: its automated snapshots
    /// are not selected), made on first use.
    async fn origin(&self) -> &str {
        self.origin
            .get_or_init(|| async {
                match self.kind {
                    RdsKind::Db => {
                        let id = unique("confdb");
                        self.primary
                            .create_db_instance()
                            .db_instance_identifier(&id)
                            .db_instance_class("db.t3.micro")
                            .engine("postgres")
                            .allocated_storage(20)
                            .master_username("admin1")
                            .master_user_password(PASSWORD)
                            .send()
                            .await
                            .expect("create a DB instance");
                        id
                    }
                    RdsKind::Cluster => {
                        let key = create_kms_key(&admin(PRIMARY).await).await;
                        let id = unique("confaurora");
                        self.primary
                            .create_db_cluster()
                            .db_cluster_identifier(&id)
                            .engine("aurora-postgresql")
                            .master_username("admin1")
                            .master_user_password(PASSWORD)
                            .storage_encrypted(true)
                            .kms_key_id(key)
                            .send()
                            .await
                            .expect("create an Aurora cluster");
                        id
                    }
                }
            })
            .await
    }

    /// A new manual snapshot of the origin, tagged for this fixture.
    async fn snapshot(&self, name: &str) -> String {
        let origin = self.origin().await.to_string();
        let id = unique(&format!("conf-{name}"));
        let tag = Tag::builder().key("backup").value(&self.tag).build();
        match self.kind {
            RdsKind::Db => {
                self.primary
                    .create_db_snapshot()
                    .db_instance_identifier(origin)
                    .db_snapshot_identifier(&id)
                    .tags(tag)
                    .send()
                    .await
                    .expect("create a DB snapshot");
            }
            RdsKind::Cluster => {
                self.primary
                    .create_db_cluster_snapshot()
                    .db_cluster_identifier(origin)
                    .db_cluster_snapshot_identifier(&id)
                    .tags(tag)
                    .send()
                    .await
                    .expect("create a cluster snapshot");
            }
        }
        id
    }
}

#[async_trait]
impl Fixture for RdsFixture {
    fn source(&self) -> &dyn Source {
        &self.source
    }
    fn sink(&self) -> &dyn Sink {
        &self.sink
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::snapshots()
    }
    fn names(&self) -> Vec<String> {
        ["nightly", "weekly", "pre-upgrade", "z-last"].map(String::from).to_vec()
    }
    async fn seed(&self, name: &str, _variant: u8) -> Result<String> {
        Ok(self.snapshot(name).await)
    }
    async fn change(&self, name: &str, _key: &str, _variant: u8) -> Result<String> {
        Ok(self.snapshot(name).await)
    }
    async fn delete_source(&self, key: &str) -> Result<()> {
        match self.kind {
            RdsKind::Db => {
                self.primary
                    .delete_db_snapshot()
                    .db_snapshot_identifier(key)
                    .send()
                    .await
                    .expect("delete a primary DB snapshot");
            }
            RdsKind::Cluster => {
                self.primary
                    .delete_db_cluster_snapshot()
                    .db_cluster_snapshot_identifier(key)
                    .send()
                    .await
                    .expect("delete a primary cluster snapshot");
            }
        }
        Ok(())
    }
    async fn escrow_content(&self, key: &str) -> Result<Option<Bytes>> {
        let id = escrow_sync_rds::escrow_identifier(key);
        let tags = |list: &[Tag]| -> BTreeMap<String, String> {
            list.iter()
                .map(|t| (t.key().unwrap_or("").into(), t.value().unwrap_or("").into()))
                .collect()
        };
        // (source tag, status, encrypted, key) of the copy, if escrow has it.
        let copy = match self.kind {
            RdsKind::Db => {
                match self.escrow.describe_db_snapshots().db_snapshot_identifier(&id).send().await {
                    Ok(out) => out.db_snapshots.unwrap_or_default().into_iter().next().map(|s| {
                        (
                            tags(s.tag_list()).remove(SOURCE_SNAPSHOT_TAG),
                            s.status,
                            s.encrypted == Some(true),
                            s.kms_key_id,
                        )
                    }),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_db_snapshot_not_found_fault()) =>
                    {
                        None
                    }
                    Err(e) => panic!("describe escrow snapshot {id}: {e:?}"),
                }
            }
            RdsKind::Cluster => {
                match self
                    .escrow
                    .describe_db_cluster_snapshots()
                    .db_cluster_snapshot_identifier(&id)
                    .send()
                    .await
                {
                    Ok(out) => {
                        out.db_cluster_snapshots.unwrap_or_default().into_iter().next().map(|s| {
                            (
                                tags(s.tag_list()).remove(SOURCE_SNAPSHOT_TAG),
                                s.status,
                                s.storage_encrypted == Some(true),
                                s.kms_key_id,
                            )
                        })
                    }
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_db_cluster_snapshot_not_found_fault()) =>
                    {
                        None
                    }
                    Err(e) => panic!("describe escrow cluster snapshot {id}: {e:?}"),
                }
            }
        };
        Ok(copy.map(|(source, status, encrypted, key)| {
            Bytes::from(format!(
                "copy of {}: {}, encrypted {encrypted} under {}",
                source.unwrap_or_default(),
                status.unwrap_or_default(),
                key.unwrap_or_default()
            ))
        }))
    }
    fn expected_content(&self, _name: &str, key: &str, _variant: u8) -> Bytes {
        Bytes::from(format!("copy of {key}: available, encrypted true under {}", self.escrow_key))
    }
    fn mutating_calls(&self) -> Option<u64> {
        Some(self.calls.mutating_count())
    }
}

#[tokio::test]
async fn the_rds_db_snapshot_pair_conforms() {
    let summary = conformance::run_all(|| RdsFixture::new(RdsKind::Db)).await;
    assert!(summary.all_ran(), "{summary:?}");
}

#[tokio::test]
async fn the_aurora_cluster_snapshot_pair_conforms() {
    let summary = conformance::run_all(|| RdsFixture::new(RdsKind::Cluster)).await;
    assert!(summary.all_ran(), "{summary:?}");
}

/// The call log sees the copies: a first run makes one copy per snapshot, a
/// re-run none, so the suite's "no mutating call" is measured.
#[tokio::test]
async fn the_fixture_counts_the_copies_it_proves_absent() {
    for (kind, op) in [(RdsKind::Db, "CopyDBSnapshot"), (RdsKind::Cluster, "CopyDBClusterSnapshot")]
    {
        let f = RdsFixture::new(kind).await;
        f.seed("one", 0).await.unwrap();
        let ex = Executor::new(ExecutorOptions::new());
        let r = ex.execute(Mode::Run, f.source(), f.sink(), &Scope::all()).await.unwrap();
        assert_eq!((r.copied, r.failed), (1, 0), "{r:?}");
        assert_eq!(f.calls.count(op), 1, "{:?}", f.calls.calls());
        let before = f.calls.mutating_count();
        let again = ex.execute(Mode::Run, f.source(), f.sink(), &Scope::all()).await.unwrap();
        assert_eq!((again.copied, again.skipped), (0, 1), "{again:?}");
        assert_eq!(f.calls.mutating_count(), before, "{:?}", f.calls.mutating());
    }
}
