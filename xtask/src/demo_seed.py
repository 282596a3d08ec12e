"""Seed the two demo accounts on the moto emulator.

Written to target/emulator/demo_seed.py and run with the emulator venv's Python by
`cargo xtask demo` (source: xtask/src/demo_seed.py). Usage: demo_seed.py ENDPOINT

The escrow account is reached by assuming its operator role with the base credentials
(testing/testing); the primary account by assuming its reader role *with the escrow
credentials*, as escrow-sync itself does. MOTO_ACCOUNT_ID is never used.
"""

import base64
import concurrent.futures
import datetime
import gzip
import hashlib
import json
import random
import sys
import urllib.parse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

REGION = "us-east-1"
ESCROW_ACCOUNT = "222222222222"
PRIMARY_ACCOUNT = "111111111111"
ESCROW_ROLE = f"arn:aws:iam::{ESCROW_ACCOUNT}:role/escrow-operator"
PRIMARY_ROLE = f"arn:aws:iam::{PRIMARY_ACCOUNT}:role/escrow-reader"
EXTERNAL_ID = "demo-external-id"
ESCROW_KEY_ALIAS = "alias/escrow-demo"
SOURCE_BUCKET = "prod-assets"
DEST_BUCKET = "escrow-prod-assets"
LOGS_BUCKET = "prod-logs"
LOGS_DEST_BUCKET = "escrow-prod-logs"
# Copied in parts: above the demo config's multipart_threshold (8 MiB).
LARGE_KEY = "media/raw-footage.bin"
LARGE_SIZE = 24 * 1024 * 1024
LOG_COUNT = 40
TABLE = "orders"
EXPORTS_BUCKET = "escrow-exports"
MANIFEST_BUCKET = "escrow-manifests"
# Item history of the orders table job: every state escrow held of an item.
HISTORY_BUCKET = "escrow-orders-history"
TRAIL_BUCKET = "escrow-cloudtrail"
# The primary's trail, escrowed by the [[cloudtrail]] job.
TRAIL_NAME = "prod-trail"
TRAIL_LOG_BUCKET = "prod-trail-logs"
TRAIL_PREFIX = "audit"
TRAIL_DEST_BUCKET = "escrow-trail-logs"
TRAIL_HOURS = 3
TRAIL_LOGS_PER_HOUR = 4
ORDER_COUNT = 2000
OBJECT_COUNT = 300
KIB = 1024
MIB = 1024 * KIB

PREFIXES = [
    "",
    "images/",
    "images/2024/06/",
    "logs/app/2024-06-17/",
    "data/exports/",
    "data/exports/nested/deep/",
    "reports/",
]
EXTENSIONS = {
    ".json": "application/json",
    ".png": "image/png",
    ".log": "text/plain; charset=utf-8",
    ".csv": "text/csv",
    ".bin": "application/octet-stream",
}
# Keys that need percent-encoding in a CopySource header.
SPECIAL_KEYS = [
    "reports/Q1 summary (final).pdf",
    "unicode/café-ünïcødé.txt",
    "data/a+b=c&d.txt",
]


def fail(message):
    print(f"demo_seed: error: {message}", file=sys.stderr)
    sys.exit(1)


def session(access_key, secret_key, token=None):
    return boto3.session.Session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=token,
        region_name=REGION,
    )


def assume(endpoint, base, role_arn, expected_account, **extra):
    sts = base.client("sts", endpoint_url=endpoint)
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="escrow-sync-demo", **extra)[
        "Credentials"
    ]
    assumed = session(creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    account = assumed.client("sts", endpoint_url=endpoint).get_caller_identity()["Account"]
    if account != expected_account:
        fail(
            f"assuming {role_arn} gave account {account}, expected {expected_account} "
            "(is MOTO_ACCOUNT_ID set in the emulator's environment?)"
        )
    return assumed


def s3_client(endpoint, sess):
    return sess.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


def create_bucket(s3, bucket, locked=False):
    """Creates `bucket` (with Object Lock, and so versioning, when `locked`)."""
    try:
        if locked:
            s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        else:
            s3.create_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
            raise


def object_specs():
    """Deterministic keys, sizes and headers: the same every run."""
    rng = random.Random(20140617)
    specs = []
    plain = OBJECT_COUNT - len(SPECIAL_KEYS)
    for i in range(plain):
        ext = rng.choice(list(EXTENSIONS))
        key = f"{rng.choice(PREFIXES)}object-{i:04d}{ext}"
        roll = rng.random()
        if i == 0:
            size = 0
        elif i == 1:
            size = 2 * MIB
        elif roll < 0.05:
            size = 0
        elif roll < 0.60:
            size = rng.randint(1, 16 * KIB)
        elif roll < 0.90:
            size = rng.randint(16 * KIB, 256 * KIB)
        else:
            size = rng.randint(256 * KIB, 2 * MIB)
        specs.append((i, key, size, EXTENSIONS[ext]))
    for j, key in enumerate(SPECIAL_KEYS):
        specs.append((plain + j, key, 1000 + j, "application/octet-stream"))
    return specs


def put(s3, spec):
    i, key, size, content_type = spec
    args = {
        "Bucket": SOURCE_BUCKET,
        "Key": key,
        "Body": random.Random(i).randbytes(size),
        "ContentType": content_type,
    }
    if i % 3 == 0:
        args["Metadata"] = {"owner": f"team-{i % 4}", "origin": "escrow-sync-demo"}
    if i % 4 == 0:
        args["Tagging"] = urllib.parse.urlencode(
            {"classification": "internal", "batch": str(i % 7)}
        )
    if i % 10 == 0:
        args["CacheControl"] = "max-age=3600"
    s3.put_object(**args)
    return size, "Metadata" in args, "Tagging" in args


def seed_orders(endpoint, primary):
    """A table with a GSI, an LSI, TTL and tags, items of every attribute type."""
    ddb = primary.client("dynamodb", endpoint_url=endpoint)
    ddb.create_table(
        TableName=TABLE,
        KeySchema=[
            {"AttributeName": "customer", "KeyType": "HASH"},
            {"AttributeName": "order", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "customer", "AttributeType": "S"},
            {"AttributeName": "order", "AttributeType": "N"},
            {"AttributeName": "status", "AttributeType": "S"},
            {"AttributeName": "total", "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-status",
                "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        LocalSecondaryIndexes=[
            {
                "IndexName": "by-total",
                "KeySchema": [
                    {"AttributeName": "customer", "KeyType": "HASH"},
                    {"AttributeName": "total", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
        Tags=[{"Key": "team", "Value": "payments"}],
    )
    ddb.update_time_to_live(
        TableName=TABLE,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
    )
    rng = random.Random(2014)
    for start in range(0, ORDER_COUNT, 25):
        requests = []
        for i in range(start, min(start + 25, ORDER_COUNT)):
            item = {
                "customer": {"S": f"customer-{i % 150:03d}"},
                "order": {"N": str(i)},
                "status": {"S": rng.choice(["new", "paid", "shipped", "refunded"])},
                "total": {"N": f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}"},
                "expires": {"N": "1900000000"},
                "lines": {"L": [{"M": {"sku": {"S": f"sku-{j}"}, "qty": {"N": str(j + 1)}}}
                                for j in range(i % 4)]},
                "tags": {"SS": sorted({rng.choice(["gift", "express", "bulk"]), "web"})},
                "receipt": {"B": random.Random(i).randbytes(16)},
                "paid": {"BOOL": i % 3 != 0},
                "coupon": {"NULL": True},
            }
            requests.append({"PutRequest": {"Item": item}})
        while requests:
            out = ddb.batch_write_item(RequestItems={TABLE: requests})
            requests = out.get("UnprocessedItems", {}).get(TABLE, [])


def backup_tag(value="true"):
    return [{"Key": "backup", "Value": value}]


def seed_snapshot(endpoint, primary):
    """An 8 GiB volume with two snapshots tagged backup=true (both escrowed;
    the prune dry run would let the older copy go) and one tagged
    backup=false (left alone)."""
    ec2 = primary.client("ec2", endpoint_url=endpoint)
    volume = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8)["VolumeId"]
    ids = []
    for backup in ("true", "true", "false"):
        snapshot = ec2.create_snapshot(
            VolumeId=volume,
            Description=f"orders-db data volume (backup={backup})",
            TagSpecifications=[
                {"ResourceType": "snapshot", "Tags": [{"Key": "backup", "Value": backup}]}
            ],
        )
        ids.append(snapshot["SnapshotId"])
    return ids


def seed_image(endpoint, primary):
    """An instance from one of the emulator's stock AMIs and an AMI of it
    tagged backup=true (escrowed with its backing snapshot)."""
    ec2 = primary.client("ec2", endpoint_url=endpoint)
    stock = next(
        image["ImageId"]
        for image in ec2.describe_images(Owners=["amazon"])["Images"]
        # A Windows AMI carries a billing product: not copyable across accounts.
        if image.get("Platform") != "windows" and not image.get("ProductCodes")
    )
    instance = ec2.run_instances(ImageId=stock, MinCount=1, MaxCount=1)["Instances"][0]
    image = ec2.create_image(
        InstanceId=instance["InstanceId"],
        Name="orders-api-2026-11-28",
        TagSpecifications=[{"ResourceType": "image", "Tags": backup_tag()}],
    )
    return image["ImageId"]


def seed_databases(endpoint, primary):
    """An RDS instance with a manual snapshot and an Aurora cluster with a
    cluster snapshot, both tagged backup=true; a Redshift cluster with a
    manual snapshot tagged backup=true."""
    # A customer-managed key of the primary (its policy would grant the escrow
    # account kms:Decrypt and kms:CreateGrant): encrypted snapshots under it
    # can be shared; under the AWS-managed aws/rds key they could not.
    kms = primary.client("kms", endpoint_url=endpoint)
    key = kms.create_key(Description="orders databases")["KeyMetadata"]["Arn"]
    rds = primary.client("rds", endpoint_url=endpoint)
    rds.create_db_instance(
        StorageEncrypted=True,
        KmsKeyId=key,
        DBInstanceIdentifier="orders-db",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="orders",
        MasterUserPassword="demo-password-1",
    )
    rds.create_db_snapshot(
        DBInstanceIdentifier="orders-db",
        DBSnapshotIdentifier="orders-db-2026-11-28",
        Tags=backup_tag(),
    )
    rds.create_db_cluster(
        StorageEncrypted=True,
        KmsKeyId=key,
        DBClusterIdentifier="ledger",
        Engine="aurora-postgresql",
        MasterUsername="ledger",
        MasterUserPassword="demo-password-1",
    )
    rds.create_db_cluster_snapshot(
        DBClusterIdentifier="ledger",
        DBClusterSnapshotIdentifier="ledger-2026-11-28",
        Tags=backup_tag(),
    )
    redshift = primary.client("redshift", endpoint_url=endpoint)
    redshift.create_cluster(
        Encrypted=True,
        KmsKeyId=key,
        ClusterIdentifier="analytics",
        NodeType="ra3.xlplus",
        MasterUsername="analytics",
        MasterUserPassword="Demo-password-1",
        ClusterType="single-node",
    )
    redshift.create_cluster_snapshot(
        ClusterIdentifier="analytics",
        SnapshotIdentifier="analytics-2026-11-28",
        Tags=backup_tag(),
    )
    return (
        "rds snapshot orders-db-2026-11-28, aurora cluster snapshot ledger-2026-11-28, "
        "redshift snapshot analytics-2026-11-28 (all backup=true)"
    )


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


TEAM_IP = "198.51.100.10"
INTRUDER_IP = "203.0.113.66"
TEAM = {
    "type": "AssumedRole",
    "arn": f"arn:aws:sts::{PRIMARY_ACCOUNT}:assumed-role/deploy/ci",
    "accountId": PRIMARY_ACCOUNT,
}


def intrusion(at):
    """The scripted intrusion in the trail's last hour (`trail events
    --destructive` in the demo lists it): the admin user's console login from
    a new address, an access key for a new user, CloudTrail's logging
    stopped, then the incident's deletions, a few minutes apart from `at`."""
    admin = {
        "type": "IAMUser",
        "arn": f"arn:aws:iam::{PRIMARY_ACCOUNT}:user/admin",
        "accountId": PRIMARY_ACCOUNT,
        "userName": "admin",
    }
    steps = [
        ("signin.amazonaws.com", "ConsoleLogin", None),
        ("iam.amazonaws.com", "CreateAccessKey", {"userName": "backdoor"}),
        ("cloudtrail.amazonaws.com", "StopLogging", {"name": TRAIL_NAME}),
        ("s3.amazonaws.com", "DeleteObject", {"bucketName": SOURCE_BUCKET, "key": "reports/q1.csv"}),
        ("dynamodb.amazonaws.com", "DeleteItem", {"tableName": TABLE}),
        ("ec2.amazonaws.com", "DeleteSnapshot", {"snapshotId": "snap-0a1b2c3d4e5f67890"}),
    ]
    return [
        {
            "eventVersion": "1.08",
            "userIdentity": admin,
            "eventTime": iso(at + datetime.timedelta(minutes=n)),
            "eventSource": source,
            "eventName": name,
            "awsRegion": REGION,
            "sourceIPAddress": INTRUDER_IP,
            "userAgent": "aws-cli/2.15.0",
            "requestParameters": params,
            "eventID": f"intrusion-{n + 1}",
            "readOnly": False,
            "recipientAccountId": PRIMARY_ACCOUNT,
        }
        for n, (source, name, params) in enumerate(steps)
    ]


def seed_trail(endpoint, primary, keys_path):
    """A trail in the primary with log file validation, and the last hours
    of its delivery. The emulator writes no CloudTrail files, so they are
    written here as CloudTrail documents them: gzip log files, and hourly
    digest files listing each log file's SHA-256, chained to the previous
    digest, signed SHA256withRSA over "<end>\n<bucket>/<key>\n<sha256 of the
    digest>\n<previous signature or null>" with a key of this script, whose
    public half goes to `keys_path` in the shape of `aws cloudtrail
    list-public-keys --output json` (the emulator has no ListPublicKeys)."""
    s3 = s3_client(endpoint, primary)
    create_bucket(s3, TRAIL_LOG_BUCKET)
    trail = primary.client("cloudtrail", endpoint_url=endpoint, region_name=REGION)
    trail.create_trail(
        Name=TRAIL_NAME,
        S3BucketName=TRAIL_LOG_BUCKET,
        S3KeyPrefix=TRAIL_PREFIX,
        EnableLogFileValidation=True,
    )
    trail.start_logging(Name=TRAIL_NAME)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    fingerprint = hashlib.md5(der).hexdigest()
    with open(keys_path, "w", encoding="utf-8") as f:
        json.dump(
            {
                "PublicKeyList": [
                    {
                        "Value": base64.b64encode(der).decode(),
                        "ValidityStartTime": "2015-01-01T00:00:00+00:00",
                        "ValidityEndTime": "2100-01-01T00:00:00+00:00",
                        "Fingerprint": fingerprint,
                    }
                ]
            },
            f,
            indent=2,
        )
    hour = datetime.timedelta(hours=1)
    now = datetime.datetime.now(datetime.timezone.utc)
    start = now.replace(minute=0, second=0, microsecond=0) - TRAIL_HOURS * hour
    root = f"{TRAIL_PREFIX}/AWSLogs/{PRIMARY_ACCOUNT}"
    previous = None  # (key, sha256, signature) of the previous digest
    names = ["PutObject", "GetObject", "ListBuckets", "GetBucketAcl"]
    for h in range(TRAIL_HOURS):
        begin, end = start + h * hour, start + (h + 1) * hour
        entries = []
        for i in range(TRAIL_LOGS_PER_HOUR):
            at = begin + (i + 1) * hour / (TRAIL_LOGS_PER_HOUR + 1)
            event = iso(at - datetime.timedelta(seconds=30))
            records = [
                {
                    "eventVersion": "1.08",
                    "eventTime": event,
                    "eventSource": "s3.amazonaws.com",
                    "eventName": names[i % len(names)],
                    "awsRegion": REGION,
                    "sourceIPAddress": TEAM_IP,
                    "userIdentity": TEAM,
                    "eventID": f"team-{h}-{i}",
                    "recipientAccountId": PRIMARY_ACCOUNT,
                }
            ]
            if (h, i) == (TRAIL_HOURS - 1, 0):
                records = intrusion(at - datetime.timedelta(minutes=10)) + records
            times = sorted(r["eventTime"] for r in records)
            body = json.dumps({"Records": records}).encode()
            log_key = (
                f"{root}/CloudTrail/{REGION}/{at:%Y/%m/%d}/"
                f"{PRIMARY_ACCOUNT}_CloudTrail_{REGION}_{at:%Y%m%dT%H%M}Z_h{h}i{i}.json.gz"
            )
            s3.put_object(
                Bucket=TRAIL_LOG_BUCKET,
                Key=log_key,
                Body=gzip.compress(body),
                ContentType="application/json",
            )
            entries.append(
                {
                    "s3Bucket": TRAIL_LOG_BUCKET,
                    "s3Object": log_key,
                    "hashValue": hashlib.sha256(body).hexdigest(),
                    "hashAlgorithm": "SHA-256",
                    "newestEventTime": times[-1],
                    "oldestEventTime": times[0],
                }
            )
        digest_key = (
            f"{root}/CloudTrail-Digest/{REGION}/{end:%Y/%m/%d}/{PRIMARY_ACCOUNT}_CloudTrail-Digest_"
            f"{REGION}_{TRAIL_NAME}_{REGION}_{end:%Y%m%dT%H%M%S}Z.json.gz"
        )
        content = json.dumps(
            {
                "awsAccountId": PRIMARY_ACCOUNT,
                "digestStartTime": iso(begin),
                "digestEndTime": iso(end),
                "digestS3Bucket": TRAIL_LOG_BUCKET,
                "digestS3Object": digest_key,
                "digestPublicKeyFingerprint": fingerprint,
                "digestSignatureAlgorithm": "SHA256withRSA",
                "newestEventTime": entries[-1]["newestEventTime"],
                "oldestEventTime": entries[0]["oldestEventTime"],
                "previousDigestS3Bucket": TRAIL_LOG_BUCKET if previous else None,
                "previousDigestS3Object": previous[0] if previous else None,
                "previousDigestHashValue": previous[1] if previous else None,
                "previousDigestHashAlgorithm": "SHA-256" if previous else None,
                "previousDigestSignature": previous[2] if previous else None,
                "logFiles": entries,
            }
        ).encode()
        sha = hashlib.sha256(content).hexdigest()
        signed = f"{iso(end)}\n{TRAIL_LOG_BUCKET}/{digest_key}\n{sha}\n"
        signed += previous[2] if previous else "null"
        signature = key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256()).hex()
        s3.put_object(
            Bucket=TRAIL_LOG_BUCKET,
            Key=digest_key,
            Body=gzip.compress(content),
            ContentType="application/json",
            Metadata={"signature": signature, "signature-algorithm": "SHA256withRSA"},
        )
        previous = (digest_key, sha, signature)
    return (
        f"trail {TRAIL_NAME} -> s3://{TRAIL_LOG_BUCKET}/{root}/: {TRAIL_HOURS} hours, "
        f"{TRAIL_HOURS * TRAIL_LOGS_PER_HOUR} log files and {TRAIL_HOURS} signed digests"
    )


def main():
    if len(sys.argv) != 3:
        fail("usage: demo_seed.py ENDPOINT PUBLIC_KEYS_FILE")
    endpoint = sys.argv[1]
    base = session("testing", "testing")
    escrow = assume(endpoint, base, ESCROW_ROLE, ESCROW_ACCOUNT)
    primary = assume(endpoint, escrow, PRIMARY_ROLE, PRIMARY_ACCOUNT, ExternalId=EXTERNAL_ID)

    source = s3_client(endpoint, primary)
    create_bucket(source, SOURCE_BUCKET)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda spec: put(source, spec), object_specs()))
    source.put_object(
        Bucket=SOURCE_BUCKET,
        Key=LARGE_KEY,
        Body=random.Random(LARGE_SIZE).randbytes(LARGE_SIZE),
        ContentType="video/mp4",
        Metadata={"camera": "north-gate"},
        Tagging="classification=internal",
    )
    results.append((LARGE_SIZE, True, True))
    total = sum(size for size, _, _ in results)

    # A second bucket, escrowed by a streamed job (bytes through escrow-sync).
    create_bucket(source, LOGS_BUCKET)
    for i in range(LOG_COUNT):
        source.put_object(
            Bucket=LOGS_BUCKET,
            Key=f"app/2024-06-17/part-{i:03d}.log",
            Body=random.Random(1000 + i).randbytes(1 + i * 997),
            ContentType="text/plain",
        )
    source.put_object(
        Bucket=LOGS_BUCKET,
        Key="app/2024-06-17/full-dump.log",
        Body=random.Random(7).randbytes(12 * MIB),
        ContentType="text/plain",
    )
    seed_orders(endpoint, primary)
    snapshots = seed_snapshot(endpoint, primary)
    image = seed_image(endpoint, primary)
    databases = seed_databases(endpoint, primary)
    trail_files = seed_trail(endpoint, primary, sys.argv[2])
    with_metadata = sum(1 for _, meta, _ in results if meta)
    with_tags = sum(1 for _, _, tags in results if tags)

    # The escrow's own key: every copy (objects, tables, snapshots) is
    # encrypted with it.
    kms = escrow.client("kms", endpoint_url=endpoint)
    key = kms.create_key(Description="escrow-sync demo: escrow-owned key")["KeyMetadata"]
    kms.create_alias(AliasName=ESCROW_KEY_ALIAS, TargetKeyId=key["KeyId"])

    dest = s3_client(endpoint, escrow)
    create_bucket(dest, DEST_BUCKET, locked=True)
    dest.put_bucket_versioning(
        Bucket=DEST_BUCKET, VersioningConfiguration={"Status": "Enabled"}
    )

    create_bucket(dest, LOGS_DEST_BUCKET, locked=True)
    dest.put_bucket_versioning(
        Bucket=LOGS_DEST_BUCKET, VersioningConfiguration={"Status": "Enabled"}
    )

    create_bucket(dest, EXPORTS_BUCKET, locked=True)
    dest.put_bucket_versioning(
        Bucket=EXPORTS_BUCKET, VersioningConfiguration={"Status": "Enabled"}
    )

    create_bucket(dest, TRAIL_DEST_BUCKET, locked=True)
    dest.put_bucket_versioning(
        Bucket=TRAIL_DEST_BUCKET, VersioningConfiguration={"Status": "Enabled"}
    )

    create_bucket(dest, HISTORY_BUCKET, locked=True)
    dest.put_bucket_versioning(
        Bucket=HISTORY_BUCKET, VersioningConfiguration={"Status": "Enabled"}
    )

    # Every run's manifest goes here.
    create_bucket(dest, MANIFEST_BUCKET, locked=True)
    dest.put_bucket_versioning(
        Bucket=MANIFEST_BUCKET, VersioningConfiguration={"Status": "Enabled"}
    )

    # What `escrow-sync audit` expects of an escrow: Object Lock, default
    # encryption with the escrow key and public access blocked on every
    # escrow bucket, and a CloudTrail trail logging the escrow account.
    create_bucket(dest, TRAIL_BUCKET, locked=True)
    dest.put_bucket_versioning(Bucket=TRAIL_BUCKET, VersioningConfiguration={"Status": "Enabled"})
    escrow_buckets = (
        DEST_BUCKET,
        LOGS_DEST_BUCKET,
        EXPORTS_BUCKET,
        MANIFEST_BUCKET,
        TRAIL_BUCKET,
        TRAIL_DEST_BUCKET,
        HISTORY_BUCKET,
    )
    for bucket in escrow_buckets:
        # Whatever lands without a key of its own is under the escrow key.
        dest.put_bucket_encryption(
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": key["Arn"],
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        dest.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
    trail = escrow.client("cloudtrail", endpoint_url=endpoint)
    trail.create_trail(Name="escrow-audit-trail", S3BucketName=TRAIL_BUCKET, IsMultiRegionTrail=True)
    trail.start_logging(Name="escrow-audit-trail")

    print(
        f"primary {PRIMARY_ACCOUNT}: s3://{LOGS_BUCKET}: {LOG_COUNT + 1} objects (one of 12 MiB)"
    )
    print(
        f"primary {PRIMARY_ACCOUNT}: dynamodb table {TABLE}: {ORDER_COUNT} items "
        "(a GSI, an LSI, TTL on 'expires')"
    )
    print(
        f"primary {PRIMARY_ACCOUNT}: ebs snapshots {snapshots[0]} and {snapshots[1]} "
        f"(backup=true, one volume) and {snapshots[2]} (backup=false)"
    )
    print(f"primary {PRIMARY_ACCOUNT}: ami {image} (backup=true) with its snapshot")
    print(f"primary {PRIMARY_ACCOUNT}: {databases}")
    print(f"primary {PRIMARY_ACCOUNT}: {trail_files}")
    print(
        f"primary {PRIMARY_ACCOUNT}: s3://{SOURCE_BUCKET}: {len(results)} objects, "
        f"{total / MIB:.1f} MiB ({with_metadata} with user metadata, {with_tags} with tags)"
    )
    print(f"escrow  {ESCROW_ACCOUNT}: kms key {key['KeyId']} ({ESCROW_KEY_ALIAS})")
    print(
        f"escrow  {ESCROW_ACCOUNT}: s3://{DEST_BUCKET}, s3://{LOGS_DEST_BUCKET}, "
        f"s3://{EXPORTS_BUCKET}, s3://{MANIFEST_BUCKET}, s3://{TRAIL_DEST_BUCKET}, "
        f"s3://{HISTORY_BUCKET}: "
        "versioning enabled, empty"
    )


if __name__ == "__main__":
    main()
