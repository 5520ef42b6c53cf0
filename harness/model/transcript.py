"""The transcript: what happened when a script was played, as plain data.

The executor writes it and the properties read it. Every byte sent and
received goes to the :class:`~harness.model.oracle.EchoOracle`; everything
else worth judging (a read that stalled, a connect that failed, a flood that
filled the pipe) is an :class:`Event`, and faults seen on the way are
``evidence`` (strings that become Hypothesis events).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from harness.model.oracle import EchoOracle
from harness.model.script import Script

SETTLE_STEP = -1  # the step index recorded for events of the settle phase

# Event kinds (harness.model.properties maps them to property names).
CONNECT_FAILED = "connect-failed"
READ_STALLED = "read-stalled"
HOL_STALLED = "read-stalled-behind-flood"  # stalled while another client was not reading
EOF_MISSING = "eof-missing"
INJECTION_UNAVAILABLE = "injection-unavailable"  # no property: the harness lacked a capability
STEP_TIMEOUT = "step-timeout"  # no property: the server was slow, not stuck
SEND_FAILED = "send-failed"
BURST_FAILED = "burst-failed"
SLOW_ACCEPT = "slow-accept"  # connects dropped from a full backlog, served after the SYN retry
DROPPED_NON_READER = "dropped-non-reader"  # the server closed a client that flooded and did not read
FLOOD = "flood"


@dataclass(frozen=True)
class AcceptQueue:
    length: int  # connections completed by the kernel and not yet accepted
    limit: int | None  # the backlog given to listen() (as the kernel caps it); None: unknown
    # The namespace's count of handshakes dropped because an accept queue was full
    # (TcpExt ListenOverflows); None: unknown. Its growth over a burst is exact, where a
    # queue sampled now and then may never be caught full.
    overflows: int | None = None

    @property
    def full(self) -> bool:
        # The kernel drops a SYN once the queue holds more than the limit.
        return self.limit is not None and self.length >= self.limit


@dataclass(frozen=True)
class Event:
    step: int
    conn: Hashable | None
    kind: str
    detail: str


@dataclass
class Transcript:
    script: Script
    oracle: EchoOracle = field(default_factory=EchoOracle)
    events: list[Event] = field(default_factory=list)
    evidence: set[str] = field(default_factory=set)
    client_ports: dict[Hashable, int] = field(default_factory=dict)
    max_pending: int = 0  # largest amount owed to a client at a checkpoint (a target for Hypothesis)
    stalled: bool = False  # a deadline expired: the script stops there

    def add(self, step: int, conn: Hashable | None, kind: str, detail: str) -> None:
        self.events.append(Event(step, conn, kind, detail))
