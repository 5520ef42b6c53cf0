"""A Hypothesis state machine over open connections: the harness, one step at a time.

:func:`make_state_machine` takes a :class:`~harness.run.checker.Checker` (a live
server, reused across examples) and returns a ``RuleBasedStateMachine``
class whose rules act on connections that are open right now, in the spirit
of trio's stream checkers that take a factory:

* ``open_connection``: a new client (now and then a slow reader with a small
  SO_RCVBUF); its id goes to the ``open_connections`` bundle;
* ``send``: a small binary payload on an open connection, sometimes cut into
  several writes (the echo is read meanwhile, as in a script's Send);
* ``read_owed``: read everything the server still owes one connection;
* ``flood``: a bounded flood without reading (at most :data:`MAX_FLOODS` per
  example), so that the server has to queue output in user space;
* ``half_close_and_read_to_eof``: ``shutdown(SHUT_WR)``, then read to the
  server's FIN; the connection moves to the ``half_closed`` bundle;
* ``reset`` (SO_LINGER 0), ``close`` and ``close_after_eof``: the endings.

Every step is a :mod:`harness.model.script` step played by one
:class:`~harness.drive.executor.Executor` through ``run_step``. After every step an
invariant judges the transcript so far (:func:`~harness.model.properties.judge_transcript`:
the echo oracle's verdicts and the executor's stall events) and raises the
violated property's own exception type
(:func:`harness.model.errors.violation_type`), so Hypothesis shrinks each property
separately and a failure prints as a short program of rules. At teardown the
machine settles its connections like the end of a script (reading what is
owed, then idle-CPU at that quiet moment, then EOF on half-closed ones) and
the checker judges the process-level properties exactly as for a script:
``survives`` (fresh probe connections), ``cleanup``, ``idle-cpu`` and
``bounded-memory``. After any violation the checker restarts its server, so
examples stay independent.

    from hypothesis import settings
    from hypothesis.stateful import run_state_machine_as_test

    Machine = make_state_machine(harness_checker)
    run_state_machine_as_test(Machine, settings=settings(max_examples=20, stateful_step_count=15))
"""

from __future__ import annotations

from typing import ClassVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
)

from harness.model.errors import HarnessError, ServerDiedError
from harness.model.properties import SURVIVES, Violation, judge_transcript
from harness.model.script import (
    Close,
    Connect,
    Flood,
    Payload,
    Read,
    ReadToEof,
    Reset,
    Script,
    Send,
    ShutdownWrite,
    Step,
)
from harness.model.transcript import SETTLE_STEP
from harness.run.checker import Checker, Outcome
from harness.run.verdict import enforce, violation_of

#: Connections open at once (open or half-closed, not yet closed).
MAX_OPEN = 4
#: Payloads of a ``send`` rule are at most this long: small, drawn byte by byte.
MAX_PAYLOAD = 512
#: A slow reader's SO_RCVBUF: the echo path fills with a smaller flood.
SLOW_RCVBUF = 1024
#: Floods per example, and their sizes: larger than the echo path of a slow
#: reader (about 1.7 MiB on loopback), so the server's send() hits EAGAIN and
#: it queues output in user space; bounded, because each costs real copying.
MAX_FLOODS = 2
FLOOD_SIZES = (2 * 2**20, 5 * 2**20)


class EchoStateMachine(RuleBasedStateMachine):
    """Rules over live connections to ``checker``'s server; subclass it with :func:`make_state_machine`."""

    checker: ClassVar[Checker | None] = None

    open_connections = Bundle("open_connections")
    half_closed = Bundle("half_closed")

    def __init__(self) -> None:
        super().__init__()
        checker = type(self).checker
        if checker is None:
            raise HarnessError("EchoStateMachine needs a checker: use make_state_machine(checker)")
        self._checker = checker
        self._failed = False
        self._next_id = 0
        self._live: set[int] = set()
        self._floods = 0
        self._steps: list[Step] = []
        # Checker.check, taken apart: a script played a step at a time.
        self.executor = checker.begin()

    # -- rules ----------------------------------------------------------------

    @precondition(lambda self: len(self._live) < MAX_OPEN)
    @rule(target=open_connections, slow_reader=st.booleans())
    def open_connection(self, slow_reader: bool) -> int:
        conn = self._next_id
        self._next_id += 1
        self._live.add(conn)
        self._run(Connect(conn, rcvbuf=SLOW_RCVBUF if slow_reader else None))
        return conn

    @rule(
        conn=open_connections,
        data=st.binary(min_size=1, max_size=MAX_PAYLOAD),
        fragments=st.lists(st.integers(1, 64), max_size=3),
    )
    def send(self, conn: int, data: bytes, fragments: list[int]) -> None:
        self._run(Send(conn, Payload.of(data), tuple(fragments)))

    @precondition(lambda self: any(self.executor.oracle.owed(c) for c in self._live))
    @rule(conn=open_connections)
    def read_owed(self, conn: int) -> None:
        self._run(Read(conn))

    @precondition(lambda self: self._floods < MAX_FLOODS)
    @rule(conn=open_connections, size=st.sampled_from(FLOOD_SIZES))
    def flood(self, conn: int, size: int) -> None:
        self._floods += 1
        self._run(Flood(conn, size))

    @rule(target=half_closed, conn=consumes(open_connections))
    def half_close_and_read_to_eof(self, conn: int) -> int:
        self._run(ShutdownWrite(conn))
        self._run(ReadToEof(conn))
        return conn

    @rule(conn=consumes(open_connections))
    def reset(self, conn: int) -> None:
        self._live.discard(conn)
        self._run(Reset(conn))

    @rule(conn=consumes(open_connections))
    def close(self, conn: int) -> None:
        self._live.discard(conn)
        self._run(Close(conn))

    @rule(conn=consumes(half_closed))
    def close_after_eof(self, conn: int) -> None:
        self._live.discard(conn)
        self._run(Close(conn))

    # -- judging --------------------------------------------------------------

    @invariant()
    def no_property_violated(self) -> None:
        """The echo oracle and the executor's events, on every connection, after every step."""
        violations = [v for v in judge_transcript(self.executor.transcript) if v.strict]
        if violations:
            self._raise(violations)

    def teardown(self) -> None:
        """Settle as at the end of a script, then judge the process-level properties too."""
        executor = self.executor
        if self._failed:
            # A violation (or an error) is on its way out already: clean up, add nothing.
            executor.abort_all()
            self._restart()
            return
        executor.step_index = SETTLE_STEP
        try:
            executor.settle()
        finally:
            executor.abort_all()
        transcript = executor.transcript
        transcript.script = self.script
        enforce(self._checker.judge(self.script, transcript))

    @property
    def script(self) -> Script:
        """The steps run so far, as a script (``epoll-harness replay`` can play it)."""
        return Script(tuple(self._steps))

    # -- internals ------------------------------------------------------------

    def _run(self, step: Step) -> None:
        if self.executor.transcript.stalled:
            return  # a deadline expired (step-timeout): later steps would only wait theirs out
        self.executor.step_index = len(self._steps)
        self._steps.append(step)
        try:
            self.executor.run_step(step)
        except BaseException:
            self._failed = True
            raise

    def _raise(self, violations: list[Violation]) -> None:
        server = self._checker.server
        if server is not None and not server.alive:
            # A dead server explains the failed connect or the reset: say so (as Checker.check does).
            try:
                server.ensure_alive()
            except ServerDiedError as died:
                violations = [Violation(SURVIVES, str(died)), *violations]
        exc = violation_of(Outcome(self.script, violations, self.executor.transcript))
        assert exc is not None
        self._failed = True
        raise exc

    def _restart(self) -> None:
        if self._checker.server is not None:
            self._checker.restart()


def make_state_machine(checker: Checker, *, name: str = "EchoStateMachine") -> type[EchoStateMachine]:
    """A :class:`EchoStateMachine` bound to ``checker`` (started, and reused by every example).

    Run it with ``hypothesis.stateful.run_state_machine_as_test(cls, settings=...)``,
    or as ``cls.TestCase`` in a unittest/pytest module.
    """
    return type(name, (EchoStateMachine,), {"checker": checker})


__all__ = ["MAX_FLOODS", "MAX_OPEN", "EchoStateMachine", "make_state_machine"]
