#!/usr/bin/env python3
"""bunker's local AWS emulator: moto server 5.2.5 plus a small plugin.

What the plugin adds to stock moto (see README, "The local emulator"):

* DocumentDB: moto routes the docdb API to its RDS backend (both sign as
  service "rds"), but rejects ``Engine=docdb``. The plugin registers ``docdb``
  as a cluster engine (default version 5.0.0, port 27017), so clusters, cluster
  snapshots, tags and ``engine`` filters behave as for Aurora and the bunker
  docdb code path runs over real HTTP.
* CreateImage with ``TagSpecifications`` for ``snapshot``: AWS tags the snapshots the image
  creates; moto 5.2.5 raises NotImplementedError. The plugin applies those tags to the AMI's
  snapshot, so bunker's AMI path (tags in the create call, never an untagged orphan) runs.
* CopyImage with ``TagSpecifications``: AWS tags the copied AMI and its snapshots in the call;
  moto 5.2.5 ignores the parameter. The plugin applies them, so DR copies of AMIs are born
  tagged (``bunker:copy_of``, ownership) as on AWS.
* Cross-account sharing (EBS, AMI, RDS, Aurora): the account a backup is shared with can
  list it (``DescribeSnapshots`` with ``RestorableByUserIds`` / ``OwnerIds``, ``DescribeImages``
  with ``ExecutableUsers`` and ``Owners``; RDS ``SnapshotType=shared`` already works) and copy
  it (``CopySnapshot``, ``CopyImage``, ``CopyDB[Cluster]Snapshot`` with the source ARN), as on
  AWS; moto 5.2.5 refuses both. Used by the data-bunker pull. The owner's side too:
  ``DescribeSnapshots`` with ``OwnerIds=self`` and ``RestorableByUserIds=[account]`` lists the
  caller's snapshots shared with that account (moto ignores the parameter), which bunker's
  batched share checks read.
* EBS direct APIs as AWS answers them (moto 5.2.5: 512-byte blocks, no parent snapshots,
  ListChangedBlocks missing blocks only in the second snapshot, HTTP 500 for snapshots made
  through EC2, no checksum validation): 524288-byte blocks, ``ParentSnapshotId`` (the new
  snapshot starts with its parent's blocks), ListChangedBlocks over both snapshots,
  ascending block lists with ``MaxResults``/``NextToken`` paging, EC2-made snapshots readable
  (no blocks), ``pending`` until CompleteSnapshot, PutSnapshotBlock checking the SHA-256
  checksum and the block size, and ``ValidationException`` / ``ResourceNotFoundException``
  instead of crashes.
* S3 ListParts answers with the ``ListPartsResult`` root element AWS uses (moto 5.2.5 writes
  ``ListPartsResponse``, which the Rust SDK rejects: the same bug as getmoto/moto#10055 for
  CompleteMultipartUpload). bunker's resume lists the parts of an interrupted upload.
* S3 UploadPart checks ``x-amz-checksum-crc32c`` (and ``-sha256``) against the part's bytes
  (``BadDigest``), as AWS does; moto stores any value.
* AWS Backup jobs and recovery points (``moto_backup.py``; moto 5.2.5 has none): StartBackupJob
  makes a real EBS snapshot, RDS / cluster snapshot or DynamoDB backup, jobs complete on a
  timer and send the native and the CloudTrail event shapes through EventBridge; list,
  describe and delete recovery points, with Vault Lock, legal-hold and "200 but EXPIRED"
  refusals (``POST /_bunker/backup``), and EC2 refusing to delete a snapshot AWS Backup manages.
* RDS snapshot exports (``moto_rds_export.py``; moto 5.2.5 marks a task complete at once and
  writes nothing): STARTING → IN_PROGRESS → COMPLETE over time, AWS's S3 layout with real
  Parquet files (pyarrow), the 5-task quota, and table / object / task faults.
* DynamoDB exports (``moto_ddb_export.py``; moto 5.2.5 writes one gzip of the current items
  and no manifest): the items at ``ExportTime``, AWS's manifests and data files, the
  ``ClientToken`` honoured, AWS's export ARN form, and missing-file / failure faults.
* DB instances restored from a snapshot that are real servers (``moto_rds_restore.py``):
  a test registers a PostgreSQL or MariaDB server for a source instance
  (``POST /_bunker/rds-servers``); ``RestoreDBInstanceFromDBSnapshot`` of its snapshots answers
  that server as the endpoint (``creating`` for ``restore_seconds``, then ``available``),
  ``ModifyDBInstance(MasterUserPassword)`` really changes the master password there, and
  deletes are recorded (``GET /_bunker/rds-servers?account=…``).
* Volume attachment and the instance metadata service (``moto_volumes.py``; moto 5.2.5
  attaches a record and has no IMDS): ``AttachVolume`` makes a read-only loop device of the
  volume's snapshot blocks and the Nitro by-id symlink in a directory a test registers
  (``POST /_bunker/devices``), ``DetachVolume`` removes both; IMDSv2 token, instance id and
  availability zone of a registered instance (``POST /_bunker/imds``), also per account
  under ``/_bunker/imds/<account>/``.
* Outages for tests (``POST /_bunker/outage``): every request signed with one access key
  is answered 503, so one test's account sees AWS down while others run on.
* Fault injection for tests (``POST /_bunker/faults``, see ``Faults``): throttling and
  quota errors at a given rate per action, EBS copies that stay ``pending`` for a while,
  corrupted GetSnapshotBlock bodies, failed and slowed S3 part uploads.
  Off unless a test turns it on.
* EC2 resources' tags by direct lookup (``patch_ec2_tag_lookup``): moto scans every tag of
  the region per resource, which made describing a thousand snapshots take seconds.
* A request counter: ``GET /_bunker/stats`` answers
  ``{"requests": N, "by_action": {"ec2:CreateSnapshot": n, ...}, "by_role": {...}}`` (``by_role``:
  the same per assumed role, ``"<account>:<role name>"``, so a test can see which role made
  which call; ``last_by_role``: when each role's last request came, Unix time) and
  ``POST /_bunker/stats/reset`` zeroes it. Benchmarks use it to report HTTP
  requests per backup, and ``get_object_bytes`` (by bucket) the bytes a ranged restore
  read. Its own requests are not counted.
* Port 0: ``--port 0`` (the default) binds a free 127.0.0.1 port without a
  race and prints ``BUNKER_MOTO_PORT=<port>`` on stdout once it accepts
  connections (also written to ``--port-file`` if given).

Everything else is moto as published; nothing here changes how a real AWS call
is parsed or answered.
"""

import argparse
import collections
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.parse

import moto_backup  # beside this file: AWS Backup jobs and recovery points
import moto_ddb_export  # beside this file: DynamoDB exports in AWS's layout, at ExportTime
import moto_rds_export  # beside this file: RDS snapshot exports that write AWS's layout
import moto_rds_restore  # beside this file: restored DB instances that are real servers
import moto_volumes  # beside this file: attached volumes as loop devices, and IMDSv2
import moto_redshift  # beside this file: Redshift snapshot sharing (authorize, revoke, visibility)
import moto_cfn  # beside this file: CloudFormation's NoValue in lists, S3 buckets' lock, versioning, lifecycle


def patch_docdb() -> None:
    from moto.rds import models, utils

    engines = utils.ClusterEngine.list_cluster_engines

    def list_cluster_engines(*_args):
        return sorted(set(engines()) | {"docdb"})

    utils.ClusterEngine.list_cluster_engines = classmethod(lambda cls: list_cluster_engines())

    version = models.DBCluster.default_engine_version
    port = models.DBCluster.default_port

    models.DBCluster.default_engine_version = staticmethod(
        lambda engine: "5.0.0" if engine == "docdb" else version(engine)
    )
    models.DBCluster.default_port = staticmethod(
        lambda engine: 27017 if engine == "docdb" else port(engine)
    )
    storage = models.DBCluster.default_allocated_storage
    # DocumentDB storage is elastic; report it like Aurora's ("aurora" storage, 1 GiB).
    models.DBCluster.default_allocated_storage = staticmethod(
        lambda engine, storage_type: 1 if engine == "docdb" else storage(engine, storage_type)
    )


def patch_create_image_snapshot_tags() -> None:
    """AWS applies CreateImage TagSpecifications of ResourceType=snapshot to the snapshots the
    image creates; moto 5.2.5 raises NotImplementedError. Tag the AMI's snapshot instead."""
    from moto.ec2.models import amis

    original = amis.AmiBackend.create_image

    def create_image(self, instance_id, name, description, tag_specifications):
        image_specs = [t for t in tag_specifications if t.get("ResourceType") != "snapshot"]
        snapshot_tags = [tag for t in tag_specifications if t.get("ResourceType") == "snapshot" for tag in t.get("Tags", [])]
        ami = original(self, instance_id, name, description, image_specs)
        for tag in snapshot_tags:
            ami.ebs_snapshot.add_tag(tag["Key"], tag["Value"])
        return ami

    amis.AmiBackend.create_image = create_image


def patch_copy_image_tags() -> None:
    """AWS CopyImage accepts TagSpecifications (image, snapshot) and tags the new AMI and its
    snapshots in the call; moto 5.2.5 ignores them. Apply them, as for CreateImage."""
    from moto.ec2.responses.amis import AmisResponse
    from moto.core.responses import ActionResult

    def copy_image(self):
        self.error_on_dryrun()
        image = self.ec2_backend.copy_image(
            self._get_param("SourceImageId"),
            self._get_param("SourceRegion"),
            self._get_param("Name"),
            self._get_param("Description"),
        )
        for spec in self._get_param("TagSpecifications", []):
            tags = {t["Key"]: t["Value"] for t in spec.get("Tags", [])}
            if spec.get("ResourceType") == "image":
                self.ec2_backend.create_tags([image.id], tags)
            elif spec.get("ResourceType") == "snapshot":
                self.ec2_backend.create_tags([image.ebs_snapshot.id], tags)
        return ActionResult({"ImageId": image.id})

    AmisResponse.copy_image = copy_image


def patch_cross_account_sharing() -> None:
    """moto stores snapshot shares but the other account can neither see nor copy them. On
    AWS it can: DescribeSnapshots with RestorableByUserIds/OwnerIds lists the snapshots other
    accounts shared with the caller, and CopySnapshot / CopyDBSnapshot (source by ARN) copy
    them. The plugin adds both for EBS and RDS, checking the share (createVolumePermission,
    the ``restore`` attribute) like AWS; unshared snapshots stay invisible. Unlike AWS, the
    owner's tags remain visible in the listing (bunker does not read them)."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import InvalidSnapshotIdError
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.elastic_block_store import EBSBackend, Snapshot
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore
    from moto.ec2.utils import random_snapshot_id
    from moto.rds import models as rds

    def shared_with(account, region, owners=None):
        out = []
        for owner in list(ec2_backends.keys()):
            if owner == account or (owners and owner not in owners) or region not in ec2_backends[owner]:
                continue
            for snap in list(ec2_backends[owner][region].snapshots.values()):
                if account in snap.create_volume_permission_userids:
                    out.append(snap)
        return out

    original_describe = ElasticBlockStore.describe_snapshots

    def describe_snapshots(self):
        owners = [o for o in self._get_param("OwnerIds", []) if o not in ("self", self.current_account)]
        restorable = self._get_param("RestorableByUserIds", [])
        others = [r for r in restorable if r not in ("self", self.current_account)]
        if others and not owners:
            # The caller's own snapshots these accounts may create volumes from (shared with
            # them), as AWS answers OwnerIds=self with RestorableByUserIds=[account].
            own = self.ec2_backend.describe_snapshots(filters=self._filters_from_querystring())
            given = [s for s in own if set(others) & set(s.create_volume_permission_userids)]
            return ActionResult({"Snapshots": given})
        if restorable or owners:
            return ActionResult({"Snapshots": shared_with(self.current_account, self.region, owners)})
        return original_describe(self)

    ElasticBlockStore.describe_snapshots = describe_snapshots
    original_copy = EBSBackend.copy_snapshot

    def copy_snapshot(self, source_snapshot_id, source_region, description, kms_key_id):
        try:
            return original_copy(self, source_snapshot_id, source_region, description, kms_key_id)
        except InvalidSnapshotIdError:
            found = [s for s in shared_with(self.account_id, source_region) if s.id == source_snapshot_id]
            if not found:
                raise
            src = found[0]
            snapshot = Snapshot(self, random_snapshot_id(), volume=src.volume, description=description,
                                encrypted=src.encrypted, kms_key_id=kms_key_id)
            self.snapshots[snapshot.id] = snapshot
            return snapshot

    EBSBackend.copy_snapshot = copy_snapshot
    original_get = rds.RDSBackend.get_snapshot

    def get_snapshot(self, identifier, resource_type, not_found_exception):
        if identifier.startswith("arn:"):
            parts = identifier.split(":", 6)
            region, owner, name = parts[3], parts[4], parts[6]
            if owner and owner != self.account_id:
                try:
                    snap = rds.rds_backends[owner][region].resource_map[resource_type][name]
                except KeyError:
                    raise not_found_exception(identifier)
                if self.account_id not in snap.attributes.get("restore", []):
                    raise not_found_exception(identifier)
                return snap
        return original_get(self, identifier, resource_type, not_found_exception)

    rds.RDSBackend.get_snapshot = get_snapshot

    # AMIs: launch permission = share. DescribeImages with ExecutableUsers=self lists the
    # images other accounts shared with the caller; CopyImage copies them.
    from moto.ec2.models.amis import AmiBackend
    from moto.ec2.responses.amis import AmisResponse

    def images_shared_with(account, region, owners=None):
        out = []
        for owner in list(ec2_backends.keys()):
            if owner == account or (owners and owner not in owners) or region not in ec2_backends[owner]:
                continue
            for ami in list(ec2_backends[owner][region].amis.values()):
                if {"UserId": account} in ami.launch_permissions:
                    out.append(ami)
        return out

    original_describe_images = AmisResponse.describe_images

    def describe_images(self):
        exec_users = self._get_param("ExecutableUsers", [])
        owners = [o for o in self._get_param("Owners", []) if o not in ("self", self.current_account)]
        if exec_users and owners:
            return ActionResult({"Images": images_shared_with(self.current_account, self.region, owners)})
        return original_describe_images(self)

    AmisResponse.describe_images = describe_images
    original_copy_image = AmiBackend.copy_image

    def copy_image(self, source_image_id, source_region, name=None, description=None):
        own = ec2_backends[self.account_id][source_region].amis
        if source_image_id not in own:
            found = [a for a in images_shared_with(self.account_id, source_region) if a.id == source_image_id]
            if found:
                own[source_image_id] = found[0]  # visible to the original for the copy only
                try:
                    return original_copy_image(self, source_image_id, source_region, name, description)
                finally:
                    del own[source_image_id]
        return original_copy_image(self, source_image_id, source_region, name, description)

    AmiBackend.copy_image = copy_image


def patch_ebs_direct() -> None:
    import base64
    import hashlib

    from moto.core.exceptions import JsonRESTError
    from moto.ebs.models import EBSBackend, EBSSnapshot
    from moto.ebs.responses import EBSResponse

    block = 524288

    class Invalid(JsonRESTError):
        code = 400

        def __init__(self, message, reason):
            super().__init__("ValidationException", message)
            self.description = json.dumps({"__type": "ValidationException", "Message": message, "Reason": reason})

    class NotFound(JsonRESTError):
        code = 404

        def __init__(self, message):
            super().__init__("ResourceNotFoundException", message)
            self.description = json.dumps(
                {"__type": "ResourceNotFoundException", "Message": message, "Reason": "SNAPSHOT_NOT_FOUND"})

    original_init = EBSSnapshot.__init__

    def init(self, account_id, snapshot):
        original_init(self, account_id, snapshot)
        self.block_size = block

    EBSSnapshot.__init__ = init

    def lookup(self, snapshot_id):
        snap = self.snapshots.get(snapshot_id)
        if snap is not None:
            return snap
        ec2 = self.ec2_backend.snapshots.get(snapshot_id)
        if ec2 is None:
            raise NotFound(f"The snapshot '{snapshot_id}' does not exist.")
        # Made through EC2 (CreateSnapshot, CopySnapshot): readable, with no written blocks.
        snap = EBSSnapshot(account_id=self.account_id, snapshot=ec2)
        snap.status = "completed"
        self.snapshots[snapshot_id] = snap
        return snap

    EBSBackend.lookup = lookup

    def page(self, items):
        max_results = int(self._get_param("MaxResults") or 10000)
        start = int(self._get_param("NextToken") or self._get_param("StartingBlockIndex") or 0)
        items = [i for i in items if i[0] >= start]
        more = len(items) > max_results
        items = items[:max_results]
        return items, (str(items[-1][0] + 1) if more else None)

    original_start = EBSResponse.start_snapshot

    def start_snapshot(self):
        parent_id = self._get_param("ParentSnapshotId")
        parent = self.ebs_backend.lookup(parent_id) if parent_id else None
        result = original_start(self)
        snap = self.ebs_backend.snapshots[result.result["SnapshotId"]]
        ec2 = self.ebs_backend.ec2_backend.snapshots.get(snap.snapshot_id)
        if ec2 is not None:
            ec2.status = "pending"
        if parent is not None:
            snap.blocks = dict(parent.blocks)
            result.result["ParentSnapshotId"] = parent_id
        result.result["BlockSize"] = block
        return result

    def complete_snapshot(self):
        snapshot_id = self._get_param("SnapshotId")
        snap = self.ebs_backend.lookup(snapshot_id)
        if snap.status != "pending":
            raise Invalid(f"The snapshot '{snapshot_id}' is not pending.", "SNAPSHOT_NOT_PENDING")
        snap.status = "completed"
        ec2 = self.ebs_backend.ec2_backend.snapshots.get(snapshot_id)
        if ec2 is not None:
            ec2.status = "completed"
        from moto.core.responses import ActionResult
        return ActionResult({"Status": "completed"})

    def put_snapshot_block(self):
        snapshot_id = self._get_param("SnapshotId")
        snap = self.ebs_backend.lookup(snapshot_id)
        if snap.status != "pending":
            raise Invalid(f"The snapshot '{snapshot_id}' is not pending.", "SNAPSHOT_NOT_PENDING")
        data = self._get_param("BlockData") or b""
        if isinstance(data, str):
            data = data.encode("latin-1")
        index = int(self._get_param("BlockIndex"))
        if len(data) != block:
            raise Invalid(f"Blocks are {block} bytes, got {len(data)}.", "INVALID_BLOCK")
        if index < 0 or index >= snap.volume_size * (1 << 30) // block:
            raise Invalid(f"Block index {index} is outside the volume.", "INVALID_BLOCK")
        checksum = self._get_param("Checksum")
        if checksum != base64.b64encode(hashlib.sha256(data).digest()).decode():
            raise Invalid("The checksum does not match the block data.", "INVALID_CHECKSUM")
        snap.put_block(index, data, checksum, "SHA256", len(data))
        from moto.core.responses import ActionResult
        return ActionResult({"Checksum": checksum, "ChecksumAlgorithm": "SHA256"})

    def get_snapshot_block(self):
        snapshot_id = self._get_param("SnapshotId")
        snap = self.ebs_backend.lookup(snapshot_id)
        index = int(self._get_param("BlockIndex"))
        found = snap.blocks.get(index)
        if found is None or found.block_token != self._get_param("BlockToken"):
            raise Invalid(f"Block {index} has no such token.", "INVALID_BLOCK_TOKEN")
        data = FAULTS.maybe_corrupt(found.block_data)
        delay = FAULTS.config.get("ebs_block_delay_ms", 0)
        if delay:
            import time
            time.sleep(delay / 1000)
        from moto.core.responses import ActionResult
        return ActionResult({"DataLength": len(data), "BlockData": data, "Checksum": found.checksum,
                             "ChecksumAlgorithm": "SHA256"})

    def list_snapshot_blocks(self):
        snap = self.ebs_backend.lookup(self._get_param("SnapshotId"))
        items, token = page(self, sorted((i, b.block_token) for i, b in snap.blocks.items()))
        from moto.core.responses import ActionResult
        result = {"Blocks": [{"BlockIndex": i, "BlockToken": t} for i, t in items],
                  "VolumeSize": snap.volume_size, "BlockSize": block}
        if token:
            result["NextToken"] = token
        return ActionResult(result)

    def list_changed_blocks(self):
        first = self.ebs_backend.lookup(self._get_param("FirstSnapshotId"))
        second = self.ebs_backend.lookup(self._get_param("SecondSnapshotId"))
        changed = []
        for i in sorted(set(first.blocks) | set(second.blocks)):
            a, b = first.blocks.get(i), second.blocks.get(i)
            if a is None or b is None or a.block_data != b.block_data:
                changed.append((i, a.block_token if a else None, b.block_token if b else None))
        items, token = page(self, changed)
        blocks = []
        for i, x, y in items:
            entry = {"BlockIndex": i}
            if x:
                entry["FirstBlockToken"] = x
            if y:
                entry["SecondBlockToken"] = y
            blocks.append(entry)
        from moto.core.responses import ActionResult
        result = {"ChangedBlocks": blocks, "VolumeSize": second.volume_size, "BlockSize": block}
        if token:
            result["NextToken"] = token
        return ActionResult(result)

    EBSResponse.start_snapshot = start_snapshot
    EBSResponse.complete_snapshot = complete_snapshot
    EBSResponse.put_snapshot_block = put_snapshot_block
    EBSResponse.get_snapshot_block = get_snapshot_block
    EBSResponse.list_snapshot_blocks = list_snapshot_blocks
    EBSResponse.list_changed_blocks = list_changed_blocks


def patch_ec2_tag_lookup() -> None:
    """An EC2 resource's own tags by direct lookup. moto 5.2.5 finds them by scanning every tag
    of the region with a regular expression per resource, so describing N snapshots costs N
    times all the region's tags: at 1,000 volumes one DescribeSnapshots took seconds, and the
    fan-out benchmark measured moto. The same answer, in the same order."""
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self):
        if not self.id:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(self.id), "")
        own = self.ec2_backend.tags.get(self.id, {})
        return [{"resource_id": self.id, "key": k, "value": v, "resource_type": kind} for k, v in own.items()]

    TaggedEC2Resource.get_tags = get_tags


def patch_s3_versioning() -> None:
    """GetBucketVersioning answers with S3's root element, VersioningConfiguration (moto 5.2.5
    serializes it as GetBucketVersioningResponse, which the Rust SDK rejects)."""
    from moto.s3.responses import S3Response

    def get_bucket_versioning(self):
        status = self.backend.get_bucket_versioning(self.bucket_name)
        inner = f"<Status>{status}</Status>" if status else ""
        body = ('<?xml version="1.0" encoding="UTF-8"?><VersioningConfiguration '
                f'xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{inner}</VersioningConfiguration>')
        return 200, {"Content-Type": "application/xml"}, body

    S3Response.get_bucket_versioning = get_bucket_versioning


def patch_s3_list_parts() -> None:
    from moto.s3.responses import S3Response

    original = S3Response.list_parts

    def list_parts(self):
        status, headers, body = original(self)
        if isinstance(body, bytes):
            body = body.replace(b"ListPartsResponse", b"ListPartsResult")
        elif isinstance(body, str):
            body = body.replace("ListPartsResponse", "ListPartsResult")
        return status, headers, body

    S3Response.list_parts = list_parts


class Faults:
    """Test-only fault injection, configured over HTTP (``POST /_bunker/faults`` with JSON):

    * ``throttle``: ``{"ec2:CopySnapshot": 0.2, "rds:*": 0.2, ...}``: that fraction of those
      requests is answered with the service's throttling error (EC2 ``RequestLimitExceeded``
      HTTP 503, RDS ``Throttling`` HTTP 400), as AWS does under load;
    * ``quota``: the same shape, answered with the copy-quota error (EC2
      ``ResourceLimitExceeded``, RDS ``SnapshotQuotaExceeded``);
    * ``copy_pending_seconds``: EBS snapshot copies stay ``pending`` that long (AWS copies
      take minutes), so callers must wait for them; ``GET /_bunker/stats`` then reports the
      most copies ever pending at once per account and region (``max_pending_copies``);
    * ``ebs_corrupt``: that many GetSnapshotBlock answers get one byte of their data flipped
      (the checksum header stays right), as a bad network path would;
    * ``ebs_block_delay_ms``: every GetSnapshotBlock waits that long first (a network round
      trip to a far service), so benchmarks show what serial reads cost;
    * ``s3_fail_parts``: that many UploadPart requests are answered ``500 InternalError``;
    * ``s3_part_delay_ms``: every UploadPart waits that long first (a slow link), so a test
      can kill an export mid-upload. Stats count UploadPart bytes (``upload_part_bytes``) and
      the bytes of GetObject answers by bucket (``get_object_bytes``: what a ranged restore
      read).

    With no configuration nothing is injected."""

    def __init__(self):
        import random

        self.lock = threading.Lock()
        self.random = random.Random(20261201)
        self.config = {}
        self.pending = collections.Counter()
        self.max_pending = {}
        self.injected = collections.Counter()
        self.part_bytes = 0
        self.get_bytes = collections.Counter()

    def take(self, name):
        """Consumes one of a counted fault (``ebs_corrupt``, ``s3_fail_parts``)."""
        with self.lock:
            left = self.config.get(name, 0)
            if left > 0:
                self.config[name] = left - 1
                self.injected[name] += 1
                return True
        return False

    def maybe_corrupt(self, data):
        if not self.take("ebs_corrupt"):
            return data
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0xFF
        return bytes(flipped)

    def set(self, config):
        with self.lock:
            self.config = config
            self.injected.clear()
            self.max_pending = {}

    def _rate(self, table, action):
        rates = self.config.get(table, {})
        service = action.split(":")[0]
        return rates.get(action, rates.get(f"{service}:*", 0.0))

    def pick(self, action):
        """The fault to inject for this request, if any: 'throttle' or 'quota'."""
        with self.lock:
            for kind in ("quota", "throttle"):
                rate = self._rate(kind, action)
                if rate and self.random.random() < rate:
                    self.injected[f"{kind}:{action}"] += 1
                    return kind
        return None

    def copy_started(self, key, snapshot):
        seconds = self.config.get("copy_pending_seconds", 0)
        if not seconds:
            return
        snapshot.status = "pending"
        with self.lock:
            self.pending[key] += 1
            self.max_pending[key] = max(self.max_pending.get(key, 0), self.pending[key])

        def done():
            snapshot.status = "completed"
            with self.lock:
                self.pending[key] -= 1

        t = threading.Timer(seconds, done)
        t.daemon = True
        t.start()


FAULTS = Faults()

# Access keys whose every request is answered 503 ServiceUnavailable (an AWS outage seen by
# one test's account only): ``POST /_bunker/outage`` with ``{"access_key": ..., "down": bool}``.
OUTAGES = set()
OUTAGES_LOCK = threading.Lock()


def outage_response(environ, start_response):
    """A 503 in the request's protocol: JSON for x-amz-target services, XML otherwise."""
    if environ.get("HTTP_X_AMZ_TARGET"):
        data = json.dumps({"__type": "ServiceUnavailable", "message": "injected outage"}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-query-error", "ServiceUnavailable;Receiver")]
    else:
        data = (b"<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code>"
                b"<Message>injected outage</Message></Error><RequestId>bunker-outage</RequestId></ErrorResponse>")
        headers = [("Content-Type", "text/xml")]
    start_response("503 Service Unavailable", headers + [("Content-Length", str(len(data)))])
    return [data]


def patch_copy_snapshot_pending() -> None:
    from moto.ec2.models.elastic_block_store import EBSBackend

    original = EBSBackend.copy_snapshot

    def copy_snapshot(self, *args, **kwargs):
        snapshot = original(self, *args, **kwargs)
        FAULTS.copy_started(f"{self.account_id}:{self.region_name}", snapshot)
        return snapshot

    EBSBackend.copy_snapshot = copy_snapshot


def fault_response(kind, action, start_response):
    service = action.split(":")[0]
    if service == "ebs":
        body = json.dumps({"Message": "injected by the bunker emulator plugin", "Reason": "ACCOUNT_THROTTLED"})
        data = body.encode()
        start_response("400 Bad Request", [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                                           ("x-amzn-ErrorType", "RequestThrottledException")])
        return [data]
    if service == "ec2":
        code, status = ("RequestLimitExceeded", "503 Service Unavailable") if kind == "throttle" else (
            "ResourceLimitExceeded", "400 Bad Request")
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
                f"<Message>injected by the bunker emulator plugin</Message></Error></Errors>"
                f"<RequestID>bunker-fault</RequestID></Response>")
    else:
        code = "Throttling" if kind == "throttle" else "SnapshotQuotaExceeded"
        status = "400 Bad Request"
        body = (f'<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>'
                f"<Message>injected by the bunker emulator plugin</Message></Error>"
                f"<RequestId>bunker-fault</RequestId></ErrorResponse>")
    data = body.encode()
    start_response(status, [("Content-Type", "text/xml"), ("Content-Length", str(len(data)))])
    return [data]


def expected_owner_refusal(environ, start_response):
    """S3's ExpectedBucketOwner, which moto ignores: a request naming an owner other than the
    bucket's account is refused with 403 AccessDenied, as S3 does (path-style requests)."""
    from moto.s3.models import s3_backends

    bucket = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]
    owner = s3_backends.bucket_accounts.get(bucket)
    expected = environ["HTTP_X_AMZ_EXPECTED_BUCKET_OWNER"]
    if owner is None or owner[1] == expected:
        return None
    data = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message><RequestId>bunker-expected-owner</RequestId></Error>")
    if environ.get("REQUEST_METHOD") == "HEAD":  # HEAD answers carry no body
        data = b""
    start_response("403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(data)))])
    return [data]


def presigned_url_problem(url, source_region, source_arn):
    """What is wrong with a CopyDBClusterSnapshot PreSignedUrl for a copy out of
    ``source_region`` (None when it is a well-formed, unexpired SigV4 query-string request of
    that call, for that snapshot, signed for rds in that region). The signature itself is not
    recomputed: the emulator accepts any credentials."""
    import datetime

    if not url:
        return "PreSignedUrl is required to copy an encrypted cluster snapshot from another region"
    parsed = urllib.parse.urlsplit(url)
    q = {k: v[0] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
    credential = re.fullmatch(r"[^/]+/(\d{8})/([^/]+)/([^/]+)/aws4_request", q.get("X-Amz-Credential", ""))
    checks = [
        (parsed.scheme == "https" and parsed.netloc.startswith(f"rds.{source_region}."), f"not a request to rds in {source_region}: {parsed.netloc}"),
        (q.get("Action") == "CopyDBClusterSnapshot", "not a CopyDBClusterSnapshot request"),
        (q.get("SourceDBClusterSnapshotIdentifier") == source_arn, "signed for another snapshot"),
        (q.get("X-Amz-Algorithm") == "AWS4-HMAC-SHA256", "not signed with SigV4"),
        (credential is not None and credential.group(2) == source_region and credential.group(3) == "rds",
         f"not signed for rds in {source_region}"),
        (re.fullmatch(r"[0-9a-f]{64}", q.get("X-Amz-Signature", "")) is not None, "no signature"),
        ("host" in q.get("X-Amz-SignedHeaders", "").split(";"), "the host is not signed"),
    ]
    for ok, why in checks:
        if not ok:
            return f"PreSignedUrl: {why}"
    try:
        signed = datetime.datetime.strptime(q["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        expires = datetime.timedelta(seconds=int(q["X-Amz-Expires"]))
    except (KeyError, ValueError):
        return "PreSignedUrl: no valid X-Amz-Date and X-Amz-Expires"
    if datetime.datetime.now(datetime.timezone.utc) > signed + expires:
        return "PreSignedUrl: expired"
    return None


def presigned_url_refusal(environ, start_response, region_match):
    """AWS refuses a cross-region copy of an encrypted DocumentDB cluster snapshot without a
    valid PreSignedUrl for the source region (moto 5.2.5 ignores the parameter)."""
    import io
    from moto.rds.models import rds_backends

    body = environ["wsgi.input"].read()
    environ["wsgi.input"] = io.BytesIO(body)
    params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
    source = params.get("SourceDBClusterSnapshotIdentifier", "")
    parts = source.split(":")
    if not source.startswith("arn:") or len(parts) < 7 or region_match is None:
        return None
    source_region, source_account, snapshot_id = parts[3], parts[4], parts[-1]
    if source_region == region_match.group(1):
        return None
    snapshot = rds_backends[source_account][source_region].cluster_snapshots.get(snapshot_id.lower())
    if snapshot is None or snapshot.engine != "docdb" or not snapshot.encrypted:
        return None
    problem = presigned_url_problem(params.get("PreSignedUrl"), source_region, source)
    if problem is None:
        return None
    data = ('<ErrorResponse><Error><Type>Sender</Type><Code>InvalidParameterValue</Code>'
            f"<Message>{problem}</Message></Error><RequestId>bunker-presigned-url</RequestId></ErrorResponse>").encode()
    start_response("400 Bad Request", [("Content-Type", "text/xml"), ("Content-Length", str(len(data)))])
    return [data]


def rest_action(service, environ):
    """Operation names of the REST services bunker's tests watch (EBS direct, S3 parts)."""
    method = environ.get("REQUEST_METHOD")
    path = environ.get("PATH_INFO", "")
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if service == "ebs":
        if re.fullmatch(r"/snapshots/[^/]+/blocks/\d+", path):
            return "GetSnapshotBlock" if method == "GET" else "PutSnapshotBlock"
        if path.endswith("/changedblocks"):
            return "ListChangedBlocks"
        if path.endswith("/blocks"):
            return "ListSnapshotBlocks"
        if path.startswith("/snapshots/completion/"):
            return "CompleteSnapshot"
        if path == "/snapshots":
            return "StartSnapshot"
    if service == "backup":
        if path.startswith("/backup-jobs"):
            return {"PUT": "StartBackupJob", "GET": "DescribeBackupJob" if path.count("/") > 1 and path.strip("/") != "backup-jobs" else "ListBackupJobs"}.get(method)
        if "/recovery-points/" in path:
            if path.endswith("/recovery-points/"):
                return "ListRecoveryPointsByBackupVault" if path.startswith("/backup-vaults/") else "ListRecoveryPointsByResource"
            return {"GET": "DescribeRecoveryPoint", "DELETE": "DeleteRecoveryPoint"}.get(method)
    if service == "s3":
        if "uploadId" in query and "partNumber" in query and method == "PUT":
            return "UploadPart"
        if "uploadId" in query:
            return {"GET": "ListParts", "POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload"}.get(method)
        if "uploads" in query:
            return "CreateMultipartUpload" if method == "POST" else "ListMultipartUploads"
        if path.strip("/").count("/") == 0:  # the bucket itself
            for sub, name in (("versioning", "GetBucketVersioning"), ("encryption", "GetBucketEncryption"),
                              ("object-lock", "GetObjectLockConfiguration"), ("lifecycle", "GetBucketLifecycleConfiguration"),
                              ("location", "GetBucketLocation"), ("policy", "GetBucketPolicy")):
                if sub in query and method == "GET":
                    return name
            if "delete" in query and method == "POST":
                return "DeleteObjects"
            return {"GET": "ListObjects", "HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}.get(method)
        return {"GET": "GetObject", "PUT": "PutObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method)
    return None


class Counter:
    """Counts requests by '<service>:<Action>' (service from the SigV4 scope)."""

    _scope = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/")
    _key = re.compile(r"Credential=([^/]+)/")

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.by_action = collections.Counter()
        # "<account>:<role name>" -> Counter of actions made with that role's credentials.
        self.by_role = collections.defaultdict(collections.Counter)
        self.roles = {}  # access key -> "<account>:<role name>" (None: not an assumed role)
        self.last_by_role = {}  # "<account>:<role name>" -> when its last request came (Unix time)

    def role_of(self, key):
        """The assumed role an access key belongs to, as "<account>:<role name>"."""
        if key in self.roles:
            return self.roles[key]
        from moto.iam.models import get_account_id_from
        from moto.sts.models import sts_backends

        account = get_account_id_from(key)
        role = None
        try:
            found = sts_backends[account]["aws"].get_assumed_role_from_access_key(key)
            role = f"{account}:{found.role_arn.split('/')[-1]}" if found else None
        except Exception:
            role = None
        if role is not None:
            self.roles[key] = role
        return role

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_bunker/stats"):
            return self.stats(environ, start_response)
        if path.startswith("/_bunker/faults"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            FAULTS.set(json.loads(environ["wsgi.input"].read(length) or b"{}"))
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        if path.startswith("/_bunker/backup"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            moto_backup.control(json.loads(environ["wsgi.input"].read(length) or b"{}"))
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        if path.startswith("/_bunker/rds-servers"):
            if environ.get("REQUEST_METHOD") == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                moto_rds_restore.register(json.loads(environ["wsgi.input"].read(length) or b"{}"))
                body = b""
            else:
                account = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("account", [""])[0]
                body = json.dumps(moto_rds_restore.report(account)).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path.startswith("/_bunker/devices") or path == "/_bunker/imds":
            return moto_volumes.control(environ, start_response, path)
        if path.startswith("/_bunker/imds/") or path.startswith("/latest/"):
            return moto_volumes.imds(environ, start_response, path)
        if path.startswith("/_bunker/outage"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            ask = json.loads(environ["wsgi.input"].read(length) or b"{}")
            with OUTAGES_LOCK:
                (OUTAGES.add if ask.get("down") else OUTAGES.discard)(ask["access_key"])
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        key = self._key.search(environ.get("HTTP_AUTHORIZATION", ""))
        if key:
            with OUTAGES_LOCK:
                down = key.group(1) in OUTAGES
            if down:
                return outage_response(environ, start_response)
        service = "?"
        match = self._scope.search(environ.get("HTTP_AUTHORIZATION", ""))
        if match:
            service = match.group(1)
        action = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("Action", [None])[0]
        if action is None:
            action = environ.get("HTTP_X_AMZ_TARGET", "").rsplit(".", 1)[-1] or None
        if action is None and environ.get("REQUEST_METHOD") == "POST":
            # Query-protocol services (ec2, rds, sns, sts, redshift) send Action in the body.
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            body = environ["wsgi.input"].read(length) if length else b""
            import io

            environ["wsgi.input"] = io.BytesIO(body)
            action = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("Action", [None])[0]
        if action is None:
            action = rest_action(service, environ)
        key = f"{service}:{action or '?'}"
        signer = self._key.search(environ.get("HTTP_AUTHORIZATION", ""))
        role = self.role_of(signer.group(1)) if signer else None
        with self.lock:
            self.by_action[key] += 1
            if role is not None:
                self.by_role[role][key] += 1
                self.last_by_role[role] = time.time()
        if key == "rds:CopyDBClusterSnapshot":
            refused = presigned_url_refusal(environ, start_response, self._region.search(environ.get("HTTP_AUTHORIZATION", "")))
            if refused is not None:
                return refused
        if service in ("ec2", "rds", "ebs"):
            fault = FAULTS.pick(key)
            if fault:
                return fault_response(fault, key, start_response)
        if service == "s3" and environ.get("HTTP_X_AMZ_EXPECTED_BUCKET_OWNER"):
            refused = expected_owner_refusal(environ, start_response)
            if refused is not None:
                return refused
        if key == "s3:UploadPart":
            return self.upload_part(environ, start_response)
        if key == "s3:GetObject":
            bucket = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]
            return self.counted(bucket, self.app(environ, start_response))
        if service == "backup":
            answered = self.backup(environ, start_response)
            if answered is not None:
                return answered
        return self.app(environ, start_response)

    _region = re.compile(r"Credential=[^/]+/[^/]+/([^/]+)/")

    def backup(self, environ, start_response):
        """The AWS Backup routes moto lacks (``moto_backup``), for the signing account."""
        from moto.iam.models import get_account_id_from

        auth = environ.get("HTTP_AUTHORIZATION", "")
        key, region = self._key.search(auth), self._region.search(auth)
        if not key or not region:
            return None
        return moto_backup.handle(environ, start_response, get_account_id_from(key.group(1)), region.group(1))

    def upload_part(self, environ, start_response):
        import hashlib
        import io
        import base64
        import time

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
        environ["wsgi.input"] = io.BytesIO(body)
        delay = FAULTS.config.get("s3_part_delay_ms", 0)
        if delay:
            time.sleep(delay / 1000)

        def error(status, code, message):
            data = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                    f"<Message>{message}</Message><RequestId>bunker-fault</RequestId></Error>").encode()
            start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(data)))])
            return [data]

        if FAULTS.take("s3_fail_parts"):
            return error("500 Internal Server Error", "InternalError", "injected by the bunker emulator plugin")
        chunked = "aws-chunked" in environ.get("HTTP_CONTENT_ENCODING", "")
        sha = environ.get("HTTP_X_AMZ_CHECKSUM_SHA256")
        if sha and not chunked and base64.b64encode(hashlib.sha256(body).digest()).decode() != sha:
            return error("400 Bad Request", "BadDigest", "The SHA256 you specified did not match the calculated checksum.")
        crc = environ.get("HTTP_X_AMZ_CHECKSUM_CRC32C")
        if crc and not chunked:
            import crc32c

            if base64.b64encode(crc32c.crc32c(body).to_bytes(4, "big")).decode() != crc:
                return error("400 Bad Request", "BadDigest", "The CRC32C you specified did not match the calculated checksum.")
        with FAULTS.lock:
            FAULTS.part_bytes += len(body)
        return self.app(environ, start_response)

    def counted(self, bucket, body):
        """Adds the bytes of a GetObject answer to ``get_object_bytes[bucket]`` (path-style
        requests, as bunker and the tests make against the emulator)."""
        try:
            for piece in body:
                with FAULTS.lock:
                    FAULTS.get_bytes[bucket] += len(piece)
                yield piece
        finally:
            close = getattr(body, "close", None)
            if close:
                close()

    def stats(self, environ, start_response):
        with self.lock:
            if environ.get("REQUEST_METHOD") == "POST":
                self.by_action.clear()
                self.by_role.clear()
                self.last_by_role.clear()
                with FAULTS.lock:
                    FAULTS.part_bytes = 0
                    FAULTS.get_bytes.clear()
            with FAULTS.lock:
                faults = {"max_pending_copies": dict(FAULTS.max_pending), "injected": dict(FAULTS.injected),
                          "upload_part_bytes": FAULTS.part_bytes, "get_object_bytes": dict(FAULTS.get_bytes)}
            body = json.dumps(
                {"requests": sum(self.by_action.values()), "by_action": dict(self.by_action),
                 "by_role": {r: dict(c) for r, c in self.by_role.items()}, "last_by_role": dict(self.last_by_role),
                 **faults}
            ).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file")
    args = parser.parse_args()

    # moto otherwise loads ~1,000 public AMIs (and their snapshots) into every account and region
    # it touches, which slows the first EC2 call of each test account by seconds.
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    patch_docdb()
    patch_create_image_snapshot_tags()
    patch_copy_image_tags()
    patch_cross_account_sharing()
    patch_copy_snapshot_pending()
    patch_ebs_direct()
    patch_s3_list_parts()
    patch_s3_versioning()
    patch_ec2_tag_lookup()
    moto_backup.patch_ec2_delete_snapshot()
    moto_rds_export.patch()
    moto_rds_restore.patch()
    moto_ddb_export.patch()
    moto_volumes.patch()
    moto_redshift.patch()
    moto_cfn.patch()

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = Counter(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    port = server.server_address[1]
    os.environ["MOTO_PORT"] = str(port)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"BUNKER_MOTO_PORT={port}", flush=True)

    def stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # The parent (a test binary, a demo script) may die without a signal: stop when stdin closes.
    if not sys.stdin.isatty():
        def watch_stdin():
            try:
                while sys.stdin.buffer.read(1):
                    pass
            except Exception:
                pass
            stop()

        threading.Thread(target=watch_stdin, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
