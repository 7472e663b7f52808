"""Fixtures for the web process: apps served by a real uvicorn on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service.support import Served, make_settings


@pytest.fixture(scope="session")
def broker_url(redis_url: str) -> str:
    """The session's Redis, on a database of our own: workers' tests never see our jobs."""
    return redis_url.rsplit("/", 1)[0] + "/7"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> Iterator[Served]:
    """One app with every source configured, shared by a module's tests."""
    app = Served(make_settings(tmp_path_factory.mktemp("web"), redis_url=broker_url)).start()
    yield app
    app.stop()


@pytest.fixture
def serve(tmp_path: Path, broker_url: str) -> Iterator[Callable[..., Served]]:
    """An app of the test's own: ``serve(api_token=None, ...)`` overrides settings."""
    started: list[Served] = []

    def start(**overrides: Any) -> Served:
        root = tmp_path / f"app{len(started)}"
        root.mkdir()
        app = Served(make_settings(root, **({"redis_url": broker_url} | overrides))).start()
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()
