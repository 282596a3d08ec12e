//! The primary's RDS DB snapshots and Aurora cluster snapshots as a
//! source: selection, sharing with escrow (and unsharing), manual copies of
//! automated snapshots, re-encryption under a customer key.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::tags;
use escrow_sync_core::{
    Error, ErrorKind, Item, ItemKind, ItemStream, Payload, Result, Scope, ServerSideRef, Source,
};

use crate::api::{Rds, RdsKind, Snap, identifier, same_key};

const GIB: u64 = 1 << 30;

/// The identifier of the copy made in the primary of `snapshot_id` (an
/// automated snapshot, or one re-encrypted): `escrow-sync-<id>`, made valid
/// the same way as [`escrow_identifier`].
pub fn primary_copy_identifier(snapshot_id: &str) -> String {
    identifier("escrow-sync-", snapshot_id)
}
/// The primary's DB snapshots or Aurora cluster snapshots, selected by tags,
/// by identifiers, or all it owns (manual and automated), shared with the
/// escrow account (the `restore` attribute) as they are read and unshared
/// once copied.
///
/// Automated snapshots cannot be shared: each is first copied to a manual
/// snapshot in the primary ([`primary_copy_identifier`], tagged
/// [`escrow_sync_core::tags::COPIED_FROM`]), which later runs reuse and which is what gets
/// shared; the item keeps the automated snapshot's identifier. A snapshot
/// under the AWS-managed key (aws/rds) cannot be shared either: with
/// [`RdsSnapshotSource::with_reencrypt_key_id`] it is copied in the primary
/// under that customer key first (tagged [`escrow_sync_core::tags::REENCRYPTED_FROM`]), else the
/// item fails saying what to configure. These copies in the primary are left
/// there: the reader role has no right to delete, and keeping them lets later
/// runs reuse them (delete them in the primary once escrow holds their copy,
/// if they are not wanted). Listings never select them.
#[derive(Debug, Clone)]
pub struct RdsSnapshotSource {
    rds: Rds,
    kms: aws_sdk_kms::Client,
    region: String,
    account: String,
    escrow_account: String,
    tags: BTreeMap<String, String>,
    ids: Vec<String>,
    unshare_after_copy: bool,
    reencrypt_key_id: Option<String>,
    wait: (Duration, Duration),
    shared: Arc<Mutex<BTreeMap<String, String>>>,
    listed: Arc<Mutex<Listed>>,
}

/// What the last listing of a [`RdsSnapshotSource`] showed, for finishing
/// items escrow already holds without asking RDS per candidate.
#[derive(Debug, Default)]
struct Listed {
    /// The listing saw every snapshot the primary owns (no `ids`), so its
    /// copies in the primary too.
    complete: bool,
    /// The automated snapshots listed (they cannot be shared themselves).
    automated: BTreeSet<String>,
    /// escrow-sync's available copies in the primary (of an automated
    /// snapshot, or re-encrypted), by the snapshot they stand for.
    copies: BTreeMap<String, Vec<String>>,
}

impl RdsSnapshotSource {
    /// Snapshots of `kind` owned by `account` in `region`, read with the
    /// reader role's `rds` and `kms` clients, shared with `escrow_account`.
    pub fn from_client(
        rds: aws_sdk_rds::Client,
        kms: aws_sdk_kms::Client,
        kind: RdsKind,
        region: impl Into<String>,
        account: impl Into<String>,
        escrow_account: impl Into<String>,
    ) -> Self {
        RdsSnapshotSource {
            rds: Rds::new(rds, kind),
            kms,
            region: region.into(),
            account: account.into(),
            escrow_account: escrow_account.into(),
            tags: BTreeMap::new(),
            ids: Vec::new(),
            unshare_after_copy: true,
            reencrypt_key_id: None,
            wait: (Duration::from_secs(12 * 3600), Duration::from_secs(60)),
            shared: Default::default(),
            listed: Default::default(),
        }
    }

    /// Only snapshots carrying all these tags.
    pub fn with_tags(mut self, tags: BTreeMap<String, String>) -> Self {
        self.tags = tags;
        self
    }

    /// Only these snapshot identifiers (automated ones look like
    /// `rds:mydb-2026-11-28-03-10`).
    pub fn with_ids(mut self, ids: Vec<String>) -> Self {
        self.ids = ids;
        self
    }

    /// Remove the share once the escrow copy is complete (default true).
    pub fn with_unshare_after_copy(mut self, on: bool) -> Self {
        self.unshare_after_copy = on;
        self
    }

    /// Re-encrypt a snapshot under the AWS-managed key (which cannot be
    /// shared) with this customer key of the primary, whose policy grants
    /// the escrow account kms:Decrypt, kms:DescribeKey and kms:CreateGrant:
    /// a copy in the primary, tagged [`escrow_sync_core::tags::REENCRYPTED_FROM`], reused by
    /// later runs, is what gets shared.
    pub fn with_reencrypt_key_id(mut self, key: Option<String>) -> Self {
        self.reencrypt_key_id = key;
        self
    }

    /// How long to wait for a copy in the primary (of an automated
    /// snapshot, or a re-encryption), and the longest pause between polls
    /// (defaults 12 hours and 60 s; polls start at 1 s and double).
    pub fn with_wait(mut self, timeout: Duration, max_poll: Duration) -> Self {
        self.wait = (timeout, max_poll.max(Duration::from_millis(1)));
        self
    }

    fn resource(&self, id: &str) -> String {
        format!("{} {id} (account {}, {})", self.rds.kind.noun(), self.account, self.region)
    }

    async fn snapshot(&self, id: &str) -> Result<Snap> {
        self.rds.get(id, &self.resource(id)).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                self.rds.kind.op("rds:DescribeDBSnapshots", "rds:DescribeDBClusterSnapshots"),
                self.resource(id),
                "it was listed but is gone; the next run lists again",
            )
        })
    }

    /// Fails (kind Unsupported) when `key` is an AWS-managed key (aws/rds),
    /// which cannot be shared with another account.
    async fn check_key(&self, id: &str, key: &str) -> Result<()> {
        let out = self.kms.describe_key().key_id(key).send().await.map_err(|e| {
            sdk_error(e, "kms:DescribeKey", format!("key {key} of {}", self.resource(id)))
        })?;
        let manager = out.key_metadata.and_then(|m| m.key_manager).map(|m| m.as_str().to_string());
        if manager.as_deref() == Some("AWS") {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "share",
                self.resource(id),
                format!(
                    "encrypted with the AWS-managed key {key} (aws/rds), which cannot be shared \
                     with another account: set reencrypt_key_id to a customer-managed key in the \
                     primary whose policy grants kms:Decrypt, kms:DescribeKey and \
                     kms:CreateGrant to the escrow account {}",
                    self.escrow_account
                ),
            ));
        }
        Ok(())
    }

    /// The customer key to re-encrypt `snap` with first, if it is under the
    /// AWS-managed key; fails when it is and none is configured.
    async fn reencrypt_with(&self, snap: &Snap) -> Result<Option<String>> {
        let Some(key) = snap.kms_key_id.as_deref().filter(|_| snap.encrypted) else {
            return Ok(None);
        };
        match (self.check_key(&snap.id, key).await, &self.reencrypt_key_id) {
            (Ok(()), _) => Ok(None),
            (Err(e), Some(customer)) if e.kind() == ErrorKind::Unsupported => {
                Ok(Some(customer.clone()))
            }
            (Err(e), _) => Err(e),
        }
    }

    /// What the primary's copy of `snap` must be tagged, and which tag finds
    /// it again.
    fn primary_copy_tags(
        snap: &Snap,
        reencrypt: Option<&str>,
    ) -> (&'static str, BTreeMap<String, String>) {
        let mut tags = BTreeMap::new();
        if snap.is_automated() {
            tags.insert(tags::COPIED_FROM.to_string(), snap.id.clone());
        }
        if reencrypt.is_some() {
            tags.insert(tags::REENCRYPTED_FROM.to_string(), snap.id.clone());
        }
        let marker = if snap.is_automated() { tags::COPIED_FROM } else { tags::REENCRYPTED_FROM };
        (marker, tags)
    }

    /// The snapshot to share for `snap`: itself, or (automated, or under the
    /// AWS-managed key) its copy in the primary, existing or made now, and
    /// waited for.
    async fn to_share(&self, snap: &Snap) -> Result<Snap> {
        let reencrypt = self.reencrypt_with(snap).await?;
        if !snap.is_automated() && reencrypt.is_none() {
            return Ok(snap.clone());
        }
        let (marker, tags) = Self::primary_copy_tags(snap, reencrypt.as_deref());
        let key = reencrypt.clone();
        let usable = move |s: &Snap| {
            !s.is_failed() && key.as_deref().is_none_or(|k| same_key(s.kms_key_id.as_deref(), k))
        };
        let resource = self.resource(&snap.id);
        let copy = self
            .rds
            .copy_once(
                &primary_copy_identifier(&snap.id),
                (marker, &snap.id),
                usable,
                &snap.id,
                reencrypt.as_deref(),
                &tags,
                &resource,
            )
            .await?;
        let (timeout, max_poll) = self.wait;
        self.rds.wait(&copy.id, timeout, max_poll, &resource).await
    }
}

impl RdsSnapshotSource {
    /// The snapshots that may carry a share for `key`, an item escrow
    /// already holds, which this run did not read: what a read would have
    /// shared. With a complete listing, escrow-sync's copies of it in the
    /// primary when there are (its own share is impossible then: automated,
    /// or under the AWS-managed key), else the snapshot itself unless it is
    /// automated. A listing by ids does not see the copies: then the
    /// snapshot (unless automated) and its copy's deterministic name
    /// ([`primary_copy_identifier`]; a `-retry-N` one is not looked for).
    fn share_candidates(&self, key: &str) -> Vec<String> {
        let listed = self.listed.lock().expect("listing");
        let automated = listed.automated.contains(key) || key.starts_with("rds:");
        let own = (!automated).then(|| key.to_string());
        match listed.copies.get(key) {
            Some(copies) if listed.complete => copies.clone(),
            _ if listed.complete => own.into_iter().collect(),
            _ => own.into_iter().chain([primary_copy_identifier(key)]).collect(),
        }
    }

    /// Removes the shares an interrupted run left for `key`, an item escrow
    /// already holds: each candidate's `restore` attribute is read, and the
    /// escrow account removed only where it is named (no mutating call when
    /// nothing is left shared).
    async fn unshare_left(&self, key: &str) -> Result<()> {
        let resource = self.resource(key);
        for id in self.share_candidates(key) {
            if self.rds.shared_with(&id, &self.escrow_account, &resource).await? == Some(true) {
                self.rds.share(&id, &self.escrow_account, false, &resource).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Source for RdsSnapshotSource {
    fn describe(&self) -> String {
        format!("{}://{}/{}", self.rds.kind.scheme(), self.account, self.region)
    }

    fn list(&self, scope: &Scope) -> ItemStream<'_> {
        let prefix = scope.prefix.clone();
        let ids: BTreeSet<String> = self.ids.iter().map(|i| i.to_ascii_lowercase()).collect();
        let tags = self.tags.clone();
        *self.listed.lock().expect("listing") =
            Listed { complete: self.ids.is_empty(), ..Listed::default() };
        let listed = self.listed.clone();
        self.rds
            .list(&self.ids, false, Source::describe(self))
            .filter_map(move |r| {
                let s = match r {
                    Ok(s) => s,
                    Err(e) => return futures::future::ready(Some(Err(e))),
                };
                {
                    let mut listed = listed.lock().expect("listing");
                    if s.is_automated() {
                        listed.automated.insert(s.id.clone());
                    }
                    let of = s.tags.get(tags::COPIED_FROM).or(s.tags.get(tags::REENCRYPTED_FROM));
                    if let Some(of) = of.filter(|_| s.is_available()) {
                        listed.copies.entry(of.clone()).or_default().push(s.id.clone());
                    }
                }
                let selected = s.is_available()
                    && matches!(s.snapshot_type.as_str(), "manual" | "automated")
                    // escrow-sync's own copies in the primary are means, not sources.
                    && !s.tags.contains_key(tags::COPIED_FROM)
                    && !s.tags.contains_key(tags::REENCRYPTED_FROM)
                    && (ids.is_empty() || ids.contains(&s.id.to_ascii_lowercase()))
                    && tags.iter().all(|(k, v)| s.tags.get(k) == Some(v))
                    && s.id.starts_with(&prefix);
                futures::future::ready(selected.then(|| {
                    Ok(Item::new(&s.id, ItemKind::Snapshot, s.gib * GIB, &s.id)
                        .with_lineage(Some(s.lineage.clone()))
                        .with_modified(
                            s.created.as_ref().and_then(escrow_sync_aws::time::system_time),
                        ))
                }))
            })
            .boxed()
    }

    async fn read(&self, item: &Item) -> Result<Payload> {
        let snap = self.snapshot(&item.key).await?;
        let shared = self.to_share(&snap).await?;
        self.rds.share(&shared.id, &self.escrow_account, true, &self.resource(&item.key)).await?;
        self.shared.lock().expect("shares").insert(item.key.clone(), shared.id.clone());
        let attributes = BTreeMap::from([
            ("kind".to_string(), self.rds.kind.as_str().to_string()),
            ("region".to_string(), self.region.clone()),
            ("arn".to_string(), snap.arn.clone()),
            ("start-time".to_string(), snap.created_rfc3339()),
            ("lineage".to_string(), snap.lineage.clone()),
            ("allocated-gib".to_string(), snap.gib.to_string()),
            ("shared-id".to_string(), shared.id.clone()),
            ("encrypted".to_string(), shared.encrypted.to_string()),
            ("kms-key-id".to_string(), shared.kms_key_id.clone().unwrap_or_default()),
        ]);
        // The sink copies by the ARN of what is shared: the snapshot, or its
        // manual / re-encrypted copy.
        let arn = if shared.arn.is_empty() {
            let kind = self.rds.kind.op("snapshot", "cluster-snapshot");
            format!("arn:aws:rds:{}:{}:{kind}:{}", self.region, self.account, shared.id)
        } else {
            shared.arn.clone()
        };
        Ok(Payload::Reference(
            ServerSideRef::new("rds", &self.region, arn, &item.fingerprint)
                .with_owner(Some(self.account.clone()))
                .with_attributes(attributes),
        ))
    }

    fn finishes_skipped(&self) -> bool {
        self.unshare_after_copy
    }

    /// Removes the share once the copy is complete: the one this run made,
    /// or, for an item escrow already held, one an interrupted run left
    /// (see `RdsSnapshotSource::unshare_left`).
    async fn finish(&self, item: &Item) -> Result<()> {
        if !self.unshare_after_copy {
            return Ok(());
        }
        let recorded = self.shared.lock().expect("shares").get(&item.key).cloned();
        let Some(shared) = recorded else {
            return self.unshare_left(&item.key).await;
        };
        self.rds.share(&shared, &self.escrow_account, false, &self.resource(&item.key)).await?;
        self.shared.lock().expect("shares").remove(&item.key);
        Ok(())
    }

    async fn assess(&self, item: &Item) -> Result<Option<String>> {
        let snap = self.snapshot(&item.key).await?;
        let mut notes = Vec::new();
        let reencrypt = self.reencrypt_with(&snap).await?;
        if let Some(customer) = &reencrypt {
            notes.push(format!(
                "needs re-encryption: under the AWS-managed key {}, which cannot be shared; \
                 copied in the primary under {customer} first",
                snap.kms_key_id.as_deref().unwrap_or("aws/rds")
            ));
        }
        if snap.is_automated() {
            let base = primary_copy_identifier(&snap.id);
            let existing = self.rds.get(&base, &self.resource(&snap.id)).await?.filter(|s| {
                s.tags.get(tags::COPIED_FROM) == Some(&snap.id)
                    && !s.is_failed()
                    && reencrypt.as_deref().is_none_or(|k| same_key(s.kms_key_id.as_deref(), k))
            });
            notes.push(match existing {
                Some(s) => format!("automated: its manual copy {} in the primary is shared", s.id),
                None => "automated: copied to a manual snapshot in the primary first".to_string(),
            });
        }
        if self.rds.kind == RdsKind::Cluster && !snap.encrypted {
            notes.push(
                "unencrypted: a copy of an unencrypted Aurora cluster snapshot cannot be \
                 encrypted, so the escrow copy stays unencrypted and verify reports it"
                    .to_string(),
            );
        }
        Ok((!notes.is_empty()).then(|| notes.join("; ")))
    }
}
