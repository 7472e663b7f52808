"""Commands that work on this host's files and records: check-config, backups, restore."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from cli.output import USAGE, exit_code, print_end, print_steps
from rollhook.offsite import remote_problems, restic_environment
from rollhook.settings import ConfigError, Settings, load_settings
from rollhook.targets import (
    Target,
    host_of,
    load_targets,
    parse_targets,
    several_hosts_problems,
)


def _warnings(target: Target) -> list[str]:
    notes = []
    for path in target.env_files:
        if not path.is_file():
            notes.append(f"targets.{target.name}.env_files: {path} does not exist on this host")
    if target.health.url is None:
        notes.append(
            f"targets.{target.name}.health.url: not set; the gate falls back to the "
            "container's own healthcheck or to 'running for settle seconds'"
        )
    if not target.images:
        notes.append(f"targets.{target.name}.images: empty; registry pushes will not trigger it")
    if target.backup.remote is not None:
        notes += remote_problems(target.name, target.backup.remote, os.environ)
        if shutil.which("restic") is None:
            notes.append(
                f"targets.{target.name}.backup.remote: restic is not installed on this host "
                "(Debian: apt install restic); no off-host snapshot can be taken"
            )
    return notes


def _public_problems(settings: Settings) -> list[str]:
    from workers.proxy.process import web_route

    if not settings.public_host:
        return []
    try:
        web_route(settings)
    except ConfigError as exc:
        return [str(exc)]
    return []


def _host_problems(target: Target) -> list[str]:
    """What the file names but this host lacks, where a deployment could not go on without it."""
    rule = target.verify.commits
    if rule is None:
        return []
    from workers.signatures import key_problems

    return [f"targets.{target.name}.{problem}" for problem in key_problems(rule)]


def check_config() -> int:
    """Validate settings and the targets file; one line per problem. Exit 1 if the file
    or a setting it checks is wrong, 3 (usage) if there is nothing to check: settings that
    do not load, or a targets file that cannot be read."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc)
        return USAGE
    try:
        text = settings.config.read_text()
    except OSError as exc:
        print(f"ROLLHOOK_CONFIG: cannot read {settings.config}: {exc.strerror}")
        return USAGE
    targets, problems = parse_targets(text)
    if settings.git_token is None and settings.git_ssh_key is None:
        problems += [
            f"targets.{t.name}.sync.write_back: pushing needs ROLLHOOK_GIT_TOKEN or "
            "ROLLHOOK_GIT_SSH_KEY"
            for t in targets.values()
            if t.sync.write_back is not None
        ]
    problems += _public_problems(settings)
    problems += several_hosts_problems(
        targets,
        embedded_broker=settings.embedded_broker,
        sqlite_records=settings.records_url().startswith("sqlite"),
    )
    if not problems:
        problems = [problem for target in targets.values() for problem in _host_problems(target)]
    for problem in problems:
        print(problem)
    if problems:
        return 1
    try:
        restic_environment(os.environ)
    except ConfigError as exc:
        print(exc)
        return 1
    for target in targets.values():
        for note in _warnings(target):
            print(f"warning: {note}")
    if settings.public_host and "127.0.0.1" not in settings.trusted_proxies:
        print(
            "warning: ROLLHOOK_PUBLIC_HOST: the proxy reaches the web process from "
            "127.0.0.1; without ROLLHOOK_TRUSTED_PROXIES=127.0.0.1 every sender counts "
            "as that one address"
        )
    print(f"{settings.config}: OK, {len(targets)} target(s): {', '.join(targets) or 'none'}")
    return 0


def backups(args: argparse.Namespace) -> int:
    if getattr(args, "remote", False):
        from cli.offsite import remote_backups

        return remote_backups(args)
    from workers.backup import BackupStore
    from workers.layout import TargetDirs

    settings = load_settings()
    store = BackupStore(TargetDirs(settings.data_dir, args.target).backups)
    found = store.list()
    if not found:
        print(f"{args.target}: no backups")
    for info in found:
        print(
            f"{info.id}  {info.created_at}  {info.files} files  "
            f"{info.bytes_copied >> 20} MiB copied, {info.bytes_linked >> 20} MiB linked"
        )
    return 0


def restore(args: argparse.Namespace) -> int:
    if (args.backup is None) == (getattr(args, "from_remote", None) is None):
        print("restore takes a backup id, or --from-remote SNAPSHOT|latest", file=sys.stderr)
        return USAGE
    if not args.yes:
        print(
            "restore stops the service, replaces its data and starts it again; "
            "add --yes to go ahead",
            file=sys.stderr,
        )
        return USAGE
    if args.from_remote is not None:
        from cli import offsite

        return offsite.restore(args)
    from rollhook import broker
    from rollhook.records import deployments
    from rollhook.records.schema import TERMINAL_STATUSES
    from workers.context import build_context
    from workers.errors import OperatorError
    from workers.intake import queue_restore
    from workers.runner import run_target

    settings = load_settings()
    celery = broker.make_celery(settings.broker_url())
    targets = load_targets(settings.config)
    send = broker.sender(celery, lambda name: host_of(targets, name), retry=False)
    ctx = build_context(settings, send)
    try:
        deployment_id = queue_restore(ctx, args.target, args.backup)
    except OperatorError as exc:  # no such target or backup
        print(f"rollhook: {exc}")
        return USAGE
    print(
        f"{args.target}: restoring backup {args.backup} as deployment {deployment_id}", flush=True
    )
    run_target(ctx, args.target)  # returns at once if a worker holds the target: wait for it
    while True:
        with ctx.records.begin() as conn:
            record = deployments.get(conn, deployment_id)
        if record is not None and record.status in TERMINAL_STATUSES:
            break
        time.sleep(1.0)
    print_steps(record.steps or [], 0)
    print_end(args.target, record.status, record.reason)
    return exit_code([record.status])
