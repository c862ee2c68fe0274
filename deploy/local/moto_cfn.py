"""CloudFormation as AWS deploys bunker's stack (deploy/cloudformation/bunker.yaml), where
moto 5.2.5 falls short:

- ``AWS::NoValue`` inside a list is dropped, as CloudFormation does (moto leaves a null in
  the list, which breaks a policy's ``Statement`` list built with ``!If``);
- ``AWS::S3::Bucket`` applies ``VersioningConfiguration``, ``ObjectLockEnabled`` with
  ``ObjectLockConfiguration``, ``LifecycleConfiguration`` and
  ``PublicAccessBlockConfiguration`` (moto applies only ``BucketEncryption`` and ``Tags``).

Resource types moto does not implement at all (``AWS::SQS::QueuePolicy``,
``AWS::S3::BucketPolicy``, ``AWS::CloudWatch::Alarm``) are skipped by moto with a warning;
bunker's tests check those statically (cfn-lint, checkov, deploy/check_policies.py).
"""


def _lifecycle_rule(rule):
    """A CloudFormation lifecycle rule in the S3 API's shape."""
    out = {"ID": rule.get("Id", ""), "Status": rule.get("Status", "Enabled"), "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    transitions = [t for t in rule.get("Transitions", []) if t]
    if transitions:
        out["Transition"] = [{"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]} for t in transitions]
    return out


def patch() -> None:
    from moto.cloudformation import parsing
    from moto.s3.models import FakeBucket, s3_backends
    from moto.utilities.utils import get_partition

    original_clean = parsing.clean_json

    def clean_json(resource_json, resources_map):
        if isinstance(resource_json, list):
            cleaned = (clean_json(item, resources_map) for item in resource_json)
            return [item for item in cleaned if item is not None]
        return original_clean(resource_json, resources_map)

    parsing.clean_json = clean_json

    original_create = FakeBucket.create_from_cloudformation_json.__func__

    def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        bucket = original_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        props = cloudformation_json.get("Properties", {})
        backend = s3_backends[account_id][get_partition(region_name)]
        versioning = props.get("VersioningConfiguration", {}).get("Status")
        if versioning:
            backend.put_bucket_versioning(bucket.name, versioning)
        if str(props.get("ObjectLockEnabled", "")).lower() == "true":
            backend.put_bucket_versioning(bucket.name, "Enabled")
            retention = props.get("ObjectLockConfiguration", {}).get("Rule", {}).get("DefaultRetention", {})
            # moto adds both to the retention date: the one not given is 0, not None.
            days = int(retention.get("Days", 0))
            years = int(retention.get("Years", 0))
            backend.put_object_lock_configuration(bucket.name, True, retention.get("Mode"), days, years)
        rules = props.get("LifecycleConfiguration", {}).get("Rules")
        if rules:
            backend.put_bucket_lifecycle_configuration(bucket.name, [_lifecycle_rule(r) for r in rules])
        block = props.get("PublicAccessBlockConfiguration")
        if block:
            backend.put_public_access_block(bucket.name, {k: str(v).lower() for k, v in block.items()})
        return bucket

    FakeBucket.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)

    from moto.s3.models import S3Backend

    original_complete = S3Backend.complete_multipart_upload

    def complete_multipart_upload(self, bucket_name, multipart_id, body):
        key = original_complete(self, bucket_name, multipart_id, body)
        bucket = self.get_bucket(bucket_name)
        if key is not None and not key.lock_mode and bucket.object_lock_enabled and bucket.default_lock_mode:
            key.lock_mode = bucket.default_lock_mode
            key.lock_until = bucket.default_retention()
        return key

    S3Backend.complete_multipart_upload = complete_multipart_upload
