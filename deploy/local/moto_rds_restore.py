"""Temporary RDS instances that are real database servers, for bunker's dump tests.

moto 5.2.5 restores a DB instance from a snapshot as a record with a made-up endpoint
(``<id>.aaaaaaaaaa.<region>.rds.amazonaws.com``) and nothing listening. With this module:

* A test starts a real PostgreSQL or MariaDB server (``tests/common/db.rs``), seeds it as
  "the snapshot's data", and registers it for the snapshot's source instance:
  ``POST /_bunker/rds-servers`` with ``{"account": …, "source": "<db instance id>", "host":
  "127.0.0.1", "port": N, "admin_user": …, "admin_password": …}``.
* ``RestoreDBInstanceFromDBSnapshot`` of a snapshot of that instance makes an instance whose
  ``Endpoint`` is that server. It is ``creating`` for ``restore_seconds`` (a control; default
  0.5 s), then ``available``.
* ``ModifyDBInstance`` with ``MasterUserPassword`` changes the master user's password on the
  server for real (``ALTER USER``, sent on the client's stdin, never in its argv), as AWS
  applies it; the instance is ``resetting-master-credentials`` meanwhile.
* AWS Backup's snapshots (``awsbackup:job-…``) restore by their identifier, as on AWS (moto's
  own restore finds only manual and automated snapshots).
* ``DeleteDBInstance`` is recorded: ``GET /_bunker/rds-servers`` answers ``{"restored":
  [...], "deleted": [...], "clusters_restored": [...], "clusters_deleted": [...]}`` per
  account, so a test can check every temporary instance and cluster went.
* Aurora: ``RestoreDBClusterFromSnapshot`` of a snapshot of a registered source *cluster*
  makes a cluster whose writer ``Endpoint`` is that server (``creating`` for
  ``restore_seconds``); ``CreateDBInstance`` in it makes an instance on the same server;
  ``ModifyDBClusterMasterUserPassword`` via ``ModifyDBCluster`` changes the password for real
  (the cluster is ``resetting-master-credentials`` meanwhile); ``DeleteDBCluster`` is
  recorded. moto 5.2.5 already refuses to delete a cluster that still has instances.
"""

import subprocess
import threading
import time

import moto_backup

LOCK = threading.RLock()
SERVERS = {}  # (account, source instance id) -> server dict
RESTORED = {}  # (account, instance id) -> {"server": dict, "ready_at": float}
CLUSTERS = {}  # (account, cluster id) -> {"server": dict, "ready_at": float, "pending": status}
HISTORY = {}  # account -> {"restored": [...], "deleted": [...], "clusters_…": [...]}
KINDS = ("restored", "deleted", "clusters_restored", "clusters_deleted")


def register(body):
    """``POST /_bunker/rds-servers``: the server a source instance's snapshots restore to."""
    with LOCK:
        SERVERS[(str(body["account"]), body["source"])] = body


def report(account):
    with LOCK:
        return HISTORY.get(account, {k: [] for k in KINDS})


def _history(account):
    return HISTORY.setdefault(account, {k: [] for k in KINDS})


def _alter_password(server, engine, user, password):
    """Sets ``user``'s password on the real server, the SQL on stdin."""
    quoted = password.replace("'", "''")
    if engine.startswith("postgres") or engine.startswith("aurora-postgresql"):
        cmd = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", server["host"], "-p", str(server["port"]),
               "-U", server["admin_user"], "-d", "postgres", "-f", "-"]
        sql = f'ALTER USER "{user}" PASSWORD \'{quoted}\';'
        env = {"PGPASSWORD": server["admin_password"], "PATH": "/usr/bin:/bin"}
    else:
        cmd = ["mariadb", "--no-defaults", "-h", server["host"], "-P", str(server["port"]), "-u", server["admin_user"]]
        sql = f"ALTER USER '{user}'@'%' IDENTIFIED BY '{quoted}';"
        env = {"MYSQL_PWD": server["admin_password"], "PATH": "/usr/bin:/bin"}
    done = subprocess.run(cmd, input=sql.encode(), env=env, capture_output=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"could not set the master password: {done.stderr.decode(errors='replace')}")


def patch():
    """Wraps moto's restore, describe, modify and delete of DB instances."""
    from moto.rds.models import DBInstance, RDSBackend

    original_restore = RDSBackend.restore_db_instance_from_db_snapshot
    original_describe = RDSBackend.describe_db_instances
    original_modify = RDSBackend.modify_db_instance
    original_delete = RDSBackend.delete_db_instance
    original_address = DBInstance.address

    def restore(self, from_snapshot_id, overrides):
        name = from_snapshot_id.split(":snapshot:")[-1] if from_snapshot_id.startswith("arn:") else from_snapshot_id
        # AWS restores an AWS Backup snapshot (awsbackup:job-…) by its identifier; moto's
        # restore looks only at manual and automated snapshots, so it is shown the type.
        kind = "awsbackup" if name.startswith("awsbackup:") else None
        snapshot = self.describe_db_snapshots(db_instance_identifier=None, db_snapshot_identifier=name,
                                              snapshot_type=kind)[0]
        with LOCK:
            if kind:
                describe = self.describe_db_snapshots
                self.describe_db_snapshots = lambda db_instance_identifier=None, db_snapshot_identifier=None, \
                    snapshot_type=None, filters=None: describe(db_instance_identifier, db_snapshot_identifier,
                                                               snapshot_type or kind, filters)
            try:
                instance = original_restore(self, from_snapshot_id, overrides)
            finally:
                if kind:
                    del self.describe_db_snapshots
        account = self.account_id
        with LOCK:
            server = SERVERS.get((account, snapshot.database.db_instance_identifier))
            _history(account)["restored"].append(instance.db_instance_identifier)
            if server is not None:
                seconds = float(moto_backup.setting(account, "restore_seconds"))
                RESTORED[(account, instance.db_instance_identifier)] = {"server": server,
                                                                        "ready_at": time.time() + seconds}
                instance.port = int(server["port"])
                instance.status = "creating"
        return instance

    def describe(self, *args, **kwargs):
        found = original_describe(self, *args, **kwargs)
        now = time.time()
        with LOCK:
            for instance in found:
                entry = RESTORED.get((self.account_id, instance.db_instance_identifier))
                if entry and instance.status in ("creating", "resetting-master-credentials") and now >= entry["ready_at"]:
                    instance.status = "available"
        return found

    def modify(self, db_instance_identifier, db_kwargs):
        with LOCK:
            entry = RESTORED.get((self.account_id, db_instance_identifier))
        password = db_kwargs.get("master_user_password")
        if entry and password:
            instance = self.describe_db_instances(db_instance_identifier)[0]
            _alter_password(entry["server"], instance.engine, instance.master_username, password)
            entry["ready_at"] = time.time() + float(moto_backup.setting(self.account_id, "restore_seconds")) / 2
        instance = original_modify(self, db_instance_identifier, db_kwargs)
        if entry and password:
            instance.status = "resetting-master-credentials"
        return instance

    def delete(self, db_instance_identifier, *args, **kwargs):
        instance = original_delete(self, db_instance_identifier, *args, **kwargs)
        with LOCK:
            RESTORED.pop((self.account_id, db_instance_identifier), None)
            _history(self.account_id)["deleted"].append(db_instance_identifier)
        return instance

    def address(self):
        with LOCK:
            entry = RESTORED.get((self.backend.account_id, self.db_instance_identifier))
        return entry["server"]["host"] if entry else original_address.fget(self)

    RDSBackend.restore_db_instance_from_db_snapshot = restore
    RDSBackend.describe_db_instances = describe
    RDSBackend.modify_db_instance = modify
    RDSBackend.delete_db_instance = delete
    DBInstance.address = property(address)
    patch_clusters()


def _ready(entry):
    return time.time() >= entry["ready_at"]


def patch_clusters():
    """Wraps moto's restore, status, endpoint, modify and delete of DB clusters, and the
    creation of instances in them."""
    from moto.rds.models import DBCluster, RDSBackend

    original_restore = RDSBackend.restore_db_cluster_from_snapshot
    original_create_instance = RDSBackend.create_db_instance
    original_modify = RDSBackend.modify_db_cluster
    original_delete = RDSBackend.delete_db_cluster
    original_status = DBCluster.status
    original_endpoint = DBCluster.endpoint

    def restore(self, from_snapshot_id, overrides):
        name = from_snapshot_id.split(":cluster-snapshot:")[-1]
        snapshot = self.describe_db_cluster_snapshots(db_cluster_identifier=None, db_snapshot_identifier=name)[0]
        cluster = original_restore(self, name, overrides)
        account = self.account_id
        with LOCK:
            server = SERVERS.get((account, snapshot.cluster.db_cluster_identifier))
            _history(account)["clusters_restored"].append(cluster.db_cluster_identifier)
            if server is not None:
                seconds = float(moto_backup.setting(account, "restore_seconds"))
                CLUSTERS[(account, cluster.db_cluster_identifier)] = {
                    "server": server, "ready_at": time.time() + seconds, "pending": "creating"}
                cluster.port = int(server["port"])
        return cluster

    def create_instance(self, db_kwargs):
        with LOCK:
            entry = CLUSTERS.get((self.account_id, db_kwargs.get("db_cluster_identifier")))
        instance = original_create_instance(self, db_kwargs)
        if entry is not None:
            seconds = float(moto_backup.setting(self.account_id, "restore_seconds"))
            with LOCK:
                RESTORED[(self.account_id, instance.db_instance_identifier)] = {
                    "server": entry["server"], "ready_at": time.time() + seconds}
                _history(self.account_id)["restored"].append(instance.db_instance_identifier)
            instance.port = int(entry["server"]["port"])
            instance.status = "creating"
        return instance

    def status(self):
        with LOCK:
            entry = CLUSTERS.get((self.backend.account_id, self.db_cluster_identifier))
        if entry is None:
            return original_status.fget(self)
        if not _ready(entry):
            return entry["pending"]
        if self._status == "creating":
            self._status = "available"
        return self._status

    def endpoint(self):
        with LOCK:
            entry = CLUSTERS.get((self.backend.account_id, self.db_cluster_identifier))
        return entry["server"]["host"] if entry else original_endpoint.fget(self)

    def modify(self, kwargs):
        with LOCK:
            entry = CLUSTERS.get((self.account_id, kwargs["db_cluster_identifier"]))
        password = kwargs.get("master_user_password")
        if entry and password:
            cluster = self.clusters[kwargs["db_cluster_identifier"]]
            _alter_password(entry["server"], cluster.engine, cluster.master_username, password)
            seconds = float(moto_backup.setting(self.account_id, "restore_seconds")) / 2
            with LOCK:
                entry.update(ready_at=time.time() + seconds, pending="resetting-master-credentials")
        return original_modify(self, kwargs)

    def delete(self, cluster_identifier, *args, **kwargs):
        cluster = original_delete(self, cluster_identifier, *args, **kwargs)
        with LOCK:
            CLUSTERS.pop((self.account_id, cluster_identifier), None)
            _history(self.account_id)["clusters_deleted"].append(cluster_identifier)
        return cluster

    RDSBackend.restore_db_cluster_from_snapshot = restore
    RDSBackend.create_db_instance = create_instance
    RDSBackend.modify_db_cluster = modify
    RDSBackend.delete_db_cluster = delete
    DBCluster.status = property(status, original_status.fset)
    DBCluster.endpoint = property(endpoint)
