"""A deployer driven by the reconcile loop: polls, engine events and heals, in-process.

The worker's own entry points do the work: ``reconcile.tick`` polls, the intake claims what
it published, ``run_target`` runs it. What a worker would publish lands in ``sent`` (the
deployer's context records it instead of a broker); :meth:`Loop.work` plays the worker.
"""

from __future__ import annotations

from typing import Any

from rollhook.broker import PROCESS_JOBS, RUN_TARGET
from rollhook.records import deployments
from rollhook.records import sync as sync_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.sync import SyncState
from tests.workers.deployer import Deployer
from workers import reconcile
from workers.intake import take_job
from workers.reconcile import TickReport
from workers.runner import run_target


class Loop:
    def __init__(self, deployer: Deployer) -> None:
        self.d = deployer

    def poll(self) -> TickReport:
        """A tick with this target due now."""
        with self.d.records.begin() as conn:
            sync_records.change(conn, self.d.name, next_poll_at=None)
        return reconcile.tick(self.d.ctx)

    def work(self) -> list[str]:
        """Take what was published and run the target, as a worker would; the deployment
        ids queued."""
        queued: list[str] = []
        while self.d.sent:
            task, args = self.d.sent.pop(0)
            if task == PROCESS_JOBS:
                for job_json in args[0]:
                    if take_job(self.d.ctx, job_json) is not None:
                        queued.append(job_json)
            elif task == RUN_TARGET:
                pass
        run_target(self.d.ctx, self.d.name)
        return queued

    def history(self) -> list[DeploymentRecord]:
        with self.d.records.begin() as conn:
            return list(reversed(deployments.history(conn, self.d.name, 100)))

    def latest(self) -> DeploymentRecord:
        return self.history()[-1]

    def sync(self) -> SyncState:
        with self.d.records.begin() as conn:
            return sync_records.get(conn, self.d.name)

    def set(self, **values: Any) -> None:
        with self.d.records.begin() as conn:
            sync_records.change(conn, self.d.name, **values)
