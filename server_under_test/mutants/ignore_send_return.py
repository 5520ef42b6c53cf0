"""Mutant: ``send()``'s return value is ignored, so the unsent rest is lost.

The bug: :meth:`echo` calls ``send()`` and carries on as if the kernel took
every byte. When the client reads slowly its receive window closes, the
server's send buffer fills, ``send()`` takes only part of the data (or raises
EAGAIN) and the rest silently disappears from the echo.

Caught by **echo-exact**: a client that pauses reading, then reads, gets
fewer bytes than it sent.

Real world: ``send(fd, buf, n, 0);`` with the result unchecked is the most
common bug of tutorial epoll servers; it never shows on an idle loopback.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class IgnoreSendReturnServer(ReferenceServer):
    def on_short_send(self, conn: Connection, rest: memoryview) -> None:
        pass  # BUG: send()'s return value is ignored: the bytes it did not take are dropped, not queued


if __name__ == "__main__":
    sys.exit(run_mutant(IgnoreSendReturnServer))
