"""The API commands: deploy, rollback, pause, resume, history, show, status."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from typing import Any

import httpx

from cli.output import print_end, print_steps
from rollhook.records.schema import TERMINAL_STATUSES
from rollhook.settings import Settings


class ApiError(Exception):
    pass


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
            raise ApiError(f"{response.status_code}: {reason}")
        return body


def _latest(client: Client, deployment_id: str) -> dict[str, Any]:
    """A deployment, or the one it was coalesced into."""
    record = client.call("GET", f"/deployments/{deployment_id}")
    while record["status"] == "superseded" and record.get("superseded_by"):
        record = client.call("GET", f"/deployments/{record['superseded_by']}")
    return record


def follow(client: Client, event_id: str, timeout: float = 3600) -> int:
    """Show progress until every deployment the event led to is final."""
    deadline = time.monotonic() + timeout
    printed: dict[str, int] = {}
    while time.monotonic() < deadline:
        jobs = client.call("GET", f"/events/{event_id}").get("jobs") or []
        records = [_latest(client, j["deployment_id"]) for j in jobs if j.get("deployment_id")]
        for record in records:
            if record["id"] not in printed:
                print(f"{record['target']}: deployment {record['id']}", flush=True)
            steps = record.get("steps") or []
            printed[record["id"]] = print_steps(steps, printed.get(record["id"], 0))
        if (
            records
            and len(records) == len(jobs)
            and all(r["status"] in TERMINAL_STATUSES for r in records)
        ):
            for record in records:
                print_end(record["target"], record["status"], record.get("reason"))
            return 0 if all(r["status"] in {"succeeded", "no_op"} for r in records) else 1
        time.sleep(1.0)
    print("timed out waiting; the deployment goes on", file=sys.stderr)
    return 1


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
        return 1


def _dispatch(client: Client, args: argparse.Namespace) -> int:
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
        answer = client.call("POST", path, json=body)
        print(
            f"{answer['status']}: event {answer.get('id')}"
            + (f" ({answer['reason']})" if answer.get("reason") else ""),
            flush=True,
        )
        if getattr(args, "wait", False) and answer["status"] == "queued":
            return follow(client, answer["id"])
        return 0
    if command in {"pause", "resume"}:
        body = {"reason": args.reason} if command == "pause" and args.reason else {}
        answer = client.call("POST", f"/targets/{args.target}/{command}", json=body)
        print(f"{args.target}: {answer.get('status')}")
        return 0
    if command == "history":
        params: dict[str, Any] = {"limit": args.limit}
        if args.target:
            params["target"] = args.target
        for record in client.call("GET", "/deployments", params=params)["deployments"]:
            commit = (record.get("commit") or "")[:12] or "-"
            print(
                f"{record['id']}  {record['target']:<16} {record['status']:<12} "
                f"{commit:<12} {record.get('created_at', '')}  {record.get('reason') or ''}"
            )
        return 0
    if command == "show":
        print(json.dumps(client.call("GET", f"/deployments/{args.deployment}"), indent=2))
        return 0
    print(json.dumps(client.call("GET", "/targets"), indent=2))
    return 0
