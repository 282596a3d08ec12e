"""DynamoDB gaps of moto 5.2.5: incremental exports, and the point-in-time
recovery window they are asked against.

Imported by moto_server_escrow.py.

What AWS does: ExportTableToPointInTime with `ExportType =
INCREMENTAL_EXPORT` and `IncrementalExportSpecification {ExportFromTime,
ExportToTime, ExportViewType}` (a window of 15 minutes to 24 hours) writes
the items that changed in the window, each once in its state at
ExportToTime: under `<S3Prefix>/AWSDynamoDB/<id>/`, `manifest-summary.json`
(`exportType: INCREMENTAL_EXPORT`, the window, `manifestFilesS3Key`),
`manifest-files.json` (one JSON line per data file: `dataFileS3Key`,
`itemCount`, `md5Checksum`) and `data/*.json.gz`, one line per item:
`{"Metadata":{"WriteTimestampMicros":{"N":"…"}},"Keys":{…},"NewImage":{…},
"OldImage":{…}}`; a deleted item has `Keys` and `OldImage` (its state at
ExportFromTime, with NEW_AND_OLD_IMAGES) and no `NewImage`. DescribeExport
reports the export type, the window and `ExportManifest` (the summary's
key). DescribeContinuousBackups reports a LatestRestorableDateTime that
follows the clock.

The gap: moto keeps no item history and exports the whole table whatever
the type asked for (no manifest); its LatestRestorableDateTime stays at the
time recovery was enabled.

What this patch does: every write to a table with point-in-time recovery on
(PutItem, UpdateItem, DeleteItem, and the batch and transaction writes built
on them) appends `(time, keys, old image, new image)` to a change log kept
on the table (AWS cannot export changes from before recovery was on either;
other tables pay nothing); an
incremental export compacts the log entries in `[ExportFromTime,
ExportToTime)` per item (first old image, last new image, last write time)
and writes AWS's files above; a window under 15 minutes or over 24 hours is
refused with ValidationException, as AWS does. DescribeExport echoes the
window and the manifest key; full exports are left to moto (the table as it
is when the export runs, whatever ExportTime asked). LatestRestorableDateTime
reads the table's clock.

A test hook, since no suite waits 15 minutes: a table tagged
`emulator:dynamodb-clock-behind-seconds = N` runs its clock N seconds behind
the wall clock (write times, LatestRestorableDateTime, and the
EarliestRestorableDateTime set when recovery is enabled). A suite tags the
table before enabling recovery and may lower N later (re-tag: the newest tag
wins) to move the table's clock forward; it never raises it.
"""

import base64
import hashlib
import json
import threading
import time
from uuid import uuid4

from moto.core.utils import gzip_compress
from moto.dynamodb.exceptions import MockValidationException
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.models.table_export import TableExport
from moto.dynamodb.models.utilities import dynamo_json_dump
from moto.dynamodb.responses import DynamoHandler

CLOCK_TAG = "emulator:dynamodb-clock-behind-seconds"
MIN_WINDOW = 15 * 60
MAX_WINDOW = 24 * 3600


def table_now(table):
    """The table's clock: the wall clock, less the newest CLOCK_TAG."""
    behind = 0.0
    for tag in table.tags or []:
        if tag.get("Key") == CLOCK_TAG:
            behind = float(tag["Value"])
    return time.time() - behind


def _secs(value):
    """Seconds since 1970 of a request's timestamp (moto parses it to a datetime)."""
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def _image(item):
    return None if item is None else item.to_json()["Attributes"]


def _recovering(table):
    """Whether point-in-time recovery is on: changes are kept only then."""
    pitr = table.continuous_backups.get("PointInTimeRecoveryDescription", {})
    return pitr.get("PointInTimeRecoveryStatus") == "ENABLED"


def _record(table, old, new):
    image = new if new is not None else old
    if image is None or not _recovering(table):
        return
    keys = {
        name: image[name]
        for name in (table.hash_key_attr, table.range_key_attr)
        if name and name in image
    }
    log = table.__dict__.setdefault("escrow_changes", [])
    log.append((table_now(table), keys, old, new))


def _current(table, attrs):
    """The image of the item with the key in `attrs`, if any."""
    hash_value = attrs.get(table.hash_key_attr) if isinstance(attrs, dict) else None
    if hash_value is None or not _recovering(table):
        return None
    range_value = attrs.get(table.range_key_attr) if table.range_key_attr else None
    try:
        return _image(
            table.get_item(
                DynamoType(hash_value),
                DynamoType(range_value) if range_value is not None else None,
            )
        )
    except Exception:
        return None  # moto's own call refuses the request


_put_item = Table.put_item


def put_item(self, item_attrs, *args, **kwargs):
    old = _current(self, item_attrs)
    item = _put_item(self, item_attrs, *args, **kwargs)
    _record(self, old, _image(item))
    return item


Table.put_item = put_item


_delete_item = Table.delete_item


def delete_item(self, hash_key, range_key):
    item = _delete_item(self, hash_key, range_key)
    if item is not None:
        _record(self, _image(item), None)
    return item


Table.delete_item = delete_item


_update_item = DynamoDBBackend.update_item


def update_item(self, table_name, key, *args, **kwargs):
    table = self.get_table(table_name)
    old = _current(table, key)
    item = _update_item(self, table_name, key, *args, **kwargs)
    # A new item's creation was logged by put_item; this entry carries its
    # state after the update (the export keeps the first old image).
    _record(table, old, _image(item))
    return item


DynamoDBBackend.update_item = update_item


_describe_continuous_backups = DynamoDBBackend.describe_continuous_backups


def describe_continuous_backups(self, table_name):
    backups = _describe_continuous_backups(self, table_name)
    pitr = backups.get("PointInTimeRecoveryDescription", {})
    if pitr.get("PointInTimeRecoveryStatus") == "ENABLED":
        pitr["LatestRestorableDateTime"] = table_now(self.get_table(table_name))
    return backups


DynamoDBBackend.describe_continuous_backups = describe_continuous_backups


_update_continuous_backups = DynamoDBBackend.update_continuous_backups


def update_continuous_backups(self, table_name, point_in_time_spec):
    table = self.get_table(table_name)
    was = table.continuous_backups["PointInTimeRecoveryDescription"].get(
        "PointInTimeRecoveryStatus"
    )
    backups = _update_continuous_backups(self, table_name, point_in_time_spec)
    pitr = backups["PointInTimeRecoveryDescription"]
    if was == "DISABLED" and pitr.get("PointInTimeRecoveryStatus") == "ENABLED":
        now = table_now(table)
        pitr["EarliestRestorableDateTime"] = now
        pitr["LatestRestorableDateTime"] = now
    return backups


DynamoDBBackend.update_continuous_backups = update_continuous_backups


# The request being handled, for TableExport.__init__ (which moto calls
# without the incremental specification) on the same thread.
_request = threading.local()

_export_handler = DynamoHandler.export_table_to_point_in_time


def export_table_to_point_in_time(self):
    body = self.body
    if body.get("ExportType") == "INCREMENTAL_EXPORT":
        spec = body.get("IncrementalExportSpecification") or {}
        start, end = spec.get("ExportFromTime"), spec.get("ExportToTime")
        if start is None or end is None:
            raise MockValidationException(
                "IncrementalExportSpecification needs ExportFromTime and ExportToTime"
            )
        if not MIN_WINDOW <= _secs(end) - _secs(start) <= MAX_WINDOW:
            raise MockValidationException(
                "Incremental export period must be between 15 minutes and 24 hours"
            )
    _request.body = body
    try:
        return _export_handler(self)
    finally:
        _request.body = None


DynamoHandler.export_table_to_point_in_time = export_table_to_point_in_time


_export_init = TableExport.__init__


def export_init(self, *args, **kwargs):
    _export_init(self, *args, **kwargs)
    body = getattr(_request, "body", None) or {}
    self.escrow_spec = (
        body.get("IncrementalExportSpecification")
        if self.export_type == "INCREMENTAL_EXPORT"
        else None
    )
    self.escrow_export_time = body.get("ExportTime")
    self.escrow_manifest = None


TableExport.__init__ = export_init


_backup_to_s3_file = TableExport._backup_to_s3_file


def _incremental_lines(table, start, end, view):
    """One line per item changed in [start, end): its state at `end`."""
    first_old, last = {}, {}
    for at, keys, old, new in table.__dict__.get("escrow_changes", []):
        if not start <= at < end:
            continue
        k = json.dumps(keys, sort_keys=True)
        first_old.setdefault(k, old)
        last[k] = (at, keys, new)
    lines = []
    for k, (at, keys, new) in last.items():
        line = {"Metadata": {"WriteTimestampMicros": {"N": str(int(at * 1_000_000))}}}
        line["Keys"] = keys
        if new is not None:
            line["NewImage"] = new
        if view == "NEW_AND_OLD_IMAGES" and first_old[k] is not None:
            line["OldImage"] = first_old[k]
        lines.append(dynamo_json_dump(line))
    return lines


def _iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(t))


def backup_to_s3_file(self, s3_backend):
    if self.escrow_spec is None:
        return _backup_to_s3_file(self, s3_backend)
    started = time.time()
    start = _secs(self.escrow_spec["ExportFromTime"])
    end = _secs(self.escrow_spec["ExportToTime"])
    view = self.escrow_spec.get("ExportViewType", "NEW_AND_OLD_IMAGES")
    lines = _incremental_lines(self.table, start, end, view)
    base = f"{self.s3_prefix}/AWSDynamoDB/{int(started * 1000):014d}-{uuid4().hex[:8]}"
    data = gzip_compress(("".join(line + "\n" for line in lines)).encode("utf-8"))
    data_key = f"{base}/data/{uuid4().hex}.json.gz"
    s3_backend.put_object(bucket_name=self.s3_bucket, key_name=data_key, value=data)
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    files = {
        "itemCount": len(lines),
        "md5Checksum": md5,
        "etag": hashlib.md5(data).hexdigest(),
        "dataFileS3Key": data_key,
    }
    files_key = f"{base}/manifest-files.json"
    s3_backend.put_object(
        bucket_name=self.s3_bucket,
        key_name=files_key,
        value=(json.dumps(files) + "\n").encode(),
    )
    summary = {
        "version": "2023-08-01",
        "exportArn": self.arn,
        "startTime": _iso(started),
        "endTime": _iso(time.time()),
        "tableArn": self.table.table_arn,
        "exportFromTime": _iso(start),
        "exportToTime": _iso(end),
        "s3Bucket": self.s3_bucket,
        "s3Prefix": self.s3_prefix,
        "s3SseAlgorithm": "AES256",
        "manifestFilesS3Key": files_key,
        "billedSizeBytes": len(data),
        "itemCount": len(lines),
        "outputFormat": "DYNAMODB_JSON",
        "outputView": view,
        "exportType": "INCREMENTAL_EXPORT",
    }
    summary_key = f"{base}/manifest-summary.json"
    s3_backend.put_object(
        bucket_name=self.s3_bucket,
        key_name=summary_key,
        value=json.dumps(summary).encode(),
    )
    self.item_count = len(lines)
    self.processed_bytes = len(data)
    self.escrow_manifest = summary_key
    self.status = "COMPLETED" if self.error_count == 0 else "FAILED"


TableExport._backup_to_s3_file = backup_to_s3_file


_response = TableExport.response


def response(self):
    out = _response(self)
    if self.escrow_spec is not None:
        out["IncrementalExportSpecification"] = {
            "ExportFromTime": self.escrow_spec["ExportFromTime"],
            "ExportToTime": self.escrow_spec["ExportToTime"],
            "ExportViewType": self.escrow_spec.get("ExportViewType", "NEW_AND_OLD_IMAGES"),
        }
    elif self.escrow_export_time is not None:
        out["ExportTime"] = self.escrow_export_time
    if self.escrow_manifest is not None:
        out["ExportManifest"] = self.escrow_manifest
    return out


TableExport.response = response
