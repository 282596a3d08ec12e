"""Recycle Bin (rbin), which moto 5.2.5 does not model.

Imported by moto_server_escrow.py.

What AWS does: Recycle Bin keeps deleted EBS snapshots and AMIs for a
retention rule's period. Its API is restJson1 under the SigV4 service name
"rbin": CreateRule (POST /rules), ListRules (POST /list-rules), GetRule
(GET /rules/{id}), LockRule (PATCH /rules/{id}/lock), UnlockRule
(PATCH /rules/{id}/unlock), DeleteRule (DELETE /rules/{id}). Only a
Region-level rule (no resource tags, no exclusion tags) can be locked; a
locked rule, or one still in its unlock delay, cannot be deleted; an
unlocked rule goes to pending_unlock for its unlock delay.

The gap: moto has no rbin at all (every call is a 404). This module keeps
the rules per account (of the request's access key) and region (of its
SigV4 scope) and answers those six operations with AWS's rules above, so
that `escrow-sync audit` and the demo can read and create locked rules. It
does not retain anything (EC2's DeleteSnapshot still deletes at once) and
does not evaluate IAM policies. `POST /moto-api/reset` clears it with the
rest of moto.
"""

import json
import random
import string
import time

from moto.iam.models import get_account_id_from
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

# (account, region) -> {identifier: rule}
RULES = {}


def _scope(environ):
    """(service, access key, region) from the SigV4 Authorization header."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    credential = auth.split("Credential=", 1)[1].split(",", 1)[0] if "Credential=" in auth else ""
    parts = credential.split("/")
    key = parts[0] if parts and parts[0] else "AKIAIOSFODNN7EXAMPLE"
    region = parts[2] if len(parts) > 2 else "us-east-1"
    service = parts[3] if len(parts) > 3 else ""
    return service, key, region


class _Error(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _summary(rule):
    out = {k: rule[k] for k in ("Identifier", "Description", "RetentionPeriod", "RuleArn")}
    if rule.get("LockState"):
        out["LockState"] = rule["LockState"]
    return out


def _lockable(rule):
    if rule.get("ResourceTags") or rule.get("ExcludeResourceTags"):
        raise _Error(
            400,
            "ValidationException",
            "You can't lock tag-level retention rules, or Region-level retention rules that "
            "have exclusion tags",
        )


def _settle(rule):
    """An unlock whose delay has passed leaves the rule unlocked."""
    if rule.get("LockState") == "pending_unlock" and time.time() >= rule.get("_unlock_at", 0):
        rule["LockState"] = "unlocked"


def _lock(rule, config):
    delay = (config or {}).get("UnlockDelay") or {}
    value = delay.get("UnlockDelayValue")
    if delay.get("UnlockDelayUnit") != "DAYS" or not isinstance(value, int) or not 7 <= value <= 30:
        raise _Error(400, "ValidationException", "UnlockDelay must be 7 to 30 DAYS")
    _lockable(rule)
    rule["LockConfiguration"] = {"UnlockDelay": delay}
    rule["LockState"] = "locked"


def _public(rule):
    return {k: v for k, v in rule.items() if not k.startswith("_")}


def _handle(method, path, body, rules, account, region):
    parts = [p for p in path.split("/") if p]
    if method == "POST" and parts == ["rules"]:
        rtype = body.get("ResourceType")
        if rtype not in ("EBS_SNAPSHOT", "EC2_IMAGE"):
            raise _Error(400, "ValidationException", f"ResourceType {rtype!r} is not valid")
        period = body.get("RetentionPeriod") or {}
        if period.get("RetentionPeriodUnit") != "DAYS" or not 1 <= int(
            period.get("RetentionPeriodValue", 0)
        ) <= 365:
            raise _Error(400, "ValidationException", "RetentionPeriod must be 1 to 365 DAYS")
        ident = "".join(random.choices(string.ascii_letters + string.digits, k=11))
        rule = {
            "Identifier": ident,
            "Description": body.get("Description", ""),
            "ResourceType": rtype,
            "RetentionPeriod": period,
            "ResourceTags": body.get("ResourceTags") or [],
            "ExcludeResourceTags": body.get("ExcludeResourceTags") or [],
            "Tags": body.get("Tags") or [],
            "Status": "available",
            "RuleArn": f"arn:aws:rbin:{region}:{account}:rule/{ident}",
        }
        if body.get("LockConfiguration"):
            _lock(rule, body["LockConfiguration"])
        rules[ident] = rule
        return 201, _public(rule)
    if method == "POST" and parts == ["list-rules"]:
        rtype = body.get("ResourceType")
        if not rtype:
            raise _Error(400, "ValidationException", "ResourceType is required")
        found = []
        for rule in rules.values():
            _settle(rule)
            if rule["ResourceType"] != rtype:
                continue
            if body.get("LockState") and rule.get("LockState") != body["LockState"]:
                continue
            found.append(_summary(rule))
        return 200, {"Rules": found}
    if len(parts) >= 2 and parts[0] == "rules":
        rule = rules.get(parts[1])
        if rule is None:
            raise _Error(404, "ResourceNotFoundException", f"rule {parts[1]} not found")
        _settle(rule)
        if method == "GET" and len(parts) == 2:
            return 200, _public(rule)
        if method == "PATCH" and parts[2:] == ["lock"]:
            _lock(rule, body.get("LockConfiguration"))
            return 200, _public(rule)
        if method == "PATCH" and parts[2:] == ["unlock"]:
            if rule.get("LockState") != "locked":
                raise _Error(409, "ConflictException", f"rule {parts[1]} is not locked")
            days = rule["LockConfiguration"]["UnlockDelay"]["UnlockDelayValue"]
            rule["LockState"] = "pending_unlock"
            rule["_unlock_at"] = time.time() + days * 86400
            return 200, _public(rule)
        if method == "DELETE" and len(parts) == 2:
            if rule.get("LockState") in ("locked", "pending_unlock"):
                raise _Error(
                    409, "ConflictException", f"rule {parts[1]} is locked and can't be deleted"
                )
            del rules[parts[1]]
            return 204, None
    raise _Error(400, "UnknownOperationException", f"{method} {path} is not emulated")


def _answer(start_response, status, body, code=None):
    payload = b"" if body is None else json.dumps(body).encode()
    reason = {200: "OK", 201: "Created", 204: "No Content"}.get(status, "Error")
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    if code:
        headers.append(("x-amzn-ErrorType", code))
    start_response(f"{status} {reason}", headers)
    return [payload]


_dispatch = DomainDispatcherApplication.__call__


def dispatch(self, environ, start_response):
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "GET")
    if path == "/moto-api/reset" and method == "POST":
        RULES.clear()
        return _dispatch(self, environ, start_response)
    service, key, region = _scope(environ)
    if service != "rbin":
        return _dispatch(self, environ, start_response)
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    account = get_account_id_from(key)
    rules = RULES.setdefault((account, region), {})
    try:
        body = json.loads(raw) if raw else {}
        status, out = _handle(method, path, body, rules, account, region)
        return _answer(start_response, status, out)
    except _Error as e:
        return _answer(start_response, e.status, {"message": e.message}, e.code)
    except (KeyError, ValueError, TypeError) as e:
        return _answer(
            start_response, 400, {"message": f"{method} {path}: {e!r}"}, "ValidationException"
        )


DomainDispatcherApplication.__call__ = dispatch
