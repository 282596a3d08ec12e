//! Restoring Redshift snapshots from escrow into a recovery account.
//!
//! Redshift cannot copy a snapshot into another account: the escrow shares
//! its own manual snapshot (an independent copy) with the recovery account
//! (AuthorizeSnapshotAccess, escrow credentials), and the recovery account
//! restores a cluster from the share (RestoreFromClusterSnapshot with
//! OwnerAccount = the escrow account). An encrypted escrow snapshot is
//! restored only when the escrow key's policy lets the recovery account use
//! it. A share-only job's escrow holds no snapshot of its own, so nothing
//! of it can be restored from escrow.

use std::time::SystemTime;

use aws_sdk_redshift::Client;
use aws_sdk_redshift::types::Snapshot;

use async_trait::async_trait;
use escrow_sync_core::snapshot::{SnapshotCopy, SnapshotRestore};
use escrow_sync_core::tags;
use escrow_sync_core::{Error, ErrorKind, Result};

use crate::api::{code, rs_error, size_of, tag};

/// One available escrow snapshot (an independent copy) of a primary
/// snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowRedshiftSnapshot {
    /// The escrow snapshot's identifier.
    pub id: String,
    /// The cluster it was taken of (escrow's temporary restore cluster).
    pub cluster: Option<String>,
    /// The primary snapshot it is a copy of.
    pub source_id: String,
    /// The primary account it came from.
    pub source_account: Option<String>,
    /// The primary cluster the source was taken of.
    pub lineage: Option<String>,
    /// When the copy was made in escrow (its `escrow-sync:copied-at` tag,
    /// else its creation time).
    pub started: Option<SystemTime>,
    /// Its size in bytes (total backup size).
    pub bytes: u64,
    /// Whether it is encrypted.
    pub encrypted: bool,
    /// Its key, when encrypted.
    pub kms_key_id: Option<String>,
}

impl EscrowRedshiftSnapshot {
    fn from_snapshot(s: &Snapshot) -> Option<Self> {
        Some(EscrowRedshiftSnapshot {
            id: s.snapshot_identifier()?.to_string(),
            cluster: s.cluster_identifier().map(str::to_string),
            source_id: tag(s, tags::SOURCE_SNAPSHOT_ID)?.to_string(),
            source_account: tag(s, tags::SOURCE_ACCOUNT).map(str::to_string),
            lineage: tag(s, tags::LINEAGE).filter(|l| !l.is_empty()).map(str::to_string),
            started: tag(s, tags::COPIED_AT)
                .and_then(escrow_sync_core::time::parse_rfc3339)
                .or_else(|| s.snapshot_create_time().and_then(escrow_sync_aws::time::system_time)),
            bytes: size_of(s),
            encrypted: s.encrypted() == Some(true),
            kms_key_id: s.kms_key_id().map(str::to_string),
        })
    }
}

/// Every available escrow-sync snapshot the escrow account `escrow` owns
/// (manual, tagged [`escrow_sync_core::tags::SOURCE_SNAPSHOT_ID`]); snapshots other accounts share
/// with escrow are left out.
pub async fn escrow_snapshots(
    redshift: &Client,
    escrow: &str,
) -> Result<Vec<EscrowRedshiftSnapshot>> {
    let mut pages = redshift
        .describe_cluster_snapshots()
        .snapshot_type("manual")
        .tag_keys(tags::SOURCE_SNAPSHOT_ID)
        .into_paginator()
        .items()
        .send();
    let mut out = Vec::new();
    while let Some(s) = pages.next().await {
        let s = s.map_err(|e| {
            rs_error(e, "redshift:DescribeClusterSnapshots", "escrow redshift snapshots")
        })?;
        if s.owner_account().is_some_and(|o| o != escrow)
            || s.snapshot_type() != Some("manual")
            || s.status() != Some("available")
        {
            continue;
        }
        if let Some(c) = EscrowRedshiftSnapshot::from_snapshot(&s) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Per lineage (source cluster; the source snapshot where none is
/// recorded), the newest copy made at or before `at` (`None`: the newest),
/// in source-id order.
pub fn as_of(
    copies: Vec<EscrowRedshiftSnapshot>,
    at: Option<SystemTime>,
) -> Vec<EscrowRedshiftSnapshot> {
    let mut out = escrow_sync_core::newest_per_group(
        copies,
        at,
        |c| c.started,
        |c| c.lineage.clone().unwrap_or_else(|| c.source_id.clone()),
    );
    out.sort_by(|a, b| a.source_id.cmp(&b.source_id));
    out
}

/// Authorizes (`add`) `account` to restore the escrow snapshot, or revokes
/// it (AuthorizeSnapshotAccess / RevokeSnapshotAccess); a share already
/// there, or already gone, counts as done.
pub async fn set_shared(
    redshift: &Client,
    snapshot: &EscrowRedshiftSnapshot,
    account: &str,
    add: bool,
) -> Result<()> {
    let resource = format!("escrow redshift snapshot {}", snapshot.id);
    if add {
        let out = redshift
            .authorize_snapshot_access()
            .snapshot_identifier(&snapshot.id)
            .set_snapshot_cluster_identifier(snapshot.cluster.clone())
            .account_with_restore_access(account)
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if code(&e).as_deref() == Some("AuthorizationAlreadyExists") => Ok(()),
            Err(e) => Err(rs_error(e, "redshift:AuthorizeSnapshotAccess", resource)),
        }
    } else {
        let out = redshift
            .revoke_snapshot_access()
            .snapshot_identifier(&snapshot.id)
            .set_snapshot_cluster_identifier(snapshot.cluster.clone())
            .account_with_restore_access(account)
            .send()
            .await;
        match out {
            Ok(_) => Ok(()),
            Err(e) if code(&e).as_deref() == Some("AuthorizationNotFound") => Ok(()),
            Err(e) => Err(rs_error(e, "redshift:RevokeSnapshotAccess", resource)),
        }
    }
}

/// Checks, with the recovery account's client `target`, that it sees the
/// snapshot `id` that account `owner` shares with it, available: what a
/// restore from the share needs. Fails (kind NotFound) when it does not
/// see it, (kind Failed) when it is not available.
pub async fn check_visible(target: &Client, owner: &str, id: &str) -> Result<()> {
    let resource = format!("redshift snapshot {id} shared by account {owner}");
    let op = "redshift:DescribeClusterSnapshots";
    let out =
        target.describe_cluster_snapshots().owner_account(owner).snapshot_identifier(id).send();
    let found = match out.await {
        Ok(out) => out.snapshots.unwrap_or_default().into_iter().next(),
        Err(e) if code(&e).as_deref() == Some("ClusterSnapshotNotFound") => None,
        Err(e) => return Err(rs_error(e, op, resource)),
    };
    match found {
        Some(s) if s.status() == Some("available") => Ok(()),
        Some(s) => Err(Error::new(
            ErrorKind::Failed,
            op,
            resource,
            format!("the recovery account sees it {}, not available", s.status().unwrap_or("?")),
        )),
        None => Err(Error::new(
            ErrorKind::NotFound,
            op,
            resource,
            "the recovery account does not see the share",
        )),
    }
}

/// The [`SnapshotRestore`] of an `[[redshift]]` job with independent
/// copies: per source cluster, the newest escrow snapshot at or before the
/// time, shared with the recovery account (AuthorizeSnapshotAccess), which
/// restores a cluster from the share: Redshift cannot copy a snapshot into
/// another account. A drill shares, checks the recovery account sees each
/// snapshot available, and revokes the shares.
#[derive(Debug, Clone)]
pub struct RedshiftRestore {
    escrow: Client,
    target: Client,
    escrow_account: String,
    target_account: String,
    region: String,
    primary: String,
    ids: Vec<String>,
}

impl RedshiftRestore {
    /// Restores, in `region`, the escrow snapshots the escrow session holds
    /// of the primary account `primary`'s snapshots into the account of the
    /// `target` session (every one: narrow with [`Self::with_ids`]).
    pub fn new(
        escrow: &escrow_sync_aws::Session,
        target: &escrow_sync_aws::Session,
        region: &str,
        primary: &str,
    ) -> Self {
        Self::from_clients(
            crate::client(escrow),
            crate::client(target),
            escrow.account_id(),
            target.account_id(),
            region,
            primary,
        )
    }

    /// As [`Self::new`], from escrow's and the recovery account's clients
    /// and both accounts' ids.
    pub fn from_clients(
        escrow: Client,
        target: Client,
        escrow_account: &str,
        target_account: &str,
        region: &str,
        primary: &str,
    ) -> Self {
        RedshiftRestore {
            escrow,
            target,
            escrow_account: escrow_account.to_string(),
            target_account: target_account.to_string(),
            region: region.to_string(),
            primary: primary.to_string(),
            ids: Vec::new(),
        }
    }

    /// Only the copies of these source snapshots (empty: every copy, the
    /// job selecting by tags).
    pub fn with_ids(mut self, ids: &[String]) -> Self {
        self.ids = ids.to_vec();
        self
    }
}

#[async_trait]
impl SnapshotRestore for RedshiftRestore {
    type Copy = EscrowRedshiftSnapshot;

    fn target_account(&self) -> &str {
        &self.target_account
    }

    fn locations(&self, owner: &str) -> Vec<String> {
        vec![format!("redshift://{owner}/{}", self.region)]
    }

    async fn escrow_copies(&self, at: Option<SystemTime>) -> Result<Vec<EscrowRedshiftSnapshot>> {
        let copies: Vec<_> = escrow_snapshots(&self.escrow, &self.escrow_account)
            .await?
            .into_iter()
            .filter(|c| c.source_account.as_deref().is_none_or(|a| a == self.primary))
            .filter(|c| self.ids.is_empty() || self.ids.contains(&c.source_id))
            .collect();
        Ok(as_of(copies, at))
    }

    fn describe(&self, c: &EscrowRedshiftSnapshot) -> SnapshotCopy {
        SnapshotCopy::new(
            &c.id,
            &c.source_id,
            format!("escrow snapshot {}", c.id),
            "snapshots",
            c.bytes,
        )
    }

    fn notes(&self, copies: &[EscrowRedshiftSnapshot]) -> Vec<String> {
        let (primary, account) = (&self.primary, &self.target_account);
        let mut notes = Vec::new();
        if self.ids.is_empty() {
            notes.push(format!(
                "the job selects by tags: every escrow snapshot of a primary ({primary}) snapshot \
                 counts"
            ));
        }
        let mut keys: Vec<&str> =
            copies.iter().filter(|c| c.encrypted).filter_map(|c| c.kms_key_id.as_deref()).collect();
        keys.sort_unstable();
        keys.dedup();
        if !keys.is_empty() {
            notes.push(format!(
                "the escrow snapshots are encrypted with {}: the key's policy must grant account \
                 {account} kms:Decrypt, kms:DescribeKey and kms:CreateGrant for it to restore a \
                 cluster from the share",
                keys.join(", ")
            ));
        }
        notes
    }

    fn plan_note(&self, c: &EscrowRedshiftSnapshot) -> String {
        format!(
            "would share escrow snapshot {} (of {}) with account {}",
            c.id, c.source_id, self.target_account
        )
    }

    fn shared_note(&self, c: &EscrowRedshiftSnapshot) -> String {
        format!(
            "shared escrow snapshot {} (of {}): account {} restores a cluster from it \
             (RestoreFromClusterSnapshot with SnapshotIdentifier {} and OwnerAccount {})",
            c.id, c.source_id, self.target_account, c.id, self.escrow_account
        )
    }

    async fn share(&self, c: &EscrowRedshiftSnapshot) -> Result<()> {
        set_shared(&self.escrow, c, &self.target_account, true).await
    }

    async fn unshare(&self, c: &EscrowRedshiftSnapshot) -> Result<()> {
        set_shared(&self.escrow, c, &self.target_account, false).await
    }

    fn copies_across_accounts(&self) -> bool {
        false
    }

    fn refuse_copy(&self, job: &str) -> Option<Error> {
        Some(Error::invalid_config(format!(
            "job {job}: Redshift cannot copy a snapshot into another account, so --copy does not \
             apply: the recovery account restores a cluster from the share (drop --copy; --apply \
             shares the escrow snapshot, --drill checks the recovery account sees it)"
        )))
    }

    async fn check_share(&self, c: &EscrowRedshiftSnapshot) -> Result<()> {
        check_visible(&self.target, &self.escrow_account, &c.id).await
    }

    fn seen_note(&self, c: &EscrowRedshiftSnapshot) -> String {
        format!(
            "account {} saw escrow snapshot {} (of {}) shared and available",
            self.target_account, c.id, c.source_id
        )
    }

    fn left_behind(&self, left: &[String]) -> String {
        format!(
            "revoke account {}'s access to these escrow snapshots by hand \
             (RevokeSnapshotAccess): {}",
            self.target_account,
            left.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn copy(id: &str, source: &str, lineage: Option<&str>, secs: u64) -> EscrowRedshiftSnapshot {
        EscrowRedshiftSnapshot {
            id: id.into(),
            cluster: None,
            source_id: source.into(),
            source_account: None,
            lineage: lineage.map(str::to_string),
            started: Some(UNIX_EPOCH + Duration::from_secs(secs)),
            bytes: 0,
            encrypted: true,
            kms_key_id: None,
        }
    }

    #[test]
    fn the_newest_copy_per_cluster_at_the_time() {
        let copies = || {
            vec![
                copy("e1", "s1", Some("sales"), 100),
                copy("e2", "s2", Some("sales"), 200),
                copy("e3", "s3", None, 150),
            ]
        };
        let ids = |v: Vec<EscrowRedshiftSnapshot>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(as_of(copies(), None)), ["e2", "e3"]);
        let at = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(ids(as_of(copies(), at(160))), ["e1", "e3"]);
        assert!(as_of(copies(), at(50)).is_empty());
    }
}
