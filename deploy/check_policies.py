"""Static check of bunker's IAM policy and CloudFormation template (run by tests/policies.rs).

Fails (exit 1, one line per finding) when a policy lets the role do more than the design
says:
- tag any snapshot or image after it was created (EC2 tags only with ec2:CreateAction; RDS and
  Redshift tags only with bunker's own request tags), or change bunker:* tags on a backup that
  already carries them (a Deny on aws:TagKeys must exist);
- delete or share a backup without both bunker:managed and this deployment's bunker:deployment
  as resource-tag conditions, or delete a temporary table without bunker:temporary and
  bunker:deployment;
- use KMS keys other than those named (no Resource "*"), or create grants that are not for
  AWS resources;
- pass a role other than the one named, or to a service other than the one named
  (iam:PassRole needs a Resource and an iam:PassedToService condition);
- accept queue messages from EventBridge without aws:SourceArn and aws:SourceAccount;
- leave the archive bucket without SSE-KMS and S3 Bucket Key, versioning, a full public access
  block, or a bucket policy denying every request without TLS;
- allow a wildcard action.
It also checks that each policy of the template says what its file in deploy/iam says (same
statements, actions and condition keys), so the two cannot drift apart: the function roles'
LifecyclePolicy, ReplicationPolicy, ExportPolicy and TemporaryPolicy
(bunker-<function>-policy.json) and the instance role's ServicePolicy
(bunker-service-policy.json); and that the service policy lets the instances do nothing with
backups, archives or temporary resources themselves (only assume the function roles).

Usage: check_policies.py [--policies DIR] [--template FILE]
"""

import argparse
import json
import sys

from cfnlint.decode import decode

TAGGING = {"ec2:createtags", "rds:addtagstoresource", "redshift:createtags"}
DELETING = {
    "ec2:deletesnapshot",
    "ec2:deregisterimage",
    "rds:deletedbsnapshot",
    "rds:deletedbclustersnapshot",
    "redshift:deleteclustersnapshot",
}
# Temporary resources bunker removes: only its own (bunker:temporary and its deployment).
TEMPORARY = {
    "dynamodb:deletetable",
    "ec2:deletevolume",
    "rds:deletedbinstance",
    "rds:modifydbinstance",
    "rds:deletedbcluster",
    "rds:modifydbcluster",
}
SHARING = {
    "ec2:modifysnapshotattribute",
    "ec2:modifyimageattribute",
    "rds:modifydbsnapshotattribute",
    "rds:modifydbclustersnapshotattribute",
}


def as_list(v):
    return v if isinstance(v, list) else [v]


def statements(doc):
    """The statements of a policy document, with Fn::If branches taken as present."""
    for st in as_list(doc.get("Statement", [])):
        if isinstance(st, dict) and "Fn::If" in st:
            st = st["Fn::If"][1]
        if isinstance(st, dict) and "Sid" in st or isinstance(st, dict) and "Effect" in st:
            yield st


def actions(st):
    return {a.lower() for a in as_list(st.get("Action", [])) if isinstance(a, str)}


def conditions(st):
    """Condition key (lowercase) -> (operator, value)."""
    out = {}
    for op, kv in (st.get("Condition") or {}).items():
        for k, v in kv.items():
            out[k.lower()] = (op, v)
    return out


def check_document(name, doc):
    found = []

    def bad(st, problem):
        found.append(f"{name}: statement {st.get('Sid', '?')}: {problem}")

    allows = [s for s in statements(doc) if s.get("Effect") == "Allow"]
    for st in allows:
        acts, cond = actions(st), conditions(st)
        if any(a == "*" or a.endswith(":*") for a in acts):
            bad(st, "allows a wildcard action")
        if "ec2:createtags" in acts and "ec2:createaction" not in cond:
            bad(st, "ec2:CreateTags without an ec2:CreateAction condition (tags only in the create call)")
        if acts & {"rds:addtagstoresource", "redshift:createtags"}:
            # Backups carry bunker:managed, temporary resources bunker:temporary; both carry
            # the deployment.
            kind = "aws:requesttag/bunker:temporary" if "aws:requesttag/bunker:temporary" in cond else "aws:requesttag/bunker:managed"
            for k in (kind, "aws:requesttag/bunker:deployment"):
                if k not in cond:
                    bad(st, f"tagging without a {k} condition")
        for what, acts_of in (("deletes", DELETING), ("shares", SHARING)):
            if acts & acts_of:
                for k in ("aws:resourcetag/bunker:managed", "aws:resourcetag/bunker:deployment"):
                    if k not in cond:
                        bad(st, f"{what} backups without a {k} condition")
                dep = cond.get("aws:resourcetag/bunker:deployment", (None, None))[1]
                if dep in ("*", ["*"]):
                    bad(st, f"{what} backups of any deployment (bunker:deployment matches *)")
        if acts & TEMPORARY:
            for k in ("aws:resourcetag/bunker:temporary", "aws:resourcetag/bunker:deployment"):
                if k not in cond:
                    bad(st, f"deletes temporary resources without a {k} condition")
        if "iam:passrole" in acts:
            if "*" in as_list(st.get("Resource", [])):
                bad(st, "iam:PassRole of every role (Resource \"*\"): name the export role")
            if "iam:passedtoservice" not in cond:
                bad(st, "iam:PassRole without an iam:PassedToService condition")
        if any(a.startswith("kms:") for a in acts):
            if "*" in as_list(st.get("Resource", [])):
                bad(st, "KMS on every key (Resource \"*\"): name the configured keys")
            if "kms:creategrant" in acts and cond.get("kms:grantisforawsresource", (None, None))[1] not in ("true", True):
                bad(st, "kms:CreateGrant without kms:GrantIsForAWSResource = true")
    tagging_allowed = set().union(*(actions(s) for s in allows)) & TAGGING
    denies = [s for s in statements(doc) if s.get("Effect") == "Deny" and "aws:tagkeys" in conditions(s)]
    denied = set().union(*(actions(s) for s in denies)) if denies else set()
    if tagging_allowed - denied:
        found.append(
            f"{name}: no Deny on aws:TagKeys bunker:* for {sorted(tagging_allowed - denied)}"
            " (bunker:* tags of existing backups must never change)"
        )
    return found


def check_queue_policy(name, doc):
    found = []
    for st in statements(doc):
        principals = as_list((st.get("Principal") or {}).get("Service", []))
        if st.get("Effect") == "Allow" and "events.amazonaws.com" in principals:
            cond = conditions(st)
            for k in ("aws:sourcearn", "aws:sourceaccount"):
                if k not in cond:
                    found.append(f"{name}: EventBridge may send to the queue without an {k} condition")
    return found


def check_archive_bucket(name, bucket, policies):
    """The archive bucket: SSE-KMS with S3 Bucket Key, versioned, no public access, and a bucket
    policy that denies every request without TLS."""
    found = []
    props = bucket.get("Properties", {})
    rules = props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
    if not any(r.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") == "aws:kms" and r.get("BucketKeyEnabled") is True for r in rules):
        found.append(f"{name}: not SSE-KMS with BucketKeyEnabled")
    if props.get("VersioningConfiguration", {}).get("Status") != "Enabled":
        found.append(f"{name}: not versioned")
    block = props.get("PublicAccessBlockConfiguration", {})
    for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
        if block.get(k) is not True:
            found.append(f"{name}: {k} is not true")
    tls = False
    for doc in policies:
        for st in statements(doc):
            cond = conditions(st)
            if (st.get("Effect") == "Deny" and "s3:*" in actions(st) and st.get("Principal") == "*"
                    and cond.get("aws:securetransport") == ("Bool", "false")):
                tls = True
    if not tls:
        found.append(f"{name}: no bucket policy statement denies s3:* without TLS (aws:SecureTransport false)")
    return found


def shape(doc):
    """What a policy says, placeholders aside: Sid -> (effect, actions, condition keys)."""
    return {
        s.get("Sid"): (s.get("Effect"), sorted(actions(s)), sorted(conditions(s)))
        for s in statements(doc)
    }


# Template resource -> its policy file in the policies directory.
POLICIES = {
    "LifecyclePolicy": "bunker-lifecycle-policy.json",
    "ReplicationPolicy": "bunker-replication-policy.json",
    "ExportPolicy": "bunker-export-policy.json",
    "TemporaryPolicy": "bunker-temporary-policy.json",
    "ServicePolicy": "bunker-service-policy.json",
}
# What the instance role may do itself: no action on backups, archives or temporary resources.
SERVICE_PREFIXES = ("sts:", "sqs:", "sns:", "events:", "dynamodb:putitem", "dynamodb:deleteitem",
                    "dynamodb:getitem", "dynamodb:describetable", "ec2:describeavailabilityzones")


def check_service(name, doc):
    """The instance role's own policy: the service's plumbing and sts:AssumeRole, nothing else."""
    found = []
    for st in statements(doc):
        extra = sorted(a for a in actions(st) if not a.startswith(SERVICE_PREFIXES))
        if st.get("Effect") == "Allow" and extra:
            found.append(f"{name}: statement {st.get('Sid', '?')}: the instance role itself may {extra}"
                         " (that belongs in a function role)")
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--policies", default="deploy/iam")
    ap.add_argument("--template", default="deploy/cloudformation/bunker.yaml")
    args = ap.parse_args()
    found = []
    files = {}
    for rid, fname in POLICIES.items():
        path = f"{args.policies}/{fname}"
        with open(path) as f:
            files[rid] = (path, json.load(f))
        found += check_document(path, files[rid][1])
    found += check_service(files["ServicePolicy"][0], files["ServicePolicy"][1])
    template, errors = decode(args.template)
    if errors or template is None:
        print(f"{args.template}: cannot be read: {errors}")
        return 1
    in_template = {}
    for rid, r in template.get("Resources", {}).items():
        props = r.get("Properties", {})
        if r.get("Type") in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
            found += check_document(f"{args.template} {rid}", props["PolicyDocument"])
            in_template[rid] = props["PolicyDocument"]
        if r.get("Type") == "AWS::SQS::QueuePolicy":
            found += check_queue_policy(f"{args.template} {rid}", props["PolicyDocument"])
    resources = template.get("Resources", {})
    bucket_policies = [r["Properties"]["PolicyDocument"] for r in resources.values() if r.get("Type") == "AWS::S3::BucketPolicy"]
    if "Archive" in resources:
        found += check_archive_bucket(f"{args.template} Archive", resources["Archive"], bucket_policies)
    else:
        found.append(f"{args.template}: no Archive bucket")
    for rid, (path, policy) in files.items():
        if rid not in in_template:
            found.append(f"{args.template}: no {rid} resource")
            continue
        a, b = shape(policy), shape(in_template[rid])
        if a != b:
            differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            found.append(f"{args.template} {rid} differs from {path} in {differ}")
    if "ServicePolicy" in in_template:
        found += check_service(f"{args.template} ServicePolicy", in_template["ServicePolicy"])
    for line in found:
        print(line)
    if found:
        return 1
    print(f"policies ok: {args.policies}, {args.template}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
