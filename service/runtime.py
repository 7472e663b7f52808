"""What a running web process holds: built in the lifespan, reached through request state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response

from rollhook.settings import Settings
from rollhook.targets import Target
from service import answers
from service.matching import Matcher
from service.metrics import Metrics
from service.ratelimit import AuthFailures, ClientAddress
from service.recorder import Recorder


@dataclass
class Runtime:
    settings: Settings
    targets: dict[str, Target]
    matcher: Matcher
    engine: Engine
    recorder: Recorder
    metrics: Metrics
    addresses: ClientAddress
    auth_failures: AuthFailures

    def client(self, request: Request, headers: Mapping[str, str] | None = None) -> str:
        """The client's address; ``headers``: the request's, when already read into a dict."""
        peer = request.client.host if request.client else None
        forwarded_for = (request.headers if headers is None else headers).get("x-forwarded-for")
        return self.addresses.resolve(peer, forwarded_for)

    def auth_failed(self, client: str, unauthorized: Response | None = None) -> Response:
        """Count a failed authentication: 401, or 429 once the client keeps failing.

        Credentials in headers or the URL are checked before this, so a sender with the
        right ones is heard even from an address somebody else keeps failing from
        (GitHub's and Docker Hub's shared outgoing addresses, say). A signed body is the
        exception: a blocked client's body is not read, so it is answered 429 unheard.
        """
        self.auth_failures.failed(client)
        retry_after = self.auth_failures.retry_after(client)
        if retry_after is not None:
            return answers.too_many(retry_after)
        return unauthorized or answers.unauthorized()


def runtime(request: Request) -> Runtime:
    state: Runtime = request.state.rollhook
    return state
