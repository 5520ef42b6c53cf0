"""Mutant: no backpressure; the server never stops reading.

The bug: :meth:`pause_reading` does not pause at the high-water mark, so a
client that sends without reading makes the server move everything from the
kernel into its output buffer: user-space memory grows without bound, at the
speed of the client, instead of TCP flow control pushing back on it.

Caught by **bounded-memory**: the server's RSS must stay within a fixed bound
per connection whatever the client does.

Real world: an output queue (``std::string``, ``evbuffer``, a Go channel...)
that is appended to on every read, with no high-water mark that pauses
reading; one slow or malicious reader exhausts the server's memory.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class NoBackpressureServer(ReferenceServer):
    def pause_reading(self, conn: Connection) -> bool:
        return False  # BUG: no backpressure: reading goes on however much output piles up


if __name__ == "__main__":
    sys.exit(run_mutant(NoBackpressureServer))
