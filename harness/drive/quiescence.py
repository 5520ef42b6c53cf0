"""Giving up early on a wait for the server that cannot end well.

Reads, bursts and the cleanup check wait for the server up to a deadline
(``stall_timeout``, ``cleanup_timeout``): long enough for a loaded machine,
and most of what a failing example costs, so most of what shrinking a stall
or a leak costs. A server that sleeps for good (see
:meth:`harness.drive.observe.ServerObserver.quiescent`) will send, accept or close
nothing more, and the wait can end at once. The question costs a few /proc
reads and a 5 ms pause (and a read of the TCP table, which on a busy host
holds thousands of TIME_WAIT sockets), so it is asked only once progress has
stopped for QUIET_AFTER, then at doubling intervals up to QUIET_MAX_INTERVAL:
a correct server that is merely slow (a zero window probed for seconds) is
asked a handful of times per stall deadline, not twenty.
"""

from __future__ import annotations

import time
from collections.abc import Callable

QUIET_AFTER = 0.05
QUIET_MAX_INTERVAL = 0.4
QUIET_REASON = "the server sleeps in its event wait with no timeout and no byte in flight"


class HopelessWait:
    """One wait's "give up now?": asks ``quiescent`` once QUIET_AFTER has passed without progress."""

    def __init__(self, quiescent: Callable[[], bool] | None) -> None:
        self._quiescent = quiescent
        self.last_progress = self._next_question = time.monotonic()
        self._interval = QUIET_AFTER
        self.hopeless = False  # the last answer: the server was quiescent

    def progress(self) -> None:
        self.last_progress = time.monotonic()
        self._interval = QUIET_AFTER

    def check(self) -> bool:
        """True when the server is quiescent (asked only when due, see the module)."""
        now = time.monotonic()
        if self._quiescent is None or now - self.last_progress <= QUIET_AFTER or now < self._next_question:
            return False
        self.hopeless = self._quiescent()
        self._next_question = time.monotonic() + self._interval
        self._interval = min(self._interval * 2, QUIET_MAX_INTERVAL)
        return self.hopeless
