"""Mutant: in edge-triggered mode, only one connection is accepted per listener event.

The bug: :meth:`accept_ready` calls ``accept()`` once per event instead of
until EAGAIN. With EPOLLET, a burst of connects that queue up between two
``epoll_wait`` calls raises one edge: one connection is accepted, the rest
sit in the backlog until some later connect raises another edge — for the
last clients of a burst, never.

Caught by **accept-robust** (in ``et`` mode): every client of a burst of
connects must be served promptly.

Real world: the level-triggered "one accept per wakeup" idiom kept after
switching the listener to EPOLLET.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import ReferenceServer


class EtAcceptOneServer(ReferenceServer):
    def accept_ready(self) -> None:
        if self.accepting:
            self.accept_one()  # BUG: a single accept(), not a loop until EAGAIN


if __name__ == "__main__":
    sys.exit(run_mutant(EtAcceptOneServer))
