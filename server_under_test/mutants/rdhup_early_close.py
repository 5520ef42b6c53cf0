"""Mutant: the connection is closed on EPOLLRDHUP before the remaining input was read.

The bug: the server registers EPOLLRDHUP and takes it for "the client is
gone": it closes as soon as the peer's FIN is reported. But the FIN only
means the client will send no more; input that arrived before it may not
have been read yet, and echoes may still be pending. They are dropped, and
closing with unread input makes the kernel send RST instead of FIN.

Caught by **half-close**: a client that sends, shuts down its write side and
reads gets a truncated echo and a reset (**echo-complete** sees it too).

Real world: ``if (ev & EPOLLRDHUP) { close(fd); continue; }`` before the
EPOLLIN branch, a common "optimisation" to drop dead clients early.
"""

from __future__ import annotations

import select
import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer

EPOLLRDHUP = select.EPOLLRDHUP


class RdhupEarlyCloseServer(ReferenceServer):
    def connection_flags(self) -> int:
        # Not the bug: ask epoll to report the peer's FIN as EPOLLRDHUP.
        return super().connection_flags() | EPOLLRDHUP

    def connection_event(self, conn: Connection, mask: int) -> None:
        if mask & EPOLLRDHUP:  # BUG: EPOLLRDHUP is a half-close, not a disconnect
            self.close_connection(conn)
            return
        super().connection_event(conn, mask)


if __name__ == "__main__":
    sys.exit(run_mutant(RdhupEarlyCloseServer))
