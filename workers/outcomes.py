"""What a finished deployment tells the reconcile loop (its ``sync`` row), in the same
transaction as the record's final status.

- in sync (it succeeded, or nothing was to be done): its commit is the synced one;
- refused (rolled back, or failed in a way that is remembered and not retried by
  itself): its commit and images join ``raised``, so polling never raises them again;
- failed otherwise (the system failed: a registry, the disk): ``raised`` is forgotten, so
  the next poll raises the desired state again; a lost webhook is never lost for good;
- a deployment (not a heal) that did something, or a person's request, ends healing's
  count and a degraded state: a new desired state or a person's action starts over.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from rollhook.records import sync as sync_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.syncstatus import images_in_use
from rollhook.targets import Target


def note_outcome(
    conn: Connection,
    target: Target,
    record: DeploymentRecord,
    *,
    status: str,
    commit: str | None,
    images: dict[str, dict[str, Any]],
    in_sync: bool,
    remembered: bool,
) -> None:
    name = target.name
    row = sync_records.lock(conn, name)
    values: dict[str, Any] = {}
    if record.kind == "heal":
        return
    if commit and (status == "succeeded" or (status == "no_op" and in_sync)):
        values["synced_commit"] = commit
    elif status == "rolled_back" or (status in {"failed", "no_op"} and remembered):
        raised = dict(row.raised)
        if commit:
            raised["commit"] = commit
        raised["images"] = {**(raised.get("images") or {}), **images_in_use(target, images)}
        values["raised"] = raised
    elif status == "failed" and not record.manual:
        values["raised"] = {}
    if values:
        sync_records.change(conn, name, **values)
    if record.manual or status in {"succeeded", "rolled_back"}:
        sync_records.forgive(conn, name)
