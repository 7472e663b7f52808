"""What `rollhook init` proposes for a running project: pure functions, table-style."""

from __future__ import annotations

from typing import Any

import pytest

from cli.proposal import gated_service, health_url, looks_secret, parse_dotenv, propose

ANY_ADDRESS = "0.0.0.0"  # noqa: S104 (a published port's host_ip, as Compose reports it)
LLM_MODEL: dict[str, Any] = {
    "name": "llm",
    "services": {
        "anything-llm": {
            "image": "mintplexlabs/anythingllm",
            "environment": {
                "STORAGE_DIR": "/app/server/storage",
                "JWT_SECRET": "s3cr3t-literal-value",
                "LLM_PROVIDER": "${LLM_PROVIDER}",
            },
            "env_file": [{"path": "/opt/llm/provider.env", "required": True}],
            "ports": [{"target": 3001, "published": "3001", "host_ip": ANY_ADDRESS}],
            "volumes": [
                {"type": "bind", "source": "/opt/llm/storage", "target": "/app/server/storage"},
                {"type": "bind", "source": "/opt/llm/.env", "target": "/app/server/.env"},
            ],
        },
        "proxy": {"image": "nginx:1.27", "ports": [{"target": 80, "published": "8080"}]},
    },
}
LLM_RESOLVED: dict[str, Any] = {
    "services": {
        "anything-llm": {
            "image": "mintplexlabs/anythingllm",
            "ports": [{"target": 3001, "published": "3001", "host_ip": ANY_ADDRESS}],
        },
        "proxy": {"image": "nginx:1.27", "ports": [{"target": 80, "published": "8080"}]},
    }
}


def llm() -> Any:
    model = {"services": {k: dict(v) for k, v in LLM_MODEL["services"].items()}, "name": "llm"}
    model["services"]["anything-llm"]["environment"] = dict(
        LLM_MODEL["services"]["anything-llm"]["environment"]
    )
    variables = {"LLM_PROVIDER": "ollama", "OPENAI_API_KEY": "sk-from-dotenv"}
    running = {"anything-llm": "mintplexlabs/anythingllm:1.16.1", "proxy": "nginx:1.27"}
    return propose("llm", model, LLM_RESOLVED, variables, running)


def test_anything_llm_is_gated_on_its_ping_through_the_published_port() -> None:
    proposal = llm()
    assert proposal.service == "anything-llm"
    assert proposal.health_url == "http://127.0.0.1:3001/api/ping"
    assert proposal.images == ["mintplexlabs/anythingllm"]
    assert proposal.sources == [
        "bind /opt/llm/storage -> /app/server/storage",
        "bind /opt/llm/.env -> /app/server/.env",
    ]


def test_images_are_pinnable_at_the_tag_that_runs() -> None:
    proposal = llm()
    services = proposal.compose["services"]
    assert services["anything-llm"]["image"] == "mintplexlabs/anythingllm:${ANYTHING_LLM_TAG}"
    assert proposal.compose_env["ANYTHING_LLM_TAG"] == "1.16.1"  # what runs, not "latest"
    assert services["proxy"]["image"] == "nginx:${PROXY_TAG}"
    assert proposal.compose_env["PROXY_TAG"] == "1.27"
    assert "name" not in proposal.compose  # rollhook's -p names the project


def test_secrets_leave_the_folder_and_say_where_they_went() -> None:
    proposal = llm()
    environment = proposal.compose["services"]["anything-llm"]["environment"]
    assert environment["JWT_SECRET"] == "${JWT_SECRET}"
    assert environment["LLM_PROVIDER"] == "${LLM_PROVIDER}"  # a reference stays
    assert proposal.host_env == {
        "JWT_SECRET": "s3cr3t-literal-value",
        "OPENAI_API_KEY": "sk-from-dotenv",
    }
    assert proposal.moved == ["JWT_SECRET", "OPENAI_API_KEY"]
    assert proposal.compose_env["LLM_PROVIDER"] == "ollama"
    written = repr(proposal.compose) + repr(proposal.compose_env)
    assert "s3cr3t" not in written and "sk-from" not in written
    assert any("/opt/llm/provider.env stays on this host" in n for n in proposal.notes)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("JWT_SECRET", True), ("SIG_KEY", True), ("SIG_SALT", True), ("DB_PASSWORD", True),
        ("OPENAI_API_KEY", True), ("GITHUB_TOKEN", True), ("SENTRY_DSN", True),
        ("STORAGE_DIR", False), ("SERVER_PORT", False), ("LLM_PROVIDER", False),
        ("KEYBOARD_LAYOUT", False),
    ],
)  # fmt: skip
def test_secret_names(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


LLM_PORT = {"target": 3001, "published": "3101", "host_ip": "127.0.0.1"}
HOST_NET = {"network_mode": "host", "environment": {"SERVER_PORT": "3005"}}


@pytest.mark.parametrize(
    ("service", "url"),
    [
        ({"image": "mintplexlabs/anythingllm:1.16", "ports": [LLM_PORT]},
         "http://127.0.0.1:3101/api/ping"),
        ({"image": "mintplexlabs/anythingllm", **HOST_NET}, "http://127.0.0.1:3005/api/ping"),
        ({"image": "grafana/grafana:11", "ports": [{"target": 3000, "published": "3000"}]},
         "http://127.0.0.1:3000/api/health"),
        ({"image": "acme/shop:2", "ports": [{"target": 8080, "published": "80"}]},
         "http://127.0.0.1:80/"),
        ({"image": "acme/worker:2"}, None),
    ],
)  # fmt: skip
def test_health_urls(service: dict[str, Any], url: str | None) -> None:
    assert health_url(service) == url


def test_the_gated_service_is_a_known_image_then_one_with_ports() -> None:
    assert (
        gated_service({"db": {"image": "postgres:16"}, "llm": {"image": "x/anythingllm"}}) == "llm"
    )
    assert (
        gated_service({"db": {"image": "postgres"}, "web": {"image": "a/b", "ports": [{}]}})
        == "web"
    )
    assert gated_service({"b": {"image": "x"}, "a": {"image": "y"}}) == "a"


def test_a_built_service_without_an_image_cannot_be_adopted() -> None:
    model = {"services": {"app": {"build": {"context": "/src"}}}}
    with pytest.raises(ValueError, match="never builds"):
        propose("p", model, model, {}, {})


def test_dotenv_as_compose_reads_it() -> None:
    text = "# c\nexport A=1\nB='two words'\nC=\"x#y\"\nD=plain # comment\n\nbad line\n"
    assert parse_dotenv(text) == {"A": "1", "B": "two words", "C": "x#y", "D": "plain"}
