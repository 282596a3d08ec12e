"""The demo's incident: someone holding the primary's admin encrypts and deletes its data.

Written to target/emulator/demo_incident.py and run with the emulator venv's Python by
`cargo xtask demo` (source: xtask/src/demo_incident.py).

  demo_incident.py attack ENDPOINT STATE_FILE TIME_FILE
      Saves a SHA-256 of every object of s3://prod-assets and of every item of the orders
      table (as the primary holds them before the incident) in STATE_FILE, writes a time
      before the incident (RFC 3339) to TIME_FILE, then plays the attacker: every object
      overwritten with random bytes and a third deleted; every order rewritten ("ENCRYPTED")
      and a fifth deleted; the backed-up EBS volume's snapshots deleted.

  demo_incident.py check ENDPOINT STATE_FILE BUCKET TABLE
      Compares what `escrow-sync restore --at <before the incident>` put in the recovery
      account (333333333333: BUCKET, TABLE) with STATE_FILE, object by object and item by
      item; prints what came back and exits 1 on any difference.
"""

import datetime
import hashlib
import json
import random
import sys
import time

from demo_seed import (
    EXTERNAL_ID,
    PRIMARY_ACCOUNT,
    PRIMARY_ROLE,
    SOURCE_BUCKET,
    TABLE,
    ESCROW_ACCOUNT,
    ESCROW_ROLE,
    assume,
    fail,
    s3_client,
    session,
)

RECOVERY_ACCOUNT = "333333333333"
RECOVERY_ROLE = f"arn:aws:iam::{RECOVERY_ACCOUNT}:role/recovery"


def objects(s3, bucket):
    """Key -> SHA-256 of every object in `bucket`."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            out[o["Key"]] = hashlib.sha256(body).hexdigest()
    return out


def item_key(item):
    return f'{item["customer"]["S"]}/{item["order"]["N"]}'


def canonical(item):
    """An item's content, independent of attribute and set order."""

    def norm(v):
        (t, x), = v.items()
        if t in ("SS", "NS"):
            return {t: sorted(x)}
        if t == "BS":
            return {t: sorted(b.hex() for b in x)}
        if t == "B":
            return {t: x.hex()}
        if t == "L":
            return {t: [norm(e) for e in x]}
        if t == "M":
            return {t: {k: norm(e) for k, e in sorted(x.items())}}
        return {t: x}

    return json.dumps({k: norm(v) for k, v in sorted(item.items())}, sort_keys=True)


def items(ddb, table):
    """Key -> SHA-256 of every item of `table`."""
    out = {}
    for page in ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for it in page.get("Items", []):
            out[item_key(it)] = hashlib.sha256(canonical(it).encode()).hexdigest()
    return out


def attack(endpoint, state_file, time_file):
    base = session("testing", "testing")
    escrow = assume(endpoint, base, ESCROW_ROLE, ESCROW_ACCOUNT)
    primary = assume(endpoint, escrow, PRIMARY_ROLE, PRIMARY_ACCOUNT, ExternalId=EXTERNAL_ID)
    s3 = s3_client(endpoint, primary)
    ddb = primary.client("dynamodb", endpoint_url=endpoint)
    state = {"objects": objects(s3, SOURCE_BUCKET), "items": items(ddb, TABLE)}
    with open(state_file, "w") as f:
        json.dump(state, f)
    # A time after the last run and before the first change, a second clear of both.
    time.sleep(1.1)
    before = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with open(time_file, "w") as f:
        f.write(before)
    time.sleep(1.1)

    rng = random.Random(20140617)
    keys = sorted(state["objects"])
    for key in keys:
        s3.put_object(Bucket=SOURCE_BUCKET, Key=key, Body=rng.randbytes(256))
    deleted = keys[::3]
    for key in deleted:
        s3.delete_object(Bucket=SOURCE_BUCKET, Key=key)

    rewritten = 0
    gone = 0
    for page in ddb.get_paginator("scan").paginate(TableName=TABLE):
        for it in page.get("Items", []):
            order = int(it["order"]["N"])
            key = {"customer": it["customer"], "order": it["order"]}
            if order % 5 == 0:
                ddb.delete_item(TableName=TABLE, Key=key)
                gone += 1
                continue
            it["status"] = {"S": "ENCRYPTED"}
            it["ransom"] = {"S": "pay 10 BTC to get your data back"}
            ddb.put_item(TableName=TABLE, Item=it)
            rewritten += 1
    volume, originals = delete_snapshots(endpoint, primary)
    print(f"attacker in {PRIMARY_ACCOUNT}: ebs volume {volume}: its {originals} backup snapshots deleted")
    print(
        f"attacker in {PRIMARY_ACCOUNT}: s3://{SOURCE_BUCKET}: {len(keys)} objects overwritten "
        f"with random bytes, {len(deleted)} of them then deleted"
    )
    print(
        f"attacker in {PRIMARY_ACCOUNT}: dynamodb table {TABLE}: {rewritten} items rewritten "
        f"('ENCRYPTED'), {gone} deleted"
    )


def delete_snapshots(endpoint, primary):
    """Deletes the backed-up volume's snapshots tagged backup=true. Returns
    (volume, deleted)."""
    ec2 = primary.client("ec2", endpoint_url=endpoint)
    tagged = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:backup", "Values": ["true"]}]
    )["Snapshots"]
    if not tagged:
        fail("no snapshot tagged backup=true in the primary: did the seed run?")
    volume = tagged[0]["VolumeId"]
    originals = [s["SnapshotId"] for s in tagged if s["VolumeId"] == volume]
    for snapshot in originals:
        ec2.delete_snapshot(SnapshotId=snapshot)
    return volume, len(originals)


def check(endpoint, state_file, bucket, table):
    with open(state_file) as f:
        state = json.load(f)
    base = session("testing", "testing")
    escrow = assume(endpoint, base, ESCROW_ROLE, ESCROW_ACCOUNT)
    recovery = assume(endpoint, escrow, RECOVERY_ROLE, RECOVERY_ACCOUNT)
    got_objects = objects(s3_client(endpoint, recovery), bucket)
    got_items = items(recovery.client("dynamodb", endpoint_url=endpoint), table)
    problems = []
    for name, want, got in (("object", state["objects"], got_objects),
                            ("item", state["items"], got_items)):
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        differ = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        for what, keys in (("missing", missing), ("not in the primary then", extra),
                           ("different", differ)):
            if keys:
                problems.append(f"{len(keys)} {name}(s) {what}, e.g. {keys[0]}")
    if problems:
        fail("the restore does not match the primary before the incident: " + "; ".join(problems))
    print(
        f"recovery {RECOVERY_ACCOUNT}: s3://{bucket}: {len(got_objects)} objects, identical byte "
        f"for byte to s3://{SOURCE_BUCKET} before the incident"
    )
    print(
        f"recovery {RECOVERY_ACCOUNT}: dynamodb table {table}: {len(got_items)} items, identical "
        f"item for item to {TABLE} before the incident"
    )


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "attack":
        attack(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) == 6 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        fail(
            "usage: demo_incident.py attack ENDPOINT STATE TIME | "
            "check ENDPOINT STATE BUCKET TABLE"
        )


if __name__ == "__main__":
    main()
