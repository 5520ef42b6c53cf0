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
from harness.model.transcript import BURST_FAILED, INJECTION_UNAVAILABLE, SLOW_ACCEPT, AcceptQueue
from harness.model.wording import plural

BURST_ID_BASE = 1_000_000
#: A connect that completes this long after the burst began waited for a SYN retry (the first is at 1 s).
SYN_RETRY = 0.9
#: No byte taken by the server for this long: the burst's connections start reading their echoes.
BURST_SEND_STALL = 0.05
#: How wide a burst went, recorded as evidence (servers size tables and epoll_wait batches by these).
WIDE_BURST_EVIDENCE = (64, 128)


class FaultSteps(DataSteps):
    """The steps that break things on purpose: forged resets, connect bursts."""

    def _inject_reset(self, step: InjectReset) -> None:
        """An RST forged on the wire (scapy), not sent by either socket."""
        client = self._live(step.conn)
        if client is None:
            return
        from harness.drive.wire import InjectionUnavailable, inject_reset

        if step.toward == "client" and self._pending_in_server(client) <= 0:
            # Nothing the server still has to send: it would never meet the
            # RST, and an idle half-open connection is not a server bug.
            self.transcript.evidence.add("no RST forged toward the client: nothing was pending in the server")
            self._close(client)
            return
        try:
            inject_reset(client.sock, step.toward)
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
            backlog = self.watch.accept_queue() if self.watch is not None else None
            self._burst_exchange(sel, burst)
            self._note_burst(step, burst, backlog)
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
            events = sel.select(SELECT_SLICE)
            if events:
                wait.progress()
            elif not reading and time.monotonic() - wait.last_progress > BURST_SEND_STALL:
                reading = self._burst_start_reading(sel, burst)  # the server takes no more for now
            for key, mask in events:
                entry = burst.entries[key.fd]
                if mask & selectors.EVENT_WRITE and not entry.sent_all:
                    self._burst_send(sel, burst, entry, reading)
                if mask & selectors.EVENT_READ and not entry.over:
                    self._burst_recv(sel, entry)
            if not reading and all(e.sent_all or e.over for e in burst.entries.values()):
                reading = self._burst_start_reading(sel, burst)
        burst.hopeless = wait.hopeless

    def _burst_send(
        self, sel: selectors.BaseSelector, burst: _Burst, entry: _BurstEntry, reading: bool
    ) -> None:
        if not entry.connected:
            entry.connected = True
            if time.monotonic() - burst.started >= SYN_RETRY:
                burst.retried += 1
            err = entry.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                burst.problems.append(f"connection {entry.conn}: {errno.errorcode.get(err, err)}")
                self._burst_over(sel, entry)
                return
        try:
            sent = entry.sock.send(entry.message[entry.offset :])
        except BlockingIOError:
            return
        except OSError as exc:
            burst.problems.append(f"connection {entry.conn}: {describe_os_error(exc)}")
            self.oracle.reset(entry.conn)
            self._burst_over(sel, entry)
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

    def _burst_recv(self, sel: selectors.BaseSelector, entry: _BurstEntry) -> None:
        try:
            data = entry.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self.oracle.reset(entry.conn)
            self._burst_over(sel, entry)
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

    def _note_burst(self, step: BurstConnect, burst: _Burst, backlog: AcceptQueue | None) -> None:
        """Evidence of how wide the burst went; an event for connections that got no echo.

        A connection whose echo went wrong is the oracle's (echo-exact,
        no-crosstalk ...), not an accept failure: only connections with no
        verdict of their own and no complete echo count against accept-robust.
        """
        for level in WIDE_BURST_EVIDENCE:
            if burst.peak_unread >= level:
                self.transcript.evidence.add(f">= {level} connections open at once, echoes unread")
        full = backlog is not None and backlog.full
        if full:
            self.transcript.evidence.add("the listen backlog was full during a burst")
        failed = [e for e in burst.entries.values() if not e.echoed and self.oracle.problem(e.conn) is None]
        backlog_note = ""
        if backlog is not None and full:
            backlog_note = f"the listen backlog was full ({backlog.length} of {backlog.limit})"
        if not failed and not burst.problems:
            if burst.retried and full:
                self.transcript.add(
                    self.step_index,
                    None,
                    SLOW_ACCEPT,
                    f"{burst.retried} of {step.count} connects completed only after the client's SYN retry, "
                    f"a second or more later: {backlog_note}",
                )
            return
        echoed = sum(1 for e in burst.entries.values() if e.echoed)
        detail = f"{echoed} of {step.count} burst connections echoed"
        if failed:
            detail += f"; {plural(len(failed), 'connection')} got no complete echo in time"
        if burst.problems:
            detail += "; " + "; ".join(burst.problems[:3])
        if burst.hopeless:
            detail += f" (none could come: {QUIET_REASON})"
        if backlog_note:
            detail += f"; {backlog_note}"
        self.transcript.add(self.step_index, None, BURST_FAILED, detail)


@dataclass
class _BurstEntry:
    conn: int
    sock: socket.socket
    message: bytes
    offset: int = 0  # bytes of the message sent
    received: int = 0
    connected: bool = False
    echoed: bool = False  # the whole echo came back
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
    hopeless: bool = False
