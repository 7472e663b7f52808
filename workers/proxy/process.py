"""``rollhook proxy``: the front and the switch, two ``caddy run`` processes, supervised.

The configurations are rendered at every start from the targets file (and the upstreams
last recorded, when the caller knows them); from then on only the admin APIs change them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from rollhook.datadir import prepare_data_dir
from rollhook.records.db import make_engine
from rollhook.settings import ConfigError, Settings
from rollhook.targets import Proxy as ProxySpec
from rollhook.targets import Target, load_targets
from workers import colours
from workers.proxy.config import (
    Layout,
    Route,
    Switch,
    front_config,
    loopback,
    route_of,
    switch_config,
)

STOP_TIMEOUT = 30.0
# The web process's route: no target can be named so (target names start with [a-z0-9]).
WEB = "_rollhook"
WEB_HOLD = 30.0  # a request may wait this long for a web process that restarts


def caddy_binary() -> str:
    path = shutil.which("caddy")
    if path is None:
        raise ConfigError("caddy: not installed (Debian: apt install caddy)")
    return path


def caddy_env(layout: Layout) -> dict[str, str]:
    """Caddy's environment: its own HOME and XDG directories, none of rollhook's secrets."""
    home = layout.caddy_home
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "xdg-data"),
        "XDG_CONFIG_HOME": str(home / "xdg-config"),
    }


def caddy_argv(config: Path) -> list[str]:
    return [caddy_binary(), "run", "--config", str(config)]


def plan(
    targets: Mapping[str, Target], upstreams: Mapping[str, str] | None = None
) -> tuple[list[Route], dict[str, Switch]]:
    """The routes and switches for every target with ``proxy``.

    Each switch serves the target's recorded upstream, or its ``proxy.port`` on loopback.
    """
    routes, switches = [], {}
    for target in targets.values():
        route = route_of(target)
        if route is None or target.proxy is None:
            continue
        routes.append(route)
        upstream = (upstreams or {}).get(target.name) or loopback(target.proxy.port)
        switches[target.name] = Switch(upstream, ready=True, hold=route.hold)
    return routes, switches


def web_route(settings: Settings) -> Route | None:
    """rollhook's own web process on ``ROLLHOOK_PUBLIC_HOST`` (None when it is unset)."""
    if not settings.public_host:
        return None
    try:
        spec = ProxySpec(
            listen=settings.public_listen,
            hosts=[settings.public_host],
            port=settings.port,
            hold=WEB_HOLD,
            tls=settings.public_tls,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        key = (
            "ROLLHOOK_PUBLIC_LISTEN" if error["loc"][:1] == ("listen",) else "ROLLHOOK_PUBLIC_HOST"
        )
        raise ConfigError(f"{key}: {error['msg'].removeprefix('Value error, ')}") from None
    return Route(WEB, spec.listen, tuple(spec.hosts), spec.hold, spec.tls)


def recorded_upstreams(records: Engine, targets: Mapping[str, Target]) -> dict[str, str]:
    """Per start-first target, the serving colour's upstream as the records say it.

    A recreate target always serves ``proxy.port``; a start-first one serves whichever
    colour its current deployment left serving, which may be ``proxy.port + 1``.
    """
    if not any(t.strategy == "start-first" and t.proxy for t in targets.values()):
        return {}
    with records.begin() as conn:
        ports = colours.serving_ports(conn, targets)
    return {name: loopback(port) for name, port in ports.items()}


def _upstreams_from_records(settings: Settings, targets: Mapping[str, Target]) -> dict[str, str]:
    engine = make_engine(settings.records_url())
    try:
        return recorded_upstreams(engine, targets)
    except SQLAlchemyError as exc:  # no records yet, or the database is down
        # The type only: a driver's message may carry the database URL.
        print(
            f"rollhook proxy: could not read which colour serves ({type(exc).__name__}); "
            "serving proxy.port until a deployment says otherwise",
            flush=True,
        )
        return {}
    finally:
        engine.dispose()


def write_configs(
    layout: Layout, routes: list[Route], switches: Mapping[str, Switch]
) -> tuple[Path, Path]:
    """Write both configurations (private files); return the front's and the switch's."""
    layout.check()
    for folder in (layout.root, layout.root / "t", layout.caddy_home):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = layout.root / "front.json", layout.root / "switch.json"
    configs: tuple[dict[str, Any], dict[str, Any]] = (
        front_config(layout, routes),
        switch_config(layout, switches),
    )
    for path, config in zip(paths, configs, strict=True):
        partial = path.with_suffix(".tmp")
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(config, f, indent=1)
        partial.replace(path)
    return paths


def clear_stale_sockets(layout: Layout) -> list[Path]:
    """Remove sockets a killed Caddy left behind (nothing accepts on them); return them."""
    stale = []
    for path in [layout.front_admin, layout.switch_admin, *layout.root.glob("t/*.sock")]:
        if not path.is_socket():
            continue
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink(missing_ok=True)
                stale.append(path)
    return stale


def _pipe(name: str, stream: IO[bytes]) -> None:
    for raw in iter(stream.readline, b""):
        sys.stdout.write(f"{name:<6}| {raw.decode(errors='replace').rstrip()}\n")
        sys.stdout.flush()


def run_proxy(settings: Settings, upstreams: Mapping[str, str] | None = None) -> int:
    """Render both configurations and run the switch and the front until signalled.

    Without ``upstreams``, start-first targets serve the colour the records say serves.
    """
    targets = load_targets(settings.config)
    prepare_data_dir(settings.data_dir)
    if upstreams is None:
        upstreams = _upstreams_from_records(settings, targets)
    layout = Layout(settings.data_dir / "proxy")
    routes, switches = plan(targets, upstreams)
    web = web_route(settings)
    if web is not None:
        routes.append(web)
        switches[WEB] = Switch(loopback(settings.port), ready=True, hold=web.hold)
    front, switch = write_configs(layout, routes, switches)
    clear_stale_sockets(layout)
    env = caddy_env(layout)
    children: dict[str, subprocess.Popen[bytes]] = {}
    pipes: list[threading.Thread] = []
    # The switch first: the front probes it from its first second.
    for name, config in (("switch", switch), ("front", front)):
        child = subprocess.Popen(
            caddy_argv(config),
            env=env,
            cwd=layout.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        children[name] = child
        pipe = threading.Thread(target=_pipe, args=(name, child.stdout), daemon=True)
        pipe.start()
        pipes.append(pipe)
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    names = ", ".join(
        f"{'rollhook' if r.target == WEB else r.target} on {r.listen}" for r in routes
    )
    names = names or "no target has proxy yet"
    print(f"rollhook proxy: {names}", flush=True)
    while not done.wait(0.5):
        if any(child.poll() is not None for child in children.values()):
            break
    failed = [n for n, c in children.items() if c.poll() not in (None, 0)]
    for child in reversed(children.values()):
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    for name, child in children.items():
        try:
            child.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"rollhook proxy: {name} did not stop in {STOP_TIMEOUT:.0f}s; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    # A daemon thread still writing to stdout at interpreter exit aborts Python (SIGABRT).
    for pipe in pipes:
        pipe.join(5)
    if failed:
        print(f"rollhook proxy: {', '.join(failed)} exited with an error", file=sys.stderr)
        return 1
    return 0
