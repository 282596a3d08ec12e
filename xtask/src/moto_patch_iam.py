"""moto 5.2.5: the resource IAM enforcement sees for DynamoDB, KMS, RDS and IAM requests.

With IAM enforcement on (`INITIAL_NO_AUTH_ACTION_COUNT`, or
`POST /moto-api/reset-auth`), moto checks each request's action against the
caller's identity policies and a resource that the service's handler names
(`_determine_resource`). Only a few handlers name one; DynamoDB's, KMS's and
RDS's give `*`, so a statement scoped to a table, key or snapshot (which is what
`escrow-sync policy` generates, and what AWS evaluates) could never match and
scoped policies could not be tested at all. These two patches name the
resource as AWS does. Without enforcement (moto's default) nothing reads it,
so nothing else changes.

- DynamoDB: the table's ARN, from `TableArn` / `ResourceArn` / `ExportArn`,
  or `TableName` (a name, or an ARN as DescribeTable also accepts), or the one
  table of a BatchGetItem / BatchWriteItem; `*` otherwise (ListTables, and
  batches over several tables, which AWS checks table by table).
- KMS: the key's ARN, from `KeyId` (a key id, key ARN, alias name or alias
  ARN; an alias is resolved in the caller's account as AWS does before
  authorising against the key); `*` for requests without a key (CreateKey,
  ListKeys, Decrypt without KeyId) or an alias that names no key.
- RDS: the snapshot's ARN for requests that name one DB snapshot
  (`DBSnapshotIdentifier`) or cluster snapshot (`DBClusterSnapshotIdentifier`)
  but no target (`Target...`: copies are authorised against both on AWS, so
  they keep `*`); `*` otherwise, as for the listings.
- IAM: moto's own (a role's ARN), else the user's ARN for requests that name
  one user (`UserName`: the audit's ListAccessKeys); `*` otherwise
  (ListUsers, ListRoles).
"""

import json
from collections.abc import Mapping

from moto.dynamodb.responses import DynamoHandler
from moto.iam.responses import IamResponse
from moto.kms.models import kms_backends
from moto.kms.responses import KmsResponse
from moto.rds.responses import RDSResponse


def _json_body(handler):
    # moto's parsed parameters: a dict, or (RDS) a case-insensitive mapping
    # whose keys iterate in snake_case; read them with .get(PascalCase).
    params = getattr(handler, "params", None)
    if isinstance(params, Mapping) and params:
        return params
    try:
        body = json.loads(handler.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _dynamodb_resource(self):
    body = _json_body(self)

    def arn(table):
        if table.startswith("arn:"):
            return table
        return f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{table}"

    for k in ("TableArn", "ResourceArn", "ExportArn"):
        if isinstance(body.get(k), str):
            return body[k]
    if isinstance(body.get("TableName"), str):
        return arn(body["TableName"])
    items = body.get("RequestItems")
    if isinstance(items, dict) and len(items) == 1:
        return arn(next(iter(items)))
    return "*"


def _kms_resource(self):
    key = _json_body(self).get("KeyId")
    if not isinstance(key, str) or not key:
        return "*"
    if key.startswith("arn:") and ":key/" in key:
        return key
    backend = kms_backends[self.current_account][self.region]
    try:
        key_id = backend.any_id_to_key_id(key)
    except Exception:  # an alias that names no key: nothing to scope to
        return "*"
    found = backend.keys.get(key_id)
    if found is not None:
        return found.arn
    return f"arn:aws:kms:{self.region}:{self.current_account}:key/{key_id}"


def _rds_resource(self):
    body = _json_body(self)
    targets = ("TargetDBSnapshotIdentifier", "TargetDBClusterSnapshotIdentifier")
    if any(body.get(t) for t in targets):
        return "*"
    for param, kind in (
        ("DBSnapshotIdentifier", "snapshot"),
        ("DBClusterSnapshotIdentifier", "cluster-snapshot"),
    ):
        ident = body.get(param)
        if isinstance(ident, str) and ident:
            if ident.startswith("arn:"):
                return ident
            return f"arn:aws:rds:{self.region}:{self.current_account}:{kind}:{ident}"
    return "*"


_iam_roles = IamResponse._determine_resource


def _iam_resource(self):
    resource = _iam_roles(self)  # moto's own: a role's ARN
    if resource != "*":
        return resource
    user = (self.data.get("UserName") or [None])[0]
    if isinstance(user, str) and user:
        return f"arn:aws:iam::{self.current_account}:user/{user}"
    return "*"


DynamoHandler._determine_resource = _dynamodb_resource
IamResponse._determine_resource = _iam_resource
KmsResponse._determine_resource = _kms_resource
RDSResponse._determine_resource = _rds_resource
