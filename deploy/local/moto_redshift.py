"""Redshift snapshot sharing, which moto 5.2.5 lacks, as AWS documents it:

- ``AuthorizeSnapshotAccess`` / ``RevokeSnapshotAccess`` on a manual snapshot, at most 20
  accounts per snapshot (``AuthorizationQuotaExceeded`` beyond);
- ``AccountsWithRestoreAccess`` in the snapshot's description;
- the account a snapshot is shared with sees it with ``DescribeClusterSnapshots`` and
  ``OwnerAccount`` set to the owner (it may describe or restore it, never copy or delete it);
- ``DeleteClusterSnapshot`` refused while the snapshot has authorizations ("revoke first");
- ``DescribeClusterSnapshots`` honours ``SnapshotType`` (moto returns automated snapshots for
  ``SnapshotType=manual`` when no cluster or snapshot is named);
- a cluster's cross-region snapshot copy does what AWS's does: ``EnableSnapshotCopy`` keeps
  ``ManualSnapshotRetentionPeriod`` and refuses a ``SnapshotCopyGrantName`` that does not
  exist in the destination region; ``ModifySnapshotCopyRetentionPeriod`` with ``Manual`` changes
  it; every manual snapshot created afterwards appears in the destination region with its
  ``SourceRegion`` and that retention (tags are not carried over).
"""

MAX_ACCOUNTS = 20


def patch() -> None:
    from moto.redshift import models, responses
    from moto.redshift.exceptions import (
        InvalidClusterSnapshotStateFaultError,
        RedshiftClientError,
        SnapshotCopyDisabledFaultError,
        SnapshotCopyGrantNotFoundFaultError,
    )
    from moto.core.responses import ActionResult

    class AuthorizationQuotaExceeded(RedshiftClientError):
        def __init__(self, snapshot):
            super().__init__(
                "AuthorizationQuotaExceeded",
                f"The authorization quota for the cluster snapshot {snapshot} has been reached "
                f"({MAX_ACCOUNTS} accounts).",
            )

    class AuthorizationNotFound(RedshiftClientError):
        def __init__(self, account):
            super().__init__("AuthorizationNotFound", f"Account {account} is not authorized.")

    models.Snapshot.accounts_with_restore_access = property(
        lambda self: [{"AccountId": a} for a in getattr(self, "_shared_with", [])]
    )
    models.Snapshot.owner_account = property(lambda self: self.account_id)

    def snapshot_of(backend, identifier):
        return backend.describe_cluster_snapshots(snapshot_identifier=identifier)[0]

    def authorize_snapshot_access(self):
        snapshot = snapshot_of(self.redshift_backend, self._get_param("SnapshotIdentifier"))
        account = self._get_param("AccountWithRestoreAccess")
        shared = snapshot.__dict__.setdefault("_shared_with", [])
        if account not in shared:
            if len(shared) >= MAX_ACCOUNTS:
                raise AuthorizationQuotaExceeded(snapshot.snapshot_identifier)
            shared.append(account)
        return ActionResult({"Snapshot": snapshot})

    def revoke_snapshot_access(self):
        snapshot = snapshot_of(self.redshift_backend, self._get_param("SnapshotIdentifier"))
        account = self._get_param("AccountWithRestoreAccess")
        shared = snapshot.__dict__.setdefault("_shared_with", [])
        if account not in shared:
            raise AuthorizationNotFound(account)
        shared.remove(account)
        return ActionResult({"Snapshot": snapshot})

    responses.RedshiftResponse.authorize_snapshot_access = authorize_snapshot_access
    responses.RedshiftResponse.revoke_snapshot_access = revoke_snapshot_access

    original_delete = models.RedshiftBackend.delete_cluster_snapshot

    def delete_cluster_snapshot(self, snapshot_identifier):
        snapshot = self.snapshots.get(snapshot_identifier)
        if snapshot is not None and getattr(snapshot, "_shared_with", []):
            error = InvalidClusterSnapshotStateFaultError(snapshot_identifier)
            error.message = (
                f"Cannot delete the snapshot {snapshot_identifier} because other accounts still have "
                "access to it. Revoke access for those accounts first."
            )
            raise error
        return original_delete(self, snapshot_identifier)

    models.RedshiftBackend.delete_cluster_snapshot = delete_cluster_snapshot

    original_describe = responses.RedshiftResponse.describe_cluster_snapshots

    def describe_cluster_snapshots(self):
        owner = self._get_param("OwnerAccount")
        wanted = self._get_param("SnapshotType")
        if not owner or owner == self.current_account:
            result = original_describe(self)
            if wanted:
                result = ActionResult({"Snapshots": [s for s in result.result["Snapshots"] if s.snapshot_type == wanted]})
            return result
        other = models.redshift_backends[owner][self.region]
        visible = [
            s for s in other.snapshots.values()
            if self.current_account in getattr(s, "_shared_with", []) and (not wanted or s.snapshot_type == wanted)
        ]
        return ActionResult({"Snapshots": visible})

    responses.RedshiftResponse.describe_cluster_snapshots = describe_cluster_snapshots

    original_enable = responses.RedshiftResponse.enable_snapshot_copy

    def enable_snapshot_copy(self):
        destination = self._get_param("DestinationRegion")
        grant = self._get_param("SnapshotCopyGrantName")
        if grant and grant not in models.redshift_backends[self.current_account][destination].snapshot_copy_grants:
            raise SnapshotCopyGrantNotFoundFaultError(grant)
        result = original_enable(self)
        cluster = self.redshift_backend.clusters[self._get_param("ClusterIdentifier")]
        manual = self._get_param("ManualSnapshotRetentionPeriod")
        cluster.cluster_snapshot_copy_status["ManualSnapshotRetentionPeriod"] = int(manual) if manual else -1
        return result

    responses.RedshiftResponse.enable_snapshot_copy = enable_snapshot_copy

    original_modify = responses.RedshiftResponse.modify_snapshot_copy_retention_period

    def modify_snapshot_copy_retention_period(self):
        if str(self._get_param("Manual")).lower() != "true":
            return original_modify(self)
        identifier = self._get_param("ClusterIdentifier")
        cluster = self.redshift_backend.clusters[identifier]
        if cluster.cluster_snapshot_copy_status is None:
            raise SnapshotCopyDisabledFaultError(identifier)
        cluster.cluster_snapshot_copy_status["ManualSnapshotRetentionPeriod"] = int(self._get_param("RetentionPeriod"))
        return ActionResult({"Cluster": cluster})

    responses.RedshiftResponse.modify_snapshot_copy_retention_period = modify_snapshot_copy_retention_period

    original_create = models.RedshiftBackend.create_cluster_snapshot

    def create_cluster_snapshot(self, cluster_identifier, snapshot_identifier, region_name, tags, snapshot_type="manual"):
        snapshot = original_create(self, cluster_identifier, snapshot_identifier, region_name, tags, snapshot_type)
        cluster = self.clusters[cluster_identifier]
        status = cluster.cluster_snapshot_copy_status
        if status and snapshot_type == "manual":
            destination = status["DestinationRegion"]
            copy = models.Snapshot(cluster, snapshot_identifier, self.account_id, destination, tags=None)
            copy.source_region = self.region_name
            copy.manual_snapshot_retention_period = status.get("ManualSnapshotRetentionPeriod", -1)
            models.redshift_backends[self.account_id][destination].snapshots[snapshot_identifier] = copy
        return snapshot

    models.RedshiftBackend.create_cluster_snapshot = create_cluster_snapshot
