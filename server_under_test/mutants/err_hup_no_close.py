"""Mutant: EPOLLERR/EPOLLHUP are handled without closing the fd.

The bug: :meth:`on_hangup` notices EPOLLERR or EPOLLHUP (a reset, or
both directions shut) and returns without closing. The fd stays registered;
epoll reports EPOLLHUP whatever the mask, so a level-triggered loop spins, and
the descriptor is never released.

Caught by **cleanup**: after a client resets, the server's descriptor count
does not come back down (also **idle-cpu**).

Real world: ``if (ev & (EPOLLERR | EPOLLHUP)) { perror("epoll"); continue; }``
— the error is logged and the ``close(fd)`` forgotten.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import Connection, ReferenceServer


class ErrHupNoCloseServer(ReferenceServer):
    def on_hangup(self, conn: Connection) -> bool:
        return True  # BUG: the connection is over, but the fd is neither closed nor unregistered


if __name__ == "__main__":
    sys.exit(run_mutant(ErrHupNoCloseServer))
