"""GET /hosts, and a down host's targets waiting for it in GET /targets and the status
table (README "Several hosts")."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from cli.api import _state
from rollhook.records import hosts
from rollhook.records.schema import db_now, host_workers
from tests.service.support import Served

TWO_HOSTS = """
targets:
  web:
    repo: https://github.com/acme/web.git
    project: web
    service: web
    host: a
  db:
    repo: https://github.com/acme/db.git
    project: db
    service: db
    host: b
"""


def test_a_down_hosts_targets_wait_for_it(serve: Callable[..., Served], tmp_path: Path) -> None:
    config = tmp_path / "two-hosts.yml"
    config.write_text(TWO_HOSTS)
    app = serve(config=config)
    assert app.client.get("/hosts").status_code == 401  # the API token, like every read

    with app.records.begin() as conn:
        hosts.beat(conn, worker="m1:7", host="a", rollhook_version="0.1.0", engine_version="27.3")
        hosts.beat(conn, worker="m2:7", host="b", rollhook_version="0.1.0", engine_version="27.3")
        ago = db_now(conn) - timedelta(seconds=31)
        conn.execute(update(host_workers).where(host_workers.c.host == "b").values(last_beat=ago))

    listed = app.api("GET", "/hosts").json()["hosts"]
    assert [(h["name"], h["state"], len(h["workers"])) for h in listed] == [
        ("a", "up", 1), ("b", "down", 0),
    ]  # fmt: skip
    assert listed[0]["versions"] == ["rollhook 0.1.0, engine 27.3"]
    assert listed[1]["last_seen"] is not None

    targets = {t["name"]: t for t in app.api("GET", "/targets").json()["targets"]}
    assert targets["db"]["sync"]["status"] == "waiting_for_host"
    assert targets["db"]["host_state"] == "down"
    assert targets["web"]["sync"]["status"] != "waiting_for_host"
    assert app.api("GET", "/targets/db").json()["sync"]["status"] == "waiting_for_host"
    assert "waiting for host b" in _state(targets["db"])

    with app.records.begin() as conn:  # b's worker is back
        hosts.beat(conn, worker="m2:8", host="b", rollhook_version="0.1.0", engine_version="27.3")
    assert app.api("GET", "/targets/db").json()["sync"]["status"] != "waiting_for_host"
