"""The properties, by their stable names, and the pure part of judging them.

Every report, reproducer and exception uses these names. The transcript half
of the judgement (:func:`judge_transcript`) is pure: it reads the oracle and
the executor's events. The process half (cleanup, idle CPU, memory,
survival) needs the live server and lives in :mod:`harness.run.checker`.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from harness.model import transcript as ex
from harness.model.oracle import BOUNDED_MEMORY as BOUNDED_MEMORY
from harness.model.oracle import ECHO_COMPLETE, ECHO_EXACT, HALF_CLOSE, NO_CROSSTALK
from harness.model.script import AbortConnect, BurstConnect, Flood, Script, ShutdownWrite
from harness.model.transcript import Transcript

CLEANUP = "cleanup"
SURVIVES = "survives"
IDLE_CPU = "idle-cpu"
NO_HOL_BLOCKING = "no-head-of-line-blocking"
ACCEPT_ROBUST = "accept-robust"
GRACEFUL_FIN = "graceful-fin"  # judged on the wire, when packets are captured

PROPERTIES: dict[str, str] = {
    ECHO_EXACT: "every byte received is the byte sent at that position, nothing extra",
    ECHO_COMPLETE: "everything sent comes back within the stall deadline once the client reads",
    HALF_CLOSE: "after the client's SHUT_WR the server echoes everything, then closes with FIN, not RST",
    NO_CROSSTALK: "no connection receives bytes another connection sent",
    CLEANUP: "every connection the client closed or reset is gone from the server; no fd leak per connection",
    SURVIVES: "the server stays alive and serves a fresh connection after every script",
    IDLE_CPU: "with no traffic the server does not spin (CPU near zero)",
    BOUNDED_MEMORY: "a client that sends without reading makes the server hold at most the bound (64 MiB)",
    NO_HOL_BLOCKING: "while one client does not read, the others are still served",
    ACCEPT_ROBUST: "bursts of connects are served; aborted connects and fd exhaustion neither kill nor spin",
    GRACEFUL_FIN: "on the wire: after the client's FIN the server ends with FIN after its last byte, not RST",
}

# When one script breaks several properties, the first of this order is the
# one raised (the others are reported with it): a dead server explains
# everything after it; wrong bytes matter more than missing ones.
PRIORITY = (
    SURVIVES,
    ECHO_EXACT,
    NO_CROSSTALK,
    NO_HOL_BLOCKING,
    ECHO_COMPLETE,
    HALF_CLOSE,
    GRACEFUL_FIN,
    ACCEPT_ROBUST,
    CLEANUP,
    IDLE_CPU,
    BOUNDED_MEMORY,
)
assert set(PRIORITY) == set(PROPERTIES)

_EVENT_PROPERTY = {
    ex.READ_STALLED: ECHO_COMPLETE,
    ex.HOL_STALLED: NO_HOL_BLOCKING,
    ex.SEND_FAILED: ECHO_COMPLETE,
    ex.EOF_MISSING: HALF_CLOSE,
    ex.BURST_FAILED: ACCEPT_ROBUST,
    ex.CONNECT_FAILED: ACCEPT_ROBUST,
    ex.SLOW_ACCEPT: ACCEPT_ROBUST,
}
#: Event kinds that are non-strict findings: legal behaviour a user may still want to know of.
_NON_STRICT_EVENTS = frozenset({ex.SLOW_ACCEPT})


@dataclass(frozen=True)
class Violation:
    property_name: str
    message: str
    step: int | None = None
    conn: Hashable | None = None
    strict: bool = True  # False: a non-strict finding (legal but impolite), reported, never a failure

    def describe(self) -> str:
        where = []
        if self.conn is not None:
            where.append(f"connection {self.conn}")
        if self.step is not None:
            where.append(
                "at the end of the script" if self.step == ex.SETTLE_STEP else f"after step {self.step}"
            )
        suffix = f" ({', '.join(where)})" if where else ""
        return f"{self.message}{suffix}"


def judge_transcript(transcript: Transcript) -> list[Violation]:
    """Violations visible in the transcript alone, one per connection and property at most."""
    found: list[Violation] = []
    seen: set[tuple[str, Hashable | None]] = set()
    for problem in transcript.oracle.problems():
        seen.add((problem.property_name, problem.conn))
        found.append(Violation(problem.property_name, problem.message, None, problem.conn, problem.strict))
    for event in transcript.events:
        prop = _EVENT_PROPERTY.get(event.kind)
        if prop is None or (prop, event.conn) in seen:
            continue
        if event.conn is not None and transcript.oracle.problem(event.conn) is not None:
            continue  # the oracle's verdict on this connection says it first
        seen.add((prop, event.conn))
        strict = event.kind not in _NON_STRICT_EVENTS
        found.append(Violation(prop, event.detail, event.step, event.conn, strict))
    return found


def primary(violations: list[Violation]) -> Violation:
    return min(violations, key=lambda v: PRIORITY.index(v.property_name))


def exercised(script: Script) -> set[str]:
    """The properties a script puts to the test (the per-property example counts of a report)."""
    steps = script.steps
    connections = len(script.connection_ids)
    bursts = any(isinstance(s, BurstConnect) for s in steps)
    floods = any(isinstance(s, Flood) for s in steps)
    # Every connection ends with a close by the client, which graceful-fin judges.
    found = {ECHO_EXACT, ECHO_COMPLETE, SURVIVES, CLEANUP, IDLE_CPU, GRACEFUL_FIN}
    if any(isinstance(s, ShutdownWrite) for s in steps):
        found.add(HALF_CLOSE)
    if connections >= 2 or bursts:
        found.add(NO_CROSSTALK)
    if floods:
        found.add(BOUNDED_MEMORY)
        if connections >= 2:
            found.add(NO_HOL_BLOCKING)
    if bursts or any(isinstance(s, AbortConnect) for s in steps):
        found.add(ACCEPT_ROBUST)
    return found
