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
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from cli.output import USAGE
from rollhook.settings import LOCAL_HOST, ConfigError, load_settings

EXIT_CODES = """exit codes: 0 succeeded (or nothing to do), 1 failed, 2 rolled back (the previous
version serves again), 3 usage (bad arguments, unknown target, wrong settings)"""


def _process_commands(sub: Any) -> None:
    up = sub.add_parser("up", help="run web, worker, beat (and the proxy when a target has one)")
    up.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    up.add_argument("--port", type=int, default=None)
    web = sub.add_parser("web", help="run the web process (uvicorn)")
    web.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    web.add_argument("--port", type=int, default=None)
    worker = sub.add_parser("worker", help="run a worker process (celery worker)")
    worker.add_argument(
        "--host",
        dest="worker_host",
        default=os.environ.get("ROLLHOOK_WORKER_HOST", LOCAL_HOST),
        help="the Docker host this worker serves: it runs the targets with `host: NAME`",
    )
    sub.add_parser("beat", help="run the beat process (celery beat)")
    sub.add_parser("proxy", help="run the front proxy (Caddy) of the targets with proxy:")
    sub.add_parser("check-config", help="validate the settings and the targets file")


_FORCE = "deploy outside the target's deploy window on purpose (noted on the record)"


def _api_commands(sub: Any) -> None:
    deploy = sub.add_parser("deploy", help="deploy a target now")
    deploy.add_argument("target")
    deploy.add_argument("--ref", help="branch or commit in the tracked branch's history")
    deploy.add_argument(
        "--image", help="an image reference or digest of one of the target's images"
    )
    deploy.add_argument("--wait", action="store_true", help="follow the deployment to its end")
    deploy.add_argument("--force", action="store_true", help=_FORCE)
    rollback = sub.add_parser("rollback", help="roll a target back (default: the last good one)")
    rollback.add_argument("target")
    rollback.add_argument("--to", help="a deployment id")
    data = rollback.add_mutually_exclusive_group()
    data.add_argument("--restore-data", dest="restore", action="store_true", default=None)
    data.add_argument("--keep-data", dest="restore", action="store_false")
    rollback.add_argument("--wait", action="store_true")
    rollback.add_argument("--force", action="store_true", help=_FORCE)
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
    history.add_argument("--json", action="store_true", help="the API's answer, for scripts")
    show = sub.add_parser("show", help="one deployment with its steps and log")
    show.add_argument("deployment")
    status = sub.add_parser("status", help="targets and their state, as a table")
    status.add_argument("--json", action="store_true", help="the API's answer, for scripts")
    hosts = sub.add_parser("hosts", help="the hosts' workers and their heartbeats, as a table")
    hosts.add_argument("--json", action="store_true", help="the API's answer, for scripts")


def _local_commands(sub: Any) -> None:
    backups = sub.add_parser("backups", help="list a target's data backups")
    backups.add_argument("target")
    backups.add_argument("--remote", action="store_true", help="its off-host snapshots")
    backups.add_argument("--json", action="store_true")
    restore = sub.add_parser("restore", help="restore a target's data from a backup")
    restore.add_argument("target")
    restore.add_argument("backup", nargs="?")
    restore.add_argument(
        "--from-remote", metavar="SNAPSHOT", help="an off-host snapshot's id, or latest"
    )
    restore.add_argument("--yes", action="store_true", help="confirm: the service is restarted")
    diff = sub.add_parser(
        "diff",
        help="what a sync would change: commits, services, images, changed variable names",
    )
    diff.add_argument("target")

    take = sub.add_parser("backup", help="back a target's data up now")
    take.add_argument("target")
    take.add_argument("--remote", action="store_true", help="off-host, to its repository")
    drill = sub.add_parser("drill", help="restore the latest off-host snapshot beside the app")
    drill.add_argument("target")


class Parser(argparse.ArgumentParser):
    """argparse, with the exit code scripts expect for a usage error (3, not 2: 2 means
    "rolled back")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def _setup_commands(sub: Any) -> None:
    init = sub.add_parser(
        "init", help="adopt the compose projects running here: write rollhook.yml and infra/"
    )
    init.add_argument("--config", default="rollhook.yml", help="the targets file to write")
    init.add_argument("--dir", default="infra", help="the infra folder to write (to commit)")
    init.add_argument("--repo", help="the infra repo's URL, as rollhook will fetch it")
    init.add_argument("--branch", default="main")
    init.add_argument("--project", action="append", help="adopt only this project (repeat)")
    init.add_argument(
        "--secrets-dir", default="/etc/rollhook", help="where the host env files go (0600)"
    )
    init.add_argument("--force", action="store_true", help="overwrite what exists")
    init.add_argument("--dry-run", action="store_true", help="print the proposal, write nothing")
    demo = sub.add_parser(
        "demo", help="a local infra repo and a small app, deployed by a local rollhook"
    )
    demo.add_argument("--port", type=int, default=None, help="rollhook's port (8000)")
    demo.add_argument("--app-port", type=int, default=8081, help="the demo app's port")
    demo.add_argument("--prepare-only", action="store_true", help="set up, start nothing")
    demo.add_argument("--down", action="store_true", help="remove the demo's containers")
    hook = sub.add_parser(
        "send-test-hook", help="send a signed GitHub push for a target's repo and branch"
    )
    hook.add_argument("target")
    hook.add_argument("--wait", action="store_true", help="follow the deployment to its end")
    complete = sub.add_parser("completion", help="print a shell completion script")
    complete.add_argument("shell", nargs="?", choices=["bash", "zsh"])
    complete.add_argument("--targets", action="store_true", help=argparse.SUPPRESS)


def installed_version() -> str:
    """The installed package's version (what an image or a wheel carries)."""
    try:
        return version("rollhook")
    except PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


def parser() -> argparse.ArgumentParser:
    top = Parser(
        prog="rollhook",
        description=__doc__.splitlines()[0],
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--url", default=os.environ.get("ROLLHOOK_URL"))
    top.add_argument("--version", action="version", version=f"rollhook {installed_version()}")
    sub = top.add_subparsers(dest="command", required=True)
    _process_commands(sub)
    _api_commands(sub)
    _local_commands(sub)
    _setup_commands(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 (one return per command kind)
    top = parser()
    args = top.parse_args(argv)
    try:
        if args.command == "completion":
            from cli.completion import completion

            return completion(args, top)
        if args.command == "demo":
            from cli.demo import demo

            return demo(args)
        if args.command == "init":
            from cli.adopt import init

            return init(args, load_settings())
        if args.command == "send-test-hook":
            from cli.testhook import send_test_hook

            return send_test_hook(args, load_settings())
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
        if args.command in {"backup", "drill"}:
            from cli import offsite

            return offsite.backup(args) if args.command == "backup" else offsite.drill(args)
        from cli.api import run_api_command

        return run_api_command(args, load_settings())
    except ConfigError as exc:
        print(f"rollhook: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
