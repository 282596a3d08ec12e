//! `[escrow] metrics`: per-job metrics after each `run` and `status`, in the
//! escrow account's CloudWatch or a Prometheus textfile. A metric that
//! cannot be published never fails the command: it becomes a warning in
//! every report (and a log line), and the alarm on
//! `SecondsSinceLastVerifiedCopy`, which treats missing data as breaching,
//! still fires.

use escrow_sync_aws::Session;
#[cfg(feature = "metrics")]
use escrow_sync_metrics::{CloudWatchMetrics, JobMetrics, write_textfile};

use crate::runner::JobOutcome;
use crate::spec::{Config, MetricsKind};
use crate::status::StatusReport;

/// Publishes what a `run` left (`jobs`, with their status afterwards) or
/// what a `status` found (`jobs` empty); returns a warning when that
/// failed. Nothing without `[escrow] metrics`.
pub(crate) async fn publish(
    config: &Config,
    escrow: &Session,
    jobs: &[JobOutcome],
    status: &StatusReport,
) -> Option<String> {
    let kind = config.escrow.metrics.unwrap_or(MetricsKind::Off);
    if kind == MetricsKind::Off {
        return None;
    }
    #[cfg(feature = "metrics")]
    {
        let metrics = of(jobs, status);
        let sent = match kind {
            MetricsKind::Cloudwatch => {
                CloudWatchMetrics::new(escrow).publish(&metrics).await.map(|_| ())
            }
            MetricsKind::Prometheus => {
                let path = config.escrow.metrics_file.as_deref().unwrap_or_default();
                write_textfile(std::path::Path::new(path), &metrics)
            }
            MetricsKind::Off => Ok(()),
        };
        sent.err().map(|e| {
            let warning = format!("the metrics were not published: {}", e.chain());
            tracing::warn!("{warning}");
            warning
        })
    }
    #[cfg(not(feature = "metrics"))]
    {
        let _ = (escrow, jobs, status);
        Some("[escrow] metrics is set, but this build has no metrics support".into())
    }
}

/// The metrics of each job: a run's counts (when `jobs` has the job) and
/// the status's age and findings.
#[cfg(feature = "metrics")]
fn of(jobs: &[JobOutcome], status: &StatusReport) -> Vec<JobMetrics> {
    status
        .jobs
        .iter()
        .map(|s| {
            let mut m = JobMetrics::new(&s.name)
                .with_seconds_since_last_verified_copy(s.seconds_since_last_verified_copy);
            let stale = s.findings.len() as u64;
            match jobs.iter().find(|j| j.name == s.name) {
                Some(j) => match &j.report {
                    Some(r) => {
                        let findings = r.findings.len() as u64 + r.missing + r.different;
                        m = m
                            .with_items_copied(r.copied)
                            .with_bytes_copied(r.bytes_copied)
                            .with_failures(r.failed + u64::from(j.error.is_some()))
                            .with_findings(findings + stale)
                            .with_duration_seconds(r.elapsed.as_secs_f64());
                    }
                    // A job that could not run: one failure, and no counts
                    // (never zeros passed off as a quiet run).
                    None => m = m.with_failures(1).with_findings(stale),
                },
                None => m = m.with_findings(stale),
            }
            m
        })
        .collect()
}
