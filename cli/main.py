"""``rollhook``: run the processes, and drive a running rollhook from a shell or CI job.

The API commands are thin wrappers over the HTTP interface (``ROLLHOOK_URL``, default
``http://127.0.0.1:$PORT``; bearer ``ROLLHOOK_API_TOKEN``). ``backups``, ``restore`` and
``check-config`` work on this host's data directory directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from rollhook.settings import ConfigError, load_settings


def _process_commands(sub: Any) -> None:
    up = sub.add_parser("up", help="run web, worker and beat for one host")
    up.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    up.add_argument("--port", type=int, default=None)
    web = sub.add_parser("web", help="run the web process (uvicorn)")
    web.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    web.add_argument("--port", type=int, default=None)
    sub.add_parser("worker", help="run a worker process (celery worker)")
    sub.add_parser("beat", help="run the beat process (celery beat)")
    sub.add_parser("proxy", help="run the front proxy (Caddy) of the targets with proxy:")
    sub.add_parser("check-config", help="validate the settings and the targets file")


def _api_commands(sub: Any) -> None:
    deploy = sub.add_parser("deploy", help="deploy a target now")
    deploy.add_argument("target")
    deploy.add_argument("--ref", help="branch or commit in the tracked branch's history")
    deploy.add_argument(
        "--image", help="an image reference or digest of one of the target's images"
    )
    deploy.add_argument("--wait", action="store_true", help="follow the deployment to its end")
    rollback = sub.add_parser("rollback", help="roll a target back (default: the last good one)")
    rollback.add_argument("target")
    rollback.add_argument("--to", help="a deployment id")
    data = rollback.add_mutually_exclusive_group()
    data.add_argument("--restore-data", dest="restore", action="store_true", default=None)
    data.add_argument("--keep-data", dest="restore", action="store_false")
    rollback.add_argument("--wait", action="store_true")
    sync = sub.add_parser(
        "sync",
        help="poll a target now and apply what Git and the registry want, or put back what "
        "drifted (the approval in manual mode)",
    )
    sync.add_argument("target")
    sync.add_argument("--wait", action="store_true", help="follow it to its end")
    approve = sub.add_parser(
        "approve", help="approve what waits for approval (manual mode): the same as sync"
    )
    approve.add_argument("target")
    approve.add_argument("--wait", action="store_true", help="follow it to its end")
    reject = sub.add_parser(
        "reject", help="reject what waits for approval: the waiting deployments end unrun"
    )
    reject.add_argument("target")
    pause = sub.add_parser("pause", help="freeze a target's automatic deployments")
    pause.add_argument("target")
    pause.add_argument("--reason")
    resume = sub.add_parser("resume", help="let a target deploy again")
    resume.add_argument("target")
    history = sub.add_parser("history", help="deployments, newest first")
    history.add_argument("target", nargs="?")
    history.add_argument("--limit", type=int, default=20)
    show = sub.add_parser("show", help="one deployment with its steps and log")
    show.add_argument("deployment")
    sub.add_parser("status", help="targets and their state")


def _local_commands(sub: Any) -> None:
    backups = sub.add_parser("backups", help="list a target's data backups")
    backups.add_argument("target")
    restore = sub.add_parser("restore", help="restore a target's data from a backup")
    restore.add_argument("target")
    restore.add_argument("backup")
    restore.add_argument("--yes", action="store_true", help="confirm: the service is restarted")
    diff = sub.add_parser(
        "diff",
        help="what a sync would change: commits, services, images, changed variable names",
    )
    diff.add_argument("target")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="rollhook", description=__doc__.splitlines()[0])
    top.add_argument("--url", default=os.environ.get("ROLLHOOK_URL"))
    sub = top.add_subparsers(dest="command", required=True)
    _process_commands(sub)
    _api_commands(sub)
    _local_commands(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 (one return per command kind)
    args = parser().parse_args(argv)
    try:
        if args.command in {"up", "web", "worker", "beat"}:
            from cli.processes import run_process

            return run_process(args)
        if args.command == "proxy":
            from workers.proxy.process import run_proxy

            return run_proxy(load_settings())
        if args.command == "check-config":
            from cli.local import check_config

            return check_config()
        if args.command == "diff":
            from cli.diff import diff

            return diff(args)
        if args.command in {"backups", "restore"}:
            from cli.local import backups, restore

            return backups(args) if args.command == "backups" else restore(args)
        from cli.api import run_api_command

        return run_api_command(args, load_settings())
    except ConfigError as exc:
        print(f"rollhook: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
