"""The API's reads: targets and their state, one event and what it led to, the history.

Records are answered as stored (datetimes as ISO 8601 UTC), minus what only the
workers need (lease tokens, process groups). Repository URLs lose any credentials.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from rollhook.numbers import whole_number
from rollhook.records import deployments, hosts, notifications
from rollhook.records import sync as sync_records
from rollhook.records import targets as target_records
from rollhook.records.events import get_event
from rollhook.records.targets import TargetState
from rollhook.targets import Target
from service import answers
from service.api import BadRequest
from service.runtime import Runtime
from service.syncview import sync_view

DEFAULT_LIMIT = 20
MAX_LIMIT = 200
_INTERNAL = ("lease_token", "children")


def public_url(url: str) -> str:
    """A clone URL without user or password (a token may be written there)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host))


async def list_targets(rt: Runtime, request: Request) -> Response:
    def read() -> list[dict[str, Any]]:
        with rt.engine.connect() as conn:
            states = target_records.all_states(conn)
            observed = sync_records.all_states(conn)
            down = hosts.down(conn, {t.host for t in rt.targets.values()})
            return [
                _target(
                    conn,
                    t,
                    states.get(t.name) or TargetState(t.name),
                    observed.get(t.name),
                    host_down=t.host in down,
                )
                for t in rt.targets.values()
            ]

    return answers.reply(200, {"targets": await run_in_threadpool(read)})


async def show_target(rt: Runtime, request: Request) -> Response:
    name = request.path_params["name"]
    target = rt.targets.get(name)
    if target is None:
        return answers.not_found(f"unknown target {name!r}")

    def read() -> dict[str, Any]:
        with rt.engine.connect() as conn:
            state = target_records.get(conn, name) or TargetState(name)
            down = hosts.down(conn, {target.host})
            return _target(conn, target, state, None, host_down=target.host in down)

    return answers.reply(200, await run_in_threadpool(read))


def _target(
    conn: Connection,
    target: Target,
    state: TargetState,
    observed: sync_records.SyncState | None,
    *,
    host_down: bool = False,
) -> dict[str, Any]:
    lease = None
    if state.lease_owner:
        lease = {"owner": state.lease_owner, "expires_at": state.lease_expires_at}
    return {
        "name": target.name,
        "repo": public_url(target.repo),
        "branch": target.branch,
        "path": target.path,
        "project": target.project,
        "service": target.service,
        "host": target.host,
        "host_state": "down" if host_down else "up",
        "images": target.images,
        "tags": target.tags,
        "paused": bool(state.paused),
        "paused_reason": state.paused_reason,
        "paused_at": state.paused_at,
        "held": bool(state.held),
        "current": _brief(conn, state.current_deployment_id),
        "current_deployment": _brief(conn, state.current_deployment_id),
        "last_good_deployment": _brief(conn, state.last_good_deployment_id),
        "pins": state.pins or {},
        "lease": lease,
        "sync": sync_view(conn, target, state, observed, host_down=host_down),
    }


def _brief(conn: Connection, deployment_id: str | None) -> dict[str, Any] | None:
    if not deployment_id:
        return None
    record = deployments.get(conn, deployment_id)
    if record is None:
        return {"id": deployment_id}
    keys = ("id", "status", "commit", "images", "started_at", "finished_at")
    return {k: getattr(record, k) for k in keys}


async def show_event(rt: Runtime, request: Request) -> Response:
    event_id = request.path_params["event_id"]

    def read() -> dict[str, Any] | None:
        with rt.engine.connect() as conn:
            event = get_event(conn, event_id)
            if event is None:
                return None
            ids = [j["deployment_id"] for j in event["jobs"] if j.get("deployment_id")]
            event["deployments"] = deployments.for_event(conn, ids)
            return event

    event = await run_in_threadpool(read)
    if event is None:
        return answers.not_found(f"no event {event_id!r}")
    return answers.reply(200, event)


async def list_deployments(rt: Runtime, request: Request) -> Response:
    target = request.query_params.get("target") or None
    if target is not None and target not in rt.targets:
        return answers.not_found(f"unknown target {target!r}")
    limit = whole_number(request.query_params.get("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT)
    if limit is None:
        raise BadRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}")

    def read() -> list[dict[str, Any]]:
        with rt.engine.connect() as conn:
            records = deployments.history(conn, target, limit)
            return _with_notifications(conn, [r.as_dict() for r in records])

    return answers.reply(200, {"deployments": await run_in_threadpool(read)})


async def show_deployment(rt: Runtime, request: Request) -> Response:
    deployment_id = request.path_params["deployment_id"]

    def read() -> dict[str, Any] | None:
        with rt.engine.connect() as conn:
            record = deployments.get(conn, deployment_id)
            return None if record is None else _with_notifications(conn, [record.as_dict()])[0]

    record = await run_in_threadpool(read)
    if record is None:
        return answers.not_found(f"no deployment {deployment_id!r}")
    return answers.reply(200, record)


def _with_notifications(conn: Connection, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_deployment = notifications.of_deployments(conn, [r["id"] for r in records])
    return [
        {k: v for k, v in r.items() if k not in _INTERNAL}
        | {"notifications": by_deployment[r["id"]]}
        for r in records
    ]


async def list_hosts(rt: Runtime, request: Request) -> Response:
    """The hosts the workers beat for and the targets name: state, last seen, workers."""

    def read() -> list[dict[str, Any]]:
        with rt.engine.connect() as conn:
            names = {t.host for t in rt.targets.values()}
            return [view.as_dict() for view in hosts.views(conn, names)]

    return answers.reply(200, {"hosts": await run_in_threadpool(read)})
