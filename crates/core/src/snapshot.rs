//! Restoring snapshot copies from escrow into a recovery account, the same
//! way for every snapshot kind (EBS snapshots and AMIs, RDS DB and cluster
//! snapshots, Redshift snapshots).
//!
//! A service crate implements [`SnapshotRestore`]: which escrow copies
//! there are as of a time, how one is shared with the recovery account,
//! copied into it (where the service can copy across accounts), checked
//! against the escrow copy, and cleaned up. [`restore`] is the one
//! orchestration over it:
//!
//! - a dry run (neither `apply` nor `drill`) says what would be shared and
//!   changes nothing;
//! - `apply` shares each copy with the recovery account; with `copy`, the
//!   recovery account copies it and the share is removed again;
//! - `drill` shares and copies each, checks the copy against the escrow
//!   copy, then deletes the copies whatever happened (a kind that cannot
//!   copy across accounts instead checks that the recovery account sees the
//!   share, and revokes it).

use std::time::SystemTime;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::{Error, ErrorKind, Result};

/// What a restore of snapshot copies is asked to do.
#[non_exhaustive]
#[derive(Debug, Clone, Default)]
pub struct SnapshotRestoreRequest {
    /// The newest escrow copy at or before this time (`None`: the newest).
    pub at: Option<SystemTime>,
    /// Share the copies with the recovery account (else a dry run).
    pub apply: bool,
    /// Also copy them into the recovery account (and remove the share).
    pub copy: bool,
    /// Share, copy, check, then clean up whatever happened.
    pub drill: bool,
    /// The job restored, as refusals name it.
    pub job: String,
    /// Stops before the next copy when it fires.
    pub cancel: CancellationToken,
    /// The hard stop: stops waiting for a copy (or a share check) in
    /// flight; a drill still deletes what it started.
    pub stop: CancellationToken,
}

impl SnapshotRestoreRequest {
    /// A dry run of job `job` as of the newest copies.
    pub fn new(job: impl Into<String>) -> Self {
        SnapshotRestoreRequest { job: job.into(), ..Default::default() }
    }

    /// As of `at` (`None`: the newest).
    pub fn with_at(mut self, at: Option<SystemTime>) -> Self {
        self.at = at;
        self
    }

    /// Share the copies with the recovery account.
    pub fn with_apply(mut self, apply: bool) -> Self {
        self.apply = apply;
        self
    }

    /// Copy them into the recovery account too.
    pub fn with_copy(mut self, copy: bool) -> Self {
        self.copy = copy;
        self
    }

    /// A drill: share, copy, check, clean up.
    pub fn with_drill(mut self, drill: bool) -> Self {
        self.drill = drill;
        self
    }

    /// Cancellation.
    pub fn with_cancel(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// The hard stop (see [`SnapshotRestoreRequest::stop`]).
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// `fut`, unless the hard stop comes first (then a cancellation error
    /// about `what`).
    async fn or_stopped<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => {
                Err(Error::new(ErrorKind::Cancelled, "stopped in flight:", what, ""))
            }
            res = fut => res,
        }
    }
}

/// One escrow copy as the orchestration reports it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotCopy {
    /// The escrow copy's id.
    pub id: String,
    /// The primary snapshot or image it is a copy of.
    pub source_id: String,
    /// How reports name it (`escrow copy snap-1`, `escrow AMI ami-1`).
    pub label: String,
    /// What kind of copies it is among, plural (`snapshots`, `AMIs`): an
    /// interrupted restore says which were left.
    pub group: String,
    /// Its size in bytes.
    pub bytes: u64,
}

impl SnapshotCopy {
    /// Copy `id` of `source_id`, named `label`, among `group`, of `bytes`.
    pub fn new(
        id: impl Into<String>,
        source_id: impl Into<String>,
        label: impl Into<String>,
        group: impl Into<String>,
        bytes: u64,
    ) -> Self {
        SnapshotCopy {
            id: id.into(),
            source_id: source_id.into(),
            label: label.into(),
            group: group.into(),
            bytes,
        }
    }
}

/// A copy in the recovery account, complete.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredCopy {
    /// Its id in the recovery account.
    pub id: String,
    /// Its size in bytes.
    pub bytes: u64,
    /// What differs from the escrow copy (`the copy snap-r has 4 GiB, the
    /// escrow copy 8 GiB`), if anything.
    pub mismatch: Option<String>,
}

impl RecoveredCopy {
    /// Copy `id` of `bytes`, with what differs from the escrow copy.
    pub fn new(id: impl Into<String>, bytes: u64, mismatch: Option<String>) -> Self {
        RecoveredCopy { id: id.into(), bytes, mismatch }
    }
}

/// A restore drill's verification and clean-up, for every kind of job.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DrillReport {
    /// What matches escrow: objects identical byte for byte, items equal to
    /// escrow's, snapshot copies matching the escrow copy (shares the
    /// recovery account sees).
    pub verified: u64,
    /// What differs from escrow, or is missing in the target.
    pub mismatched: Vec<String>,
    /// What was deleted afterwards: object versions (S3), recovered copies
    /// (EBS snapshots, AMIs with their snapshots, RDS snapshots), or shares
    /// revoked (Redshift).
    pub cleaned_items: u64,
    /// Whether the drill's own target (its bucket or table) was deleted
    /// afterwards; snapshot drills: whether everything they made was.
    pub cleaned_target: bool,
    /// What could not be cleaned up, and what to do by hand.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
}

/// What a snapshot restore did (a dry run: would do).
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotRestoreOutcome {
    /// Where the copies are (`ebs://escrow/us-east-1, ami://escrow/us-east-1`).
    pub source: String,
    /// Where they go (`ebs://333333333333/us-east-1`).
    pub target: String,
    /// The recovery account.
    pub target_account: String,
    /// Copies shared or copied (a dry run: that would be).
    pub restored: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Copies that failed, with why, and shares left in place.
    pub failed: Vec<String>,
    /// What was done, and what the operator should know.
    pub notes: Vec<String>,
    /// A drill's check and clean-up.
    pub drill: Option<DrillReport>,
}

/// One snapshot kind's restore steps, with escrow's and the recovery
/// account's clients inside. Errors name the resource; texts are the
/// report's.
#[async_trait]
pub trait SnapshotRestore: Send + Sync {
    /// One escrow copy, as the implementation knows it.
    type Copy: Send + Sync;

    /// The recovery account.
    fn target_account(&self) -> &str;

    /// Where the copies are held by `owner` (`escrow`, or the recovery
    /// account): one `scheme://owner/region` per kind restored.
    fn locations(&self, owner: &str) -> Vec<String>;

    /// The escrow copies to restore: the selected ones of the primary, per
    /// lineage the newest at or before `at`, in the order to restore them.
    async fn escrow_copies(&self, at: Option<SystemTime>) -> Result<Vec<Self::Copy>>;

    /// How the report names `copy`.
    fn describe(&self, copy: &Self::Copy) -> SnapshotCopy;

    /// What the operator should know about `copies` before anything (how
    /// the job selects, which keys must be granted).
    fn notes(&self, copies: &[Self::Copy]) -> Vec<String> {
        let _ = copies;
        Vec::new()
    }

    /// A dry run's note for `copy` (`would share ...`).
    fn plan_note(&self, copy: &Self::Copy) -> String;

    /// The note for `copy` shared and left shared (`--apply` without
    /// copying).
    fn shared_note(&self, copy: &Self::Copy) -> String;

    /// Shares `copy` with the recovery account (escrow credentials).
    async fn share(&self, copy: &Self::Copy) -> Result<()>;

    /// Removes the share of `copy`.
    async fn unshare(&self, copy: &Self::Copy) -> Result<()>;

    /// Whether a share of `copy` that failed may be half made (an AMI's
    /// launch permission without all its snapshots), and is taken back.
    fn retracts_failed_share(&self, copy: &Self::Copy) -> bool {
        let _ = copy;
        false
    }

    /// Whether the service copies a shared snapshot into another account;
    /// when not, a drill checks the share instead ([`Self::check_share`]).
    fn copies_across_accounts(&self) -> bool {
        true
    }

    /// The refusal of `--copy` for job `job`, when this kind cannot copy.
    fn refuse_copy(&self, job: &str) -> Option<Error> {
        (!self.copies_across_accounts()).then(|| {
            Error::invalid_config(format!(
                "job {job}: this kind cannot copy a snapshot into another account, so --copy \
                 does not apply: drop --copy"
            ))
        })
    }

    /// Starts copying the shared `copy` into the recovery account
    /// (recovery credentials); answers the new copy's id.
    async fn start_copy(&self, copy: &Self::Copy) -> Result<String> {
        let _ = copy;
        Err(unsupported("copy"))
    }

    /// Waits for the recovery account's copy `id` of `copy`, and checks it
    /// against the escrow copy.
    async fn wait_copy(&self, copy: &Self::Copy, id: &str) -> Result<RecoveredCopy> {
        let _ = (copy, id);
        Err(unsupported("wait"))
    }

    /// Deletes the recovery account's copy `id` of `copy` (a drill's own);
    /// one already gone counts as deleted.
    async fn delete_copy(&self, copy: &Self::Copy, id: &str) -> Result<()> {
        let _ = (copy, id);
        Err(unsupported("delete"))
    }

    /// How a clean-up failure names the recovery account's copy `id` of
    /// `copy` (`snapshot snap-r`).
    fn copy_label(&self, copy: &Self::Copy, id: &str) -> String {
        let _ = copy;
        id.to_string()
    }

    /// A drill of a kind that cannot copy: checks the recovery account sees
    /// the share of `copy`, available. Errors of kind NotFound or Failed
    /// are mismatches; others are failures.
    async fn check_share(&self, copy: &Self::Copy) -> Result<()> {
        let _ = copy;
        Err(unsupported("check"))
    }

    /// The note for a share the recovery account saw.
    fn seen_note(&self, copy: &Self::Copy) -> String {
        let c = self.describe(copy);
        format!("account {} saw {} (of {}) shared", self.target_account(), c.label, c.source_id)
    }

    /// The clean-up error for what a drill `left` behind: what to do by
    /// hand.
    fn left_behind(&self, left: &[String]) -> String {
        format!("delete these in account {} by hand: {}", self.target_account(), left.join("; "))
    }
}

fn unsupported(what: &str) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        "restore",
        "snapshot copy",
        format!("this kind cannot {what} a copy in the recovery account"),
    )
}

/// Restores `kind`'s escrow copies as `request` asks (see the module
/// docs). A failure of one copy is recorded and the next one goes on; an
/// interruption leaves the rest; whatever happened, a drill deletes every
/// copy it started (or revokes every share it made) and says what it could
/// not clean up. Fails only when the escrow copies cannot be listed or the
/// request is refused.
pub async fn restore<R>(
    kind: &R,
    request: &SnapshotRestoreRequest,
) -> Result<SnapshotRestoreOutcome>
where
    R: SnapshotRestore + ?Sized,
{
    if request.copy
        && let Some(refusal) = kind.refuse_copy(&request.job)
    {
        return Err(refusal);
    }
    let account = kind.target_account().to_string();
    let chosen = kind.escrow_copies(request.at).await?;
    let mut out = SnapshotRestoreOutcome {
        source: kind.locations("escrow").join(", "),
        target: kind.locations(&account).join(", "),
        target_account: account.clone(),
        restored: chosen.len() as u64,
        bytes: chosen.iter().map(|c| kind.describe(c).bytes).sum(),
        failed: Vec::new(),
        notes: kind.notes(&chosen),
        drill: None,
    };
    if !request.apply && !request.drill {
        out.notes.extend(chosen.iter().map(|c| kind.plan_note(c)));
        return Ok(out);
    }
    let copy = request.copy || request.drill;
    let across = kind.copies_across_accounts();
    let mut drill = DrillReport::default();
    let mut recovered: Vec<(&R::Copy, String)> = Vec::new();
    let mut left = Vec::new();
    let mut interrupted: Option<String> = None;
    out.restored = 0;
    out.bytes = 0;
    for c in &chosen {
        let info = kind.describe(c);
        if interrupted.as_deref() == Some(info.group.as_str()) {
            continue;
        }
        if request.cancel.is_cancelled() || request.stop.is_cancelled() {
            out.failed.push(format!("interrupted: the remaining {} were not restored", info.group));
            interrupted = Some(info.group.clone());
            continue;
        }
        let src = &info.source_id;
        if let Err(e) = kind.share(c).await {
            out.failed.push(format!("{src}: {}", e.chain()));
            // A share half made is taken back.
            if kind.retracts_failed_share(c)
                && let Err(e) = kind.unshare(c).await
            {
                out.failed.push(format!(
                    "{src}: {} may still be shared with account {account}: {}",
                    info.label,
                    e.chain()
                ));
            }
            continue;
        }
        if !across {
            if !request.drill {
                out.restored += 1;
                out.bytes += info.bytes;
                out.notes.push(kind.shared_note(c));
                continue;
            }
            let seen = request.or_stopped(src, kind.check_share(c)).await;
            // The share has served once it is seen (or not).
            match kind.unshare(c).await {
                Ok(()) => drill.cleaned_items += 1,
                Err(e) => left.push(format!("{}: {}", info.id, e.chain())),
            }
            match seen {
                Ok(()) => {
                    out.restored += 1;
                    out.bytes += info.bytes;
                    drill.verified += 1;
                    out.notes.push(kind.seen_note(c));
                }
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Failed) => {
                    drill.mismatched.push(format!("{src}: {}", e.chain()));
                }
                Err(e) => out.failed.push(format!("{src}: {}", e.chain())),
            }
            continue;
        }
        if !copy {
            out.restored += 1;
            out.bytes += info.bytes;
            out.notes.push(kind.shared_note(c));
            continue;
        }
        let copied = match kind.start_copy(c).await {
            Ok(id) => {
                // Known from now on, so a drill deletes it whatever follows.
                recovered.push((c, id.clone()));
                request.or_stopped(src, kind.wait_copy(c, &id)).await
            }
            Err(e) => Err(e),
        };
        // The share has served once the copy is done (or failed).
        if let Err(e) = kind.unshare(c).await {
            out.failed.push(format!(
                "{src}: {} is still shared with account {account}: {}",
                info.label,
                e.chain()
            ));
        }
        match copied {
            Ok(done) => {
                out.restored += 1;
                out.bytes += done.bytes;
                out.notes.push(format!("copied {} (of {src}) to {}", info.label, done.id));
                match done.mismatch {
                    None => drill.verified += 1,
                    Some(why) => drill.mismatched.push(format!("{src}: {why}")),
                }
            }
            Err(e) => out.failed.push(format!("{src}: {}", e.chain())),
        }
    }
    if request.drill {
        for (c, id) in &recovered {
            match kind.delete_copy(c, id).await {
                Ok(()) => drill.cleaned_items += 1,
                Err(e) => left.push(format!("{}: {}", kind.copy_label(c, id), e.chain())),
            }
        }
        drill.cleaned_target = left.is_empty();
        drill.cleanup_error = (!left.is_empty()).then(|| kind.left_behind(&left));
        out.drill = Some(drill);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A fake kind: copies `c1`, `c2` (group `snapshots`) and `i1` (group
    /// `AMIs`); every call recorded; failures injected by copy id.
    #[derive(Default)]
    struct Fake {
        copies: Vec<(&'static str, &'static str)>,
        calls: Mutex<Vec<String>>,
        share_fails: Vec<&'static str>,
        unshare_fails: Vec<&'static str>,
        wait_fails: Vec<&'static str>,
        delete_fails: Vec<&'static str>,
        differs: Vec<&'static str>,
        unseen: Vec<&'static str>,
        share_only: bool,
        cancel_after_share: Option<CancellationToken>,
    }

    impl Fake {
        fn new() -> Self {
            Fake {
                copies: vec![("c1", "snapshots"), ("c2", "snapshots"), ("i1", "AMIs")],
                ..Default::default()
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn call(&self, what: String) {
            self.calls.lock().unwrap().push(what);
        }

        fn fail(list: &[&str], id: &str, kind: ErrorKind, op: &str) -> Result<()> {
            if list.contains(&id) { Err(Error::new(kind, op, id, "injected")) } else { Ok(()) }
        }
    }

    #[async_trait]
    impl SnapshotRestore for Fake {
        type Copy = (&'static str, &'static str);

        fn target_account(&self) -> &str {
            "333333333333"
        }

        fn locations(&self, owner: &str) -> Vec<String> {
            vec![format!("fake://{owner}/r1")]
        }

        async fn escrow_copies(&self, at: Option<SystemTime>) -> Result<Vec<Self::Copy>> {
            self.call(format!("list {}", at.is_some()));
            Ok(self.copies.clone())
        }

        fn describe(&self, copy: &Self::Copy) -> SnapshotCopy {
            SnapshotCopy::new(
                copy.0,
                format!("src-{}", copy.0),
                format!("escrow copy {}", copy.0),
                copy.1,
                10,
            )
        }

        fn notes(&self, copies: &[Self::Copy]) -> Vec<String> {
            vec![format!("{} copies", copies.len())]
        }

        fn plan_note(&self, copy: &Self::Copy) -> String {
            format!("would share {}", copy.0)
        }

        fn shared_note(&self, copy: &Self::Copy) -> String {
            format!("shared {}", copy.0)
        }

        async fn share(&self, copy: &Self::Copy) -> Result<()> {
            self.call(format!("share {}", copy.0));
            if let Some(c) = &self.cancel_after_share {
                c.cancel();
            }
            Fake::fail(&self.share_fails, copy.0, ErrorKind::AccessDenied, "share")
        }

        async fn unshare(&self, copy: &Self::Copy) -> Result<()> {
            self.call(format!("unshare {}", copy.0));
            Fake::fail(&self.unshare_fails, copy.0, ErrorKind::Transient, "unshare")
        }

        fn retracts_failed_share(&self, copy: &Self::Copy) -> bool {
            copy.1 == "AMIs"
        }

        fn copies_across_accounts(&self) -> bool {
            !self.share_only
        }

        async fn start_copy(&self, copy: &Self::Copy) -> Result<String> {
            self.call(format!("copy {}", copy.0));
            Ok(format!("r-{}", copy.0))
        }

        async fn wait_copy(&self, copy: &Self::Copy, id: &str) -> Result<RecoveredCopy> {
            self.call(format!("wait {id}"));
            Fake::fail(&self.wait_fails, copy.0, ErrorKind::Failed, "wait")?;
            let why = self.differs.contains(&copy.0).then(|| format!("the copy {id} has 5 bytes"));
            Ok(RecoveredCopy::new(id, 9, why))
        }

        async fn delete_copy(&self, copy: &Self::Copy, id: &str) -> Result<()> {
            self.call(format!("delete {id}"));
            Fake::fail(&self.delete_fails, copy.0, ErrorKind::AccessDenied, "delete")
        }

        fn copy_label(&self, _copy: &Self::Copy, id: &str) -> String {
            format!("snapshot {id}")
        }

        async fn check_share(&self, copy: &Self::Copy) -> Result<()> {
            self.call(format!("check {}", copy.0));
            Fake::fail(&self.unseen, copy.0, ErrorKind::NotFound, "check")
        }
    }

    fn drill() -> SnapshotRestoreRequest {
        SnapshotRestoreRequest::new("job1").with_drill(true)
    }

    #[tokio::test]
    async fn a_dry_run_lists_and_changes_nothing() {
        let fake = Fake::new();
        let out = restore(&fake, &SnapshotRestoreRequest::new("job1")).await.unwrap();
        assert_eq!(fake.calls(), ["list false"]);
        assert_eq!((out.restored, out.bytes), (3, 30));
        assert_eq!(out.notes, ["3 copies", "would share c1", "would share c2", "would share i1"]);
        assert_eq!(out.source, "fake://escrow/r1");
        assert_eq!(out.target, "fake://333333333333/r1");
        assert!(out.failed.is_empty() && out.drill.is_none());
    }

    #[tokio::test]
    async fn apply_shares_and_leaves_the_shares() {
        let fake = Fake::new();
        let out = restore(&fake, &SnapshotRestoreRequest::new("j").with_apply(true)).await.unwrap();
        assert_eq!(fake.calls(), ["list false", "share c1", "share c2", "share i1"]);
        assert_eq!((out.restored, out.bytes), (3, 30));
        assert_eq!(out.notes[1..], ["shared c1", "shared c2", "shared i1"]);
        assert!(out.drill.is_none());
    }

    #[tokio::test]
    async fn apply_with_copy_copies_unshares_and_keeps_the_copies() {
        let fake = Fake::new();
        let req = SnapshotRestoreRequest::new("j").with_apply(true).with_copy(true);
        let out = restore(&fake, &req).await.unwrap();
        assert!(fake.calls().iter().all(|c| !c.starts_with("delete")), "{:?}", fake.calls());
        assert_eq!(fake.calls().iter().filter(|c| c.starts_with("unshare")).count(), 3);
        assert_eq!((out.restored, out.bytes), (3, 27), "the recovered copies' bytes");
        assert_eq!(out.notes[1], "copied escrow copy c1 (of src-c1) to r-c1");
        assert!(out.drill.is_none());
    }

    #[tokio::test]
    async fn a_drill_cleans_up_after_a_failed_check_and_after_an_error() {
        let fake = Fake { differs: vec!["c1"], wait_fails: vec!["c2"], ..Fake::new() };
        let out = restore(&fake, &drill()).await.unwrap();
        assert_eq!(
            fake.calls(),
            [
                "list false",
                "share c1",
                "copy c1",
                "wait r-c1",
                "unshare c1",
                "share c2",
                "copy c2",
                "wait r-c2",
                "unshare c2",
                "share i1",
                "copy i1",
                "wait r-i1",
                "unshare i1",
                "delete r-c1",
                "delete r-c2",
                "delete r-i1",
            ]
        );
        let d = out.drill.unwrap();
        assert_eq!(d.verified, 1);
        assert_eq!(d.mismatched, ["src-c1: the copy r-c1 has 5 bytes"]);
        assert_eq!(out.failed.len(), 1);
        assert!(out.failed[0].starts_with("src-c2: wait c2: failed: injected"), "{:?}", out.failed);
        assert_eq!((d.cleaned_items, d.cleaned_target, d.cleanup_error), (3, true, None));
        assert_eq!(out.restored, 2);
    }

    #[tokio::test]
    async fn what_a_drill_cannot_delete_or_unshare_is_reported() {
        let fake = Fake { delete_fails: vec!["c2"], unshare_fails: vec!["c1"], ..Fake::new() };
        let out = restore(&fake, &drill()).await.unwrap();
        let d = out.drill.unwrap();
        assert_eq!((d.cleaned_items, d.cleaned_target), (2, false));
        let e = d.cleanup_error.unwrap();
        assert!(
            e.starts_with("delete these in account 333333333333 by hand: snapshot r-c2: delete c2"),
            "{e}"
        );
        assert!(
            out.failed[0].starts_with(
                "src-c1: escrow copy c1 is still shared with account 333333333333: unshare c1"
            ),
            "{:?}",
            out.failed
        );
    }

    #[tokio::test]
    async fn a_failed_share_goes_on_with_the_next_and_a_half_share_is_taken_back() {
        let fake = Fake { share_fails: vec!["c1", "i1"], unshare_fails: vec!["i1"], ..Fake::new() };
        let out = restore(&fake, &drill()).await.unwrap();
        let calls = fake.calls();
        assert!(!calls.contains(&"copy c1".to_string()) && !calls.contains(&"unshare c1".into()));
        assert!(calls.contains(&"unshare i1".to_string()), "{calls:?}");
        assert_eq!(out.failed.len(), 3, "{:?}", out.failed);
        assert!(out.failed[0].starts_with("src-c1: share c1: access denied"));
        assert!(out.failed[2].starts_with("src-i1: escrow copy i1 may still be shared"));
        assert_eq!(out.drill.unwrap().cleaned_items, 1, "c2's copy");
    }

    #[tokio::test]
    async fn an_interruption_leaves_the_rest_of_each_group_and_still_cleans_up() {
        let cancel = CancellationToken::new();
        let fake = Fake { cancel_after_share: Some(cancel.clone()), ..Fake::new() };
        let out = restore(&fake, &drill().with_cancel(cancel)).await.unwrap();
        assert_eq!(
            out.failed,
            [
                "interrupted: the remaining snapshots were not restored",
                "interrupted: the remaining AMIs were not restored"
            ]
        );
        assert!(fake.calls().contains(&"delete r-c1".to_string()), "{:?}", fake.calls());
        assert_eq!(out.restored, 1);
    }

    #[tokio::test]
    async fn a_share_only_kind_checks_the_share_and_revokes_it() {
        let fake =
            Fake { share_only: true, unseen: vec!["c2"], unshare_fails: vec!["i1"], ..Fake::new() };
        let out = restore(&fake, &drill()).await.unwrap();
        assert!(fake.calls().iter().all(|c| !c.starts_with("copy")), "{:?}", fake.calls());
        let d = out.drill.unwrap();
        assert_eq!(d.verified, 2);
        assert_eq!(d.mismatched.len(), 1);
        assert!(d.mismatched[0].starts_with("src-c2: check c2: not found"));
        assert_eq!((d.cleaned_items, d.cleaned_target), (2, false));
        assert!(d.cleanup_error.unwrap().contains("i1: unshare i1"));
        assert_eq!(out.notes[1], "account 333333333333 saw escrow copy c1 (of src-c1) shared");

        // --apply alone shares and keeps the share; --copy is refused.
        let fake = Fake { share_only: true, ..Fake::new() };
        let out = restore(&fake, &SnapshotRestoreRequest::new("j").with_apply(true)).await.unwrap();
        assert_eq!(out.restored, 3);
        assert!(fake.calls().iter().all(|c| !c.starts_with("unshare")));
        let req = SnapshotRestoreRequest::new("j").with_apply(true).with_copy(true);
        let err = restore(&fake, &req).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("job j"), "{err}");
    }
}
