//! Escrow snapshot copies that can still be deleted or cannot be restored
//! elsewhere (issue 17): found by escrow-sync's provenance tags
//! (`escrow-sync:source-snapshot-id`, `escrow-sync:source-image-id`).
//!
//! - `ec2.snapshot.unlocked` (high): an EBS snapshot copy (AMI backing
//!   snapshots included) without an EBS Snapshot Lock in force, when its job
//!   (its `escrow-sync:job` tag; for an untagged copy, every `[[ec2]]` job)
//!   asks for a `lock`.
//! - `ec2.snapshot.weak-lock` (high): a copy locked in governance mode
//!   when its job asks for compliance (`ec2:LockSnapshot` can shorten a
//!   governance lock).
//! - `ec2.image.deregistration-unprotected` (high): an AMI copy without
//!   deregistration protection, when its job asks for a `lock`.
//! - `ec2.snapshot.unclaimed`, `ec2.image.unclaimed` (high): an escrow copy
//!   whose `escrow-sync:job` tag names no configured `[[ec2]]` job, while a
//!   job asks for a `lock`: no run keeps it locked (a copy retagged out of
//!   its job would slip out that way). It is held to the strictest lock of
//!   the jobs for the checks above.
//! - `ec2.snapshot.aws-managed-key`, `rds.snapshot.aws-managed-key`,
//!   `redshift.snapshot.aws-managed-key` (medium): a copy encrypted under an
//!   AWS-managed key (aws/ebs, aws/rds, aws/redshift; kms:DescribeKey says
//!   `KeyManager = AWS`) instead of the escrow's customer-managed key: such
//!   a copy cannot be shared to a recovery account, so `restore` cannot use
//!   it. A Redshift copy encrypted with no key id reported is taken as
//!   under the default (AWS-managed) key.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Filter;

use escrow_sync_aws::sdk_error;
use escrow_sync_core::{Result, tags};

use super::{Auditor, Finding, Findings, Severity};
use crate::inventory::Ec2LockGrant;

/// Runs the copy checks whose clients are set: the key checks need the
/// KMS client too, so without it only EC2 locks are looked at.
pub(super) async fn check(a: &Auditor, f: &mut Findings) -> Result<()> {
    let mut keys = KeyManagers { kms: a.escrow.kms.as_ref(), known: BTreeMap::new() };
    let with_keys = keys.kms.is_some();
    let locks = a.inventory.ec2.iter().any(|j| j.lock.is_some());
    if let Some(ec2) = &a.escrow.ec2
        && !a.inventory.ec2.is_empty()
        && (with_keys || locks)
    {
        ec2_copies(a, ec2, &mut keys, f).await?;
    }
    if let Some(rds) = &a.escrow.rds
        && !a.inventory.rds.is_empty()
        && with_keys
    {
        rds_copies(a, rds, &mut keys, f).await?;
    }
    if let Some(redshift) = &a.escrow.redshift
        && !a.inventory.redshift.is_empty()
        && with_keys
    {
        redshift_copies(a, redshift, &mut keys, f).await?;
    }
    Ok(())
}

/// Which keys are AWS-managed, asked once per key.
struct KeyManagers<'a> {
    kms: Option<&'a aws_sdk_kms::Client>,
    known: BTreeMap<String, Option<bool>>,
}

impl KeyManagers<'_> {
    /// Whether `key` is AWS-managed; `None` when it cannot be told (no KMS
    /// client, the key gone, access denied: then a finding of its own).
    async fn aws_managed(&mut self, key: &str, f: &mut Findings) -> Result<Option<bool>> {
        if let Some(known) = self.known.get(key) {
            return Ok(*known);
        }
        let Some(kms) = self.kms else { return Ok(None) };
        let answer = match kms.describe_key().key_id(key).send().await {
            Ok(out) => out
                .key_metadata()
                .and_then(|m| m.key_manager())
                .map(|m| *m == aws_sdk_kms::types::KeyManagerType::Aws),
            Err(e) => {
                let err = sdk_error(e, "kms:DescribeKey", format!("key {key}"));
                if err.kind() != escrow_sync_core::ErrorKind::NotFound {
                    f.could_not(err, &format!("which key escrow copies under {key} use"))?;
                }
                None
            }
        };
        self.known.insert(key.to_string(), answer);
        Ok(answer)
    }
}

fn tag<'a>(tags: &'a [aws_sdk_ec2::types::Tag], key: &str) -> Option<&'a str> {
    tags.iter().find(|t| t.key() == Some(key)).and_then(|t| t.value())
}

/// The lock the job of a copy asks for: the job its `escrow-sync:job` tag
/// names; for an untagged copy, a lock every `[[ec2]]` job asks for; for a
/// copy whose tag names no configured job (retagged, say, to slip out of
/// its job's lock), the strictest lock any job asks for.
fn lock_for<'a>(a: &'a Auditor, job: Option<&str>) -> Option<&'a Ec2LockGrant> {
    let jobs = &a.inventory.ec2;
    match job {
        Some(name) => match jobs.iter().find(|j| j.name == name) {
            Some(j) => j.lock.as_ref(),
            None => strictest(a),
        },
        None if jobs.iter().all(|j| j.lock.is_some()) => jobs.first()?.lock.as_ref(),
        None => None,
    }
}

/// The strictest lock of the `[[ec2]]` jobs: compliance before governance,
/// then the most days.
fn strictest(a: &Auditor) -> Option<&Ec2LockGrant> {
    a.inventory
        .ec2
        .iter()
        .filter_map(|j| j.lock.as_ref())
        .max_by_key(|l| (l.mode == "compliance", l.days))
}

/// The `escrow-sync:job` tag of an escrow copy when it names no configured
/// `[[ec2]]` job (`None` for an untagged copy or one of a configured job).
fn unclaimed<'a>(a: &Auditor, job: Option<&'a str>) -> Option<&'a str> {
    job.filter(|name| !a.inventory.ec2.iter().any(|j| j.name == *name))
}

/// `ec2.snapshot.unclaimed` / `ec2.image.unclaimed`: an escrow copy whose
/// `escrow-sync:job` tag names no configured job, while some job asks for
/// a lock. No run keeps its lock, so it lapses and the copy can then be
/// deleted; it is held to the strictest lock of the jobs.
fn unclaimed_finding(kind: &str, id: &str, job: &str, lock: &Ec2LockGrant) -> Finding {
    let (check, what) = match kind {
        "image" => ("ec2.image.unclaimed", "AMI copy"),
        _ => ("ec2.snapshot.unclaimed", "EBS snapshot copy"),
    };
    Finding::high(
        check,
        id,
        format!(
            "escrow {what} {id} carries escrow-sync:job={job}, which names no [[ec2]] job of \
             the config: no run keeps it locked or protected, so once its lock lapses it can \
             be deleted (a copy retagged out of its job slips out that way); held to the \
             strictest lock of the jobs ({} mode, {} days)",
            lock.mode, lock.days
        ),
        format!(
            "tag {id} with escrow-sync:job naming the job that made it (aws ec2 create-tags \
             --resources {id} --tags Key={},Value=JOB), or add that job back to the config; \
             find who retagged it in the escrow account's CloudTrail (CreateTags)",
            tags::JOB
        ),
    )
}

/// Whether a DescribeLockedSnapshots entry keeps its snapshot at `now`.
fn in_force(info: &aws_sdk_ec2::types::LockedSnapshotsInfo, now: i64) -> bool {
    use aws_sdk_ec2::types::LockState as S;
    matches!(info.lock_state(), Some(S::Compliance | S::ComplianceCooloff | S::Governance))
        && info.lock_expires_on().is_none_or(|t| t.secs() > now)
}

/// A lock in force: its mode (`compliance` for both compliance states, or
/// `governance`) and its expiry (RFC 3339, when reported).
struct InForce {
    mode: &'static str,
    until: Option<String>,
}

/// The ids among `ids` with a lock in force, with its mode:
/// DescribeLockedSnapshots by ids (200 a request), each request paged.
async fn locked(
    ec2: &aws_sdk_ec2::Client,
    ids: &[String],
    resource: &str,
) -> Result<BTreeMap<String, InForce>> {
    use aws_sdk_ec2::types::LockState as S;
    let now = escrow_sync_core::time::epoch(std::time::SystemTime::now());
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(200) {
        let mut token: Option<String> = None;
        loop {
            let page = ec2
                .describe_locked_snapshots()
                .set_snapshot_ids(Some(chunk.to_vec()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error(e, "ec2:DescribeLockedSnapshots", resource))?;
            out.extend(page.snapshots().iter().filter(|i| in_force(i, now)).filter_map(|i| {
                let mode = match i.lock_state() {
                    Some(S::Governance) => "governance",
                    _ => "compliance",
                };
                let until = i.lock_expires_on().map(|t| {
                    escrow_sync_core::rfc3339(escrow_sync_core::time::from_epoch(t.secs()))
                });
                Some((i.snapshot_id()?.to_string(), InForce { mode, until }))
            }));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    Ok(out)
}

fn aws_key_fix(kind: &str, id: &str) -> String {
    format!(
        "set [escrow] kms_key_id to the escrow's customer-managed key so new copies use it; \
         copy {kind} {id} once more under that key (then prune the old copy)"
    )
}

/// `ec2.snapshot.weak-lock`: a governance lock in force on a copy whose
/// job asks for compliance.
fn weak_lock(id: &str, held: &InForce, lock: &Ec2LockGrant) -> Finding {
    let until = held.until.as_deref().map(|u| format!(" until {u}")).unwrap_or_default();
    Finding::high(
        "ec2.snapshot.weak-lock",
        id,
        format!(
            "escrow EBS snapshot copy {id} is locked in governance mode{until}, while its job \
             asks for a compliance lock of {} days: whoever holds ec2:LockSnapshot (the escrow \
             operator role among them) can shorten a governance lock and then delete the copy",
            lock.days
        ),
        format!(
            "run `escrow-sync run` (each run locks the job's copies again in compliance mode), \
             or aws ec2 lock-snapshot --snapshot-id {id} --lock-mode compliance \
             --lock-duration {}",
            lock.days
        ),
    )
}

async fn ec2_copies(
    a: &Auditor,
    ec2: &aws_sdk_ec2::Client,
    keys: &mut KeyManagers<'_>,
    f: &mut Findings,
) -> Result<()> {
    let own = &a.inventory.escrow_account;
    let resource = format!("ec2 snapshots of account {own}");
    let mut snapshots = Vec::new();
    let mut pages = ec2
        .describe_snapshots()
        .owner_ids("self")
        .filters(
            Filter::builder()
                .name("tag-key")
                .values(tags::SOURCE_SNAPSHOT_ID)
                .values(tags::SOURCE_IMAGE_ID)
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => snapshots.extend(p.snapshots().iter().cloned()),
            Err(e) => {
                let err = sdk_error(e, "ec2:DescribeSnapshots", &resource);
                return f.could_not(err, "the locks and keys of escrow EBS snapshot copies");
            }
        }
    }
    let mut wanted: BTreeMap<String, &Ec2LockGrant> = BTreeMap::new();
    for s in &snapshots {
        let Some(id) = s.snapshot_id() else { continue };
        if let Some(key) = s.kms_key_id()
            && keys.aws_managed(key, f).await? == Some(true)
        {
            f.push(Finding::new(
                Severity::Medium,
                "ec2.snapshot.aws-managed-key",
                id,
                format!(
                    "escrow EBS snapshot copy {id} is encrypted under the AWS-managed key {key} \
                     (aws/ebs), not a customer-managed escrow key: it cannot be shared with a \
                     recovery account, so restore cannot use it"
                ),
                aws_key_fix("snapshot", id),
            ));
        }
        let job = tag(s.tags(), tags::JOB);
        if let Some(lock) = lock_for(a, job) {
            wanted.insert(id.to_string(), lock);
            if let Some(job) = unclaimed(a, job) {
                f.push(unclaimed_finding("snapshot", id, job, lock));
            }
        }
    }
    let ids: Vec<String> = wanted.keys().cloned().collect();
    if !ids.is_empty() {
        match locked(ec2, &ids, &resource).await {
            Ok(in_force) => {
                for (id, lock) in &wanted {
                    if let Some(held) = in_force.get(id) {
                        if lock.mode == "compliance" && held.mode == "governance" {
                            f.push(weak_lock(id, held, lock));
                        }
                        continue;
                    }
                    f.push(Finding::high(
                        "ec2.snapshot.unlocked",
                        id.as_str(),
                        format!(
                            "escrow EBS snapshot copy {id} has no snapshot lock in force, while \
                             its job asks for a {} lock of {} days: anyone holding the escrow \
                             operator role can delete it",
                            lock.mode, lock.days
                        ),
                        format!(
                            "run `escrow-sync run` (each run locks the job's copies), or aws ec2 \
                             lock-snapshot --snapshot-id {id} --lock-mode {} --lock-duration {}",
                            lock.mode, lock.days
                        ),
                    ));
                }
            }
            Err(err) => f.could_not(err, "the locks of escrow EBS snapshot copies")?,
        }
    }
    // Images of a locking job, or unclaimed ones (held to the strictest
    // lock), may need protection.
    let jobs = &a.inventory.ec2;
    if !jobs.iter().any(|j| j.images) || !jobs.iter().any(|j| j.lock.is_some()) {
        return Ok(());
    }
    let resource = format!("ec2 images of account {own}");
    let mut pages = ec2
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("tag-key").values(tags::SOURCE_IMAGE_ID).build())
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                let err = sdk_error(e, "ec2:DescribeImages", &resource);
                return f.could_not(err, "the deregistration protection of escrow AMI copies");
            }
        };
        for image in page.images() {
            let Some(id) = image.image_id() else { continue };
            let protected =
                image.deregistration_protection().is_some_and(|p| p.starts_with("enabled"));
            let job = tag(image.tags(), tags::JOB);
            let Some(lock) = lock_for(a, job) else { continue };
            if let Some(job) = unclaimed(a, job) {
                f.push(unclaimed_finding("image", id, job, lock));
            }
            if protected {
                continue;
            }
            f.push(Finding::high(
                "ec2.image.deregistration-unprotected",
                id,
                format!(
                    "escrow AMI copy {id} has no deregistration protection ({}), while its job \
                     asks for a lock: anyone holding the escrow operator role can deregister it",
                    image.deregistration_protection().unwrap_or("disabled")
                ),
                format!(
                    "run `escrow-sync run` (each run protects the job's AMI copies), or aws ec2 \
                     enable-image-deregistration-protection --image-id {id} --with-cooldown"
                ),
            ));
        }
    }
    Ok(())
}

async fn rds_copies(
    a: &Auditor,
    rds: &aws_sdk_rds::Client,
    keys: &mut KeyManagers<'_>,
    f: &mut Findings,
) -> Result<()> {
    let own = &a.inventory.escrow_account;
    let escrow_copy = |tags: &[aws_sdk_rds::types::Tag]| {
        tags.iter().any(|t| t.key() == Some(tags::SOURCE_SNAPSHOT_ID))
    };
    // (id, key) of every escrow copy, DB and cluster snapshots alike.
    let mut copies: Vec<(String, Option<String>)> = Vec::new();
    if a.inventory.rds.iter().any(|j| j.db) {
        let resource = format!("rds db snapshots of account {own}");
        let mut pages = rds.describe_db_snapshots().snapshot_type("manual").into_paginator().send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(p) => copies.extend(
                    p.db_snapshots().iter().filter(|s| escrow_copy(s.tag_list())).filter_map(|s| {
                        let id = s.db_snapshot_identifier()?.to_string();
                        Some((id, s.kms_key_id().map(str::to_string)))
                    }),
                ),
                Err(e) => {
                    let err = sdk_error(e, "rds:DescribeDBSnapshots", &resource);
                    return f.could_not(err, "the keys of escrow RDS snapshot copies");
                }
            }
        }
    }
    if a.inventory.rds.iter().any(|j| j.cluster) {
        let resource = format!("rds cluster snapshots of account {own}");
        let mut pages =
            rds.describe_db_cluster_snapshots().snapshot_type("manual").into_paginator().send();
        while let Some(page) = pages.next().await {
            match page {
                Ok(p) => copies.extend(
                    p.db_cluster_snapshots()
                        .iter()
                        .filter(|s| escrow_copy(s.tag_list()))
                        .filter_map(|s| {
                            let id = s.db_cluster_snapshot_identifier()?.to_string();
                            Some((id, s.kms_key_id().map(str::to_string)))
                        }),
                ),
                Err(e) => {
                    let err = sdk_error(e, "rds:DescribeDBClusterSnapshots", &resource);
                    return f.could_not(err, "the keys of escrow Aurora snapshot copies");
                }
            }
        }
    }
    for (id, key) in copies {
        let Some(key) = key else { continue };
        if keys.aws_managed(&key, f).await? == Some(true) {
            f.push(Finding::new(
                Severity::Medium,
                "rds.snapshot.aws-managed-key",
                format!("rds snapshot {id}"),
                format!(
                    "escrow RDS snapshot copy {id} is encrypted under the AWS-managed key {key} \
                     (aws/rds), not a customer-managed escrow key: it cannot be shared with a \
                     recovery account, so restore cannot use it"
                ),
                aws_key_fix("snapshot", &id),
            ));
        }
    }
    Ok(())
}

async fn redshift_copies(
    a: &Auditor,
    redshift: &aws_sdk_redshift::Client,
    keys: &mut KeyManagers<'_>,
    f: &mut Findings,
) -> Result<()> {
    let own = &a.inventory.escrow_account;
    let resource = format!("redshift snapshots of account {own}");
    let mut pages = redshift
        .describe_cluster_snapshots()
        .owner_account(own)
        .tag_keys(tags::SOURCE_SNAPSHOT_ID)
        .into_paginator()
        .send();
    let mut copies = Vec::new();
    while let Some(page) = pages.next().await {
        match page {
            Ok(p) => copies.extend(
                p.snapshots()
                    .iter()
                    .filter(|s| s.owner_account().is_none_or(|o| o == own))
                    .filter(|s| s.encrypted() == Some(true))
                    .filter_map(|s| {
                        let id = s.snapshot_identifier()?.to_string();
                        Some((id, s.kms_key_id().filter(|k| !k.is_empty()).map(str::to_string)))
                    }),
            ),
            Err(e) => {
                let err = sdk_error(e, "redshift:DescribeClusterSnapshots", &resource);
                return f.could_not(err, "the keys of escrow Redshift snapshot copies");
            }
        }
    }
    for (id, key) in copies {
        let managed = match &key {
            Some(k) => keys.aws_managed(k, f).await? == Some(true),
            // Encrypted with no key id: Redshift's default key.
            None => true,
        };
        if managed {
            let key = key.as_deref().unwrap_or("the default Redshift key");
            f.push(Finding::new(
                Severity::Medium,
                "redshift.snapshot.aws-managed-key",
                format!("redshift snapshot {id}"),
                format!(
                    "escrow Redshift snapshot copy {id} is encrypted under the AWS-managed key \
                     {key} (aws/redshift), not a customer-managed escrow key: restore cannot \
                     share it with a recovery account"
                ),
                aws_key_fix("snapshot", &id),
            ));
        }
    }
    Ok(())
}
