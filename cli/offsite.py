"""Off-host backups from a shell: list remote snapshots, take a backup now, restore a remote
snapshot, run the restore drill. They work on this host's data directory and records, as
``backups`` and ``restore`` do, and print tables for people or JSON for scripts."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from cli.output import USAGE
from rollhook.settings import load_settings
from rollhook.targets import Target, host_of, load_targets


def _context() -> Any:
    from rollhook import broker
    from workers.context import build_context

    settings = load_settings()
    celery = broker.make_celery(settings.broker_url())
    targets = load_targets(settings.config)
    send = broker.sender(celery, lambda name: host_of(targets, name), retry=False)
    return build_context(settings, send)


def _target(ctx: Any, name: str, *, remote: bool) -> Target | None:
    target: Target | None = ctx.targets.get(name)
    if target is None:
        print(f"rollhook: unknown target {name!r}", file=sys.stderr)
        return None
    if remote and target.backup.remote is None:
        print(
            f"rollhook: targets.{name}.backup.remote is not set: no off-host repository",
            file=sys.stderr,
        )
        return None
    return target


def size(count: int | None) -> str:
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def age(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def remote_backups(args: argparse.Namespace) -> int:
    """``rollhook backups NAME --remote``: the target's snapshots, newest first."""
    from rollhook.records import remote_backups as records
    from workers.backup.contents import target_tags
    from workers.errors import DeployError
    from workers.offsite.repository import repository_for

    ctx = _context()
    target = _target(ctx, args.target, remote=True)
    if target is None:
        return USAGE
    try:
        repo = repository_for(ctx, target)
        found = repo.snapshots(target_tags(target.name))
    except DeployError as exc:
        print(f"rollhook: {exc}", file=sys.stderr)
        return 1
    with ctx.records.begin() as conn:
        state = records.get(conn, target.name)
    now = datetime.now(UTC)
    if args.json:
        print(
            json.dumps(
                {
                    "repository": repo.display,
                    "snapshots": [
                        {
                            "id": s.id,
                            "time": s.time.isoformat(),
                            "age_seconds": round(s.age(now).total_seconds()),
                            "size": s.size,
                            "host": s.host,
                            "tags": list(s.tags),
                        }
                        for s in found
                    ],
                    "state": _state_json(state),
                },
                indent=1,
            )
        )
        return 0
    print(f"{target.name}: {len(found)} snapshot(s) in {repo.display}")
    if found:
        print(f"  {'ID':<10}{'TAKEN (UTC)':<22}{'AGE':<10}{'SIZE':>11}  FROM")
    for snap in found:
        origin = next((t for t in snap.tags if t.startswith("backup=")), "snapshot")
        taken = snap.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"  {snap.short_id:<10}{taken:<22}{age(snap.age(now)):<10}"
            f"{size(snap.size):>11}  {origin} on {snap.host}"
        )
    for line in _state_lines(state, now):
        print(line)
    return 0


def _state_json(state: Any) -> dict[str, Any] | None:
    if state is None:
        return None
    out: dict[str, Any] = {}
    for key, value in state.__dict__.items():
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _state_lines(state: Any, now: datetime) -> list[str]:
    if state is None:
        return []
    lines = []
    if state.last_success_at:
        lines.append(
            f"  last good: {age(now - state.last_success_at)} ago, "
            f"{size(state.last_size)} in {state.last_duration or 0:.1f}s"
        )
    if state.schedule:
        due = state.next_due_at.isoformat(timespec="minutes") if state.next_due_at else "-"
        lines.append(f"  schedule: {state.schedule}, next at {due}")
    if state.failures:
        lines.append(f"  FAILING ({state.failures} in a row): {state.last_error}")
    if state.drill_at:
        verdict = "passed" if state.drill_ok else "FAILED"
        lines.append(
            f"  last drill {age(now - state.drill_at)} ago {verdict}: {state.drill_detail}"
        )
    return lines


def backup(args: argparse.Namespace) -> int:
    """``rollhook backup NAME [--remote]``: a backup of the live data now."""
    from workers.offsite import snapshots

    ctx = _context()
    target = _target(ctx, args.target, remote=args.remote)
    if target is None:
        return USAGE
    take = snapshots.take if args.remote else snapshots.take_local
    result = take(ctx, target)
    print(f"{target.name}: {result.status}: {result.detail}")
    if result.status == "taken":
        print(
            f"  staging {result.staging_seconds:.1f}s (downtime {result.downtime_seconds:.1f}s)"
            + (f", upload {result.upload_seconds:.1f}s" if args.remote else "")
            + (f", retention removed {result.forgotten}" if result.forgotten else "")
        )
    return {"taken": 0, "busy": 3}.get(result.status, 1)


def restore(args: argparse.Namespace) -> int:
    """``rollhook restore NAME --from-remote SNAPSHOT|latest --yes``."""
    from cli.output import print_end, print_steps
    from workers.errors import DeployError
    from workers.offsite.restore import restore_from_remote

    ctx = _context()
    target = _target(ctx, args.target, remote=True)
    if target is None:
        return USAGE
    try:
        record = restore_from_remote(
            ctx, target, args.from_remote, lambda line: print(line, flush=True)
        )
    except DeployError as exc:
        print(f"rollhook: {exc}")
        return 1
    print_steps(record.steps or [], 0)
    print_end(target.name, record.status, record.reason)
    return 0 if record.status == "succeeded" else 1


def drill(args: argparse.Namespace) -> int:
    """``rollhook drill NAME``: the latest snapshot restored and started beside the app."""
    from workers.offsite.drill import run_drill

    ctx = _context()
    target = _target(ctx, args.target, remote=True)
    if target is None:
        return USAGE
    print(f"{target.name}: restoring the latest off-host snapshot into scratch...", flush=True)
    result = run_drill(ctx, target)
    verdict = "PASSED" if result.ok else "FAILED"
    print(f"{target.name}: drill {verdict} in {result.seconds:.1f}s: {result.detail}")
    return 0 if result.ok else 1
