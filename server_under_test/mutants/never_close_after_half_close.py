"""Mutant: the server never closes after a half-close has been fully echoed.

The bug: after the client's FIN, the server echoes what is pending and then
simply stops watching the connection (:meth:`finish_half_close`): no
``shutdown(SHUT_WR)``, no ``close()``. The client waits for an EOF that never
comes, and the socket stays in CLOSE_WAIT with its descriptor open.

Caught by **half-close** (the client never sees EOF) and **cleanup** (the
descriptor leaks).

Real world: EOF handled as "stop reading" (``epoll_ctl(MOD, 0)`` or a state
flag) with the final close left to a timeout or a code path never reached.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class NeverCloseAfterHalfCloseServer(ReferenceServer):
    def finish_half_close(self, conn: Connection) -> None:
        # BUG: no shutdown(SHUT_WR), no close: the connection is only unwatched
        # (EPOLLERR/EPOLLHUP, which epoll always reports, still close it on a reset).
        if conn.mask != self.flags:
            self.epoll.modify(conn.fd, self.flags)
            conn.mask = self.flags


if __name__ == "__main__":
    sys.exit(run_mutant(NeverCloseAfterHalfCloseServer))
