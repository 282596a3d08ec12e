"""Redshift gaps of moto 5.2.5: AuthorizeSnapshotAccess / RevokeSnapshotAccess,
shared snapshots visible to the account named, restore with OwnerAccount.

Imported by moto_server_escrow.py; each patch is commented gap by gap.

What AWS does (Redshift Management Guide, "Sharing a snapshot"): the owner of
a manual snapshot authorizes another account to restore it; that account can
then describe it (DescribeClusterSnapshots with OwnerAccount) and restore it
(RestoreFromClusterSnapshot with OwnerAccount), nothing else; once the owner
revokes the authorization the snapshot is invisible to it again. Automated
snapshots cannot be shared: CopyClusterSnapshot makes a manual one first."""

import copy
import threading

from moto.core.responses import ActionResult
from moto.redshift.exceptions import (
    ClusterSnapshotAlreadyExistsError,
    ClusterSnapshotNotFoundError,
    RedshiftClientError,
)
from moto.redshift.models import RedshiftBackend, Snapshot, redshift_backends
from moto.redshift.responses import RedshiftResponse


# moto finds an error's service model by the module that defines it.
class AuthorizationAlreadyExists(RedshiftClientError):
    __module__ = "moto.redshift.exceptions"
    code = "AuthorizationAlreadyExists"


class AuthorizationNotFound(RedshiftClientError):
    __module__ = "moto.redshift.exceptions"
    code = "AuthorizationNotFound"


class InvalidClusterSnapshotState(RedshiftClientError):
    __module__ = "moto.redshift.exceptions"
    code = "InvalidClusterSnapshotState"


# Gap 1: snapshots keep no list of authorized accounts and answer neither
# AccountsWithRestoreAccess nor OwnerAccount; nor do they carry the KmsKeyId of
# the cluster they were taken from, or a ManualSnapshotRetentionPeriod.
_snapshot_init = Snapshot.__init__


def snapshot_init(self, cluster, *args, **kwargs):
    _snapshot_init(self, cluster, *args, **kwargs)
    self.authorized_accounts = []
    self.kms_key_id = getattr(cluster, "kms_key_id", None)
    self.manual_snapshot_retention_period = -1 if self.snapshot_type == "manual" else None


Snapshot.__init__ = snapshot_init
Snapshot.owner_account = property(lambda self: self.account_id)
Snapshot.accounts_with_restore_access = property(
    lambda self: [{"AccountId": a} for a in getattr(self, "authorized_accounts", [])]
)


def shared_snapshot(account_id, region, owner, snapshot_identifier=None):
    """`owner`'s manual snapshots in `region` that `account_id` may restore
    (only `snapshot_identifier` when given)."""
    backend = redshift_backends[owner][region]
    return [
        s
        for s in backend.snapshots.values()
        if account_id in getattr(s, "authorized_accounts", [])
        and snapshot_identifier in (None, s.snapshot_identifier)
    ]


def own_snapshot(backend, identifier, arn):
    """The caller's snapshot named by identifier or ARN (...:snapshot:cluster/id)."""
    if not identifier and arn:
        identifier = arn.rsplit("/", 1)[-1]
    snapshot = backend.snapshots.get(identifier)
    if snapshot is None:
        raise ClusterSnapshotNotFoundError(identifier)
    return snapshot


# Gap 2: AuthorizeSnapshotAccess / RevokeSnapshotAccess are not implemented.
# Only a manual snapshot can be shared, never with its own account.
def authorize_snapshot_access(self):
    snapshot = own_snapshot(
        self.redshift_backend, self._get_param("SnapshotIdentifier"), self._get_param("SnapshotArn")
    )
    account = self._get_param("AccountWithRestoreAccess")
    if snapshot.snapshot_type != "manual":
        raise InvalidClusterSnapshotState(
            f"Only manual snapshots can be shared: {snapshot.snapshot_identifier} is automated"
        )
    if account == snapshot.account_id:
        raise InvalidClusterSnapshotState(f"Account {account} owns {snapshot.snapshot_identifier}")
    if account in snapshot.authorized_accounts:
        raise AuthorizationAlreadyExists(
            f"Account {account} is already authorized to restore {snapshot.snapshot_identifier}"
        )
    snapshot.authorized_accounts.append(account)
    return ActionResult({"Snapshot": snapshot})


def revoke_snapshot_access(self):
    snapshot = own_snapshot(
        self.redshift_backend, self._get_param("SnapshotIdentifier"), self._get_param("SnapshotArn")
    )
    account = self._get_param("AccountWithRestoreAccess")
    if account not in snapshot.authorized_accounts:
        raise AuthorizationNotFound(
            f"Account {account} is not authorized to restore {snapshot.snapshot_identifier}"
        )
    snapshot.authorized_accounts.remove(account)
    return ActionResult({"Snapshot": snapshot})


RedshiftResponse.authorize_snapshot_access = authorize_snapshot_access
RedshiftResponse.revoke_snapshot_access = revoke_snapshot_access


# Gap 3: DescribeClusterSnapshots ignores OwnerAccount: another account's
# snapshots are listed only with OwnerAccount naming their owner, and only
# those that owner authorized the caller to restore.
_describe_cluster_snapshots = RedshiftResponse.describe_cluster_snapshots


def describe_cluster_snapshots(self):
    owner = self._get_param("OwnerAccount")
    if not owner or owner == self.current_account:
        return _describe_cluster_snapshots(self)
    identifier = self._get_param("SnapshotIdentifier")
    snapshots = shared_snapshot(self.current_account, self.region, owner, identifier)
    if identifier and not snapshots:
        raise ClusterSnapshotNotFoundError(identifier)
    cluster = self._get_param("ClusterIdentifier")
    kind = self._get_param("SnapshotType")
    snapshots = [
        s
        for s in snapshots
        if cluster in (None, s.cluster_identifier) and kind in (None, s.snapshot_type)
    ]
    return ActionResult({"Snapshots": snapshots})


RedshiftResponse.describe_cluster_snapshots = describe_cluster_snapshots


# Gap 4: RestoreFromClusterSnapshot ignores OwnerAccount (a snapshot another
# account authorized the caller to restore), KmsKeyId and Encrypted (the
# restored cluster is encrypted with the key asked for). The response method
# drops these parameters, so it hands them to the backend beside its own.
_restore_params = threading.local()
_restore_response = RedshiftResponse.restore_from_cluster_snapshot


def restore_response(self):
    _restore_params.value = {
        "owner": self._get_param("OwnerAccount"),
        "kms_key_id": self._get_param("KmsKeyId"),
        "encrypted": self._get_bool_param("Encrypted"),
    }
    try:
        return _restore_response(self)
    finally:
        _restore_params.value = None


_restore = RedshiftBackend.restore_from_cluster_snapshot


def restore_from_cluster_snapshot(self, **kwargs):
    extra = getattr(_restore_params, "value", None) or {}
    owner = extra.get("owner")
    if owner and owner != self.account_id:
        identifier = kwargs.pop("snapshot_identifier")
        shared = shared_snapshot(self.account_id, self.region_name, owner, identifier)
        if not shared:
            raise ClusterSnapshotNotFoundError(identifier)
        snapshot = shared[0]
        # What moto's own restore takes from the snapshot, except its tags:
        # they belong to the owner's account.
        create_kwargs = {
            "node_type": snapshot.node_type,
            "master_username": snapshot.master_username,
            "master_user_password": snapshot.master_user_password,
            "db_name": snapshot.db_name,
            "cluster_type": "multi-node" if snapshot.number_of_nodes > 1 else "single-node",
            "availability_zone": snapshot.availability_zone,
            "port": snapshot.port,
            "cluster_version": snapshot.cluster_version,
            "number_of_nodes": snapshot.number_of_nodes,
            "encrypted": snapshot.encrypted,
            "kms_key_id": snapshot.kms_key_id,
            "tags": [],
            "restored_from_snapshot": True,
            "enhanced_vpc_routing": snapshot.enhanced_vpc_routing,
        }
        create_kwargs.update(kwargs)
        cluster = self.create_cluster(**create_kwargs)
    else:
        cluster = _restore(self, **kwargs)
    if extra.get("kms_key_id"):
        cluster.kms_key_id = extra["kms_key_id"]
        cluster.encrypted = True
    elif extra.get("encrypted") is not None:
        cluster.encrypted = extra["encrypted"]
    return cluster


RedshiftResponse.restore_from_cluster_snapshot = restore_response
RedshiftBackend.restore_from_cluster_snapshot = restore_from_cluster_snapshot


# Gap 5: CreateClusterSnapshot drops ManualSnapshotRetentionPeriod.
_create_cluster_snapshot = RedshiftResponse.create_cluster_snapshot


def create_cluster_snapshot(self):
    result = _create_cluster_snapshot(self)
    retention = self._get_int_param("ManualSnapshotRetentionPeriod")
    if retention is not None:
        result.result["Snapshot"].manual_snapshot_retention_period = retention
    return result


RedshiftResponse.create_cluster_snapshot = create_cluster_snapshot


# Gap 6: CopyClusterSnapshot (an automated or manual snapshot of the caller's
# to a new manual snapshot in the same account) is not implemented.
def copy_cluster_snapshot(self):
    backend = self.redshift_backend
    source = own_snapshot(backend, self._get_param("SourceSnapshotIdentifier"), None)
    target = self._get_param("TargetSnapshotIdentifier")
    if target in backend.snapshots:
        raise ClusterSnapshotAlreadyExistsError(target)
    snapshot = copy.copy(source)
    snapshot.snapshot_identifier = target
    snapshot.snapshot_type = "manual"
    snapshot.tags = []
    snapshot.authorized_accounts = []
    retention = self._get_int_param("ManualSnapshotRetentionPeriod")
    snapshot.manual_snapshot_retention_period = -1 if retention is None else retention
    backend.snapshots[target] = snapshot
    return ActionResult({"Snapshot": snapshot})


RedshiftResponse.copy_cluster_snapshot = copy_cluster_snapshot
