"""Mutant: the graceful close sends RST (SO_LINGER 0).

The bug: :meth:`finish_half_close` sets SO_LINGER to ``(on, 0 s)`` before
closing, to avoid TIME_WAIT. Such a close aborts the connection: the kernel
discards whatever it has not delivered yet and sends RST instead of FIN. The
client gets ``ECONNRESET`` instead of a clean EOF, and may lose the tail of
the echo.

Caught by **half-close**: after a half-close the client must read every byte
and then EOF, not a reset.

Real world: ``SO_LINGER {1, 0}`` copied from a "how to avoid TIME_WAIT"
answer onto the normal close path.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class Linger0CloseServer(ReferenceServer):
    def finish_half_close(self, conn: Connection) -> None:
        with contextlib.suppress(OSError):
            # BUG: linger 0 turns close() into an abort (RST), and no FIN is sent first
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection(conn)


if __name__ == "__main__":
    sys.exit(run_mutant(Linger0CloseServer))
