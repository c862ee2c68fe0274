"""Redshift snapshot sharing, which moto 5.2.5 lacks, as AWS documents it:

- ``AuthorizeSnapshotAccess`` / ``RevokeSnapshotAccess`` on a manual snapshot, at most 20
  accounts per snapshot (``AuthorizationQuotaExceeded`` beyond);
- ``AccountsWithRestoreAccess`` in the snapshot's description;
- the account a snapshot is shared with sees it with ``DescribeClusterSnapshots`` and
  ``OwnerAccount`` set to the owner (it may describe or restore it, never copy or delete it);
- ``DeleteClusterSnapshot`` refused while the snapshot has authorizations ("revoke first");
- ``DescribeClusterSnapshots`` honours ``SnapshotType`` (moto returns automated snapshots for
  ``SnapshotType=manual`` when no cluster or snapshot is named).
"""

MAX_ACCOUNTS = 20


def patch() -> None:
    from moto.redshift import models, responses
    from moto.redshift.exceptions import InvalidClusterSnapshotStateFaultError, RedshiftClientError
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
