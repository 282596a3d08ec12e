//! EBS Snapshot Lock on escrow's copies, and deregistration protection on
//! its AMI copies: what a job asks for ([`SnapshotLock`]), how a copy's lock
//! is read (DescribeLockedSnapshots, paged, by snapshot ids), set and
//! renewed (LockSnapshot), and what `prune` and `verify` make of it.
//!
//! A lock is set with `LockDuration = days` (and `CoolOffPeriod` in
//! compliance mode when asked), and renewed, once it lapses within
//! `renew_within_days`, with `ExpirationDate = now + days`: a lock is never
//! shortened, and a renewal never weakens a lock's mode (a compliance lock
//! stays one whatever the job says). A governance lock on a copy whose job
//! asks for compliance is locked again in compliance mode (AWS lets a
//! governance lock change to compliance): a governance lock holds nothing
//! against whoever may call `ec2:LockSnapshot`, which can shorten it.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sdk_ec2::types::{Image, LockMode as SdkLockMode, LockState, LockedSnapshotsInfo};

use escrow_sync_aws::sdk_error;
use escrow_sync_core::time::{epoch, from_epoch, rfc3339};
use escrow_sync_core::{LockUpkeep, Result};

/// How EBS Snapshot Lock holds a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// Nobody can unlock or shorten the lock once its cooling-off period
    /// (if any) is over; the snapshot cannot be deleted before it lapses.
    Compliance,
    /// Users allowed `ec2:UnlockSnapshot` can unlock it, and users allowed
    /// `ec2:LockSnapshot` can shorten it (to a moment from now) or change
    /// its mode.
    Governance,
}

impl LockMode {
    /// Reads `compliance` or `governance` (any case).
    pub fn parse(text: &str) -> Option<LockMode> {
        match text.to_ascii_lowercase().as_str() {
            "compliance" => Some(LockMode::Compliance),
            "governance" => Some(LockMode::Governance),
            _ => None,
        }
    }

    /// `compliance` or `governance`, as EC2 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Compliance => "compliance",
            LockMode::Governance => "governance",
        }
    }

    fn sdk(self) -> SdkLockMode {
        match self {
            LockMode::Compliance => SdkLockMode::Compliance,
            LockMode::Governance => SdkLockMode::Governance,
        }
    }
}

/// The lock a job keeps on every escrow snapshot copy (and every AMI
/// copy's backing snapshots), and the deregistration protection on every
/// AMI copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotLock {
    /// The lock mode.
    pub mode: LockMode,
    /// How long each lock lasts, in days, from when it is set or renewed.
    pub days: u32,
    /// Compliance mode: the hours after locking during which the lock can
    /// still be lifted (0: none; AWS allows 1 to 72).
    pub cool_off_hours: u32,
    /// A lock lapsing within this many days is renewed to now + `days`.
    pub renew_within_days: u32,
}

impl SnapshotLock {
    /// A `mode` lock of `days` days, no cooling-off period, renewed within
    /// a quarter of `days` (rounded up) of lapsing.
    pub fn new(mode: LockMode, days: u32) -> Self {
        SnapshotLock { mode, days, cool_off_hours: 0, renew_within_days: days.div_ceil(4) }
    }

    /// The compliance cooling-off period in hours (0: none).
    pub fn with_cool_off_hours(mut self, hours: u32) -> Self {
        self.cool_off_hours = hours;
        self
    }

    /// Renews locks lapsing within `days` days.
    pub fn with_renew_within_days(mut self, days: u32) -> Self {
        self.renew_within_days = days;
        self
    }

    /// Whether AMI copies get deregistration protection with the 24-hour
    /// cooldown (compliance mode): disabling the protection then leaves
    /// the image protected for another day, time for an alarm to be seen.
    pub(crate) fn with_cooldown(&self) -> bool {
        self.mode == LockMode::Compliance
    }
}

/// One snapshot's lock as DescribeLockedSnapshots reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockView {
    /// `compliance`, `compliance-cooloff`, `governance` or `expired`.
    pub state: String,
    /// When it lapses (epoch seconds), when reported.
    pub expires: Option<i64>,
}

impl LockView {
    fn from_info(info: &LockedSnapshotsInfo) -> Self {
        LockView {
            state: info.lock_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
            expires: info.lock_expires_on().map(|t| t.secs()),
        }
    }

    /// Whether it keeps the snapshot from deletion at `now`.
    pub fn in_force(&self, now: SystemTime) -> bool {
        let locked = [
            LockState::Compliance.as_str(),
            LockState::ComplianceCooloff.as_str(),
            LockState::Governance.as_str(),
        ]
        .contains(&self.state.as_str());
        locked && self.expires.is_none_or(|t| t > epoch(now))
    }

    /// Whether it is weaker than `lock` asks: a governance lock when the
    /// job asks for compliance.
    pub fn weaker_than(&self, lock: &SnapshotLock) -> bool {
        lock.mode == LockMode::Compliance && self.mode() == Some(LockMode::Governance)
    }

    /// The lock's mode: compliance for both compliance states.
    fn mode(&self) -> Option<LockMode> {
        match self.state.as_str() {
            "compliance" | "compliance-cooloff" => Some(LockMode::Compliance),
            "governance" => Some(LockMode::Governance),
            _ => None,
        }
    }

    /// `locked (compliance) until 2027-01-05T00:00:00Z`.
    pub fn reason(&self) -> String {
        let mode: &str = match self.mode() {
            Some(m) => m.as_str(),
            None => &self.state,
        };
        match self.expires {
            Some(t) => format!("locked ({mode}) until {}", rfc3339(from_epoch(t))),
            None => format!("locked ({mode})"),
        }
    }
}

/// What to do about one snapshot's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LockAction {
    /// In force and not due: nothing.
    Keep,
    /// No lock in force, or one weaker than the job's (governance when it
    /// asks for compliance): LockSnapshot with the job's mode and duration.
    Lock,
    /// Lapses within the window: LockSnapshot with this mode and
    /// ExpirationDate (epoch seconds), later than the lock's expiry.
    Renew { mode: LockMode, until: i64 },
}

/// What `lock` asks for a snapshot whose lock is `current` at `now`.
pub(crate) fn lock_action(
    current: Option<&LockView>,
    lock: &SnapshotLock,
    now: SystemTime,
) -> LockAction {
    let Some(current) = current.filter(|c| c.in_force(now) && !c.weaker_than(lock)) else {
        // No lock in force, or a governance lock where the job asks for
        // compliance: locked again in compliance mode for `days` from now
        // (AWS allows governance -> compliance). However long the governance
        // lock ran, whoever may call ec2:LockSnapshot could shorten it.
        return LockAction::Lock;
    };
    let now = epoch(now);
    let window = i64::from(lock.renew_within_days) * 86_400;
    let until = now + i64::from(lock.days) * 86_400;
    match current.expires {
        // Lapses within the window, and the renewal lengthens it.
        Some(expires) if expires <= now + window && until > expires => LockAction::Renew {
            // Never weaken: a compliance lock stays one.
            mode: if current.mode() == Some(LockMode::Compliance) {
                LockMode::Compliance
            } else {
                lock.mode
            },
            until,
        },
        _ => LockAction::Keep,
    }
}

/// How many snapshot ids one DescribeLockedSnapshots request names.
const IDS_PER_REQUEST: usize = 200;

/// The locks of `ids` (those with a lock, expired ones included), by
/// snapshot id: DescribeLockedSnapshots by ids, each request paged.
pub(crate) async fn describe_locks(
    ec2: &aws_sdk_ec2::Client,
    ids: &[String],
    resource: &str,
) -> Result<BTreeMap<String, LockView>> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(IDS_PER_REQUEST) {
        let mut token: Option<String> = None;
        loop {
            let page = ec2
                .describe_locked_snapshots()
                .set_snapshot_ids(Some(chunk.to_vec()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error(e, "ec2:DescribeLockedSnapshots", resource))?;
            for info in page.snapshots() {
                if let Some(id) = info.snapshot_id() {
                    out.insert(id.to_string(), LockView::from_info(info));
                }
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    Ok(out)
}

/// Locks (or renews the locks of) the snapshots `ids` as `lock` asks, at
/// `now`: reads their locks once, then one LockSnapshot per snapshot due.
pub(crate) async fn keep_snapshots_locked(
    ec2: &aws_sdk_ec2::Client,
    lock: &SnapshotLock,
    ids: &[String],
    now: SystemTime,
    resource: &str,
) -> Result<LockUpkeep> {
    let mut upkeep = LockUpkeep::default();
    if ids.is_empty() {
        return Ok(upkeep);
    }
    let locks = describe_locks(ec2, ids, resource).await?;
    for id in ids {
        let named = format!("snapshot {id} ({resource})");
        match lock_action(locks.get(id), lock, now) {
            LockAction::Keep => upkeep.unchanged += 1,
            LockAction::Lock => {
                let cool_off = (lock.mode == LockMode::Compliance && lock.cool_off_hours > 0)
                    .then_some(lock.cool_off_hours as i32);
                ec2.lock_snapshot()
                    .snapshot_id(id)
                    .lock_mode(lock.mode.sdk())
                    .lock_duration(lock.days as i32)
                    .set_cool_off_period(cool_off)
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "ec2:LockSnapshot", &named))?;
                upkeep.locked += 1;
            }
            LockAction::Renew { mode, until } => {
                // A renewal never sends CoolOffPeriod: AWS refuses one for a
                // compliance lock past its cooling-off period.
                ec2.lock_snapshot()
                    .snapshot_id(id)
                    .lock_mode(mode.sdk())
                    .expiration_date(aws_smithy_types::DateTime::from_secs(until))
                    .send()
                    .await
                    .map_err(|e| sdk_error(e, "ec2:LockSnapshot", &named))?;
                upkeep.renewed += 1;
            }
        }
    }
    Ok(upkeep)
}

/// Whether an image's deregistration protection is on
/// (`enabled-with-cooldown`, `enabled-without-cooldown`).
pub(crate) fn protected(image: &Image) -> bool {
    image.deregistration_protection().is_some_and(|p| p.starts_with("enabled"))
}

/// Whether an image's deregistration protection still keeps it (on, or
/// off but within its cooldown): anything but absent or `disabled`.
pub(crate) fn protection_holds(image: &Image) -> bool {
    image.deregistration_protection().is_some_and(|p| !p.is_empty() && p != "disabled")
}

/// EnableImageDeregistrationProtection of `image_id`, with the 24-hour
/// cooldown when `lock` asks for it.
pub(crate) async fn protect_image(
    ec2: &aws_sdk_ec2::Client,
    image_id: &str,
    lock: &SnapshotLock,
    resource: &str,
) -> Result<()> {
    ec2.enable_image_deregistration_protection()
        .image_id(image_id)
        .with_cooldown(lock.with_cooldown())
        .send()
        .await
        .map_err(|e| {
            sdk_error(
                e,
                "ec2:EnableImageDeregistrationProtection",
                format!("{resource} ({image_id})"),
            )
        })?;
    Ok(())
}

/// The `verify` problem of a copy whose snapshot has no lock in force, or
/// one weaker than `lock` asks (governance where it asks for compliance);
/// `None` when its lock holds as asked at `now`.
pub(crate) fn lock_problem(
    what: &str,
    current: Option<&LockView>,
    lock: &SnapshotLock,
    now: SystemTime,
) -> Option<String> {
    let state = match current {
        Some(v) if v.in_force(now) && v.weaker_than(lock) => {
            return Some(format!(
                "{what}: its snapshot lock is {}, while the job's lock asks for compliance \
                 mode: whoever holds ec2:LockSnapshot can shorten a governance lock and then \
                 delete the copy; the next run locks it in compliance mode for {} days",
                v.reason(),
                lock.days
            ));
        }
        Some(v) if v.in_force(now) => return None,
        Some(v) if v.state == "expired" => "its snapshot lock expired".to_string(),
        Some(v) => format!("its snapshot lock is not in force ({})", v.reason()),
        None => "it has no snapshot lock".to_string(),
    };
    Some(format!(
        "{what}: {state}, while the job's lock asks for {} days in {} mode; the \
         next run locks it",
        lock.days,
        lock.mode.as_str()
    ))
}

/// Now, for lock decisions.
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: &str, expires_in_days: i64, now: SystemTime) -> LockView {
        LockView { state: state.into(), expires: Some(epoch(now) + expires_in_days * 86_400) }
    }

    #[test]
    fn copies_without_a_lock_in_force_are_locked() {
        let now = SystemTime::now();
        let lock = SnapshotLock::new(LockMode::Compliance, 100);
        assert_eq!(lock.renew_within_days, 25);
        assert_eq!(lock_action(None, &lock, now), LockAction::Lock);
        let expired = view("expired", -1, now);
        assert_eq!(lock_action(Some(&expired), &lock, now), LockAction::Lock);
        let lapsed = view("governance", -1, now);
        assert_eq!(lock_action(Some(&lapsed), &lock, now), LockAction::Lock);
    }

    #[test]
    fn only_locks_lapsing_within_the_window_are_renewed_and_never_weakened() {
        let now = SystemTime::now();
        let lock = SnapshotLock::new(LockMode::Governance, 100);
        let far = view("compliance", 60, now);
        assert_eq!(lock_action(Some(&far), &lock, now), LockAction::Keep);
        let near = view("compliance", 10, now);
        assert_eq!(
            lock_action(Some(&near), &lock, now),
            LockAction::Renew { mode: LockMode::Compliance, until: epoch(now) + 100 * 86_400 }
        );
        let gov = view("governance", 10, now);
        assert_eq!(lock_action(Some(&gov), &lock.with_renew_within_days(5), now), LockAction::Keep);
        // A lock longer than the job's own days is never shortened.
        let long = SnapshotLock::new(LockMode::Governance, 4).with_renew_within_days(4);
        let held = view("governance", 3, now);
        assert!(matches!(lock_action(Some(&held), &long, now), LockAction::Renew { .. }));
        let longer = LockView { expires: Some(epoch(now) + 4 * 86_400), ..held };
        assert_eq!(lock_action(Some(&longer), &long, now), LockAction::Keep);
    }

    #[test]
    fn a_governance_lock_is_locked_again_in_compliance_when_the_job_asks_for_it() {
        let now = SystemTime::now();
        let lock = SnapshotLock::new(LockMode::Compliance, 30);
        // An insider's governance lock for 100 years: still relocked, since
        // ec2:LockSnapshot can shorten it.
        let planted = view("governance", 36_500, now);
        assert_eq!(lock_action(Some(&planted), &lock, now), LockAction::Lock);
        let near = view("governance", 2, now);
        assert_eq!(lock_action(Some(&near), &lock, now), LockAction::Lock);
        let problem = lock_problem("escrow copy snap-1", Some(&planted), &lock, now).unwrap();
        assert!(problem.contains("locked (governance) until"), "{problem}");
        assert!(problem.contains("asks for compliance mode"), "{problem}");
        // Compliance (cooling off or not) is kept; a governance job takes
        // either.
        let cooling = view("compliance-cooloff", 29, now);
        assert_eq!(lock_action(Some(&cooling), &lock, now), LockAction::Keep);
        assert_eq!(lock_problem("c", Some(&cooling), &lock, now), None);
        let gov = SnapshotLock::new(LockMode::Governance, 30);
        assert_eq!(lock_action(Some(&planted), &gov, now), LockAction::Keep);
        assert_eq!(lock_problem("c", Some(&planted), &gov, now), None);
    }

    #[test]
    fn reasons_name_the_mode_and_the_expiry() {
        let v = LockView { state: "compliance-cooloff".into(), expires: Some(1_798_502_400) };
        assert_eq!(v.reason(), "locked (compliance) until 2026-12-29T00:00:00Z");
        assert_eq!(LockMode::parse("GOVERNANCE"), Some(LockMode::Governance));
        assert_eq!(LockMode::parse("legal-hold"), None);
    }
}
