"""moto_server with the cross-account sharing that moto 5.2.5 lacks.

Written to target/emulator/moto_server_escrow.py and run with the emulator
venv's Python by `cargo xtask emulator start` (source:
xtask/src/moto_server_escrow.py); arguments are moto_server's.

moto keeps each account's resources apart and never lets one account see or
copy what another account shared. escrow-sync's snapshot escrow is exactly
that dance, so each patch below closes one gap, faithfully: a resource
becomes visible and copyable to an account only while the owner's share
attribute names that account (or "all"), and unsharing hides it again.
Nothing else changes. Pinned to the moto version it was written against.
"""

import sys

import moto

PINNED = "5.2.5"
if moto.__version__ != PINNED:
    sys.exit(
        f"moto_server_escrow: written for moto {PINNED}, found {moto.__version__}: "
        "check each patch against the new version before changing the pin"
    )

from moto.ec2.exceptions import InvalidSnapshotIdError  # noqa: E402
from moto.ec2.models import ec2_backends  # noqa: E402
from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot  # noqa: E402
from moto.ec2.utils import random_snapshot_id  # noqa: E402


def shared_snapshot(account_id, region, snapshot_id):
    """Another account's snapshot `snapshot_id` in `region`, if its
    createVolumePermission names `account_id` or the group "all"."""
    for owner in list(ec2_backends.keys()):
        if owner == account_id:
            continue
        snapshot = ec2_backends[owner][region].snapshots.get(snapshot_id)
        if snapshot is not None and (
            account_id in snapshot.create_volume_permission_userids
            or "all" in snapshot.create_volume_permission_groups
        ):
            return snapshot
    return None


# Gap 1: CopySnapshot of a snapshot another account shared (moto looks in
# the caller's own account only). The copy belongs to the caller, encrypted
# with the KmsKeyId it asked for.
_copy_snapshot = EBSBackend.copy_snapshot


def copy_snapshot(self, source_snapshot_id, source_region, description, kms_key_id):
    try:
        return _copy_snapshot(self, source_snapshot_id, source_region, description, kms_key_id)
    except InvalidSnapshotIdError:
        source = shared_snapshot(self.account_id, source_region, source_snapshot_id)
        if source is None:
            raise
        snapshot = Snapshot(
            self,
            random_snapshot_id(),
            volume=source.volume,
            description=description,
            encrypted=source.encrypted,
            kms_key_id=kms_key_id,
        )
        self.snapshots[snapshot.id] = snapshot
        return snapshot


EBSBackend.copy_snapshot = copy_snapshot

# Gap 2: DescribeSnapshots by id of a snapshot another account shared with
# the caller (moto answers InvalidSnapshot.NotFound).
_describe_snapshots = EBSBackend.describe_snapshots


def describe_snapshots(self, snapshot_ids=None, filters=None):
    if not snapshot_ids:
        return _describe_snapshots(self, snapshot_ids, filters)
    own = [i for i in snapshot_ids if i in self.snapshots]
    shared = []
    for snapshot_id in snapshot_ids:
        if snapshot_id in self.snapshots:
            continue
        snapshot = shared_snapshot(self.account_id, self.region_name, snapshot_id)
        if snapshot is None:
            raise InvalidSnapshotIdError()
        shared.append(snapshot)
    matches = _describe_snapshots(self, own, filters) if own else []
    if filters:
        from moto.ec2.utils import generic_filter

        shared = generic_filter(filters, shared)
    return matches + shared


EBSBackend.describe_snapshots = describe_snapshots

if __name__ == "__main__":
    from moto.server import main

    sys.argv[0] = "moto_server"
    sys.exit(main())
