"""``rollhook sync NAME``: the approval through the HTTP interface, recorded with who ran it."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path

import pytest

from cli.api import ApiError, Client, _dispatch
from cli.main import parser
from rollhook.jobs import Job
from tests.service.support import API_TOKEN, Served
from tests.service.test_slack import SIGNING_SECRET, TARGETS, waiting


def test_sync_queues_a_manual_sync_job_as_the_person_who_ran_it(
    serve: Callable[..., Served], capsys: pytest.CaptureFixture[str]
) -> None:
    app = serve()
    args = parser().parse_args(["sync", "hello"])
    client = Client(app.url, API_TOKEN)
    try:
        assert _dispatch(client, args) == 0
    finally:
        client.http.close()
    said = capsys.readouterr().out
    assert said.startswith("queued: event ")
    [row] = app.jobs_of(said.split()[2])
    job = Job.from_json(row["payload"])
    assert (job.target, job.action, job.manual) == ("hello", "sync", True)
    assert job.trigger.actor == getpass.getuser()


def test_approve_is_a_sync_and_reject_queues_a_rejection_as_the_person_who_ran_them(
    serve: Callable[..., Served],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    config = tmp_path / "rollhook.yml"
    config.write_text(TARGETS)
    app = serve(slack_signing_secret=SIGNING_SECRET, config=config)
    client = Client(app.url, API_TOKEN)
    request.addfinalizer(client.http.close)
    assert _dispatch(client, parser().parse_args(["approve", "gated"])) == 0
    approval = Job.from_json(app.jobs_of(capsys.readouterr().out.split()[2])[0]["payload"])
    assert (approval.action, approval.manual) == ("sync", True)
    assert approval.trigger.actor == getpass.getuser()

    with pytest.raises(ApiError, match="409: nothing of gated waits for approval"):
        _dispatch(client, parser().parse_args(["reject", "gated"]))
    waiting(app)
    assert _dispatch(client, parser().parse_args(["reject", "gated"])) == 0
    rejection = Job.from_json(app.jobs_of(capsys.readouterr().out.split()[2])[0]["payload"])
    assert (rejection.target, rejection.action, rejection.manual) == ("gated", "reject", True)
    assert rejection.trigger.actor == getpass.getuser()
