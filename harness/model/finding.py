"""One bug, one finding: how a campaign tells findings apart (pure).

Within one run the harness keeps one reproducer per property (a search round
ignores the properties it has a reproducer for). A campaign does the same
across its workers: ten workers that hit one bug each shrink it to a minimal
script, and not always to the same one (which connection half-closes first,
whether a burst or the fd-exhaustion scenario met the EMFILE), so a finding's
key is its property, and its reproducer the smallest confirmed script any
worker found. A reproducer that also violates other properties (a server that
never closes after EOF: CLOSE_WAIT and a busy loop) is one finding too: a
worker's finding whose script is one already kept joins that finding.

What the violation said is kept as a *template* (numbers, ports, offsets and
hex dumps replaced by ``#``): the distinct templates of a finding are the
variants a person may want to look at once the first is fixed.
"""

from __future__ import annotations

import re

from harness.model.script import Script

# Hex dumps (8+ hex digits), then any number (ports, counts, offsets, seconds).
_VARYING = re.compile(r"\b[0-9a-f]{8,}\b(\.\.\.)?|\d+(\.\d+)?")


def message_template(message: str) -> str:
    """The message with what varies from one run to the next replaced by ``#``."""
    return _VARYING.sub("#", message)


def script_shape(script: Script) -> str:
    """The operations of a script in order, e.g. ``connect send shutdown_wr read_eof``."""
    return " ".join(_op(step) for step in script.steps)


def _op(step: object) -> str:
    op = str(getattr(step, "op", type(step).__name__))
    toward = getattr(step, "toward", None)
    return f"{op}:{toward}" if toward else op
