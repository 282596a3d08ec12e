"""Create the demo's IAM identities from `escrow-sync policy`, for the closing audit.

Written to target/emulator/demo_iam.py and run with the emulator venv's Python by
`cargo xtask demo` (source: xtask/src/demo_iam.py), while IAM enforcement is still off.
Usage: demo_iam.py ENDPOINT POLICIES_JSON KEYS_OUT

The emulator keeps accounts apart only when IAM is enforced: without it any identity may
read any account's buckets, so the audit's probe "can the primary's credentials act in
escrow?" would always say yes. The demo therefore sets up the two accounts exactly as
docs/permissions.md "Setting up the two accounts" does, from the generated documents:

- escrow 222222222222: the user `escrow-runner` (the identity escrow-sync starts from; it
  may only assume the operator role) and the role `escrow-operator` trusting it, with the
  generated `operator_policy` and `audit_policy`;
- primary 111111111111: the role `escrow-reader` with the generated trust policy (the
  external id in place of its placeholder) and `permission_policy`.

Then `cargo xtask demo` turns enforcement on (`POST /moto-api/reset-auth`), runs the
audit with the runner's keys (written to KEYS_OUT: the key id, then the secret) and turns
enforcement off again.
"""

import json
import sys

import boto3

REGION = "us-east-1"
ESCROW_ACCOUNT = "222222222222"
PRIMARY_ACCOUNT = "111111111111"
EXTERNAL_ID = "demo-external-id"
PLACEHOLDER = "<[primary] external_id>"
RUNNER = "escrow-runner"


def fail(message):
    print(f"demo_iam: error: {message}", file=sys.stderr)
    sys.exit(1)


def admin(endpoint, account):
    """An administrator of `account` (enforcement is off: moto does not check the role)."""
    base = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    creds = base.client("sts", endpoint_url=endpoint).assume_role(
        RoleArn=f"arn:aws:iam::{account}:role/demo-admin", RoleSessionName="escrow-sync-demo"
    )["Credentials"]
    return boto3.session.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    ).client("iam", endpoint_url=endpoint)


def role(iam, name, trust, policies):
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
    for policy_name, document in policies:
        iam.put_role_policy(
            RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document)
        )


def main():
    if len(sys.argv) != 4:
        fail("usage: demo_iam.py ENDPOINT POLICIES_JSON KEYS_OUT")
    endpoint, policies_path, keys_out = sys.argv[1:]
    with open(policies_path, encoding="utf-8") as f:
        doc = json.load(f)
    reader = doc["primary"]["reader_role"]
    escrow = doc["escrow"]
    operator_arn = escrow["operator"]
    if not operator_arn.startswith(f"arn:aws:iam::{ESCROW_ACCOUNT}:role/"):
        fail(f"the generated operator is {operator_arn}, not a role of the escrow account")
    operator_name = operator_arn.rsplit("/", 1)[1]

    iam = admin(endpoint, ESCROW_ACCOUNT)
    iam.create_user(UserName=RUNNER)
    iam.put_user_policy(
        UserName=RUNNER,
        PolicyName="assume-operator",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": operator_arn}
                ],
            }
        ),
    )
    key = iam.create_access_key(UserName=RUNNER)["AccessKey"]
    runner_trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ESCROW_ACCOUNT}:user/{RUNNER}"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role(
        iam,
        operator_name,
        runner_trust,
        [
            ("escrow-sync-operator", escrow["operator_policy"]),
            ("escrow-sync-audit", escrow["audit_policy"]),
        ],
    )

    trust = json.loads(json.dumps(reader["trust_policy"]).replace(PLACEHOLDER, EXTERNAL_ID))
    role(
        admin(endpoint, PRIMARY_ACCOUNT),
        reader["name"],
        trust,
        [("escrow-sync-reader", reader["permission_policy"])],
    )

    with open(keys_out, "w", encoding="utf-8") as f:
        f.write(f"{key['AccessKeyId']}\n{key['SecretAccessKey']}\n")
    print(f"escrow  {ESCROW_ACCOUNT}: user {RUNNER} (may only assume {operator_arn})")
    print(
        f"escrow  {ESCROW_ACCOUNT}: role {operator_name}: generated operator and audit "
        f"policies ({len(escrow['operator_policy']['Statement'])} + "
        f"{len(escrow['audit_policy']['Statement'])} statements)"
    )
    print(
        f"primary {PRIMARY_ACCOUNT}: role {reader['name']}: generated trust and permission "
        f"policy ({len(reader['permission_policy']['Statement'])} statements)"
    )


if __name__ == "__main__":
    main()
