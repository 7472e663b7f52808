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

# Until uvicorn's manager takes SIGHUP over, a SIGHUP must not end this process (its
# default), nor be lost: it is noted here and handed to the manager once it runs.
_early_hups: list[int] = []
signal.signal(signal.SIGHUP, lambda sig, frame: _early_hups.append(sig))

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import uvicorn  # noqa: E402
from uvicorn.config import STARTUP_FAILURE  # noqa: E402
from uvicorn.supervisors import Multiprocess  # noqa: E402
from uvicorn.supervisors.multiprocess import Process  # noqa: E402

from rollhook.numbers import whole_number  # noqa: E402

APP = "service.app:create_app"
# A new web process must be serving within this many seconds (uvicorn's default is 5):
# at a SIGHUP the old one is kept when its successor is not ready in time.
READY_TIMEOUT = 60
# A running web process must answer the manager's ping within this many seconds, or it is
# taken for hung and replaced; it is also how long a death mid-ping goes unnoticed.
PING_TIMEOUT = 10
# Exit codes of a web process that could not start: an import error (1), a bad setting
# or targets file (2, service/app.py), uvicorn's own startup failure (3).
START_FAILURES = {1, 2, STARTUP_FAILURE}
MAX_WEB_PROCESSES = 256

log = logging.getLogger("uvicorn.error")


class Manager(Multiprocess):
    """uvicorn's manager, except that a web process failing to start ends it (uvicorn
    gives up only on exit code 3, and would start one failing with 2 again forever), as
    the web process alone would end; a crash (a signal) is still replaced."""

    failed: int | None = None

    def keep_subprocess_alive(self) -> None:
        # uvicorn's own, with the exit codes above instead of 3 alone.
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=PING_TIMEOUT):
                continue
            process.kill()  # hung, or gone already
            process.join()
            if process.exitcode in START_FAILURES:
                log.error("web process [%s] could not start; stopping", process.pid)
                self.failed = process.exitcode
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            log.info("web process [%s] died; starting another", process.pid)
            self.processes[index] = Process(self.config, self.sockets)
            self.processes[index].start()


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
        timeout_worker_healthcheck=READY_TIMEOUT,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    concurrency = os.environ.get("WEB_CONCURRENCY") or "1"
    workers = whole_number(concurrency, 1, MAX_WEB_PROCESSES)
    if workers is None:
        print(
            f"rollhook: WEB_CONCURRENCY: {concurrency!r} is not a whole number"
            f" from 1 to {MAX_WEB_PROCESSES}",
            file=sys.stderr,
        )
        return 2
    settings = config(args.host, args.port, workers)
    manager = Manager(settings, sockets=[settings.bind_socket()])
    manager.signal_queue.extend(_early_hups)
    manager.run()
    return manager.failed or 0


if __name__ == "__main__":
    sys.exit(main())
