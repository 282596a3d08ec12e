//! Restoring RDS DB snapshots and Aurora cluster snapshots from escrow into
//! a recovery account: the escrow copy is shared with the recovery account
//! (its `restore` attribute, escrow credentials), copied there by its ARN
//! (the recovery account's credentials) under the recovery account's own
//! key, waited on, and unshared.
//!
//! An escrow copy is encrypted with the escrow key, so the recovery account
//! can copy (or restore) it only when that key's policy lets the recovery
//! account use it (kms:Decrypt, kms:DescribeKey, kms:CreateGrant): the same
//! grant the primary's key gives the escrow account in the escrow direction.

use std::time::{Duration, SystemTime};

use aws_sdk_rds::Client;
use aws_sdk_rds::types::Tag;
use futures::StreamExt;

use async_trait::async_trait;
use escrow_sync_aws::time::system_time;
use escrow_sync_core::Result;
use escrow_sync_core::snapshot::{RecoveredCopy, SnapshotCopy, SnapshotRestore};
use escrow_sync_core::tags;
use escrow_sync_core::time::parse_rfc3339;

use crate::api::{Rds, RdsKind, Snap, copy_error, identifier};

/// The key a copy in the recovery account is encrypted with: that account's
/// own AWS-managed RDS key (any key of the recovery account will do; this
/// one exists in every account).
pub const RECOVERY_KEY: &str = "alias/aws/rds";

/// One available escrow copy of a primary DB snapshot or cluster snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowRdsSnapshot {
    /// DB snapshot or cluster snapshot.
    pub kind: RdsKind,
    /// The escrow copy's identifier.
    pub id: String,
    /// The escrow copy's ARN (how another account names it).
    pub arn: String,
    /// The primary snapshot it is a copy of.
    pub source_id: String,
    /// The primary account it came from.
    pub source_account: Option<String>,
    /// The DB instance or cluster the source was taken of.
    pub lineage: String,
    /// When the copy was made in escrow (its `escrow-sync:copied-at` tag,
    /// else its creation time).
    pub started: Option<SystemTime>,
    /// Allocated storage in GiB.
    pub gib: u64,
    /// The engine.
    pub engine: String,
    /// Whether it is encrypted.
    pub encrypted: bool,
    /// Its key, when encrypted.
    pub kms_key_id: Option<String>,
}

/// A copy in the recovery account, once available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredRdsSnapshot {
    /// Its identifier.
    pub id: String,
    /// Its status (`available`).
    pub status: String,
    /// Allocated storage in GiB.
    pub gib: u64,
    /// The engine.
    pub engine: String,
}

impl EscrowRdsSnapshot {
    fn from_snap(kind: RdsKind, s: Snap) -> Option<Self> {
        let source_id = s.tags.get(tags::SOURCE_SNAPSHOT_ID)?.clone();
        let tag = |k: &str| s.tags.get(k).filter(|v| !v.is_empty()).cloned();
        Some(EscrowRdsSnapshot {
            kind,
            started: tag(tags::COPIED_AT)
                .and_then(|t| parse_rfc3339(&t))
                .or_else(|| s.created.as_ref().and_then(system_time)),
            source_account: tag(tags::SOURCE_ACCOUNT),
            lineage: tag(tags::LINEAGE).unwrap_or_else(|| s.lineage.clone()),
            source_id,
            id: s.id,
            arn: s.arn,
            gib: s.gib,
            engine: s.engine,
            encrypted: s.encrypted,
            kms_key_id: s.kms_key_id,
        })
    }
}

/// Every available escrow-sync copy of `kind` the escrow account of `rds`
/// holds (its own manual snapshots tagged [`escrow_sync_core::tags::SOURCE_SNAPSHOT_ID`]).
pub async fn escrow_snapshots(rds: &Client, kind: RdsKind) -> Result<Vec<EscrowRdsSnapshot>> {
    let api = Rds::new(rds.clone(), kind);
    let listed: Vec<Result<Snap>> =
        api.list(&[], true, format!("escrow {}s", kind.noun())).collect().await;
    let mut out = Vec::new();
    for s in listed {
        let s = s?;
        if s.is_available()
            && let Some(c) = EscrowRdsSnapshot::from_snap(kind, s)
        {
            out.push(c);
        }
    }
    Ok(out)
}

/// Per lineage (source DB instance or cluster), the newest copy made at or
/// before `at` (`None`: the newest), in source-id order.
pub fn as_of(copies: Vec<EscrowRdsSnapshot>, at: Option<SystemTime>) -> Vec<EscrowRdsSnapshot> {
    let lineage = |c: &EscrowRdsSnapshot| {
        if c.lineage.is_empty() { c.source_id.clone() } else { c.lineage.clone() }
    };
    let mut out = escrow_sync_core::newest_per_group(copies, at, |c| c.started, lineage);
    out.sort_by(|a, b| a.source_id.cmp(&b.source_id));
    out
}

/// Adds `account` to (`add`) or removes it from the `restore` attribute of
/// the escrow snapshot `id`: the share.
pub async fn set_shared(
    rds: &Client,
    kind: RdsKind,
    id: &str,
    account: &str,
    add: bool,
) -> Result<()> {
    let resource = format!("escrow {} {id}", kind.noun());
    Rds::new(rds.clone(), kind).share(id, account, add, &resource).await
}

/// The identifier of a recovered copy of escrow snapshot `escrow_id`, made
/// at `stamp` (digits: identifiers are unique per account, and a drill may
/// follow an `--apply --copy` of the same snapshot).
pub fn recovery_identifier(escrow_id: &str, stamp: &str) -> String {
    identifier("restored-", &format!("{escrow_id}-{stamp}"))
}

/// What a recovery copy needs granted when a key is out of reach.
const RECOVERY_COPY_KEYS: &str = "a KMS key is not accessible: the escrow key that encrypts the \
     shared snapshot must grant the recovery account kms:Decrypt, kms:DescribeKey and \
     kms:CreateGrant (a grant in the escrow key's policy), and the recovery account's own key \
     must be usable by the recovery role";

/// Starts copying the shared escrow snapshot `source_arn` into the account
/// of `rds` (the recovery account) as `target_id`, encrypted with
/// `kms_key_id` (a key of the recovery account; RDS needs one to copy an
/// encrypted snapshot another account shares, and refuses one for an
/// unencrypted Aurora cluster snapshot), tagged [`escrow_sync_core::tags::RESTORED_FROM`] =
/// `source_arn` and nothing else. Returns the copy's identifier; wait for
/// it with [`wait_available`].
pub async fn start_copy(
    rds: &Client,
    kind: RdsKind,
    source_arn: &str,
    target_id: &str,
    kms_key_id: Option<&str>,
) -> Result<String> {
    let op = kind.op("rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot");
    let resource = format!("escrow {} {source_arn}", kind.noun());
    let tags = vec![Tag::builder().key(tags::RESTORED_FROM).value(source_arn).build()];
    let kms = kms_key_id.map(str::to_string);
    let copied = match kind {
        RdsKind::Db => rds
            .copy_db_snapshot()
            .source_db_snapshot_identifier(source_arn)
            .target_db_snapshot_identifier(target_id)
            .set_kms_key_id(kms)
            .set_tags(Some(tags))
            .copy_tags(false)
            .send()
            .await
            .map_err(|e| copy_error(e, op, &resource, RECOVERY_COPY_KEYS))?
            .db_snapshot
            .and_then(|s| s.db_snapshot_identifier),
        RdsKind::Cluster => rds
            .copy_db_cluster_snapshot()
            .source_db_cluster_snapshot_identifier(source_arn)
            .target_db_cluster_snapshot_identifier(target_id)
            .set_kms_key_id(kms)
            .set_tags(Some(tags))
            .copy_tags(false)
            .send()
            .await
            .map_err(|e| copy_error(e, op, &resource, RECOVERY_COPY_KEYS))?
            .db_cluster_snapshot
            .and_then(|s| s.db_cluster_snapshot_identifier),
    };
    Ok(copied.unwrap_or_else(|| target_id.to_string()))
}

/// Waits until snapshot `id` of the account of `rds` is available (at most
/// `timeout`, polling from 1 s up to every `max_poll`); fails when it ends
/// in a failed state, with the message RDS recorded.
pub async fn wait_available(
    rds: &Client,
    kind: RdsKind,
    id: &str,
    timeout: Duration,
    max_poll: Duration,
) -> Result<RecoveredRdsSnapshot> {
    let resource = format!("recovered {} {id}", kind.noun());
    let s = Rds::new(rds.clone(), kind).wait(id, timeout, max_poll, &resource).await?;
    Ok(RecoveredRdsSnapshot { id: s.id, status: s.status, gib: s.gib, engine: s.engine })
}

/// What differs between the escrow copy and its recovered copy (status,
/// allocated storage, engine), if anything.
pub fn mismatch(escrow: &EscrowRdsSnapshot, copy: &RecoveredRdsSnapshot) -> Option<String> {
    let mut out = Vec::new();
    if copy.status != "available" {
        out.push(format!("status {}", copy.status));
    }
    if copy.gib != escrow.gib {
        out.push(format!("{} GiB allocated, the escrow copy {} GiB", copy.gib, escrow.gib));
    }
    if copy.engine != escrow.engine {
        out.push(format!("engine {}, the escrow copy's {}", copy.engine, escrow.engine));
    }
    (!out.is_empty()).then(|| format!("the copy {} has {}", copy.id, out.join(", ")))
}

/// Deletes snapshot `id` of the account of `rds` (a drill's own copy); one
/// already gone counts as deleted.
pub async fn delete_snapshot(rds: &Client, kind: RdsKind, id: &str) -> Result<()> {
    let api = Rds::new(rds.clone(), kind);
    let resource = format!("recovered {} {id}", kind.noun());
    match api.delete(id, &resource).await {
        Err(e) if e.kind() == escrow_sync_core::ErrorKind::NotFound => Ok(()),
        done => done,
    }
}

const GIB: u64 = 1 << 30;

/// The longest pause between two looks at a copy in progress, by default.
pub const MAX_POLL: Duration = Duration::from_secs(30);

/// How long a copy into the recovery account is waited for, by default.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// The milliseconds since 1970, as digits: what makes the names of
/// recovered copies unique per run.
fn stamp() -> String {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default()
        .to_string()
}

/// The [`SnapshotRestore`] of an `[[rds]]` job: per source DB instance or
/// cluster, the newest escrow copy at or before the time, shared with the
/// recovery account (the `restore` attribute) and copied there by its ARN
/// under the recovery account's own key ([`RECOVERY_KEY`]). A drill checks
/// each copy is available with the escrow copy's allocated storage and
/// engine, then deletes it.
#[derive(Debug, Clone)]
pub struct RdsRestore {
    escrow: Client,
    target: Client,
    escrow_account: String,
    target_account: String,
    region: String,
    primary: String,
    kinds: Vec<RdsKind>,
    ids: Vec<String>,
    timeout: Duration,
    max_poll: Duration,
}

impl RdsRestore {
    /// Restores, in `region`, the escrow copies the escrow session holds of
    /// the primary account `primary`'s DB snapshots and cluster snapshots
    /// into the account of the `target` session (every one: narrow with
    /// [`Self::with_ids`] and [`Self::with_kinds`]).
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
        RdsRestore {
            escrow,
            target,
            escrow_account: escrow_account.to_string(),
            target_account: target_account.to_string(),
            region: region.to_string(),
            primary: primary.to_string(),
            kinds: vec![RdsKind::Db, RdsKind::Cluster],
            ids: Vec::new(),
            timeout: COPY_TIMEOUT,
            max_poll: MAX_POLL,
        }
    }

    /// Only the copies of these source snapshots (case-insensitive; empty:
    /// every copy, the job selecting by tags).
    pub fn with_ids(mut self, ids: &[String]) -> Self {
        self.ids = ids.iter().map(|i| i.to_ascii_lowercase()).collect();
        self
    }

    /// Only these kinds, in this order (`rds://` for DB snapshots,
    /// `aurora://` for cluster snapshots).
    pub fn with_kinds(mut self, kinds: Vec<RdsKind>) -> Self {
        self.kinds = kinds;
        self
    }

    /// Waits at most `timeout` for each copy, polling up to every
    /// `max_poll` (defaults: [`COPY_TIMEOUT`], [`MAX_POLL`]).
    pub fn with_wait(mut self, timeout: Duration, max_poll: Duration) -> Self {
        self.timeout = timeout;
        self.max_poll = max_poll;
        self
    }

    /// The ARN the recovery account copies `c` by.
    fn arn(&self, c: &EscrowRdsSnapshot) -> String {
        if !c.arn.is_empty() {
            return c.arn.clone();
        }
        let what = match c.kind {
            RdsKind::Db => "snapshot",
            RdsKind::Cluster => "cluster-snapshot",
        };
        format!("arn:aws:rds:{}:{}:{what}:{}", self.region, self.escrow_account, c.id)
    }
}

#[async_trait]
impl SnapshotRestore for RdsRestore {
    type Copy = EscrowRdsSnapshot;

    fn target_account(&self) -> &str {
        &self.target_account
    }

    fn locations(&self, owner: &str) -> Vec<String> {
        self.kinds
            .iter()
            .map(|k| match k {
                RdsKind::Db => "rds",
                RdsKind::Cluster => "aurora",
            })
            .map(|scheme| format!("{scheme}://{owner}/{}", self.region))
            .collect()
    }

    async fn escrow_copies(&self, at: Option<SystemTime>) -> Result<Vec<EscrowRdsSnapshot>> {
        let mut chosen = Vec::new();
        for kind in &self.kinds {
            let copies: Vec<_> = escrow_snapshots(&self.escrow, *kind)
                .await?
                .into_iter()
                .filter(|c| c.source_account.as_deref().is_none_or(|a| a == self.primary))
                .filter(|c| {
                    self.ids.is_empty() || self.ids.contains(&c.source_id.to_ascii_lowercase())
                })
                .collect();
            chosen.extend(as_of(copies, at));
        }
        Ok(chosen)
    }

    fn describe(&self, c: &EscrowRdsSnapshot) -> SnapshotCopy {
        SnapshotCopy::new(
            &c.id,
            &c.source_id,
            format!("escrow {} {}", c.kind.noun(), c.id),
            "snapshots",
            c.gib * GIB,
        )
    }

    fn notes(&self, copies: &[EscrowRdsSnapshot]) -> Vec<String> {
        let (primary, account) = (&self.primary, &self.target_account);
        let mut notes = Vec::new();
        if self.ids.is_empty() {
            notes.push(format!(
                "the job selects by tags: every escrow copy of a primary ({primary}) snapshot \
                 counts"
            ));
        }
        let mut keys: Vec<&str> =
            copies.iter().filter(|c| c.encrypted).filter_map(|c| c.kms_key_id.as_deref()).collect();
        keys.sort_unstable();
        keys.dedup();
        if !keys.is_empty() {
            notes.push(format!(
                "the escrow copies are encrypted with {}: the key's policy must grant account \
                 {account} kms:Decrypt, kms:DescribeKey and kms:CreateGrant for it to copy or \
                 restore them; copies made in account {account} are encrypted with its own \
                 {RECOVERY_KEY} key",
                keys.join(", ")
            ));
        }
        notes
    }

    fn plan_note(&self, c: &EscrowRdsSnapshot) -> String {
        format!(
            "would share escrow {} {} (of {}, {} GiB, {})",
            c.kind.noun(),
            c.id,
            c.source_id,
            c.gib,
            c.engine
        )
    }

    fn shared_note(&self, c: &EscrowRdsSnapshot) -> String {
        format!(
            "shared escrow {} {} (of {}): account {} restores from {}, or copies it with --copy",
            c.kind.noun(),
            c.id,
            c.source_id,
            self.target_account,
            self.arn(c)
        )
    }

    async fn share(&self, c: &EscrowRdsSnapshot) -> Result<()> {
        set_shared(&self.escrow, c.kind, &c.id, &self.target_account, true).await
    }

    async fn unshare(&self, c: &EscrowRdsSnapshot) -> Result<()> {
        set_shared(&self.escrow, c.kind, &c.id, &self.target_account, false).await
    }

    async fn start_copy(&self, c: &EscrowRdsSnapshot) -> Result<String> {
        let key = c.encrypted.then_some(RECOVERY_KEY);
        let name = recovery_identifier(&c.id, &stamp());
        start_copy(&self.target, c.kind, &self.arn(c), &name, key).await
    }

    async fn wait_copy(&self, c: &EscrowRdsSnapshot, id: &str) -> Result<RecoveredCopy> {
        let done = wait_available(&self.target, c.kind, id, self.timeout, self.max_poll).await?;
        let why = mismatch(c, &done);
        Ok(RecoveredCopy::new(done.id, done.gib * GIB, why))
    }

    async fn delete_copy(&self, c: &EscrowRdsSnapshot, id: &str) -> Result<()> {
        delete_snapshot(&self.target, c.kind, id).await
    }

    fn copy_label(&self, c: &EscrowRdsSnapshot, id: &str) -> String {
        format!("{} {id}", c.kind.noun())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn copy(id: &str, source: &str, lineage: &str, secs: u64) -> EscrowRdsSnapshot {
        EscrowRdsSnapshot {
            kind: RdsKind::Db,
            id: id.into(),
            arn: format!("arn:aws:rds:us-east-1:222222222222:snapshot:{id}"),
            source_id: source.into(),
            source_account: None,
            lineage: lineage.into(),
            started: Some(UNIX_EPOCH + Duration::from_secs(secs)),
            gib: 20,
            engine: "postgres".into(),
            encrypted: true,
            kms_key_id: None,
        }
    }

    #[test]
    fn the_newest_copy_per_database_at_the_time() {
        let copies = || {
            vec![
                copy("e1", "s1", "db-a", 100),
                copy("e2", "s2", "db-a", 200),
                copy("e3", "s3", "", 150),
            ]
        };
        let ids = |v: Vec<EscrowRdsSnapshot>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(as_of(copies(), None)), ["e2", "e3"]);
        let at = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(ids(as_of(copies(), at(160))), ["e1", "e3"]);
        assert!(as_of(copies(), at(50)).is_empty());
    }

    #[test]
    fn a_copy_differs_by_status_storage_or_engine() {
        let escrow = copy("e1", "s1", "db-a", 100);
        let same = RecoveredRdsSnapshot {
            id: "r1".into(),
            status: "available".into(),
            gib: 20,
            engine: "postgres".into(),
        };
        assert_eq!(mismatch(&escrow, &same), None);
        let other = RecoveredRdsSnapshot { gib: 10, engine: "mysql".into(), ..same };
        let why = mismatch(&escrow, &other).unwrap();
        assert!(why.contains("10 GiB") && why.contains("engine mysql"), "{why}");
    }

    #[test]
    fn recovery_identifiers_are_valid_and_distinct_per_time() {
        assert_eq!(
            recovery_identifier("escrow-nightly-1", "1700"),
            "restored-escrow-nightly-1-1700"
        );
        assert_ne!(recovery_identifier("e", "1"), recovery_identifier("e", "2"));
    }
}
