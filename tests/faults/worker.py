"""A worker as a process of its own, for the fault suite to SIGKILL mid-step.

``python -m tests.faults.worker <spec.json>`` runs one target once, exactly as the
Celery task ``rollhook.run_target`` does (lease, host lock, journal, pipeline), from a
spec that :func:`write_spec` wrote: the records' URL, the data directory, the target,
the engine and the lease. It starts early and waits for a line on stdin before it runs,
so that its imports (seconds on a busy machine) are not what a test waits for. Tasks it
would publish (notifications) go nowhere.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rollhook.records.db import make_engine
from rollhook.targets import Target
from workers.context import WorkerContext
from workers.runner import run_target


def write_spec(path: Path, ctx: WorkerContext, target: Target) -> Path:
    spec = {
        "records_url": ctx.records.url.render_as_string(hide_password=False),
        "data_dir": str(ctx.data_dir),
        "target": target.model_dump(mode="json"),
        "docker_host": ctx.docker_host,
        "lease_seconds": ctx.lease_seconds,
        "compose_argv": ctx.compose_argv,
    }
    path.write_text(json.dumps(spec))
    return path


def main(spec_path: str) -> None:
    spec: dict[str, Any] = json.loads(Path(spec_path).read_text())
    target = Target.model_validate(spec["target"])
    ctx = WorkerContext(
        records=make_engine(spec["records_url"]),
        data_dir=Path(spec["data_dir"]),
        targets={target.name: target},
        docker_host=spec["docker_host"],
        lease_seconds=spec["lease_seconds"],
        send=lambda _task, _args: None,
        compose_argv=spec["compose_argv"],
    )
    if sys.stdin.readline():  # go; an empty read is the test giving up on us
        run_target(ctx, target.name)


if __name__ == "__main__":
    main(sys.argv[1])
