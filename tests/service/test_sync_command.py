"""``rollhook sync NAME``: the approval through the HTTP interface, recorded with who ran it."""

from __future__ import annotations

import getpass
from collections.abc import Callable

import pytest

from cli.api import Client, _dispatch
from cli.main import parser
from rollhook.jobs import Job
from tests.service.support import API_TOKEN, Served


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
