//! AMI escrow against aws-smithy-mocks: the listing by owner, state and
//! tags; the share of the launch permission AND every backing snapshot
//! before the copy and its removal after; AMIs with Marketplace codes or a
//! billing product refused as not copyable across accounts; a backing
//! snapshot under the AWS-managed key refused with what to configure, or
//! re-encrypted in the primary once with the configured key; the escrow
//! CopyImage (encrypted with the escrow key, a ClientToken stable across
//! retries, provenance tags on the image and its snapshots at creation);
//! polling to availability, a copy that fails reported with its StateReason,
//! a copy left in progress waited on, a quota error retried by the executor,
//! a whole run followed by a re-run that makes no mutating call; the shares
//! an interrupted run left (launch permission, snapshots, a re-encrypted
//! copy's) removed for images escrow already holds, found in one
//! DescribeImages and one DescribeSnapshots per run; the audit
//! of the copy's keys, and retention's listing and deletion of copies.
//!
//! The two-account suite (tests/ec2_images.rs) runs the dance on the
//! emulator; these pin the request shapes and the paths the emulator cannot
//! produce (product codes, billing products, AWS-managed keys, failed or
//! pending copies, quota errors).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::operation::copy_image::CopyImageOutput;
use aws_sdk_ec2::operation::create_tags::CreateTagsOutput;
use aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput;
use aws_sdk_ec2::operation::deregister_image::DeregisterImageOutput;
use aws_sdk_ec2::operation::describe_images::DescribeImagesOutput;
use aws_sdk_ec2::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_ec2::operation::modify_image_attribute::ModifyImageAttributeOutput;
use aws_sdk_ec2::operation::modify_snapshot_attribute::ModifySnapshotAttributeOutput;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Image, ImageState, OperationType, PlatformValues,
    ProductCode, ResourceType, Snapshot, SnapshotState, StateReason, Tag,
};
use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
use aws_sdk_kms::types::{KeyManagerType, KeyMetadata};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use futures::TryStreamExt;

use escrow_sync_core::{
    ErrorKind, EscrowCopy, Executor, ExecutorOptions, Item, ItemKind, Mode, Payload, Retained,
    RetryPolicy, Scope, ServerSideRef, Sink, Source,
};
use escrow_sync_ec2::{AmiSink, AmiSource};

const PRIMARY: &str = "111111111111";
const ESCROW: &str = "222222222222";
const ESCROW_KEY: &str = "arn:aws:kms:us-east-1:222222222222:key/escrow";
const PRIMARY_KEY: &str = "arn:aws:kms:us-east-1:111111111111:key/cmk";
const AWS_EBS_KEY: &str = "arn:aws:kms:us-east-1:111111111111:key/aws-ebs";
const CUSTOMER: &str = "arn:aws:kms:us-east-1:111111111111:key/shared-with-escrow";
const CREATED: &str = "2026-11-28T21:43:21.000Z";
const CREATED_RFC3339: &str = "2026-11-28T21:43:21Z";
const REENCRYPTED_FROM: &str = "escrow-sync:reencrypted-from";

fn mapping(device: &str, snapshot: &str, gib: i32) -> BlockDeviceMapping {
    BlockDeviceMapping::builder()
        .device_name(device)
        .ebs(EbsBlockDevice::builder().snapshot_id(snapshot).volume_size(gib).build())
        .build()
}

/// An image backed by `snapshots` (the first the root, 8 GiB; the others
/// 2 GiB), made from instance i-1.
fn image(id: &str, state: ImageState, snapshots: &[&str]) -> Image {
    let mut b = Image::builder()
        .image_id(id)
        .name("web 1")
        .state(state)
        .owner_id(PRIMARY)
        .creation_date(CREATED)
        .root_device_name("/dev/xvda")
        .source_instance_id("i-1")
        .usage_operation("RunInstances")
        .platform_details("Linux/UNIX");
    for (n, s) in snapshots.iter().enumerate() {
        let device = format!("/dev/xvd{}", (b'a' + n as u8) as char);
        b = b.block_device_mappings(mapping(&device, s, if n == 0 { 8 } else { 2 }));
    }
    b.build()
}

fn snapshot(id: &str, key: Option<&str>, tags: Vec<Tag>) -> Snapshot {
    Snapshot::builder()
        .snapshot_id(id)
        .volume_id(format!("vol-of-{id}"))
        .state(SnapshotState::Completed)
        .encrypted(key.is_some())
        .set_kms_key_id(key.map(str::to_string))
        .set_tags(Some(tags))
        .build()
}

fn provenance(source: &str) -> Vec<Tag> {
    [
        (escrow_sync_core::tags::SOURCE_IMAGE_ID, source.to_string()),
        ("escrow-sync:source-account", PRIMARY.to_string()),
        ("escrow-sync:source-arn", format!("arn:aws:ec2:us-east-1::image/{source}")),
        ("escrow-sync:source-start-time", CREATED_RFC3339.to_string()),
        ("escrow-sync:copied-at", "2026-11-29T00:00:00Z".to_string()),
        ("escrow-sync:lineage", "i-1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| Tag::builder().key(k).value(v).build())
    .collect()
}

/// The escrow copy `id` of `source`, tagged with its provenance.
fn copy_of(source: &str, id: &str, state: ImageState, snapshots: &[&str]) -> Image {
    let mut i = image(id, state, snapshots);
    i.owner_id = Some(ESCROW.into());
    i.source_instance_id = None;
    i.tags = Some(provenance(source));
    i
}

fn images(list: Vec<Image>) -> DescribeImagesOutput {
    DescribeImagesOutput::builder().set_images(Some(list)).build()
}

fn snapshots(list: Vec<Snapshot>) -> DescribeSnapshotsOutput {
    DescribeSnapshotsOutput::builder().set_snapshots(Some(list)).build()
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>\
         </Errors><RequestID>r</RequestID></Response>"
    )
}

fn ec2(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_ec2, RuleMode::MatchAny, rules, |c| c.retry_config(
        RetryConfig::standard()
            .with_max_attempts(3)
            .with_initial_backoff(Duration::from_millis(1))
            .with_max_backoff(Duration::from_millis(2))
    ))
}

/// KMS answering DescribeKey: [`AWS_EBS_KEY`] is AWS-managed, any other a
/// customer key.
fn kms() -> aws_sdk_kms::Client {
    let rule = mock!(aws_sdk_kms::Client::describe_key).then_compute_output(|r| {
        let key = r.key_id().unwrap_or_default().to_string();
        let manager =
            if key == AWS_EBS_KEY { KeyManagerType::Aws } else { KeyManagerType::Customer };
        DescribeKeyOutput::builder()
            .key_metadata(KeyMetadata::builder().key_id(key).key_manager(manager).build().unwrap())
            .build()
    });
    mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&rule])
}

fn source(ec2_client: Client) -> AmiSource {
    AmiSource::from_client(ec2_client, kms(), "us-east-1", PRIMARY, ESCROW)
        .with_wait(Duration::from_secs(5), Duration::from_millis(1))
}

fn sink(rules: &[&Rule]) -> AmiSink {
    AmiSink::from_client(ec2(rules), "us-east-1")
        .with_kms_key_id(Some(ESCROW_KEY.into()))
        .with_wait(Duration::from_secs(5), Duration::from_millis(1))
}

fn item(id: &str) -> Item {
    Item::new(id, ItemKind::Snapshot, 10 << 30, id)
}

/// The primary's DescribeImages of `id` answering `answer`.
fn describe_one(id: &'static str, answer: Image) -> Rule {
    mock!(Client::describe_images)
        .match_requests(move |r| r.image_ids() == [id])
        .then_output(move || images(vec![answer.clone()]))
}

/// DescribeSnapshots of exactly `ids` answering `answer`.
fn describe_snaps(ids: &'static [&'static str], answer: Vec<Snapshot>) -> Rule {
    mock!(Client::describe_snapshots)
        .match_requests(move |r| r.snapshot_ids() == ids)
        .then_output(move || snapshots(answer.clone()))
}

type Calls = Arc<Mutex<Vec<String>>>;

/// ModifyImageAttribute and ModifySnapshotAttribute naming the escrow
/// account, recorded as `add ami-1`, `remove snap-a`...
fn share_rules(calls: &Calls) -> [Rule; 2] {
    let (c1, c2) = (calls.clone(), calls.clone());
    let image = mock!(Client::modify_image_attribute)
        .match_requests(move |r| {
            let lp = r.launch_permission().expect("a launchPermission change");
            let (op, who) = match (lp.add(), lp.remove()) {
                ([p], []) => ("add", p.user_id()),
                ([], [p]) => ("remove", p.user_id()),
                other => panic!("one permission at a time: {other:?}"),
            };
            assert_eq!(who, Some(ESCROW));
            c1.lock().unwrap().push(format!("{op} {}", r.image_id().unwrap()));
            true
        })
        .then_output(|| ModifyImageAttributeOutput::builder().build());
    let snapshot = mock!(Client::modify_snapshot_attribute)
        .match_requests(move |r| {
            assert_eq!(r.user_ids(), [ESCROW]);
            let op = match r.operation_type() {
                Some(OperationType::Add) => "add",
                Some(OperationType::Remove) => "remove",
                other => panic!("{other:?}"),
            };
            c2.lock().unwrap().push(format!("{op} {}", r.snapshot_id().unwrap()));
            true
        })
        .then_output(|| ModifySnapshotAttributeOutput::builder().build());
    [image, snapshot]
}

fn taken(calls: &Calls) -> Vec<String> {
    std::mem::take(&mut *calls.lock().unwrap())
}

#[tokio::test]
async fn the_listing_asks_for_own_available_images_with_the_tags_and_sums_their_volumes() {
    let list = mock!(Client::describe_images)
        .match_requests(|r| {
            r.owners() == ["self"]
                && r.filters()
                    .iter()
                    .any(|f| f.name() == Some("tag:backup") && f.values() == ["true"])
                && r.filters()
                    .iter()
                    .any(|f| f.name() == Some("state") && f.values() == ["available"])
        })
        .then_output(|| {
            let mut reencrypted = image("ami-re", ImageState::Available, &["snap-r"]);
            reencrypted.tags =
                Some(vec![Tag::builder().key(REENCRYPTED_FROM).value("ami-2").build()]);
            images(vec![
                image("ami-1", ImageState::Available, &["snap-a", "snap-b"]),
                image("ami-2", ImageState::Available, &["snap-c"]),
                reencrypted,
            ])
        });
    let src = source(ec2(&[&list])).with_tags([("backup".to_string(), "true".to_string())].into());
    let items: Vec<Item> = src.list(&Scope::all()).try_collect().await.unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["ami-1", "ami-2"], "the primary's re-encrypted copy is no item");
    assert_eq!((items[0].size, items[1].size), (10 << 30, 8 << 30));
    assert_eq!(items[0].fingerprint, "ami-1");
    assert_eq!(src.describe(), "ami://111111111111/us-east-1");

    let by_id = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-2"] && r.owners() == ["self"])
        .then_output(|| images(vec![image("ami-2", ImageState::Available, &["snap-c"])]));
    let src = source(ec2(&[&by_id])).with_ids(vec!["ami-2".into()]);
    let items: Vec<Item> = src.list(&Scope::all()).try_collect().await.unwrap();
    assert_eq!(items.len(), 1);
}

#[tokio::test]
async fn reading_shares_the_launch_permission_and_every_snapshot_and_finishing_unshares() {
    let one = describe_one("ami-1", image("ami-1", ImageState::Available, &["snap-a", "snap-b"]));
    let snaps = describe_snaps(
        &["snap-a", "snap-b"],
        vec![snapshot("snap-a", Some(PRIMARY_KEY), vec![]), snapshot("snap-b", None, vec![])],
    );
    let calls = Calls::default();
    let [share_image, share_snapshot] = share_rules(&calls);
    let src = source(ec2(&[&one, &snaps, &share_image, &share_snapshot]));
    assert!(src.assesses());
    assert_eq!(src.assess(&item("ami-1")).await.unwrap(), None, "a plain copy");
    assert!(taken(&calls).is_empty(), "assess changes nothing");

    let Payload::Reference(r) = src.read(&item("ami-1")).await.unwrap() else {
        panic!("a reference")
    };
    assert_eq!(
        (r.service.as_str(), r.container.as_str(), r.key.as_str()),
        ("ec2", "us-east-1", "ami-1")
    );
    assert_eq!(r.owner.as_deref(), Some(PRIMARY));
    assert_eq!(r.attributes["start-time"], CREATED_RFC3339);
    assert_eq!(r.attributes["name"], "web 1");
    assert_eq!(r.attributes["lineage"], "i-1", "the source instance");
    assert_eq!(taken(&calls), ["add ami-1", "add snap-a", "add snap-b"]);

    src.finish(&item("ami-1")).await.unwrap();
    assert_eq!(taken(&calls), ["remove ami-1", "remove snap-a", "remove snap-b"]);
    src.clone().with_unshare_after_copy(false).finish(&item("ami-1")).await.unwrap();
    assert!(taken(&calls).is_empty(), "unshare_after_copy = false keeps the shares");
}

#[tokio::test]
async fn the_lineage_falls_back_to_the_root_volume() {
    let mut no_instance = image("ami-1", ImageState::Available, &["snap-a", "snap-b"]);
    no_instance.source_instance_id = None;
    let one = describe_one("ami-1", no_instance);
    let snaps = describe_snaps(
        &["snap-a", "snap-b"],
        vec![snapshot("snap-b", None, vec![]), snapshot("snap-a", None, vec![])],
    );
    let calls = Calls::default();
    let [share_image, share_snapshot] = share_rules(&calls);
    let src = source(ec2(&[&one, &snaps, &share_image, &share_snapshot]));
    let Payload::Reference(r) = src.read(&item("ami-1")).await.unwrap() else { panic!() };
    assert_eq!(r.attributes["lineage"], "vol-of-snap-a", "the root device's volume");
}

#[tokio::test]
async fn marketplace_codes_and_billing_products_are_not_copyable_across_accounts() {
    let plain = || image("ami-x", ImageState::Available, &["snap-a"]);
    let mut coded = plain();
    coded.product_codes = Some(vec![ProductCode::builder().product_code_id("abc123").build()]);
    let mut billed = plain();
    billed.usage_operation = Some("RunInstances:0002".into());
    billed.platform_details = Some("Windows".into());
    let mut rhel = plain();
    rhel.usage_operation = None;
    rhel.platform_details = Some("Red Hat Enterprise Linux".into());
    let mut windows = plain();
    windows.usage_operation = None;
    windows.platform_details = None;
    // As EC2 answers it: lower case, not the SDK enum's "Windows".
    windows.platform = Some(PlatformValues::from("windows"));
    for (case, img, why) in [
        ("product code", coded, "abc123"),
        ("usage operation", billed, "RunInstances:0002"),
        ("platform details", rhel, "Red Hat Enterprise Linux"),
        ("windows platform", windows, "Windows"),
    ] {
        let one = describe_one("ami-x", img);
        let snaps = describe_snaps(&["snap-a"], vec![snapshot("snap-a", None, vec![])]);
        let calls = Calls::default();
        let [share_image, share_snapshot] = share_rules(&calls);
        let src = source(ec2(&[&one, &snaps, &share_image, &share_snapshot]));
        let err = src.assess(&item("ami-x")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{case}: {err}");
        let text = err.to_string();
        assert!(
            text.contains("not copyable across accounts")
                && text.contains("ami-x")
                && text.contains(why),
            "{case}: {text}"
        );
        let err = src.read(&item("ami-x")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{case}: {err}");
        assert!(taken(&calls).is_empty(), "{case}: nothing shared");
    }
}

#[tokio::test]
async fn a_snapshot_under_the_aws_managed_key_is_refused_with_what_to_configure() {
    let one = describe_one("ami-1", image("ami-1", ImageState::Available, &["snap-a", "snap-b"]));
    let snaps = describe_snaps(
        &["snap-a", "snap-b"],
        vec![snapshot("snap-a", None, vec![]), snapshot("snap-b", Some(AWS_EBS_KEY), vec![])],
    );
    let calls = Calls::default();
    let [share_image, share_snapshot] = share_rules(&calls);
    let src = source(ec2(&[&one, &snaps, &share_image, &share_snapshot]));
    for err in
        [src.assess(&item("ami-1")).await.unwrap_err(), src.read(&item("ami-1")).await.unwrap_err()]
    {
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        let text = err.to_string();
        assert!(
            text.contains("snap-b") && text.contains("ami-1") && text.contains("reencrypt_key_id"),
            "{text}"
        );
    }
    assert!(taken(&calls).is_empty(), "nothing shared");
}

#[tokio::test]
async fn an_image_under_the_aws_managed_key_is_reencrypted_in_the_primary_once() {
    let one = describe_one("ami-1", image("ami-1", ImageState::Available, &["snap-a"]));
    let original = describe_snaps(&["snap-a"], vec![snapshot("snap-a", Some(AWS_EBS_KEY), vec![])]);
    let reencrypted_snaps =
        describe_snaps(&["snap-re"], vec![snapshot("snap-re", Some(CUSTOMER), vec![])]);
    // No re-encrypted copy the first time; the second time, the one made.
    let lookup = mock!(Client::describe_images)
        .match_requests(|r| {
            r.owners() == ["self"]
                && r.filters().iter().any(|f| {
                    f.name() == Some(&format!("tag:{REENCRYPTED_FROM}")[..])
                        && f.values() == ["ami-1"]
                })
        })
        .sequence()
        .output(|| images(vec![]))
        .output(|| images(vec![image("ami-re", ImageState::Available, &["snap-re"])]))
        .build();
    let copy = mock!(Client::copy_image)
        .match_requests(|r| {
            let tagged = |kind: ResourceType| {
                r.tag_specifications().iter().any(|s| {
                    s.resource_type() == Some(&kind)
                        && s.tags().iter().any(|t| {
                            t.key() == Some(REENCRYPTED_FROM) && t.value() == Some("ami-1")
                        })
                })
            };
            r.source_image_id() == Some("ami-1")
                && r.source_region() == Some("us-east-1")
                && r.encrypted() == Some(true)
                && r.kms_key_id() == Some(CUSTOMER)
                && r.client_token().is_some()
                && tagged(ResourceType::Image)
                && tagged(ResourceType::Snapshot)
        })
        .then_output(|| CopyImageOutput::builder().image_id("ami-re").build());
    let poll = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-re"])
        .sequence()
        .output(|| images(vec![image("ami-re", ImageState::Pending, &["snap-re"])]))
        .output(|| images(vec![image("ami-re", ImageState::Available, &["snap-re"])]))
        .repeatedly()
        .build();
    let calls = Calls::default();
    let [share_image, share_snapshot] = share_rules(&calls);
    let src = source(ec2(&[
        &one,
        &original,
        &reencrypted_snaps,
        &lookup,
        &copy,
        &poll,
        &share_image,
        &share_snapshot,
    ]))
    .with_reencrypt_key_id(Some(CUSTOMER.into()));

    let status = src.assess(&item("ami-1")).await.unwrap().expect("a status");
    assert!(status.starts_with("needs re-encryption") && status.contains(CUSTOMER), "{status}");
    assert_eq!(copy.num_calls(), 0, "assess changes nothing");

    let Payload::Reference(r) = src.read(&item("ami-1")).await.unwrap() else { panic!() };
    assert_eq!(r.key, "ami-re", "the re-encrypted copy is what is shared");
    assert_eq!(r.attributes["lineage"], "i-1", "the original's lineage");
    assert_eq!(copy.num_calls(), 1);
    assert_eq!(taken(&calls), ["add ami-re", "add snap-re"]);
    src.finish(&item("ami-1")).await.unwrap();
    assert_eq!(taken(&calls), ["remove ami-re", "remove snap-re"]);
    // A later run reuses the re-encrypted copy.
    src.read(&item("ami-1")).await.unwrap();
    assert_eq!(copy.num_calls(), 1, "no second re-encryption");
}

fn reference(key: &str) -> Payload {
    Payload::Reference(
        ServerSideRef::new("ec2", "us-east-1", key, "ami-1")
            .with_owner(Some(PRIMARY.into()))
            .with_attributes(
                [
                    ("start-time".to_string(), CREATED_RFC3339.to_string()),
                    ("name".to_string(), "web 1".to_string()),
                    ("lineage".to_string(), "i-1".to_string()),
                ]
                .into(),
            ),
    )
}

/// The escrow's lookup of the copies of ami-1, answering `answers` in turn
/// (then the last one again).
fn lookup(answers: Vec<Vec<Image>>) -> Rule {
    let mut seq = mock!(Client::describe_images)
        .match_requests(|r| {
            r.owners() == ["self"]
                && r.filters().iter().any(|f| {
                    f.name()
                        == Some(&format!("tag:{}", escrow_sync_core::tags::SOURCE_IMAGE_ID)[..])
                        && f.values() == ["ami-1"]
                })
        })
        .sequence();
    let last = answers.last().cloned().unwrap_or_default();
    for a in answers {
        seq = seq.output(move || images(a.clone()));
    }
    seq.output(move || images(last.clone())).repeatedly().build()
}

/// The provenance tags a CopyImage request sets on `kind`.
fn tags_on(
    r: &aws_sdk_ec2::operation::copy_image::CopyImageInput,
    kind: ResourceType,
) -> Vec<(String, String)> {
    r.tag_specifications()
        .iter()
        .filter(|s| s.resource_type() == Some(&kind))
        .flat_map(|s| s.tags())
        .map(|t| {
            (t.key().unwrap_or_default().to_string(), t.value().unwrap_or_default().to_string())
        })
        .collect()
}

#[tokio::test]
async fn the_copy_is_encrypted_tagged_at_creation_waited_for_and_its_snapshots_tagged() {
    let seen = Arc::new(Mutex::new(None));
    let seen_in = seen.clone();
    let copy = mock!(Client::copy_image)
        .match_requests(move |r| {
            *seen_in.lock().unwrap() = Some(r.clone());
            true
        })
        .then_output(|| CopyImageOutput::builder().image_id("ami-c").build());
    let poll = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-c"])
        .sequence()
        .output(|| {
            images(vec![copy_of("ami-1", "ami-c", ImageState::Pending, &["snap-c1", "snap-c2"])])
        })
        .times(2)
        .output(|| {
            images(vec![copy_of("ami-1", "ami-c", ImageState::Available, &["snap-c1", "snap-c2"])])
        })
        .build();
    // One snapshot already carries the provenance, the other none.
    let snaps = describe_snaps(
        &["snap-c1", "snap-c2"],
        vec![
            snapshot("snap-c1", Some(ESCROW_KEY), provenance("ami-1")),
            snapshot("snap-c2", Some(ESCROW_KEY), vec![]),
        ],
    );
    let tag_snapshots = mock!(Client::create_tags)
        .match_requests(|r| {
            r.resources() == ["snap-c2"]
                && r.tags().len() == 6
                && r.tags().iter().any(|t| {
                    t.key() == Some(escrow_sync_core::tags::SOURCE_IMAGE_ID)
                        && t.value() == Some("ami-1")
                })
        })
        .then_output(|| CreateTagsOutput::builder().build());
    let none = lookup(vec![vec![]]);
    let dest = sink(&[&none, &copy, &poll, &snaps, &tag_snapshots]);
    assert_eq!(Sink::describe(&dest), "ami://escrow/us-east-1");
    let receipt = dest.write(&item("ami-1"), reference("ami-1")).await.unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("ami-c"));
    assert_eq!(receipt.bytes, 10 << 30);
    assert_eq!((copy.num_calls(), poll.num_calls(), tag_snapshots.num_calls()), (1, 3, 1));

    let r = seen.lock().unwrap().clone().expect("a CopyImage request");
    assert_eq!(r.source_image_id(), Some("ami-1"));
    assert_eq!(r.source_region(), Some("us-east-1"));
    assert_eq!(r.name(), Some("escrow-web 1-ami-1"));
    assert_eq!(r.encrypted(), Some(true));
    assert_eq!(r.kms_key_id(), Some(ESCROW_KEY));
    assert_eq!(r.client_token(), Some("escrow-sync-ami-1-0"));
    for kind in [ResourceType::Image, ResourceType::Snapshot] {
        let tags: std::collections::BTreeMap<_, _> =
            tags_on(&r, kind.clone()).into_iter().collect();
        assert_eq!(tags[escrow_sync_core::tags::SOURCE_IMAGE_ID], "ami-1", "{kind:?}");
        assert_eq!(tags["escrow-sync:source-account"], PRIMARY);
        assert_eq!(tags["escrow-sync:source-arn"], "arn:aws:ec2:us-east-1::image/ami-1");
        assert_eq!(tags["escrow-sync:source-start-time"], CREATED_RFC3339);
        assert_eq!(tags["escrow-sync:lineage"], "i-1");
        assert!(tags["escrow-sync:copied-at"].ends_with('Z'), "{tags:?}");
    }
}

#[tokio::test]
async fn a_failed_copy_is_reported_with_its_state_reason_and_the_next_run_copies_again() {
    let failed = || {
        let mut i = copy_of("ami-1", "ami-c", ImageState::Failed, &["snap-c1"]);
        i.state_reason = Some(
            StateReason::builder()
                .code("Client.InternalError")
                .message("Snapshot copy failed: internal error")
                .build(),
        );
        i
    };
    // The first run finds nothing and its copy fails; the next finds the
    // failed copy and starts another one, with a new token and name.
    let copies = lookup(vec![vec![], vec![failed()]]);
    let first = mock!(Client::copy_image)
        .match_requests(|r| r.client_token() == Some("escrow-sync-ami-1-0"))
        .then_output(|| CopyImageOutput::builder().image_id("ami-c").build());
    let second = mock!(Client::copy_image)
        .match_requests(|r| {
            r.client_token() == Some("escrow-sync-ami-1-1")
                && r.name() == Some("escrow-web 1-ami-1-retry1")
        })
        .then_output(|| CopyImageOutput::builder().image_id("ami-c2").build());
    let poll = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-c"])
        .then_output(move || images(vec![failed()]));
    let poll2 =
        mock!(Client::describe_images).match_requests(|r| r.image_ids() == ["ami-c2"]).then_output(
            || images(vec![copy_of("ami-1", "ami-c2", ImageState::Available, &["snap-c2"])]),
        );
    let snaps = describe_snaps(
        &["snap-c2"],
        vec![snapshot("snap-c2", Some(ESCROW_KEY), provenance("ami-1"))],
    );
    let dest = sink(&[&copies, &first, &second, &poll, &poll2, &snaps]);
    let err = dest.write(&item("ami-1"), reference("ami-1")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Failed);
    assert!(
        err.to_string().contains("Snapshot copy failed: internal error")
            && err.to_string().contains("ami-c"),
        "{err}"
    );
    let receipt = dest.write(&item("ami-1"), reference("ami-1")).await.unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("ami-c2"));
    assert_eq!((first.num_calls(), second.num_calls()), (1, 1));
}

#[tokio::test]
async fn a_copy_left_in_progress_is_waited_on_not_started_again() {
    let copies = lookup(vec![vec![
        copy_of("ami-1", "ami-old", ImageState::Failed, &["snap-o"]),
        copy_of("ami-1", "ami-pending", ImageState::Pending, &["snap-p"]),
    ]]);
    let copy = mock!(Client::copy_image)
        .then_output(|| CopyImageOutput::builder().image_id("ami-new").build());
    let poll = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-pending"])
        .sequence()
        .output(|| images(vec![copy_of("ami-1", "ami-pending", ImageState::Pending, &["snap-p"])]))
        .output(|| {
            images(vec![copy_of("ami-1", "ami-pending", ImageState::Available, &["snap-p"])])
        })
        .build();
    let snaps = describe_snaps(
        &["snap-p"],
        vec![snapshot("snap-p", Some(ESCROW_KEY), provenance("ami-1"))],
    );
    let tags = mock!(Client::create_tags).then_output(|| CreateTagsOutput::builder().build());
    let receipt = sink(&[&copies, &copy, &poll, &snaps, &tags])
        .write(&item("ami-1"), reference("ami-1"))
        .await
        .unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("ami-pending"));
    assert_eq!(copy.num_calls(), 0, "no second copy");
    assert_eq!(tags.num_calls(), 0, "its snapshot already carries the provenance");
}

#[tokio::test]
async fn a_copy_not_available_in_time_fails_the_item_for_the_next_run() {
    let copies = lookup(vec![vec![copy_of("ami-1", "ami-p", ImageState::Pending, &["snap-p"])]]);
    let poll = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-p"])
        .then_output(|| images(vec![copy_of("ami-1", "ami-p", ImageState::Pending, &["snap-p"])]));
    let dest = AmiSink::from_client(ec2(&[&copies, &poll]), "us-east-1")
        .with_wait(Duration::from_millis(20), Duration::from_millis(1));
    let err = dest.write(&item("ami-1"), reference("ami-1")).await.unwrap_err();
    // Not retryable: the executor would otherwise wait the whole timeout again.
    assert_eq!(err.kind(), ErrorKind::Failed, "{err}");
    assert!(err.to_string().contains("next run waits"), "{err}");
}

/// The primary's side of a run over ami-1 and ami-2, each backed by one
/// unencrypted snapshot.
fn primary_rules(calls: &Calls) -> Vec<Rule> {
    let list = mock!(Client::describe_images)
        .match_requests(|r| {
            r.owners() == ["self"] && r.image_ids().is_empty() && r.executable_users().is_empty()
        })
        .then_output(|| {
            images(vec![
                image("ami-1", ImageState::Available, &["snap-1"]),
                image("ami-2", ImageState::Available, &["snap-2"]),
            ])
        });
    let [share_image, share_snapshot] = share_rules(calls);
    vec![
        list,
        describe_one("ami-1", image("ami-1", ImageState::Available, &["snap-1"])),
        describe_one("ami-2", image("ami-2", ImageState::Available, &["snap-2"])),
        describe_snaps(&["snap-1"], vec![snapshot("snap-1", None, vec![])]),
        describe_snaps(&["snap-2"], vec![snapshot("snap-2", None, vec![])]),
        share_image,
        share_snapshot,
        left_images(vec![]),
        left_snapshots(vec![]),
    ]
}

/// The primary's images shared with the escrow account:
/// DescribeImages Owners=self, ExecutableUsers=escrow.
fn left_images(answer: Vec<Image>) -> Rule {
    mock!(Client::describe_images)
        .match_requests(|r| r.owners() == ["self"] && r.executable_users() == [ESCROW])
        .then_output(move || images(answer.clone()))
}

/// The primary's snapshots shared with the escrow account:
/// DescribeSnapshots OwnerIds=self, RestorableByUserIds=escrow.
fn left_snapshots(answer: Vec<Snapshot>) -> Rule {
    mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.owner_ids() == ["self"]
                && r.restorable_by_user_ids() == [ESCROW]
                && r.snapshot_ids().is_empty()
        })
        .then_output(move || snapshots(answer.clone()))
}

fn executor() -> Executor {
    Executor::new(ExecutorOptions::new().with_concurrency(20).with_retry(RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    }))
}

#[tokio::test]
async fn a_quota_error_is_retried_by_the_executor_with_the_same_client_token() {
    let calls = Calls::default();
    let primary = primary_rules(&calls);
    let src = source(ec2(&primary.iter().collect::<Vec<_>>())).with_ids(vec!["ami-1".into()]);
    let escrow_list = mock!(Client::describe_images)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("tag-key")))
        .then_output(|| images(vec![]));
    let tokens = Calls::default();
    let seen = tokens.clone();
    // EC2's throttling is retried by the SDK; the quota on copies in flight
    // goes back to the executor, which backs off and tries again.
    let copy = mock!(Client::copy_image)
        .match_requests(move |r| {
            seen.lock().unwrap().push(r.client_token().unwrap_or("none").to_string());
            true
        })
        .sequence()
        .http_status(503, Some(error_xml("RequestLimitExceeded", "Request limit exceeded.")))
        .http_status(
            400,
            Some(error_xml(
                "ResourceLimitExceeded",
                "You have reached the maximum number of concurrent AMI copies",
            )),
        )
        .output(|| CopyImageOutput::builder().image_id("ami-c1").build())
        .build();
    let poll =
        mock!(Client::describe_images).match_requests(|r| r.image_ids() == ["ami-c1"]).then_output(
            || images(vec![copy_of("ami-1", "ami-c1", ImageState::Available, &["snap-c1"])]),
        );
    let snaps = describe_snaps(
        &["snap-c1"],
        vec![snapshot("snap-c1", Some(ESCROW_KEY), provenance("ami-1"))],
    );
    let dest = sink(&[&escrow_list, &lookup(vec![vec![]]), &copy, &poll, &snaps]);
    let run = executor().execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.failed), (1, 0), "{run:?}");
    assert_eq!(copy.num_calls(), 3, "one SDK retry, one executor retry");
    // The rule sees each request once (the SDK's own retry resends it as
    // is): the executor's second attempt carries the same token.
    assert_eq!(*tokens.lock().unwrap(), ["escrow-sync-ami-1-0"; 2], "one token for every attempt");
    // The executor's retry reads (shares) again, which AWS takes as a no-op.
    assert_eq!(
        taken(&calls),
        ["add ami-1", "add snap-1", "add ami-1", "add snap-1", "remove ami-1", "remove snap-1"]
    );
}

#[tokio::test]
async fn a_run_copies_what_escrow_lacks_and_a_rerun_makes_no_mutating_call() {
    let calls = Calls::default();
    let primary = primary_rules(&calls);
    let src = source(ec2(&primary.iter().collect::<Vec<_>>()));
    // Escrow holds a copy of ami-2 already; after the run, of ami-1 too.
    let escrow_list = mock!(Client::describe_images)
        .match_requests(|r| {
            r.owners() == ["self"] && r.filters().iter().any(|f| f.name() == Some("tag-key"))
        })
        .sequence()
        .output(|| images(vec![copy_of("ami-2", "ami-c2", ImageState::Available, &["snap-c2"])]))
        .output(|| {
            images(vec![
                copy_of("ami-2", "ami-c2", ImageState::Available, &["snap-c2"]),
                copy_of("ami-1", "ami-c1", ImageState::Available, &["snap-c1"]),
            ])
        })
        .repeatedly()
        .build();
    let copy = mock!(Client::copy_image)
        .then_output(|| CopyImageOutput::builder().image_id("ami-c1").build());
    let poll =
        mock!(Client::describe_images).match_requests(|r| r.image_ids() == ["ami-c1"]).then_output(
            || images(vec![copy_of("ami-1", "ami-c1", ImageState::Available, &["snap-c1"])]),
        );
    let snaps = describe_snaps(&["snap-c1"], vec![snapshot("snap-c1", Some(ESCROW_KEY), vec![])]);
    let tags = mock!(Client::create_tags).then_output(|| CreateTagsOutput::builder().build());
    let dest = sink(&[&escrow_list, &lookup(vec![vec![]]), &copy, &poll, &snaps, &tags]);

    let ex = executor();
    let run = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.skipped, run.failed), (1, 1, 0), "{run:?}");
    assert_eq!((copy.num_calls(), tags.num_calls()), (1, 1));
    assert_eq!(taken(&calls), ["add ami-1", "add snap-1", "remove ami-1", "remove snap-1"]);

    let again = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 2), "{again:?}");
    assert_eq!((copy.num_calls(), tags.num_calls()), (1, 1), "no mutating call");
    assert!(taken(&calls).is_empty(), "no share, no unshare");
}

/// A run over ami-1, ami-2 and ami-3, all already in escrow, after runs
/// interrupted before their shares were removed: ami-1's launch permission
/// and snapshot, ami-2's snapshot only (an unshare stopped halfway), ami-3's
/// re-encrypted copy ami-r (its launch permission and snapshot, tagged with
/// ami-3), plus snap-x, an EBS job's share that is no AMI's.
#[tokio::test]
async fn an_interrupted_runs_shares_are_removed_for_items_escrow_holds_and_only_those() {
    let calls = Calls::default();
    let list = mock!(Client::describe_images)
        .match_requests(|r| {
            r.owners() == ["self"] && r.image_ids().is_empty() && r.executable_users().is_empty()
        })
        .then_output(|| {
            images(vec![
                image("ami-1", ImageState::Available, &["snap-1"]),
                image("ami-2", ImageState::Available, &["snap-2"]),
                image("ami-3", ImageState::Available, &["snap-3"]),
            ])
        });
    let mut reencrypted = image("ami-r", ImageState::Available, &["snap-r"]);
    reencrypted.tags = Some(vec![Tag::builder().key(REENCRYPTED_FROM).value("ami-3").build()]);
    let by_ami = |id: &str| vec![Tag::builder().key(REENCRYPTED_FROM).value(id).build()];
    // What is left shared the first time; nothing once it is undone.
    let left_images = mock!(Client::describe_images)
        .match_requests(|r| r.owners() == ["self"] && r.executable_users() == [ESCROW])
        .sequence()
        .output(move || {
            images(vec![image("ami-1", ImageState::Available, &["snap-1"]), reencrypted.clone()])
        })
        .output(|| images(vec![]))
        .repeatedly()
        .build();
    let left_snapshots = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.owner_ids() == ["self"]
                && r.restorable_by_user_ids() == [ESCROW]
                && r.snapshot_ids().is_empty()
        })
        .sequence()
        .output(move || {
            snapshots(vec![
                snapshot("snap-1", None, vec![]),
                snapshot("snap-2", None, vec![]),
                snapshot("snap-r", Some(CUSTOMER), by_ami("ami-3")),
                snapshot("snap-x", None, vec![]),
            ])
        })
        .output(|| snapshots(vec![]))
        .repeatedly()
        .build();
    let [share_image, share_snapshot] = share_rules(&calls);
    let src = source(ec2(&[&list, &left_images, &left_snapshots, &share_image, &share_snapshot]));
    assert!(src.finishes_skipped());
    let escrow_list = mock!(Client::describe_images)
        .match_requests(|r| r.filters().iter().any(|f| f.name() == Some("tag-key")))
        .then_output(|| {
            images(vec![
                copy_of("ami-1", "ami-c1", ImageState::Available, &["snap-c1"]),
                copy_of("ami-2", "ami-c2", ImageState::Available, &["snap-c2"]),
                copy_of("ami-3", "ami-c3", ImageState::Available, &["snap-c3"]),
            ])
        });
    let copy = mock!(Client::copy_image)
        .then_output(|| CopyImageOutput::builder().image_id("ami-c9").build());
    let dest = sink(&[&escrow_list, &copy]);

    let ex = executor();
    let run = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((run.copied, run.skipped, run.failed), (0, 3, 0), "{run:?}");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    let mut undone = taken(&calls);
    undone.sort();
    assert_eq!(
        undone,
        ["remove ami-1", "remove ami-r", "remove snap-1", "remove snap-2", "remove snap-r"],
        "each leftover share once; snap-x is no AMI's"
    );
    assert_eq!(
        (left_images.num_calls(), left_snapshots.num_calls()),
        (1, 1),
        "asked once for the whole run"
    );
    assert_eq!(copy.num_calls(), 0, "nothing copied");

    let again = ex.execute(Mode::Run, &src, &dest, &Scope::all()).await.unwrap();
    assert_eq!((again.copied, again.skipped), (0, 3), "{again:?}");
    assert!(taken(&calls).is_empty(), "nothing left shared: no mutating call");
    assert_eq!((left_images.num_calls(), left_snapshots.num_calls()), (2, 2), "asked anew");

    // Without unshare_after_copy, skipped items are not finished at all.
    let keep = source(ec2(&[&list, &left_images, &left_snapshots, &share_image, &share_snapshot]))
        .with_unshare_after_copy(false);
    assert!(!keep.finishes_skipped());
    let kept = ex.execute(Mode::Run, &keep, &dest, &Scope::all()).await.unwrap();
    assert_eq!(kept.skipped, 3, "{kept:?}");
    keep.finish(&item("ami-1")).await.unwrap();
    assert!(taken(&calls).is_empty(), "unshare_after_copy = false never unshares");
    assert_eq!((left_images.num_calls(), left_snapshots.num_calls()), (2, 2), "not even asked");
}

#[tokio::test]
async fn the_audit_checks_every_backing_snapshot_against_the_escrow_key() {
    let copies = lookup(vec![vec![copy_of(
        "ami-1",
        "ami-c",
        ImageState::Available,
        &["snap-1", "snap-2", "snap-3"],
    )]]);
    let snaps = describe_snaps(
        &["snap-1", "snap-2", "snap-3"],
        vec![
            snapshot("snap-1", Some(ESCROW_KEY), vec![]),
            snapshot("snap-2", Some("arn:aws:kms:us-east-1:222222222222:key/other"), vec![]),
            snapshot("snap-3", None, vec![]),
        ],
    );
    let dest = sink(&[&copies, &snaps]);
    assert!(dest.audits());
    let problems = dest.audit(&item("ami-1")).await.unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("snap-2") && problems[0].contains(ESCROW_KEY), "{problems:?}");
    assert!(
        problems[1].contains("snap-3") && problems[1].contains("not encrypted"),
        "{problems:?}"
    );

    let good = lookup(vec![vec![copy_of("ami-1", "ami-c", ImageState::Available, &["snap-1"])]]);
    let snaps = describe_snaps(&["snap-1"], vec![snapshot("snap-1", Some(ESCROW_KEY), vec![])]);
    // The key given by id matches the snapshot's key ARN.
    let dest = AmiSink::from_client(ec2(&[&good, &snaps]), "us-east-1")
        .with_kms_key_id(Some("escrow".into()));
    assert!(dest.audit(&item("ami-1")).await.unwrap().is_empty());
}

#[tokio::test]
async fn retention_lists_every_copy_and_deletes_one_with_its_snapshots() {
    let mut pending = copy_of("ami-2", "ami-c2", ImageState::Pending, &["snap-c2"]);
    pending.tags = Some(vec![
        Tag::builder().key(escrow_sync_core::tags::SOURCE_IMAGE_ID).value("ami-2").build(),
    ]);
    let all = mock!(Client::describe_images)
        .match_requests(|r| {
            r.owners() == ["self"]
                && r.filters().len() == 1
                && r.filters()[0].name() == Some("tag-key")
                && r.filters()[0].values() == [escrow_sync_core::tags::SOURCE_IMAGE_ID]
        })
        .then_output(move || {
            images(vec![
                copy_of("ami-1", "ami-c1", ImageState::Available, &["snap-c1", "snap-c1b"]),
                pending.clone(),
            ])
        });
    let one = describe_one(
        "ami-c1",
        copy_of("ami-1", "ami-c1", ImageState::Available, &["snap-c1", "snap-c1b"]),
    );
    let mut foreign = image("ami-mine", ImageState::Available, &["snap-m"]);
    foreign.owner_id = Some(ESCROW.into());
    let not_ours = describe_one("ami-mine", foreign);
    let order = Calls::default();
    let (o1, o2) = (order.clone(), order.clone());
    let deregister = mock!(Client::deregister_image)
        .match_requests(move |r| {
            o1.lock().unwrap().push(format!("deregister {}", r.image_id().unwrap()));
            true
        })
        .then_output(|| DeregisterImageOutput::builder().build());
    let delete = mock!(Client::delete_snapshot)
        .match_requests(move |r| {
            o2.lock().unwrap().push(format!("delete {}", r.snapshot_id().unwrap()));
            true
        })
        .then_output(|| DeleteSnapshotOutput::builder().build());
    let dest = sink(&[&all, &one, &not_ours, &deregister, &delete]);
    assert_eq!(Retained::describe(&dest), "ami://escrow/us-east-1");

    let mut copies = dest.copies().await.unwrap();
    copies.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        copies,
        [
            EscrowCopy {
                id: "ami-c1".into(),
                source: "ami-1".into(),
                lineage: "i-1".into(),
                created: CREATED_RFC3339.into(),
                complete: true,
                copied: Some(CREATED_RFC3339.into()),
                job: None,
            },
            EscrowCopy {
                id: "ami-c2".into(),
                source: "ami-2".into(),
                lineage: "ami-2".into(),
                created: String::new(),
                complete: false,
                copied: Some(CREATED_RFC3339.into()),
                job: None,
            },
        ]
    );
    dest.delete_copy(&copies[0]).await.unwrap();
    assert_eq!(*order.lock().unwrap(), ["deregister ami-c1", "delete snap-c1", "delete snap-c1b"]);

    let refused = EscrowCopy { id: "ami-mine".into(), ..copies[0].clone() };
    let err = dest.delete_copy(&refused).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    assert_eq!(deregister.num_calls(), 1, "an image escrow-sync did not make is left alone");
}

#[tokio::test]
async fn the_escrow_listing_yields_source_ids_of_available_copies() {
    let list = mock!(Client::describe_images)
        .match_requests(|r| {
            r.owners() == ["self"]
                && r.filters().iter().any(|f| {
                    f.name() == Some("tag-key")
                        && f.values() == [escrow_sync_core::tags::SOURCE_IMAGE_ID]
                })
                && r.filters()
                    .iter()
                    .any(|f| f.name() == Some("state") && f.values() == ["available"])
        })
        .then_output(|| {
            images(vec![copy_of("ami-1", "ami-c1", ImageState::Available, &["snap-c1"])])
        });
    let dest = sink(&[&list]);
    let items: Vec<Item> = Sink::list(&dest, &Scope::all()).try_collect().await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!((items[0].key.as_str(), items[0].fingerprint.as_str()), ("ami-1", "ami-1"));
    assert_eq!(items[0].size, 8 << 30);
    // An AMI never changes: a copy of the same image id is the same content.
    let differently_sized = Item::new("ami-1", ItemKind::Snapshot, 1, "ami-1");
    assert!(dest.confirm_same(&differently_sized, &items[0]).await.unwrap());
}

#[tokio::test]
async fn the_listing_carries_the_lineage_the_copy_is_tagged_with_and_the_creation_time() {
    let mut registered = image("ami-2", ImageState::Available, &["snap-r", "snap-d"]);
    registered.source_instance_id = None;
    let mut orphan = image("ami-3", ImageState::Available, &["snap-gone"]);
    orphan.source_instance_id = None;
    let list = mock!(Client::describe_images)
        .match_requests(|r| r.owners() == ["self"] && r.image_ids().is_empty())
        .then_output(move || {
            images(vec![
                image("ami-1", ImageState::Available, &["snap-a"]),
                registered.clone(),
                orphan.clone(),
            ])
        });
    // Only the root snapshots of images made by no instance are looked up,
    // by filter (a snapshot gone does not fail the listing).
    let roots = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.snapshot_ids().is_empty()
                && r.filters().len() == 1
                && r.filters()[0].name() == Some("snapshot-id")
                && r.filters()[0].values() == ["snap-r", "snap-gone"]
        })
        .then_output(|| snapshots(vec![snapshot("snap-r", None, vec![])]));
    let src = source(ec2(&[&list, &roots]));
    let items: Vec<Item> = src.list(&Scope::all()).try_collect().await.unwrap();
    let lineages: Vec<(&str, Option<&str>)> =
        items.iter().map(|i| (i.key.as_str(), i.lineage.as_deref())).collect();
    assert_eq!(
        lineages,
        [("ami-1", Some("i-1")), ("ami-2", Some("vol-of-snap-r")), ("ami-3", Some("ami-3"))]
    );
    let created = std::time::UNIX_EPOCH + Duration::from_secs(1_795_902_201);
    assert!(items.iter().all(|i| i.modified == Some(created)), "{items:?}");
    assert_eq!(roots.num_calls(), 1);
}

#[tokio::test]
async fn a_copy_not_visible_yet_is_waited_for() {
    let copy = mock!(Client::copy_image)
        .then_output(|| CopyImageOutput::builder().image_id("ami-c").build());
    let poll = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-c"])
        .sequence()
        .http_status(
            400,
            Some(error_xml("InvalidAMIID.NotFound", "The image id '[ami-c]' does not exist")),
        )
        .output(|| images(vec![copy_of("ami-1", "ami-c", ImageState::Available, &["snap-c"])]))
        .build();
    let snaps = describe_snaps(&["snap-c"], vec![snapshot("snap-c", None, provenance("ami-1"))]);
    let dest = sink(&[&lookup(vec![vec![]]), &copy, &poll, &snaps]);
    let receipt = dest.write(&item("ami-1"), reference("ami-1")).await.unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("ami-c"));
    assert_eq!((copy.num_calls(), poll.num_calls()), (1, 2));
}

#[tokio::test]
async fn a_token_answering_with_a_copy_gone_or_failed_moves_to_the_next_token() {
    // Escrow lists one failed copy (ami-f); an earlier one was deregistered
    // by hand. Token -1 answers with the deregistered copy (never found
    // again), token -2 with the failed one, token -3 makes a new copy.
    let failed = copy_of("ami-1", "ami-f", ImageState::Failed, &["snap-f"]);
    let copies = lookup(vec![vec![failed.clone()]]);
    let tokens = Calls::default();
    let seen = tokens.clone();
    let copy = mock!(Client::copy_image)
        .match_requests(move |r| {
            seen.lock().unwrap().push(format!(
                "{} {}",
                r.client_token().unwrap(),
                r.name().unwrap()
            ));
            true
        })
        .sequence()
        .output(|| CopyImageOutput::builder().image_id("ami-gone").build())
        .output(|| CopyImageOutput::builder().image_id("ami-f").build())
        .output(|| CopyImageOutput::builder().image_id("ami-new").build())
        .build();
    let gone = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-gone"])
        .then_output(|| images(vec![]));
    let poll = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-new"])
        .then_output(|| {
            images(vec![copy_of("ami-1", "ami-new", ImageState::Available, &["snap-n"])])
        });
    let snaps = describe_snaps(&["snap-n"], vec![snapshot("snap-n", None, provenance("ami-1"))]);
    let dest = AmiSink::from_client(ec2(&[&copies, &copy, &gone, &poll, &snaps]), "us-east-1")
        .with_wait(Duration::from_millis(30), Duration::from_millis(1));
    let receipt = dest.write(&item("ami-1"), reference("ami-1")).await.unwrap();
    assert_eq!(receipt.fingerprint.as_deref(), Some("ami-new"));
    assert_eq!(
        *tokens.lock().unwrap(),
        [
            "escrow-sync-ami-1-1 escrow-web 1-ami-1-retry1",
            "escrow-sync-ami-1-2 escrow-web 1-ami-1-retry2",
            "escrow-sync-ami-1-3 escrow-web 1-ami-1-retry3",
        ]
    );
}

#[tokio::test]
async fn deleting_a_copy_already_deregistered_removes_the_snapshots_it_left() {
    let copy = EscrowCopy {
        id: "ami-c1".into(),
        source: "ami-1".into(),
        lineage: "i-1".into(),
        created: CREATED_RFC3339.into(),
        complete: true,
        copied: None,
        job: None,
    };
    // The image is gone (a prune interrupted after DeregisterImage); another
    // copy of the same source still holds snap-keep, snap-p is in progress.
    let gone = mock!(Client::describe_images)
        .match_requests(|r| r.image_ids() == ["ami-c1"])
        .sequence()
        .http_status(
            400,
            Some(error_xml("InvalidAMIID.NotFound", "The image id '[ami-c1]' does not exist")),
        )
        .repeatedly()
        .build();
    let others =
        lookup(vec![vec![copy_of("ami-1", "ami-c2", ImageState::Available, &["snap-keep"])]]);
    let tagged = mock!(Client::describe_snapshots)
        .match_requests(|r| {
            r.owner_ids() == ["self"]
                && r.filters().iter().any(|f| {
                    f.name()
                        == Some(&format!("tag:{}", escrow_sync_core::tags::SOURCE_IMAGE_ID)[..])
                        && f.values() == ["ami-1"]
                })
        })
        .then_output(|| {
            let mut pending = snapshot("snap-p", None, provenance("ami-1"));
            pending.state = Some(SnapshotState::Pending);
            snapshots(vec![
                snapshot("snap-left1", None, provenance("ami-1")),
                snapshot("snap-keep", None, provenance("ami-1")),
                pending,
                snapshot("snap-left2", None, provenance("ami-1")),
            ])
        });
    let deleted = Calls::default();
    let seen = deleted.clone();
    // snap-left1 was deleted by the interrupted attempt already.
    let delete = mock!(Client::delete_snapshot)
        .match_requests(move |r| {
            seen.lock().unwrap().push(r.snapshot_id().unwrap().to_string());
            true
        })
        .sequence()
        .http_status(
            400,
            Some(error_xml(
                "InvalidSnapshot.NotFound",
                "The snapshot 'snap-left1' does not exist.",
            )),
        )
        .output(|| DeleteSnapshotOutput::builder().build())
        .build();
    let deregister =
        mock!(Client::deregister_image).then_output(|| DeregisterImageOutput::builder().build());
    let dest = sink(&[&gone, &others, &tagged, &delete, &deregister]);
    dest.delete_copy(&copy).await.unwrap();
    assert_eq!(*deleted.lock().unwrap(), ["snap-left1", "snap-left2"]);
    assert_eq!(deregister.num_calls(), 0);
}
