"""RDS gaps of moto 5.2.5: CopyDBSnapshot / CopyDBClusterSnapshot by the ARN of a
snapshot another account shared (restore attribute) with the caller.

Imported by moto_server_escrow.py; each patch is commented gap by gap.

What moto 5.2.5 already does right, and is left alone:
- ModifyDBSnapshotAttribute / ModifyDBClusterSnapshotAttribute keep the
  `restore` attribute (ValuesToAdd / ValuesToRemove), and refuse automated
  snapshots, as AWS does.
- DescribeDBSnapshots / DescribeDBClusterSnapshots with SnapshotType=shared
  list exactly the other accounts' snapshots whose `restore` attribute names
  the caller; without it, only the caller's own snapshots.
- A copy keeps the KmsKeyId (validated in the caller's account) and the Tags
  it was asked for; it belongs to the caller.
"""

from moto.rds.models import RDSBackend, rds_backends  # noqa: E402
from moto.rds.utils import split_arn  # noqa: E402

# Gap 1: CopyDBSnapshot / CopyDBClusterSnapshot with the ARN of another
# account's snapshot (the only way AWS lets an account name a snapshot shared
# with it). moto's get_snapshot, which both copies use to find their source
# (and nothing else calls), takes the region and name from the ARN but looks
# them up in the caller's own account, so the copy fails with
# DBSnapshotNotFound / DBClusterSnapshotNotFoundFault even while shared.
# Here an ARN naming another account resolves to that account's snapshot only
# while its `restore` attribute names the caller (or "all", a public
# snapshot); otherwise the same not-found error as before. ARNs of the
# caller's own account and plain identifiers go to moto unchanged.
_get_snapshot = RDSBackend.get_snapshot


def get_snapshot(self, identifier, resource_type, not_found_exception):
    if identifier.startswith("arn:"):
        region, owner, _, name = split_arn(identifier)
        if owner != self.account_id:
            snapshots = rds_backends[owner][region].resource_map[resource_type]
            snapshot = snapshots.get(name)
            restore = snapshot.attributes["restore"] if snapshot is not None else []
            if self.account_id not in restore and "all" not in restore:
                raise not_found_exception(identifier)
            return snapshot
    return _get_snapshot(self, identifier, resource_type, not_found_exception)


RDSBackend.get_snapshot = get_snapshot
