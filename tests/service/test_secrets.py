"""No secret reaches a log line, a response or a record (uvicorn's access log included)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from rollhook.records.schema import events, jobs
from service.logs import RedactTokens, SkipHookAccess, redact
from service.signatures import hub_signature
from tests.harness.ports import free_port, wait_for_port
from tests.service.support import (
    API_TOKEN,
    DOCKERHUB_TOKEN,
    GITHUB_SECRET,
    GITLAB_TOKEN,
    HARBOR_TOKEN,
    METRICS_TOKEN,
    REGISTRY_TOKEN,
    SECRETS,
    TARGETS_YAML,
    Served,
    encode,
    payload,
    raw,
)

ALL_SECRETS = (*SECRETS, METRICS_TOKEN)


def exercise(base_url: str) -> list[httpx.Response]:
    """Right and wrong credentials on every endpoint that takes one."""
    push = raw("github-push.json")
    hub = encode(payload("dockerhub-push.json"))
    json_type = {"content-type": "application/json"}
    with httpx.Client(base_url=base_url, timeout=10) as client:
        return [
            client.post(
                "/hooks/github",
                content=push,
                headers=json_type
                | {
                    "x-github-event": "push",
                    "x-github-delivery": "secret-test",
                    "x-hub-signature-256": hub_signature(GITHUB_SECRET.encode(), push),
                },
            ),
            client.post(
                "/hooks/github",
                content=push,
                headers=json_type | {"x-github-event": "push", "x-hub-signature-256": "sha256=0"},
            ),
            client.post(f"/hooks/dockerhub/{DOCKERHUB_TOKEN}", content=hub, headers=json_type),
            client.post(f"/hooks/dockerhub/{DOCKERHUB_TOKEN}x", content=hub, headers=json_type),
            client.post(
                "/hooks/gitlab",
                content=raw("gitlab-push.json"),
                headers=json_type | {"x-gitlab-token": GITLAB_TOKEN, "x-gitlab-event": "Push Hook"},
            ),
            client.post(
                "/hooks/registry",
                content=b"{}",
                headers={"authorization": f"Bearer {REGISTRY_TOKEN}"},
            ),
            client.post("/hooks/harbor", content=b"{}", headers={"authorization": HARBOR_TOKEN}),
            client.post(
                "/deploy",
                json={"target": "hello"},
                headers={"authorization": f"Bearer {API_TOKEN}"},
            ),
            client.get("/targets", headers={"authorization": f"Bearer {API_TOKEN}x"}),
            client.get("/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"}),
        ]


def test_secrets_stay_out_of_logs_answers_and_records(
    serve: Callable[..., Served], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = serve(metrics_token=METRICS_TOKEN)
    responses = exercise(app.url)
    assert [r.status_code for r in responses][:4] == [202, 401, 202, 401]
    answers = "\n".join(r.text for r in responses)
    with app.records.connect() as conn:
        stored = json.dumps(
            [dict(r._mapping) for r in conn.execute(select(events))]
            + [dict(r._mapping) for r in conn.execute(select(jobs))],
            default=str,
        )
    # Everything the server side logged (the test's own HTTP client logs its URLs).
    logged = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "[github delivery=secret-test] 202" in logged  # the delivery id rides along
    for secret in ALL_SECRETS:
        assert secret not in logged
        assert secret not in answers
        assert secret not in stored


def test_redaction_of_access_log_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "POST", "/hooks/dockerhub/abc123?x=1", "1.1", 202),
        None,
    )
    assert RedactTokens().filter(record)
    assert (
        record.getMessage()
        == '127.0.0.1:5 - "POST /hooks/dockerhub/<redacted>?<redacted> HTTP/1.1" 202'
    )
    assert redact("GET /hooks/github") == "GET /hooks/github"


@pytest.mark.parametrize(
    ("method", "path", "status", "kept"),
    [
        ("POST", "/hooks/github", 202, False),  # the hook pipeline wrote its own line
        ("POST", "/hooks/dockerhub/abc123", 401, False),
        ("POST", "/hooks/harbor", 413, False),
        ("POST", "/hooks/github", 500, True),  # an unexpected error: no line of ours
        ("GET", "/hooks/github", 405, True),  # never reached the pipeline
        ("POST", "/hooks/unknown", 404, True),
        ("POST", "/deploy", 202, True),
        ("GET", "/healthz", 200, True),
    ],
)
def test_access_lines_for_webhooks_are_left_to_the_hooks_own(
    method: str, path: str, status: int, kept: bool
) -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", method, path, "1.1", status),
        None,
    )
    assert SkipHookAccess().filter(record) is kept


def test_uvicorn_access_log_redacts_the_docker_hub_token(tmp_path: Path) -> None:
    """The real command line, the real access log: the URL token never appears in it."""
    config = tmp_path / "rollhook.yml"
    config.write_text(TARGETS_YAML)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLHOOK_")} | {
        "ROLLHOOK_CONFIG": str(config),
        "ROLLHOOK_DATA_DIR": str(tmp_path / "data"),
        "ROLLHOOK_GITHUB_SECRET": GITHUB_SECRET,
        "ROLLHOOK_GITLAB_TOKEN": GITLAB_TOKEN,
        "ROLLHOOK_REGISTRY_TOKEN": REGISTRY_TOKEN,
        "ROLLHOOK_HARBOR_TOKEN": HARBOR_TOKEN,
        "ROLLHOOK_API_TOKEN": API_TOKEN,
        "ROLLHOOK_METRICS_TOKEN": METRICS_TOKEN,
        "ROLLHOOK_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # down: not needed here
    }
    (tmp_path / "dockerhub.token").write_text(DOCKERHUB_TOKEN + "\n")
    env["ROLLHOOK_DOCKERHUB_TOKEN_FILE"] = str(tmp_path / "dockerhub.token")
    log_path = tmp_path / "web.log"
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "debug"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            wait_for_port(port, timeout=30)
            responses = exercise(f"http://127.0.0.1:{port}")
            # A wrong method never reaches the hook pipeline: uvicorn's access line it is.
            wrong = httpx.get(f"http://127.0.0.1:{port}/hooks/dockerhub/{DOCKERHUB_TOKEN}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    output = log_path.read_text()
    assert [r.status_code for r in responses][2:4] == [202, 401]
    assert wrong.status_code == 405
    assert '"GET /hooks/dockerhub/<redacted> HTTP/1.1" 405' in output
    # Webhooks get one line of their own, with their outcome, instead of the access line.
    assert "] 202 from 127.0.0.1: event " in output
    assert "] 401 from 127.0.0.1: missing or bad credentials" in output
    assert '"POST /hooks/dockerhub/' not in output
    assert '"POST /deploy HTTP/1.1" 202' in output  # everything else keeps its access line
    for secret in ALL_SECRETS:
        assert secret not in output


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        ("ROLLHOOK_GITHUB_SECRET", "", "is set but empty"),
        (
            "ROLLHOOK_METRICS_TOKEN",
            "guessable-1",
            "is shorter than 16 characters; use a long random one (openssl rand -base64 32)",
        ),
    ],
)
def test_a_bad_config_stops_start_up_with_one_line(
    tmp_path: Path, name: str, value: str, line: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROLLHOOK_")} | {
        "ROLLHOOK_CONFIG": str(tmp_path / "missing.yml"),
        name: value,
    }
    argv = [sys.executable, "-m", "uvicorn", "--factory", "service.app:create_app", "--port", "0"]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == f"rollhook: {name}: {line}"
    assert "Traceback" not in done.stderr
    assert not value or value not in done.stderr
