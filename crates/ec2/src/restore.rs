//! Restoring EBS snapshots from escrow into a recovery account: the escrow
//! copy is shared with the recovery account (escrow credentials), copied
//! there (the recovery account's credentials), waited on, and unshared.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{ResourceType, SnapshotState, Tag, TagSpecification};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::Result;

use crate::snapshots::{
    LINEAGE_TAG, SOURCE_SNAPSHOT_TAG, escrow_copies, share_snapshot, system_time, wait_snapshot,
};

/// The tag on a recovered copy naming the escrow copy it came from.
pub const RESTORED_FROM_TAG: &str = "escrow-sync:restored-from";

const SOURCE_ACCOUNT_TAG: &str = "escrow-sync:source-account";

/// One completed escrow copy of a primary snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowSnapshot {
    /// The escrow copy's id.
    pub id: String,
    /// The primary snapshot it is a copy of.
    pub source_id: String,
    /// The primary account it came from.
    pub source_account: Option<String>,
    /// Its lineage (the source volume), when recorded.
    pub lineage: Option<String>,
    /// When the copy was started in escrow.
    pub started: Option<SystemTime>,
    /// The volume size in GiB.
    pub size_gib: i32,
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// Every completed escrow-sync copy the escrow account holds.
pub async fn escrow_snapshots(ec2: &Client) -> Result<Vec<EscrowSnapshot>> {
    let all = escrow_copies(ec2).await?;
    Ok(all
        .iter()
        .filter(|s| s.state() == Some(&SnapshotState::Completed))
        .filter_map(|s| {
            Some(EscrowSnapshot {
                id: s.snapshot_id()?.to_string(),
                source_id: tag(s.tags(), SOURCE_SNAPSHOT_TAG)?.to_string(),
                source_account: tag(s.tags(), SOURCE_ACCOUNT_TAG).map(str::to_string),
                lineage: tag(s.tags(), LINEAGE_TAG).map(str::to_string),
                started: s.start_time().and_then(system_time),
                size_gib: s.volume_size().unwrap_or(0),
            })
        })
        .collect())
}

/// Per lineage (source volume; the source snapshot where none is
/// recorded), the newest copy started at or before `at` (`None`: the
/// newest), in source-id order.
pub fn as_of(copies: Vec<EscrowSnapshot>, at: Option<SystemTime>) -> Vec<EscrowSnapshot> {
    let mut newest: BTreeMap<String, EscrowSnapshot> = BTreeMap::new();
    for c in copies {
        if let (Some(at), Some(started)) = (at, c.started)
            && started > at
        {
            continue;
        }
        let lineage = c.lineage.clone().unwrap_or_else(|| c.source_id.clone());
        match newest.get(&lineage) {
            Some(n) if n.started >= c.started => {}
            _ => {
                newest.insert(lineage, c);
            }
        }
    }
    let mut out: Vec<EscrowSnapshot> = newest.into_values().collect();
    out.sort_by(|a, b| a.source_id.cmp(&b.source_id));
    out
}

/// Shares (`add`) or unshares the escrow copy `id` with `account`.
pub async fn set_shared(ec2: &Client, id: &str, account: &str, add: bool) -> Result<()> {
    share_snapshot(ec2, id, account, add, &format!("escrow snapshot {id}")).await
}

/// Starts copying the shared escrow snapshot `id` (in `region`) into the
/// account of `ec2` (the recovery account), encrypted with its default EBS
/// key or `kms_key_id`, tagged with where it came from; returns the new
/// snapshot's id (wait for it with [`wait_completed`]).
pub async fn start_copy(
    ec2: &Client,
    id: &str,
    region: &str,
    kms_key_id: Option<String>,
) -> Result<String> {
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::Snapshot)
        .tags(Tag::builder().key(RESTORED_FROM_TAG).value(id).build())
        .build();
    let out = ec2
        .copy_snapshot()
        .source_snapshot_id(id)
        .source_region(region)
        .encrypted(true)
        .set_kms_key_id(kms_key_id)
        .description(format!("escrow-sync restore of escrow snapshot {id}"))
        .tag_specifications(tags)
        .send()
        .await
        .map_err(|e| sdk_error(e, "ec2:CopySnapshot", format!("snapshot {id}")))?;
    Ok(out.snapshot_id().unwrap_or_default().to_string())
}

/// Waits until snapshot `copy` of the account of `ec2` is completed (at
/// most `timeout`, polling from 1 s up to every `max_poll`); returns its
/// volume size in GiB.
pub async fn wait_completed(
    ec2: &Client,
    copy: &str,
    timeout: Duration,
    max_poll: Duration,
) -> Result<i32> {
    let s = wait_snapshot(ec2, copy, timeout, max_poll, &format!("recovered copy {copy}")).await?;
    Ok(s.volume_size().unwrap_or(0))
}

/// Deletes snapshot `id` of the account of `ec2` (a drill's own copy).
pub async fn delete_snapshot(ec2: &Client, id: &str) -> Result<()> {
    ec2.delete_snapshot()
        .snapshot_id(id)
        .send()
        .await
        .map_err(|e| sdk_error(e, "ec2:DeleteSnapshot", format!("snapshot {id}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn copy(id: &str, source: &str, lineage: Option<&str>, secs: u64) -> EscrowSnapshot {
        EscrowSnapshot {
            id: id.into(),
            source_id: source.into(),
            source_account: None,
            lineage: lineage.map(str::to_string),
            started: Some(UNIX_EPOCH + Duration::from_secs(secs)),
            size_gib: 1,
        }
    }

    #[test]
    fn the_newest_copy_per_lineage_at_the_time() {
        let copies = || {
            vec![
                copy("e1", "s1", Some("vol-a"), 100),
                copy("e2", "s2", Some("vol-a"), 200),
                copy("e3", "s3", None, 150),
            ]
        };
        let ids = |v: Vec<EscrowSnapshot>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(as_of(copies(), None)), ["e2", "e3"]);
        let at = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(ids(as_of(copies(), at(160))), ["e1", "e3"]);
        assert_eq!(ids(as_of(copies(), at(120))), ["e1"]);
        assert!(as_of(copies(), at(50)).is_empty());
    }
}
