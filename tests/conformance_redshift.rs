//! The Redshift Source/Sink pair under the conformance suite, on the
//! emulator across two accounts (moto through xtask's launcher, whose
//! Redshift patch adds AuthorizeSnapshotAccess / RevokeSnapshotAccess and
//! lets the escrow describe and restore a snapshot only while the primary
//! authorizes it).
//!
//! The sink makes independent copies: it restores a temporary cluster in
//! escrow under the escrow key, takes a manual snapshot with indefinite
//! retention and the provenance tags, and deletes the cluster. (Share-only
//! mode is not run here: there escrow holds only a share the primary can
//! revoke, which verify flags by design, so the re-run check's clean verify
//! cannot hold; tests/redshift_two_accounts.rs covers that mode.)
//!
//! Items are manual snapshots of one encrypted primary cluster per fixture,
//! tagged for it; their content is what escrow's copy shows: the snapshot it
//! copies (its provenance tag), its status, the escrow key it is encrypted
//! with and its retention. Snapshots are immutable, so a change is a new
//! snapshot of the same cluster, and escrow keeps the earlier copy. Every
//! source and sink call is logged, so the re-run check also proves that a
//! second run, a plan and a verify make no mutating call (no restore, no
//! snapshot, no share).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_redshift::types::Tag;
use bytes::Bytes;
use tokio::sync::OnceCell;

use escrow_sync_core::tags::SOURCE_SNAPSHOT_ID as SOURCE_SNAPSHOT_TAG;
use escrow_sync_core::{Executor, ExecutorOptions, Mode, Result, Scope, Sink, Source};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_kms_key, sessions, unique};
use escrow_sync_redshift::{RedshiftSnapshotSink, RedshiftSnapshotSource};
use escrow_sync_testkit::calls::CallLog;
use escrow_sync_testkit::conformance::{self, Capabilities, Fixture};

struct RedshiftFixture {
    tag: String,
    primary: aws_sdk_redshift::Client,
    escrow: aws_sdk_redshift::Client,
    escrow_key: String,
    cluster: OnceCell<String>,
    calls: CallLog,
    source: RedshiftSnapshotSource,
    sink: RedshiftSnapshotSink,
}

fn logged(session: &escrow_sync_aws::Session, calls: &CallLog) -> aws_sdk_redshift::Client {
    aws_sdk_redshift::Client::from_conf(
        aws_sdk_redshift::config::Builder::from(session.sdk_config())
            .interceptor(calls.clone())
            .build(),
    )
}

impl RedshiftFixture {
    async fn new() -> Self {
        let escrow_admin = admin(ESCROW).await;
        let escrow_key = create_kms_key(&escrow_admin).await;
        let tag = unique("conf-redshift");
        let s = sessions().await;
        let calls = CallLog::new();
        let source = RedshiftSnapshotSource::from_client(
            logged(&s.primary, &calls),
            escrow_sync_redshift::kms_client(&s.primary),
            "us-east-1",
            PRIMARY,
            ESCROW,
        )
        .with_tags(BTreeMap::from([("backup".to_string(), tag.clone())]))
        .with_wait(Duration::from_secs(60), Duration::from_millis(50));
        let sink = RedshiftSnapshotSink::from_client(logged(&s.escrow, &calls), "us-east-1")
            .with_independent_copy(true)
            .with_kms_key_id(Some(escrow_key.clone()))
            .with_accounts(PRIMARY, ESCROW)
            .with_wait(Duration::from_secs(60), Duration::from_millis(50));
        RedshiftFixture {
            primary: escrow_sync_redshift::client(&admin(PRIMARY).await),
            escrow: escrow_sync_redshift::client(&escrow_admin),
            tag,
            escrow_key,
            cluster: OnceCell::new(),
            calls,
            source,
            sink,
        }
    }

    /// The primary cluster (encrypted with a primary key), made on first use.
    async fn cluster(&self) -> &str {
        self.cluster
            .get_or_init(|| async {
                let key = create_kms_key(&admin(PRIMARY).await).await;
                let id = unique("confsales");
                self.primary
                    .create_cluster()
                    .cluster_identifier(&id)
                    .node_type("ra3.xlplus")
                    .cluster_type("multi-node")
                    .number_of_nodes(2)
                    .master_username("admin")
                    .master_user_password("Passw0rd1")
                    .encrypted(true)
                    .kms_key_id(key)
                    .send()
                    .await
                    .expect("create a primary cluster");
                id
            })
            .await
    }

    /// A new manual snapshot of the cluster, tagged for this fixture.
    async fn snapshot(&self, name: &str) -> String {
        let cluster = self.cluster().await.to_string();
        let id = unique(&format!("conf-{name}"));
        self.primary
            .create_cluster_snapshot()
            .cluster_identifier(cluster)
            .snapshot_identifier(&id)
            .tags(Tag::builder().key("backup").value(&self.tag).build())
            .send()
            .await
            .expect("create a primary snapshot");
        id
    }
}

#[async_trait]
impl Fixture for RedshiftFixture {
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
        ["nightly", "weekly", "pre-resize", "z-last"].map(String::from).to_vec()
    }
    async fn seed(&self, name: &str, _variant: u8) -> Result<String> {
        Ok(self.snapshot(name).await)
    }
    async fn change(&self, name: &str, _key: &str, _variant: u8) -> Result<String> {
        Ok(self.snapshot(name).await)
    }
    async fn delete_source(&self, key: &str) -> Result<()> {
        self.primary
            .delete_cluster_snapshot()
            .snapshot_identifier(key)
            .send()
            .await
            .expect("delete a primary snapshot");
        Ok(())
    }
    async fn escrow_content(&self, key: &str) -> Result<Option<Bytes>> {
        let copies: Vec<_> = self
            .escrow
            .describe_cluster_snapshots()
            .snapshot_type("manual")
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .expect("describe escrow snapshots");
        let copies: Vec<_> = copies
            .into_iter()
            .filter(|c| {
                c.owner_account() == Some(ESCROW)
                    && c.tags()
                        .iter()
                        .any(|t| t.key() == Some(SOURCE_SNAPSHOT_TAG) && t.value() == Some(key))
            })
            .collect();
        assert!(copies.len() <= 1, "one escrow copy of {key}: {copies:?}");
        Ok(copies.first().map(|c| {
            Bytes::from(format!(
                "copy of {key}: {}, encrypted {} under {}, retention {:?}",
                c.status().unwrap_or_default(),
                c.encrypted() == Some(true),
                c.kms_key_id().unwrap_or_default(),
                c.manual_snapshot_retention_period(),
            ))
        }))
    }
    fn expected_content(&self, _name: &str, key: &str, _variant: u8) -> Bytes {
        Bytes::from(format!(
            "copy of {key}: available, encrypted true under {}, retention {:?}",
            self.escrow_key,
            Some(-1)
        ))
    }
    fn mutating_calls(&self) -> Option<u64> {
        Some(self.calls.mutating_count())
    }
}

#[tokio::test]
async fn the_redshift_snapshot_pair_conforms() {
    let summary = conformance::run_all(RedshiftFixture::new).await;
    assert!(summary.all_ran(), "{summary:?}");
}

/// The call log sees the copies: a first run restores and snapshots once
/// per snapshot, a re-run makes no mutating call, so the suite's "no
/// mutating call" is measured.
#[tokio::test]
async fn the_fixture_counts_the_copies_it_proves_absent() {
    let f = RedshiftFixture::new().await;
    f.seed("one", 0).await.unwrap();
    let ex = Executor::new(ExecutorOptions::new());
    let r = ex.execute(Mode::Run, f.source(), f.sink(), &Scope::all()).await.unwrap();
    assert_eq!((r.copied, r.failed), (1, 0), "{r:?}");
    assert_eq!(f.calls.count("RestoreFromClusterSnapshot"), 1, "{:?}", f.calls.calls());
    assert_eq!(f.calls.count("CreateClusterSnapshot"), 1, "{:?}", f.calls.calls());
    let before = f.calls.mutating_count();
    let again = ex.execute(Mode::Run, f.source(), f.sink(), &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 1), "{again:?}");
    assert_eq!(f.calls.mutating_count(), before, "{:?}", f.calls.mutating());
}
