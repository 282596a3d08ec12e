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

One more module, moto_patch_iam.py, names the table or key a DynamoDB or
KMS request acts on, so that IAM enforcement (off unless a suite or the demo
turns it on) evaluates scoped policies as AWS does.

moto_patch_s3.py makes a cross-account CopyObject copy the source's tags
(TaggingDirective=COPY), as AWS does.

moto_patch_dynamodb.py models incremental DynamoDB exports (a change log
per table) and a LatestRestorableDateTime that follows the clock.

moto_patch_cloudwatch.py speaks CloudWatch's RPC v2 CBOR protocol (the one
the AWS SDK for Rust uses) for the metrics escrow-sync publishes.

moto_patch_rbin.py models Recycle Bin retention rules (create, list, get,
lock, unlock, delete), which moto lacks.

moto_patch_s3control.py models S3 Batch Operations Copy jobs (CreateJob,
DescribeJob, the tasks run as CopyObject, AWS's completion report), which
moto lacks.

The patches live beside this file, one module per service (moto_patch_*.py,
written next to it by xtask).
"""

import sys

import moto

PINNED = "5.2.5"
if moto.__version__ != PINNED:
    sys.exit(
        f"moto_server_escrow: written for moto {PINNED}, found {moto.__version__}: "
        "check each patch against the new version before changing the pin"
    )

import moto_patch_ec2  # noqa: E402,F401
import moto_patch_rds  # noqa: E402,F401
import moto_patch_redshift  # noqa: E402,F401
import moto_patch_iam  # noqa: E402,F401
import moto_patch_cloudwatch  # noqa: E402,F401
import moto_patch_s3  # noqa: E402,F401
import moto_patch_dynamodb  # noqa: E402,F401
import moto_patch_rbin  # noqa: E402,F401
import moto_patch_s3control  # noqa: E402,F401

if __name__ == "__main__":
    from moto.server import main

    sys.argv[0] = "moto_server"
    sys.exit(main())
