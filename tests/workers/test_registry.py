"""The registry adapter, against the harness registry and Distribution instances with auth."""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from rollhook.targets import TagPolicy
from tests.harness import free_port
from tests.harness.registry_auth import (
    RegistryProxy,
    TokenService,
    htpasswd_line,
    serve_registry,
)
from workers.errors import InfrastructureError, OperatorError
from workers.registry import RateLimited, RegistryClient, base_url, newest
from workers.registry_credentials import Credentials, DockerCredentials

REPOSITORY = "acme/anythingllm"


class Counting(httpx.HTTPTransport):
    """Every request the client sent: (method, host:port, path)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(
            (request.method, f"{request.url.host}:{request.url.port}", request.url.path)
        )
        return super().handle_request(request)

    def to(self, host: str) -> list[tuple[str, str]]:
        return [(method, path) for method, seen_host, path in self.seen if seen_host == host]


def _client(config_dir: Path, **kwargs: Any) -> RegistryClient:
    """A client whose Docker config is ``config_dir`` (never this machine's own)."""
    return RegistryClient(credentials=DockerCredentials(config_dir).lookup, timeout=10, **kwargs)


def _docker_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _push_tags(standin: Any, repository: str, tags: list[str]) -> None:
    """Push one stand-in image under several tags of a fresh repository."""
    first = standin.build(tags[0], 1, repository=repository)
    api = standin.client.api
    for tag in tags[1:]:
        api.tag(first, f"{standin.registry_host}/{repository}", tag)
        for line in api.push(
            f"{standin.registry_host}/{repository}", tag=tag, stream=True, decode=True
        ):
            assert "error" not in line, line


# -- pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry", "url"),
    [
        ("docker.io", "https://registry-1.docker.io"),
        ("ghcr.io", "https://ghcr.io"),
        ("registry.example:5000", "https://registry.example:5000"),
        ("10.1.2.3:5000", "https://10.1.2.3:5000"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.9.9.9:5000", "http://127.9.9.9:5000"),
        ("localhost:5000", "http://localhost:5000"),
        ("[::1]:5000", "http://[::1]:5000"),
    ],
)
def test_base_url_uses_plain_http_only_on_loopback(registry: str, url: str) -> None:
    assert base_url(registry) == url


@pytest.mark.parametrize(
    ("policy", "tags", "expected"),
    [
        ("semver:>=1.9,<2", ["1.9.0", "1.10.0", "1.10.1-rc1", "2.0.0", "latest"], "1.10.0"),
        ("semver:>=1", ["v1.2.0", "1.10.0", "v1.11.0"], "v1.11.0"),
        ("semver:>=3", ["1.0.0", "2.0.0"], None),
        ("semver:>=1", ["1.2", "v1.2"], "v1.2"),  # equal versions: by text, so stable
        ("glob:1.*", ["1.9.0", "1.10.0", "1.10.1-rc1", "2.0.0"], "1.10.1-rc1"),
        ("glob:1.*-alpine", ["1.9-alpine", "1.10-alpine", "1.2-alpine", "1.10"], "1.10-alpine"),
        ("glob:release-*", ["release-2024-09-30", "release-2024-10-01"], "release-2024-10-01"),
        ("glob:nightly-*", [], None),
        ("exact:1.16.1", ["1.16.1", "1.16.2"], "1.16.1"),
    ],
)
def test_newest_tag_a_policy_allows(policy: str, tags: list[str], expected: str | None) -> None:
    assert newest(tags, TagPolicy(policy)) == expected


def test_credentials_from_the_docker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _docker_config(
        tmp_path / "docker",
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _auth("hubuser", "hub:pass")},
                "https://registry.example:5000": {"auth": _auth("ex", "expass")},
                "old.example": {"username": "old", "password": "oldpass"},
                "acr.example": {"identitytoken": "refresh-me"},
                "empty.example": {},
                "bad.example": {"auth": "not base64!"},
            }
        },
    )
    found = DockerCredentials(config)
    assert found.lookup("docker.io") == Credentials("hubuser", "hub:pass")
    assert found.lookup("registry.example:5000") == Credentials("ex", "expass")
    assert found.lookup("old.example") == Credentials("old", "oldpass")
    assert found.lookup("acr.example") == Credentials(identity_token="refresh-me")
    assert found.lookup("empty.example") is None
    assert found.lookup("elsewhere.example") is None
    with pytest.raises(OperatorError, match="not base64"):
        found.lookup("bad.example")
    assert "expass" not in repr(found.lookup("registry.example:5000"))

    # DOCKER_CONFIG is where the Docker CLI looks, and so do we.
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    assert DockerCredentials().lookup("docker.io") == Credentials("hubuser", "hub:pass")
    assert DockerCredentials(tmp_path / "nowhere").lookup("docker.io") is None


def _helper(bin_dir: Path, name: str, answers: dict[str, tuple[str, str]]) -> Path:
    """A docker-credential-<name> that knows ``answers`` (server -> (user, secret)) and
    writes every server address it was asked for to ``asked``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    asked = bin_dir / f"{name}.asked"
    cases = ""
    for server, (user, secret) in answers.items():
        answer = json.dumps({"ServerURL": server, "Username": user, "Secret": secret})
        cases += f"  \"{server}\") printf '%s' '{answer}' ;;\n"
    script = bin_dir / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 2\n'
        "server=$(cat)\n"
        f'printf "%s\\n" "$server" >> {asked}\n'
        'case "$server" in\n'
        f"{cases}"
        '  *) echo "credentials not found in native keychain"; exit 1 ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return asked


def test_credential_helpers_are_asked_as_the_docker_cli_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    asked = _helper(
        bin_dir,
        "rhtest",
        {
            "https://index.docker.io/v1/": ("hubuser", "hubsecret"),
            "ghcr.io": ("<token>", "identity-123"),
        },
    )
    config = _docker_config(
        tmp_path / "docker",
        {
            "auths": {"ghcr.io": {"auth": _auth("ignored", "ignored")}},
            "credsStore": "rhtest",
            "credHelpers": {"private.example": "missing-helper"},
        },
    )
    found = DockerCredentials(config)
    assert found.lookup("docker.io") == Credentials("hubuser", "hubsecret")
    # With a credsStore the inline entry is ignored; "<token>" marks an identity token.
    assert found.lookup("ghcr.io") == Credentials(identity_token="identity-123")
    assert found.lookup("quay.io") is None  # "credentials not found": anonymous
    assert asked.read_text().split() == ["https://index.docker.io/v1/", "ghcr.io", "quay.io"]
    with pytest.raises(OperatorError, match=r"docker-credential-missing-helper .* not installed"):
        found.lookup("private.example")

    bad = _docker_config(tmp_path / "bad", {"credsStore": "../../bin/sh"})
    with pytest.raises(OperatorError, match="not a credential helper name"):
        DockerCredentials(bad).lookup("docker.io")


# -- against the harness registry --------------------------------------------------------


def test_digest_is_what_the_push_reported_in_one_head(
    standin: Any, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    counting = Counting()
    with _client(tmp_path, transport=counting) as registry:
        for tag in ("1.0.0", "2.0.0", "2.0.0-slow"):
            ref = standin.ref(tag)
            assert registry.digest(ref) == standin.digests[ref]
            engine = docker_client.api.inspect_distribution(ref)["Descriptor"]["digest"]
            assert registry.digest(ref) == engine
    # Six digests: six HEADs of manifests, not one GET (a GET counts as a pull on Hub).
    assert [method for method, _, _ in counting.seen] == ["HEAD"] * 6
    assert all("/manifests/" in path for _, _, path in counting.seen)


def test_a_re_pushed_tag_moves(standin: Any, tmp_path: Path) -> None:
    tag = f"stable-{uuid.uuid4().hex[:6]}"
    with _client(tmp_path) as registry:
        ref = standin.build(tag, 1)
        before = registry.digest(ref)
        assert before == standin.digests[ref]
        standin.build(tag, 2)
        after = registry.digest(ref)
        assert after != before
        assert after == standin.digests[ref]


def test_unknown_tags_repositories_and_registries(standin: Any, tmp_path: Path) -> None:
    with _client(tmp_path) as registry:
        with pytest.raises(OperatorError, match="not found"):
            registry.digest(standin.ref("9.9.9"))
        with pytest.raises(OperatorError, match="NAME_UNKNOWN"):
            registry.tags(standin.ref("1.0.0", repository="acme/no-such-repo"))
        with pytest.raises(OperatorError, match="invalid"):
            registry.digest("127.0.0.1:5000/Not Valid")
        nobody = f"127.0.0.1:{free_port()}/acme/anythingllm:1.0.0"
        with pytest.raises(InfrastructureError):
            registry.digest(nobody)


def test_a_registry_that_never_answers_times_out(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        port = silent.getsockname()[1]
        client = RegistryClient(credentials=DockerCredentials(tmp_path).lookup, timeout=0.5)
        with client, pytest.raises(InfrastructureError, match=r"did not answer within 0.5s"):
            client.digest(f"127.0.0.1:{port}/acme/anythingllm:1.0.0")


def test_tags_are_listed_page_by_page(standin: Any, registry: Any, tmp_path: Path) -> None:
    repository = f"acme/paged-{uuid.uuid4().hex[:6]}"
    tags = ["1.0.0", "1.1.0", "1.2.0", "1.10.0", "2.0.0-rc1", "2.0.0", "latest"]
    _push_tags(standin, repository, tags)
    with _client(tmp_path, page_size=3) as client:
        # Distribution 2.8 answers every tag at once, whatever n says.
        assert sorted(client.tags(f"{registry.host}/{repository}")) == sorted(tags)

    # Pages as the distribution spec, Distribution 3 and Docker Hub serve them.
    proxy = RegistryProxy(registry.url, paginate=True)
    proxy.start()
    try:
        ref = f"{proxy.host}/{repository}"
        with _client(tmp_path, page_size=3) as client:
            assert sorted(client.tags(ref)) == sorted(tags)
            assert len(proxy.requests) == 3  # 3 + 3 + 1
            assert all(method == "GET" for method, _ in proxy.requests)
            assert proxy.requests[1][1].endswith("?n=3&last=1.10.0")  # lexical order

            assert client.newest_allowed(ref, TagPolicy("semver:>=1,<2")) == "1.10.0"
            assert client.newest_allowed(ref, TagPolicy("semver:>=1")) == "2.0.0"
            assert client.newest_allowed(ref, TagPolicy("glob:2.*")) == "2.0.0"
            assert client.newest_allowed(ref, TagPolicy("glob:1.1*")) == "1.10.0"
            assert client.newest_allowed(ref, TagPolicy("glob:3.*")) is None

        with (
            _client(tmp_path, page_size=3, max_pages=2) as short,
            pytest.raises(InfrastructureError, match="more than 2 pages"),
        ):
            short.tags(ref)
    finally:
        proxy.stop()


def test_a_registry_that_hides_the_digest_on_head_is_asked_with_get(
    standin: Any, registry: Any, tmp_path: Path
) -> None:
    proxy = RegistryProxy(registry.url, hide_digest_on_head=True)
    proxy.start()
    try:
        with _client(tmp_path) as client:
            digest = client.digest(f"{proxy.host}/{REPOSITORY}:1.0.0")
        assert digest == standin.digests[standin.ref("1.0.0")]
        path = f"/v2/{REPOSITORY}/manifests/1.0.0"
        assert proxy.requests == [("HEAD", path), ("GET", path)]
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("status", "headers", "error", "retry_after"),
    [
        (429, {"Retry-After": "7"}, RateLimited, 7.0),
        (429, {}, RateLimited, None),
        (503, {}, InfrastructureError, None),
        (403, {}, OperatorError, None),
    ],
)
def test_registry_failures_become_the_projects_errors(
    registry: Any,
    tmp_path: Path,
    *,
    status: int,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    proxy = RegistryProxy(registry.url, fail_with=(status, headers))
    proxy.start()
    try:
        with _client(tmp_path) as client, pytest.raises(error) as raised:
            client.digest(f"{proxy.host}/{REPOSITORY}:1.0.0")
        if isinstance(raised.value, RateLimited):
            assert raised.value.retry_after == retry_after
        if status == 403:
            assert "docker login" in str(raised.value)
    finally:
        proxy.stop()


# -- registries that want credentials ----------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(
    registry: Any, standin: Any, harness_root: Path, harness_logs: Path
) -> Iterator[str]:
    """A Distribution registry with htpasswd auth (alice/wonderland) over the same images."""
    root = harness_root / "registry-basic"
    root.mkdir(parents=True, exist_ok=True)
    (root / "htpasswd").write_text(htpasswd_line("alice", "wonderland") + "\n")
    auth = {"htpasswd": {"realm": "rollhook-tests", "path": str(root / "htpasswd")}}
    with serve_registry(registry.storage, root, harness_logs, auth) as url:
        yield url.removeprefix("http://")


def test_basic_auth_with_the_docker_config_credentials(
    basic_registry: str, standin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = f"{basic_registry}/{REPOSITORY}:1.0.0"
    expected = standin.digests[standin.ref("1.0.0")]

    with _client(tmp_path / "none") as anonymous, pytest.raises(OperatorError) as denied:
        anonymous.digest(ref)
    assert f"docker login {basic_registry}" in str(denied.value)

    wrong = _docker_config(
        tmp_path / "wrong", {"auths": {basic_registry: {"auth": _auth("alice", "nope")}}}
    )
    with _client(wrong) as client, pytest.raises(OperatorError) as refused:
        client.digest(ref)
    assert "nope" not in str(refused.value)

    right = _docker_config(
        tmp_path / "right",
        {"auths": {f"http://{basic_registry}": {"auth": _auth("alice", "wonderland")}}},
    )
    counting = Counting()
    with _client(right, transport=counting) as client:
        assert client.digest(ref) == expected
        assert client.digest(ref) == expected
        assert "1.0.0" in client.tags(ref)
    # By default the credentials are those of the Docker client config in DOCKER_CONFIG.
    monkeypatch.setenv("DOCKER_CONFIG", str(right))
    with RegistryClient(timeout=10) as default:
        assert default.digest(ref) == expected
    # Challenged once; then Basic credentials go along from the start.
    assert counting.to(basic_registry) == [
        ("HEAD", f"/v2/{REPOSITORY}/manifests/1.0.0"),
        ("HEAD", f"/v2/{REPOSITORY}/manifests/1.0.0"),
        ("HEAD", f"/v2/{REPOSITORY}/manifests/1.0.0"),
        ("GET", f"/v2/{REPOSITORY}/tags/list"),
    ]


@pytest.fixture(scope="module")
def token_service(harness_root: Path) -> Iterator[TokenService]:
    service = TokenService(
        harness_root / "token-service",
        users={"bob": "builder"},
        identity_tokens={"refresh-bob": "bob"},
    )
    service.start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def token_registry(
    registry: Any, standin: Any, token_service: TokenService, harness_root: Path, harness_logs: Path
) -> Iterator[str]:
    """A Distribution registry that answers 401 + ``Bearer realm=...`` as Docker Hub does."""
    root = harness_root / "registry-token"
    with serve_registry(registry.storage, root, harness_logs, token_service.registry_auth()) as url:
        yield url.removeprefix("http://")


def test_the_token_flow_anonymously_then_one_head_per_digest(
    token_registry: str, token_service: TokenService, standin: Any, tmp_path: Path
) -> None:
    token_service.anonymous = True
    token_service.requests.clear()
    try:
        ref = f"{token_registry}/{REPOSITORY}:2.0.0"
        counting = Counting()
        with _client(tmp_path, transport=counting) as client:
            for _ in range(4):
                assert client.digest(ref) == standin.digests[standin.ref("2.0.0")]
        manifest = ("HEAD", f"/v2/{REPOSITORY}/manifests/2.0.0")
        # 401 with the challenge, then the token, then one HEAD per digest().
        assert counting.to(token_registry) == [manifest] * 5
        assert [(r.method, r.scope, r.user) for r in token_service.requests] == [
            ("GET", f"repository:{REPOSITORY}:pull", None)
        ]
        assert not any(method == "GET" for method, _ in counting.to(token_registry))
    finally:
        token_service.anonymous = False


def test_the_token_flow_with_credentials(
    token_registry: str,
    token_service: TokenService,
    standin: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ref = f"{token_registry}/{REPOSITORY}:1.0.0"
    expected = standin.digests[standin.ref("1.0.0")]
    token_service.requests.clear()

    with _client(tmp_path / "none") as anonymous, pytest.raises(OperatorError) as denied:
        anonymous.digest(ref)
    assert "docker login" in str(denied.value) and "wants credentials" in str(denied.value)

    wrong = _docker_config(
        tmp_path / "wrong", {"auths": {token_registry: {"auth": _auth("bob", "guess")}}}
    )
    with _client(wrong) as client, pytest.raises(OperatorError, match="refused the credentials"):
        client.digest(ref)

    basic = _docker_config(
        tmp_path / "basic", {"auths": {token_registry: {"auth": _auth("bob", "builder")}}}
    )
    with _client(basic) as client:
        assert client.digest(ref) == expected
        assert "1.0.0" in client.tags(ref)  # the same token serves the tag list
    assert [(r.method, r.user) for r in token_service.requests] == [("GET", "bob")]

    # A credential helper that holds an identity token: an OAuth2 refresh-token grant.
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    _helper(bin_dir, "rhtoken", {token_registry: ("<token>", "refresh-bob")})
    helper = _docker_config(tmp_path / "helper", {"credHelpers": {token_registry: "rhtoken"}})
    with _client(helper) as client:
        assert client.digest(ref) == expected
    assert [(r.method, r.user) for r in token_service.requests][-1] == ("POST", "bob")
    for token in token_service.issued:
        assert token not in str(denied.value)
