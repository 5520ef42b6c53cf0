"""Cut a failing script down while it still fails: how a search's find becomes a small reproducer.

Each candidate of :func:`harness.model.reduction.candidates` is played
against the server; the first that still violates the property replaces the
script, and the cuts start again from there, until none fails or the
deadline passes. A candidate is judged on its property alone (the others are
skipped: no cleanup wait or idle window for a property it is not about), so
each try costs one short example.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.model.errors import ServerStartError
from harness.model.properties import PROPERTIES
from harness.model.reduction import candidates
from harness.model.script import Script
from harness.run.checker import Checker

#: A cut is kept only if the smaller script fails this many times in a row: a racy bug (one that
#: needs its timing) must not be cut down to a script that showed it once and never again.
KEEP_AFTER = 2


def still_fails(checker: Checker, property_name: str) -> Callable[[Script], bool]:
    skip = frozenset(PROPERTIES) - {property_name}

    def fails_once(script: Script) -> bool:
        outcome = checker.check(script, skip=skip)
        return any(v.property_name == property_name for v in outcome.violations)

    def fails(script: Script) -> bool:
        return all(fails_once(script) for _ in range(KEEP_AFTER))

    return fails


def reduce(script: Script, fails: Callable[[Script], bool], deadline: float) -> Script:
    """The smallest script reached from ``script`` by cuts that keep ``fails`` true, by ``deadline``.

    After a cut is kept, the next try is the candidate at the same place in
    the new script's list (the earlier ones failed to fail on a larger
    script, and are tried again only in a last full pass): a pass over an
    n-step script costs O(n) examples, not O(n**2).
    """
    start = 0
    while time.monotonic() < deadline:
        tried = list(candidates(script))
        for index in range(min(start, len(tried)), len(tried)):
            if time.monotonic() >= deadline:
                return script
            try:
                failed = fails(tried[index])
            except ServerStartError:
                return script  # the server no longer starts: keep what we have
            if failed:
                script, start = tried[index], index
                break
        else:
            if start == 0:
                return script  # a full pass with no cut kept: as small as these cuts make it
            start = 0
    return script
