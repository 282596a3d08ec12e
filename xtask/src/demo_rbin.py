"""The demo's Recycle Bin rules, as the escrow template would create them.

Usage: demo_rbin.py ENDPOINT TEMPLATES_JSON

TEMPLATES_JSON is the output of `escrow-sync policy --output cloudformation`.
Deploying the escrow template is the escrow administrator's job; the emulator
has no CloudFormation for it, so this creates each AWS::Rbin::Rule of the
escrow template with the Recycle Bin API (xtask's moto model), in the escrow
account (222222222222), with the template's settings: resource type,
retention, and the lock with its unlock delay. Prints each rule.
"""

import json
import sys

import boto3

ESCROW_ADMIN = "arn:aws:iam::222222222222:role/escrow-admin"


def main():
    endpoint, templates = sys.argv[1], sys.argv[2]
    with open(templates) as f:
        escrow = json.load(f)["escrow"]
    sts = boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1")
    creds = sts.assume_role(RoleArn=ESCROW_ADMIN, RoleSessionName="demo-rbin")["Credentials"]
    rbin = boto3.client(
        "rbin",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    rules = {k: r for k, r in escrow["Resources"].items() if r["Type"] == "AWS::Rbin::Rule"}
    if not rules:
        sys.exit("the escrow template has no AWS::Rbin::Rule (the demo has [[ec2]] jobs)")
    for logical, resource in sorted(rules.items()):
        p = resource["Properties"]
        lock = p["LockConfiguration"]
        rule = rbin.create_rule(
            ResourceType=p["ResourceType"],
            Description=p.get("Description", ""),
            RetentionPeriod=p["RetentionPeriod"],
            # The API nests CloudFormation's LockConfiguration in UnlockDelay.
            LockConfiguration={"UnlockDelay": lock},
        )
        print(
            "  %s: rule %s, %s, %d days, %s (unlock delay %d days)"
            % (
                logical,
                rule["Identifier"],
                rule["ResourceType"],
                rule["RetentionPeriod"]["RetentionPeriodValue"],
                rule["LockState"],
                lock["UnlockDelayValue"],
            )
        )


if __name__ == "__main__":
    main()
