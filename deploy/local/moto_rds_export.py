"""RDS snapshot exports to S3 for bunker's emulator (moto 5.2.5 marks a task ``complete`` at
once and writes nothing).

``StartExportTask`` of a DB or cluster snapshot now behaves as AWS documents it:

* The task goes ``STARTING`` → ``IN_PROGRESS`` (``PercentProgress`` 50) → ``COMPLETE`` over
  ``export_seconds`` (default 0.5 s; a ``POST /_bunker/backup`` control, per account). Just
  before ``COMPLETE`` it writes AWS's layout to S3, under ``<S3Prefix>/<ExportTaskIdentifier>/``:
  ``export_info_<id>.json``, ``export_tables_info_<id>_from_1_to_<n>.json`` (``perTableStatus``)
  and, per table, ``<db>/<schema.table>/<batch>/part-<partition>-<uuid>-c000.gz.parquet``:
  real Parquet files written with pyarrow (gzip pages). The largest table is split into two
  batches and skips a partition number, as AWS's exports do.
* What the tables hold: the content registered for the snapshot's source (``rds_content``
  control: ``{"<db instance or cluster id>": {"db": "appdb", "tables": {"public.orders":
  {"columns": ["id", "note"], "rows": [[1, "a"], …]}}}}``), else a fixed sample
  (``public.orders``, 1,000 rows; ``public.customers``, 3 rows) in database ``appdb``.
* Refusals: a missing ``IamRoleArn``, ``KmsKeyId`` or bucket (``InvalidS3BucketFault``), a
  reused identifier (``ExportTaskAlreadyExists``, moto's own), and a sixth concurrent task.
  AWS documents the 5-task quota but not the error it answers; the plugin answers
  ``ExportTaskQuotaExceeded`` (bunker counts running tasks before it starts one, and treats
  any quota answer as back-pressure).
* Faults (controls): ``export_fail_tables`` (``db.schema.table`` targets reported ``FAILED``
  in the per-table info file, with no data files), ``export_corrupt`` (substrings of object
  keys whose Parquet footer is overwritten), ``export_fail_tasks`` (source ARNs whose task
  ends ``FAILED`` with a ``FailureCause``).
"""

import datetime
import io
import json
import threading
import uuid

import moto_backup

QUOTA = 5
SAMPLE = {
    "db": "appdb",
    "tables": {
        "public.orders": {"columns": ["id", "amount", "note"],
                          "rows": [[i, i * 3 % 1000, f"order {i}"] for i in range(1, 1001)]},
        "public.customers": {"columns": ["id", "name"], "rows": [[1, "ada"], [2, "grace"], [3, "edsger"]]},
    },
}


class QuotaError(Exception):
    pass


def parquet_bytes(columns, rows):
    """One Parquet file of ``rows`` (lists, in ``columns`` order), gzip-compressed pages."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
    out = io.BytesIO()
    pq.write_table(table, out, compression="gzip")
    return out.getvalue()


def content_of(account, snapshot):
    """What the snapshot's database holds: registered content of its source, or the sample."""
    source = getattr(getattr(snapshot, "database", None), "db_instance_identifier", None) or \
        getattr(getattr(snapshot, "cluster", None), "db_cluster_identifier", None)
    registered = moto_backup.setting(account, "rds_content") or {}
    return registered.get(source) or SAMPLE


def table_files(columns, rows, split):
    """``(batch/part name, bytes)`` per data file of one table."""
    name = lambda batch, part: f"{batch}/part-{part:05d}-{uuid.uuid4()}-c000.gz.parquet"
    if not split or len(rows) < 2:
        return [(name(1, 0), parquet_bytes(columns, rows))]
    half = len(rows) // 2
    # Two batches, and a gap in the partition numbers (an empty range writes no file).
    return [(name(1, 0), parquet_bytes(columns, rows[:half])), (name(2, 2), parquet_bytes(columns, rows[half:]))]


def write_export(task):
    """Writes the task's files to moto's S3, as AWS lays them out."""
    from moto.s3.models import s3_backends
    account = task.backend.account_id
    s3 = s3_backends[account]["aws"]
    content = content_of(account, task.snapshot)
    failing = set(moto_backup.setting(account, "export_fail_tables") or [])
    corrupt = list(moto_backup.setting(account, "export_corrupt") or [])
    base = "/".join(p for p in (task.s3_prefix.strip("/"), task.export_task_identifier) if p) + "/"
    db, tables = content["db"], content["tables"]
    largest = max(tables, key=lambda t: len(tables[t]["rows"]), default=None)
    statuses = []
    for name, t in tables.items():
        target = f"{db}.{name}"
        if target in failing:
            statuses.append({"target": target, "status": "FAILED", "warningMessage": "injected table failure"})
            continue
        for rel, data in table_files(t["columns"], t["rows"], name == largest):
            key = f"{base}{db}/{name}/{rel}"
            if any(c in key for c in corrupt):
                data = data[:-12] + b"\x00" * 12
            s3.put_object(task.s3_bucket, key, data)
        statuses.append({"target": target, "status": "COMPLETE", "sizeGB": 0.0,
                         "schemaMetadata": {"originalTypeMappings": [
                             {"columnName": c, "originalType": "text", "expectedExportedType": "binary (UTF8)"}
                             for c in t["columns"]]}})
    info = {"exportTaskIdentifier": task.export_task_identifier, "sourceArn": task.source_arn,
            "s3Bucket": task.s3_bucket, "s3Prefix": task.s3_prefix, "kmsKeyId": task.kms_key_id,
            "iamRoleArn": task.iam_role_arn, "status": "COMPLETE", "percentProgress": 100,
            "totalExtractedDataInGB": 0, "exportedFilesPath": task.export_task_identifier}
    tables_name = f"export_tables_info_{task.export_task_identifier}_from_1_to_{len(statuses)}.json"
    s3.put_object(task.s3_bucket, base + tables_name, json.dumps({"perTableStatus": statuses}).encode())
    s3.put_object(task.s3_bucket, base + f"export_info_{task.export_task_identifier}.json", json.dumps(info).encode())


def advance(task, step):
    """Moves the task on: 1 → IN_PROGRESS, 2 → files written and COMPLETE (or FAILED)."""
    account = task.backend.account_id
    with moto_backup.LOCK:
        if task.status not in ("STARTING", "IN_PROGRESS"):
            return
        if step == 1:
            task.status, task.percent_progress = "IN_PROGRESS", 50
            return
        failing = task.source_arn in (moto_backup.setting(account, "export_fail_tasks") or [])
    if failing:
        task.failure_cause = "injected by the bunker emulator plugin"
        task.status = "FAILED"
    else:
        write_export(task)
        task.status, task.percent_progress = "COMPLETE", 100
    task.task_end_time = datetime.datetime.now(datetime.timezone.utc)


def patch():
    """Replaces moto's ``start_export_task`` (see the module documentation)."""
    from moto.rds.exceptions import RDSClientError
    from moto.rds.models import RDSBackend
    from moto.s3.models import s3_backends

    original = RDSBackend.start_export_task

    def start_export_task(self, kwargs):
        for name in ("iam_role_arn", "kms_key_id", "s3_bucket_name"):
            if not kwargs.get(name):
                raise RDSClientError("InvalidParameterValue", f"{name} is required")
        if kwargs["s3_bucket_name"] not in s3_backends[self.account_id]["aws"].buckets:
            raise RDSClientError("InvalidS3BucketFault", f"The S3 bucket {kwargs['s3_bucket_name']} doesn't exist")
        with moto_backup.LOCK:
            running = sum(1 for t in self.export_tasks.values() if t.status in ("STARTING", "IN_PROGRESS"))
            if running >= QUOTA and kwargs["export_task_identifier"] not in self.export_tasks:
                raise RDSClientError("ExportTaskQuotaExceeded",
                                     f"Cannot start export task: {QUOTA} export tasks are already in progress")
            task = original(self, kwargs)
            task.status, task.percent_progress = "STARTING", 0
            task.task_start_time = datetime.datetime.now(datetime.timezone.utc)
            task.failure_cause = None
        seconds = float(moto_backup.setting(self.account_id, "export_seconds"))
        for step, at in ((1, seconds / 2), (2, seconds)):
            timer = threading.Timer(at, advance, (task, step))
            timer.daemon = True
            timer.start()
        return task

    RDSBackend.start_export_task = start_export_task
