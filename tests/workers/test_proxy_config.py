"""The proxy's Caddy configurations, rendered from what rollhook wants (pure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rollhook.targets import parse_targets
from workers.proxy.config import (
    Layout,
    LayoutError,
    Route,
    Switch,
    drop_route,
    empty_front_apps,
    front_config,
    place_route,
    read_switch,
    route_of,
    switch_config,
    switch_server,
)
from workers.proxy.process import plan

LAYOUT = Layout(Path("/var/lib/rollhook/proxy"))


def front_routes(config: dict[str, Any], listen: str) -> list[dict[str, Any]]:
    routes: list[dict[str, Any]] = config["apps"]["http"]["servers"][f"front {listen}"]["routes"]
    return routes


def test_each_target_proxies_to_its_switch_socket_and_may_wait_hold() -> None:
    config = front_config(LAYOUT, [Route("llm", "127.0.0.1:8080", (), hold=60)])
    assert config["admin"] == {
        "listen": "unix//var/lib/rollhook/proxy/front.sock",
        "origins": ["rollhook"],
        "config": {"persist": False},
    }
    route, fallback = front_routes(config, "127.0.0.1:8080")
    assert "match" not in route  # no hosts: every request on that address
    proxy = route["handle"][0]
    assert proxy["upstreams"] == [{"dial": "unix//var/lib/rollhook/proxy/t/llm.sock"}]
    assert proxy["load_balancing"]["try_duration"] == "60000ms"
    assert proxy["load_balancing"]["retry_match"] == [{}]  # every method may wait
    assert proxy["health_checks"]["active"]["uri"] == "/.rollhook/ready"
    assert proxy["transport"]["keep_alive"] == {"enabled": False}
    assert fallback == {"handle": [{"handler": "static_response", "status_code": 404}]}
    assert config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False


@pytest.mark.parametrize(
    ("listen", "redirects"),
    [(":443", True), ("0.0.0.0:443", True), ("127.0.0.1:8443", False), (":80", False)],
)
def test_only_a_server_on_443_binds_port_80_for_redirects(listen: str, redirects: bool) -> None:
    config = front_config(LAYOUT, [Route("llm", listen, ("llm.example.com",))])
    server = config["apps"]["http"]["servers"][f"front {listen}"]
    assert ("automatic_https" not in server) is redirects


def test_targets_sharing_an_address_share_a_server_and_internal_tls_is_per_target() -> None:
    routes = [
        Route("b", ":443", ("b.example.com",), tls="internal"),
        Route("a", ":443", ("a.example.com", "www.a.example.com")),
    ]
    config = front_config(LAYOUT, routes)
    assert list(config["apps"]["http"]["servers"]) == ["front :443"]
    ids = [r.get("@id") for r in front_routes(config, ":443")]
    assert ids == ["rollhook-a", "rollhook-b", None]
    assert front_routes(config, ":443")[0]["match"] == [
        {"host": ["a.example.com", "www.a.example.com"]}
    ]
    assert config["apps"]["tls"]["automation"]["policies"] == [
        {
            "@id": "rollhook-b-tls",
            "subjects": ["b.example.com"],
            "issuers": [{"module": "internal"}],
        }
    ]


def test_a_route_without_hosts_comes_after_those_with_hosts() -> None:
    routes = [Route("any", ":80"), Route("named", ":80", ("named.example.com",))]
    ids = [r.get("@id") for r in front_routes(front_config(LAYOUT, routes), ":80")]
    assert ids == ["rollhook-named", "rollhook-any", None]


def test_placing_a_route_again_replaces_it_and_moving_it_empties_the_old_server() -> None:
    apps = place_route(empty_front_apps(), LAYOUT, Route("a", ":443", ("a.test",), tls="internal"))
    assert place_route(apps, LAYOUT, Route("a", ":443", ("a.test",), tls="internal")) == apps
    moved = place_route(apps, LAYOUT, Route("a", "127.0.0.1:9000", hold=5))
    assert list(moved["http"]["servers"]) == ["front 127.0.0.1:9000"]
    assert "tls" not in moved
    assert drop_route(moved, "a") == empty_front_apps()
    assert drop_route(moved, "other") == moved


@pytest.mark.parametrize(
    "switch",
    [
        Switch("127.0.0.1:3001"),
        Switch("127.0.0.1:3001", ready=False, hold=5.5),
        Switch("127.0.0.1:3002", draining=("127.0.0.1:3001",)),
    ],
)
def test_a_switch_server_reads_back_as_what_was_written(switch: Switch) -> None:
    assert read_switch(switch_server(LAYOUT, "llm", switch)) == switch


def test_the_switch_answers_the_probe_and_forwards_the_front_headers() -> None:
    server = switch_config(LAYOUT, {"llm": Switch("127.0.0.1:3001", ready=False)})["apps"]["http"][
        "servers"
    ]["llm"]
    assert server["listen"] == ["unix//var/lib/rollhook/proxy/t/llm.sock"]
    probe, upstream = server["routes"]
    assert probe["handle"] == [{"handler": "static_response", "status_code": 503}]
    proxy = upstream["handle"][0]
    assert proxy["upstreams"] == [{"dial": "127.0.0.1:3001"}]
    assert proxy["headers"]["request"]["set"]["X-Forwarded-For"] == [
        "{http.request.header.X-Forwarded-For}"
    ]


def test_socket_paths_must_fit_a_unix_socket() -> None:
    deep = Layout(Path("/srv/" + "d" * 100))
    with pytest.raises(LayoutError, match="longer than a unix socket path"):
        deep.target_socket("llm")
    with pytest.raises(LayoutError):
        deep.check()


TARGETS = """
targets:
  plain:
    repo: https://github.com/acme/infra.git
    project: plain
    service: web
  llm:
    repo: https://github.com/acme/infra.git
    project: llm
    service: anything-llm
    proxy: {listen: ":443", hosts: [llm.example.com], port: 3001, hold: 90s}
  docs:
    repo: https://github.com/acme/infra.git
    project: docs
    service: web
    proxy: {listen: "127.0.0.1:8081", port: 8000}
"""


def test_the_plan_covers_targets_with_proxy_at_their_recorded_upstream() -> None:
    targets, problems = parse_targets(TARGETS)
    assert problems == []
    assert route_of(targets["plain"]) is None
    routes, switches = plan(targets, {"docs": "127.0.0.1:8001"})
    assert routes == [
        Route("llm", ":443", ("llm.example.com",), 90.0, "auto"),
        Route("docs", "127.0.0.1:8081", (), 60.0, "auto"),
    ]
    assert switches == {
        "llm": Switch("127.0.0.1:3001", True, 90.0),
        "docs": Switch("127.0.0.1:8001", True, 60.0),
    }
    assert yaml.safe_load(TARGETS)  # the example stays valid YAML
