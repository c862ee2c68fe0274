"""DynamoDB exports to S3 for bunker's emulator, in AWS's layout (moto 5.2.5 writes one gzip
of the table's current items and no manifest, and ignores ``ExportTime`` and ``ClientToken``).

``ExportTableToPointInTime`` now:

* needs point-in-time recovery on the table (moto's own check) and exports the items as they
  were at ``ExportTime``: those of the newest backup of the table made at or before it (the
  emulator has no change log), else the current items;
* answers a repeated ``ClientToken`` of the same table with the same export, as AWS does;
* stays ``IN_PROGRESS`` for ``export_seconds`` (the ``POST /_bunker/backup`` control), then
  writes under ``<S3Prefix>/AWSDynamoDB/<ExportId>/``: an empty ``_started``,
  ``data/<random>.json.gz`` (three files, items dealt round-robin, so a small table leaves
  one with no item, as AWS's empty partitions do), ``manifest-files.json`` (JSON lines:
  ``itemCount``, ``md5Checksum`` (base64), ``etag``, ``dataFileS3Key``) and
  ``manifest-summary.json`` (``version``, ``exportArn``, ``startTime``, ``endTime``,
  ``tableArn``, ``tableId``, ``exportTime``, ``s3Bucket``, ``s3Prefix``,
  ``manifestFilesS3Key``, ``billedSizeBytes``, ``itemCount``, ``outputFormat``), then
  ``COMPLETED`` with ``ExportManifest`` and ``ItemCount``. The ``.checksum`` files AWS also
  writes are left out: their content is not established.
* has an export ARN of AWS's form, ``…:table/<name>/export/<14 digits>-<8 hex>``.

Faults (controls): ``ddb_export_drop_files`` (that many data files deleted after the
manifests are written), ``ddb_export_fail`` (the export ends ``FAILED``).
"""

import base64
import datetime
import gzip
import hashlib
import json
import threading
import time
import uuid

import moto_backup


def items_at(backend, table, when):
    """The table's items as of ``when`` (a UTC datetime): its newest backup at or before it
    (compared to the millisecond, the precision of AWS's timestamps)."""
    def made(b):
        t = b.creation_date_time.replace(tzinfo=datetime.timezone.utc)
        return t.replace(microsecond=t.microsecond // 1000 * 1000)
    older = [b for b in backend.backups.values() if b.table.name == table.name and made(b) <= when]
    source = max(older, key=lambda b: b.creation_date_time).table if older else table
    return list(source.all_items())


def write(export, items):
    """Writes the export's objects to moto's S3, as AWS lays them out."""
    from moto.dynamodb.models.utilities import dynamo_json_dump
    from moto.s3.models import s3_backends
    s3 = s3_backends[export.account_id]["aws"]
    export_id = export.arn.rsplit("/", 1)[1]
    base = "/".join(p for p in (export.s3_prefix.strip("/"), "AWSDynamoDB", export_id) if p) + "/"
    s3.put_object(export.s3_bucket, base + "_started", b"")
    lines = []
    for n in range(3):
        part = items[n::3]
        body = "".join(dynamo_json_dump(i.to_json(root_attr_name="Item")) + "\n" for i in part).encode()
        data = gzip.compress(body)
        key = f"{base}data/{uuid.uuid4().hex[:26]}.json.gz"
        stored = s3.put_object(export.s3_bucket, key, data)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        lines.append({"itemCount": len(part), "md5Checksum": md5, "etag": stored.etag.strip('"'), "dataFileS3Key": key})
        export.processed_bytes += len(body)
    files_key = base + "manifest-files.json"
    s3.put_object(export.s3_bucket, files_key, "".join(json.dumps(l) + "\n" for l in lines).encode())
    iso = lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    summary = {"version": "2020-06-30", "exportArn": export.arn, "startTime": iso(export.start_time),
               "endTime": iso(datetime.datetime.now(datetime.timezone.utc)), "tableArn": export.table.table_arn,
               "tableId": export.table.name,
               "exportTime": iso(export.export_time), "s3Bucket": export.s3_bucket, "s3Prefix": export.s3_prefix,
               "s3SseAlgorithm": None, "s3SseKmsKeyId": None, "manifestFilesS3Key": files_key,
               "billedSizeBytes": export.processed_bytes, "itemCount": len(items), "outputFormat": "DYNAMODB_JSON"}
    summary_key = base + "manifest-summary.json"
    s3.put_object(export.s3_bucket, summary_key, json.dumps(summary).encode())
    for line in lines[:int(moto_backup.setting(export.account_id, "ddb_export_drop_files") or 0)]:
        s3.delete_object(export.s3_bucket, line["dataFileS3Key"])
    export.item_count, export.manifest_key = len(items), summary_key


def run(export, backend):
    time.sleep(float(moto_backup.setting(export.account_id, "export_seconds")))
    try:
        from moto.s3.models import s3_backends
        if export.s3_bucket not in s3_backends[export.account_id]["aws"].buckets:
            export.status, export.failure_code = "FAILED", "S3NoSuchBucket"
            export.failure_message = "The specified bucket does not exist"
        elif moto_backup.setting(export.account_id, "ddb_export_fail"):
            export.status, export.failure_code = "FAILED", "UNKNOWN"
            export.failure_message = "injected by the bunker emulator plugin"
        else:
            write(export, items_at(backend, export.table, export.export_time))
            export.status = "COMPLETED"
    except Exception as e:  # reported as AWS reports a failed export
        export.status, export.failure_code, export.failure_message = "FAILED", "UNKNOWN", str(e)
    export.end_time = datetime.datetime.now(datetime.timezone.utc)


def start(backend, body, at, now):
    """A new export of ``body["TableArn"]`` as of ``at``, started."""
    from moto.dynamodb.exceptions import PointInTimeRecoveryUnavailable, TableNotFoundException
    from moto.dynamodb.models.table_export import TableExport
    table = next((t for t in backend.tables.values() if t.table_arn == body["TableArn"]), None)
    if table is None:
        raise TableNotFoundException(name=body["TableArn"])
    if table.continuous_backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] != "ENABLED":
        raise PointInTimeRecoveryUnavailable(name=table.name)
    export = TableExport(s3_bucket=body["S3Bucket"], s3_prefix=body.get("S3Prefix", ""),
                         region_name=backend.region_name, account_id=body.get("S3BucketOwner") or backend.account_id,
                         table=table, export_format=body.get("ExportFormat", "DYNAMODB_JSON"),
                         export_type=body.get("ExportType", "FULL_EXPORT"))
    export.arn = f"{table.table_arn}/export/{int(now.timestamp() * 1000):014d}-{uuid.uuid4().hex[:8]}"
    export.export_time, export.start_time, export.client_token = at, now, body.get("ClientToken")
    export.run = lambda: run(export, backend)
    backend.table_exports[export.arn] = export
    export.start()
    return export


def patch():
    """Replaces moto's export (see the module documentation)."""
    from moto.core.responses import ActionResult
    from moto.dynamodb.models.table_export import TableExport
    from moto.dynamodb.responses import DynamoHandler

    original_response = TableExport.response

    def response(self):
        out = original_response(self)
        out.update(ExportTime=self.export_time.timestamp(), StartTime=self.start_time.timestamp(),
                   ClientToken=self.client_token, ExportManifest=getattr(self, "manifest_key", None),
                   EndTime=getattr(self, "end_time", None) and self.end_time.timestamp())
        return {k: v for k, v in out.items() if v is not None}

    def export_table_to_point_in_time(self):
        body, backend = self.body, self.dynamodb_backend
        now = datetime.datetime.now(datetime.timezone.utc)
        when = body.get("ExportTime")
        if isinstance(when, datetime.datetime):  # moto parses the request's timestamps
            at = when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)
        else:
            at = datetime.datetime.fromtimestamp(float(when), datetime.timezone.utc) if when is not None else now
        with moto_backup.LOCK:
            token = body.get("ClientToken")
            same = [e for e in backend.table_exports.values()
                    if token and getattr(e, "client_token", None) == token and e.table.table_arn == body["TableArn"]]
            export = same[0] if same else start(backend, body, at, now)
        return ActionResult({"ExportDescription": export.response()})

    DynamoHandler.export_table_to_point_in_time = export_table_to_point_in_time
    TableExport.response = response
