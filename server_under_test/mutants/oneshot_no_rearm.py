"""Mutant: EPOLLONESHOT without re-arming after each event.

The bug: connections are registered with EPOLLONESHOT (as servers that hand
events to worker threads do), but the fd is re-armed with ``epoll_ctl(MOD)``
only when the wanted events change (:meth:`update_interest` skips a MOD that
would not change the mask). After its first event a connection whose
interest did not change is disarmed for good: the first message is echoed,
the next ones never are.

Caught by **echo-complete**: the second request of a connection is never
answered.

Real world: EPOLLONESHOT added for a thread pool, with the re-arm done only
on some paths (or skipped as a "redundant" epoll_ctl).
"""

from __future__ import annotations

import select
import sys

from server_under_test.mutants._base import run_mutant
from server_under_test.reference import ReferenceServer


class OneshotNoRearmServer(ReferenceServer):
    def connection_flags(self) -> int:
        # BUG: one-shot, and update_interest only re-arms when the mask changes
        return super().connection_flags() | select.EPOLLONESHOT


if __name__ == "__main__":
    sys.exit(run_mutant(OneshotNoRearmServer))
