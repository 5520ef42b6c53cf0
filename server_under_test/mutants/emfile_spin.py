"""Mutant: EMFILE on ``accept()`` leaves the level-triggered listener ready forever.

The bug: when ``accept()`` fails with EMFILE/ENFILE (out of descriptors),
:meth:`on_accept_exhausted` does nothing: the server just tries again on the
next event. The pending connection stays in the backlog, so level-triggered
epoll reports the listener readable at once, again and again: the server spins
at 100 % CPU until a descriptor frees, and meanwhile starves its other
clients.

Caught by **accept-robust**: under descriptor exhaustion the server must stay
responsive and idle (stop polling the listener, or accept-and-close with a
reserve fd), then accept again when descriptors free up.

Real world: ``if (cfd < 0) { perror("accept"); continue; }`` — libev and
nginx document the workarounds (reserve fd, disable the accept event).
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import ReferenceServer


class EmfileSpinServer(ReferenceServer):
    def on_accept_exhausted(self) -> None:
        pass  # BUG: the listener stays registered, and ready


if __name__ == "__main__":
    sys.exit(run_mutant(EmfileSpinServer))
