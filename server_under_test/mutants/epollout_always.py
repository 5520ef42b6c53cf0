"""Mutant: EPOLLOUT stays armed with nothing to send.

The bug: every registration carries EPOLLOUT (:meth:`connection_flags`). A
connected socket is writable almost all the time, so level-triggered epoll
returns at once, forever: the server busy-loops at 100 % CPU while every
client is idle.

Caught by **idle-cpu**: with connections open but no traffic, the server
must sleep in ``epoll_wait``.

Real world: registering ``EPOLLIN | EPOLLOUT`` once at accept "to be safe"
and never switching EPOLLOUT off when the output buffer empties.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import EPOLLOUT, ReferenceServer


class EpolloutAlwaysServer(ReferenceServer):
    def connection_flags(self) -> int:
        # BUG: EPOLLOUT is registered for good, whether or not conn.out holds anything
        return super().connection_flags() | EPOLLOUT


if __name__ == "__main__":
    sys.exit(run_mutant(EpolloutAlwaysServer))
