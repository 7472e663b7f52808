"""Free loopback ports for the harness's servers and the tests' own listeners."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

_given: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now and was not handed out before in this process.

    The kernel picks the port (bind to 0); remembering what we gave away keeps two servers
    of one session from receiving the same port before either of them has bound it.
    """
    with _lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _given:
                _given.add(port)
                return port
    raise RuntimeError("no free port on 127.0.0.1")


def free_port_pair() -> int:
    """A port ``p`` such that ``p`` and ``p + 1`` are both free (start-first's pair)."""
    for _ in range(100):
        port = free_port()
        with _lock:
            if port + 1 in _given:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            _given.add(port + 1)
            return port
    raise RuntimeError("no free pair of ports on 127.0.0.1")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Wait until host:port accepts connections, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while not port_open(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.05)


def stop_listening(listener: socket.socket, acceptor: threading.Thread, timeout: float) -> bool:
    """Close a listening socket that ``acceptor`` sits in ``accept()`` on; whether it ended.

    shutdown() first, which wakes the blocked accept(), and close() only once the thread
    is gone: close() alone leaves the thread blocked in accept() on a file descriptor
    number that is free again. The next server of the session gets that number, and an
    accept() restarted by the kernel (a stop and continue, a ptrace attach) then takes
    that server's next client and drops it: a git fetch or an image pull failing in a
    later test (found with tests/cli/test_reload.py's Hang and the fault suite).
    """
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    acceptor.join(timeout)
    listener.close()
    return not acceptor.is_alive()
