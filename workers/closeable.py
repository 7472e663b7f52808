"""What holds a resource until closed (a connection pool, an open directory, a lock):
``close()`` lets it go, and ``with`` closes it however the block ends."""

from __future__ import annotations

from typing import Self


class Closeable:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
