"""Play a client script against a server address, and write down what happened.

The executor is single-threaded and deterministic: steps run in script order,
each on non-blocking sockets with a deadline, so no server behaviour can hang
it. What happened goes into a :class:`~harness.model.transcript.Transcript`.

It is built by concern, each a class on top of the one before:
:mod:`.connections` (state, connect, close, reset, abort), :mod:`.waits`
(reading until done, stalls, blocked-server detection), :mod:`.data` (send,
flood, read, read to EOF, half-close) and :mod:`.faults` (forged RSTs,
bursts). The step kinds are dispatched from one table, below.

At the end of a script the executor *settles*: it reads everything still
owed on every open connection, calls the ``checkpoint`` hook at that quiet
moment (with connections open and idle), then reads half-closed connections
to EOF and closes the rest gracefully.

The executor does not look at the server process: the optional
``checkpoint(name, executor)`` hook is where an observer does that (after a
flood, at the quiet moment), in the spirit of trio's stream hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.drive.executor.connections import Checkpoint, Client, Connections, ServerWatch
from harness.drive.executor.faults import FaultSteps
from harness.model.errors import ExampleAbandoned
from harness.model.script import (
    AbortConnect,
    BurstConnect,
    Close,
    Connect,
    Flood,
    InjectReset,
    Pause,
    Read,
    ReadToEof,
    Reset,
    Script,
    Send,
    ShutdownWrite,
    Step,
)
from harness.model.transcript import EOF_MISSING, SETTLE_STEP, Transcript


class Executor(FaultSteps):
    """Plays scripts (or single steps) against ``address``."""

    def run(self, script: Script) -> Transcript:
        self.transcript = Transcript(script)
        try:
            for index, step in enumerate(script.steps):
                if index and self.give_up_at is not None and time.monotonic() > self.give_up_at:
                    raise ExampleAbandoned(f"time was up after step {index} of {len(script.steps)}")
                self.step_index = index
                self.run_step(step)
                if self.transcript.stalled:
                    # The verdict is in; every later read would only wait out
                    # its own deadline, and shrinking replays this many times.
                    return self.transcript
            self.step_index = SETTLE_STEP
            self.settle()
        finally:
            self.abort_all()
        return self.transcript

    def run_step(self, step: Step) -> None:
        handler = _HANDLERS[type(step)]
        handler(self, step)

    def settle(self) -> None:
        live = [c for c in self.clients.values() if not c.closed]
        for client in live:
            if not (client.eof or client.reset):
                self._read_until(client, lambda c: self.oracle.owed(c.conn) == 0)
            client.flooded = 0
        if self.checkpoint is not None:
            self._note_pending()
            self.checkpoint("quiescent", self)
        for client in live:
            if client.write_shut and not (client.eof or client.reset):
                self._read_until(client, lambda c: c.eof or c.reset, stall_kind=EOF_MISSING)
            self._close(client)

    def abort_all(self) -> None:
        for sock in self.orphans:
            sock.close()
        self.orphans.clear()
        for client in self.clients.values():
            if not client.closed:
                client.sock.close()
                client.closed = True


_HANDLERS: dict[type, Callable[[Executor, object], None]] = {
    Connect: Executor._connect,  # type: ignore[dict-item]
    Send: Executor._send,  # type: ignore[dict-item]
    Flood: Executor._flood,  # type: ignore[dict-item]
    Read: Executor._read,  # type: ignore[dict-item]
    ReadToEof: Executor._read_to_eof,  # type: ignore[dict-item]
    Pause: Executor._pause,  # type: ignore[dict-item]
    ShutdownWrite: Executor._shutdown,  # type: ignore[dict-item]
    Close: Executor._close_step,  # type: ignore[dict-item]
    Reset: Executor._reset,  # type: ignore[dict-item]
    AbortConnect: Executor._abort_connect,  # type: ignore[dict-item]
    BurstConnect: Executor._burst,  # type: ignore[dict-item]
    InjectReset: Executor._inject_reset,  # type: ignore[dict-item]
}

__all__ = ["Checkpoint", "Client", "Connections", "Executor", "ServerWatch", "Transcript"]
