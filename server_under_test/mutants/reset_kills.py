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
from server_under_test.reference import (
    EPOLLIN,
    EPOLLOUT,
    HIGH_WATER,
    LOW_WATER,
    Connection,
    ReferenceServer,
)

BUG = "errors of send()/recv() other than EAGAIN are not caught: a client's reset kills the process"
EXPECTED_PROPERTY = "survives"
DEFAULT_MODE = "lt"
REAL_WORLD = "SIGPIPE left at its default action (no MSG_NOSIGNAL), or an uncaught ECONNRESET exception"


class ResetKillsServer(ReferenceServer):
    # One bug — errors are left to send()/recv() and then not handled — spread
    # over the four methods that would have handled them.

    def connection_event(self, conn: Connection, mask: int) -> None:
        # EPOLLERR/EPOLLHUP are not tested: send() or recv() will tell.
        if mask & EPOLLOUT and not self.flush(conn):
            return
        if mask & EPOLLIN and conn.reading and not conn.eof:
            self.read_ready(conn)

    def read_ready(self, conn: Connection) -> None:
        recv_into = conn.sock.recv_into
        scratch_view = self.scratch_view
        while True:
            try:
                n = recv_into(self.scratch)
            except BlockingIOError:  # BUG: ECONNRESET propagates and ends the process
                break
            if n == 0:
                conn.eof = True
                break
            if not self.echo(conn, scratch_view[:n]):
                return
            if len(conn.out) > HIGH_WATER:
                conn.reading = False
                break
            if not self.edge_triggered:
                break
        self.update_interest(conn)

    def echo(self, conn: Connection, data: memoryview) -> bool:
        if conn.out:
            conn.out += data
            return True
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:  # BUG: EPIPE/ECONNRESET propagate
            sent = 0
        if sent < len(data):
            conn.out += data[sent:]
        return True

    def flush(self, conn: Connection) -> bool:
        out = conn.out
        while out:
            try:
                sent = conn.sock.send(out)
            except BlockingIOError:  # BUG: EPIPE/ECONNRESET propagate
                break
            del out[:sent]
        if not conn.reading and len(out) < LOW_WATER:
            conn.reading = True
            if self.edge_triggered and not conn.eof:
                self.read_ready(conn)
                return conn.fd in self.connections
        self.update_interest(conn)
        return conn.fd in self.connections


def main(argv: list[str] | None = None) -> int:
    return run_mutant("reset_kills", ResetKillsServer, BUG, DEFAULT_MODE, argv)


if __name__ == "__main__":
    sys.exit(main())
