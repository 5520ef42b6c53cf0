"""Waits: reading until a condition, telling a stall from a slow server, giving the server time.

A wait ends on progress, on its deadline (``stall_timeout`` without a byte,
``step_timeout`` in all), or at once when the server can do nothing more
(:mod:`harness.drive.quiescence`). A stall is charged to head-of-line
blocking when another client is what the server waits on.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable

from harness.drive.executor.connections import Client, Connections
from harness.drive.quiescence import QUIET_REASON, HopelessWait
from harness.model.errors import ExampleAbandoned
from harness.model.transcript import EOF_MISSING, HOL_STALLED, READ_STALLED, STEP_TIMEOUT

FAST_READ_RCVBUF = 1024 * 1024
# While a read or a burst waits: select() in slices this long, so that a
# HopelessWait is asked about as often as it may be.
SELECT_SLICE = 0.02
# A read on a connection whose echo already differs from what was sent ends after this long
# without a byte: "owed" no longer counts bytes a server will send (one that drops or rewrites
# bytes owes for ever), and the connection's verdict is the mismatch's, whatever comes later.
# Without it, each example of a byte-rewriting server waited out stall_timeout, and cutting its
# reproducer down cost a second per try.
DIVERGED_QUIET = 0.1
# While a delay waits for the server to catch up, it looks this often (backing off to the max).
CATCH_UP_POLL = 0.0002
CATCH_UP_POLL_MAX = 0.004


class Waits(Connections):
    """Reading until done, stall and blocked-server detection."""

    def _read_until(
        self,
        client: Client,
        done: Callable[[Client], bool],
        chunk: int | None = None,
        pace_ms: int = 0,
        stall_kind: str = READ_STALLED,
    ) -> bool:
        """Read until ``done(client)``; False (and an event) when the server stalls."""
        sel = selectors.DefaultSelector()
        sel.register(client.sock, selectors.EVENT_READ)
        since_pause = 0
        paced = 0.0
        if not pace_ms:
            self._read_fast(client)
        try:
            wait = self._hopeless_wait()
            started = wait.last_progress
            while not done(client):
                if client.eof or client.reset:
                    return False
                now = time.monotonic()
                if self.give_up_at is not None and now > self.give_up_at:
                    # The search's time is up: a read whose bytes keep trickling in would
                    # otherwise run on to step_timeout (60 s) past the budget the user gave.
                    raise ExampleAbandoned(f"time was up during step {self.step_index + 1}")
                if now - started > self.limits.step_timeout:
                    self._cut_short(client)
                    return False
                waited = now - wait.last_progress
                if waited > DIVERGED_QUIET and self.oracle.diverged(client.conn):
                    self.transcript.evidence.add("a read ended early: the echo had already diverged")
                    return False
                # A server that can do nothing more without new input will send
                # nothing: no need to wait out stall_timeout (see harness.drive.quiescence).
                quiet = waited <= self.limits.stall_timeout and wait.check()
                if quiet or waited > self.limits.stall_timeout:
                    owed = self.oracle.owed(client.conn)
                    detail = f"no byte for {waited:.2f} s with {owed} bytes owed"
                    if stall_kind == EOF_MISSING:
                        detail = (
                            f"no EOF {waited:.2f} s after the client's half-close ({owed} bytes still owed)"
                        )
                    elif blocker := self._blocker(client):
                        stall_kind = HOL_STALLED
                        detail += f", while {blocker}"
                    if quiet:
                        detail += f"; none could come: {QUIET_REASON}"
                    self.transcript.add(self.step_index, client.conn, stall_kind, detail)
                    self.transcript.stalled = True
                    return False
                if not sel.select(min(SELECT_SLICE, self.limits.stall_timeout)):
                    continue
                before = self.oracle.received_count(client.conn)
                if not self._recv_once(client, chunk):
                    return done(client)
                wait.progress()
                # A slow reader pauses after each ``chunk`` bytes, not after
                # each recv(): with a small SO_RCVBUF one recv returns a few
                # KiB, and pausing after each would make a flood last minutes.
                since_pause += self.oracle.received_count(client.conn) - before
                if pace_ms and since_pause >= (chunk or 1):
                    if paced >= self.limits.pace_budget:
                        self._read_fast(client)  # slow enough: read the rest at full speed
                    else:
                        # The pause lets the server write what the window took, as a slow
                        # reader's would; it ends once the server waits again (paced reads of
                        # 32-byte chunks 5 ms apart were 12 % of a campaign worker's time).
                        paused = time.monotonic()
                        self._give_time(pace_ms)
                        paced += time.monotonic() - paused
                    since_pause = 0
            return True
        finally:
            sel.close()

    def _give_time(self, ms: int) -> None:
        """Give the server up to ``ms`` to handle what it was sent, before the script goes on.

        A delay between fragments, or a pause, is there so that the server
        reads what came before on its own (a fragment in a read of its own,
        a close after the echo was handled). That is done once the server has
        read everything and is back to waiting for events, or once it sleeps
        until an event comes while bytes wait that it will not read now (a
        flooded client's: it stopped reading at its high-water mark), seen at
        two looks of this delay without running in between. The delay ends
        then, sooner than its length (a third of a campaign example's time was
        such sleeps: ``bench/example_time.py``). A server with a timer, one
        still busy, or one the harness cannot observe gets the whole delay.
        """
        deadline = time.monotonic() + ms / 1000
        interval = CATCH_UP_POLL
        first_look = True
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(interval, left))
            if interval >= left or self.watch is None:
                return  # the whole delay is over: asking now would only overshoot it
            if self.watch.caught_up(first_look=first_look):
                self.transcript.evidence.add("a delay ended early: the server had caught up")
                return
            first_look = False
            if self.watch.asleep_between_looks():
                # Asleep for good at two looks: nothing more happens before the client acts.
                self.transcript.evidence.add("a delay ended early: the server slept until an event")
                return
            interval = min(interval * 2, CATCH_UP_POLL_MAX)

    def _blocker(self, client: Client) -> str | None:
        """Why ``client`` stalls, if it is another client: head-of-line blocking, described.

        Another open connection that flooded and has not read its echo back
        (the server may wait on it, or write to it, whatever it does); else
        what the stall probe sees: the server asleep in a write to another
        client's socket (a big Send left unread fills it just as well).
        """
        flooded = [c.conn for c in self.clients.values() if c is not client and c.flooded and not c.closed]
        if flooded:
            names = ", ".join(str(conn) for conn in flooded)
            return f"{'connection' if len(flooded) == 1 else 'connections'} {names} had a flood unread"
        return self.watch.blocked_on(self, client) if self.watch is not None else None

    def _hopeless_wait(self) -> HopelessWait:
        return HopelessWait(self.watch.quiescent if self.watch is not None else None)

    def _cut_short(self, client: Client) -> None:
        """A step outlived step_timeout while bytes kept moving: slow, not stalled.

        That is no verdict on the server, so no property is charged; the
        script stops here and the evidence says so.
        """
        self.transcript.add(self.step_index, client.conn, STEP_TIMEOUT, "bytes still moving at step_timeout")
        self.transcript.evidence.add("script cut short: a step outlived step_timeout")
        self.transcript.stalled = True

    def _read_fast(self, client: Client) -> None:
        """Before an unpaced read (or once the pace budget is spent), undo a slow reader's small SO_RCVBUF.

        The small window did its job while the client was not reading (the
        server's send() hit EAGAIN). Reading megabytes back through a 2 KiB
        window runs into silly-window avoidance and delayed ACKs, tens of
        KiB/s, which says nothing about the server.

        A larger SO_RCVBUF alone does not open the window: the kernel fixed the
        connection's window clamp from the small buffer when it was set up, and
        the receive window never grows past it. Now and then (one replay in
        three to twelve of a script found in a campaign) the server's sender
        was then left with a window of a few hundred bytes, sending one small
        segment per persist timer: 68 KiB of echo took 22 s to read, and a
        campaign example could run into step_timeout (60 s) with the bytes
        still trickling. Raising the clamp too lets the window grow with the
        next segment (32 replays of that script: none slower than 0.3 s). And
        the client acknowledges at once (TCP_QUICKACK) for a while: the
        window update it owes after its first fast read otherwise waited for
        the delayed-ACK timer, 40 ms of a 45 ms read of a flood's echo. Left:
        a half-closed slow reader still meets that timer now and then (40 ms
        per 64 KiB), its window kept under 64 KiB by the window scale of 0 a
        buffer set before connect fixes; set after the handshake instead, the
        server's sender waited for its persist timer on the small window
        (200 ms per paced read: bench/CAMPAIGN_RESULTS.md).
        """
        if client.small_rcvbuf:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FAST_READ_RCVBUF)
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, FAST_READ_RCVBUF)
            client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            client.small_rcvbuf = False

    def _note_pending(self) -> None:
        pending = max((self._pending_in_server(c) for c in self.clients.values() if not c.closed), default=0)
        self.transcript.max_pending = max(self.transcript.max_pending, pending)
