"""Fixtures of the fault suite: targets wired for faults, each behind a registry proxy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.faults.support import FaultTarget
from tests.harness.gitserver import GitServer
from tests.harness.registry import Registry
from tests.harness.standin import StandInImages
from tests.harness.tcpproxy import TcpProxy


@pytest.fixture
def make_target(
    *,
    tmp_path: Path,
    records: Engine,
    git_server: GitServer,
    docker_host: str,
    standin: StandInImages,
    registry: Registry,
) -> Iterator[Callable[..., FaultTarget]]:
    """``make_target(**target options)``: one per test (they share the records); its
    registry is a proxy of its own, so its images are never present in the engine before
    it pulls them. Workers, the compose project and the proxy go at the end."""
    made: list[FaultTarget] = []

    def make(*, docker_host: str = docker_host, **options: Any) -> FaultTarget:
        assert not made, "one fault target per test"
        proxy = TcpProxy(registry.port).start()
        target = FaultTarget(
            tmp_path,
            records,
            repo=git_server.create_repo("faults"),
            docker_host=docker_host,
            standin=standin,
            proxy=proxy,
            **options,
        )
        made.append(target)
        return target

    yield make
    for target in made:
        target.stop_workers()
        target.down()
        target.proxy.stop()
