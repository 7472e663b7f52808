"""The registry asked what a tag points at, and which tags exist: polling, never pulling.

Verbs: :meth:`RegistryClient.digest` (one ``HEAD`` of the tag's manifest),
:meth:`RegistryClient.tags` (the tag list, page by page) and
:meth:`RegistryClient.newest_allowed` (the highest tag a ``semver:``/``glob:`` policy
allows). Docker Hub counts a ``GET`` of a manifest as a pull and a ``HEAD`` not, so a
digest costs one ``HEAD`` (plus, once per repository and token lifetime, the token
request); only a registry that answers ``HEAD`` without ``Docker-Content-Digest`` gets a
``GET``, and the digest is then computed from the body.

Credentials are the Docker client's own (:mod:`workers.registry_credentials`), used the
way registries ask: a ``401`` with ``WWW-Authenticate: Bearer realm=...,service=...,
scope=...`` sends us to the token service (anonymously, with Basic credentials, or with an
identity token), a ``Basic`` challenge gets Basic credentials. Tokens are kept per
repository until they expire. Plain http is used only for loopback registries (Docker
treats 127.0.0.0/8 as insecure), https otherwise. Every request has a timeout; failures are
the project's errors: :class:`InfrastructureError` (network, 5xx, :class:`RateLimited` for
429) or :class:`OperatorError` (refused credentials, an unknown repository or tag).

Why not a library: oras-py (0.2.43, the maintained Python OCI client) sends its requests
without any timeout, retries every failure itself with sleeps of up to 80 s, has no
``HEAD`` of a manifest by tag, runs credential helpers without a deadline, pages tag lists
without a bound and ships no type information for mypy. What polling needs is three
requests and the token dance; this is that, on httpx (already a dependency).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
from packaging.version import InvalidVersion, Version

from rollhook.images import DOCKER_HUB, ImageRef, ReferenceError, parse_reference
from rollhook.targets import TagPolicy, natural_key
from workers.closeable import Closeable
from workers.errors import InfrastructureError, OperatorError
from workers.registry_credentials import Credentials, DockerCredentials

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
HUB_API = "registry-1.docker.io"  # docker.io's API host
TOKEN_LIFETIME = 60.0  # seconds, when the token service does not say (the spec's default)
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


class RateLimited(InfrastructureError):
    """The registry answered 429; ``retry_after`` (seconds) is its own hint, if it gave one."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Challenge:
    """A ``WWW-Authenticate`` answer: ``Bearer`` or ``Basic`` and its parameters."""

    scheme: str  # lower case
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge:
        scheme, _, rest = header.strip().partition(" ")
        params = {m[1].lower(): m[2] or m[3] for m in _PARAM.finditer(rest)}
        return cls(scheme.lower(), params)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (no port) is this machine: localhost, 127.0.0.0/8, ::1."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url(registry: str) -> str:
    """The API root for a registry name: ``docker.io`` -> ``https://registry-1.docker.io``."""
    if registry == DOCKER_HUB:
        return f"https://{HUB_API}"
    host = urlsplit(f"//{registry}").hostname or registry
    return f"{'http' if is_loopback(host) else 'https'}://{registry}"


def newest(tags: Iterable[str], policy: TagPolicy) -> str | None:
    """The highest tag ``policy`` allows, or None.

    ``semver:`` orders by version (a leading ``v`` ignored; the policy itself leaves out
    pre-releases). ``glob:`` (and ``exact:``) order by version when every allowed tag is
    one, pre-releases included (a webhook for them would be followed too), and otherwise
    in natural order: digit runs compared as numbers, the rest as text, so
    ``1.9-alpine`` < ``1.10-alpine``. Equal versions (``1.2`` and ``v1.2``) go by text.
    """
    allowed = sorted({tag for tag in tags if policy.allows(tag)})
    if not allowed:
        return None
    versions: dict[str, Version] = {}
    for tag in allowed:
        try:
            versions[tag] = Version(tag.removeprefix("v"))
        except InvalidVersion:
            break
    else:
        return max(allowed, key=lambda tag: (versions[tag], tag))
    return max(allowed, key=natural_key)


class RegistryClient(Closeable):
    """One HTTP connection pool to any registry; use as a context manager.

    ``credentials`` finds who to be at a registry (default: the Docker client config of
    this host, read once per client: make a client per poll cycle to see a new
    ``docker login``). ``transport`` is for tests that count requests.
    """

    def __init__(
        self,
        *,
        credentials: Callable[[str], Credentials | None] | None = None,
        timeout: float = 30.0,
        page_size: int = 100,
        max_pages: int = 100,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._credentials = credentials or DockerCredentials().lookup
        self.timeout, self.page_size, self.max_pages = timeout, page_size, max_pages
        # Redirects are followed (registries send blobs elsewhere); httpx drops the
        # Authorization header whenever a redirect leaves the origin.
        self._http = httpx.Client(
            timeout=timeout, follow_redirects=True, max_redirects=3, transport=transport
        )
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}  # (registry, repo)
        self._basic: set[str] = set()  # registries that asked for Basic credentials
        self._known: dict[str, Credentials | None] = {}

    def close(self) -> None:
        self._http.close()

    # -- verbs ------------------------------------------------------------------------

    def digest(self, ref: ImageRef | str) -> str:
        """The digest the registry serves now for ``ref``'s tag (``latest`` when none).

        An index digest for a multi-platform image, the manifest's otherwise: what
        ``docker push`` reports and what a pull by that tag would get.
        """
        image = _image(ref)
        tag = image.tag or "latest"
        what = f"{image.name}:{tag}"
        url = f"{base_url(image.registry)}/v2/{image.repository}/manifests/{tag}"
        answer = self._send("HEAD", url, image, what)
        if digest := answer.headers.get("Docker-Content-Digest"):
            return str(digest)
        answer = self._send("GET", url, image, what)  # a registry that hides it on HEAD
        return "sha256:" + hashlib.sha256(answer.content).hexdigest()

    def tags(self, repository: ImageRef | str) -> list[str]:
        """Every tag of a repository, in the registry's order (a tag in ``repository`` is
        ignored), following ``Link: <...>; rel="next"`` for at most ``max_pages`` pages."""
        image = _image(repository)
        base = base_url(image.registry)
        url = f"{base}/v2/{image.repository}/tags/list?n={self.page_size}"
        found: dict[str, None] = {}
        for _ in range(self.max_pages):
            answer = self._send("GET", url, image, f"the tags of {image.name}", "application/json")
            try:
                listed = answer.json().get("tags") or []
            except (ValueError, AttributeError) as exc:
                raise InfrastructureError(f"{image.name}: the tag list is not JSON") from exc
            found.update((str(tag), None) for tag in listed)
            following = answer.links.get("next", {}).get("url")
            if not following:
                return list(found)
            url = urljoin(f"{base}/", following)
            if urlsplit(url).netloc != urlsplit(base).netloc:
                raise InfrastructureError(f"{image.name}: the tag list continues on another host")
        raise InfrastructureError(
            f"{image.name}: more than {self.max_pages} pages of {self.page_size} tags"
        )

    def newest_allowed(self, repository: ImageRef | str, policy: TagPolicy) -> str | None:
        """The highest tag of ``repository`` that ``policy`` allows (see :func:`newest`)."""
        return newest(self.tags(repository), policy)

    # -- plumbing ---------------------------------------------------------------------

    def _send(
        self, method: str, url: str, image: ImageRef, what: str, accept: str = ACCEPT
    ) -> httpx.Response:
        """One request, authenticated as the registry asks; raises the project's errors."""
        headers = {"Accept": accept}
        if authorization := self._remembered(image):
            headers["Authorization"] = authorization
        answer = self._request(method, url, headers, what)
        if answer.status_code == 401:
            challenge = Challenge.parse(answer.headers.get("WWW-Authenticate", ""))
            headers["Authorization"] = self._answer(challenge, image, what)
            answer = self._request(method, url, headers, what)
        _raise_for(answer, image, what)
        return answer

    def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        what: str,
        *,
        params: dict[str, str] | None = None,
        data: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return self._http.request(
                method, url, headers=headers, params=params, data=data, auth=auth
            )
        except httpx.TimeoutException as exc:
            raise InfrastructureError(
                f"{what}: {urlsplit(url).netloc} did not answer within {self.timeout:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise InfrastructureError(f"{what}: {urlsplit(url).netloc}: {exc}") from exc

    def _remembered(self, image: ImageRef) -> str | None:
        """The Authorization that worked for this repository before, while it is valid."""
        with self._lock:
            token = self._tokens.get((image.registry, image.repository))
            basic = image.registry in self._basic
        if token and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        if basic and (credentials := self._lookup(image.registry)):
            return _basic_header(credentials)
        return None

    def _lookup(self, registry: str) -> Credentials | None:
        with self._lock:
            if registry in self._known:
                return self._known[registry]
        found = self._credentials(registry)
        with self._lock:
            self._known[registry] = found
        return found

    def _answer(self, challenge: Challenge, image: ImageRef, what: str) -> str:
        """The Authorization header that answers a 401's challenge."""
        credentials = self._lookup(image.registry)
        if challenge.scheme == "basic":
            if credentials is None or not credentials.username:
                raise OperatorError(_denied(image, what, "asks for a user and password"))
            with self._lock:
                self._basic.add(image.registry)
            return _basic_header(credentials)
        if challenge.scheme != "bearer" or not challenge.params.get("realm"):
            raise OperatorError(_denied(image, what, "asks for an authentication we do not know"))
        token, lifetime = self._token(challenge, image, credentials, what)
        with self._lock:
            # Renewed a little before the service's own expiry.
            self._tokens[(image.registry, image.repository)] = (
                token,
                time.monotonic() + max(lifetime - 10.0, lifetime / 2),
            )
        return f"Bearer {token}"

    def _token(
        self, challenge: Challenge, image: ImageRef, credentials: Credentials | None, what: str
    ) -> tuple[str, float]:
        """A token from the registry's token service: (token, lifetime in seconds)."""
        realm = challenge.params["realm"]
        parts = urlsplit(realm)
        if parts.scheme != "https" and not (
            parts.scheme == "http" and is_loopback(parts.hostname or "")
        ):
            raise OperatorError(f"{what}: refusing the token service {realm} (not https)")
        scope = challenge.params.get("scope") or f"repository:{image.repository}:pull"
        query = {"scope": scope, "service": challenge.params.get("service", "")}
        token_what = f"{what}: the token service of {image.registry}"
        if credentials and credentials.identity_token:
            form = {
                **query,
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "client_id": "rollhook",
            }
            answer = self._request("POST", realm, {}, token_what, data=form)
        else:
            auth = (
                (credentials.username, credentials.password)
                if credentials and credentials.username
                else None
            )
            answer = self._request("GET", realm, {}, token_what, params=query, auth=auth)
        if answer.status_code in {401, 403}:
            how = "refused the credentials" if credentials else "wants credentials"
            raise OperatorError(_denied(image, what, f"(its token service {how})"))
        _raise_for(answer, image, token_what)
        try:
            body = answer.json()
            token = str(body.get("token") or body["access_token"])
            lifetime = float(body.get("expires_in") or TOKEN_LIFETIME)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InfrastructureError(f"{token_what} answered without a token") from exc
        return token, lifetime


def _image(ref: ImageRef | str) -> ImageRef:
    if isinstance(ref, ImageRef):
        return ref
    try:
        return parse_reference(ref)
    except ReferenceError as exc:
        raise OperatorError(str(exc)) from exc


def _basic_header(credentials: Credentials) -> str:
    pair = f"{credentials.username}:{credentials.password}".encode()
    return f"Basic {base64.b64encode(pair).decode()}"


def _denied(image: ImageRef, what: str, why: str) -> str:
    login = "docker login" if image.registry == DOCKER_HUB else f"docker login {image.registry}"
    return (
        f"{what}: {image.registry} {why}: the repository does not exist, or it is private "
        f"and this host's Docker is not logged in to it (`{login}`)"
    )


def _raise_for(answer: httpx.Response, image: ImageRef, what: str) -> None:
    status = answer.status_code
    if status < 300:
        return
    code = _error_code(answer)
    if status in {401, 403}:
        raise OperatorError(_denied(image, what, f"denied access ({status}{code})"))
    if status == 404:
        raise OperatorError(f"{what}: not found in {image.registry} (404{code})")
    if status == 429:
        retry_after = _retry_after(answer.headers.get("Retry-After"))
        hint = f", retry after {retry_after:g}s" if retry_after is not None else ""
        raise RateLimited(f"{what}: {image.registry} is rate limiting (429{hint})", retry_after)
    if status >= 500:
        raise InfrastructureError(f"{what}: {image.registry} failed ({status}{code})")
    raise OperatorError(f"{what}: {image.registry} refused the request ({status}{code})")


def _error_code(answer: httpx.Response) -> str:
    """`` MANIFEST_UNKNOWN``-style codes from the registry's error body, if any."""
    try:
        errors = answer.json().get("errors") or []
        codes = [str(e["code"]) for e in errors if isinstance(e, dict) and "code" in e]
    except (ValueError, AttributeError, KeyError, httpx.ResponseNotRead):
        return ""
    return f" {', '.join(codes)}" if codes else ""


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: a number of seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
