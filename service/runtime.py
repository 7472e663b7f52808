"""What a running web process holds: built in the lifespan, reached through request state."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response

from rollhook.settings import Settings
from rollhook.targets import Target
from service import answers
from service.matching import Matcher
from service.metrics import Metrics
from service.ratelimit import UNKNOWN_FORWARDED, AuthFailures, ClientAddress
from service.recorder import Recorder
from service.slack_replies import SlackReplies

log = logging.getLogger("rollhook.app")


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
    slack_replies: SlackReplies | None = None  # with a Slack signing secret (service/slack.py)
    _warned: bool = False

    def client(self, request: Request) -> str:
        """The client's address, by ROLLHOOK_TRUSTED_PROXIES alone (service.ratelimit)."""
        peer = request.client.host if request.client else None
        # Every X-Forwarded-For header, joined as a server would join them.
        forwarded = [v for k, v in request.scope["headers"] if k == b"x-forwarded-for"]
        address = self.addresses.resolve(peer, b", ".join(forwarded).decode("latin-1"))
        if address == UNKNOWN_FORWARDED and not self._warned:
            self._warned = True
            log.warning(
                "a peer address was taken from X-Forwarded-For before rollhook saw it (a "
                "server's proxy headers, e.g. uvicorn without --no-proxy-headers): such "
                "clients share one address for the auth-failure limit"
            )
        return address

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
