"""Mutant: accepted sockets are left blocking.

The bug: :meth:`prepare_socket` does not make the accepted socket
non-blocking (accept() does not inherit O_NONBLOCK from the listener on
Linux). As long as every client reads, nothing shows; but when one client
stops reading, the server's ``send()`` to it blocks once its send buffer is
full, and the single-threaded loop — every other client with it — freezes.

Caught by **no-head-of-line-blocking**: one client that does not read must
not delay the echo to another.

Real world: ``accept()`` instead of ``accept4(..., SOCK_NONBLOCK)`` with the
``fcntl(O_NONBLOCK)`` forgotten, on the assumption that the flag is inherited.
"""

from __future__ import annotations

import socket
import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import ReferenceServer


class BlockingAcceptedServer(ReferenceServer):
    def prepare_socket(self, sock: socket.socket) -> None:
        super().prepare_socket(sock)
        sock.setblocking(True)  # BUG: what forgetting setblocking(False) amounts to


if __name__ == "__main__":
    sys.exit(run_mutant(BlockingAcceptedServer))
