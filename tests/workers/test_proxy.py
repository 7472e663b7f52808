"""The front proxy against the real Caddy 2.6: requests held, switched and drained, never failed.

Each test routes its own target (its own loopback port) on the session's proxy and puts
a ``WebApp`` behind it; the app's answers say which version served a request.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness.caddy import CaddyProxy
from tests.harness.ports import free_port, port_open
from tests.harness.webapp import SteadyClient, WebApp, digest
from workers.proxy import Layout, Proxy, Switch


@pytest.fixture
def proxy(caddy_proxy: CaddyProxy) -> Iterator[Proxy]:
    """The driver; the targets a test routed are removed after it."""
    with caddy_proxy.driver() as driver:
        yield driver
        for target in list(driver.switch.get("/config/apps/http/servers") or {}):
            driver.remove(target)


@contextlib.contextmanager
def running(*apps: WebApp) -> Iterator[None]:
    for app in apps:
        app.start()
    try:
        yield
    finally:
        for app in apps:
            app.stop()


def background(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    return thread, out


def wait_until(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_requests_wait_while_the_app_is_stopped_and_none_fails(proxy: Proxy) -> None:
    v1 = WebApp("v1")
    listen = f"127.0.0.1:{free_port()}"
    with running(v1):
        proxy.route("held", listen, [], v1.address, hold=60)
        with SteadyClient(f"http://{listen}") as client:
            client.wait_for(6)
            assert proxy.hold("held", drain=30) == 0
            v1.stop()
            held_from = time.monotonic()
            # The outage: no app on the port for a while (any length under hold).
            time.sleep(2)
            v2 = WebApp("v2", port=v1.port)
            with running(v2):
                proxy.serve("held", v2.address)
                held_until = time.monotonic()
                client.wait_for(6, after=held_until)
    sent = client.sent
    failed = [s for s in sent if not s.ok]
    assert failed == []
    held = [s for s in sent if held_from < s.sent < held_until]
    # Requests of both kinds were sent during the outage, and v2 answered each of them.
    assert {s.method for s in held} == {"GET", "POST"}
    assert all(s.text.startswith("v2 ") for s in held)
    assert any(s.text.startswith("v1 ") for s in sent)


def test_a_body_sent_during_a_hold_reaches_the_new_version_whole(proxy: Proxy) -> None:
    old = WebApp("old")
    listen = f"127.0.0.1:{free_port()}"
    body = bytes(range(256)) * 4096  # 1 MiB
    with running(old):
        proxy.route("body", listen, [], old.address, hold=60)
        proxy.hold("body")
    thread, out = background(
        lambda: httpx.post(f"http://{listen}/upload", content=body, timeout=60)
    )
    time.sleep(1)
    assert thread.is_alive()  # held, not failed
    new = WebApp("new", port=old.port)
    with running(new):
        proxy.serve("body", new.address)
        thread.join(60)
    response = out[0]
    assert isinstance(response, httpx.Response)
    assert (response.status_code, response.text) == (200, f"new {digest(body)}")


def test_a_hold_longer_than_hold_gives_a_clear_error_not_a_hang(proxy: Proxy) -> None:
    app = WebApp("app")
    listen = f"127.0.0.1:{free_port()}"
    with running(app):
        proxy.route("short", listen, [], app.address, hold=1)
        proxy.hold("short")
        response = httpx.post(f"http://{listen}/", content=b"x" * 100, timeout=30)
        # Caddy's answer when no upstream became available within try_duration.
        assert response.status_code == 503
        assert app.finished == []
        proxy.serve("short", app.address)
        wait_until(lambda: httpx.get(f"http://{listen}/", timeout=30).status_code == 200)


def test_serve_switches_while_a_slow_request_finishes_on_the_old_upstream(proxy: Proxy) -> None:
    blue, green = WebApp("blue"), WebApp("green")
    listen = f"http://127.0.0.1:{free_port()}"
    with running(blue, green):
        proxy.route("colours", listen.removeprefix("http://"), [], blue.address, hold=60)
        slow, out = background(lambda: httpx.get(f"{listen}/slow?sleep=2", timeout=60))
        wait_until(lambda: blue.in_flight == 1)
        proxy.serve("colours", green.address)
        assert httpx.get(f"{listen}/next", timeout=30).text == "green /next"
        assert proxy.state("colours") == Switch(green.address, True, 60.0, (blue.address,))
        # Caddy still counts the request on blue: drain sees it, bounded.
        assert proxy.drain("colours", bound=0) == 1
        assert proxy.drain("colours", bound=60) == 0
        assert blue.finished == ["/slow?sleep=2"]
        slow.join(30)
        assert proxy.state("colours") == Switch(green.address, True, 60.0, ())
    response = out[0]
    assert isinstance(response, httpx.Response)
    assert (response.status_code, response.text) == (200, "blue /slow?sleep=2")


def test_hold_waits_for_requests_already_sent(proxy: Proxy) -> None:
    app = WebApp("app")
    listen = f"http://127.0.0.1:{free_port()}"
    with running(app):
        proxy.route("inflight", listen.removeprefix("http://"), [], app.address, hold=60)
        slow, out = background(lambda: httpx.get(f"{listen}/slow?sleep=1", timeout=60))
        wait_until(lambda: app.in_flight == 1)
        assert proxy.hold("inflight", drain=0) == 1
        assert proxy.hold("inflight", drain=60) == 0
        assert app.finished == ["/slow?sleep=1"]
        slow.join(30)
        proxy.serve("inflight", app.address)
    assert isinstance(out[0], httpx.Response) and out[0].status_code == 200


def test_an_unchanged_route_leaves_held_requests_alone_and_a_changed_one_ends_them(
    proxy: Proxy,
) -> None:
    app = WebApp("app")
    port = free_port()
    listen = f"127.0.0.1:{port}"
    with running(app):
        proxy.route("steady", listen, [], app.address, hold=60)
        proxy.hold("steady")
        thread, out = background(lambda: httpx.get(f"http://{listen}/a", timeout=60))
        time.sleep(0.5)
        assert proxy.route("steady", listen, [], app.address, hold=60) is False
        proxy.serve("steady", app.address)
        thread.join(30)
        assert isinstance(out[0], httpx.Response) and out[0].text == "app /a"

        # Caddy 2.6 fails the requests waiting in a handler whose configuration is
        # unloaded (at once, or under load once a hold ends: never served); this is why
        # the front is never changed during a rollout.
        proxy.hold("steady")
        thread, out = background(lambda: httpx.get(f"http://{listen}/b", timeout=90))
        time.sleep(0.5)
        assert proxy.route("steady", listen, [], app.address, hold=30) is True
        thread.join(75)
        assert isinstance(out[0], httpx.Response) and out[0].status_code == 503
        proxy.serve("steady", app.address)


def test_switching_one_target_leaves_the_others_requests_alone(proxy: Proxy) -> None:
    x, y = WebApp("x"), WebApp("y")
    x_url, y_listen = f"http://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    with running(x, y):
        proxy.route("x", x_url.removeprefix("http://"), [], x.address, hold=60)
        proxy.route("y", y_listen, [], y.address, hold=60)
        slow, slow_out = background(lambda: httpx.get(f"{x_url}/slow?sleep=2", timeout=60))
        wait_until(lambda: x.in_flight == 1)
        proxy.hold("x", drain=0)
        held, held_out = background(lambda: httpx.post(f"{x_url}/held", content=b"z", timeout=60))
        for _ in range(3):  # another target's rollout reloads the switch
            proxy.hold("y", drain=0)
            proxy.serve("y", y.address)
        assert held.is_alive()
        proxy.serve("x", x.address)
        slow.join(30)
        held.join(30)
    assert [r.text for r in (*slow_out, *held_out) if isinstance(r, httpx.Response)] == [
        "x /slow?sleep=2",
        f"x {digest(b'z')}",
    ]


def test_hosts_get_https_from_the_local_ca_and_the_app_sees_the_client(
    proxy: Proxy, caddy_proxy: CaddyProxy
) -> None:
    app = WebApp("tls")
    port = free_port()
    with running(app):
        proxy.route(
            "secure", f"127.0.0.1:{port}", ["app.rollhook.test"], app.address, 60, tls="internal"
        )
        context = ssl.create_default_context(cafile=str(caddy_proxy.ca_root))
        answers: list[httpx.Response] = []

        def fetch() -> bool:
            # The certificate is issued just after the route is loaded.
            with (
                httpx.Client(verify=context, timeout=30) as client,
                contextlib.suppress(httpx.ConnectError),
            ):
                answers.append(
                    client.get(
                        f"https://127.0.0.1:{port}/x",
                        headers={"Host": "app.rollhook.test", "X-Forwarded-For": "203.0.113.9"},
                        extensions={"sni_hostname": "app.rollhook.test"},
                    )
                )
            return bool(answers)

        wait_until(fetch)
        response = answers[0]
        assert (response.status_code, response.text) == (200, "tls /x")
        seen = app.headers[-1]
        # The client's own X-Forwarded-For is not believed; the switch passes the front's on.
        assert seen["X-Forwarded-For"] == "127.0.0.1"
        assert seen["X-Forwarded-Proto"] == "https"
        assert seen["X-Forwarded-Host"] == "app.rollhook.test"
    # The local CA stayed out of the system's trust store.
    assert not any(
        "caddy" in p.name.lower() for p in Path("/usr/local/share/ca-certificates").glob("*")
    )


def _tcp_listen_ports(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = fd.readlink().as_posix()
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_admin_apis_are_only_on_unix_sockets(proxy: Proxy, caddy_proxy: CaddyProxy) -> None:
    app = WebApp("app")
    port = free_port()
    with running(app):
        proxy.route("admin", f"127.0.0.1:{port}", [], app.address, hold=60)
        pids = caddy_proxy.pids()
        assert _tcp_listen_ports(pids["caddy-switch"]) == set()
        assert _tcp_listen_ports(pids["caddy-front"]) == {port}
        assert not port_open(2019)  # Caddy's default admin port
        assert proxy.front.get("/config/admin/listen") == f"unix/{caddy_proxy.layout.front_admin}"


def test_remove_takes_the_target_off_both(proxy: Proxy, caddy_proxy: CaddyProxy) -> None:
    app = WebApp("app")
    port = free_port()
    with running(app):
        proxy.route("gone", f"127.0.0.1:{port}", [], app.address, hold=60)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).text == "app /"
        proxy.remove("gone")
        assert proxy.state("gone") is None
        wait_until(lambda: not port_open(port))
        assert not caddy_proxy.layout.target_socket("gone").exists()
        proxy.remove("gone")  # again: nothing left to do


def test_rollhook_proxy_serves_the_targets_file_until_sigterm(tmp_path: Path) -> None:
    app = WebApp("app")
    port = free_port()
    targets = f"""
targets:
  web:
    repo: https://github.com/acme/infra.git
    project: web
    service: web
    proxy: {{listen: "127.0.0.1:{port}", port: {app.port}, hold: 30s}}
"""
    (tmp_path / "rollhook.yml").write_text(targets)
    env = {
        "PATH": os.environ["PATH"],
        "ROLLHOOK_CONFIG": str(tmp_path / "rollhook.yml"),
        "ROLLHOOK_DATA_DIR": str(tmp_path / "d"),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "proxy"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with running(app):
            wait_until(lambda: port_open(port) or process.poll() is not None)
            assert process.poll() is None
            assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).text == "app /"
            with Proxy(Layout(tmp_path / "d" / "proxy")) as driver:
                assert driver.state("web") == Switch(app.address, True, 30.0)
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0
        assert not port_open(port)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate(timeout=30)[0].decode()
    assert "rollhook proxy: web on 127.0.0.1:" in output


def test_rollhook_proxy_fronts_rollhook_itself_on_its_public_host(tmp_path: Path) -> None:
    """ROLLHOOK_PUBLIC_HOST: HTTPS for the webhooks, to the web process on PORT (a WebApp
    stands in for it), with no target at all; tls internal, as tests cannot reach ACME."""
    web = WebApp("rollhook-web")
    listen = free_port()
    (tmp_path / "rollhook.yml").write_text("targets: {}\n")
    env = {
        "PATH": os.environ["PATH"],
        "ROLLHOOK_CONFIG": str(tmp_path / "rollhook.yml"),
        "ROLLHOOK_DATA_DIR": str(tmp_path / "d"),
        "PORT": str(web.port),
        "ROLLHOOK_PUBLIC_HOST": "hooks.rollhook.test",
        "ROLLHOOK_PUBLIC_LISTEN": f"127.0.0.1:{listen}",
        "ROLLHOOK_PUBLIC_TLS": "internal",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "proxy"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    ca_root = tmp_path / "d/proxy/caddy/data/pki/authorities/local/root.crt"
    answers: list[httpx.Response] = []

    def fetch() -> bool:
        if not ca_root.exists():
            return False
        context = ssl.create_default_context(cafile=str(ca_root))
        with (
            httpx.Client(verify=context, timeout=30) as client,
            contextlib.suppress(httpx.ConnectError),
        ):
            answers.append(
                client.post(
                    f"https://127.0.0.1:{listen}/hooks/github",
                    content=b"{}",
                    headers={"Host": "hooks.rollhook.test"},
                    extensions={"sni_hostname": "hooks.rollhook.test"},
                )
            )
        return bool(answers)

    try:
        with running(web):
            wait_until(lambda: port_open(listen) or process.poll() is not None)
            assert process.poll() is None
            wait_until(fetch)
            assert answers[0].status_code == 200
            assert answers[0].text == f"rollhook-web {digest(b'{}')}"  # the body went through
            assert web.headers[-1]["X-Forwarded-Proto"] == "https"
            # Another name on the same listener is not rollhook's.
            with contextlib.suppress(httpx.HTTPError):
                other = httpx.get(
                    f"https://127.0.0.1:{listen}/hooks/github",
                    verify=False,  # noqa: S501 (whatever Caddy presents for an unknown name)
                    headers={"Host": "other.test"},
                    timeout=10,
                )
                assert other.text != "rollhook-web /hooks/github"
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate(timeout=30)[0].decode()
    assert f"rollhook proxy: rollhook on 127.0.0.1:{listen}" in output
