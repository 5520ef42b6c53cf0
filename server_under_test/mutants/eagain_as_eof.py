"""Mutant: EAGAIN from ``recv()`` is taken for the end of the connection.

The bug: the server closes the connection on any ``recv()`` that returns no
data — EOF, but also EAGAIN (:meth:`on_recv_eagain`). A level-triggered
server, which stops reading at the first short read, rarely meets EAGAIN, but
an edge-triggered one drains until EAGAIN on every event: each connection is
closed right after its first burst is echoed, and the client's next request
finds the connection gone.

Caught by **echo-complete** (in ``et`` mode): a second request is never
answered (the client reads EOF or a reset instead).

Real world: ``if (n <= 0) { close(fd); }`` — -1 with ``errno == EAGAIN``
lumped in with 0 and real errors.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class EagainAsEofServer(ReferenceServer):
    def on_recv_eagain(self, conn: Connection) -> bool:
        self.close_connection(conn)  # BUG: "no data now" is taken for the end of the connection
        return False


if __name__ == "__main__":
    sys.exit(run_mutant(EagainAsEofServer))
