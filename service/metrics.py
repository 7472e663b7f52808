"""Prometheus metrics: counters kept by this process, the rest read from the records.

Deployment metrics are computed from the deployments table at scrape time, so they are
right whichever worker ran a deployment and survive restarts of every process.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from rollhook.records import deployments, jobs, remote_backups
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.remote_backups import RemoteBackupState
from rollhook.records.targets import TargetState
from rollhook.syncstatus import STATUSES
from rollhook.targets import Target
from service.syncview import sync_view

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Deployments take seconds to tens of minutes.
DURATION_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
_RAN = ("succeeded", "failed", "rolled_back", "no_op")


class Metrics:
    def __init__(self) -> None:
        # A registry per app, not the global one: tests build many apps in one process.
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rollhook_requests",
            "Webhook and API requests by source and answer code",
            ["source", "code"],
            registry=self.registry,
        )
        self.events_stored = Counter(
            "rollhook_events_stored",
            "Events committed to the records",
            ["source"],
            registry=self.registry,
        )
        self.jobs_dispatched = Counter(
            "rollhook_jobs_dispatched",
            "Jobs handed to the broker by this web process (its records writer)",
            registry=self.registry,
        )
        self.commit_events = Histogram(
            "rollhook_commit_events",
            "Events stored per records commit (concurrent requests share one)",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=self.registry,
        )
        self.dispatch_failures = Counter(
            "rollhook_job_dispatch_failures",
            "Jobs the broker refused (left in the outbox)",
            registry=self.registry,
        )
        # Children by label values: ``labels()`` costs a lock and a few dicts per call.
        self._requests: dict[tuple[str, int], Any] = {}
        self._stored: dict[str, Any] = {}

    def count_request(self, source: str, code: int) -> None:
        child = self._requests.get((source, code))
        if child is None:
            child = self._requests[(source, code)] = self.requests.labels(source, str(code))
        child.inc()

    def count_stored(self, source: str) -> None:
        child = self._stored.get(source)
        if child is None:
            child = self._stored[source] = self.events_stored.labels(source)
        child.inc()

    def attach_records(self, engine: Engine, targets: Mapping[str, Target] | None = None) -> None:
        self.registry.register(_RecordsCollector(engine))
        if targets:
            self.registry.register(_SyncCollector(engine, targets))

    def count_commit(self, events: int) -> None:
        self.commit_events.observe(events)

    def count_dispatch(self, sent: int, failed: int) -> None:
        if sent:
            self.jobs_dispatched.inc(sent)
        if failed:
            self.dispatch_failures.inc(failed)

    def render(self) -> bytes:
        """The exposition text; reads the records database (call off the event loop)."""
        return generate_latest(self.registry)


class _RecordsCollector(Collector):
    """Deployment metrics from the records. A scrape reads every deployment row, so the
    result is kept for a few seconds: scraping faster costs the database nothing."""

    TTL = 15.0

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._cached: tuple[float, list[Metric]] | None = None
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []  # no describe-time database reads: collected only when scraped

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.TTL:
                self._cached = (now, list(self._read()))
            return iter(self._cached[1])

    def _read(self) -> Iterator[Metric]:
        with self._engine.connect() as conn:
            backlog = jobs.backlog(conn)
            rows = deployments.for_metrics(conn)
            remote = remote_backups.all_states(conn)
        yield from _remote_backups(remote.values())
        yield GaugeMetricFamily(
            "rollhook_outbox_backlog", "Jobs stored but not yet taken by the broker", value=backlog
        )
        by_status: Tally[tuple[str, str]] = Tally()
        rollbacks: Tally[tuple[str, str]] = Tally()
        durations: dict[str, list[float]] = defaultdict(list)
        last_success: dict[str, float] = {}
        for target, kind, status, started, finished in rows:
            by_status[(target, status)] += 1
            if status == "rolled_back":
                rollbacks[(target, "automatic")] += 1
            if kind == "rollback":
                rollbacks[(target, "manual")] += 1
            if status in _RAN and started is not None and finished is not None:
                durations[target].append(max(0.0, (finished - started).total_seconds()))
            if status == "succeeded" and finished is not None:
                last_success[target] = max(last_success.get(target, 0.0), finished.timestamp())
        total = CounterMetricFamily(
            "rollhook_deployments", "Deployments by target and status", labels=["target", "status"]
        )
        for (target, status), count in sorted(by_status.items()):
            total.add_metric([target, status], count)
        yield total
        back = CounterMetricFamily(
            "rollhook_rollbacks",
            "Rollbacks by target, automatic or manual",
            labels=["target", "kind"],
        )
        for (target, kind), count in sorted(rollbacks.items()):
            back.add_metric([target, kind], count)
        yield back
        yield _histogram(durations)
        success = GaugeMetricFamily(
            "rollhook_last_success_timestamp_seconds",
            "When the target's last successful deployment finished",
            labels=["target"],
        )
        for target, when in sorted(last_success.items()):
            success.add_metric([target], when)
        yield success


class _SyncCollector(Collector):
    """The reconcile loop's metrics from the ``sync`` rows at scrape time: each target's
    status (1 for the current one), its drift episodes by what drifted, its heals, its
    poll errors by kind and when it was last polled."""

    def __init__(self, engine: Engine, targets: Mapping[str, Target]) -> None:
        self._engine, self._targets = engine, targets

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        status = GaugeMetricFamily(
            "rollhook_target_sync_status",
            "The target's sync status (1 for the current one)",
            labels=["target", "status"],
        )
        drift = CounterMetricFamily(
            "rollhook_drift", "Drift episodes by what drifted", labels=["target", "what"]
        )
        heals = CounterMetricFamily("rollhook_heals", "Heals queued", labels=["target"])
        errors = CounterMetricFamily(
            "rollhook_poll_errors", "Failed polls by kind", labels=["target", "kind"]
        )
        polled = GaugeMetricFamily(
            "rollhook_last_poll_timestamp_seconds", "When the target was last polled",
            labels=["target"],
        )  # fmt: skip
        with self._engine.connect() as conn:
            rows = sync_records.all_states(conn)
            for name, target in sorted(self._targets.items()):
                state = target_records.get(conn, name) or TargetState(name)
                row = rows.get(name) or sync_records.SyncState(name)
                now = sync_view(conn, target, state, row)["status"]
                for each in STATUSES:
                    status.add_metric([name, each], 1.0 if each == now else 0.0)
                for what, count in sorted(row.drift_counts.items()):
                    drift.add_metric([name, what], count)
                heals.add_metric([name], row.heal_count)
                for kind, count in sorted(row.poll_error_counts.items()):
                    errors.add_metric([name, kind], count)
                if row.last_poll_at is not None:
                    polled.add_metric([name], row.last_poll_at.timestamp())
        yield from (status, drift, heals, errors, polled)


def _histogram(durations: dict[str, list[float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "rollhook_deployment_duration_seconds", "How long deployments ran", labels=["target"]
    )
    for target, values in sorted(durations.items()):
        buckets = [(str(b), float(sum(1 for v in values if v <= b))) for b in DURATION_BUCKETS]
        buckets.append(("+Inf", float(len(values))))
        family.add_metric([target], buckets, sum_value=sum(values))
    return family


def _remote_backups(states: Iterable[RemoteBackupState]) -> Iterator[Metric]:
    """Off-host snapshots and drills per target (``records/remote_backups.py``)."""
    families = {
        "success": GaugeMetricFamily(
            "rollhook_remote_backup_last_success_timestamp_seconds",
            "When the target's last successful off-host snapshot was taken",
            labels=["target"],
        ),
        "duration": GaugeMetricFamily(
            "rollhook_remote_backup_last_duration_seconds",
            "How long the last successful off-host snapshot took (staging and upload)",
            labels=["target"],
        ),
        "size": GaugeMetricFamily(
            "rollhook_remote_backup_last_size_bytes",
            "Bytes of data the last successful off-host snapshot holds",
            labels=["target"],
        ),
        "failures": GaugeMetricFamily(
            "rollhook_remote_backup_failures",
            "Off-host snapshots failed in a row since the last success",
            labels=["target"],
        ),
        "drill": GaugeMetricFamily(
            "rollhook_restore_drill_ok",
            "Whether the target's last restore drill passed (1) or failed (0)",
            labels=["target"],
        ),
    }
    for state in sorted(states, key=lambda s: s.target):
        labels = [state.target]
        if state.last_success_at is not None:
            families["success"].add_metric(labels, state.last_success_at.timestamp())
            families["duration"].add_metric(labels, state.last_duration or 0.0)
            families["size"].add_metric(labels, float(state.last_size or 0))
        if state.last_success_at is not None or state.failures:
            families["failures"].add_metric(labels, float(state.failures))
        if state.drill_ok is not None:
            families["drill"].add_metric(labels, 1.0 if state.drill_ok else 0.0)
    yield from families.values()
