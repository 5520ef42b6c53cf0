"""Mutant: ECONNRESET/EPIPE are not handled; a reset kills the whole server.

The bug: this server leaves reset detection to ``send()`` and ``recv()``
instead of testing EPOLLERR/EPOLLHUP first — a legitimate design, provided
their errors are handled — but it catches only EAGAIN. When a client resets
while output is pending, the next ``send()`` raises ``ConnectionResetError``
(or ``BrokenPipeError``), nothing catches it, and the process exits with a
traceback, taking every other client with it.

Caught by **survives**: the server must outlive any single client's reset.

Real world: in C, the default action of SIGPIPE (no ``MSG_NOSIGNAL``, no
``signal(SIGPIPE, SIG_IGN)``) kills the process on the first write to a
reset socket; in Python and friends, the unhandled exception does it.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class ResetKillsServer(ReferenceServer):
    def on_hangup(self, conn: Connection) -> bool:
        # Not the bug: EPOLLERR/EPOLLHUP are not tested, send() or recv() will tell.
        return False

    def on_socket_error(self, conn: Connection, exc: OSError) -> None:
        raise exc  # BUG: ECONNRESET/EPIPE propagate and end the process


if __name__ == "__main__":
    sys.exit(run_mutant(ResetKillsServer))
