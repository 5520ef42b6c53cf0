"""Data: send (reading the echo meanwhile), flood (without reading), read, read to EOF, half-close."""

from __future__ import annotations

import selectors
import socket
import time

from harness.drive.executor.connections import Client
from harness.drive.executor.waits import Waits
from harness.model.script import Flood, FloodBytes, Pause, Read, ReadToEof, Send, ShutdownWrite
from harness.model.transcript import EOF_MISSING, FLOOD, HOL_STALLED, READ_STALLED, SEND_FAILED

FLOOD_CHUNK = 64 * 1024
# After EAGAIN a flood asks the server's state after this long, then twice as long each time up
# to the max (see DataSteps._pipe_full): a server that stopped reading is seen 1 ms after, not 5.
FULL_CHECK_SLICE = 0.001
FULL_CHECK_SLICE_MAX = 0.005


class DataSteps(Waits):
    """The steps that move bytes."""

    def _send(self, step: Send) -> None:
        client = self._live(step.conn)
        if client is None:
            return
        data = step.payload.materialize(step.conn)
        pieces = cut(data, step.fragments)
        for i, piece in enumerate(pieces):
            if i and step.delay_ms:
                self._give_time(step.delay_ms)
            if not self._send_all(client, piece):
                return

    def _send_all(self, client: Client, data: bytes) -> bool:
        """Send everything, reading the echo meanwhile; False if the connection broke."""
        view = memoryview(data)
        # Most writes go out in one send(): a selector is made only when the
        # socket is full and the echo has to be read to make room.
        sel: selectors.BaseSelector | None = None
        try:
            started = last_progress = time.monotonic()
            while view:
                try:
                    sent = client.sock.send(view)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._broken(client, exc)
                    return False
                if sent:
                    self.oracle.sent(client.conn, bytes(view[:sent]))
                    view = view[sent:]
                    last_progress = time.monotonic()
                    continue
                now = time.monotonic()
                if now - started > self.limits.step_timeout:
                    self._cut_short(client)
                    return False
                if now - last_progress > self.limits.stall_timeout:
                    detail = (
                        f"the server took no bytes for {self.limits.stall_timeout:.1f} s "
                        f"({len(view)} of {len(data)} bytes unsent) while the client kept reading"
                    )
                    # As for reads: stuck while the server blocks on another client.
                    blocker = self._blocker(client)
                    if blocker:
                        detail += f", while {blocker}"
                    self.transcript.add(
                        self.step_index, client.conn, HOL_STALLED if blocker else SEND_FAILED, detail
                    )
                    self.transcript.stalled = True
                    return False
                # The server's echo fills this client's window: the client reads
                # it in bulk now, so a slow reader's small window has done its job.
                self._read_fast(client)
                if sel is None:
                    sel = selectors.DefaultSelector()
                    sel.register(client.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                for _key, mask in sel.select(self.limits.stall_timeout / 10):
                    if mask & selectors.EVENT_READ and not self._recv_once(client):
                        return False
        finally:
            if sel is not None:
                sel.close()
        return True

    def _flood(self, step: Flood) -> None:
        client = self._live(step.conn)
        if client is None:
            return
        if self.checkpoint is not None:
            self.checkpoint("before-flood", self)
        # A flood's bytes are made a block at a time as they go out (a flood past the memory bound
        # is tens of MiB, most of which a bounded server never takes), and differ from every Send's.
        blocks = FloodBytes(step.seed, step.conn)
        offset = 0
        sel = selectors.DefaultSelector()
        sel.register(client.sock, selectors.EVENT_WRITE)
        started = time.monotonic()
        full = False
        client.in_flood = True
        try:
            while offset < step.size and time.monotonic() - started < self.limits.step_timeout:
                chunk = blocks.slice(offset, min(FLOOD_CHUNK, step.size - offset))
                try:
                    sent = client.sock.send(chunk)
                except BlockingIOError:
                    if self._pipe_full(client, sel):
                        full = True  # nothing moves: every buffer on the way is full
                        break
                    continue
                except OSError as exc:
                    self._broken(client, exc)
                    break
                self.oracle.sent(client.conn, chunk[:sent])
                offset += sent
        finally:
            client.in_flood = False
            sel.close()
        client.flooded = self.oracle.owed(client.conn)
        self.transcript.add(
            self.step_index, client.conn, FLOOD, f"{offset} of {step.size} bytes taken; pipe full: {full}"
        )
        if full:
            self.transcript.evidence.add("flood filled every buffer up to the client")
        if self.checkpoint is not None:
            self._note_pending()
            self.checkpoint("flood", self)

    def _pipe_full(self, client: Client, sel: selectors.BaseSelector) -> bool:
        """After EAGAIN: does nothing move any more between the flooding client and the server?

        Nothing moves when the socket stays unwritable for ``flood_stall``; or,
        sooner, when the server has stopped reading this client for good (its
        bytes wait in the server's socket while every server thread sleeps
        until an event comes). A pipe that fills took 0.15 s a flood to call
        full that way: half of a campaign example's time (bench/example_time.py).
        """
        deadline = time.monotonic() + self.limits.flood_stall
        slice_ = FULL_CHECK_SLICE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if sel.select(min(slice_, left)):
                return False
            if self.watch is not None and self.watch.stopped_reading(client):
                self.transcript.evidence.add("a flood found the server asleep with the client's bytes unread")
                return True
            slice_ = min(slice_ * 2, FULL_CHECK_SLICE_MAX)

    def _read(self, step: Read) -> None:
        client = self._live(step.conn)
        if client is None or client.eof or client.reset:
            return
        oracle = self.oracle
        owed = oracle.owed(step.conn)
        want = owed if step.nbytes is None else min(step.nbytes, owed)
        target = oracle.received_count(step.conn) + want
        self._read_until(client, lambda c: oracle.received_count(c.conn) >= target, step.chunk, step.pace_ms)
        client.flooded = min(client.flooded, oracle.owed(step.conn))

    def _read_to_eof(self, step: ReadToEof) -> None:
        client = self._live(step.conn)
        if client is None or client.eof or client.reset:
            return
        kind = EOF_MISSING if client.write_shut else READ_STALLED
        self._read_until(client, lambda c: c.eof or c.reset, step.chunk, step.pace_ms, stall_kind=kind)
        client.flooded = 0

    def _pause(self, step: Pause) -> None:
        self._give_time(step.ms)

    def _shutdown(self, step: ShutdownWrite) -> None:
        client = self._live(step.conn)
        if client is None:
            return
        if self._pending_in_server(client) > 0:
            self.transcript.evidence.add("half-close with output pending in the server")
        corked = step.payload is not None
        try:
            if step.payload is not None:
                # Corked: the bytes wait in the send queue and the FIN joins their segment.
                client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                if not self._send_all(client, step.payload.materialize(step.conn)):
                    return
            client.sock.shutdown(socket.SHUT_WR)
            if corked:
                client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
                self.transcript.evidence.add("data and FIN in one segment")
        except OSError as exc:
            self._broken(client, exc)
            return
        client.write_shut = True
        self.oracle.shut_write(client.conn)


def cut(data: bytes, fragments: tuple[int, ...]) -> list[bytes]:
    """``data`` in pieces of the sizes in ``fragments``, the rest in one last piece."""
    pieces: list[bytes] = []
    offset = 0
    for size in fragments:
        if offset >= len(data):
            break
        pieces.append(data[offset : offset + size])
        offset += size
    if offset < len(data) or not pieces:
        pieces.append(data[offset:])
    return pieces
