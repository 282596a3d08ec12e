"""EC2 gaps of moto 5.2.5 (imported by moto_server_escrow.py): another
account's shared snapshots (and, below, images) are visible and copyable
only while the owner's permission attribute names the caller."""

from moto.core.responses import ActionResult  # noqa: E402
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
# with the KmsKeyId it asked for (AWS accepts KmsKeyId only with
# Encrypted=true; moto's backend never sees Encrypted, so a copy is encrypted
# when the source is or a key was asked for).
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
            encrypted=source.encrypted or kms_key_id is not None,
            kms_key_id=kms_key_id,
        )
        self.snapshots[snapshot.id] = snapshot
        return snapshot


EBSBackend.copy_snapshot = copy_snapshot

# Gap 1b: CopySnapshot with Encrypted=true and no KmsKeyId: AWS encrypts the
# copy with the caller's default EBS key; moto's handler drops Encrypted and
# leaves the copy unencrypted.
from moto.ec2.responses.elastic_block_store import ElasticBlockStore  # noqa: E402

_copy_snapshot_response = ElasticBlockStore.copy_snapshot


def copy_snapshot_response(self):
    result = _copy_snapshot_response(self)
    if self._get_bool_param("Encrypted", False) and not self._get_param("KmsKeyId"):
        snapshot = self.ec2_backend.snapshots[result.result["SnapshotId"]]
        if not snapshot.kms_key_id:
            snapshot.encrypted = True
            snapshot.kms_key_id = (
                self.ec2_backend.default_kms_key_id
                or self.ec2_backend._create_default_encryption_key()
            )
    return result


ElasticBlockStore.copy_snapshot = copy_snapshot_response

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

# Gap 2b: DescribeSnapshots with RestorableByUserIds (the owner asking which
# of its snapshots an account may create volumes from: those whose
# createVolumePermission names it or the group "all"); moto's handler drops
# the parameter and answers every snapshot.
_describe_snapshots_response = ElasticBlockStore.describe_snapshots


def describe_snapshots_response(self):
    users = self._get_param("RestorableByUserIds", [])
    if not users:
        return _describe_snapshots_response(self)
    snapshots = self.ec2_backend.describe_snapshots(
        snapshot_ids=self._get_param("SnapshotIds", []),
        filters=self._filters_from_querystring(),
    )
    restorable = [
        s
        for s in snapshots
        if "all" in s.create_volume_permission_groups
        or any(u in s.create_volume_permission_userids for u in users)
    ]
    return ActionResult({"Snapshots": restorable})


ElasticBlockStore.describe_snapshots = describe_snapshots_response


# --- Images (AMIs) -----------------------------------------------------------
# An AMI is shared with launchPermission (ModifyImageAttribute); copying it
# from another account also needs createVolumePermission on every backing
# snapshot (moto models one: Ami.ebs_snapshot). The gaps below only ever
# widen what another account may see or copy of an image while its owner's
# attributes name that account; an account's own images behave as before.

from moto.ec2.exceptions import (  # noqa: E402
    EC2ClientError,
    InvalidAMIIdError,
    InvalidParameterDependency,
    InvalidTaggableResourceType,
)
from moto.ec2.models.amis import Ami, AmiBackend  # noqa: E402
from moto.ec2.responses.amis import AmisResponse  # noqa: E402
from moto.ec2.utils import random_ami_id  # noqa: E402


def shared_image(account_id, region, image_id):
    """Another account's image `image_id` in `region`, if its launch
    permissions name `account_id` or the group "all"."""
    for owner in list(ec2_backends.keys()):
        if owner == account_id:
            continue
        image = ec2_backends[owner][region].amis.get(image_id)
        if image is not None and (
            {"UserId": account_id} in image.launch_permissions or image.is_public
        ):
            return image
    return None


# Gap 3: DescribeImages by ImageIds of an image another account shares with
# the caller (moto looks in the caller's own account only and answers
# InvalidAMIID.NotFound). Patched in the handler rather than the backend, so
# that ModifyImageAttribute, CreateTags or RunInstances (which look images up
# through the backend) stay as they were. Owners and Filters apply to the
# shared images as AWS applies them (Owners=self leaves them out).
_describe_images_response = AmisResponse.describe_images


def describe_images_response(self):
    ami_ids = self._get_param("ImageIds", [])
    backend = self.ec2_backend
    shared = {}
    for ami_id in ami_ids:
        if ami_id not in backend.amis and ami_id not in backend.deleted_amis:
            image = shared_image(backend.account_id, backend.region_name, ami_id)
            if image is not None:
                shared[ami_id] = image
    if not shared:
        return _describe_images_response(self)
    self.error_on_dryrun()
    own = [i for i in ami_ids if i not in shared]
    images = backend.describe_images(ami_ids=own) if own else []
    found = list(shared.values())
    owners = self._get_param("Owners", [])
    if owners:
        found = [i for i in found if i.owner_id in owners or i.owner_alias in owners]
    filters = self._filters_from_querystring()
    if filters:
        from moto.ec2.utils import generic_filter

        found = generic_filter(filters, found)
    return ActionResult({"Images": images + found})


AmisResponse.describe_images = describe_images_response

# Gap 4: CopyImage of an image another account shares (moto looks in the
# caller's own account only), allowed as AWS allows it: only while the launch
# permission names the caller AND the backing snapshot's
# createVolumePermission does too, and never for an image with a billing
# product (a Windows platform, in moto's model) or Marketplace product codes.
# Gap 5: CopyImage's Encrypted/KmsKeyId (the new image's snapshot is
# encrypted with that key, or the account's default EBS key), ClientToken
# (the same token returns the same image instead of a second one) and
# TagSpecifications for "image" and "snapshot": moto's handler parses none
# of them.
_copy_image = AmiBackend.copy_image


def copy_image(
    self,
    source_image_id,
    source_region,
    name=None,
    description=None,
    encrypted=False,
    kms_key_id=None,
    client_token=None,
    tag_specifications=(),
):
    tokens = self.__dict__.setdefault("copy_image_client_tokens", {})
    if client_token and client_token in tokens:
        source, image = tokens[client_token]
        if source != (source_image_id, source_region):
            raise EC2ClientError(
                "IdempotentParameterMismatch",
                f"client token {client_token} was used with different parameters",
            )
        return image
    if kms_key_id and not encrypted:
        raise InvalidParameterDependency("KmsKeyId", "Encrypted")
    tags = {"image": [], "snapshot": []}
    for spec in tag_specifications:
        if spec["ResourceType"] not in tags:
            raise InvalidTaggableResourceType(spec["ResourceType"])
        tags[spec["ResourceType"]] += spec.get("Tags", [])

    source_backend = ec2_backends[self.account_id][source_region]
    source = source_backend.amis.get(source_image_id)
    if source is not None:
        image = _copy_image(self, source_image_id, source_region, name, description)
    else:
        source = shared_image(self.account_id, source_region, source_image_id)
        if source is None:
            raise InvalidAMIIdError(source_image_id)
        if source.product_codes or (source.platform or "").lower() == "windows":
            raise EC2ClientError(
                "InvalidRequest",
                "Images with EC2 BillingProduct codes cannot be copied to another AWS account",
            )
        storage = source.ebs_snapshot
        if (
            self.account_id not in storage.create_volume_permission_userids
            and "all" not in storage.create_volume_permission_groups
        ):
            raise EC2ClientError(
                "InvalidRequest",
                "You do not have permission to access the storage of this ami",
            )
        image = Ami(self, random_ami_id(), source_ami=source, name=name, description=description)
        self.amis[image.id] = image

    if encrypted or source.ebs_snapshot.encrypted:
        image.ebs_snapshot.encrypted = True
        image.ebs_snapshot.kms_key_id = (
            kms_key_id or self.default_kms_key_id or self._create_default_encryption_key()
        )
    for tag in tags["image"]:
        image.add_tag(tag["Key"], tag["Value"])
    for tag in tags["snapshot"]:
        image.ebs_snapshot.add_tag(tag["Key"], tag["Value"])
    if client_token:
        tokens[client_token] = ((source_image_id, source_region), image)
    return image


AmiBackend.copy_image = copy_image


def copy_image_response(self):
    self.error_on_dryrun()
    image = self.ec2_backend.copy_image(
        self._get_param("SourceImageId"),
        self._get_param("SourceRegion"),
        self._get_param("Name"),
        self._get_param("Description"),
        encrypted=self._get_bool_param("Encrypted", False),
        kms_key_id=self._get_param("KmsKeyId"),
        client_token=self._get_param("ClientToken"),
        tag_specifications=self._get_param("TagSpecifications", []),
    )
    return ActionResult({"ImageId": image.id})


AmisResponse.copy_image = copy_image_response


# --- Snapshot locks and AMI deregistration protection ------------------------
# Gap 6: moto 5.2.5 has no EBS Snapshot Lock (LockSnapshot,
# DescribeLockedSnapshots) and no AMI deregistration protection
# (EnableImageDeregistrationProtection, DisableImageDeregistrationProtection,
# DescribeImages' DeregistrationProtection). A small model of AWS's rules:
# a lock per snapshot (mode, duration or expiration date, the compliance
# cooling-off period); a compliance lock past its cooling-off period can only
# be extended; DeleteSnapshot is refused while a lock is in force (error code
# SnapshotLocked: AWS documents none, the production code never relies on it,
# as prune does not try to delete a locked copy); DeregisterImage is refused
# while protection is on, and for 24 hours after it is turned off when it was
# turned on with the cooldown.

import datetime as _dt  # noqa: E402

from moto.ec2.models.amis import AmiBackend as _AmiBackend  # noqa: E402


def _utcnow():
    return _dt.datetime.now(_dt.timezone.utc)


def _parse_time(text):
    return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _locks(backend):
    return backend.__dict__.setdefault("snapshot_locks", {})


def _lock_state(lock, now):
    if lock["expires"] <= now:
        return "expired"
    if lock["mode"] == "compliance" and lock.get("cool_off_until") and now < lock["cool_off_until"]:
        return "compliance-cooloff"
    return lock["mode"]


def _lock_info(backend, snapshot_id, lock, now):
    info = {
        "OwnerId": backend.account_id,
        "SnapshotId": snapshot_id,
        "LockState": _lock_state(lock, now),
        "LockCreatedOn": lock["created"],
        "LockDurationStartTime": lock["start"],
        "LockExpiresOn": lock["expires"],
    }
    if lock.get("duration") is not None:
        info["LockDuration"] = lock["duration"]
    if lock.get("cool_off") is not None:
        info["CoolOffPeriod"] = lock["cool_off"]
        info["CoolOffPeriodExpiresOn"] = lock["cool_off_until"]
    return info


def lock_snapshot_response(self):
    self.error_on_dryrun()
    backend = self.ec2_backend
    snapshot_id = self._get_param("SnapshotId")
    if snapshot_id not in backend.snapshots:
        raise InvalidSnapshotIdError()
    mode = self._get_param("LockMode")
    duration = self._get_int_param("LockDuration")
    expiration = self._get_param("ExpirationDate")
    cool_off = self._get_int_param("CoolOffPeriod")
    if mode not in ("compliance", "governance"):
        raise EC2ClientError("InvalidParameterValue", f"invalid LockMode {mode}")
    if (duration is None) == (expiration is None):
        raise EC2ClientError(
            "InvalidParameterCombination", "specify either LockDuration or ExpirationDate"
        )
    if cool_off is not None and (mode != "compliance" or not 1 <= cool_off <= 72):
        raise EC2ClientError(
            "InvalidParameterValue",
            "CoolOffPeriod is 1 to 72 hours, for compliance mode only",
        )
    now = _utcnow()
    expires = now + _dt.timedelta(days=duration) if duration is not None else _parse_time(expiration)
    locks = _locks(backend)
    current = locks.get(snapshot_id)
    if current is not None and _lock_state(current, now) == "compliance":
        if mode != "compliance" or expires < current["expires"] or cool_off is not None:
            raise EC2ClientError(
                "InvalidParameterCombination",
                "a snapshot locked in compliance mode after its cooling-off period can only "
                "have its lock extended",
            )
    lock = {
        "mode": mode,
        "duration": duration,
        "created": current["created"] if current and _lock_state(current, now) != "expired" else now,
        "start": now,
        "expires": expires,
    }
    if cool_off is not None:
        lock["cool_off"] = cool_off
        lock["cool_off_until"] = now + _dt.timedelta(hours=cool_off)
    locks[snapshot_id] = lock
    info = _lock_info(backend, snapshot_id, lock, now)
    info.pop("OwnerId")
    return ActionResult(info)


def describe_locked_snapshots_response(self):
    self.error_on_dryrun()
    backend = self.ec2_backend
    ids = self._get_param("SnapshotIds", [])
    now = _utcnow()
    locks = _locks(backend)
    found = [
        _lock_info(backend, i, locks[i], now)
        for i in sorted(locks)
        if i in backend.snapshots and (not ids or i in ids)
    ]
    start = int(self._get_param("NextToken") or 0)
    size = self._get_int_param("MaxResults") or 1000
    page = found[start : start + size]
    result = {"Snapshots": page}
    if start + size < len(found):
        result["NextToken"] = str(start + size)
    return ActionResult(result)


ElasticBlockStore.lock_snapshot = lock_snapshot_response
ElasticBlockStore.describe_locked_snapshots = describe_locked_snapshots_response

_delete_snapshot = EBSBackend.delete_snapshot


def delete_snapshot_locked(self, snapshot_id):
    lock = _locks(self).get(snapshot_id)
    if lock is not None and _lock_state(lock, _utcnow()) != "expired":
        raise EC2ClientError(
            "SnapshotLocked",
            f"The snapshot {snapshot_id} is locked ({_lock_state(lock, _utcnow())}) until "
            f"{lock['expires'].isoformat()} and cannot be deleted",
        )
    return _delete_snapshot(self, snapshot_id)


EBSBackend.delete_snapshot = delete_snapshot_locked


def _protection(image, now):
    """DescribeImages' DeregistrationProtection of `image`."""
    state = image.__dict__.get("deregistration_protection_state")
    if state is None:
        return "disabled"
    if state["enabled"]:
        return "enabled-with-cooldown" if state["cooldown"] else "enabled-without-cooldown"
    if state.get("until") and now < state["until"]:
        return "disabled-until " + state["until"].strftime("%Y-%m-%dT%H:%M:%SZ")
    return "disabled"


# Ami objects answer DescribeImages through the serializer, which reads
# attributes by name: `deregistration_protection` is computed on read.
Ami.deregistration_protection = property(lambda self: _protection(self, _utcnow()))


def enable_image_deregistration_protection_response(self):
    self.error_on_dryrun()
    image_id = self._get_param("ImageId")
    image = self.ec2_backend.amis.get(image_id)
    if image is None:
        raise InvalidAMIIdError(image_id)
    image.__dict__["deregistration_protection_state"] = {
        "enabled": True,
        "cooldown": self._get_bool_param("WithCooldown", False),
    }
    return ActionResult({"Return": "true"})


def disable_image_deregistration_protection_response(self):
    self.error_on_dryrun()
    image_id = self._get_param("ImageId")
    image = self.ec2_backend.amis.get(image_id)
    if image is None:
        raise InvalidAMIIdError(image_id)
    state = image.__dict__.get("deregistration_protection_state")
    if state is not None and state["enabled"]:
        until = _utcnow() + _dt.timedelta(hours=24) if state["cooldown"] else None
        image.__dict__["deregistration_protection_state"] = {
            "enabled": False,
            "cooldown": False,
            "until": until,
        }
    return ActionResult({"Return": "false"})


AmisResponse.enable_image_deregistration_protection = (
    enable_image_deregistration_protection_response
)
AmisResponse.disable_image_deregistration_protection = (
    disable_image_deregistration_protection_response
)

_deregister_image = _AmiBackend.deregister_image


def deregister_image_protected(self, ami_id):
    image = self.amis.get(ami_id)
    if image is not None and _protection(image, _utcnow()) != "disabled":
        raise EC2ClientError(
            "InvalidParameterValue",
            f"Cannot deregister {ami_id}: deregistration protection is enabled",
        )
    return _deregister_image(self, ami_id)


_AmiBackend.deregister_image = deregister_image_protected
