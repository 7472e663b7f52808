"""The API commands: deploy, rollback, pause, resume, history, show, status."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

import httpx

from cli import output
from cli.output import Progress
from rollhook.records.schema import TERMINAL_STATUSES
from rollhook.settings import Settings


class ApiError(Exception):
    def __init__(self, message: str, code: int = output.FAILED) -> None:
        super().__init__(message)
        self.code = code  # the exit code: USAGE for what the caller got wrong


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=15.0)

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach rollhook at {self.http.base_url}: {exc}") from exc
        try:
            body: dict[str, Any] = response.json()
        except ValueError:
            body = {"status": "error", "reason": response.text.strip()[:200]}
        if response.status_code >= 400:
            reason = body.get("reason") or body.get("status") or response.reason_phrase
            # 400, 401, 404: the request, the token or the target name is wrong.
            code = output.USAGE if response.status_code in {400, 401, 404} else output.FAILED
            raise ApiError(f"{response.status_code}: {reason}", code)
        return body


def _latest(client: Client, deployment_id: str) -> dict[str, Any]:
    """A deployment, or the one it was coalesced into."""
    record = client.call("GET", f"/deployments/{deployment_id}")
    while record["status"] == "superseded" and record.get("superseded_by"):
        record = client.call("GET", f"/deployments/{record['superseded_by']}")
    return record


def follow(client: Client, event_id: str, timeout: float = 3600) -> int:
    """Show progress until every deployment the event led to is final; its exit code."""
    deadline = time.monotonic() + timeout
    printed: dict[str, int] = {}
    progress = Progress()
    while time.monotonic() < deadline:
        jobs = client.call("GET", f"/events/{event_id}").get("jobs") or []
        records = [_latest(client, j["deployment_id"]) for j in jobs if j.get("deployment_id")]
        for record in records:
            if record["id"] not in printed:
                progress.line(f"{record['target']}: deployment {record['id']}")
            steps = record.get("steps") or []
            printed[record["id"]] = progress.steps(steps, printed.get(record["id"], 0))
        if (
            records
            and len(records) == len(jobs)
            and all(r["status"] in TERMINAL_STATUSES for r in records)
        ):
            for record in records:
                progress.end(record["target"], record["status"], record.get("reason"))
            return output.exit_code(r["status"] for r in records)
        time.sleep(1.0)
    progress.line("")
    print("timed out waiting; the deployment goes on", file=sys.stderr)
    return output.FAILED


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def run_api_command(args: argparse.Namespace, settings: Settings) -> int:
    url = args.url or f"http://127.0.0.1:{settings.port}"
    token = settings.api_token.get_secret_value() if settings.api_token else None
    client = Client(url, token)
    try:
        return _dispatch(client, args)
    except ApiError as exc:
        print(f"rollhook: {exc}", file=sys.stderr)
        return exc.code


def _dispatch(client: Client, args: argparse.Namespace) -> int:  # noqa: PLR0911, PLR0912 (per command)
    command = args.command
    if command in {"deploy", "rollback", "sync", "approve", "reject"}:
        body: dict[str, Any] = {"target": args.target}
        path = f"/{command}"
        if command == "deploy":
            body |= {k: v for k, v in (("ref", args.ref), ("image", args.image)) if v}
        elif command == "rollback":
            body |= {
                k: v for k, v in (("to", args.to), ("restore_data", args.restore)) if v is not None
            }
        else:  # recorded as approved (a sync) or rejected by whoever runs it
            verb = "reject" if command == "reject" else "sync"
            body, path = {"actor": _who()}, f"/targets/{args.target}/{verb}"
        if getattr(args, "force", False):
            body["force"] = True
        answer = client.call("POST", path, json=body)
        print(
            f"{answer['status']}: event {answer.get('id')}"
            + (f" ({answer['reason']})" if answer.get("reason") else ""),
            flush=True,
        )
        if getattr(args, "wait", False) and answer["status"] == "queued":
            return follow(client, answer["id"])
        return output.OK
    if command in {"pause", "resume"}:
        body = {"reason": args.reason} if command == "pause" and args.reason else {}
        answer = client.call("POST", f"/targets/{args.target}/{command}", json=body)
        print(f"{args.target}: {answer.get('status')}")
        return output.OK
    if command == "history":
        params: dict[str, Any] = {"limit": args.limit}
        if args.target:
            params["target"] = args.target
        found = client.call("GET", "/deployments", params=params)["deployments"]
        if args.json:
            print(json.dumps(found, indent=2))
            return output.OK
        output.table(
            ("DEPLOYMENT", "TARGET", "STATUS", "COMMIT", "CREATED", "REASON"),
            [
                (
                    r["id"],
                    r["target"],
                    r["status"],
                    (r.get("commit") or "")[:12] or "-",
                    r.get("created_at") or "-",
                    r.get("reason") or "",
                )
                for r in found
            ],
        )
        return output.OK
    if command == "show":
        print(json.dumps(client.call("GET", f"/deployments/{args.deployment}"), indent=2))
        return output.OK
    if command == "hosts":
        found = client.call("GET", "/hosts")
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            print_hosts(found.get("hosts") or [])
        return output.OK
    answer = client.call("GET", "/targets")
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print_status(answer.get("targets") or [])
    return output.OK


def _state(target: dict[str, Any]) -> str:
    words = []
    if target.get("paused"):
        reason = target.get("paused_reason")
        words.append("paused" + (f" ({reason})" if reason else ""))
    if target.get("held"):
        words.append("held (manual rollback)")
    if target.get("lease"):
        words.append("deploying")
    sync = target.get("sync")
    if isinstance(sync, dict) and sync.get("status") == "waiting_for_host":
        words.append(f"waiting for host {target.get('host')}")
    elif isinstance(sync, dict) and sync.get("status"):
        pending = sync.get("pending")
        reason = pending.get("reason") if isinstance(pending, dict) else None
        if sync["status"] == "pending" and reason:
            words.append(f"pending ({reason})")
        else:
            words.append(str(sync["status"]))
    return ", ".join(words) or "ready"


def _version(target: dict[str, Any], current: dict[str, Any]) -> str:
    """The gated service's image tag (or short digest) in the current deployment."""
    images = current.get("images") or {}
    entry = images.get(target.get("service")) or next(iter(images.values()), None)
    image = (entry or {}).get("new") if isinstance(entry, dict) else None
    if not image:
        return "-"
    name, _, digest = str(image).partition("@")
    tail = name.rsplit("/", 1)[-1]
    return tail.split(":", 1)[1] if ":" in tail else digest[:19] or tail


def print_status(targets: list[dict[str, Any]]) -> None:
    if not targets:
        print("no targets configured")
        return
    rows = []
    for target in targets:
        current = target.get("current_deployment") or {}
        rows.append(
            (
                target["name"],
                _state(target),
                _version(target, current),
                (current.get("commit") or "")[:12] or "-",
                current.get("id") or "-",
                output.ago(current.get("finished_at")),
            )
        )
    output.table(("TARGET", "STATE", "VERSION", "COMMIT", "DEPLOYMENT", "SINCE"), rows)


def print_hosts(hosts: list[dict[str, Any]]) -> None:
    if not hosts:
        print("no hosts seen yet (no worker has beat)")
        return
    output.table(
        ("HOST", "STATE", "LAST SEEN", "WORKERS", "VERSIONS"),
        [
            (
                h["name"],
                h["state"],
                output.ago(h.get("last_seen")),
                str(len(h.get("workers") or [])),
                "; ".join(h.get("versions") or []) or "-",
            )
            for h in hosts
        ],
    )
