"""CloudWatch's Smithy RPC v2 CBOR protocol, which moto 5.2.5 does not speak.

Imported by moto_server_escrow.py.

What AWS does: CloudWatch (service "GraniteServiceVersion20100801") accepts
the rpcv2Cbor protocol besides awsQuery, and the AWS SDK for Rust uses it:
`POST /service/GraniteServiceVersion20100801/operation/<Operation>` with a
CBOR map body, `smithy-protocol: rpc-v2-cbor`; the answer is a CBOR map (an
error: a map with `__type` and `message`, and a 4xx status). moto answers
only awsQuery, so every request of the Rust SDK gets a 404.

The gap: this module answers the three operations escrow-sync and its
suites use (PutMetricData, ListMetrics, GetMetricStatistics) from moto's own
CloudWatch backend, in the account of the request's access key and the
region of its SigV4 scope. Everything else under that path is refused with
an UnknownOperationException, so a missing piece shows as an error, never
as silent success. The CBOR codec below is the subset of RFC 8949 the
protocol uses (maps, arrays, strings, integers, floats, booleans, null,
tag 1 epoch timestamps).
"""

import datetime
import math
import struct

from moto.cloudwatch.exceptions import InvalidParameterValue, ValidationError
from moto.cloudwatch.models import cloudwatch_backends
from moto.iam.models import get_account_id_from
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

PREFIX = "/service/GraniteServiceVersion20100801/operation/"


class _Timestamp(float):
    """An epoch-seconds time: encoded with tag 1."""


def _decode(data, i=0):
    head = data[i]
    major, info = head >> 5, head & 0x1F
    i += 1
    if info < 24:
        arg = info
    elif info in (24, 25, 26, 27):
        n = 1 << (info - 24)
        if major == 7 and info in (25, 26, 27):
            raw = data[i : i + n]
            i += n
            if info == 25:
                return struct.unpack(">e", raw)[0], i
            return struct.unpack(">f" if info == 26 else ">d", raw)[0], i
        arg = int.from_bytes(data[i : i + n], "big")
        i += n
    elif info == 31:
        arg = None  # indefinite length
    else:
        raise ValueError(f"cbor: unsupported additional info {info}")
    if major == 0:
        return arg, i
    if major == 1:
        return -1 - arg, i
    if major in (2, 3):
        if arg is None:
            chunks = []
            while data[i] != 0xFF:
                chunk, i = _decode(data, i)
                chunks.append(chunk)
            joined = (b"" if major == 2 else "").join(chunks)
            return joined, i + 1
        raw = bytes(data[i : i + arg])
        return (raw if major == 2 else raw.decode("utf-8")), i + arg
    if major == 4:
        out = []
        while (arg is None and data[i] != 0xFF) or (arg is not None and len(out) < arg):
            v, i = _decode(data, i)
            out.append(v)
        return out, (i + 1 if arg is None else i)
    if major == 5:
        out = {}
        while (arg is None and data[i] != 0xFF) or (arg is not None and len(out) < arg):
            k, i = _decode(data, i)
            v, i = _decode(data, i)
            out[k] = v
        return out, (i + 1 if arg is None else i)
    if major == 6:
        v, i = _decode(data, i)
        if arg == 1:
            return datetime.datetime.fromtimestamp(float(v), datetime.timezone.utc).replace(tzinfo=None), i
        return v, i
    # major 7, simple values
    return {20: False, 21: True, 22: None, 23: None}[arg], i


def _head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise ValueError("cbor: integer too large")


def _encode(v):
    if v is None:
        return b"\xf6"
    if v is True:
        return b"\xf5"
    if v is False:
        return b"\xf4"
    if isinstance(v, _Timestamp):
        return b"\xc1" + b"\xfb" + struct.pack(">d", float(v))
    if isinstance(v, int):
        return _head(0, v) if v >= 0 else _head(1, -1 - v)
    if isinstance(v, float):
        return b"\xfb" + struct.pack(">d", v)
    if isinstance(v, str):
        raw = v.encode("utf-8")
        return _head(3, len(raw)) + raw
    if isinstance(v, bytes):
        return _head(2, len(v)) + v
    if isinstance(v, (list, tuple)):
        return _head(4, len(v)) + b"".join(_encode(x) for x in v)
    if isinstance(v, dict):
        return _head(5, len(v)) + b"".join(_encode(k) + _encode(x) for k, x in v.items())
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=datetime.timezone.utc)
        return _encode(_Timestamp(v.timestamp()))
    raise TypeError(f"cbor: cannot encode {type(v).__name__}")


def _scope(environ):
    """(access key, region) from the SigV4 Authorization header."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    credential = auth.split("Credential=", 1)[1].split(",", 1)[0] if "Credential=" in auth else ""
    parts = credential.split("/")
    key = parts[0] if parts and parts[0] else "AKIAIOSFODNN7EXAMPLE"
    region = parts[2] if len(parts) > 2 else "us-east-1"
    return key, region


def _float(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _put_metric_data(backend, body):
    backend.put_metric_data(body["Namespace"], body.get("MetricData") or [])
    return {}


def _list_metrics(backend, body):
    token, metrics = backend.list_metrics(
        body.get("NextToken"),
        body.get("Namespace"),
        body.get("MetricName"),
        body.get("Dimensions") or [],
    )
    out = {
        "Metrics": [
            {
                "Namespace": m.namespace,
                "MetricName": m.name,
                "Dimensions": [{"Name": d.name, "Value": d.value} for d in m.dimensions],
            }
            for m in metrics
        ]
    }
    if token:
        out["NextToken"] = token
    return out


def _get_metric_statistics(backend, body):
    stats = (body.get("Statistics") or []) + (body.get("ExtendedStatistics") or [])
    datapoints = backend.get_metric_statistics(
        body["Namespace"],
        body["MetricName"],
        body["StartTime"],
        body["EndTime"],
        int(body["Period"]),
        stats,
        body.get("Dimensions") or [],
        body.get("Unit"),
    )
    out = []
    for dp in datapoints:
        point = {"Timestamp": dp.timestamp}
        for name, attr in (
            ("SampleCount", "sample_count"),
            ("Sum", "sum"),
            ("Minimum", "minimum"),
            ("Maximum", "maximum"),
            ("Average", "average"),
        ):
            if name in stats:
                value = _float(getattr(dp, attr, None))
                if value is not None:
                    point[name] = value
        if dp.unit:
            point["Unit"] = dp.unit
        out.append(point)
    return {"Label": body["MetricName"], "Datapoints": out}


OPERATIONS = {
    "PutMetricData": _put_metric_data,
    "ListMetrics": _list_metrics,
    "GetMetricStatistics": _get_metric_statistics,
}


def _answer(start_response, status, body):
    payload = _encode(body)
    start_response(
        status,
        [
            ("Content-Type", "application/cbor"),
            ("smithy-protocol", "rpc-v2-cbor"),
            ("Content-Length", str(len(payload))),
        ],
    )
    return [payload]


_dispatch = DomainDispatcherApplication.__call__


def dispatch(self, environ, start_response):
    path = environ.get("PATH_INFO", "")
    if not path.startswith(PREFIX):
        return _dispatch(self, environ, start_response)
    operation = path[len(PREFIX) :]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    handler = OPERATIONS.get(operation)
    if handler is None:
        return _answer(
            start_response,
            "400 Bad Request",
            {"__type": "UnknownOperationException", "message": f"{operation} is not emulated"},
        )
    key, region = _scope(environ)
    backend = cloudwatch_backends[get_account_id_from(key)][region]
    try:
        body = _decode(raw)[0] if raw else {}
        return _answer(start_response, "200 OK", handler(backend, body or {}))
    except (InvalidParameterValue, ValidationError) as e:
        code = getattr(e, "error_type", None) or type(e).__name__
        return _answer(start_response, "400 Bad Request", {"__type": code, "message": str(e)})
    except (KeyError, ValueError, TypeError) as e:
        return _answer(
            start_response,
            "400 Bad Request",
            {"__type": "InvalidParameterValue", "message": f"{operation}: {e!r}"},
        )


DomainDispatcherApplication.__call__ = dispatch
