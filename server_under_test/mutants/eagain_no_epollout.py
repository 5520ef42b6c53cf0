"""Mutant: EAGAIN on send() without arming EPOLLOUT.

The bug: when ``send()`` is short, the server keeps the rest, as it should,
but never registers EPOLLOUT to learn when the socket is writable again
(:meth:`writable_event`). The queue is only retried when the client sends
something new (:meth:`echo` tries it first), so the tail of an echo stalls
until the client speaks again, and forever if it does not.

Caught by **echo-complete**: once the client stops sending and reads, it must
eventually get every byte.

Real world: a server that buffers the unsent rest but only ever waits for
EPOLLIN, retrying its write queue "on the next read".
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class EagainNoEpolloutServer(ReferenceServer):
    def writable_event(self) -> int:
        return 0  # BUG: no event is asked for while output is pending: EPOLLOUT is never armed

    def echo(self, conn: Connection, data: memoryview) -> bool:
        # Not the bug: what such a server does instead of waiting for EPOLLOUT.
        if conn.out:
            # New input: a chance to retry what is queued, then the new bytes.
            conn.out += data
            return self.flush(conn)
        return super().echo(conn, data)


if __name__ == "__main__":
    sys.exit(run_mutant(EagainNoEpolloutServer))
