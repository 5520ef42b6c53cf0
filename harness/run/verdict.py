"""Turn an example's outcome into Hypothesis evidence and, if a property broke, an exception.

Shared by ``epoll-harness check`` and the pytest plugin, so both entry points
record the same evidence and fail the same way.
"""

from __future__ import annotations

from hypothesis import event, target
from hypothesis.control import currently_in_test_context

from harness.model.errors import PropertyViolation, violation_type
from harness.model.properties import primary
from harness.run.checker import Outcome

PENDING_TARGET = "bytes pending in the server"


def record_evidence(outcome: Outcome) -> None:
    """``event()`` per fault observed, ``target()`` towards deep pending output (inside a test only)."""
    if not currently_in_test_context():
        return
    for what in sorted(outcome.evidence):
        event(what)
    target(float(outcome.transcript.max_pending), label=PENDING_TARGET)


def violation_of(outcome: Outcome) -> PropertyViolation | None:
    """The exception for the outcome's most important violation, naming the others."""
    if not outcome.violations:
        return None
    worst = primary(outcome.violations)
    also = sorted({v.property_name for v in outcome.violations} - {worst.property_name})
    message = worst.describe() + (f" [also violated: {', '.join(also)}]" if also else "")
    return violation_type(worst.property_name)(message, step=worst.step)


def enforce(outcome: Outcome) -> None:
    record_evidence(outcome)
    exc = violation_of(outcome)
    if exc is not None:
        raise exc
