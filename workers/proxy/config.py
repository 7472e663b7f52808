"""The two Caddy configurations, as pure functions of what rollhook wants served.

The front (``front_config``) holds one route per target: its ``listen`` address, its
``hosts`` (Caddy's automatic HTTPS) and how long a request may be held. Every route
proxies to that target's socket on the switch, and probes it (``PROBE_PATH``) to know
whether it may send requests at all. The switch (``switch_config``) holds one server per
target on that socket: it answers the probe (200 ready, 503 holding) and proxies
everything else to the upstream that serves. Why two processes: see ``workers.proxy``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rollhook.targets import Target

# Only rollhook reaches the admin endpoints (unix sockets in the private data directory);
# Caddy 2.6 checks the Host header of admin requests against this list.
ADMIN_HOST = "rollhook"
PROBE_PATH = "/.rollhook/ready"
PROBE_HEADER = "X-Rollhook-Probe"
# How often the front probes each switch socket, and how often a held request looks again.
PROBE_INTERVAL = 0.1
TRY_INTERVAL = 0.1
PROBE_TIMEOUT = 2.0
# Unix socket paths are limited to 107 bytes (sun_path).
_SUN_PATH = 107
_FORWARDED = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host")


class LayoutError(ValueError):
    """The data directory is too deep for the proxy's unix sockets."""


@dataclass(frozen=True)
class Layout:
    """Where the proxy's sockets and Caddy's own files live (``<data dir>/proxy``)."""

    root: Path

    @property
    def front_admin(self) -> Path:
        return self.root / "front.sock"

    @property
    def switch_admin(self) -> Path:
        return self.root / "switch.sock"

    @property
    def caddy_home(self) -> Path:
        """HOME and XDG directories of both Caddy processes: certificates, PKI, locks."""
        return self.root / "caddy"

    def target_socket(self, target: str) -> Path:
        path = self.root / "t" / f"{target}.sock"
        if len(str(path)) > _SUN_PATH:
            raise LayoutError(f"{path} is longer than a unix socket path may be ({_SUN_PATH})")
        return path

    def check(self) -> None:
        """Raise LayoutError if even the admin sockets cannot be bound here."""
        for path in (self.front_admin, self.switch_admin):
            if len(str(path)) > _SUN_PATH:
                raise LayoutError(f"{path} is longer than a unix socket path may be")


@dataclass(frozen=True)
class Route:
    """One target's place on the front: where it listens and how long requests may wait."""

    target: str
    listen: str
    hosts: tuple[str, ...] = ()
    hold: float = 60.0
    tls: Literal["auto", "internal"] = "auto"


@dataclass(frozen=True)
class Switch:
    """What the switch does for one target: where requests go, and whether it is ready.

    ``draining`` are earlier upstreams kept in the configuration (never chosen) only so
    that Caddy keeps counting their in-flight requests until they are drained.
    """

    upstream: str
    ready: bool = True
    hold: float = 60.0
    draining: tuple[str, ...] = field(default=())


def route_of(target: Target) -> Route | None:
    """The front route for a target of the targets file (None without ``proxy``)."""
    if target.proxy is None:
        return None
    proxy = target.proxy
    return Route(target.name, proxy.listen, tuple(proxy.hosts), proxy.hold, proxy.tls)


def loopback(port: int) -> str:
    """The upstream address of a service published on this host's loopback."""
    return f"127.0.0.1:{port}"


def duration(seconds: float) -> str:
    """Seconds as a Go duration string Caddy accepts (whole milliseconds)."""
    return f"{round(seconds * 1000)}ms"


def _admin(socket: Path) -> dict[str, Any]:
    return {
        "listen": f"unix/{socket}",
        "origins": [ADMIN_HOST],
        # rollhook renders the configuration at every start; no autosave to disagree with it.
        "config": {"persist": False},
    }


def _quiet(*loggers: str) -> dict[str, Any]:
    return {"logs": {"default": {"exclude": list(loggers)}}}


# -- the front ---------------------------------------------------------------------------


def _front_route(layout: Layout, route: Route) -> dict[str, Any]:
    proxy: dict[str, Any] = {
        "handler": "reverse_proxy",
        "upstreams": [{"dial": f"unix/{layout.target_socket(route.target)}"}],
        # A fresh connection per request: a switch reload closes idle keep-alive
        # connections, and a POST sent on one being closed could not be retried.
        "transport": {"protocol": "http", "keep_alive": {"enabled": False}},
        "load_balancing": {
            "try_duration": duration(route.hold),
            "try_interval": duration(TRY_INTERVAL),
            # Caddy 2.6 retries only GET after a non-dial error such as "no upstreams
            # available"; while held no upstream was dialled and the body is untouched,
            # so every method may wait.
            "retry_match": [{}],
        },
        "health_checks": {
            "active": {
                "uri": PROBE_PATH,
                "headers": {PROBE_HEADER: ["1"]},
                "interval": duration(PROBE_INTERVAL),
                "timeout": duration(PROBE_TIMEOUT),
            }
        },
    }
    body: dict[str, Any] = {"@id": f"rollhook-{route.target}", "handle": [proxy], "terminal": True}
    if route.hosts:
        body["match"] = [{"host": list(route.hosts)}]
    return body


def _server_name(listen: str) -> str:
    return f"front {listen}"


def _route_target(route: Mapping[str, Any]) -> str | None:
    ident = route.get("@id")
    if isinstance(ident, str) and ident.startswith("rollhook-"):
        return ident.removeprefix("rollhook-")
    return None


def _sorted_routes(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Routes with hosts first (by target), then one without, then 404 for the rest."""
    mine = [r for r in routes if _route_target(r) is not None]
    mine.sort(key=lambda r: ("match" not in r, _route_target(r)))
    return [*mine, {"handle": [{"handler": "static_response", "status_code": 404}]}]


def _server(listen: str, routes: list[dict[str, Any]]) -> dict[str, Any]:
    server: dict[str, Any] = {"listen": [listen], "routes": _sorted_routes(routes)}
    if not listen.endswith(":443"):
        # Redirects would bind port 80; only a server on :443 gets them.
        server["automatic_https"] = {"disable_redirects": True}
    return server


def empty_front_apps() -> dict[str, Any]:
    return {
        "http": {"servers": {}},
        # Caddy's local CA (``tls: internal``) must never touch the system trust store.
        "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
    }


def drop_route(apps: Mapping[str, Any], target: str) -> dict[str, Any]:
    """The front's ``apps`` without the target's route and certificate policy."""
    result = copy.deepcopy(dict(apps))
    servers = result.setdefault("http", {}).setdefault("servers", {})
    for name in list(servers):
        listen = servers[name].get("listen", [""])[0]
        routes = [r for r in servers[name].get("routes", []) if _route_target(r) is not None]
        kept = [r for r in routes if _route_target(r) != target]
        if not kept:
            del servers[name]
        elif len(kept) != len(routes):
            servers[name] = _server(listen, kept)
    tls = result.get("tls", {}).get("automation", {})
    policies = tls.get("policies")
    if policies is not None:
        tls["policies"] = [p for p in policies if p.get("@id") != f"rollhook-{target}-tls"]
        if not tls["policies"]:
            del result["tls"]
    return result


def place_route(apps: Mapping[str, Any], layout: Layout, route: Route) -> dict[str, Any]:
    """The front's ``apps`` with the target's route (replaced if it was there)."""
    result = drop_route(apps, route.target)
    servers = result["http"]["servers"]
    name = _server_name(route.listen)
    existing = servers.get(name, {}).get("routes", [])
    servers[name] = _server(route.listen, [*existing, _front_route(layout, route)])
    if route.tls == "internal" and route.hosts:
        policies = result.setdefault("tls", {}).setdefault("automation", {})
        policies.setdefault("policies", []).append(
            {
                "@id": f"rollhook-{route.target}-tls",
                "subjects": list(route.hosts),
                "issuers": [{"module": "internal"}],
            }
        )
    return result


def front_config(layout: Layout, routes: Iterable[Route]) -> dict[str, Any]:
    """The whole front configuration: admin socket, quiet probes, one route per target."""
    apps = empty_front_apps()
    for route in routes:
        apps = place_route(apps, layout, route)
    return {
        "admin": _admin(layout.front_admin),
        # A failing probe is the normal state of a hold: not ten log lines a second.
        # (Caddy 2.6 logs each admin request at info whatever the exclude list says.)
        "logging": _quiet("http.handlers.reverse_proxy.health_checker.active"),
        "storage": {"module": "file_system", "root": str(layout.caddy_home / "data")},
        "apps": apps,
    }


# -- the switch --------------------------------------------------------------------------


def switch_server(layout: Layout, target: str, switch: Switch) -> dict[str, Any]:
    """The switch's server for one target, on the socket the front dials."""
    probe = {
        "@id": f"rollhook-{target}-probe",
        "match": [{"path": [PROBE_PATH], "header": {PROBE_HEADER: ["1"]}}],
        "handle": [{"handler": "static_response", "status_code": 200 if switch.ready else 503}],
        "terminal": True,
    }
    upstream = {
        "@id": f"rollhook-{target}-upstream",
        "handle": [
            {
                "handler": "reverse_proxy",
                "upstreams": [{"dial": switch.upstream}],
                # A request that reached the switch while its app restarts by itself
                # (a crash, the restart policy) waits for it; held requests wait in front.
                "load_balancing": {
                    "try_duration": duration(switch.hold),
                    "try_interval": duration(TRY_INTERVAL),
                },
                # The front's socket has no client address, so Caddy drops the
                # X-Forwarded-* headers the front set; only the front reaches this
                # socket, so its headers are put back as they came.
                "headers": {
                    "request": {"set": {h: [f"{{http.request.header.{h}}}"] for h in _FORWARDED}}
                },
            }
        ],
        "terminal": True,
    }
    routes: list[dict[str, Any]] = [probe]
    if switch.draining:
        routes.append(
            {
                "@id": f"rollhook-{target}-draining",
                "match": [{"expression": "false"}],
                "handle": [
                    {
                        "handler": "reverse_proxy",
                        "upstreams": [{"dial": dial} for dial in switch.draining],
                    }
                ],
            }
        )
    routes.append(upstream)
    return {"listen": [f"unix/{layout.target_socket(target)}"], "routes": routes}


def read_switch(server: Mapping[str, Any]) -> Switch:
    """What a switch server (as ``switch_server`` wrote it) is doing."""
    ready, upstream, hold, draining = True, "", 60.0, ()
    for route in server.get("routes", []):
        ident = str(route.get("@id", ""))
        handler = route["handle"][0]
        if ident.endswith("-probe"):
            ready = handler.get("status_code") == 200
        elif ident.endswith("-draining"):
            draining = tuple(u["dial"] for u in handler["upstreams"])
        elif ident.endswith("-upstream"):
            upstream = handler["upstreams"][0]["dial"]
            hold = _seconds(handler["load_balancing"]["try_duration"])
    if not upstream:
        raise ValueError("not a switch server written by rollhook")
    return Switch(upstream, ready, hold, draining)


def _seconds(text: str | int) -> float:
    if isinstance(text, int):
        return text / 1e9
    return float(text.removesuffix("ms")) / 1000


def switch_config(layout: Layout, switches: Mapping[str, Switch]) -> dict[str, Any]:
    """The whole switch configuration: admin socket and one server per target."""
    return {
        "admin": _admin(layout.switch_admin),
        "storage": {"module": "file_system", "root": str(layout.caddy_home / "data")},
        "apps": {
            "http": {
                "servers": {
                    target: switch_server(layout, target, switch)
                    for target, switch in sorted(switches.items())
                }
            }
        },
    }
