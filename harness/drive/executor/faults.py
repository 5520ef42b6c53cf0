"""Network faults: RSTs forged on the wire, and bursts of connects."""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections.abc import Hashable

from harness.drive.executor.connections import RECV_SIZE, describe_os_error
from harness.drive.executor.data import DataSteps
from harness.drive.executor.waits import SELECT_SLICE
from harness.drive.quiescence import QUIET_REASON
from harness.model.script import BurstConnect, InjectReset, pattern_bytes
from harness.model.transcript import BURST_FAILED, INJECTION_UNAVAILABLE

BURST_ID_BASE = 1_000_000


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
        """Connect ``count`` sockets at once, echo a message on each, close them all."""
        base = BURST_ID_BASE + self.step_index * 1000
        sel = selectors.DefaultSelector()
        pending: dict[int, tuple[Hashable, socket.socket, bytes]] = {}
        problems: list[str] = []
        try:
            for k in range(step.count):
                conn = base + k
                sock = self._open_socket(None, True)
                sock.setblocking(False)
                err = sock.connect_ex(self.address)
                if err not in (0, errno.EINPROGRESS):
                    problems.append(f"connect {k}: {errno.errorcode.get(err, err)}")
                    sock.close()
                    continue
                message = pattern_bytes(step.size, 0, conn)
                pending[sock.fileno()] = (conn, sock, message)
                sel.register(sock, selectors.EVENT_WRITE)
            connected = self._burst_exchange(sel, pending, problems)
            if connected < step.count or problems:
                detail = f"{connected} of {step.count} burst connections echoed; " + "; ".join(problems[:3])
                self.transcript.add(self.step_index, None, BURST_FAILED, detail)
        finally:
            for _conn, sock, _message in pending.values():
                sock.close()
            sel.close()

    def _burst_exchange(
        self,
        sel: selectors.BaseSelector,
        pending: dict[int, tuple[Hashable, socket.socket, bytes]],
        problems: list[str],
    ) -> int:
        got: dict[int, bytearray] = {fd: bytearray() for fd in pending}
        sent: set[int] = set()
        done = 0
        wait = self._hopeless_wait()
        deadline = wait.last_progress + self.limits.connect_timeout + self.limits.stall_timeout
        # As for a read: a server asleep for good will accept and echo no more.
        while done < len(pending) and time.monotonic() < deadline and not wait.check():
            events = sel.select(SELECT_SLICE)
            if events:
                wait.progress()
            for key, mask in events:
                fd = key.fd
                conn, sock, message = pending[fd]
                if mask & selectors.EVENT_WRITE and fd not in sent:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        problems.append(f"connection {conn}: {errno.errorcode.get(err, err)}")
                        sel.unregister(sock)
                        continue
                    self.oracle.opened(conn)
                    sock.sendall(message)  # small: fits the socket buffer at once
                    self.oracle.sent(conn, message)
                    sent.add(fd)
                    sel.modify(sock, selectors.EVENT_READ)
                elif mask & selectors.EVENT_READ:
                    try:
                        data = sock.recv(RECV_SIZE)
                    except OSError as exc:
                        problems.append(f"connection {conn}: {describe_os_error(exc)}")
                        self.oracle.reset(conn)
                        sel.unregister(sock)
                        continue
                    if not data:
                        self.oracle.eof(conn)
                        sel.unregister(sock)
                        continue
                    self.oracle.received(conn, data)
                    got[fd] += data
                    if len(got[fd]) >= len(message):
                        done += 1
                        sel.unregister(sock)
        if done < len(pending):
            late = f"{len(pending) - done} got no complete echo in time"
            problems.append(late + (f" (none could come: {QUIET_REASON})" if wait.hopeless else ""))
        return done
