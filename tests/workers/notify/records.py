"""Realistic deployment records for the notification tests, written to a real records DB.

The shapes follow what the rollout journal writes: steps with ISO timestamps and an
outcome, a log tail of timestamped lines, images as service -> old/new reference with
digest, and a trigger with the GitHub delivery id.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, update

from rollhook.ids import new_id
from rollhook.records import deployments as store
from rollhook.records import targets as target_records
from rollhook.records.deployments import DeploymentRecord
from rollhook.records.schema import deployments, targets

REPO = "docker.io/mintplexlabs/anythingllm"
SERVICE = "anything-llm"


def digest(version: str) -> str:
    return "sha256:" + hashlib.sha256(version.encode()).hexdigest()


def image(version: str) -> str:
    return f"{REPO}:{version}@{digest(version)}"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def insert_running(
    engine: Engine,
    *,
    old: str = "1.16.1",
    new: str = "1.16.2",
    target: str = "anythingllm",
    source: str = "github",
    commit: str | None = None,
) -> DeploymentRecord:
    """A deployment whose plan showed a real change: running, steps up to apply."""
    deployment_id = new_id("d")
    started = datetime.now(UTC) - timedelta(minutes=2)
    sha = commit or hashlib.sha1(f"{deployment_id}{new}".encode()).hexdigest()  # noqa: S324
    steps = []
    at = started
    for name in ("sync", "plan", "preflight", "backup"):
        steps.append(
            {
                "name": name,
                "outcome": "ok",
                "started_at": _iso(at),
                "finished_at": _iso(at + timedelta(seconds=3)),
                "detail": None,
            }
        )
        at += timedelta(seconds=3)
    with engine.begin() as conn:
        conn.execute(
            deployments.insert().values(
                id=deployment_id,
                target=target,
                kind="deploy",
                status="running",
                trigger={
                    "source": source,
                    "event_id": new_id("e"),
                    "delivery_id": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                    "actor": "octocat",
                },
                requested={"ref": sha},
                commit=sha,
                commit_info={
                    "sha": sha,
                    "message": f"Bump anything-llm to {new}\n\nSigned-off-by: Mona",
                    "author": "Mona Lisa",
                    "date": _iso(started),
                    "url": f"https://github.com/acme/llm-infra/commit/{sha}",
                },
                images={
                    SERVICE: {"old": image(old), "new": image(new)},
                    "postgres": {
                        "old": "docker.io/library/postgres:16@" + digest("pg16"),
                        "new": "docker.io/library/postgres:16@" + digest("pg16"),
                    },
                },
                steps=steps,
                log="".join(
                    f"{(started + timedelta(seconds=i)).strftime('%H:%M:%S')} {line}\n"
                    for i, line in enumerate(
                        [
                            "sync: fetch https://x-access-token:ghs_s3cr3tT0ken@github.com/acme/llm-infra.git",
                            f"sync: main is at {sha[:7]}, environments/prod/anything-llm changed",
                            f"plan: anything-llm {image(new)}",
                            "preflight: 18.2 GiB free, pulled 1 image",
                            "backup: pass 1 copied 412 files (1.3 GiB)",
                        ]
                    )
                ),
                children=[],
                attempt=1,
                lease_token=1,
                created_at=started,
                started_at=started,
            )
        )
    return get(engine, deployment_id)


def finish(
    engine: Engine, record: DeploymentRecord, status: str, *, step: str = "gate"
) -> DeploymentRecord:
    """End the deployment the way the rollout would: succeeded, failed or rolled_back."""
    at = datetime.now(UTC) - timedelta(seconds=30)
    steps = list(record.steps)
    log = record.log

    def add(name: str, outcome: str, detail: str | None = None) -> None:
        nonlocal at
        steps.append(
            {
                "name": name,
                "outcome": outcome,
                "started_at": _iso(at),
                "finished_at": _iso(at + timedelta(seconds=5)),
                "detail": detail,
            }
        )
        at += timedelta(seconds=5)

    if status == "succeeded":
        add("apply", "ok")
        add("gate", "ok", "healthy for 10s")
        log += "12:00:40 gate: /api/ping answered 200 for 10s\n"
    else:
        failure = "health probe http://127.0.0.1:3001/api/ping answered 502 for 180s"
        if step == "apply":
            add("apply", "failed", "compose up: container anything-llm exited with code 1")
        else:
            add("apply", "ok")
            add("gate", "failed", failure)
        log += "".join(f"12:01:{i:02d} gate: GET /api/ping -> 502 Bad Gateway\n" for i in range(40))
        log += "12:01:59 app: Error: P1001 can't reach database <server> & retrying\n"
        if status == "rolled_back":
            add("rollback", "ok", "back on the previous release; data restored from backup b_01")
            add("rollback-gate", "ok", "healthy for 10s")
        else:
            add("rollback", "failed", "compose up: image not found")
    with engine.begin() as conn:
        # As a worker would: the target's lease (token 1) is held while it finishes.
        target_records.ensure(conn, [record.target])
        conn.execute(update(targets).where(targets.c.name == record.target).values(lease_token=1))
        assert store.finish(
            conn,
            record.id,
            1,
            status,
            None if status == "succeeded" else "gate failed",
            steps=steps,
            log=log,
        )
    return get(engine, record.id)


def get(engine: Engine, deployment_id: str) -> DeploymentRecord:
    with engine.connect() as conn:
        record = store.get(conn, deployment_id)
    assert record is not None
    return record


def set_status(engine: Engine, deployment_id: str, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(update(deployments).where(deployments.c.id == deployment_id).values(**values))


def record(**fields: Any) -> DeploymentRecord:
    """A deployment record that lives in no database, for the pure tests."""
    defaults: dict[str, Any] = {
        "id": "d01", "target": "anythingllm", "kind": "deploy", "status": "succeeded",
        "reason": None, "trigger": {}, "requested": {}, "commit": None, "commit_info": None,
        "images": {}, "config_hash": None, "fingerprint": None, "previous_deployment_id": None,
        "backup_id": None, "superseded_by": None, "steps": [], "log": "", "lease_token": None,
        "attempt": 1, "children": [], "created_at": datetime.now(UTC), "started_at": None,
        "finished_at": None,
    }  # fmt: skip
    return DeploymentRecord(**(defaults | fields))
