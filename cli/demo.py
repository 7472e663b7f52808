"""``rollhook demo`` (``make demo``): rollhook's whole loop on this machine, no GitHub.

It sets up, under ``$ROLLHOOK_DATA_DIR/demo/``, a registry on 127.0.0.1, a small app
built here (three versions: 1.0.0, 1.1.0, and a broken 2.0.0), and an infra repo that
says which version runs; then it runs rollhook (web, worker, beat, and the registry, as
``rollhook up`` does), deploys the app, and prints what to try next: a commit and the
exact signed push that deploys it, and a broken release that rolls back by itself.
Ctrl-C stops rollhook and the registry; the app keeps running (``--down`` removes it).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import socket
import subprocess
import threading
import time
from pathlib import Path

import docker
import httpx

from cli import demoapp, output
from cli.api import ApiError, Client, follow
from cli.demoapp import DemoError, DemoLayout
from rollhook.settings import INBOUND_SECRETS, ConfigError, Settings, load_settings


def say(text: str) -> None:
    print(f"rollhook demo: {text}", flush=True)


def ensure_secrets(data_dir: Path) -> None:
    """The secrets `make run` makes (one file each, 0600), used unless set otherwise."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # the app's data and backups
    folder = data_dir / "secrets"
    folder.mkdir(exist_ok=True, mode=0o700)
    for name in INBOUND_SECRETS:  # each generated, as the web process checks them all
        path = folder / name
        if not path.exists() or not path.read_text().strip():
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32) + "\n")
        var = f"ROLLHOOK_{name.upper()}"
        if var not in os.environ and f"{var}_FILE" not in os.environ:
            os.environ[f"{var}_FILE"] = str(path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _check_engine(docker_host: str | None) -> None:
    where = docker_host or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=where, timeout=10)
        try:
            client.ping()
        finally:
            client.close()
    except docker.errors.DockerException as exc:
        raise DemoError(
            f"no Docker engine answers at {where}: start one (systemctl start docker) or "
            f"set DOCKER_HOST ({exc.__class__.__name__})"
        ) from exc


def _secret_expression() -> str:
    """How a shell line gets the GitHub secret this rollhook uses (never its value)."""
    if path := os.environ.get("ROLLHOOK_GITHUB_SECRET_FILE"):
        return f"$(cat {shlex.quote(path)})"
    return "$ROLLHOOK_GITHUB_SECRET"


def curl_lines(url: str, layout: DemoLayout) -> list[str]:
    """A signed GitHub push of the infra repo's head, as shell lines (README's recipe)."""
    infra = shlex.quote(str(layout.infra))
    body = (
        'body=\'{"ref":"refs/heads/main","after":"\'$(git -C '
        + infra
        + ' rev-parse HEAD)\'","repository":{"clone_url":"'
        + layout.repo_url
        + "\"}}'"
    )
    signature = (
        '"X-Hub-Signature-256: sha256=$(printf %s "$body" | openssl dgst -sha256 -hmac "'
        + _secret_expression()
        + "\" -r | cut -d' ' -f1)\""
    )
    curl = (
        f"curl -sS {url}/hooks/github -H 'Content-Type: application/json' "
        "-H 'X-GitHub-Event: push' -H \"X-GitHub-Delivery: $(date +%s%N)\" "
        f'-H {signature} --data-binary "$body"'
    )
    return [body, curl]


def next_steps(url: str, layout: DemoLayout, app_port: int) -> str:
    infra = shlex.quote(str(layout.infra))
    commit = (
        f"sed -i 's/^APP_VERSION=.*/APP_VERSION={{v}}/' {infra}/.env && "
        f"git -C {infra} commit -qam 'app {{v}}'"
    )
    curl = "\n".join(f"     {line}" for line in curl_lines(url, layout))
    return f"""
The demo app serves on http://127.0.0.1:{app_port}/ (rollhook on {url}).

Next, in another terminal (`rollhook` is on PATH after `make run` or `make install`):

  1. A new version, deployed by a signed GitHub push (as GitHub would send it):
     {commit.format(v="1.1.0")}
     rollhook send-test-hook demo --wait
   or the same push with curl:
{curl}

  2. A broken release (it migrates the data, then cannot start): rollhook rolls it
     back by itself and restores the data as it was:
     {commit.format(v="2.0.0")}
     rollhook send-test-hook demo --wait      # exit code 2: rolled back

  3. Look around: rollhook status, rollhook history, rollhook show <deployment>

Ctrl-C stops rollhook; the app keeps running (`rollhook demo --down` removes it).
rollhook's log follows (also in {layout.logs}/).
"""


def _wait(what: str, check: object, timeout: float, stop: threading.Event) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if callable(check) and check():
            return
        time.sleep(0.5)
    if not stop.is_set():
        raise DemoError(f"{what} did not come up within {timeout:g} s (see the logs)")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Narrative:
    """What the demo does once its processes run: images, first deployment, next steps."""

    def __init__(self, settings: Settings, layout: DemoLayout, url: str, ports: dict[str, int]):
        self.settings, self.layout, self.url, self.ports = settings, layout, url, ports
        self.result: int | None = None

    def run(self, supervisor: object, stop: threading.Event) -> None:
        try:
            self.result = self._run(stop)
        except (DemoError, ApiError) as exc:
            say(str(exc))
            self.result = output.FAILED
            stop.set()
        finally:
            echo = getattr(supervisor, "echo", None)
            if isinstance(echo, threading.Event):
                echo.set()

    def _run(self, stop: threading.Event) -> int:
        registry = f"127.0.0.1:{self.ports['registry']}"
        _wait("the demo registry", lambda: demoapp.registry_answers(registry), 60, stop)
        pushed = demoapp.build_and_push(self.settings.docker_host, registry)
        if pushed:
            say(f"built the demo app {', '.join(pushed)} and pushed it to {registry}")
        _wait("rollhook", lambda: _ready(self.url), 300, stop)
        if stop.is_set():
            return output.FAILED
        token = self.settings.api_token
        client = Client(self.url, token.get_secret_value() if token else None)
        answer = client.call("POST", "/deploy", json={"target": demoapp.TARGET})
        say(f"deploying the infra repo's head ({demoapp.head(self.layout)[:12]})")
        code = follow(client, answer["id"])
        print(next_steps(self.url, self.layout, self.ports["app"]), flush=True)
        return code


def down(settings: Settings) -> int:
    from workers.compose import find_compose

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if settings.docker_host:
        env["DOCKER_HOST"] = settings.docker_host
    done = subprocess.run(
        [*find_compose(), "-p", demoapp.PROJECT, "down", "--timeout", "5"],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    if done.returncode != 0:
        say(f"compose down failed: {done.stderr.strip()}")
        return output.FAILED
    say(f"removed the demo app's containers; its files stay in {settings.data_dir / 'demo'}")
    return output.OK


def demo(args: argparse.Namespace) -> int:
    from cli.processes import Supervisor, _argv, prepare

    data_dir = Path(os.environ.get("ROLLHOOK_DATA_DIR", "data")).resolve()
    os.environ["ROLLHOOK_DATA_DIR"] = str(data_dir)
    layout = DemoLayout(data_dir / "demo")
    try:
        ensure_secrets(data_dir)
        settings = load_settings()
        if args.down:
            return down(settings)
        _check_engine(settings.docker_host)
        state = demoapp.load_state(layout)
        ports = {
            "registry": state.get("registry") or _free_port(),
            "app": state.get("app") or args.app_port,
        }
        port = args.port or settings.port
        for what, number in (("rollhook", port), ("the demo registry", ports["registry"])):
            if not _port_free(number):
                raise DemoError(f"port {number} ({what}) is taken: stop what uses it")
        demoapp.save_state(layout, ports)
        registry = demoapp.registry_command(layout, ports["registry"])
        registry_host = f"127.0.0.1:{ports['registry']}"
        if demoapp.create_infra(layout, registry_host, ports["app"]):
            say(f"created the infra repo {layout.infra} ({layout.repo_url})")
        layout.config.write_text(demoapp.targets_file(layout, registry_host, ports["app"]))
        os.environ["ROLLHOOK_CONFIG"] = str(layout.config)
        os.environ.setdefault("ROLLHOOK_NOTIFY_CONSOLE", "true")
        settings, _ = prepare()
    except (DemoError, ConfigError) as exc:
        say(str(exc))
        return output.USAGE if isinstance(exc, ConfigError) else output.FAILED

    url = f"http://127.0.0.1:{port}"
    commands = {"registry": registry}
    commands |= {n: _argv(n, settings, "127.0.0.1", port) for n in ("web", "worker", "beat")}
    supervisor = Supervisor(commands, log_dir=layout.logs)
    supervisor.echo.clear()  # the narrative first; the processes' lines after it
    say(f"targets file {layout.config}; logs in {layout.logs}/")
    supervisor.start()
    story = Narrative(settings, layout, url, ports)
    threading.Thread(target=story.run, args=(supervisor, supervisor.done), daemon=True).start()
    code = supervisor.run(settings, name="rollhook demo")
    if story.result not in (None, output.OK):
        return story.result
    return code if story.result is not None else output.FAILED
