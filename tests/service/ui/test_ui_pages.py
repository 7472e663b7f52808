"""The dashboard's pages and buttons over real HTTP: what they show, what they do, and
the headers and forms that keep them safe (the browser: test_ui_browser.py)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from rollhook.jobs import Job
from rollhook.records import targets as target_records
from rollhook.records.jobs import link_deployment
from rollhook.records.schema import deployments as deployments_table
from service.ui import live
from service.ui.render import CSP
from tests.service.support import Served, add_deployment, wait_for
from tests.service.ui.dashboard import Dashboard, csrf_of, inline_code

TEMPLATES = Path(__file__).parents[3] / "service" / "ui" / "templates"
DIGEST = "sha256:" + "ab12" * 16
IMAGE = f"docker.io/svendowideit/testhook:1.4.2@{DIGEST}"


@pytest.fixture(scope="module")
def alice(served: Served) -> Iterator[Dashboard]:
    person = Dashboard(served.url)
    assert person.sign_in(name="alice").status_code == 303
    yield person
    person.close()


def events_of(served: Served) -> int:
    return served.event_count()


def change(served: Served, deployment_id: str, **values: object) -> None:
    with served.records.begin() as conn:
        conn.execute(
            update(deployments_table)
            .where(deployments_table.c.id == deployment_id)
            .values(**values)
        )


def record_of(served: Served, target: str, status: str, **values: object) -> str:
    """A deployment record with the given fields (add_deployment's, then these)."""
    deployment_id = add_deployment(served, target, status)
    change(served, deployment_id, **values)
    return deployment_id


def test_targets_show_status_version_and_pause(served: Served, alice: Dashboard) -> None:
    good = add_deployment(
        served, "hub", "succeeded", commit="c" * 40, images={"web": {"old": None, "new": IMAGE}}
    )
    with served.records.begin() as conn:
        target_records.record_outcome(conn, "hub", 0, current=good, good=good)
        target_records.set_paused(conn, "registry", True, "disk full")
    page = alice.http.get("/ui").text
    hub = page.split('id="target-hub"', 1)[1].split("</section>", 1)[0]
    assert "1.4.2" in hub and "sha256:ab12ab12ab12" in hub  # tag and short digest
    assert good in hub and "succeeded" in hub
    assert "Roll back to the last good" in hub
    registry = page.split('id="target-registry"', 1)[1].split("</section>", 1)[0]
    assert "paused" in registry and "disk full" in registry and "Resume" in registry
    assert "nothing deployed yet" in registry and "Roll back" not in registry
    # The targets refresh their state in place (htmx polls the fragment).
    fragment = alice.http.get("/ui/targets/hub/status")
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith('<div class="status"')
    assert "1.4.2" in fragment.text
    assert alice.http.get("/ui/targets/ghost/status").status_code == 404


def test_a_form_post_needs_the_sessions_csrf_token(served: Served, alice: Dashboard) -> None:
    bob = Dashboard(served.url)
    try:
        bob.sign_in(name="bob")
        before = events_of(served)
        for csrf in (None, "", "0" * 64, bob.csrf):  # none, empty, made up, another session's
            refused = alice.http.post(
                "/ui/targets/hello/deploy", data={} if csrf is None else {"csrf": csrf}
            )
            assert refused.status_code == 403, csrf
            paused = alice.http.post(
                "/ui/targets/gitea/pause",
                data={"reason": "x"} | ({} if csrf is None else {"csrf": csrf}),
            )
            assert paused.status_code == 403
        assert events_of(served) == before  # nothing was stored
        with served.records.connect() as conn:
            state = target_records.get(conn, "gitea")
        assert state is not None and not state.paused
        # htmx shows the refusal at the top of the page it came from.
        htmx = alice.http.post(
            "/ui/targets/hello/deploy", data={"csrf": "x"}, headers={"hx-request": "true"}
        )
        assert htmx.status_code == 403 and htmx.headers["hx-retarget"] == "#notice"
        # Not a form at all: no CSRF token either.
        assert (
            alice.http.post("/ui/targets/hello/deploy", json={"csrf": alice.csrf}).status_code
            == 403
        )
        oversized = alice.post("/ui/targets/gitea/pause", reason="x" * 20_000)
        assert oversized.status_code == 413
    finally:
        bob.close()


def test_deploy_and_rollback_are_the_apis_requests_by_the_session(
    served: Served, alice: Dashboard
) -> None:
    # htmx: the target's section with the API's answer and a link to what it queued.
    deployed = alice.http.post(
        "/ui/targets/diaspora/deploy", data={"csrf": alice.csrf}, headers={"hx-request": "true"}
    )
    assert deployed.status_code == 202
    assert deployed.text.lstrip().startswith('<section class="target" id="target-diaspora"')
    event_id = deployed.text.split("/ui/events/", 1)[1].split('"', 1)[0]
    event = served.api("GET", f"/events/{event_id}").json()
    assert (event["source"], event["kind"], event["actor"]) == ("api", "deploy", "ui:alice")
    [row] = served.jobs_of(event_id)
    job = Job.from_json(row["payload"])
    assert (job.target, job.action, job.manual, job.ref) == ("diaspora", "deploy", True, None)
    assert job.trigger.actor == "ui:alice"

    # A plain form post: redirected to what it queued (a reload cannot queue it again).
    rolled = alice.act("diaspora", "rollback")
    assert rolled.status_code == 303
    event_id = rolled.headers["location"].removeprefix("/ui/events/")
    assert alice.http.get(rolled.headers["location"]).status_code == 200
    [row] = served.jobs_of(event_id)
    job = Job.from_json(row["payload"])
    assert (job.action, job.rollback_to, job.trigger.actor) == ("rollback", None, "ui:alice")

    # The answer shown is the API's, refusals included.
    assert alice.act("ghost", "deploy").status_code == 404
    assert alice.act("hello", "launch").status_code == 404


def test_roll_back_to_one_deployment_from_its_page(served: Served, alice: Dashboard) -> None:
    older = add_deployment(served, "hello", "succeeded")
    current = add_deployment(served, "hello", "succeeded")
    failed = add_deployment(served, "hello", "failed")
    with served.records.begin() as conn:
        target_records.record_outcome(conn, "hello", 0, current=current, good=current)

    page = alice.http.get(f"/ui/deployments/{older}").text
    form = page.split('action="/ui/targets/hello/rollback"', 1)[1].split("</form>", 1)[0]
    assert f'name="to" value="{older}"' in form and "Roll back to this deployment" in form
    assert csrf_of(form) == alice.csrf
    # Not offered for what runs now, nor for a deployment that did not serve.
    assert "Roll back to this" not in alice.http.get(f"/ui/deployments/{current}").text
    assert "Roll back to this" not in alice.http.get(f"/ui/deployments/{failed}").text

    rolled = alice.act("hello", "rollback", to=older)
    assert rolled.status_code == 303
    event_id = rolled.headers["location"].removeprefix("/ui/events/")
    [row] = served.jobs_of(event_id)
    job = Job.from_json(row["payload"])
    assert (job.action, job.rollback_to, job.trigger.actor) == ("rollback", older, "ui:alice")
    # A forged "to" gets the API's refusal, shown with the target.
    refused = alice.act("hello", "rollback", to=failed)
    assert refused.status_code == 400 and "did not succeed" in refused.text


def test_pause_and_resume_with_a_reason(served: Served, alice: Dashboard) -> None:
    paused = alice.act("frozen", "pause", reason="incident 42")
    assert paused.status_code == 200 and "incident 42" in paused.text
    state = {t["name"]: t for t in served.api("GET", "/targets").json()["targets"]}["frozen"]
    assert (state["paused"], state["paused_reason"]) == (True, "incident 42")
    # htmx gets the target's section back, now with the Resume button.
    resumed = alice.http.post(
        "/ui/targets/frozen/resume", data={"csrf": alice.csrf}, headers={"hx-request": "true"}
    )
    assert resumed.status_code == 200
    assert resumed.text.lstrip().startswith('<section class="target" id="target-frozen"')
    assert "resumed" in resumed.text and "Pause" in resumed.text
    state = {t["name"]: t for t in served.api("GET", "/targets").json()["targets"]}["frozen"]
    assert state["paused"] is False


def test_approve_is_the_apis_sync_request(served: Served, alice: Dashboard) -> None:
    """The button posts to POST /targets/{name}/sync and shows its answer, whatever it is
    (the endpoint comes with the reconcile loop; before it, the API answers 404)."""
    direct = served.api("POST", "/targets/infra-staging/sync", json={"actor": "api"})
    through = alice.http.post(
        "/ui/targets/infra-staging/sync", data={"csrf": alice.csrf}, headers={"hx-request": "true"}
    )
    assert through.status_code == direct.status_code
    assert f'<span class="code">{direct.status_code}</span>' in through.text


def test_history_with_a_filter_by_target(served: Served, alice: Dashboard) -> None:
    ghcr = add_deployment(served, "ghcr", "failed", images={"web": {"old": None, "new": IMAGE}})
    harbor = add_deployment(served, "harbor", "succeeded")
    everything = alice.http.get("/ui/deployments").text
    assert ghcr in everything and harbor in everything
    only = alice.http.get("/ui/deployments", params={"target": "ghcr"}).text
    assert ghcr in only and harbor not in only and "1.4.2" in only
    # All final: a still table. One running: the table refreshes itself, filter kept.
    assert "hx-trigger" not in only.split('id="history"', 1)[1].split(">", 1)[0]
    running = add_deployment(served, "ghcr", "running")
    live = alice.http.get("/ui/deployments", params={"target": "ghcr"}).text
    table = live.split('id="history"', 1)[1].split(">", 1)[0]
    assert 'hx-get="/ui/deployments?target=ghcr"' in table and 'hx-select="#history"' in table
    assert running in live
    change(served, running, status="succeeded")
    assert 'aria-current="page">ghcr<' in only
    assert alice.http.get("/ui/deployments", params={"target": "ghost"}).status_code == 404


def test_one_deployment_with_its_steps_and_log(served: Served, alice: Dashboard) -> None:
    record = record_of(
        served,
        "hello",
        "rolled_back",
        reason="health gate failed: <b>503</b>",
        log="12:00:01 pulling\n12:00:02 <script>alert(1)</script>\n",
        steps=[
            {"name": "sync", "outcome": "ok", "started_at": "2026-12-01T12:00:00.000+00:00",
             "finished_at": "2026-12-01T12:00:02.000+00:00", "detail": None},
            {"name": "gate", "outcome": "failed", "started_at": "2026-12-01T12:00:02.000+00:00",
             "finished_at": "2026-12-01T12:01:05.000+00:00", "detail": "probe answered 503"},
        ],
    )  # fmt: skip
    page = alice.http.get(f"/ui/deployments/{record}")
    assert page.status_code == 200
    assert "probe answered 503" in page.text and "1 min 3 s" in page.text
    # Record fields are text, never markup.
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;503&lt;/b&gt;" in page.text
    assert inline_code(page.text) == []
    # Final: no live stream on the page.
    assert "sse-connect" not in page.text
    assert alice.http.get("/ui/deployments/d-missing").status_code == 404


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str]]:
    name, data = "", []
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and name:
            yield name, "\n".join(data)
            name, data = "", []


def test_the_live_log_follows_the_record_until_it_is_final(
    served: Served, alice: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "MAX_SECONDS", 120.0)  # one stream for the whole test
    record = record_of(served, "infra", "running", log="10:00:00 syncing\n", finished_at=None)
    page = alice.http.get(f"/ui/deployments/{record}").text
    assert f'sse-connect="/ui/deployments/{record}/stream"' in page and 'sse-close="end"' in page

    seen: queue.Queue[tuple[str, str]] = queue.Queue()

    def listen() -> None:
        with alice.http.stream("GET", f"/ui/deployments/{record}/stream") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["content-security-policy"] == CSP
            for item in sse_events(response):
                seen.put(item)
        seen.put(("closed", ""))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    first = {seen.get(timeout=15) for _ in range(3)}
    assert {name for name, _ in first} == {"summary", "steps", "log"}
    assert any("10:00:00 syncing" in html for name, html in first if name == "log")
    change(served, record, log="10:00:00 syncing\n10:00:03 pulling\n")
    name, html = seen.get(timeout=15)
    assert name == "log" and "10:00:03 pulling" in html  # only what changed is sent
    change(
        served,
        record,
        status="succeeded",
        log="10:00:00 syncing\n10:00:03 pulling\n10:00:09 healthy\n",
    )
    rest = []
    while not rest or rest[-1][0] != "closed":
        rest.append(seen.get(timeout=15))
    names = [n for n, _ in rest]
    assert names[-2:] == ["end", "closed"]  # the stream ends with the record
    assert "summary" in names and "log" in names
    assert any("succeeded" in html for n, html in rest if n == "summary")
    listener.join(5)
    wait_for(lambda: not listener.is_alive(), 5, "the stream to end")


def test_a_stream_ends_after_a_while_and_the_browser_comes_back(
    served: Served, alice: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream never holds a stopping web process up for long: it ends after
    MAX_SECONDS without "end", having told the browser to reconnect at once."""
    monkeypatch.setattr(live, "MAX_SECONDS", 1.5)
    record = record_of(served, "infra", "running", log="10:00:00 syncing\n", finished_at=None)
    started = time.monotonic()
    answer = alice.http.get(f"/ui/deployments/{record}/stream")
    assert time.monotonic() - started < 10
    assert answer.text.startswith(f"retry: {live.RETRY_MS}\n\n")
    assert "event: log" in answer.text and "event: end" not in answer.text


def test_the_dashboards_calls_are_not_counted_as_api_traffic(
    served: Served, alice: Dashboard
) -> None:
    def counted(source: str) -> float:
        metrics = served.client.get("/metrics").text
        lines = [ln for ln in metrics.splitlines() if ln.startswith("rollhook_requests_total{")]
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if f'source="{source}"' in ln)

    api, ui = counted("api"), counted("ui")
    assert alice.http.get("/ui").status_code == 200
    assert counted("api") == api and counted("ui") > ui


def test_an_event_page_leads_to_its_deployment(served: Served, alice: Dashboard) -> None:
    event_id = served.api("POST", "/deploy", json={"target": "hello"}).json()["id"]
    waiting = alice.http.get(f"/ui/events/{event_id}")
    assert waiting.status_code == 200 and "Waiting for a worker" in waiting.text
    [row] = served.jobs_of(event_id)
    deployment_id = add_deployment(served, "hello", "running")
    with served.records.begin() as conn:
        link_deployment(conn, row["id"], deployment_id)
    found = alice.http.get(f"/ui/events/{event_id}")
    assert found.status_code == 303
    assert found.headers["location"] == f"/ui/deployments/{deployment_id}"
    polled = alice.http.get(f"/ui/events/{event_id}", headers={"hx-request": "true"})
    assert polled.headers["hx-redirect"] == f"/ui/deployments/{deployment_id}"


def test_every_answer_carries_the_security_headers(served: Served, alice: Dashboard) -> None:
    record = add_deployment(served, "hello", "succeeded")
    stranger = httpx.Client(base_url=served.url, timeout=15)
    try:
        answers = [
            stranger.get("/ui/login"),
            stranger.get("/ui"),  # the redirect to sign in
            stranger.post("/ui/login", data={"token": "x"}),  # refused: no CSRF token
            stranger.get("/ui/static/rollhook.css"),
            alice.http.get("/ui"),
            alice.http.get("/ui/deployments"),
            alice.http.get(f"/ui/deployments/{record}"),
            alice.http.get(f"/ui/deployments/{record}/stream"),
            alice.http.get("/ui/deployments/d-missing"),
            alice.http.get("/ui/targets/hello/status"),
            alice.act("hello", "deploy", csrf="wrong"),
        ]
    finally:
        stranger.close()
    for answer in answers:
        where = f"{answer.request.method} {answer.request.url.path}"
        assert answer.headers["content-security-policy"] == CSP, where
        assert answer.headers["x-content-type-options"] == "nosniff", where
        assert answer.headers["referrer-policy"] == "no-referrer", where
        assert answer.headers["x-frame-options"] == "DENY", where
    assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    pages = [a for a in answers if a.headers.get("content-type", "").startswith("text/html")]
    assert len(pages) >= 7
    for answer in pages:
        assert inline_code(answer.text) == [], answer.request.url.path
        assert "no-store" in answer.headers["cache-control"]


def test_no_template_holds_inline_script_or_style() -> None:
    templates = sorted(TEMPLATES.glob("*.html"))
    assert len(templates) >= 10
    for template in templates:
        source = template.read_text()
        assert inline_code(source) == [], template.name
        # Every script the pages load is one of ours, from /ui/static.
        for line in source.splitlines():
            if "<script" in line:
                assert 'src="{{ ui }}/static/' in line, (template.name, line)


def test_static_files_are_a_fixed_list(served: Served) -> None:
    htmx = served.client.get("/ui/static/htmx.min.js")
    assert htmx.status_code == 200 and htmx.headers["content-type"].startswith("text/javascript")
    assert "htmx" in htmx.text
    for name in ("VENDORED.md", "..%2Fpages.py", "htmx.LICENSE", "missing.js"):
        assert served.client.get(f"/ui/static/{name}").status_code == 404


def test_sign_out_form_is_on_every_page(served: Served, alice: Dashboard) -> None:
    page = alice.http.get("/ui/deployments").text
    assert 'action="/ui/logout"' in page and csrf_of(page) == alice.csrf
