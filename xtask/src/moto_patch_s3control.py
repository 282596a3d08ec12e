"""S3 Batch Operations Copy jobs, which moto 5.2.5 lacks (S3 Control CreateJob
and DescribeJob are not implemented).

Imported by moto_server_escrow.py.

What AWS does, and what this models:
- CreateJob (POST /v20180820/jobs, account in x-amz-account-id) creates a
  job from a CSV manifest (S3BatchOperations_CSV_20180820: Bucket,Key[,
  VersionId], keys URL-encoded) whose object ARN and ETag it is given; the
  same ClientRequestToken returns the job created before instead of a second
  one. With ConfirmationRequired = false the job runs by itself.
- DescribeJob (GET /v20180820/jobs/{id}) tells the job's status and progress
  (a job it does not know: 404 NotFoundException).
  Here a job is New when created, Active when first described, and runs
  all its tasks at the second DescribeJob, so a client's polling and a
  `--no-wait` run both have something to see.
- S3PutObjectCopy runs CopyObject per task, as the job's account (with its
  SSE-KMS key, Object Lock mode and retain-until date, and the copy's
  metadata and tags), into TargetResource under TargetKeyPrefix + "/"; an
  object modified after UnModifiedSinceConstraint fails its task with 412
  PreconditionFailed. A copy gets a new ETag (one CopyObject: the MD5 of
  its bytes, even for a source uploaded in parts). With ChecksumAlgorithm
  the copy's checksum is computed anew with that algorithm (CopyObject's
  x-amz-checksum-algorithm); without it the source's is kept. Metadata:
  MetadataDirective COPY keeps the source's user metadata and content
  headers; REPLACE takes NewObjectMetadata's UserMetadata and content
  headers instead.
  A manifest whose ETag differs from the given one fails the job.
- The completion report (Report_CSV_20180820) goes to the report bucket:
  {Prefix}/job-{id}/results/{uuid}.csv with one line per task (Bucket, Key
  as in the manifest, VersionId, TaskStatus, ErrorCode, HTTPStatusCode,
  ResultMessage), and {Prefix}/job-{id}/manifest.json listing the result
  files. ReportScope AllTasks reports every task, FailedTasksOnly only the
  failed ones.

Nothing else of S3 Control changes.
"""

import csv
import io
import json
import urllib.parse
import uuid
from datetime import datetime, timezone

from xml.sax.saxutils import escape

from moto.s3.models import s3_backends
from moto.s3.utils import compute_checksum
from moto.s3control import urls
from moto.s3control.responses import S3ControlResponse

# (account, job id) -> job; (account, token) -> job id.
_JOBS = {}
_TOKENS = {}


def _now():
    return datetime.now(timezone.utc)


def _arn_bucket_key(arn):
    # arn:aws:s3:::bucket/key
    rest = arn.split(":::", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key


def _naive(value):
    # A timestamp as moto keeps them: naive UTC, whole seconds.
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.replace(microsecond=0)
    return None


def _iso(value):
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value


_NS = "http://awss3control.amazonaws.com/doc/2018-08-20/"


def _xml(root, inner):
    # S3 Control is rest-xml: the result shape is the root element.
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{_NS}">{inner}</{root}>'
    return 200, {"content-type": "application/xml"}, body


def _el(name, value):
    return f"<{name}>{escape(str(value))}</{name}>" if value is not None else ""


def _user_metadata(new):
    # NewObjectMetadata.UserMetadata as parsed from the XML: entries of
    # key/value, one (a dict) or several (a list).
    um = (new or {}).get("UserMetadata") or {}
    entries = um.get("entry", um) if isinstance(um, dict) else um
    if isinstance(entries, dict) and "key" in entries:
        entries = [entries]
    if isinstance(entries, dict):
        return {f"x-amz-meta-{k}": v for k, v in entries.items()}
    return {f"x-amz-meta-{e.get('key')}": e.get("value") for e in entries or []}


_CONTENT = {
    "ContentType": "Content-Type",
    "CacheControl": "Cache-Control",
    "ContentDisposition": "Content-Disposition",
    "ContentEncoding": "Content-Encoding",
    "ContentLanguage": "Content-Language",
}


def create_job(self):
    account = self._get_param("AccountId")
    token = self._get_param("ClientRequestToken")
    known = _TOKENS.get((account, token))
    if known:
        return _xml("CreateJobResult", _el("JobId", known))
    job_id = str(uuid.uuid4())
    _JOBS[(account, job_id)] = {
        "JobId": job_id,
        "Status": "New",
        "Looks": 0,
        "Operation": self._get_param("Operation") or {},
        "Manifest": self._get_param("Manifest") or {},
        "Report": self._get_param("Report") or {},
        "RoleArn": self._get_param("RoleArn"),
        "Priority": self._get_param("Priority"),
        "Description": self._get_param("Description"),
        "CreationTime": _now(),
        "Failures": [],
        "Total": 0,
        "Succeeded": 0,
        "Failed": 0,
    }
    _TOKENS[(account, token)] = job_id
    return _xml("CreateJobResult", _el("JobId", job_id))


def describe_job(self):
    account = self._get_param("AccountId")
    job_id = self._get_param("JobId")
    job = _JOBS.get((account, job_id))
    if job is None:
        # AWS forgets a job 90 days on: 404 NotFoundException, as S3
        # Control's wrapped XML error.
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error>'
            "<Code>NotFoundException</Code>"
            + _el("Message", f"The specified job {job_id} was not found")
            + f"</Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
        )
        # (moto takes the status from the headers' "status").
        return 404, {"content-type": "application/xml", "status": 404}, body
    job["Looks"] += 1
    if job["Status"] == "New":
        job["Status"] = "Active"
    elif job["Status"] == "Active":
        _run(account, job)
    failures = "".join(
        "<member>" + _el("FailureCode", f["FailureCode"]) + _el("FailureReason", f["FailureReason"])
        + "</member>"
        for f in job["Failures"]
    )
    inner = (
        "<Job>"
        + _el("JobId", job_id)
        + _el("ConfirmationRequired", "false")
        + _el("Description", job["Description"])
        + _el("Status", job["Status"])
        + _el("Priority", job["Priority"])
        + _el("RoleArn", job["RoleArn"])
        + _el("CreationTime", _iso(job["CreationTime"]))
        + "<ProgressSummary>"
        + _el("TotalNumberOfTasks", job["Total"])
        + _el("NumberOfTasksSucceeded", job["Succeeded"])
        + _el("NumberOfTasksFailed", job["Failed"])
        + "</ProgressSummary>"
        + (f"<FailureReasons>{failures}</FailureReasons>" if failures else "")
        + "</Job>"
    )
    return _xml("DescribeJobResult", inner)


def _run(account, job):
    backend = s3_backends[account]["aws"]
    location = job["Manifest"].get("Location", {})
    fields = job["Manifest"].get("Spec", {}).get("Fields", ["Bucket", "Key"])
    m_bucket, m_key = _arn_bucket_key(location.get("ObjectArn", "arn:aws:s3:::/"))
    manifest = backend.get_object(m_bucket, m_key)
    if manifest is None or manifest.etag.strip('"') != str(location.get("ETag", "")).strip('"'):
        job["Status"] = "Failed"
        job["Failures"] = [
            {
                "FailureCode": "ManifestNotFound" if manifest is None else "ETagMismatch",
                "FailureReason": "the manifest is missing or its ETag differs from the job's",
            }
        ]
        return
    copy = job["Operation"].get("S3PutObjectCopy", {})
    target, _ = _arn_bucket_key(copy.get("TargetResource", "arn:aws:s3:::/"))
    prefix = copy.get("TargetKeyPrefix") or ""
    kms = copy.get("SSEAwsKmsKeyId")
    unmodified_since = _naive(copy.get("UnModifiedSinceConstraint"))
    rows = []
    for line in manifest.value.decode("utf-8").splitlines():
        if not line:
            continue
        cols = line.split(",")
        row = dict(zip(fields, cols))
        bucket, raw_key = row.get("Bucket", ""), row.get("Key", "")
        version = row.get("VersionId") or None
        key = urllib.parse.unquote(raw_key)
        try:
            src = backend.get_object(bucket, key, version_id=version)
            if src is None:
                rows.append((bucket, raw_key, version or "", "failed", "NoSuchKey", "404",
                             "The specified key does not exist."))
                continue
            # x-amz-copy-source-if-unmodified-since, compared in whole seconds.
            if unmodified_since and src.last_modified.replace(microsecond=0) > unmodified_since:
                rows.append((bucket, raw_key, version or "", "failed", "PreconditionFailed", "412",
                             "At least one of the pre-conditions you specified did not hold"))
                continue
            dest = f"{prefix}/{key}" if prefix else key
            replace = copy.get("MetadataDirective") == "REPLACE"
            metadata = None
            if replace:
                new = copy.get("NewObjectMetadata") or {}
                metadata = _user_metadata(new)
                metadata.update({h: new[f] for f, h in _CONTENT.items() if new.get(f)})
            backend.copy_object(
                src,
                target,
                dest,
                encryption="aws:kms" if kms else None,
                kms_key_id=kms,
                mdirective="REPLACE" if replace else "COPY",
                metadata=metadata,
                lock_mode=copy.get("ObjectLockMode"),
                lock_legal_status=copy.get("ObjectLockLegalHoldStatus"),
                lock_until=_iso(copy.get("ObjectLockRetainUntilDate")),
            )
            new_key = backend.get_object(target, dest)
            if new_key is not None:
                # One CopyObject: a single-part object, whatever the source.
                new_key.multipart = None
                new_key._etag = None
                algorithm = copy.get("ChecksumAlgorithm")
                if algorithm:
                    new_key.checksum_algorithm = algorithm
                    new_key.checksum_value = compute_checksum(
                        new_key.value, algorithm=algorithm
                    ).decode("utf-8")
            rows.append((bucket, raw_key, version or "", "succeeded", "", "200", "Successful"))
        except Exception as e:  # noqa: BLE001 - each task's failure is reported, as AWS does
            code = getattr(e, "error_type", type(e).__name__)
            status = str(getattr(e, "code", 500))
            rows.append((bucket, raw_key, version or "", "failed", code, status, str(e)))
    job["Total"] = len(rows)
    job["Succeeded"] = sum(1 for r in rows if r[3] == "succeeded")
    job["Failed"] = job["Total"] - job["Succeeded"]
    job["Status"] = "Complete"
    _report(backend, job, rows)


def _report(backend, job, rows):
    report = job["Report"]
    if not report.get("Enabled"):
        return
    bucket, _ = _arn_bucket_key(report.get("Bucket", "arn:aws:s3:::/") + "/")
    base = f"{report.get('Prefix', '').rstrip('/')}/job-{job['JobId']}"
    if report.get("ReportScope") == "FailedTasksOnly":
        rows = [r for r in rows if r[3] == "failed"]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    results = f"{base}/results/{uuid.uuid4()}.csv"
    backend.put_object(bucket, results, out.getvalue().encode("utf-8"))
    manifest = {
        "Format": "Report_CSV_20180820",
        "ReportCreationDate": _iso(_now()),
        "Results": [
            {
                "TaskExecutionStatus": "succeeded" if job["Failed"] == 0 else "failed",
                "Bucket": f"arn:aws:s3:::{bucket}",
                "MD5Checksum": "",
                "Key": results,
            }
        ],
        "ReportSchema": "Bucket, Key, VersionId, TaskStatus, ErrorCode, HTTPStatusCode, Result Message",
    }
    backend.put_object(bucket, f"{base}/manifest.json", json.dumps(manifest).encode("utf-8"))


S3ControlResponse.create_job = create_job
S3ControlResponse.describe_job = describe_job

urls.url_paths.update(
    {
        r"{0}/v20180820/jobs$": S3ControlResponse.dispatch,
        r"{0}/v20180820/jobs/(?P<id>[^/]+)$": S3ControlResponse.dispatch,
        "/v20180820/jobs": S3ControlResponse.dispatch,
        "/v20180820/jobs/<id>": S3ControlResponse.dispatch,
    }
)
