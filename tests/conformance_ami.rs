//! The AMI Source/Sink pair under the conformance suite, on the emulator
//! across two accounts (moto through xtask's launcher, whose EC2 patch lets
//! the escrow see and copy an image only while the primary shares it and
//! its backing snapshots).
//!
//! Items are images of one instance per name, tagged for this fixture;
//! their content is what escrow's copy shows: the image it copies (its
//! provenance tag), its state, and that every backing snapshot is encrypted
//! under the escrow key. Images are immutable, so a change is a new image of
//! the same instance (the same lineage), and escrow keeps the earlier copy.
//! Every source and sink call is logged, so the re-run check also proves
//! that a second run, a plan and a verify make no mutating call (no
//! CopyImage, no share, no tag).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use bytes::Bytes;

use escrow_sync_core::tags::SOURCE_IMAGE_ID as SOURCE_IMAGE_TAG;
use escrow_sync_core::{Executor, ExecutorOptions, Mode, Result, Scope, Sink, Source};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_kms_key, sessions, unique};
use escrow_sync_ec2::{AmiSink, AmiSource};
use escrow_sync_testkit::calls::CallLog;
use escrow_sync_testkit::conformance::{self, Capabilities, Fixture};

struct AmiFixture {
    tag: String,
    primary: aws_sdk_ec2::Client,
    escrow: aws_sdk_ec2::Client,
    escrow_key: String,
    instances: Mutex<HashMap<String, String>>,
    calls: CallLog,
    source: AmiSource,
    sink: AmiSink,
}

fn logged(session: &escrow_sync_aws::Session, calls: &CallLog) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(session.sdk_config()).interceptor(calls.clone()).build(),
    )
}

impl AmiFixture {
    async fn new() -> Self {
        let escrow_admin = admin(ESCROW).await;
        let escrow_key = create_kms_key(&escrow_admin).await;
        let tag = unique("conf-ami");
        let s = sessions().await;
        let calls = CallLog::new();
        let source = AmiSource::from_client(
            logged(&s.primary, &calls),
            escrow_sync_ec2::kms_client(&s.primary),
            "us-east-1",
            PRIMARY,
            ESCROW,
        )
        .with_tags(BTreeMap::from([("backup".to_string(), tag.clone())]))
        .with_wait(Duration::from_secs(60), Duration::from_millis(50));
        let sink = AmiSink::from_client(logged(&s.escrow, &calls), "us-east-1")
            .with_kms_key_id(Some(escrow_key.clone()))
            .with_wait(Duration::from_secs(60), Duration::from_millis(50));
        AmiFixture {
            primary: escrow_sync_ec2::client(&admin(PRIMARY).await),
            escrow: escrow_sync_ec2::client(&escrow_admin),
            tag,
            escrow_key,
            instances: Mutex::new(HashMap::new()),
            calls,
            source,
            sink,
        }
    }

    /// The instance `name`'s images are made of (started on first use from
    /// one of moto's default Linux AMIs).
    async fn instance(&self, name: &str) -> String {
        if let Some(id) = self.instances.lock().unwrap().get(name) {
            return id.clone();
        }
        let images = self
            .primary
            .describe_images()
            .owners("amazon")
            .send()
            .await
            .expect("describe the default AMIs")
            .images
            .unwrap_or_default();
        let base = images
            .into_iter()
            .find(|i| i.platform().is_none() && i.product_codes().is_empty())
            .and_then(|i| i.image_id)
            .expect("a default Linux AMI");
        let id = self
            .primary
            .run_instances()
            .image_id(base)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("run an instance")
            .instances
            .unwrap_or_default()
            .into_iter()
            .next()
            .and_then(|i| i.instance_id)
            .expect("an instance id");
        self.instances.lock().unwrap().insert(name.to_string(), id.clone());
        id
    }

    /// A new image of `name`'s instance, tagged for this fixture.
    async fn image(&self, name: &str) -> String {
        let instance = self.instance(name).await;
        self.primary
            .create_image()
            .instance_id(instance)
            .name(unique(&format!("conf-{name}")))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Image)
                    .tags(Tag::builder().key("backup").value(&self.tag).build())
                    .build(),
            )
            .send()
            .await
            .expect("create an image")
            .image_id
            .expect("an image id")
    }
}

#[async_trait]
impl Fixture for AmiFixture {
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
        ["web", "worker", "batch", "z-last"].map(String::from).to_vec()
    }
    async fn seed(&self, name: &str, _variant: u8) -> Result<String> {
        Ok(self.image(name).await)
    }
    async fn change(&self, name: &str, _key: &str, _variant: u8) -> Result<String> {
        Ok(self.image(name).await)
    }
    async fn delete_source(&self, key: &str) -> Result<()> {
        self.primary.deregister_image().image_id(key).send().await.expect("deregister an image");
        Ok(())
    }
    async fn escrow_content(&self, key: &str) -> Result<Option<Bytes>> {
        let copies = self
            .escrow
            .describe_images()
            .owners("self")
            .filters(Filter::builder().name(format!("tag:{SOURCE_IMAGE_TAG}")).values(key).build())
            .send()
            .await
            .expect("describe escrow images")
            .images
            .unwrap_or_default();
        assert!(copies.len() <= 1, "one escrow copy of {key}: {copies:?}");
        let Some(copy) = copies.first() else { return Ok(None) };
        let ids: Vec<String> = copy
            .block_device_mappings()
            .iter()
            .filter_map(|m| m.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect();
        assert!(!ids.is_empty(), "the copy of {key} has backing snapshots: {copy:?}");
        let snapshots = self
            .escrow
            .describe_snapshots()
            .set_snapshot_ids(Some(ids.clone()))
            .send()
            .await
            .expect("describe the copy's snapshots")
            .snapshots
            .unwrap_or_default();
        assert_eq!(snapshots.len(), ids.len(), "every backing snapshot in escrow");
        let all_under_escrow_key = snapshots.iter().all(|s| {
            s.encrypted() == Some(true) && s.kms_key_id() == Some(self.escrow_key.as_str())
        });
        Ok(Some(Bytes::from(format!(
            "copy of {key}: {:?}, backing snapshots under the escrow key: {all_under_escrow_key}",
            copy.state().map(|s| s.as_str()),
        ))))
    }
    fn expected_content(&self, _name: &str, key: &str, _variant: u8) -> Bytes {
        Bytes::from(format!(
            "copy of {key}: {:?}, backing snapshots under the escrow key: true",
            Some("available"),
        ))
    }
    fn mutating_calls(&self) -> Option<u64> {
        Some(self.calls.mutating_count())
    }
}

#[tokio::test]
async fn the_ami_pair_conforms() {
    let summary = conformance::run_all(AmiFixture::new).await;
    assert!(summary.all_ran(), "{summary:?}");
}

/// The call log sees the copies: a first run makes one CopyImage per image,
/// a re-run none, so the suite's "no mutating call" is measured.
#[tokio::test]
async fn the_fixture_counts_the_copies_it_proves_absent() {
    let f = AmiFixture::new().await;
    f.seed("one", 0).await.unwrap();
    let ex = Executor::new(ExecutorOptions::new());
    let r = ex.execute(Mode::Run, f.source(), f.sink(), &Scope::all()).await.unwrap();
    assert_eq!((r.copied, r.failed), (1, 0), "{r:?}");
    assert_eq!(f.calls.count("CopyImage"), 1, "{:?}", f.calls.calls());
    let before = f.calls.mutating_count();
    let again = ex.execute(Mode::Run, f.source(), f.sink(), &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 1), "{again:?}");
    assert_eq!(f.calls.mutating_count(), before, "{:?}", f.calls.mutating());
}
