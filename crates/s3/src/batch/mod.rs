//! The S3 Batch Operations engine of an [`S3CopyJob`]: a run plans as
//! usual, writes the objects to copy as a CSV manifest into an escrow
//! bucket, creates one Copy job in the escrow account (S3 Control
//! `CreateJob`, with the escrow's batch role, `ConfirmationRequired =
//! false`, a completion report into escrow and a client request token made
//! from the plan, so a re-run never creates a second job for the same plan),
//! waits for it with capped polling (or not: `--no-wait`), then reads the
//! completion report and folds it into the run's report: copied and failed
//! per key, each copy checked against the planned object before it counts.
//!
//! Objects over 5 GiB, which a Batch Copy cannot take, are copied directly
//! (in parts) in the same run. A record of the job is kept in escrow, so
//! `status` shows a job a `--no-wait` run left and the next run folds it in.

mod copies;
pub(crate) mod csv;

pub(crate) use copies::CopyRecords;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_sdk_s3control::types::{
    JobManifest, JobManifestFieldName, JobManifestFormat, JobManifestLocation, JobManifestSpec,
    JobOperation, JobReport, JobReportFormat, JobReportScope, JobStatus, S3ChecksumAlgorithm,
    S3CopyObjectOperation, S3MetadataDirective, S3ObjectLockMode, S3ObjectMetadata, S3SseAlgorithm,
};
use escrow_sync_core::poll::{Polled, Polling, poll_until};
use escrow_sync_core::{
    Action, Error, ErrorKind, Failure, Finding, Item, ItemOutcome, ItemRecord, JobContext,
    MassChangeGuard, Mode, Report, Result, Sink, Source,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::util::{PaceExt, url};
use crate::{MAX_COPY_OBJECT_SIZE, S3CopyJob, S3Sink};

use self::csv::{ManifestRow, TaskResult};

/// How many objects a run must copy before `engine = "auto"` picks Batch
/// Operations (`batch_threshold`).
pub const DEFAULT_BATCH_THRESHOLD: u64 = 1_000_000;

/// The default key prefix (`batch_prefix`) of escrow-sync's Batch
/// Operations files: under it, per job pair, the record of its last job,
/// and per plan, the manifest, the planned objects and the completion
/// report.
pub const DEFAULT_BATCH_PREFIX: &str = "escrow-sync/batch/";

/// Copies checked against the plan at once when a job is folded.
const CHECKS_AT_ONCE: usize = 32;

/// The status `status` shows for a job S3 Control no longer knows (it
/// keeps a job's record for 90 days).
pub const JOB_GONE: &str = "Gone";

/// Which engine copies a run's objects (`[[s3]] engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// One CopyObject (or multipart copy) per object, by escrow-sync.
    #[default]
    Direct,
    /// One S3 Batch Operations Copy job per run.
    BatchOperations,
    /// Batch Operations when a run would copy more than `threshold`
    /// objects, else direct.
    Auto {
        /// The object count above which a run uses Batch Operations.
        threshold: u64,
    },
}

impl Engine {
    /// Parses `direct`, `batch-operations` or `auto` (with `threshold`).
    pub fn parse(text: &str, threshold: u64) -> Option<Self> {
        match text {
            "direct" => Some(Engine::Direct),
            "batch-operations" => Some(Engine::BatchOperations),
            "auto" => Some(Engine::Auto { threshold }),
            _ => None,
        }
    }
}

/// S3 Control, as the batch engine calls it (CreateJob, DescribeJob) with
/// escrow credentials.
#[derive(Debug, Clone)]
pub struct BatchControl {
    client: aws_sdk_s3control::Client,
}

impl BatchControl {
    /// Uses `client` (embedders, mocks).
    pub fn from_client(client: aws_sdk_s3control::Client) -> Self {
        BatchControl { client }
    }

    /// An S3 Control client for `session`. S3 Control addresses the account
    /// in the host name (`{AccountId}.s3-control.{region}.amazonaws.com`,
    /// and `{AccountId}.{host}` for an overridden endpoint); an override
    /// that names an IP address or `localhost` (an emulator) cannot take a
    /// host prefix, so the request goes to the address itself: the account
    /// still travels in the `x-amz-account-id` header, and AWS endpoints
    /// are unchanged.
    pub fn for_session(session: &escrow_sync_aws::Session) -> Self {
        let mut conf = aws_sdk_s3control::config::Builder::from(session.sdk_config());
        if session.endpoint_overridden() {
            conf = conf.endpoint_resolver(AddressEndpoint::default());
        }
        BatchControl { client: aws_sdk_s3control::Client::from_conf(conf.build()) }
    }
}

/// S3 Control's endpoint rules, with the account prefix left off a host
/// that cannot carry one (an IP address, `localhost`).
#[derive(Debug, Default)]
struct AddressEndpoint(aws_sdk_s3control::config::endpoint::DefaultResolver);

impl aws_sdk_s3control::config::endpoint::ResolveEndpoint for AddressEndpoint {
    fn resolve_endpoint<'a>(
        &'a self,
        params: &'a aws_sdk_s3control::config::endpoint::Params,
    ) -> aws_sdk_s3control::config::endpoint::EndpointFuture<'a> {
        let resolved = self.0.resolve_endpoint(params);
        aws_sdk_s3control::config::endpoint::EndpointFuture::new(async move {
            let endpoint = resolved.await?;
            let (Some(account), Some(base)) = (params.account_id(), params.endpoint()) else {
                return Ok(endpoint);
            };
            Ok(unprefixed(endpoint, account, base))
        })
    }
}

/// `endpoint` without `{account}.` when `base`'s host is an address.
fn unprefixed(
    endpoint: aws_smithy_types::endpoint::Endpoint,
    account: &str,
    base: &str,
) -> aws_smithy_types::endpoint::Endpoint {
    let host = base.split("://").nth(1).unwrap_or(base).split(['/', ':']).next().unwrap_or("");
    let address = host == "localhost" || host.parse::<std::net::Ipv4Addr>().is_ok();
    let prefixed = format!("://{account}.");
    if !address || !endpoint.url().contains(&prefixed) {
        return endpoint;
    }
    let url = endpoint.url().replacen(&prefixed, "://", 1);
    let mut b = aws_smithy_types::endpoint::Endpoint::builder().url(url);
    for (name, values) in endpoint.headers() {
        for v in values {
            b = b.header(name.to_string(), v.to_string());
        }
    }
    for (name, value) in endpoint.properties() {
        b = b.property(name.to_string(), value.clone());
    }
    b.build()
}

/// The batch engine's settings: who runs the job and where its files go.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    control: BatchControl,
    account_id: String,
    role_arn: String,
    bucket: String,
    prefix: String,
    wait: bool,
    first_pause: Duration,
    max_pause: Duration,
    timeout: Duration,
}

impl BatchOptions {
    /// Jobs in the escrow account `account_id`, run as `role_arn` (trusted
    /// by `batchoperations.s3.amazonaws.com`), their manifests and reports
    /// in the escrow bucket `bucket`; waits for each job (polling from 5 s,
    /// capped at 60 s, for at most 24 hours).
    pub fn new(
        control: BatchControl,
        account_id: impl Into<String>,
        role_arn: impl Into<String>,
        bucket: impl Into<String>,
    ) -> Self {
        BatchOptions {
            control,
            account_id: account_id.into(),
            role_arn: role_arn.into(),
            bucket: bucket.into(),
            prefix: DEFAULT_BATCH_PREFIX.to_string(),
            wait: true,
            first_pause: Duration::from_secs(5),
            max_pause: Duration::from_secs(60),
            timeout: Duration::from_secs(24 * 3600),
        }
    }

    /// The key prefix of the manifests, records and reports (`batch_prefix`,
    /// default [`DEFAULT_BATCH_PREFIX`]).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether a run waits for its job (`run --no-wait`: no).
    pub fn with_wait(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }

    /// The polling: first pause, the cap the pauses double up to, and the
    /// overall timeout.
    pub fn with_polling(mut self, first: Duration, cap: Duration, timeout: Duration) -> Self {
        self.first_pause = first;
        self.max_pause = cap;
        self.timeout = timeout;
        self
    }

    /// The bucket of the manifests and reports.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

/// The record of a pair's last Batch Operations job, kept in escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JobRecord {
    job_id: String,
    token: String,
    /// The key (in the batch bucket) of the plan's folder.
    folder: String,
    /// Whether a run has folded the job's report in.
    folded: bool,
    /// The Object Lock retain-until date the job gives its copies (epoch
    /// seconds), fixed when the job is created: its copies are filed in the
    /// retention ledger under this day, whenever the job is folded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retain_until: Option<i64>,
}

/// One planned object, as recorded beside the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Planned {
    key: String,
    size: u64,
    etag: String,
    /// The source's LastModified as listed (epoch seconds): after the job
    /// the source must still be this object for its copy to count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    modified: Option<i64>,
}

/// What a batch run did: a report, or (`auto` under its threshold) the
/// report of an earlier job it folded, for the direct run to take in.
pub(crate) enum Batched {
    /// The run is done.
    Done(Report),
    /// The caller runs direct and adds this report (a folded job's) to it.
    Direct(Report),
}

/// What `status` shows of a pair's last Batch Operations job (its JSON is
/// `status`'s `batch_job`).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BatchJobState {
    /// The job id.
    pub job_id: String,
    /// Its status as S3 Control says (`Active`, `Complete`, `Failed`...).
    pub status: String,
    /// Tasks in the job.
    pub total: u64,
    /// Tasks that succeeded so far.
    pub succeeded: u64,
    /// Tasks that failed so far.
    pub failed: u64,
    /// Whether a run has folded its report in (else the next run does).
    pub folded: bool,
}

/// A job's state, as one DescribeJob says.
struct Described {
    status: JobStatus,
    total: u64,
    succeeded: u64,
    failed: u64,
    reasons: Vec<String>,
}

impl Described {
    fn done(&self) -> bool {
        matches!(self.status, JobStatus::Complete | JobStatus::Failed | JobStatus::Cancelled)
    }
}

fn control_error<E>(
    err: aws_sdk_s3control::error::SdkError<
        E,
        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
    >,
    operation: &str,
    resource: String,
) -> Error
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    use aws_smithy_types::error::metadata::ProvideErrorMetadata;
    let code = err.code().unwrap_or("").to_string();
    let status = err.raw_response().map(|r| r.status().as_u16());
    let kind = match (code.as_str(), status) {
        ("AccessDenied" | "AccessDeniedException", _) | (_, Some(403)) => ErrorKind::AccessDenied,
        ("NoSuchJob" | "NotFoundException", _) | (_, Some(404)) => ErrorKind::NotFound,
        ("TooManyRequestsException" | "SlowDown" | "Throttling", _) | (_, Some(429)) => {
            ErrorKind::Throttled
        }
        ("BadRequestException" | "InvalidRequest" | "IdempotencyException", _) => {
            ErrorKind::InvalidConfig
        }
        (_, Some(s)) if s >= 500 => ErrorKind::Transient,
        (_, None) => ErrorKind::Transient,
        _ => ErrorKind::Failed,
    };
    let msg = err.message().unwrap_or("").to_string();
    let detail = if code.is_empty() { msg } else { format!("{code}: {msg}") };
    Error::new(kind, operation, resource, detail).with_source(err)
}

/// The key folder of one job pair's records, from the pair's buckets and
/// prefixes (so jobs of different pairs never share one).
fn pair_folder(options: &BatchOptions, job: &S3CopyJob) -> String {
    let pair = format!(
        "{}/{}\n{}/{}",
        job.source().bucket(),
        job.source().prefix(),
        job.sink().bucket(),
        job.sink().dest_prefix()
    );
    let id = csv::client_token(pair.as_bytes(), "pair");
    format!("{}{}/", options.prefix, &id[..16])
}

impl S3CopyJob {
    /// Whether a run waits for its Batch Operations job (`run --no-wait`:
    /// no). Nothing without the batch engine.
    pub fn with_batch_wait(mut self, wait: bool) -> Self {
        if let Some((_, options)) = &mut self.batch {
            options.wait = wait;
        }
        self
    }

    /// Tells the sink where this pair's records of batch copies are.
    pub(crate) fn place_copy_records(&self) {
        if let Some((_, options)) = &self.batch {
            let prefix = format!("{}copies/", pair_folder(options, self));
            self.sink().batch_copies().place(self.batch_store(options), prefix);
        }
    }

    /// The escrow bucket of the batch files, read and written with the
    /// sink's credentials and owner check.
    fn batch_store(&self, options: &BatchOptions) -> S3Sink {
        S3Sink::from_client(self.sink().client().clone(), options.bucket.clone())
            .with_expected_owner(self.sink().owner().map(str::to_string))
            .with_pacer(self.sink().pacer().cloned())
    }

    async fn read_record(&self, options: &BatchOptions) -> Result<Option<JobRecord>> {
        let store = self.batch_store(options);
        let key = format!("{}job.json", pair_folder(options, self));
        let listed = store.list_own(&key).await?;
        if !listed.iter().any(|(k, _, _)| k.is_empty()) {
            return Ok(None);
        }
        let body = store.get_own(&key).await?;
        serde_json::from_slice(&body).map(Some).map_err(|e| {
            Error::new(
                ErrorKind::Failed,
                "s3:GetObject",
                url(store.bucket(), &key),
                format!("the batch job record is not valid JSON ({e}): remove it to start over"),
            )
        })
    }

    async fn write_record(&self, options: &BatchOptions, record: &JobRecord) -> Result<()> {
        let key = format!("{}job.json", pair_folder(options, self));
        let body = serde_json::to_vec(record).unwrap_or_default();
        self.batch_store(options).put_own(&key, body, "application/json").await
    }

    /// The pair's last Batch Operations job, as S3 Control describes it
    /// now (`None`: no job yet, or no batch engine).
    pub async fn batch_state(&self) -> Result<Option<BatchJobState>> {
        let Some((_, options)) = &self.batch else { return Ok(None) };
        let Some(record) = self.read_record(options).await? else { return Ok(None) };
        let d = match describe(options, &record.job_id).await {
            // S3 Control forgets a job 90 days on: shown as gone (the next
            // run records it folded), not an error that stops `status`.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(Some(BatchJobState {
                    job_id: record.job_id,
                    status: JOB_GONE.to_string(),
                    total: 0,
                    succeeded: 0,
                    failed: 0,
                    folded: record.folded,
                }));
            }
            other => other?,
        };
        Ok(Some(BatchJobState {
            job_id: record.job_id,
            status: d.status.as_str().to_string(),
            total: d.total,
            succeeded: d.succeeded,
            failed: d.failed,
            folded: record.folded,
        }))
    }

    /// A run with the batch engine (see the module docs).
    /// [`Batched::Direct`]: `auto` found too few objects to copy, the caller
    /// runs direct and adds the report of the earlier job folded here.
    pub(crate) async fn execute_batch(
        &self,
        engine: Engine,
        options: &BatchOptions,
        ctx: &JobContext,
    ) -> Result<Batched> {
        let mut report = Report::new(Mode::Run, self.source().describe(), self.sink().describe());
        // A job an earlier run left: fold it in first (its copies then plan
        // as in escrow, its failures are retried below).
        let last = self.read_record(options).await?;
        // The job this pair ran last: a new job after it gets another token,
        // so the tasks it failed are retried even when the plan is the same.
        let previous = last.as_ref().map(|r| r.job_id.clone());
        if let Some(record) = last
            && !record.folded
        {
            match describe(options, &record.job_id).await {
                // S3 keeps a job's record for 90 days: a job it no longer
                // knows cannot be folded. Its copies that escrow holds plan
                // as in escrow; everything else is planned and copied again.
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    report.warnings.push(format!(
                        "batch job {} is gone from S3 Control ({}): its report is not folded; \
                         this run plans everything again",
                        record.job_id,
                        e.chain()
                    ));
                    self.write_record(options, &JobRecord { folded: true, ..record.clone() })
                        .await?;
                }
                Err(e) => return Err(e),
                Ok(d) => {
                    if !d.done() && !options.wait {
                        report.notes.push(format!(
                            "batch job {} is still {}: no new job until it ends",
                            record.job_id,
                            d.status.as_str()
                        ));
                        return Ok(Batched::Done(report));
                    }
                    let d = if d.done() { d } else { wait(options, &record.job_id, ctx).await? };
                    self.fold(options, &record, &d, ctx, &mut report).await?;
                }
            }
        }

        // What the fold found; this run's plan is counted apart (`auto`
        // may hand the plan to the direct path, which counts it again).
        let folded = std::mem::replace(
            &mut report,
            Report::new(Mode::Run, self.source().describe(), self.sink().describe()),
        );
        let exec = self.copy_job().executor(ctx);
        let source: &dyn Source = self.source();
        let sink: &dyn Sink = self.sink();
        let actions: Vec<Action> =
            exec.plan(source, sink, self.copy_job().scope()).await?.try_collect().await?;
        let mut copies = Vec::new();
        let (mut changed, mut escrow_items) = (0u64, 0u64);
        for a in actions {
            if a.escrow_item() {
                escrow_items += 1;
            }
            match a {
                Action::Copy { item, .. } if crate::journal::own_folder(&item.key) => {
                    // The direct path refuses these keys (S3Sink::write):
                    // the same failure here, before any manifest names them.
                    let e = self.sink().own_folder_refusal(&item.key);
                    record_outcome(&mut report, ctx, &item, Err(e));
                }
                Action::Copy { item, escrow, .. } => {
                    if let Some(e) = &escrow
                        && sink.confirm_same(&item, e).await?
                    {
                        report.skipped += 1;
                        continue;
                    }
                    if escrow.is_some() {
                        changed += 1;
                        report.different += 1;
                    } else {
                        report.missing += 1;
                    }
                    copies.push((item, escrow.is_some()));
                }
                Action::Skip { .. } => report.skipped += 1,
                Action::Retain { .. } => report.retained += 1,
                Action::Delete { .. } => {}
            }
        }
        if let Engine::Auto { threshold } = engine
            && (copies.len() as u64) <= threshold
        {
            return Ok(Batched::Direct(folded));
        }
        // The mass-change breaker, as the direct path applies it.
        let guard = MassChangeGuard::for_job(
            self.copy_job().max_change_percent(),
            ctx.accept_mass_change(),
        );
        if let Some(g) = guard
            && g.exceeded(changed, escrow_items)
        {
            let first: Vec<String> =
                copies.iter().filter(|(_, c)| *c).map(|(i, _)| i.key.clone()).take(10).collect();
            report.findings.push(g.finding(
                &self.describe_pair(),
                changed,
                escrow_items,
                changed,
                &first,
            ));
            report.held_back += changed;
            copies.retain(|(_, c)| !*c);
        }
        let (direct, batched): (Vec<Item>, Vec<Item>) =
            copies.into_iter().map(|(i, _)| i).partition(|i| i.size > MAX_COPY_OBJECT_SIZE);
        // Objects a Batch Copy cannot take: the direct path, in parts.
        for item in &direct {
            let outcome = match source.read(item).await {
                Ok(payload) => sink.write(item, payload).await,
                Err(e) => Err(e),
            };
            record_outcome(
                &mut report,
                ctx,
                item,
                outcome.map(|r| (r.bytes, r.fingerprint, r.parts)),
            );
        }
        report.absorb(folded);
        if batched.is_empty() {
            return Ok(Batched::Done(report));
        }
        let (record, described) = self.submit(options, &batched, previous.as_deref()).await?;
        report.notes.push(format!(
            "batch job {} copies {} object(s) with S3 Batch Operations",
            record.job_id,
            batched.len()
        ));
        if !options.wait && !described.done() {
            report.notes.push(format!(
                "not waiting for batch job {} (--no-wait): `status` shows it, the next run \
                 folds its report in",
                record.job_id
            ));
            return Ok(Batched::Done(report));
        }
        let d =
            if described.done() { described } else { wait(options, &record.job_id, ctx).await? };
        self.fold(options, &record, &d, ctx, &mut report).await?;
        Ok(Batched::Done(report))
    }

    fn describe_pair(&self) -> String {
        url(self.sink().bucket(), self.sink().dest_prefix())
    }

    /// Writes the manifest and the planned objects, creates the job (or
    /// gets the one the same plan created before) and records it.
    async fn submit(
        &self,
        options: &BatchOptions,
        items: &[Item],
        previous: Option<&str>,
    ) -> Result<(JobRecord, Described)> {
        let rows: Vec<ManifestRow> = items
            .iter()
            .map(|i| ManifestRow {
                bucket: self.source().bucket().to_string(),
                key: i.key.clone(),
                version: i.version.clone(),
            })
            .collect();
        let versions = items.iter().all(|i| i.version.is_some());
        let manifest = csv::manifest_csv(&rows, versions);
        let algorithm = job_checksum(items);
        let protection = self.sink().protection();
        // Copy only what was not rewritten since it was listed: the newest
        // modification time among the planned objects (a rewrite after the
        // plan fails its task with 412, and the next run copies it again).
        let unmodified_since = items.iter().filter_map(|i| i.modified).max();
        let settings = format!(
            "{}|{}|{}|{:?}|{:?}|{:?}|{}|{:?}|after {}",
            self.sink().bucket(),
            self.sink().dest_prefix(),
            options.role_arn,
            protection.kms_key_id,
            protection.object_lock,
            algorithm,
            versions,
            unmodified_since.map(escrow_sync_core::time::epoch),
            previous.unwrap_or("none")
        );
        let token = csv::client_token(&manifest, &settings);
        let folder = format!("{}{}/", pair_folder(options, self), &token[..32]);
        let store = self.batch_store(options);
        let manifest_key = format!("{folder}manifest.csv");
        let etag = put_etag(&store, &manifest_key, manifest, "text/csv").await?;
        let planned: Vec<Planned> = items
            .iter()
            .map(|i| Planned {
                key: i.key.clone(),
                size: i.size,
                etag: i.fingerprint.clone(),
                modified: i.modified.map(escrow_sync_core::time::epoch),
            })
            .collect();
        store
            .put_own(
                &format!("{folder}plan.json"),
                serde_json::to_vec(&planned).unwrap_or_default(),
                "application/json",
            )
            .await?;

        let mut fields = vec![JobManifestFieldName::Bucket, JobManifestFieldName::Key];
        if versions {
            fields.push(JobManifestFieldName::VersionId);
        }
        let arn = |bucket: &str| format!("arn:aws:s3:::{bucket}");
        let build = |what: &str, e: aws_sdk_s3control::error::BuildError| {
            Error::new(
                ErrorKind::InvalidConfig,
                "s3:CreateJob",
                arn(&options.bucket),
                format!("{what}: {e}"),
            )
        };
        let spec = JobManifestSpec::builder()
            .format(JobManifestFormat::S3BatchOperationsCsv20180820)
            .set_fields(Some(fields))
            .build()
            .map_err(|e| build("manifest spec", e))?;
        let location = JobManifestLocation::builder()
            .object_arn(format!("{}/{manifest_key}", arn(&options.bucket)))
            .e_tag(etag)
            .build()
            .map_err(|e| build("manifest location", e))?;
        let mut copy = S3CopyObjectOperation::builder()
            .target_resource(arn(self.sink().bucket()))
            .metadata_directive(S3MetadataDirective::Copy)
            .set_un_modified_since_constraint(
                unmodified_since.map(aws_smithy_types::DateTime::from),
            )
            .set_checksum_algorithm(algorithm.map(|a| S3ChecksumAlgorithm::from(a.as_str())));
        let prefix = self.sink().dest_prefix().trim_end_matches('/');
        if !prefix.is_empty() {
            copy = copy.target_key_prefix(prefix);
        }
        if let Some(key) = &protection.kms_key_id {
            copy = copy.sse_aws_kms_key_id(key).new_object_metadata(
                S3ObjectMetadata::builder().sse_algorithm(S3SseAlgorithm::Kms).build(),
            );
        }
        let retain_until = protection.object_lock.map(|l| l.retain_until());
        if let (Some(lock), Some(until)) = (&protection.object_lock, retain_until) {
            copy = copy
                .object_lock_mode(S3ObjectLockMode::from(lock.mode.as_str()))
                .object_lock_retain_until_date(aws_smithy_types::DateTime::from(until));
        }
        let report = JobReport::builder()
            .enabled(true)
            .bucket(arn(&options.bucket))
            .prefix(format!("{folder}report"))
            .format(JobReportFormat::ReportCsv20180820)
            .report_scope(JobReportScope::AllTasks)
            .build();
        let out = options
            .control
            .client
            .create_job()
            .account_id(&options.account_id)
            .confirmation_required(false)
            .client_request_token(&token)
            .role_arn(&options.role_arn)
            .priority(10)
            .description(format!("escrow-sync {}", self.describe_pair()))
            .operation(JobOperation::builder().s3_put_object_copy(copy.build()).build())
            .manifest(JobManifest::builder().spec(spec).location(location).build())
            .report(report)
            .send()
            .await
            .map_err(|e| control_error(e, "s3:CreateJob", arn(&options.bucket)))?;
        let job_id = out.job_id().unwrap_or_default().to_string();
        if job_id.is_empty() {
            return Err(Error::new(
                ErrorKind::Failed,
                "s3:CreateJob",
                arn(&options.bucket),
                "S3 Control answered without a job id",
            ));
        }
        let record = JobRecord {
            job_id,
            token,
            folder,
            folded: false,
            retain_until: retain_until.map(escrow_sync_core::time::epoch),
        };
        self.write_record(options, &record).await?;
        let d = describe(options, &record.job_id).await?;
        Ok((record, d))
    }

    /// Reads a finished job's completion report and folds it into `report`:
    /// each planned object copied (checked against the plan) or failed
    /// (with the reason); then marks the record folded.
    async fn fold(
        &self,
        options: &BatchOptions,
        record: &JobRecord,
        d: &Described,
        ctx: &JobContext,
        report: &mut Report,
    ) -> Result<()> {
        let store = self.batch_store(options);
        let plan_key = format!("{}plan.json", record.folder);
        let planned: Vec<Planned> = serde_json::from_slice(&store.get_own(&plan_key).await?)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Failed,
                    "s3:GetObject",
                    url(store.bucket(), &plan_key),
                    format!(
                        "the planned objects of batch job {} are not valid ({e})",
                        record.job_id
                    ),
                )
            })?;
        // Tasks by their key field exactly as the manifest row held it (a
        // decoded key could be written two ways); a row twice is not
        // trusted either way.
        let mut tasks: HashMap<String, TaskResult> = HashMap::new();
        let mut twice: HashSet<String> = HashSet::new();
        if d.status != JobStatus::Failed || d.total > 0 {
            let manifest_key =
                format!("{}report/job-{}/manifest.json", record.folder, record.job_id);
            match store.get_own(&manifest_key).await {
                Ok(body) => match csv::parse_report_manifest(&body) {
                    Ok(files) => {
                        for (bucket, key) in files.files {
                            if bucket != options.bucket || !key.starts_with(&record.folder) {
                                report.findings.push(Finding::new(
                                    url(&bucket, &key),
                                    "the completion report names a result file outside the \
                                     job's report folder: not read",
                                ));
                                continue;
                            }
                            let text = store.get_own(&key).await?;
                            let (read, problems) =
                                csv::parse_report_csv(&String::from_utf8_lossy(&text));
                            for p in problems {
                                report.findings.push(Finding::new(url(&bucket, &key), p));
                            }
                            for t in read {
                                if t.bucket != self.source().bucket() {
                                    report.findings.push(Finding::new(
                                        url(&bucket, &key),
                                        format!(
                                            "the completion report names a task in bucket {} \
                                             for key {:?}, not the job's source: not counted",
                                            t.bucket, t.key
                                        ),
                                    ));
                                    continue;
                                }
                                if tasks.contains_key(&t.key_field) || twice.contains(&t.key_field)
                                {
                                    report.findings.push(Finding::new(
                                        url(&bucket, &key),
                                        format!(
                                            "the completion report lists the task of key {:?} \
                                             more than once: the key counts as failed",
                                            t.key
                                        ),
                                    ));
                                    tasks.remove(&t.key_field);
                                    twice.insert(t.key_field.clone());
                                    continue;
                                }
                                tasks.insert(t.key_field.clone(), t);
                            }
                        }
                    }
                    Err(p) => {
                        report.findings.push(Finding::new(url(store.bucket(), &manifest_key), p))
                    }
                },
                Err(e) => report.warnings.push(format!(
                    "the completion report of batch job {} could not be read: {}",
                    record.job_id,
                    e.chain()
                )),
            }
        }
        let job_reason = if d.reasons.is_empty() {
            format!("batch job {} ended {}", record.job_id, d.status.as_str())
        } else {
            format!(
                "batch job {} ended {}: {}",
                record.job_id,
                d.status.as_str(),
                d.reasons.join("; ")
            )
        };
        let kms = self.sink().protection().kms_key_id.is_some();
        let mut checked = Vec::new();
        // Every copy AWS says it made carries the job's lock, checked or
        // not: each is filed in the ledger under the job's retain-until day
        // (an older record without it: today, which the next renewal pass
        // files again under the copy's real day).
        let mut locked = Vec::new();
        let planned_fields: HashSet<String> =
            planned.iter().map(|p| csv::encode_key(&p.key)).collect();
        for (field, t) in &tasks {
            if !planned_fields.contains(field) {
                report.findings.push(Finding::new(
                    url(self.source().bucket(), &t.key),
                    format!(
                        "the completion report of batch job {} lists key {:?}, which the job's \
                         manifest does not hold: not counted",
                        record.job_id, field
                    ),
                ));
            }
        }
        // The checks (a HeadObject of the copy, and of the source where the
        // copy's ETag proves nothing) run CHECKS_AT_ONCE at a time, in plan
        // order: one at a time, a million-object job would take hours.
        let mut checks: Vec<Option<Result<Option<String>>>> = Vec::with_capacity(planned.len());
        let mut in_flight = futures::stream::FuturesOrdered::new();
        for p in &planned {
            let field = csv::encode_key(&p.key);
            let go = !twice.contains(&field) && tasks.get(&field).is_some_and(|t| t.succeeded);
            in_flight.push_back(self.check_if(p, go));
            if in_flight.len() >= CHECKS_AT_ONCE
                && let Some(done) = in_flight.next().await
            {
                checks.push(done);
            }
        }
        while let Some(done) = in_flight.next().await {
            checks.push(done);
        }
        drop(in_flight);
        for (p, check) in planned.into_iter().zip(checks) {
            let field = csv::encode_key(&p.key);
            // A key the report lists twice may have been copied too.
            if twice.contains(&field) || tasks.get(&field).is_some_and(|t| t.succeeded) {
                locked.push(self.sink().dest_key(&p.key));
            }
            let item = Item::new(
                p.key.clone(),
                escrow_sync_core::ItemKind::Object,
                p.size,
                p.etag.clone(),
            );
            let outcome = match (check, tasks.get(&field)) {
                (Some(checked), _) => checked,
                (None, _) if twice.contains(&field) => Err(Error::new(
                    ErrorKind::Failed,
                    "s3:CopyObject (batch)",
                    url(self.sink().bucket(), &self.sink().dest_key(&p.key)),
                    format!(
                        "the completion report of batch job {} lists this key more than once: \
                         not taken as copied; the next run copies it again",
                        record.job_id
                    ),
                )),
                (None, Some(t)) => Err(Error::new(
                    task_kind(t),
                    "s3:CopyObject (batch)",
                    url(self.sink().bucket(), &self.sink().dest_key(&p.key)),
                    format!(
                        "batch job {} task failed: {} {} {}",
                        record.job_id,
                        t.error_code.as_deref().unwrap_or(""),
                        t.http_status.map(|s| s.to_string()).unwrap_or_default(),
                        t.message
                    )
                    .trim_end()
                    .to_string(),
                )),
                (None, None) => Err(Error::new(
                    ErrorKind::Failed,
                    "s3:CopyObject (batch)",
                    url(self.sink().bucket(), &self.sink().dest_key(&p.key)),
                    format!("not in the completion report ({job_reason})"),
                )),
            };
            // A copy whose ETag is not the source's (under the escrow key,
            // or of a source uploaded in parts) is recorded once checked, so
            // the next plan takes it for the source's.
            if let Ok(Some(etag)) = &outcome
                && (kms || crate::util::uploaded_in_parts(&p.etag))
            {
                checked.push(copies::Copied {
                    key: self.sink().dest_key(&p.key),
                    escrow_etag: etag.clone(),
                    source_etag: p.etag.clone(),
                });
            }
            record_outcome(report, ctx, &item, outcome.map(|f| (p.size, f, 0)));
        }
        let until = record
            .retain_until
            .map(|s| std::time::UNIX_EPOCH + Duration::from_secs(s.max(0) as u64))
            .unwrap_or_else(std::time::SystemTime::now);
        self.sink().ledger_file(until, &locked).await?;
        if !checked.is_empty()
            && let Some(prefix) = self.sink().batch_copies().prefix()
        {
            // In files of at most RECORDS_PER_FILE copies: each stays well
            // under the size a reader takes (1,024-byte keys included).
            let token = &record.token[..32.min(record.token.len())];
            for (n, chunk) in checked.chunks(copies::RECORDS_PER_FILE).enumerate() {
                let key = format!("{prefix}{token}-{n:05}.json");
                let body = serde_json::to_vec(chunk).unwrap_or_default();
                store.put_own(&key, body, "application/json").await?;
            }
            self.sink().batch_copies().forget().await;
        }
        let folded = JobRecord { folded: true, ..record.clone() };
        self.write_record(options, &folded).await
    }

    /// [`Self::check_copy`] when `go`.
    async fn check_if(&self, p: &Planned, go: bool) -> Option<Result<Option<String>>> {
        if go { Some(self.check_copy(p).await) } else { None }
    }

    /// Checks an object the job says it copied against the plan: its size,
    /// and that it holds the planned bytes. Without an escrow key a copy of
    /// a single-part object has the source's ETag (the MD5 of its bytes):
    /// compared with the plan's. Under the escrow key, or for a source
    /// uploaded in parts, the copy's ETag is its own, so the source is read
    /// again (HeadObject) after the job: its ETag and LastModified must
    /// still be the plan's (any rewrite since the listing changes
    /// LastModified), so the job can only have copied the planned object;
    /// full-object checksums, where both carry one, must agree too. Returns
    /// the copy's ETag.
    async fn check_copy(&self, p: &Planned) -> Result<Option<String>> {
        let key = self.sink().dest_key(&p.key);
        let sink = self.sink();
        let head = sink
            .client()
            .head_object()
            .bucket(sink.bucket())
            .key(&key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .set_expected_bucket_owner(sink.owner().map(str::to_string))
            .send()
            .paced(sink.pacer())
            .await
            .map_err(|e| crate::util::s3_error(e, "s3:HeadObject", url(sink.bucket(), &key)))?;
        let size = head.content_length().unwrap_or(-1);
        let etag = head.e_tag().map(str::to_string);
        let kms = &self.sink().protection().kms_key_id;
        let in_parts = crate::util::uploaded_in_parts(&p.etag);
        let mut problems = Vec::new();
        if size != p.size as i64 {
            problems.push(format!("{size} bytes, planned {}", p.size));
        }
        match kms {
            None if !in_parts && etag.as_deref() != Some(p.etag.as_str()) => problems
                .push(format!("ETag {}, planned {}", etag.as_deref().unwrap_or("none"), p.etag)),
            Some(want)
                if !head.ssekms_key_id().is_some_and(|got| crate::protect::same_key(want, got)) =>
            {
                problems.push("not encrypted with the escrow key".to_string())
            }
            _ => {}
        }
        if problems.is_empty() && (kms.is_some() || in_parts) {
            match self.source().head(&p.key).await {
                Ok(src) => {
                    if src.e_tag() != Some(p.etag.as_str()) {
                        problems.push(format!(
                            "the source's ETag is now {}, planned {}",
                            src.e_tag().unwrap_or("none"),
                            p.etag
                        ));
                    }
                    let now = src.last_modified().map(|d| d.secs());
                    match p.modified {
                        None => problems.push(
                            "the plan holds no modification time to check the source against"
                                .to_string(),
                        ),
                        Some(m) if now != Some(m) => problems.push(format!(
                            "the source was modified after it was listed ({} seconds after \
                             the epoch, listed {m})",
                            now.map(|n| n.to_string()).unwrap_or_else(|| "unknown".into())
                        )),
                        Some(_) => {}
                    }
                    for (name, a, b) in [
                        ("CRC64NVME", src.checksum_crc64_nvme(), head.checksum_crc64_nvme()),
                        ("CRC32", src.checksum_crc32(), head.checksum_crc32()),
                        ("CRC32C", src.checksum_crc32_c(), head.checksum_crc32_c()),
                        ("SHA1", src.checksum_sha1(), head.checksum_sha1()),
                        ("SHA256", src.checksum_sha256(), head.checksum_sha256()),
                    ] {
                        // A checksum of parts ("…-N") is not the whole object's.
                        if let (Some(a), Some(b)) = (a, b)
                            && !a.contains('-')
                            && !b.contains('-')
                            && a != b
                        {
                            problems.push(format!("{name} checksum {b}, the source's {a}"));
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    problems.push("the source is gone".to_string())
                }
                Err(e) => return Err(e),
            }
        }
        if problems.is_empty() {
            Ok(etag)
        } else {
            Err(Error::new(
                ErrorKind::PreconditionFailed,
                "s3:CopyObject (batch)",
                url(self.sink().bucket(), &key),
                format!(
                    "the copy differs from the planned object ({}): the primary may have \
                     changed it between plan and copy; the next run copies it again",
                    problems.join(", ")
                ),
            ))
        }
    }
}

fn task_kind(t: &TaskResult) -> ErrorKind {
    match (t.error_code.as_deref(), t.http_status) {
        (Some("AccessDenied"), _) | (_, Some(403)) => ErrorKind::AccessDenied,
        (Some("PreconditionFailed"), _) | (_, Some(412)) => ErrorKind::PreconditionFailed,
        (Some("NoSuchKey"), _) | (_, Some(404)) => ErrorKind::NotFound,
        (Some("SlowDown"), _) | (_, Some(503)) => ErrorKind::Throttled,
        (_, Some(s)) if s >= 500 => ErrorKind::Transient,
        _ => ErrorKind::Failed,
    }
}

/// Counts one item's outcome in `report` and the item log.
fn record_outcome(
    report: &mut Report,
    ctx: &JobContext,
    item: &Item,
    outcome: Result<(u64, Option<String>, u32)>,
) {
    let rec = match outcome {
        Ok((bytes, fingerprint, parts)) => {
            report.copied += 1;
            report.bytes_copied += bytes;
            if parts > 1 {
                report.copied_in_parts += 1;
            }
            let mut r = ItemRecord::new(item.clone(), ItemOutcome::Copied);
            r.escrow_fingerprint = fingerprint;
            r
        }
        Err(e) => {
            report.failed += 1;
            report.failures.push(Failure::new(item.key.clone(), &e, 1));
            let mut r = ItemRecord::new(item.clone(), ItemOutcome::Failed);
            r.error = Some(e.chain());
            r
        }
    };
    if let Some(log) = ctx.item_log() {
        log(rec);
    }
}

/// The checksum algorithm of the job: the one every batched object
/// carries, else none (S3's default).
fn job_checksum(items: &[Item]) -> Option<String> {
    let first = items.first()?.checksum_algorithm.clone()?;
    items.iter().all(|i| i.checksum_algorithm.as_deref() == Some(&first)).then_some(first)
}

/// Writes one of the batch files and returns its ETag (the manifest's is
/// part of the job's manifest location).
async fn put_etag(store: &S3Sink, key: &str, body: Vec<u8>, content_type: &str) -> Result<String> {
    let out = store
        .client()
        .put_object()
        .bucket(store.bucket())
        .key(key)
        .body(aws_sdk_s3::primitives::ByteStream::from(body))
        .content_type(content_type)
        .set_expected_bucket_owner(store.owner().map(str::to_string))
        .send()
        .paced(store.pacer())
        .await
        .map_err(|e| crate::util::s3_error(e, "s3:PutObject", url(store.bucket(), key)))?;
    Ok(out.e_tag().unwrap_or_default().trim_matches('"').to_string())
}

async fn describe(options: &BatchOptions, job_id: &str) -> Result<Described> {
    let out = options
        .control
        .client
        .describe_job()
        .account_id(&options.account_id)
        .job_id(job_id)
        .send()
        .await
        .map_err(|e| control_error(e, "s3:DescribeJob", format!("batch job {job_id}")))?;
    let job = out.job().ok_or_else(|| {
        Error::new(
            ErrorKind::Failed,
            "s3:DescribeJob",
            format!("batch job {job_id}"),
            "no job in the answer",
        )
    })?;
    let p = job.progress_summary();
    let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
    Ok(Described {
        status: job.status().cloned().unwrap_or(JobStatus::New),
        total: n(p.and_then(|p| p.total_number_of_tasks())),
        succeeded: n(p.and_then(|p| p.number_of_tasks_succeeded())),
        failed: n(p.and_then(|p| p.number_of_tasks_failed())),
        reasons: job
            .failure_reasons()
            .iter()
            .map(|f| {
                format!("{} {}", f.failure_code().unwrap_or(""), f.failure_reason().unwrap_or(""))
                    .trim()
                    .to_string()
            })
            .collect(),
    })
}

/// Waits for a job to end: the one poll loop, capped pauses, cancellable.
async fn wait(options: &BatchOptions, job_id: &str, ctx: &JobContext) -> Result<Described> {
    let polling = Polling::new("s3:DescribeJob", format!("batch job {job_id}"))
        .with_first_pause(options.first_pause)
        .with_max_pause(options.max_pause)
        .with_timeout(options.timeout)
        .with_cancel(ctx.cancellation().clone());
    poll_until(&polling, || async {
        let d = describe(options, job_id).await?;
        Ok(if d.done() { Polled::Done(d) } else { Polled::Pending(d.status.as_str().to_string()) })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_endpoint_loses_the_account_prefix() {
        let e = aws_smithy_types::endpoint::Endpoint::builder()
            .url("http://222222222222.127.0.0.1:5000")
            .header("x-amz-account-id", "222222222222")
            .build();
        let e = unprefixed(e, "222222222222", "http://127.0.0.1:5000");
        assert_eq!(e.url(), "http://127.0.0.1:5000");
        assert_eq!(e.headers().count(), 1);
        let e = aws_smithy_types::endpoint::Endpoint::builder()
            .url("https://222222222222.example.com")
            .build();
        assert_eq!(
            unprefixed(e, "222222222222", "https://example.com").url(),
            "https://222222222222.example.com"
        );
    }

    #[test]
    fn engines_parse() {
        assert_eq!(Engine::parse("direct", 5), Some(Engine::Direct));
        assert_eq!(Engine::parse("batch-operations", 5), Some(Engine::BatchOperations));
        assert_eq!(Engine::parse("auto", 5), Some(Engine::Auto { threshold: 5 }));
        assert_eq!(Engine::parse("batch", 5), None);
    }
}
