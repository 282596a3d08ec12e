//! Per-job metrics of escrow-sync, for the runs nobody watches: after each
//! `run` and `status`, either CloudWatch `PutMetricData` in the escrow
//! account ([`CloudWatchMetrics`]: namespace [`NAMESPACE`], dimension
//! [`DIMENSION`]) or a Prometheus textfile-collector file
//! ([`write_textfile`]).
//!
//! The metrics of one job ([`JobMetrics`]): [`ITEMS_COPIED`],
//! [`BYTES_COPIED`], [`FAILURES`], [`FINDINGS`], [`DURATION_SECONDS`] and
//! [`SECONDS_SINCE_LAST_VERIFIED_COPY`], the RPO achieved: alarm on it. A
//! value that is not known (a `status` has no duration; a job never
//! verified has no age) is left out, never sent as zero: a missing
//! `SecondsSinceLastVerifiedCopy` must look like missing data to an alarm,
//! not like a fresh copy.
//!
//! ```
//! use escrow_sync_metrics::{JobMetrics, prometheus_text};
//! let m = JobMetrics::new("assets").with_items_copied(3).with_seconds_since_last_verified_copy(Some(60));
//! let text = prometheus_text(&[m]);
//! assert!(text.contains("escrow_sync_items_copied{job=\"assets\"} 3\n"));
//! assert!(text.contains("escrow_sync_seconds_since_last_verified_copy{job=\"assets\"} 60\n"));
//! assert!(!text.contains("escrow_sync_duration_seconds{"), "unknown values are left out");
//! ```
#![deny(missing_docs)]

use std::path::Path;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};

use escrow_sync_aws::{Session, sdk_error};
use escrow_sync_core::{Error, ErrorKind, Result};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = escrow_sync_core::layout::METRICS_NAMESPACE;
/// The one dimension: the job's name.
pub const DIMENSION: &str = "Job";
/// Items copied into escrow by the run.
pub const ITEMS_COPIED: &str = "ItemsCopied";
/// Bytes copied into escrow by the run.
pub const BYTES_COPIED: &str = "BytesCopied";
/// Items that failed (and a job that could not run counts one).
pub const FAILURES: &str = "Failures";
/// Findings: mass-change, differences, `stale`...
pub const FINDINGS: &str = "Findings";
/// How long the job ran.
pub const DURATION_SECONDS: &str = "DurationSeconds";
/// Seconds since the job's newest verified copy: the RPO achieved.
pub const SECONDS_SINCE_LAST_VERIFIED_COPY: &str = "SecondsSinceLastVerifiedCopy";

/// The metrics of one job after a `run` or a `status`.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct JobMetrics {
    /// The job's name (the `Job` dimension).
    pub job: String,
    /// Items copied.
    pub items_copied: Option<u64>,
    /// Bytes copied.
    pub bytes_copied: Option<u64>,
    /// Failures.
    pub failures: Option<u64>,
    /// Findings.
    pub findings: Option<u64>,
    /// How long the job ran, in seconds.
    pub duration_seconds: Option<f64>,
    /// Seconds since the newest verified copy; `None` when there is none.
    pub seconds_since_last_verified_copy: Option<u64>,
}

impl JobMetrics {
    /// The metrics of job `job`, none known yet.
    pub fn new(job: impl Into<String>) -> Self {
        JobMetrics { job: job.into(), ..Default::default() }
    }
    /// Items copied.
    pub fn with_items_copied(mut self, n: u64) -> Self {
        self.items_copied = Some(n);
        self
    }
    /// Bytes copied.
    pub fn with_bytes_copied(mut self, n: u64) -> Self {
        self.bytes_copied = Some(n);
        self
    }
    /// Failures.
    pub fn with_failures(mut self, n: u64) -> Self {
        self.failures = Some(n);
        self
    }
    /// Findings.
    pub fn with_findings(mut self, n: u64) -> Self {
        self.findings = Some(n);
        self
    }
    /// Duration in seconds.
    pub fn with_duration_seconds(mut self, s: f64) -> Self {
        self.duration_seconds = Some(s);
        self
    }
    /// Seconds since the newest verified copy, if there is one.
    pub fn with_seconds_since_last_verified_copy(mut self, s: Option<u64>) -> Self {
        self.seconds_since_last_verified_copy = s;
        self
    }

    /// The known values: (CloudWatch name, Prometheus name, value, unit).
    fn values(&self) -> Vec<(&'static str, &'static str, f64, StandardUnit)> {
        let count = |n: Option<u64>| n.map(|n| n as f64);
        [
            (ITEMS_COPIED, "items_copied", count(self.items_copied), StandardUnit::Count),
            (BYTES_COPIED, "bytes_copied", count(self.bytes_copied), StandardUnit::Bytes),
            (FAILURES, "failures", count(self.failures), StandardUnit::Count),
            (FINDINGS, "findings", count(self.findings), StandardUnit::Count),
            (DURATION_SECONDS, "duration_seconds", self.duration_seconds, StandardUnit::Seconds),
            (
                SECONDS_SINCE_LAST_VERIFIED_COPY,
                "seconds_since_last_verified_copy",
                count(self.seconds_since_last_verified_copy),
                StandardUnit::Seconds,
            ),
        ]
        .into_iter()
        .filter_map(|(cw, prom, v, unit)| v.map(|v| (cw, prom, v, unit)))
        .collect()
    }
}

/// The most data points one PutMetricData takes (AWS allows 1,000 and 1 MB;
/// this stays well inside both).
const DATA_PER_REQUEST: usize = 500;

/// Publishes [`JobMetrics`] to CloudWatch in the escrow account.
#[derive(Debug, Clone)]
pub struct CloudWatchMetrics {
    client: aws_sdk_cloudwatch::Client,
}

impl CloudWatchMetrics {
    /// From a CloudWatch client (embedders, mocks).
    pub fn from_client(client: aws_sdk_cloudwatch::Client) -> Self {
        CloudWatchMetrics { client }
    }

    /// With the escrow session's credentials and region.
    pub fn new(escrow: &Session) -> Self {
        Self::from_client(aws_sdk_cloudwatch::Client::new(escrow.sdk_config()))
    }

    /// Sends every known value of `jobs` (one datum per value, dimension
    /// `Job`, timestamp now); returns how many data points were sent.
    pub async fn publish(&self, jobs: &[JobMetrics]) -> Result<usize> {
        let now = aws_sdk_cloudwatch::primitives::DateTime::from(std::time::SystemTime::now());
        let data: Vec<MetricDatum> = jobs
            .iter()
            .flat_map(|j| {
                j.values().into_iter().map(move |(name, _, value, unit)| {
                    MetricDatum::builder()
                        .metric_name(name)
                        .dimensions(Dimension::builder().name(DIMENSION).value(&j.job).build())
                        .value(value)
                        .unit(unit)
                        .timestamp(now)
                        .build()
                })
            })
            .collect();
        for chunk in data.chunks(DATA_PER_REQUEST) {
            self.client
                .put_metric_data()
                .namespace(NAMESPACE)
                .set_metric_data(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| sdk_error(e, "cloudwatch:PutMetricData", NAMESPACE))?;
        }
        Ok(data.len())
    }
}

/// The Prometheus text exposition of `jobs`: one gauge family per metric
/// (`escrow_sync_<name>`, label `job`), with HELP and TYPE lines.
pub fn prometheus_text(jobs: &[JobMetrics]) -> String {
    use std::fmt::Write;
    let mut families: Vec<(&'static str, &'static str, Vec<String>)> = Vec::new();
    for j in jobs {
        for (cw, prom, value, _) in j.values() {
            let line = format!("escrow_sync_{prom}{{job=\"{}\"}} {value}\n", label(&j.job));
            match families.iter_mut().find(|(_, p, _)| *p == prom) {
                Some((_, _, lines)) => lines.push(line),
                None => families.push((cw, prom, vec![line])),
            }
        }
    }
    let mut out = String::new();
    for (cw, prom, lines) in families {
        let _ = writeln!(out, "# HELP escrow_sync_{prom} escrow-sync {cw} per job.");
        let _ = writeln!(out, "# TYPE escrow_sync_{prom} gauge");
        lines.iter().for_each(|l| out.push_str(l));
    }
    out
}

/// A label value escaped as the exposition format wants it.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes [`prometheus_text`] of `jobs` to `path`, replacing it atomically
/// (a temporary file in the same directory, then a rename), so the
/// collector never reads half a file.
pub fn write_textfile(path: &Path, jobs: &[JobMetrics]) -> Result<()> {
    let failed = |e: std::io::Error| {
        Error::new(ErrorKind::Failed, "write", path.display().to_string(), e.to_string())
    };
    use std::io::Write;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("metrics.prom");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    // create_new: never follows or reuses a file (or symlink) already
    // there; synced before the rename, so the collector reads all or none.
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(failed)?;
    let written = file.write_all(prometheus_text(jobs).as_bytes()).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        failed(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_cloudwatch::operation::put_metric_data::{PutMetricDataError, PutMetricDataOutput};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    fn two_jobs() -> Vec<JobMetrics> {
        vec![
            JobMetrics::new("assets")
                .with_items_copied(3)
                .with_bytes_copied(4096)
                .with_failures(0)
                .with_findings(1)
                .with_duration_seconds(2.5)
                .with_seconds_since_last_verified_copy(Some(0)),
            JobMetrics::new("orders").with_findings(0).with_seconds_since_last_verified_copy(None),
        ]
    }

    #[tokio::test]
    async fn put_metric_data_has_the_namespace_the_job_dimension_and_units() {
        let rule = mock!(aws_sdk_cloudwatch::Client::put_metric_data)
            .match_requests(|r| {
                let data = r.metric_data();
                let names: Vec<_> = data.iter().filter_map(|d| d.metric_name()).collect();
                let unit_of = |n: &str| {
                    data.iter().find(|d| d.metric_name() == Some(n)).and_then(|d| d.unit().cloned())
                };
                r.namespace() == Some("EscrowSync")
                    && data.len() == 7
                    && names
                        == [
                            "ItemsCopied",
                            "BytesCopied",
                            "Failures",
                            "Findings",
                            "DurationSeconds",
                            "SecondsSinceLastVerifiedCopy",
                            "Findings",
                        ]
                    && data.iter().all(|d| {
                        d.dimensions().len() == 1
                            && d.dimensions()[0].name() == Some("Job")
                            && d.timestamp().is_some()
                    })
                    && data[6].dimensions()[0].value() == Some("orders")
                    && data[1].value() == Some(4096.0)
                    && unit_of("BytesCopied") == Some(StandardUnit::Bytes)
                    && unit_of("SecondsSinceLastVerifiedCopy") == Some(StandardUnit::Seconds)
                    && unit_of("ItemsCopied") == Some(StandardUnit::Count)
            })
            .then_output(|| PutMetricDataOutput::builder().build());
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, [&rule]);
        let sent = CloudWatchMetrics::from_client(client).publish(&two_jobs()).await.unwrap();
        assert_eq!(sent, 7);
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn many_jobs_go_in_several_requests() {
        let rule = mock!(aws_sdk_cloudwatch::Client::put_metric_data)
            .match_requests(|r| r.metric_data().len() <= DATA_PER_REQUEST)
            .then_output(|| PutMetricDataOutput::builder().build());
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&rule]);
        let jobs: Vec<_> =
            (0..200).map(|i| JobMetrics::new(format!("j{i}")).with_items_copied(i)).collect();
        let jobs: Vec<_> = jobs.into_iter().map(|j| j.with_failures(0).with_findings(0)).collect();
        assert_eq!(CloudWatchMetrics::from_client(client).publish(&jobs).await.unwrap(), 600);
        assert_eq!(rule.num_calls(), 2);
    }

    #[tokio::test]
    async fn a_refusal_names_the_operation_and_is_not_retryable() {
        let rule = mock!(aws_sdk_cloudwatch::Client::put_metric_data).then_error(|| {
            PutMetricDataError::generic(
                aws_sdk_cloudwatch::error::ErrorMetadata::builder()
                    .code("AccessDenied")
                    .message("not authorized to perform cloudwatch:PutMetricData")
                    .build(),
            )
        });
        let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, [&rule]);
        let err = CloudWatchMetrics::from_client(client).publish(&two_jobs()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied);
        assert!(err.to_string().contains("cloudwatch:PutMetricData"), "{err}");
    }

    #[test]
    fn prometheus_text_groups_families_and_escapes_labels() {
        let mut jobs = two_jobs();
        jobs.push(JobMetrics::new("we\"ird\\job").with_findings(2));
        let text = prometheus_text(&jobs);
        assert_eq!(text.matches("# TYPE escrow_sync_findings gauge").count(), 1);
        assert!(text.contains("escrow_sync_findings{job=\"orders\"} 0\n"), "{text}");
        assert!(text.contains("escrow_sync_findings{job=\"we\\\"ird\\\\job\"} 2\n"), "{text}");
        assert!(text.contains("escrow_sync_duration_seconds{job=\"assets\"} 2.5\n"), "{text}");
        assert!(!text.contains("seconds_since_last_verified_copy{job=\"orders\"}"), "{text}");
    }

    #[test]
    fn the_textfile_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("escrow-sync-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("escrow_sync.prom");
        std::fs::write(&path, "old").unwrap();
        write_textfile(&path, &two_jobs()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# HELP escrow_sync_items_copied"), "{text}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
        let err = write_textfile(&dir.join("missing/x.prom"), &two_jobs()).unwrap_err();
        assert!(err.to_string().contains("missing/x.prom"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
