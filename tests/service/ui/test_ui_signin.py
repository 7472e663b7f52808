"""Signing in to the dashboard with the API token, the session cookie, and signing out."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from rollhook.records.schema import ui_sessions, utcnow
from tests.harness import free_port, port_open
from tests.harness.process import Daemon
from tests.service.support import API_TOKEN, Served, make_settings
from tests.service.ui.dashboard import Dashboard, csrf_of

WRONG = "wrong-token-0123456789"


@pytest.fixture
def visit() -> Iterator[Callable[[Served], Dashboard]]:
    opened: list[Dashboard] = []

    def open_(app: Served) -> Dashboard:
        opened.append(Dashboard(app.url))
        return opened[-1]

    yield open_
    for dashboard in opened:
        dashboard.close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> Iterator[Served]:
    """An app that allows two auth failures and trusts a proxy on loopback."""
    settings = make_settings(
        tmp_path_factory.mktemp("guarded"),
        redis_url=broker_url,
        auth_failures_allowed=2,
        trusted_proxies="127.0.0.1/32",
    )
    app = Served(settings).start()
    yield app
    app.stop()


def cookie_header(response: httpx.Response, name: str) -> str:
    [header] = [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    return header


def sessions(app: Served) -> int:
    with app.records.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ui_sessions)).scalar_one())


def test_without_an_api_token_there_is_no_dashboard(serve: Callable[..., Served]) -> None:
    app = serve(api_token=None)
    for method, path in [
        ("GET", "/ui"),
        ("GET", "/ui/login"),
        ("POST", "/ui/login"),
        ("POST", "/ui/logout"),
        ("GET", "/ui/deployments"),
        ("GET", "/ui/deployments/d1"),
        ("GET", "/ui/deployments/d1/stream"),
        ("POST", "/ui/targets/hello/deploy"),
        ("GET", "/ui/static/htmx.min.js"),
    ]:
        answer = app.client.request(method, path, data={"token": "x", "csrf": "y"})
        assert answer.status_code == 404, (method, path)
        # The same answer as the API's own when it is not configured.
        assert (
            answer.json()
            == app.client.get("/targets").json()
            == {
                "status": "not_found",
                "reason": "not found",
            }
        )


def test_only_the_api_token_signs_in(served: Served, visit: Callable[[Served], Dashboard]) -> None:
    person = visit(served)
    assert person.http.get("/ui").headers["location"] == "/ui/login"  # not signed in yet
    refused = person.sign_in(WRONG)
    assert refused.status_code == 401
    assert "That is not the API token." in refused.text
    assert WRONG not in refused.text and API_TOKEN not in refused.text
    assert person.session_cookie is None
    assert person.http.get("/ui").status_code == 303

    accepted = person.sign_in(API_TOKEN, name="alice")
    assert accepted.status_code == 303 and accepted.headers["location"] == "/ui"
    page = person.http.get("/ui")
    assert page.status_code == 200 and "ui:alice" in page.text
    assert API_TOKEN not in page.text and API_TOKEN not in str(person.session_cookie)


def test_a_name_is_checked_and_defaults_to_the_session(
    served: Served, visit: Callable[[Served], Dashboard]
) -> None:
    person = visit(served)
    bad = person.sign_in(name="alice\n[api] forged")
    assert bad.status_code == 400 and person.session_cookie is None
    anonymous = visit(served)
    assert anonymous.sign_in(name=None).status_code == 303
    page = anonymous.http.get("/ui").text
    with served.records.connect() as conn:
        whos = set(conn.execute(select(ui_sessions.c.who)).scalars())
    [short] = [w for w in whos if w != "alice"]
    assert len(short) == 8 and f"ui:{short}" in page


def test_the_sign_in_form_needs_its_own_csrf_token(
    served: Served, visit: Callable[[Served], Dashboard]
) -> None:
    person = visit(served)
    form = person.http.get("/ui/login")
    token = csrf_of(form.text)
    without = person.http.post("/ui/login", data={"token": API_TOKEN})
    assert without.status_code == 403 and person.session_cookie is None
    wrong = person.http.post("/ui/login", data={"token": API_TOKEN, "csrf": token[:-1] + "0"})
    assert wrong.status_code == 403 and person.session_cookie is None
    # The token of the form without the cookie it was paired with (another browser).
    stranger = visit(served)
    alone = stranger.http.post("/ui/login", data={"token": API_TOKEN, "csrf": token})
    assert alone.status_code == 403 and stranger.session_cookie is None


def test_failed_sign_ins_count_in_the_apis_auth_failure_limit(
    guarded: Served, visit: Callable[[Served], Dashboard]
) -> None:
    app = guarded
    person = visit(app)
    # Two failures on the API, one on the form: over the allowance of 2, whichever it was.
    for _ in range(2):
        assert app.api("GET", "/targets", headers={"authorization": "Bearer x"}).status_code == 401
    assert person.sign_in(WRONG).status_code == 429
    limited = person.sign_in(WRONG)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in limited.text
    # And the API sees the form's failures: a wrong bearer token is 429 now.
    assert app.api("GET", "/targets", headers={"authorization": "Bearer x"}).status_code == 429
    # As on the API, the right token is still heard (a scanner sharing the address
    # cannot lock the operator out).
    assert person.sign_in(API_TOKEN).status_code == 303


def test_the_session_cookie(served: Served, visit: Callable[[Served], Dashboard]) -> None:
    person = visit(served)
    form = person.http.get("/ui/login")
    login_cookie = cookie_header(form, "rollhook_login").lower()
    assert "httponly" in login_cookie and "samesite=strict" in login_cookie
    assert "path=/ui/login" in login_cookie and "secure" not in login_cookie
    answer = person.http.post(
        "/ui/login", data={"csrf": csrf_of(form.text), "token": API_TOKEN, "name": "bob"}
    )
    cookie = cookie_header(answer, "rollhook_session")
    attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/ui" in attributes
    assert "max-age=43200" in attributes  # 12 hours
    assert "secure" not in attributes  # plain HTTP, no trusted proxy said otherwise
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    secret, mac = value.split(".")
    assert len(secret) >= 43 and len(mac) == 64  # 32 random bytes and an HMAC-SHA256


@pytest.mark.parametrize("trusted", [True, False])
def test_secure_when_a_trusted_proxy_says_the_browser_used_tls(
    served: Served, guarded: Served, trusted: bool
) -> None:
    app = guarded if trusted else served  # only the guarded app trusts loopback
    person = Dashboard(app.url)
    try:
        tls = {"x-forwarded-proto": "https"}
        form = person.http.get("/ui/login", headers=tls)
        assert ("secure" in cookie_header(form, "rollhook_login").lower()) is trusted
        # httpx would not send a Secure cookie back over plain HTTP: post it by hand.
        nonce = form.cookies["rollhook_login"]
        answer = httpx.post(
            f"{app.url}/ui/login",
            data={"csrf": csrf_of(form.text), "token": API_TOKEN},
            headers=tls | {"cookie": f"rollhook_login={nonce}"},
        )
        assert answer.status_code == 303
        attributes = cookie_header(answer, "rollhook_session").lower().split("; ")
        assert ("secure" in attributes) is trusted
    finally:
        person.close()


@pytest.fixture
def caddy_tls(tmp_path: Path, guarded: Served) -> Iterator[tuple[str, Path]]:
    """A real Caddy terminating TLS (its local CA) in front of the guarded app, which
    trusts it as a proxy: the URL and the CA's root certificate."""
    if shutil.which("caddy") is None:
        pytest.fail("caddy is missing: run scripts/install-test-deps.sh")
    port, home = free_port(), tmp_path / "caddy"
    config = tmp_path / "Caddyfile"
    config.write_text(
        # Loopback only: no HTTP/3 (UDP), no redirect server on port 80, no admin API.
        "{\n  admin off\n  skip_install_trust\n  auto_https disable_redirects\n"
        "  default_sni 127.0.0.1\n"
        "  servers {\n    protocols h1 h2\n  }\n}\n"
        f"https://127.0.0.1:{port} {{\n  bind 127.0.0.1\n  tls internal\n"
        f"  reverse_proxy 127.0.0.1:{guarded.port}\n}}\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    argv = ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"]
    caddy = Daemon("caddy-tls", argv, tmp_path / "caddy.log", env=env)
    caddy.start()
    try:
        root = home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
        url = f"https://127.0.0.1:{port}"

        def ready() -> bool:  # a whole TLS request: the certificate may come after the port
            trusted = ssl.create_default_context(cafile=str(root))
            return httpx.get(f"{url}/healthz", verify=trusted, timeout=5).status_code == 200

        caddy.wait_until(lambda: root.exists() and port_open(port) and ready(), "Caddy over TLS")
        yield url, root
    finally:
        caddy.stop()


def test_behind_a_real_tls_proxy_the_cookies_are_secure(
    caddy_tls: tuple[str, Path], guarded: Served
) -> None:
    url, ca = caddy_tls
    person = Dashboard(url, verify=ssl.create_default_context(cafile=str(ca)))
    try:
        form = person.http.get("/ui/login")
        assert "secure" in cookie_header(form, "rollhook_login").lower().split("; ")
        answer = person.sign_in()
        assert answer.status_code == 303
        attributes = cookie_header(answer, "rollhook_session").lower().split("; ")
        assert {"secure", "httponly", "samesite=strict", "path=/ui"} <= set(attributes)
        # The session works over TLS; its forms carry the session's token.
        page = person.http.get("/ui")
        assert page.status_code == 200 and "ui:alice" in page.text
        assert person.post("/ui/targets/hello/pause", reason="tls").status_code == 200
        assert person.post("/ui/targets/hello/resume").status_code == 200
    finally:
        person.close()
    # The same app reached directly over plain HTTP sets no Secure flag.
    direct = Dashboard(guarded.url)
    try:
        attributes = cookie_header(direct.sign_in(), "rollhook_session").lower().split("; ")
        assert "secure" not in attributes
    finally:
        direct.close()


def test_signing_out_ends_the_session_for_every_copy_of_the_cookie(
    served: Served, visit: Callable[[Served], Dashboard]
) -> None:
    person = visit(served)
    person.sign_in()
    cookie = person.session_cookie
    before = sessions(served)
    copy = Dashboard(served.url, cookies={"rollhook_session": str(cookie)})
    try:
        assert copy.http.get("/ui").status_code == 200
        out = person.post("/ui/logout")
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert person.session_cookie is None
        assert sessions(served) == before - 1
        assert copy.http.get("/ui").status_code == 303  # the copy is worthless now
    finally:
        copy.close()


def test_a_session_expires(served: Served, visit: Callable[[Served], Dashboard]) -> None:
    person = visit(served)
    person.sign_in(name="carol")
    assert person.http.get("/ui").status_code == 200
    with served.records.begin() as conn:
        conn.execute(
            update(ui_sessions)
            .where(ui_sessions.c.who == "carol")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert person.http.get("/ui").headers["location"] == "/ui/login"
    # htmx's requests are told where to go in its own header (no page in a fragment).
    polled = person.http.get("/ui/targets/hello/status", headers={"hx-request": "true"})
    assert polled.status_code == 401 and polled.headers["hx-redirect"] == "/ui/login"


def test_a_new_api_token_ends_every_session(tmp_path: Path, broker_url: str) -> None:
    first = Served(make_settings(tmp_path, redis_url=broker_url)).start()
    person = Dashboard(first.url)
    try:
        person.sign_in()
        cookie = str(person.session_cookie)
        assert person.http.get("/ui").status_code == 200
    finally:
        person.close()
        first.stop()
    rotated = "api-token-rotated-Ab12-Cd34"
    second = Served(make_settings(tmp_path, redis_url=broker_url, api_token=rotated)).start()
    again = Dashboard(second.url, cookies={"rollhook_session": cookie})
    try:
        assert sessions(second) == 1  # its row is still there; the cookie no longer opens it
        assert again.http.get("/ui").headers["location"] == "/ui/login"
        assert again.sign_in(API_TOKEN).status_code == 401  # the old token is just wrong
    finally:
        again.close()
    fresh = Dashboard(second.url)
    try:
        assert fresh.sign_in(rotated).status_code == 303
    finally:
        fresh.close()
        second.stop()
