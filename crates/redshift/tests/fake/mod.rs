//! A small in-memory Redshift behind aws-smithy-mocks, for the two
//! accounts: the primary's snapshots (with the accounts authorized to
//! restore them), escrow's snapshots and clusters, and a log of every
//! mutating call. States advance one step per describe, so "creating"
//! becomes "available" after one poll unless a test says otherwise.
//!
//! The rules answer requests the way Redshift does (errors carry Redshift's
//! codes); the tests assert on the log and on the requests kept.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use aws_sdk_redshift::Client;
use aws_sdk_redshift::error::ErrorMetadata;
use aws_sdk_redshift::operation::authorize_snapshot_access::{
    AuthorizeSnapshotAccessError, AuthorizeSnapshotAccessOutput,
};
use aws_sdk_redshift::operation::copy_cluster_snapshot::{
    CopyClusterSnapshotError, CopyClusterSnapshotOutput,
};
use aws_sdk_redshift::operation::create_cluster_snapshot::{
    CreateClusterSnapshotError, CreateClusterSnapshotInput, CreateClusterSnapshotOutput,
};
use aws_sdk_redshift::operation::create_tags::CreateTagsOutput;
use aws_sdk_redshift::operation::delete_cluster::{DeleteClusterError, DeleteClusterOutput};
use aws_sdk_redshift::operation::delete_cluster_snapshot::{
    DeleteClusterSnapshotError, DeleteClusterSnapshotOutput,
};
use aws_sdk_redshift::operation::describe_cluster_snapshots::{
    DescribeClusterSnapshotsError, DescribeClusterSnapshotsOutput,
};
use aws_sdk_redshift::operation::describe_clusters::{
    DescribeClustersError, DescribeClustersOutput,
};
use aws_sdk_redshift::operation::restore_from_cluster_snapshot::{
    RestoreFromClusterSnapshotError, RestoreFromClusterSnapshotInput,
    RestoreFromClusterSnapshotOutput,
};
use aws_sdk_redshift::operation::revoke_snapshot_access::{
    RevokeSnapshotAccessError, RevokeSnapshotAccessOutput,
};
use aws_sdk_redshift::types::{AccountWithRestoreAccess, Cluster, RestoreStatus, Snapshot, Tag};
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};

pub const PRIMARY: &str = "111111111111";
pub const ESCROW: &str = "222222222222";
pub const REGION: &str = "us-east-1";
pub const ESCROW_KEY: &str = "arn:aws:kms:us-east-1:222222222222:key/escrow";
pub const PRIMARY_KEY: &str = "arn:aws:kms:us-east-1:111111111111:key/customer";
pub const AWS_MANAGED_KEY: &str = "arn:aws:kms:us-east-1:111111111111:key/aws-redshift";

/// A snapshot and the states it goes through next.
#[derive(Debug, Clone)]
pub struct Snap {
    pub snapshot: Snapshot,
    pub next: VecDeque<String>,
    pub authorized: BTreeSet<String>,
}

/// An escrow cluster and the states it goes through next.
#[derive(Debug, Clone)]
pub struct Clu {
    pub status: String,
    pub next: VecDeque<String>,
    pub kms_key_id: Option<String>,
}

#[derive(Debug, Default)]
pub struct World {
    pub primary: BTreeMap<String, Snap>,
    pub escrow: BTreeMap<String, Snap>,
    pub clusters: BTreeMap<String, Clu>,
    /// Mutating calls, e.g. `restore escrow-sync-restore-...`.
    pub calls: Vec<String>,
    /// States a restored cluster goes through (default creating, available).
    pub restore_states: Vec<String>,
    /// States a new escrow snapshot goes through (default creating, available).
    pub snapshot_states: Vec<String>,
    /// CreateClusterSnapshot answers ClusterSnapshotQuotaExceeded this often first.
    pub quota_failures: u32,
    pub restores: Vec<RestoreFromClusterSnapshotInput>,
    pub creates: Vec<CreateClusterSnapshotInput>,
}

pub type Shared = Arc<Mutex<World>>;

pub fn world() -> Shared {
    Arc::new(Mutex::new(World::default()))
}

impl World {
    pub fn mutations(&self) -> Vec<String> {
        self.calls.clone()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.calls.iter().filter(|c| c.starts_with(prefix)).count()
    }
}

/// A snapshot `id` of `cluster` owned by `owner`.
pub fn snapshot(id: &str, cluster: &str, kind: &str, owner: &str) -> Snapshot {
    Snapshot::builder()
        .snapshot_identifier(id)
        .cluster_identifier(cluster)
        .snapshot_type(kind)
        .status("available")
        .owner_account(owner)
        .node_type("ra3.xlplus")
        .number_of_nodes(2)
        .total_backup_size_in_mega_bytes(10.0)
        .snapshot_create_time(aws_smithy_types::DateTime::from_secs(1_700_000_000))
        .build()
}

pub fn with_tags(mut s: Snapshot, tags: &[(&str, &str)]) -> Snapshot {
    let mut all = s.tags.take().unwrap_or_default();
    all.extend(tags.iter().map(|(k, v)| Tag::builder().key(*k).value(*v).build()));
    s.tags = Some(all);
    s
}

pub fn encrypted(mut s: Snapshot, key: &str) -> Snapshot {
    s.encrypted = Some(true);
    s.kms_key_id = Some(key.to_string());
    s
}

pub fn snap(snapshot: Snapshot) -> Snap {
    Snap { snapshot, next: VecDeque::new(), authorized: BTreeSet::new() }
}

fn meta(code: &str, message: &str) -> ErrorMetadata {
    ErrorMetadata::builder().code(code).message(message).build()
}

/// Returns the snapshot as it is now (with the accounts authorized to
/// restore it), then moves it to its next state.
fn observe(s: &mut Snap) -> Snapshot {
    let mut now = s.snapshot.clone();
    now.accounts_with_restore_access = (!s.authorized.is_empty()).then(|| {
        s.authorized
            .iter()
            .map(|a| AccountWithRestoreAccess::builder().account_id(a).build())
            .collect()
    });
    if let Some(next) = s.next.pop_front() {
        s.snapshot.status = Some(next);
    }
    now
}

fn observe_cluster(id: &str, c: &mut Clu) -> Cluster {
    let now = Cluster::builder()
        .cluster_identifier(id)
        .cluster_status(&c.status)
        .encrypted(c.kms_key_id.is_some())
        .set_kms_key_id(c.kms_key_id.clone())
        .restore_status(
            RestoreStatus::builder()
                .status(match c.status.as_str() {
                    "available" => "completed",
                    "incompatible-restore" => "failed",
                    _ => "restoring",
                })
                .build(),
        )
        .build();
    if let Some(next) = c.next.pop_front() {
        c.status = next;
    }
    now
}

fn last_of_arn(arn: &str) -> String {
    arn.rsplit(['/', ':']).next().unwrap_or_default().to_string()
}

/// The reader role's client in the primary.
pub fn primary_client(w: &Shared) -> Client {
    let w1 = w.clone();
    let describe = mock!(Client::describe_cluster_snapshots).then_compute_response(move |r| {
        let mut w = w1.lock().unwrap();
        assert!(r.owner_account().is_none_or(|o| o == PRIMARY), "the primary lists its own");
        match r.snapshot_identifier() {
            Some(id) => match w.primary.get_mut(id) {
                Some(s) => MockResponse::Output(
                    DescribeClusterSnapshotsOutput::builder().snapshots(observe(s)).build(),
                ),
                None => MockResponse::Error(DescribeClusterSnapshotsError::generic(meta(
                    "ClusterSnapshotNotFound",
                    "Snapshot not found",
                ))),
            },
            None => MockResponse::Output(
                DescribeClusterSnapshotsOutput::builder()
                    .set_snapshots(Some(w.primary.values_mut().map(observe).collect()))
                    .build(),
            ),
        }
    });
    let w2 = w.clone();
    let authorize = mock!(Client::authorize_snapshot_access).then_compute_response(move |r| {
        let mut w = w2.lock().unwrap();
        let id = r.snapshot_identifier().unwrap_or_default().to_string();
        let account = r.account_with_restore_access().unwrap_or_default().to_string();
        w.calls.push(format!("authorize {id} {account}"));
        let Some(s) = w.primary.get_mut(&id) else {
            return MockResponse::Error(AuthorizeSnapshotAccessError::generic(meta(
                "ClusterSnapshotNotFound",
                "Snapshot not found",
            )));
        };
        if s.snapshot.snapshot_type() != Some("manual") {
            return MockResponse::Error(AuthorizeSnapshotAccessError::generic(meta(
                "InvalidClusterSnapshotState",
                "only manual snapshots can be shared",
            )));
        }
        if !s.authorized.insert(account) {
            return MockResponse::Error(AuthorizeSnapshotAccessError::generic(meta(
                "AuthorizationAlreadyExists",
                "already authorized",
            )));
        }
        MockResponse::Output(
            AuthorizeSnapshotAccessOutput::builder().snapshot(s.snapshot.clone()).build(),
        )
    });
    let w3 = w.clone();
    let revoke = mock!(Client::revoke_snapshot_access).then_compute_response(move |r| {
        let mut w = w3.lock().unwrap();
        let id = r.snapshot_identifier().unwrap_or_default().to_string();
        let account = r.account_with_restore_access().unwrap_or_default().to_string();
        w.calls.push(format!("revoke {id} {account}"));
        let removed = w.primary.get_mut(&id).filter(|s| s.authorized.contains(&account)).map(|s| {
            s.authorized.remove(&account);
            s.snapshot.clone()
        });
        match removed {
            Some(snapshot) => MockResponse::Output(
                RevokeSnapshotAccessOutput::builder().snapshot(snapshot).build(),
            ),
            None => MockResponse::Error(RevokeSnapshotAccessError::generic(meta(
                "AuthorizationNotFound",
                "not authorized",
            ))),
        }
    });
    let w4 = w.clone();
    let copy = mock!(Client::copy_cluster_snapshot).then_compute_response(move |r| {
        let mut w = w4.lock().unwrap();
        let source = r.source_snapshot_identifier().unwrap_or_default().to_string();
        let target = r.target_snapshot_identifier().unwrap_or_default().to_string();
        w.calls.push(format!("copy {source} {target}"));
        if w.primary.contains_key(&target) {
            return MockResponse::Error(CopyClusterSnapshotError::generic(meta(
                "ClusterSnapshotAlreadyExists",
                "exists",
            )));
        }
        let Some(original) = w.primary.get(&source).cloned() else {
            return MockResponse::Error(CopyClusterSnapshotError::generic(meta(
                "ClusterSnapshotNotFound",
                "Snapshot not found",
            )));
        };
        let mut s = original.snapshot.clone();
        s.snapshot_identifier = Some(target.clone());
        s.snapshot_type = Some("manual".into());
        s.status = Some("creating".into());
        s.tags = None;
        let out = s.clone();
        w.primary.insert(
            target,
            Snap {
                snapshot: s,
                next: VecDeque::from(["available".to_string()]),
                authorized: BTreeSet::new(),
            },
        );
        MockResponse::Output(CopyClusterSnapshotOutput::builder().snapshot(out).build())
    });
    let w5 = w.clone();
    let tags = mock!(Client::create_tags).then_compute_output(move |r| {
        let mut w = w5.lock().unwrap();
        let id = last_of_arn(r.resource_name().unwrap_or_default());
        w.calls.push(format!("tag {id}"));
        if let Some(s) = w.primary.get_mut(&id) {
            let mut all = s.snapshot.tags.take().unwrap_or_default();
            all.extend(r.tags().iter().cloned());
            s.snapshot.tags = Some(all);
        }
        CreateTagsOutput::builder().build()
    });
    mock_client!(
        aws_sdk_redshift,
        RuleMode::MatchAny,
        [&describe, &authorize, &revoke, &copy, &tags]
    )
}

fn states(configured: &[String]) -> (String, VecDeque<String>) {
    let mut all: VecDeque<String> = if configured.is_empty() {
        VecDeque::from(["creating".to_string(), "available".to_string()])
    } else {
        configured.iter().cloned().collect()
    };
    let first = all.pop_front().unwrap_or_else(|| "available".into());
    (first, all)
}

/// The escrow operator's client.
pub fn escrow_client(w: &Shared) -> Client {
    escrow_client_with(w, &[])
}

/// The escrow operator's client, with extra rules tried first.
pub fn escrow_client_with(w: &Shared, extra: &[&Rule]) -> Client {
    let w1 = w.clone();
    let describe = mock!(Client::describe_cluster_snapshots).then_compute_response(move |r| {
        let mut w = w1.lock().unwrap();
        let shared = r.owner_account().is_some_and(|o| o != ESCROW);
        let not_found = || {
            MockResponse::Error(DescribeClusterSnapshotsError::generic(meta(
                "ClusterSnapshotNotFound",
                "Snapshot not found",
            )))
        };
        if shared {
            let visible = |s: &Snap| s.authorized.contains(ESCROW);
            return match r.snapshot_identifier() {
                Some(id) => match w.primary.get_mut(id) {
                    Some(s) if visible(s) => MockResponse::Output(
                        DescribeClusterSnapshotsOutput::builder().snapshots(observe(s)).build(),
                    ),
                    _ => not_found(),
                },
                None => MockResponse::Output(
                    DescribeClusterSnapshotsOutput::builder()
                        .set_snapshots(Some(
                            w.primary.values_mut().filter(|s| visible(s)).map(observe).collect(),
                        ))
                        .build(),
                ),
            };
        }
        match r.snapshot_identifier() {
            Some(id) => match w.escrow.get_mut(id) {
                Some(s) => MockResponse::Output(
                    DescribeClusterSnapshotsOutput::builder().snapshots(observe(s)).build(),
                ),
                None => not_found(),
            },
            None => {
                let kind = r.snapshot_type().map(str::to_string);
                let list = w
                    .escrow
                    .values_mut()
                    .filter(|s| kind.is_none() || s.snapshot.snapshot_type() == kind.as_deref())
                    .map(observe)
                    .collect();
                MockResponse::Output(
                    DescribeClusterSnapshotsOutput::builder().set_snapshots(Some(list)).build(),
                )
            }
        }
    });
    let w2 = w.clone();
    let clusters = mock!(Client::describe_clusters).then_compute_response(move |r| {
        let mut w = w2.lock().unwrap();
        match r.cluster_identifier() {
            Some(id) => match w.clusters.get_mut(id) {
                Some(c) => MockResponse::Output(
                    DescribeClustersOutput::builder().clusters(observe_cluster(id, c)).build(),
                ),
                None => MockResponse::Error(DescribeClustersError::generic(meta(
                    "ClusterNotFound",
                    "Cluster not found",
                ))),
            },
            None => MockResponse::Output(
                DescribeClustersOutput::builder()
                    .set_clusters(Some(
                        w.clusters
                            .iter()
                            .map(|(id, c)| {
                                Cluster::builder()
                                    .cluster_identifier(id)
                                    .cluster_status(&c.status)
                                    .build()
                            })
                            .collect(),
                    ))
                    .build(),
            ),
        }
    });
    let w3 = w.clone();
    let restore = mock!(Client::restore_from_cluster_snapshot).then_compute_response(move |r| {
        let mut w = w3.lock().unwrap();
        let id = r.cluster_identifier().unwrap_or_default().to_string();
        w.calls.push(format!("restore {id}"));
        w.restores.push(r.clone());
        if w.clusters.contains_key(&id) {
            return MockResponse::Error(RestoreFromClusterSnapshotError::generic(meta(
                "ClusterAlreadyExists",
                "exists",
            )));
        }
        let source = r.snapshot_identifier().unwrap_or_default();
        let visible = r.owner_account() == Some(PRIMARY)
            && w.primary.get(source).is_some_and(|s| s.authorized.contains(ESCROW));
        if !visible {
            return MockResponse::Error(RestoreFromClusterSnapshotError::generic(meta(
                "ClusterSnapshotNotFound",
                "Snapshot not found",
            )));
        }
        let (status, next) = states(&w.restore_states);
        let kms_key_id = r.kms_key_id().map(str::to_string);
        w.clusters.insert(id.clone(), Clu { status, next, kms_key_id });
        MockResponse::Output(
            RestoreFromClusterSnapshotOutput::builder()
                .cluster(
                    Cluster::builder().cluster_identifier(id).cluster_status("creating").build(),
                )
                .build(),
        )
    });
    let w4 = w.clone();
    let create = mock!(Client::create_cluster_snapshot).then_compute_response(move |r| {
        let mut w = w4.lock().unwrap();
        let id = r.snapshot_identifier().unwrap_or_default().to_string();
        let cluster = r.cluster_identifier().unwrap_or_default().to_string();
        w.creates.push(r.clone());
        if w.quota_failures > 0 {
            w.quota_failures -= 1;
            return MockResponse::Error(CreateClusterSnapshotError::generic(meta(
                "ClusterSnapshotQuotaExceeded",
                "The request would result in the user exceeding the allowed number of cluster \
                 snapshots",
            )));
        }
        w.calls.push(format!("snapshot {id}"));
        if w.escrow.contains_key(&id) {
            return MockResponse::Error(CreateClusterSnapshotError::generic(meta(
                "ClusterSnapshotAlreadyExists",
                "exists",
            )));
        }
        let Some(kms) = w.clusters.get(&cluster).map(|c| c.kms_key_id.clone()) else {
            return MockResponse::Error(CreateClusterSnapshotError::generic(meta(
                "ClusterNotFound",
                "Cluster not found",
            )));
        };
        let (status, next) = states(&w.snapshot_states);
        let mut s = snapshot(&id, &cluster, "manual", ESCROW);
        s.status = Some(status);
        s.tags = Some(r.tags().to_vec());
        s.manual_snapshot_retention_period = r.manual_snapshot_retention_period();
        s.encrypted = Some(kms.is_some());
        s.kms_key_id = kms;
        s.snapshot_create_time =
            Some(aws_smithy_types::DateTime::from_secs(1_700_000_000 + w.escrow.len() as i64 + 1));
        let out = s.clone();
        w.escrow.insert(id, Snap { snapshot: s, next, authorized: BTreeSet::new() });
        MockResponse::Output(CreateClusterSnapshotOutput::builder().snapshot(out).build())
    });
    let w5 = w.clone();
    let delete = mock!(Client::delete_cluster).then_compute_response(move |r| {
        let mut w = w5.lock().unwrap();
        let id = r.cluster_identifier().unwrap_or_default().to_string();
        assert_eq!(r.skip_final_cluster_snapshot(), Some(true), "no final snapshot");
        w.calls.push(format!("delete-cluster {id}"));
        match w.clusters.remove(&id) {
            Some(_) => MockResponse::Output(DeleteClusterOutput::builder().build()),
            None => MockResponse::Error(DeleteClusterError::generic(meta(
                "ClusterNotFound",
                "Cluster not found",
            ))),
        }
    });
    let w6 = w.clone();
    let tags = mock!(Client::create_tags).then_compute_output(move |r| {
        let mut w = w6.lock().unwrap();
        w.calls.push(format!("tag {}", last_of_arn(r.resource_name().unwrap_or_default())));
        CreateTagsOutput::builder().build()
    });
    let w7 = w.clone();
    let delete_snapshot = mock!(Client::delete_cluster_snapshot).then_compute_response(move |r| {
        let mut w = w7.lock().unwrap();
        let id = r.snapshot_identifier().unwrap_or_default().to_string();
        w.calls.push(format!("delete-snapshot {id}"));
        match w.escrow.remove(&id) {
            Some(_) => MockResponse::Output(DeleteClusterSnapshotOutput::builder().build()),
            None => MockResponse::Error(DeleteClusterSnapshotError::generic(meta(
                "ClusterSnapshotNotFound",
                "Snapshot not found",
            ))),
        }
    });
    let mut rules: Vec<&Rule> = extra.to_vec();
    rules.extend([&describe, &clusters, &restore, &create, &delete, &tags, &delete_snapshot]);
    mock_client!(aws_sdk_redshift, RuleMode::MatchAny, rules)
}

/// A KMS client whose keys are customer-managed, except [`AWS_MANAGED_KEY`].
pub fn kms() -> aws_sdk_kms::Client {
    use aws_sdk_kms::operation::describe_key::DescribeKeyOutput;
    use aws_sdk_kms::types::{KeyManagerType, KeyMetadata};
    let rule = mock!(aws_sdk_kms::Client::describe_key).then_compute_output(|r| {
        let key = r.key_id().unwrap_or_default();
        let manager =
            if key == AWS_MANAGED_KEY { KeyManagerType::Aws } else { KeyManagerType::Customer };
        DescribeKeyOutput::builder()
            .key_metadata(KeyMetadata::builder().key_id(key).key_manager(manager).build().unwrap())
            .build()
    });
    mock_client!(aws_sdk_kms, RuleMode::MatchAny, [&rule])
}

/// The value of tag `key` on `s`.
pub fn tag_of<'a>(s: &'a Snapshot, key: &str) -> Option<&'a str> {
    s.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}
