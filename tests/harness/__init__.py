"""The test harness: real servers on 127.0.0.1 for rollhook's integration tests.

Fixtures in ``tests/conftest.py`` start these on first use and stop them at the end of
the session; tests may also use the pieces directly. Things worth knowing:

- Ports come from ``free_port()``; the stand-in listens on 127.0.0.1:$SERVER_PORT with
  host networking, so two stand-ins on one port conflict (the second exits non-zero).
- A bind-mounted ``./.env`` that does not exist on the host becomes a directory (as with
  the real anything-llm): create the file first. The stand-in then warns, and keeps no key.
- Registry events name the host they were pushed to: inside ``registry.notifying()``,
  build and configure images with the yielded host (``standin.build(...,
  registry_host=host)``); both hosts serve the same storage.
- ``git_server.create_repo(name)`` may append a suffix if another test took the name:
  use the returned repository's ``url``.
"""

from tests.harness.gitserver import GitServer, InfraRepo
from tests.harness.infra import INFRA_PATH, SERVICE, compose_file, infra_files
from tests.harness.listener import Listener, Received
from tests.harness.ports import free_port, port_open, wait_for_port

__all__ = [
    "INFRA_PATH",
    "SERVICE",
    "GitServer",
    "InfraRepo",
    "Listener",
    "Received",
    "compose_file",
    "free_port",
    "infra_files",
    "port_open",
    "wait_for_port",
]
