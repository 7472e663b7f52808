"""``rollhook web``: uvicorn, with the Procfile's options, always under its process manager.

``python -m service.serve --host H --port P`` serves ``service.app:create_app`` as the
Procfile's ``uvicorn`` line does, but with uvicorn's process manager even for one web
process (``WEB_CONCURRENCY``, default 1): the manager holds the listening socket, so a
SIGHUP replaces the web processes one by one, each new one answering before its old one
is stopped. The new ones read the targets file again; connections that arrive meanwhile
wait in the socket's backlog, none is refused. ``rollhook up`` sends that SIGHUP when the
targets file changes (cli/reload.py).
"""

from __future__ import annotations

import signal

# Until uvicorn's manager takes SIGHUP over, one must not end this process (its default).
signal.signal(signal.SIGHUP, signal.SIG_IGN)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import uvicorn  # noqa: E402
from uvicorn.config import STARTUP_FAILURE  # noqa: E402
from uvicorn.supervisors import Multiprocess  # noqa: E402

APP = "service.app:create_app"


def config(host: str, port: int, workers: int) -> uvicorn.Config:
    return uvicorn.Config(
        APP,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        server_header=False,
        # Whose X-Forwarded-For to believe is ROLLHOOK_TRUSTED_PROXIES' call alone.
        proxy_headers=False,
        # Bounds what slow clients can hold (each may buffer up to the body cap).
        limit_concurrency=256,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    workers = int(os.environ.get("WEB_CONCURRENCY") or 1)
    settings = config(args.host, args.port, max(1, workers))
    manager = Multiprocess(settings, sockets=[settings.bind_socket()])
    with contextlib.suppress(KeyboardInterrupt):  # a Ctrl-C before the manager's handler
        manager.run()
    # The manager stops, exit code 0, when a web process fails to start: say it failed.
    return 1 if any(p.exitcode == STARTUP_FAILURE for p in manager.processes) else 0


if __name__ == "__main__":
    sys.exit(main())
