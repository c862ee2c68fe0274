"""AWS Backup jobs and recovery points for bunker's emulator (moto 5.2.5 has none of them).

Recovery points *are* moto's own artefacts, so bunker's export code reads real bytes:

* ``StartBackupJob`` (``PUT /backup-jobs``) of an EBS volume makes an EC2 snapshot tagged
  ``aws:backup:source-resource``; its EBS-direct blocks are the volume's content, which in
  the emulator is the content of the snapshot the volume was created from (none: zeros).
  An RDS instance or Aurora cluster gets a ``awsbackup:job-<uuid>`` DB (cluster) snapshot, a
  DynamoDB table a DynamoDB backup. The recovery point ARN is the artefact's ARN, as on AWS.
* Jobs go ``CREATED`` → ``RUNNING`` → ``COMPLETED`` after ``job_seconds`` (default 0.2 s) and
  the recovery point ``CREATING`` → ``COMPLETED`` with them. On completion the plugin puts the
  two event shapes AWS sends through moto's EventBridge (so rules forward them to SQS): the
  native ``Backup Job State Change`` (the recovery point only in ``resources[]``, as AWS's
  documented example) and the CloudTrail ``BackupJobCompleted`` service event.
* ``DescribeBackupJob``, ``ListBackupJobs``, ``ListRecoveryPointsByBackupVault`` (filters
  ``resourceArn``, ``resourceType``, ``createdBefore``/``After``; ``maxResults`` and
  ``nextToken`` paging), ``ListRecoveryPointsByResource``, ``DescribeRecoveryPoint`` and
  ``DeleteRecoveryPoint`` (which deletes the artefact).
* AWS's refusals: ``DeleteRecoveryPoint`` in a vault whose Vault Lock ``MinRetentionDays``
  has not passed, or under a legal hold, is ``InvalidRequestException``; EC2
  ``DeleteSnapshot`` of a snapshot AWS Backup manages is ``InvalidParameterValue``.
* Controls (``POST /_bunker/backup``, JSON, per ``account``): ``job_seconds``; ``legal_holds`` (recovery point
  ARNs); ``expire_on_delete`` (``DeleteRecoveryPoint`` answers 200 with an empty body and
  leaves the point ``EXPIRED``, as AWS does when the caller's role lacks permissions);
  ``events`` (which shapes to send: ``["native", "cloudtrail"]`` by default, ``[]`` for none);
  ``fail_jobs`` (resource ARNs whose jobs end ``FAILED``); and those of RDS and DynamoDB
  exports (``moto_rds_export.py``, ``moto_ddb_export.py``).
"""

import datetime
import json
import re
import threading
import time
import urllib.parse
import uuid

LOCK = threading.RLock()
JOBS = {}  # (account, region) -> {job id: dict}
POINTS = {}  # (account, region) -> {recovery point arn: dict}
DEFAULTS = {"job_seconds": 0.2, "legal_holds": [], "expire_on_delete": False,
            "events": ["native", "cloudtrail"], "fail_jobs": [],
            # RDS exports (moto_rds_export.py)
            "export_seconds": 0.5, "rds_content": {}, "export_fail_tables": [], "export_corrupt": [],
            "export_fail_tasks": [],
            # DynamoDB exports (moto_ddb_export.py)
            "ddb_export_drop_files": 0, "ddb_export_fail": False,
            # Temporary instances for dumps (moto_rds_restore.py)
            "restore_seconds": 0.5}
CONTROLS = {}  # account -> controls (tests in one emulator each use their own account)


def control(body):
    """``POST /_bunker/backup``: replaces the given controls of ``body["account"]``."""
    with LOCK:
        CONTROLS.setdefault(str(body.pop("account", "")), dict(DEFAULTS)).update(body)


def setting(account, name):
    with LOCK:
        return CONTROLS.get(account, DEFAULTS)[name]


class Error(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def respond(start_response, status, body=None, code=None):
    data = b"" if body is None else json.dumps(body, default=str).encode()
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    if code:
        headers.append(("x-amzn-ErrorType", code))
    start_response(status, headers)
    return [data]


def iso(ts):
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def handle(environ, start_response, account, region):
    """Answers the AWS Backup routes moto lacks; ``None`` leaves the request to moto."""
    method = environ.get("REQUEST_METHOD")
    path = urllib.parse.unquote(environ.get("RAW_URI", environ.get("PATH_INFO", "")).split("?", 1)[0])
    query = {k: v[0] for k, v in urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).items()}
    routes = [
        ("PUT", r"/backup-jobs/?", start_backup_job),
        ("GET", r"/backup-jobs/?", list_backup_jobs),
        ("GET", r"/backup-jobs/(?P<job>[^/]+)", describe_backup_job),
        ("GET", r"/backup-vaults/(?P<vault>[^/]+)/recovery-points/?", list_by_vault),
        ("GET", r"/backup-vaults/(?P<vault>[^/]+)/recovery-points/(?P<arn>.+)", describe_recovery_point),
        ("DELETE", r"/backup-vaults/(?P<vault>[^/]+)/recovery-points/(?P<arn>.+)", delete_recovery_point),
        ("GET", r"/resources/(?P<resource>.+)/recovery-points/?", list_by_resource),
    ]
    for m, pattern, fn in routes:
        found = re.fullmatch(pattern, path)
        if m == method and found:
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
                status, out = fn(account, region, body=body, query=query, **found.groupdict())
                return respond(start_response, status, out)
            except Error as e:
                return respond(start_response, e.status, {"Message": e.message, "Code": e.code}, e.code)
            except Exception as e:  # moto's own refusal (a resource that does not exist, …)
                code = "ResourceNotFoundException" if "NotFound" in type(e).__name__ else "InvalidParameterValueException"
                return respond(start_response, "400 Bad Request", {"Message": str(e), "Code": code}, code)
    return None


def backends(account, region):
    from moto.backup.models import backup_backends
    return backup_backends[account][region]


def vault_of(account, region, name):
    vaults = backends(account, region).vaults
    if name not in vaults:
        raise Error("400 Bad Request", "ResourceNotFoundException", f"Backup vault {name} not found")
    return vaults[name]


def make_artefact(account, region, resource_arn, job_id):
    """Creates the backup AWS Backup would make of ``resource_arn``: (type, recovery point ARN)."""
    parts = resource_arn.split(":", 5)
    if len(parts) != 6:
        raise Error("400 Bad Request", "InvalidParameterValueException", f"Invalid ARN: {resource_arn}")
    service, resource = parts[2], parts[5]
    if service == "ec2" and resource.startswith("volume/"):
        from moto.ebs.models import ebs_backends
        from moto.ec2.models import ec2_backends
        ec2 = ec2_backends[account][region]
        volume = ec2.get_volume(resource.split("/", 1)[1])
        snap = ec2.create_snapshot(volume.id, f"This snapshot is created by the AWS Backup service for {volume.id}")
        snap.add_tags({"aws:backup:source-resource": f"{volume.id}:{job_id}"})
        ebs = ebs_backends[account][region]
        copy = ebs.lookup(snap.id)
        if volume.snapshot_id:
            copy.blocks = dict(ebs.lookup(volume.snapshot_id).blocks)
        copy.volume_size = volume.size
        return "EBS", f"arn:aws:ec2:{region}::snapshot/{snap.id}"
    if service == "rds" and resource.startswith(("db:", "cluster:")):
        from moto.rds.models import rds_backends
        rds = rds_backends[account][region]
        name = f"awsbackup:job-{job_id}"
        if resource.startswith("db:"):
            snap = rds.create_db_snapshot(resource.split(":", 1)[1], name, snapshot_type="awsbackup")
            return "RDS", snap.db_snapshot_arn
        cluster = rds.clusters[resource.split(":", 1)[1]]
        # RDS lists AWS Backup's Aurora snapshots as manual ones: "the awsbackup type does not
        # apply to Aurora" (DescribeDBSnapshots' SnapshotType).
        snap = rds.create_db_cluster_snapshot(cluster.db_cluster_identifier, name, snapshot_type="manual")
        kind = "DocumentDB" if cluster.engine == "docdb" else "Aurora"
        return kind, snap.db_cluster_snapshot_arn
    if service == "dynamodb" and resource.startswith("table/"):
        from moto.dynamodb.models import dynamodb_backends
        backup = dynamodb_backends[account][region].create_backup(resource.split("/", 1)[1], f"awsbackup-{job_id}")
        return "DynamoDB", backup.arn
    raise Error("400 Bad Request", "InvalidParameterValueException", f"Invalid ARN: {resource_arn}")


def delete_artefact(account, region, point):
    arn = point["RecoveryPointArn"]
    if point["ResourceType"] == "EBS":
        from moto.ec2.models import ec2_backends
        ec2_backends[account][region].snapshots.pop(arn.rsplit("/", 1)[1], None)
    elif point["ResourceType"] in ("RDS", "Aurora", "DocumentDB"):
        from moto.rds.models import rds_backends
        rds = rds_backends[account][region]
        name = arn.split(":", 6)[6]
        rds.database_snapshots.pop(name, None)
        rds.cluster_snapshots.pop(name, None)
    elif point["ResourceType"] == "DynamoDB":
        from moto.dynamodb.models import dynamodb_backends
        dynamodb_backends[account][region].backups.pop(arn, None)


def start_backup_job(account, region, body, query):
    vault = vault_of(account, region, body.get("BackupVaultName", ""))
    resource = body.get("ResourceArn") or ""
    if not body.get("IamRoleArn"):
        raise Error("400 Bad Request", "MissingParameterValueException", "IamRoleArn is required")
    job_id = str(uuid.uuid4()).upper()
    kind, arn = make_artefact(account, region, resource, job_id)
    now = time.time()
    job = {"AccountId": account, "BackupJobId": job_id, "BackupVaultName": vault.backup_vault_name,
           "BackupVaultArn": vault.backup_vault_arn, "RecoveryPointArn": arn, "ResourceArn": resource,
           "ResourceType": kind, "CreationDate": now, "State": "CREATED", "PercentDone": "0.0",
           "IamRoleArn": body["IamRoleArn"], "StartBy": now + 8 * 3600, "BackupType": "FULL"}
    point = {"RecoveryPointArn": arn, "BackupVaultName": vault.backup_vault_name,
             "BackupVaultArn": vault.backup_vault_arn, "ResourceArn": resource, "ResourceType": kind,
             "IamRoleArn": body["IamRoleArn"], "Status": "CREATING", "CreationDate": now,
             "Lifecycle": body.get("Lifecycle") or {}, "IsEncrypted": False, "StorageClass": "WARM",
             "BackupSizeInBytes": 0}
    with LOCK:
        JOBS.setdefault((account, region), {})[job_id] = job
        POINTS.setdefault((account, region), {})[arn] = point
        seconds = setting(account, "job_seconds")
    timer = threading.Timer(seconds, finish_job, (account, region, job_id))
    timer.daemon = True
    timer.start()
    return "200 OK", {"BackupJobId": job_id, "RecoveryPointArn": arn, "CreationDate": now, "IsParent": False}


def finish_job(account, region, job_id):
    with LOCK:
        job = JOBS[(account, region)][job_id]
        point = POINTS[(account, region)].get(job["RecoveryPointArn"])
        failed = job["ResourceArn"] in setting(account, "fail_jobs")
        job.update(State="FAILED" if failed else "COMPLETED", PercentDone="100.0", CompletionDate=time.time())
        if failed:
            job["StatusMessage"] = "injected by the bunker emulator plugin"
            POINTS[(account, region)].pop(job["RecoveryPointArn"], None)
        elif point is not None:
            point.update(Status="COMPLETED", CompletionDate=job["CompletionDate"])
        shapes = list(setting(account, "events"))
    if not failed:
        emit(account, region, job, shapes)


def emit(account, region, job, shapes):
    """Puts the job's completion events on moto's default event bus (rules route them)."""
    from moto.events.models import events_backends
    native = {"backupJobId": job["BackupJobId"], "backupSizeInBytes": "0",
              "backupVaultArn": job["BackupVaultArn"], "backupVaultName": job["BackupVaultName"],
              "bytesTransferred": "0", "creationDate": iso(job["CreationDate"]), "iamRoleArn": job["IamRoleArn"],
              "resourceArn": job["ResourceArn"], "resourceType": job["ResourceType"], "state": "COMPLETED",
              "completionDate": iso(job["CompletionDate"]), "startBy": iso(job["StartBy"]), "percentDone": 100}
    cloudtrail = {"eventVersion": "1.08", "eventSource": "backup.amazonaws.com", "eventName": "BackupJobCompleted",
                  "awsRegion": region, "eventType": "AwsServiceEvent", "eventCategory": "Management",
                  "serviceEventDetails": {
                      "backupJobId": job["BackupJobId"], "backupVaultName": job["BackupVaultName"],
                      "backupVaultArn": job["BackupVaultArn"], "recoveryPointArn": job["RecoveryPointArn"],
                      "resourceArn": job["ResourceArn"], "resourceType": job["ResourceType"],
                      "state": "COMPLETED",
                      "creationDate": {"seconds": int(job["CreationDate"]), "nanos": 0},
                      "completionDate": {"seconds": int(job["CompletionDate"]), "nanos": 0}}}
    entries = []
    if "native" in shapes:
        entries.append({"Source": "aws.backup", "DetailType": "Backup Job State Change",
                        "Resources": [job["RecoveryPointArn"]], "Detail": json.dumps(native)})
    if "cloudtrail" in shapes:
        entries.append({"Source": "aws.backup", "DetailType": "AWS Service Event via CloudTrail",
                        "Resources": [], "Detail": json.dumps(cloudtrail)})
    if entries:
        events_backends[account][region].put_events(entries)


def describe_backup_job(account, region, body, query, job):
    with LOCK:
        found = JOBS.get((account, region), {}).get(job.upper()) or JOBS.get((account, region), {}).get(job)
        if found is None:
            raise Error("400 Bad Request", "ResourceNotFoundException", f"Backup job {job} not found")
        out = dict(found)
    if out["State"] == "CREATED":
        out["State"] = "RUNNING"
    return "200 OK", out


def list_backup_jobs(account, region, body, query):
    with LOCK:
        jobs = [dict(j) for j in JOBS.get((account, region), {}).values()]
    vault = query.get("backupVaultName")
    jobs = [j for j in jobs if not vault or j["BackupVaultName"] == vault]
    return "200 OK", {"BackupJobs": jobs}


def filtered(points, query):
    def keep(p):
        if query.get("resourceArn") and p["ResourceArn"] != query["resourceArn"]:
            return False
        if query.get("resourceType") and p["ResourceType"] != query["resourceType"]:
            return False
        if query.get("createdAfter") and p["CreationDate"] < float(query["createdAfter"]):
            return False
        if query.get("createdBefore") and p["CreationDate"] > float(query["createdBefore"]):
            return False
        return True
    return sorted((p for p in points if keep(p)), key=lambda p: (p["CreationDate"], p["RecoveryPointArn"]))


def paged(items, query, key):
    size = max(1, min(int(query.get("maxResults") or 1000), 1000))
    start = int(query.get("nextToken") or 0)
    out = {key: items[start:start + size]}
    if start + size < len(items):
        out["NextToken"] = str(start + size)
    return out


def list_by_vault(account, region, body, query, vault):
    vault_of(account, region, vault)
    with LOCK:
        points = [dict(p) for p in POINTS.get((account, region), {}).values() if p["BackupVaultName"] == vault]
    return "200 OK", paged(filtered(points, query), query, "RecoveryPoints")


def list_by_resource(account, region, body, query, resource):
    with LOCK:
        points = [dict(p) for p in POINTS.get((account, region), {}).values() if p["ResourceArn"] == resource]
    return "200 OK", paged(filtered(points, query), query, "RecoveryPoints")


def point_of(account, region, vault, arn):
    vault_of(account, region, vault)
    point = POINTS.get((account, region), {}).get(arn)
    if point is None or point["BackupVaultName"] != vault:
        raise Error("400 Bad Request", "ResourceNotFoundException", f"Recovery point {arn} not found")
    return point


def describe_recovery_point(account, region, body, query, vault, arn):
    with LOCK:
        return "200 OK", dict(point_of(account, region, vault, arn))


def delete_recovery_point(account, region, body, query, vault, arn):
    with LOCK:
        point = point_of(account, region, vault, arn)
        locked = vault_of(account, region, vault)
        if arn in setting(account, "legal_holds"):
            raise Error("400 Bad Request", "InvalidRequestException",
                        f"Recovery point {arn} is under an active legal hold and cannot be deleted")
        days = locked.min_retention_days if locked.locked else None
        if days and time.time() - point["CreationDate"] < days * 86400:
            raise Error("400 Bad Request", "InvalidRequestException",
                        f"Recovery point {arn} is protected by the Vault Lock of {vault} "
                        f"(MinRetentionDays {days}) and cannot be deleted yet")
        if point["Status"] not in ("COMPLETED", "PARTIAL", "EXPIRED", "AVAILABLE", "STOPPED"):
            raise Error("400 Bad Request", "InvalidResourceStateException",
                        f"Recovery point {arn} is {point['Status']} and cannot be deleted")
        if setting(account, "expire_on_delete"):
            point["Status"] = "EXPIRED"
            return "200 OK", None
        POINTS[(account, region)].pop(arn)
    delete_artefact(account, region, point)
    return "200 OK", None


def managed_snapshot(account, region, snapshot_id):
    """Whether AWS Backup manages ``snapshot_id`` (EC2 refuses to delete those)."""
    with LOCK:
        return f"arn:aws:ec2:{region}::snapshot/{snapshot_id}" in POINTS.get((account, region), {})


def patch_ec2_delete_snapshot():
    """EC2 ``DeleteSnapshot`` of a snapshot AWS Backup manages fails, as on AWS."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.elastic_block_store import EBSBackend

    original = EBSBackend.delete_snapshot

    def delete_snapshot(self, snapshot_id):
        if managed_snapshot(self.account_id, self.region_name, snapshot_id):
            raise EC2ClientError(
                "InvalidParameterValue",
                "This snapshot is managed by the AWS Backup service and cannot be deleted via EC2 APIs. "
                "If you wish to delete this snapshot, please do so via the Backup console.")
        return original(self, snapshot_id)

    EBSBackend.delete_snapshot = delete_snapshot
