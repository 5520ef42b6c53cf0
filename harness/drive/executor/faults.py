"""Network faults: RSTs forged on the wire, and bursts of connects."""

from __future__ import annotations

import errno
import selectors
import socket
import time
from dataclasses import dataclass, field

from harness.drive.executor.connections import RECV_SIZE, describe_os_error
from harness.drive.executor.data import DataSteps
from harness.drive.executor.waits import SELECT_SLICE
from harness.drive.quiescence import QUIET_REASON
from harness.model.script import BurstConnect, InjectReset, pattern_bytes
from harness.model.transcript import BURST_FAILED, INJECTION_UNAVAILABLE, SLOW_ACCEPT
from harness.model.wording import plural

BURST_ID_BASE = 1_000_000
#: A connect that completes this long after the burst began waited for a SYN retry (the first is at 1 s).
SYN_RETRY = 0.9
#: No byte taken by the server for this long: the burst's connections start reading their echoes.
BURST_SEND_STALL = 0.05
#: While the burst's connections only send, select() waits this long at a time (then asks the server).
BURST_SEND_SLICE = 0.002
#: While a burst waits, the listen queue is looked at no more often than this.
BACKLOG_SAMPLE = 0.05
#: How wide a burst went, recorded as evidence (servers size tables and epoll_wait batches by these).
WIDE_BURST_EVIDENCE = (64, 128)


class FaultSteps(DataSteps):
    """The steps that break things on purpose: forged resets, connect bursts."""

    def _inject_reset(self, step: InjectReset) -> None:
        """An RST forged on the wire (scapy), not sent by either socket."""
        client = self._live(step.conn)
        if client is None:
            return
        from harness.drive.wire import ConnectionGone, InjectionUnavailable, inject_reset

        if step.toward == "client" and self._pending_in_server(client) <= 0:
            # Nothing the server still has to send: it would never meet the
            # RST, and an idle half-open connection is not a server bug.
            self.transcript.evidence.add("no RST forged toward the client: nothing was pending in the server")
            self._close(client)
            return
        try:
            inject_reset(client.sock, step.toward)
        except ConnectionGone:
            self.transcript.evidence.add("no RST forged: the server had already ended the connection")
        except InjectionUnavailable as exc:
            self.transcript.add(self.step_index, client.conn, INJECTION_UNAVAILABLE, str(exc))
        else:
            self.transcript.evidence.add(f"RST injected toward the {step.toward}")
        # Either way the connection is over for the script: the server owes it
        # nothing. The socket stays open until the end, so that what the
        # server sees is the forged RST alone, not a FIN from our close.
        self.oracle.client_gone(client.conn)
        client.closed = True
        self.orphans.append(client.sock)

    def _burst(self, step: BurstConnect) -> None:
        """Connect ``count`` sockets at once, echo a message on each, close them all.

        Every connection sends its whole message before any reads its echo
        (unless the server stops taking bytes first), so a burst of large
        messages leaves that many connections with output pending in the
        server at once: past the ``maxevents`` of an ``epoll_wait`` and the
        connection tables servers size by small constants.
        """
        base = BURST_ID_BASE + self.step_index * 1000
        sel = selectors.DefaultSelector()
        burst = _Burst(started=time.monotonic())
        self._sample_backlog(burst)  # before the first SYN: the overflow count to compare with
        try:
            for k in range(step.count):
                conn = base + k
                sock = self._open_socket(None, True)
                sock.setblocking(False)
                err = sock.connect_ex(self.address)
                if err not in (0, errno.EINPROGRESS):
                    burst.problems.append(f"connect {k}: {errno.errorcode.get(err, err)}")
                    sock.close()
                    continue
                self.oracle.opened(conn)
                self.transcript.client_ports[conn] = sock.getsockname()[1]
                burst.entries[sock.fileno()] = _BurstEntry(conn, sock, pattern_bytes(step.size, 0, conn))
                sel.register(sock, selectors.EVENT_WRITE)
            self._sample_backlog(burst)
            self._burst_exchange(sel, burst)
            self._sample_backlog(burst)
            self._note_burst(step, burst)
        finally:
            for entry in burst.entries.values():
                entry.sock.close()
            sel.close()

    def _burst_exchange(self, sel: selectors.BaseSelector, burst: _Burst) -> None:
        wait = self._hopeless_wait()
        reading = False
        # As for a read: a server asleep for good will accept and echo no more. The deadline
        # moves with progress: connects dropped from a full backlog are retried 1 s, then 3 s later.
        while any(not e.over for e in burst.entries.values()) and not wait.check():
            now = time.monotonic()
            if now > wait.last_progress + self.limits.connect_timeout + self.limits.stall_timeout:
                break
            # Until the connections read, a short slice: a server that takes no more is seen sooner.
            events = sel.select(SELECT_SLICE if reading else BURST_SEND_SLICE)
            if time.monotonic() - burst.sampled > BACKLOG_SAMPLE:
                self._sample_backlog(burst)
            if events:
                wait.progress()
            elif not reading and self._burst_server_full(wait.last_progress):
                reading = self._burst_start_reading(sel, burst)  # the server takes no more for now
            for key, mask in events:
                entry = burst.entries[key.fd]
                if mask & selectors.EVENT_WRITE and not entry.sent_all:
                    self._burst_send(sel, burst, entry, reading)
                if mask & selectors.EVENT_READ and not entry.over:
                    self._burst_recv(sel, burst, entry)
            if not reading and all(e.sent_all or e.over for e in burst.entries.values()):
                reading = self._burst_start_reading(sel, burst)
        burst.hopeless = wait.hopeless

    def _burst_server_full(self, last_progress: float) -> bool:
        """Will the server take no more bytes until the burst's connections read their echoes?

        So it is once nothing moved for BURST_SEND_STALL; or sooner, once the
        server is asleep until an event comes (nothing moved for BURST_SEND_SLICE,
        and the only event that can come is a client reading).
        """
        idle = time.monotonic() - last_progress
        if idle > BURST_SEND_STALL:
            return True
        return idle >= BURST_SEND_SLICE and self.watch is not None and self.watch.asleep()

    def _sample_backlog(self, burst: _Burst) -> None:
        """The listen queue now: the longest it was, its limit, and what it holds last."""
        queue = self.watch.accept_queue() if self.watch is not None else None
        burst.sampled = time.monotonic()
        if queue is not None:
            burst.queue_peak = max(burst.queue_peak, queue.length)
            burst.queue_limit = queue.limit
            burst.queue_last = queue.length
            if queue.overflows is not None:
                if burst.overflows_before is None:
                    burst.overflows_before = queue.overflows
                burst.overflowed = queue.overflows - burst.overflows_before

    def _burst_send(
        self, sel: selectors.BaseSelector, burst: _Burst, entry: _BurstEntry, reading: bool
    ) -> None:
        if not entry.connected:
            entry.connected = True
            if time.monotonic() - burst.started >= SYN_RETRY:
                burst.retried += 1
            err = entry.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._burst_broken(sel, burst, entry, errno.errorcode.get(err, str(err)))
                return
        try:
            sent = entry.sock.send(entry.message[entry.offset :])
        except BlockingIOError:
            return
        except OSError as exc:
            self._burst_broken(sel, burst, entry, describe_os_error(exc))
            return
        self.oracle.sent(entry.conn, entry.message[entry.offset : entry.offset + sent])
        entry.offset += sent
        if entry.sent_all:
            if reading:
                sel.modify(entry.sock, selectors.EVENT_READ)
            else:
                sel.unregister(entry.sock)  # its echo waits until every connection has sent

    def _burst_start_reading(self, sel: selectors.BaseSelector, burst: _Burst) -> bool:
        """From now on every connection reads, those still sending included."""
        burst.peak_unread = sum(1 for e in burst.entries.values() if e.sent_all and not e.over)
        for entry in burst.entries.values():
            if entry.over:
                continue
            events = selectors.EVENT_READ | (0 if entry.sent_all else selectors.EVENT_WRITE)
            if entry.sent_all:
                sel.register(entry.sock, events)
            else:
                sel.modify(entry.sock, events)
        return True

    def _burst_broken(self, sel: selectors.BaseSelector, burst: _Burst, entry: _BurstEntry, why: str) -> None:
        """A burst connection reset. Before any echo byte, the kernel may have done it: a listen
        backlog that overflows drops handshakes, and connections it never queued are reset when
        their data comes. Which it was is judged once the backlog is known (see _note_burst)."""
        if entry.received == 0:
            entry.reset_early = why
            self.oracle.client_gone(entry.conn)
        else:
            burst.problems.append(f"connection {entry.conn}: {why}")
            self.oracle.reset(entry.conn)
        self._burst_over(sel, entry)

    def _burst_recv(self, sel: selectors.BaseSelector, burst: _Burst, entry: _BurstEntry) -> None:
        try:
            data = entry.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._burst_broken(sel, burst, entry, describe_os_error(exc))
            return
        if not data:
            self.oracle.eof(entry.conn)
            self._burst_over(sel, entry)
            return
        self.oracle.received(entry.conn, data)
        entry.received += len(data)
        if entry.received >= len(entry.message):
            entry.echoed = True
            self._burst_over(sel, entry)

    @staticmethod
    def _burst_over(sel: selectors.BaseSelector, entry: _BurstEntry) -> None:
        entry.over = True
        try:
            sel.unregister(entry.sock)
        except KeyError:
            pass  # not registered while it waited for the others to send

    def _note_burst(self, step: BurstConnect, burst: _Burst) -> None:
        """Evidence of how wide the burst went; an event for connections that got no echo.

        A connection whose echo went wrong is the oracle's (echo-exact,
        no-crosstalk ...), not an accept failure: only connections with no
        verdict of their own and no complete echo count against accept-robust.

        A server with a small listen backlog (socat's is 5) meets a burst with
        a full queue: the kernel drops handshakes, and the clients retry 1 s,
        3 s, 7 s ... later, or resets connections it never queued once their
        data comes. When the backlog was seen full and the server had emptied
        its queue (it accepts; the clients wait for their retry), connections
        served late, reset before any echo, or not served yet are a *slow
        accept queue*: legal but impolite, a non-strict finding. Connections
        left waiting in a queue the server does not empty are a failure.
        """
        for level in WIDE_BURST_EVIDENCE:
            if burst.peak_unread >= level:
                self.transcript.evidence.add(f">= {level} connections open at once, echoes unread")
        seen_full = burst.queue_limit is not None and burst.queue_peak >= burst.queue_limit
        full = seen_full or burst.overflowed > 0
        if full:
            self.transcript.evidence.add("the listen backlog was full during a burst")
        slow_queue = full and burst.queue_last == 0
        entries = list(burst.entries.values())
        own_verdict = {e.conn for e in entries if self.oracle.problem(e.conn) is not None}
        unserved = [e for e in entries if not e.echoed and not e.received and e.conn not in own_verdict]
        waiting = [e for e in unserved if slow_queue and not e.reset_early]
        overflowed = [e for e in unserved if full and e.reset_early]
        excused = {e.conn for e in waiting + overflowed} | own_verdict
        failed = [e for e in entries if not e.echoed and e.conn not in excused]
        problems = burst.problems + [f"connection {e.conn}: {e.reset_early}" for e in failed if e.reset_early]
        backlog = ""
        if full:
            limit = f"limit {burst.queue_limit}" if burst.queue_limit is not None else "limit unknown"
            backlog = f"the listen backlog was full ({limit}, {burst.queue_peak} seen waiting"
            if burst.overflowed:
                backlog += f", {plural(burst.overflowed, 'handshake')} dropped by the kernel and retried"
            backlog += ")"
        if not failed and not problems:
            slow = []
            if burst.retried:
                slow.append(f"{burst.retried} of {step.count} connects completed only after a SYN retry")
            if overflowed:
                slow.append(f"{len(overflowed)} were reset by the kernel before any echo")
            if waiting:
                slow.append(f"{len(waiting)} were still waiting for a SYN retry when the burst ended")
            if slow and full:
                detail = "slow accept queue: " + "; ".join(slow) + f" ({backlog})"
                self.transcript.add(self.step_index, None, SLOW_ACCEPT, detail)
            return
        echoed = sum(1 for e in entries if e.echoed)
        detail = f"{echoed} of {step.count} burst connections echoed"
        late = [e for e in failed if not e.reset_early]
        if late:
            detail += f"; {plural(len(late), 'connection')} got no complete echo in time"
            detail += " (" + ", ".join(self._late_entry(e) for e in late[:3]) + ")"
        if burst.queue_last:
            detail += f", {burst.queue_last} of them never accepted (still in the listen queue)"
        if problems:
            detail += "; " + "; ".join(problems[:3])
        if burst.hopeless:
            detail += f" (none could come: {QUIET_REASON})"
        if backlog:
            detail += f"; {backlog}"
        self.transcript.add(self.step_index, None, BURST_FAILED, detail)

    @staticmethod
    def _late_entry(entry: _BurstEntry) -> str:
        """What one burst connection got: its echo so far, and whether its connect ever completed."""
        if not entry.connected:
            return f"connection {entry.conn}: never connected"
        return f"connection {entry.conn}: {entry.received} of {len(entry.message)} bytes echoed"


@dataclass
class _BurstEntry:
    conn: int
    sock: socket.socket
    message: bytes
    offset: int = 0  # bytes of the message sent
    received: int = 0
    connected: bool = False
    echoed: bool = False  # the whole echo came back
    reset_early: str = ""  # reset before any echo byte came back: why (see _burst_broken)
    over: bool = False  # echoed, or ended by an error or EOF

    @property
    def sent_all(self) -> bool:
        return self.offset >= len(self.message)


@dataclass
class _Burst:
    started: float
    entries: dict[int, _BurstEntry] = field(default_factory=dict)  # by fd
    problems: list[str] = field(default_factory=list)
    retried: int = 0  # connects that completed a SYN retry later
    peak_unread: int = 0  # connections that had sent everything, none reading yet
    queue_peak: int = 0  # the longest the listen queue was seen
    queue_limit: int | None = None  # the backlog given to listen(), when known
    overflows_before: int | None = None  # the namespace's ListenOverflows before the first SYN
    overflowed: int = 0  # handshakes dropped by a full accept queue since (see AcceptQueue.overflows)
    queue_last: int = 0  # what the listen queue held when last seen
    sampled: float = 0.0  # when it was last seen
    hopeless: bool = False
