//! Escrow's copies of RDS DB snapshots and Aurora cluster snapshots as a
//! sink: copy by ARN, wait, provenance tags, audit, retention.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use escrow_sync_core::tags;
use escrow_sync_core::{
    Error, ErrorKind, EscrowCopy, Item, ItemKind, ItemStream, Payload, Receipt, Result, Retained,
    Scope, Sink,
};

use crate::api::{Rds, RdsKind, Snap, arn_account, identifier, same_key};

const GIB: u64 = 1 << 30;

/// The provenance tags of an escrow copy of `snapshot_id`, set when the copy
/// is made: source snapshot id, account, ARN, creation time, copy time, and
/// the lineage (source DB instance or cluster identifier).
pub fn provenance_tags(
    snapshot_id: &str,
    source_account: &str,
    source_arn: &str,
    source_start_time: &str,
    copied_at: &str,
    lineage: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (tags::SOURCE_SNAPSHOT_ID.to_string(), snapshot_id.to_string()),
        (tags::SOURCE_ACCOUNT.to_string(), source_account.to_string()),
        (tags::SOURCE_ARN.to_string(), source_arn.to_string()),
        (tags::SOURCE_START_TIME.to_string(), source_start_time.to_string()),
        (tags::COPIED_AT.to_string(), copied_at.to_string()),
        (tags::LINEAGE.to_string(), lineage.to_string()),
    ])
}
/// The identifier of the escrow copy of source snapshot `snapshot_id`:
/// `escrow-<id>`, made a valid RDS identifier (lowercase letters, digits,
/// single hyphens, starts with a letter, at most 240 characters); when that
/// changes anything but case (an automated snapshot's `rds:` prefix, a cut),
/// an 8-hex-digit hash of the id is appended, so distinct sources never meet.
/// After a copy that failed, the next one is named `<this>-retry-N`.
pub fn escrow_identifier(snapshot_id: &str) -> String {
    identifier("escrow-", snapshot_id)
}
/// The escrow account's copies of DB snapshots or Aurora cluster snapshots,
/// made with CopyDBSnapshot / CopyDBClusterSnapshot from the shared
/// snapshot's ARN, encrypted with the escrow key, tagged with their
/// provenance at creation and found again by it.
///
/// A copy is named [`escrow_identifier`] of its source; one an interrupted
/// run left in progress is waited on, not started again; one that failed is
/// reported with RDS's message, and the next run copies again (as
/// `<name>-retry-N`). An unencrypted Aurora cluster snapshot cannot be
/// encrypted by a copy: it is copied unencrypted and [`Sink::audit`] reports
/// it.
#[derive(Debug, Clone)]
pub struct RdsSnapshotSink {
    rds: Rds,
    region: String,
    kms_key_id: Option<String>,
    job: Option<String>,
    source_account: Option<String>,
    timeout: Duration,
    max_poll: Duration,
}

impl RdsSnapshotSink {
    /// Copies snapshots of `kind` into the escrow account of `rds` (escrow
    /// credentials) in `region`.
    pub fn from_client(rds: aws_sdk_rds::Client, kind: RdsKind, region: impl Into<String>) -> Self {
        RdsSnapshotSink {
            rds: Rds::new(rds, kind),
            region: region.into(),
            kms_key_id: None,
            job: None,
            source_account: None,
            timeout: Duration::from_secs(12 * 3600),
            max_poll: Duration::from_secs(60),
        }
    }

    /// Encrypts every copy with this escrow key (its ARN, so that audits can
    /// compare it). RDS needs one to copy an encrypted snapshot another
    /// account shares.
    pub fn with_kms_key_id(mut self, key: Option<String>) -> Self {
        self.kms_key_id = key;
        self
    }

    /// Tags every new copy with [`escrow_sync_core::tags::JOB`] = `job`, so
    /// that `prune` tells the job's copies from escrow's records alone.
    pub fn with_job(mut self, job: Option<String>) -> Self {
        self.job = job;
        self
    }

    /// Only copies of this primary account's snapshots are this sink's
    /// (listing, audit, retention): RDS identifiers are chosen by people, so
    /// two primaries backed up into one escrow may both have a `nightly-1`,
    /// and without it a copy of one would count as the copy of the other.
    /// Writes always tell copies apart by the account of the payload.
    pub fn with_source_account(mut self, account: Option<String>) -> Self {
        self.source_account = account;
        self
    }

    /// How long to wait for one copy, and the longest pause between polls
    /// (defaults 12 hours and 60 s; polls start at 1 s and double).
    pub fn with_wait(mut self, timeout: Duration, max_poll: Duration) -> Self {
        self.timeout = timeout;
        self.max_poll = max_poll.max(Duration::from_millis(1));
        self
    }

    fn resource(&self, source_id: &str) -> String {
        format!("escrow copy of {} {source_id} ({})", self.rds.kind.noun(), self.region)
    }

    fn describe_escrow(&self) -> String {
        format!("{}://escrow/{}", self.rds.kind.scheme(), self.region)
    }

    /// Whether copy `s` is of a snapshot of `account` (any, when unknown;
    /// a copy without the tag is taken for one).
    fn of_account(s: &Snap, account: Option<&str>) -> bool {
        match (s.tags.get(tags::SOURCE_ACCOUNT), account) {
            (Some(a), Some(want)) => a == want,
            _ => true,
        }
    }

    /// The complete escrow copy of `source_id`, if any: the one named for it,
    /// else (after failures) any other copy tagged with it.
    async fn complete_copy(&self, source_id: &str) -> Result<Option<Snap>> {
        let resource = self.resource(source_id);
        let account = self.source_account.as_deref();
        let ours = |s: &Snap| {
            s.tags.get(tags::SOURCE_SNAPSHOT_ID).map(String::as_str) == Some(source_id)
                && Self::of_account(s, account)
        };
        if let Some(s) = self.rds.get(&escrow_identifier(source_id), &resource).await?
            && ours(&s)
            && s.is_available()
        {
            return Ok(Some(s));
        }
        let copies = self.rds.tagged(tags::SOURCE_SNAPSHOT_ID, source_id, &resource).await?;
        Ok(copies.into_iter().find(|s| s.is_available() && ours(s)))
    }
}

#[async_trait]
impl Sink for RdsSnapshotSink {
    fn describe(&self) -> String {
        self.describe_escrow()
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        let prefix = scope.prefix.clone();
        // After a failed copy and a retry, two copies may carry one source:
        // it is listed once.
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let account = self.source_account.clone();
        self.rds
            .list(&[], true, format!("{} snapshots", self.describe_escrow()))
            .filter_map(move |r| {
                let out = match r {
                    Ok(s) => s.tags.get(tags::SOURCE_SNAPSHOT_ID).cloned().and_then(|source| {
                        let fresh = s.is_available()
                            && Self::of_account(&s, account.as_deref())
                            && source.starts_with(&prefix)
                            && seen.lock().expect("seen").insert(source.clone());
                        fresh.then(|| {
                            Ok(Item::new(&source, ItemKind::Snapshot, s.gib * GIB, &source))
                        })
                    }),
                    Err(e) => Some(Err(e)),
                };
                futures::future::ready(out)
            })
            .boxed()
    }

    async fn write(&self, item: &Item, payload: Payload) -> Result<Receipt> {
        let op = self.rds.kind.op("rds:CopyDBSnapshot", "rds:CopyDBClusterSnapshot");
        let Payload::Reference(source) = payload else {
            return Err(Error::new(
                ErrorKind::Unsupported,
                op,
                self.resource(&item.key),
                "an RDS snapshot is copied by reference only",
            ));
        };
        let attr = |k: &str| source.attributes.get(k).map(String::as_str).unwrap_or_default();
        if source.container != self.region {
            return Err(Error::new(
                ErrorKind::Unsupported,
                op,
                self.resource(&item.key),
                format!(
                    "the snapshot is in {}, the escrow copies into {}: cross-region copies are \
                     not supported; run the job with the escrow in the snapshot's region",
                    source.container, self.region
                ),
            ));
        }
        if self.kms_key_id.is_none() && attr("encrypted") != "false" {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                op,
                self.resource(&item.key),
                "an encrypted snapshot shared by another account is copied only with a key of \
                 the escrow account: set the escrow kms_key_id",
            ));
        }
        let mut tags = provenance_tags(
            &item.key,
            source.owner.as_deref().unwrap_or_default(),
            if attr("arn").is_empty() { &source.key } else { attr("arn") },
            attr("start-time"),
            &escrow_sync_aws::now_rfc3339(),
            attr("lineage"),
        );
        if let Some(job) = &self.job {
            tags.insert(escrow_sync_core::tags::JOB.to_string(), job.clone());
        }
        // RDS refuses a key for a copy of an unencrypted cluster snapshot
        // (an Aurora copy cannot add encryption); DB snapshot copies can.
        let kms = match self.rds.kind {
            RdsKind::Cluster if attr("encrypted") == "false" => None,
            _ => self.kms_key_id.as_deref(),
        };
        let resource = self.resource(&item.key);
        // A copy named for this source id but of another account's
        // snapshot of the same name is not this one's: it is left alone and
        // this copy is made as `<name>-retry-N`.
        let owner = source.owner.clone().or_else(|| self.source_account.clone());
        let copy = self
            .rds
            .copy_once(
                &escrow_identifier(&item.key),
                (tags::SOURCE_SNAPSHOT_ID, &item.key),
                |s| !s.is_failed() && Self::of_account(s, owner.as_deref()),
                // The ARN of what the primary shares: the snapshot, or its
                // manual / re-encrypted copy.
                &source.key,
                kms,
                &tags,
                &resource,
            )
            .await?;
        let done = self.rds.wait(&copy.id, self.timeout, self.max_poll, &resource).await?;
        Ok(Receipt::new(done.gib * GIB, Some(done.id)))
    }

    /// A snapshot never changes: the escrow copy of the same source
    /// identifier is the same, whatever sizes the two listings report.
    async fn confirm_same(&self, item: &Item, escrow: &Item) -> Result<bool> {
        Ok(item.key == escrow.key && item.fingerprint == escrow.fingerprint)
    }

    fn audits(&self) -> bool {
        true
    }

    async fn audit(&self, item: &Item) -> Result<Vec<String>> {
        let Some(copy) = self.complete_copy(&item.key).await? else {
            return Ok(vec![format!("escrow holds no available copy of {}", item.key)]);
        };
        let mut problems = Vec::new();
        let key = copy.kms_key_id.as_deref().filter(|_| copy.encrypted);
        match (key, &self.kms_key_id) {
            (None, _) if self.rds.kind == RdsKind::Cluster => problems.push(format!(
                "the escrow copy {} is not encrypted (an Aurora copy cannot encrypt an \
                 unencrypted cluster snapshot: encrypt the source cluster, e.g. restore it into \
                 an encrypted one)",
                copy.id
            )),
            (None, _) => problems.push(format!("the escrow copy {} is not encrypted", copy.id)),
            (Some(actual), Some(wanted)) if !same_key(Some(actual), wanted) => {
                problems.push(format!(
                    "the escrow copy {} is encrypted with {actual}, not the escrow key {wanted}",
                    copy.id
                ))
            }
            _ => {}
        }
        if let (Some(key_account), Some(own)) = (key.and_then(arn_account), arn_account(&copy.arn))
            && key_account != own
        {
            problems.push(format!(
                "the escrow copy {} is encrypted with a key of account {key_account}, not one of \
                 the escrow account {own}",
                copy.id
            ));
        }
        Ok(problems)
    }
}

#[async_trait]
impl Retained for RdsSnapshotSink {
    fn describe(&self) -> String {
        self.describe_escrow()
    }

    async fn copies(&self) -> Result<Vec<EscrowCopy>> {
        let all: Vec<Result<Snap>> = self
            .rds
            .list(&[], true, format!("{} snapshots", self.describe_escrow()))
            .collect()
            .await;
        let mut out = Vec::new();
        for s in all {
            let s = s?;
            let Some(source) = s.tags.get(tags::SOURCE_SNAPSHOT_ID) else { continue };
            if !Self::of_account(&s, self.source_account.as_deref()) {
                continue;
            }
            let tag = |k: &str| s.tags.get(k).filter(|v| !v.is_empty()).cloned();
            out.push(EscrowCopy {
                id: s.id.clone(),
                source: source.clone(),
                lineage: tag(tags::LINEAGE).unwrap_or_else(|| s.lineage.clone()),
                created: tag(tags::SOURCE_START_TIME).unwrap_or_else(|| s.created_rfc3339()),
                complete: s.is_available(),
                copied: Some(s.created_rfc3339())
                    .filter(|t| !t.is_empty())
                    .or_else(|| tag(tags::COPIED_AT)),
                job: tag(escrow_sync_core::tags::JOB),
            });
        }
        Ok(out)
    }

    async fn delete_copy(&self, copy: &EscrowCopy) -> Result<()> {
        let resource = format!("{} ({})", self.resource(&copy.source), copy.id);
        let Some(found) = self.rds.get(&copy.id, &resource).await? else {
            return Ok(());
        };
        if found.tags.get(tags::SOURCE_SNAPSHOT_ID) != Some(&copy.source) {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                self.rds.kind.op("rds:DeleteDBSnapshot", "rds:DeleteDBClusterSnapshot"),
                resource,
                format!(
                    "{} is not tagged {}={}: not deleted; list the copies again",
                    copy.id,
                    tags::SOURCE_SNAPSHOT_ID,
                    copy.source
                ),
            ));
        }
        self.rds.delete(&copy.id, &resource).await
    }
}
