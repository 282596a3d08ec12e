//! The EBS snapshot Source/Sink pair under the conformance suite, on the
//! emulator across two accounts (moto through xtask's launcher, whose EC2
//! patch lets the escrow see and copy a snapshot only while the primary
//! shares it).
//!
//! Items are snapshots of fresh volumes, tagged for this fixture; their
//! content is what escrow's copy shows: the snapshot it copies (its
//! provenance tag), its size (1 GiB + the variant) and the escrow key it is
//! encrypted with. Snapshots are immutable, so a change is a new snapshot of
//! a new volume, and escrow keeps the earlier copy. Every source and sink
//! call is logged, so the re-run check also proves that a second run, a plan
//! and a verify make no mutating call (no CopySnapshot, no share).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use bytes::Bytes;

use escrow_sync_core::tags::SOURCE_SNAPSHOT_ID as SOURCE_SNAPSHOT_TAG;
use escrow_sync_core::{Result, Sink, Source};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_kms_key, sessions, unique};
use escrow_sync_ec2::{EbsSnapshotSink, EbsSnapshotSource};
use escrow_sync_testkit::calls::CallLog;
use escrow_sync_testkit::conformance::{self, Capabilities, Fixture};

struct EbsFixture {
    tag: String,
    primary: aws_sdk_ec2::Client,
    escrow: aws_sdk_ec2::Client,
    escrow_key: String,
    calls: CallLog,
    source: EbsSnapshotSource,
    sink: EbsSnapshotSink,
}

fn logged(session: &escrow_sync_aws::Session, calls: &CallLog) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(session.sdk_config()).interceptor(calls.clone()).build(),
    )
}

impl EbsFixture {
    async fn new() -> Self {
        let escrow_admin = admin(ESCROW).await;
        let escrow_key = create_kms_key(&escrow_admin).await;
        let tag = unique("conf-ebs");
        let s = sessions().await;
        let calls = CallLog::new();
        let source = EbsSnapshotSource::from_client(
            logged(&s.primary, &calls),
            escrow_sync_ec2::kms_client(&s.primary),
            "us-east-1",
            PRIMARY,
            ESCROW,
        )
        .with_tags(BTreeMap::from([("backup".to_string(), tag.clone())]))
        .with_wait(Duration::from_secs(60), Duration::from_millis(50));
        let sink = EbsSnapshotSink::from_client(logged(&s.escrow, &calls), "us-east-1")
            .with_kms_key_id(Some(escrow_key.clone()))
            .with_wait(Duration::from_secs(60), Duration::from_millis(50));
        EbsFixture {
            primary: escrow_sync_ec2::client(&admin(PRIMARY).await),
            escrow: escrow_sync_ec2::client(&escrow_admin),
            tag,
            escrow_key,
            calls,
            source,
            sink,
        }
    }

    /// A snapshot, tagged for this fixture, of a new volume of `size` GiB.
    async fn snapshot(&self, name: &str, size: i32) -> String {
        let volume = self
            .primary
            .create_volume()
            .availability_zone("us-east-1a")
            .size(size)
            .send()
            .await
            .expect("create a volume")
            .volume_id
            .expect("a volume id");
        self.primary
            .create_snapshot()
            .volume_id(volume)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Snapshot)
                    .tags(Tag::builder().key("backup").value(&self.tag).build())
                    .tags(Tag::builder().key("name").value(name).build())
                    .build(),
            )
            .send()
            .await
            .expect("create a snapshot")
            .snapshot_id
            .expect("a snapshot id")
    }
}

#[async_trait]
impl Fixture for EbsFixture {
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
        ["db-data", "logs", "home", "scratch", "z-last"].map(String::from).to_vec()
    }
    async fn seed(&self, name: &str, variant: u8) -> Result<String> {
        Ok(self.snapshot(name, 1 + i32::from(variant)).await)
    }
    async fn change(&self, name: &str, _key: &str, variant: u8) -> Result<String> {
        Ok(self.snapshot(name, 1 + i32::from(variant)).await)
    }
    async fn delete_source(&self, key: &str) -> Result<()> {
        self.primary.delete_snapshot().snapshot_id(key).send().await.expect("delete a snapshot");
        Ok(())
    }
    async fn escrow_content(&self, key: &str) -> Result<Option<Bytes>> {
        let copies = self
            .escrow
            .describe_snapshots()
            .owner_ids("self")
            .filters(
                Filter::builder().name(format!("tag:{SOURCE_SNAPSHOT_TAG}")).values(key).build(),
            )
            .send()
            .await
            .expect("describe escrow snapshots")
            .snapshots
            .unwrap_or_default();
        assert!(copies.len() <= 1, "one escrow copy of {key}: {copies:?}");
        Ok(copies.first().map(|c| {
            Bytes::from(format!(
                "copy of {key}: {} GiB, {:?}, encrypted {} under {}",
                c.volume_size().unwrap_or(0),
                c.state().map(|s| s.as_str()),
                c.encrypted() == Some(true),
                c.kms_key_id().unwrap_or("no key"),
            ))
        }))
    }
    fn expected_content(&self, _name: &str, key: &str, variant: u8) -> Bytes {
        Bytes::from(format!(
            "copy of {key}: {} GiB, {:?}, encrypted true under {}",
            1 + variant,
            Some("completed"),
            self.escrow_key
        ))
    }
    fn mutating_calls(&self) -> Option<u64> {
        Some(self.calls.mutating_count())
    }
}

#[tokio::test]
async fn the_ebs_snapshot_pair_conforms() {
    let summary = conformance::run_all(EbsFixture::new).await;
    assert!(summary.all_ran(), "{summary:?}");
}

/// The call log the fixture relies on sees the copies: a first run makes
/// one CopySnapshot per snapshot, a re-run none (so the suite's "no
/// mutating call" is measured, not vacuous).
#[tokio::test]
async fn the_fixture_counts_the_copies_it_proves_absent() {
    let f = EbsFixture::new().await;
    for name in ["one", "two"] {
        f.seed(name, 0).await.unwrap();
    }
    let ex = escrow_sync_core::Executor::new(escrow_sync_core::ExecutorOptions::new());
    let mode = escrow_sync_core::Mode::Run;
    let all = escrow_sync_core::Scope::all();
    let r = ex.execute(mode, f.source(), f.sink(), &all).await.unwrap();
    assert_eq!((r.copied, r.failed), (2, 0), "{r:?}");
    assert_eq!(f.calls.count("CopySnapshot"), 2, "{:?}", f.calls.calls());
    let before = f.calls.mutating_count();
    let again = ex.execute(mode, f.source(), f.sink(), &all).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 2), "{again:?}");
    assert_eq!(f.calls.count("CopySnapshot"), 2, "{:?}", f.calls.calls());
    assert_eq!(f.calls.mutating_count(), before, "{:?}", f.calls.mutating());
}
