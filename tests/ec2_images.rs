//! AMI escrow on the emulator, across two accounts (moto started through
//! xtask's launcher, which lets an account see and copy an image only while
//! its owner's launch permission names it, and copy it only while every
//! backing snapshot is shared too): an image unshared stays invisible to the
//! escrow; a run shares it, copies it into the escrow encrypted with the
//! escrow key, tags the copy and its snapshot with their provenance, and
//! removes the shares; a re-run copies nothing and verify is clean; a share
//! an interrupted run left (both, or the snapshot's only) is removed by the
//! next run, which copies nothing, and the run after makes no mutating call;
//! plan
//! reports a Windows AMI (a billing product) as not copyable; retention
//! lists the copy and deletes it with its snapshot.
//!
//! moto's API cannot give an image Marketplace product codes, a billing
//! product other than Windows, or snapshots under the AWS-managed key:
//! crates/ec2/tests/image_mocks.rs covers those, and failed or pending
//! copies and quota errors.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, LaunchPermission, LaunchPermissionModifications, OperationType, ResourceType,
    SnapshotAttributeName, Tag, TagSpecification,
};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use futures::TryStreamExt;

use escrow_sync_core::{Executor, ExecutorOptions, Item, Mode, Retained, Scope, Source};
use escrow_sync_e2e::{ESCROW, PRIMARY, admin, create_kms_key, sessions, unique};
use escrow_sync_ec2::{AmiSink, AmiSource};

/// One of moto's default (Amazon-owned) AMIs: Windows or not.
async fn default_ami(ec2: &aws_sdk_ec2::Client, windows: bool) -> String {
    let images = ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .expect("describe the default AMIs")
        .images
        .unwrap_or_default();
    images
        .into_iter()
        .find(|i| {
            i.platform().is_some_and(|p| p.as_str().eq_ignore_ascii_case("windows")) == windows
                && i.product_codes().is_empty()
        })
        .and_then(|i| i.image_id)
        .expect("a default AMI")
}

/// An AMI of the primary made from an instance of a default AMI, tagged
/// `backup = <backup>`; returns its id and the instance's.
async fn primary_image(ec2: &aws_sdk_ec2::Client, backup: &str, windows: bool) -> (String, String) {
    let base = default_ami(ec2, windows).await;
    let instance = ec2
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
    let image = ec2
        .create_image()
        .instance_id(&instance)
        .name(unique("escrow-test-image"))
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Image)
                .tags(Tag::builder().key("backup").value(backup).build())
                .build(),
        )
        .send()
        .await
        .expect("create an image")
        .image_id
        .expect("an image id");
    (image, instance)
}

async fn backing_snapshot(ec2: &aws_sdk_ec2::Client, image: &str) -> String {
    ec2.describe_images()
        .image_ids(image)
        .send()
        .await
        .expect("describe the image")
        .images
        .unwrap_or_default()
        .into_iter()
        .flat_map(|i| i.block_device_mappings.unwrap_or_default())
        .find_map(|m| m.ebs.and_then(|e| e.snapshot_id))
        .expect("a backing snapshot")
}

async fn image_visible(ec2: &aws_sdk_ec2::Client, id: &str) -> bool {
    ec2.describe_images().image_ids(id).send().await.is_ok()
}

async fn snapshot_visible(ec2: &aws_sdk_ec2::Client, id: &str) -> bool {
    ec2.describe_snapshots().snapshot_ids(id).send().await.is_ok()
}

fn tags(list: &[Tag]) -> BTreeMap<String, String> {
    list.iter()
        .map(|t| (t.key().unwrap_or("").to_string(), t.value().unwrap_or("").to_string()))
        .collect()
}

async fn endpoints(tag: &str, key: Option<String>) -> (AmiSource, AmiSink) {
    let s = sessions().await;
    let source = AmiSource::from_client(
        escrow_sync_ec2::client(&s.primary),
        escrow_sync_ec2::kms_client(&s.primary),
        "us-east-1",
        PRIMARY,
        ESCROW,
    )
    .with_tags(BTreeMap::from([("backup".to_string(), tag.to_string())]))
    .with_wait(Duration::from_secs(60), Duration::from_millis(100));
    let sink = AmiSink::from_client(escrow_sync_ec2::client(&s.escrow), "us-east-1")
        .with_kms_key_id(key)
        .with_wait(Duration::from_secs(60), Duration::from_millis(100));
    (source, sink)
}

#[tokio::test]
async fn an_ami_is_shared_copied_with_the_escrow_key_tagged_unshared_and_prunable() {
    let primary = escrow_sync_ec2::client(&admin(PRIMARY).await);
    let escrow_session = admin(ESCROW).await;
    let escrow = escrow_sync_ec2::client(&escrow_session);
    let tag = unique("ami");
    let (selected, instance) = primary_image(&primary, &tag, false).await;
    let (other, _) = primary_image(&primary, "no", false).await;
    let selected_snapshot = backing_snapshot(&primary, &selected).await;
    assert!(!image_visible(&escrow, &selected).await, "unshared: invisible");

    let key = create_kms_key(&escrow_session).await;
    let (source, sink) = endpoints(&tag, Some(key.clone())).await;
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(20));

    let plan = ex.execute(Mode::Plan, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!(plan.differences.len(), 1, "{plan:?}");
    assert_eq!(plan.differences[0].key, selected);
    assert_eq!(plan.differences[0].status, None, "a plain copy: {plan:?}");
    // The listing carries the lineage the copy is tagged with (what prune
    // matches the job's selection by) and the creation time.
    let items: Vec<Item> = source.list(&Scope::all()).try_collect().await.unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].lineage.as_deref(), Some(instance.as_str()));
    assert!(items[0].modified.is_some(), "{items:?}");

    let run = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    assert!(!image_visible(&escrow, &selected).await, "the launch permission is removed");
    assert!(!snapshot_visible(&escrow, &selected_snapshot).await, "the snapshot unshared");

    let copies = escrow
        .describe_images()
        .owners("self")
        .filters(
            Filter::builder()
                .name(format!("tag:{}", escrow_sync_core::tags::SOURCE_IMAGE_ID))
                .values(&selected)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .images
        .unwrap_or_default();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let copy = &copies[0];
    let copy_id = copy.image_id().unwrap().to_string();
    assert_eq!(copy.owner_id(), Some(ESCROW));
    let image_tags = tags(copy.tags());
    assert_eq!(image_tags["escrow-sync:source-account"], PRIMARY);
    assert_eq!(
        image_tags["escrow-sync:source-arn"],
        format!("arn:aws:ec2:us-east-1::image/{selected}")
    );
    assert_eq!(image_tags["escrow-sync:lineage"], instance, "the source instance");
    assert!(image_tags["escrow-sync:source-start-time"].ends_with('Z'), "{image_tags:?}");
    assert!(image_tags.contains_key("escrow-sync:copied-at"), "{image_tags:?}");
    let copy_snapshot = backing_snapshot(&escrow, &copy_id).await;
    let snapshot = escrow
        .describe_snapshots()
        .snapshot_ids(&copy_snapshot)
        .send()
        .await
        .unwrap()
        .snapshots
        .unwrap_or_default()
        .remove(0);
    assert_eq!(snapshot.owner_id(), Some(ESCROW));
    assert_eq!(snapshot.encrypted(), Some(true));
    assert_eq!(snapshot.kms_key_id(), Some(key.as_str()));
    assert_eq!(tags(snapshot.tags()), image_tags, "the snapshot carries the provenance too");

    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 1), "{again:?}");
    let verify = ex.execute(Mode::Verify, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((verify.missing, verify.failed), (0, 0), "{verify:?}");
    assert!(verify.findings.is_empty(), "{:?}", verify.findings);
    assert!(!image_visible(&escrow, &other).await, "the unselected one never shared");

    // Retention sees the copy with its lineage, and deletes it with its
    // snapshot.
    let listed: Vec<_> =
        sink.copies().await.unwrap().into_iter().filter(|c| c.source == selected).collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].id.as_str(), listed[0].lineage.as_str()),
        (copy_id.as_str(), instance.as_str())
    );
    assert!(listed[0].complete);
    sink.delete_copy(&listed[0]).await.unwrap();
    assert!(sink.copies().await.unwrap().iter().all(|c| c.id != copy_id), "deregistered");
    assert!(!snapshot_visible(&escrow, &copy_snapshot).await, "its snapshot deleted");

    // Copied again: the first ClientToken answers with the deregistered
    // copy, which the wait finds gone (after its grace, here the short
    // timeout), so the next token makes a new copy.
    let quick = AmiSink::from_client(escrow.clone(), "us-east-1")
        .with_kms_key_id(Some(key.clone()))
        .with_wait(Duration::from_secs(2), Duration::from_millis(100));
    let again = ex.execute(Mode::Run, &source, &quick, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.failed), (1, 0), "{again:?}");
    let second: Vec<_> =
        sink.copies().await.unwrap().into_iter().filter(|c| c.source == selected).collect();
    assert_eq!(second.len(), 1, "{second:?}");
    assert_ne!(second[0].id, copy_id, "a new copy");

    // A prune interrupted after DeregisterImage: the copy is deregistered by
    // hand, and deleting it again removes the snapshot it left.
    let left = backing_snapshot(&escrow, &second[0].id).await;
    escrow.deregister_image().image_id(&second[0].id).send().await.unwrap();
    assert!(snapshot_visible(&escrow, &left).await, "the snapshot outlives its image");
    sink.delete_copy(&second[0]).await.unwrap();
    assert!(!snapshot_visible(&escrow, &left).await, "the resumed deletion removes it");
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
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            self.0.lock().unwrap().push(m.name().to_string());
        }
        Ok(())
    }
}

impl Recorder {
    /// The operations sent since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// The calls among `ops` that change something.
fn mutating(ops: &[String]) -> Vec<&String> {
    ops.iter().filter(|o| !["Describe", "List", "Get"].iter().any(|p| o.starts_with(p))).collect()
}

/// An EC2 client of `session` whose operations `recorder` records.
fn recorded(session: &escrow_sync_aws::Session, recorder: &Recorder) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(session.sdk_config())
            .interceptor(recorder.clone())
            .build(),
    )
}

/// Shares (or unshares) image `id`'s launch permission with the escrow, as
/// a run does.
async fn share_image(primary: &aws_sdk_ec2::Client, id: &str, add: bool) {
    let permission = LaunchPermission::builder().user_id(ESCROW).build();
    let change = if add {
        LaunchPermissionModifications::builder().add(permission).build()
    } else {
        LaunchPermissionModifications::builder().remove(permission).build()
    };
    primary.modify_image_attribute().image_id(id).launch_permission(change).send().await.unwrap();
}

/// Shares (or unshares) snapshot `id` with the escrow, as a run does.
async fn share_snapshot(primary: &aws_sdk_ec2::Client, id: &str, add: bool) {
    primary
        .modify_snapshot_attribute()
        .snapshot_id(id)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(if add { OperationType::Add } else { OperationType::Remove })
        .user_ids(ESCROW)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rerun_removes_the_shares_an_interrupted_run_left_and_copies_nothing() {
    let primary_session = admin(PRIMARY).await;
    let primary = escrow_sync_ec2::client(&primary_session);
    let escrow_session = admin(ESCROW).await;
    let escrow = escrow_sync_ec2::client(&escrow_session);
    let tag = unique("ami-left");
    let (id, _) = primary_image(&primary, &tag, false).await;
    let snapshot = backing_snapshot(&primary, &id).await;
    let key = create_kms_key(&escrow_session).await;
    let s = sessions().await;
    let (calls, escrow_calls) = (Recorder::default(), Recorder::default());
    let source = AmiSource::from_client(
        recorded(&s.primary, &calls),
        escrow_sync_ec2::kms_client(&s.primary),
        "us-east-1",
        PRIMARY,
        ESCROW,
    )
    .with_tags(BTreeMap::from([("backup".to_string(), tag.clone())]))
    .with_wait(Duration::from_secs(60), Duration::from_millis(100));
    let sink = AmiSink::from_client(recorded(&s.escrow, &escrow_calls), "us-east-1")
        .with_kms_key_id(Some(key))
        .with_wait(Duration::from_secs(60), Duration::from_millis(100));
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(4));

    let run = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");
    assert!(!image_visible(&escrow, &id).await && !snapshot_visible(&escrow, &snapshot).await);
    let copies = sink.copies().await.unwrap();
    let copies: Vec<_> = copies.into_iter().filter(|c| c.source == id).collect();

    // A run stopped between the copy and the unshare left both shares.
    share_image(&primary, &id, true).await;
    share_snapshot(&primary, &snapshot, true).await;
    assert!(image_visible(&escrow, &id).await && snapshot_visible(&escrow, &snapshot).await);
    calls.take();
    escrow_calls.take();
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert!(!image_visible(&escrow, &id).await, "the launch permission is removed");
    assert!(!snapshot_visible(&escrow, &snapshot).await, "the snapshot unshared");
    let ops = calls.take();
    assert_eq!(
        mutating(&ops),
        ["ModifyImageAttribute", "ModifySnapshotAttribute"],
        "the leftover shares removed, nothing else: {ops:?}"
    );
    assert!(mutating(&escrow_calls.take()).is_empty(), "nothing copied");

    // One stopped halfway through the unshare: only the snapshot is left.
    share_snapshot(&primary, &snapshot, true).await;
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    assert!(!snapshot_visible(&escrow, &snapshot).await, "the snapshot unshared");
    assert_eq!(mutating(&calls.take()), ["ModifySnapshotAttribute"]);

    // Nothing left: a further re-run makes no mutating call at all.
    escrow_calls.take();
    let again = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped, again.failed), (0, 1, 0), "{again:?}");
    let (ops, escrow_ops) = (calls.take(), escrow_calls.take());
    assert!(
        mutating(&ops).is_empty() && mutating(&escrow_ops).is_empty(),
        "{ops:?} {escrow_ops:?}"
    );
    let after: Vec<_> =
        sink.copies().await.unwrap().into_iter().filter(|c| c.source == id).collect();
    assert_eq!(after, copies, "still the one copy");
}

#[tokio::test]
async fn the_emulator_shows_a_shared_image_only_while_it_is_shared() {
    let primary = escrow_sync_ec2::client(&admin(PRIMARY).await);
    let escrow = escrow_sync_ec2::client(&admin(ESCROW).await);
    let (id, _) = primary_image(&primary, "x", false).await;
    let snapshot = backing_snapshot(&primary, &id).await;
    let launch = |add: bool| {
        let permission = LaunchPermission::builder().user_id(ESCROW).build();
        let change = if add {
            LaunchPermissionModifications::builder().add(permission).build()
        } else {
            LaunchPermissionModifications::builder().remove(permission).build()
        };
        primary.modify_image_attribute().image_id(&id).launch_permission(change).send()
    };
    let storage = |add: bool| {
        primary
            .modify_snapshot_attribute()
            .snapshot_id(&snapshot)
            .attribute(SnapshotAttributeName::CreateVolumePermission)
            .operation_type(if add { OperationType::Add } else { OperationType::Remove })
            .user_ids(ESCROW)
            .send()
    };
    let copy = || {
        escrow
            .copy_image()
            .source_image_id(&id)
            .source_region("us-east-1")
            .name(unique("probe"))
            .send()
    };
    assert!(!image_visible(&escrow, &id).await);
    assert!(copy().await.is_err(), "an unshared image cannot be copied");
    launch(true).await.unwrap();
    assert!(image_visible(&escrow, &id).await, "the launch permission shows it");
    let err = copy().await.expect_err("not without its snapshot");
    assert!(format!("{err:?}").contains("permission to access the storage"), "{err:?}");
    storage(true).await.unwrap();
    assert!(copy().await.is_ok(), "launch permission and snapshot shared: copyable");
    launch(false).await.unwrap();
    assert!(!image_visible(&escrow, &id).await, "unsharing hides it again");
    assert!(copy().await.is_err());
    storage(false).await.unwrap();
    assert!(!snapshot_visible(&escrow, &snapshot).await);
    // The escrow cannot change the primary's image either.
    let change = LaunchPermissionModifications::builder()
        .add(LaunchPermission::builder().user_id(ESCROW).build())
        .build();
    assert!(
        escrow
            .modify_image_attribute()
            .image_id(&id)
            .launch_permission(change)
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_emulator_copy_keeps_the_client_token_idempotent() {
    let primary = escrow_sync_ec2::client(&admin(PRIMARY).await);
    let escrow = escrow_sync_ec2::client(&admin(ESCROW).await);
    let (id, _) = primary_image(&primary, "token", false).await;
    let snapshot = backing_snapshot(&primary, &id).await;
    primary
        .modify_image_attribute()
        .image_id(&id)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().user_id(ESCROW).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    primary
        .modify_snapshot_attribute()
        .snapshot_id(&snapshot)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(OperationType::Add)
        .user_ids(ESCROW)
        .send()
        .await
        .unwrap();
    let token = unique("token");
    let copy = |token: String| {
        let escrow = escrow.clone();
        let id = id.clone();
        async move {
            escrow
                .copy_image()
                .source_image_id(id)
                .source_region("us-east-1")
                .name(unique("probe"))
                .client_token(token)
                .send()
                .await
                .expect("copy")
                .image_id
                .expect("an image id")
        }
    };
    let first = copy(token.clone()).await;
    assert_eq!(copy(token).await, first, "the same token, the same copy");
    assert_ne!(copy(unique("other")).await, first, "another token, another copy");
}

#[tokio::test]
async fn plan_reports_a_windows_ami_as_not_copyable() {
    let primary = escrow_sync_ec2::client(&admin(PRIMARY).await);
    let tag = unique("win");
    let (windows, _) = primary_image(&primary, &tag, true).await;
    let (source, sink) = endpoints(&tag, None).await;
    let ex = Executor::new(ExecutorOptions::new().with_concurrency(4));
    let plan = ex.execute(Mode::Plan, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!(plan.differences.len(), 1, "{plan:?}");
    let status = plan.differences[0].status.clone().unwrap_or_default();
    assert_eq!(plan.differences[0].key, windows);
    assert!(
        status.contains("not copyable across accounts") && status.contains("Windows"),
        "{status}"
    );
    // A run fails the item with the same reason and shares nothing.
    let run = ex.execute(Mode::Run, &source, &sink, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (0, 1), "{run:?}");
    let escrow = escrow_sync_ec2::client(&admin(ESCROW).await);
    assert!(!image_visible(&escrow, &windows).await, "never shared");

    // The emulator refuses the copy as AWS does, even once shared.
    let snapshot = backing_snapshot(&primary, &windows).await;
    primary
        .modify_image_attribute()
        .image_id(&windows)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().user_id(ESCROW).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    primary
        .modify_snapshot_attribute()
        .snapshot_id(&snapshot)
        .attribute(SnapshotAttributeName::CreateVolumePermission)
        .operation_type(OperationType::Add)
        .user_ids(ESCROW)
        .send()
        .await
        .unwrap();
    assert!(image_visible(&escrow, &windows).await);
    let err = escrow
        .copy_image()
        .source_image_id(&windows)
        .source_region("us-east-1")
        .name(unique("probe"))
        .send()
        .await
        .expect_err("a billing product is not copyable");
    assert!(format!("{err:?}").contains("BillingProduct"), "{err:?}");
    // Owners=self leaves another account's shared image out.
    let own = escrow.describe_images().image_ids(&windows).owners("self").send().await.unwrap();
    assert!(own.images().is_empty(), "{own:?}");
}
