"""Mutant: edge-triggered reads are not drained until EAGAIN.

The bug: :meth:`read_budget` allows one read per event in edge-triggered mode
too, as a level-triggered server may. Edge-triggered epoll reports a *change*
of readiness only: the bytes left in the receive queue after that one read
raise no new event, so the echo stalls until the client sends more (and then
lags behind by the same amount).

Caught by **echo-complete** (in ``et`` mode): a burst larger than one read
is never fully echoed.

Real world: a level-triggered loop switched to ``EPOLLET`` for speed without
turning each ``recv()`` into a loop until EAGAIN.
"""

from __future__ import annotations

import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import ReferenceServer


class EtNoDrainServer(ReferenceServer):
    def read_budget(self) -> int:
        return 1  # BUG: one recv() per event, in edge-triggered mode too


if __name__ == "__main__":
    sys.exit(run_mutant(EtNoDrainServer))
