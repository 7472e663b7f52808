"""``rollhook diff``: the comparison (pure, table-style) and on the real git server and
engine, never showing a variable's value."""

from __future__ import annotations

import pytest

from cli.diff import Side, compare, describe, env_values
from rollhook.records import deployments
from tests.harness import INFRA_PATH
from tests.workers.deployer import Deployer

OLD = Side("a" * 40, {"app": "r/app:1.0@sha256:11", "db": "pg:16"}, {"PORT": "1", "KEY": "x"})


@pytest.mark.parametrize(
    ("desired", "expected"),
    [
        (
            Side("a" * 40, {"app": "r/app:1.0", "db": "pg:16"}, {"PORT": "1", "KEY": "x"}),
            [f"llm: the deployed commit {'a' * 12} is the branch's head", "nothing to change"],
        ),
        (
            Side("b" * 40, {"app": "r/app:2.0", "cache": "redis:7"}, {"PORT": "2", "NEW": "s"}),
            [
                f"llm: {'a' * 12} deployed, the branch is at {'b' * 12}",
                f"  {'b' * 12} bump app",
                "service added: cache",
                "service removed: db",
                "image app: r/app:1.0@sha256:11 -> r/app:2.0",
                "variable removed: KEY",
                "variable added: NEW",
                "variable changed: PORT",
            ],
        ),
    ],
)
def test_what_a_diff_says(desired: Side, expected: list[str]) -> None:
    assert describe("llm", OLD, desired, [("b" * 40, "bump app")]) == expected


def test_env_values_skip_comments_and_blanks() -> None:
    text = "# c\n\nA=1\nexport B = two\n  # D=3\n"
    assert env_values(text) == {"A": "1", "B": "two"}


@pytest.mark.engine
def test_diff_between_what_runs_and_the_branch(deployer: Deployer) -> None:
    first = deployer.commit("1.0.0")
    assert deployer.deploy().status == "succeeded"
    env = f"SERVER_PORT={deployer.port}\nOPENAI_KEY=sk-hunter2\n"
    second = deployer.commit("2.0.0", "anything-llm 2.0.0", **{f"{INFRA_PATH}/.env": env})
    with deployer.records.begin() as conn:
        [current] = [r for r in deployments.history(conn, "llm", 5) if r.status == "succeeded"]
    lines = compare(deployer.target, deployer.ctx.data_dir, current)
    text = "\n".join(lines)
    assert lines[0] == f"llm: {first[:12]} deployed, the branch is at {second[:12]}"
    assert f"  {second[:12]} anything-llm 2.0.0" in lines
    ref = deployer.standin.ref
    assert any(
        line.startswith(f"image anything-llm: {ref('1.0.0')}@") and line.endswith(ref("2.0.0"))
        for line in lines
    ), text
    assert "variable added: OPENAI_KEY" in lines
    assert "hunter2" not in text
