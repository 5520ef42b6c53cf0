"""What the harness reads from the kernel, fast: sock_diag rows, the process tree, forged packets.

Each is checked against the slower source it replaced, on real sockets and
real processes: the sock_diag table against ``/proc/net/tcp``, the process
tree against psutil, hand-built packets against scapy's, a flood's bytes made
in pieces against the block made at once. And the questions built on them:
has the server caught up, has it stopped reading a client.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from harness.drive import sockdiag
from harness.drive.executor import Executor
from harness.drive.observe import ServerObserver, _tcp_rows, descendants, listen_backlog
from harness.drive.process import ServerProcess, reference_command
from harness.model.limits import DEFAULT_LIMITS, Limits
from harness.model.script import (
    BULK_BLOCK,
    BurstConnect,
    Connect,
    Flood,
    FloodBytes,
    Pause,
    Payload,
    Read,
    Script,
    Send,
    pattern_bytes,
)
from harness.run.checker import Checker

# A process that listens and then waits for events for ever (epoll, no timeout) without accepting.
NEVER_ACCEPTS = """
import select, socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(7)
print(listener.getsockname()[1], flush=True)
select.epoll().poll()
"""


def proc_rows(port: int) -> set[tuple[int, int, int, int, int, int]]:
    """Rows of /proc/net/tcp{,6} naming ``port``, read as text (the old way), TIME_WAIT left out."""
    rows = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/self/net/{table}") as fh:
            next(fh)
            for line in fh:
                parts = line.split()
                local, remote = (int(p.rsplit(":", 1)[1], 16) for p in parts[1:3])
                state = int(parts[3], 16)
                if port in (local, remote) and state != sockdiag.TCP_TIME_WAIT:
                    send_queue, receive_queue = (int(q, 16) for q in parts[4].split(":"))
                    if state == 0x0A:
                        send_queue = 0  # a listener's: the backlog in sock_diag, 0 here
                    rows.add((local, remote, state, send_queue, receive_queue, int(parts[9])))
    return rows


def test_sock_diag_rows_are_the_proc_table_rows() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(7)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        accepted, _ = listener.accept()
        clients[0].sendall(b"unread by the server")  # a receive queue
        clients[2].sendall(b"waiting in the accept queue")
        time.sleep(0.05)
        try:
            rows = {tuple(r) for r in _tcp_rows(os.getpid(), port) or []}
            assert rows == proc_rows(port)
            server_side = [r for r in rows if r[0] == port and r[1] != 0]
            assert any(r[4] == len(b"unread by the server") for r in server_side), rows
            assert listen_backlog(port) == 7  # a listener's send queue in sock_diag
        finally:
            accepted.close()
            for client in clients:
                client.close()


def test_a_large_dump_is_read_whole_chunks_at_a_time_and_the_rows_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A burst's hundreds of sockets come in chunks of equal-length messages, each read in one
    # unpack; the rows must be the ones the text table has, in every state a burst leaves.
    uniform: list[bool] = []
    read_uniform = sockdiag._read_uniform

    def counted(data: bytes, wanted: int | None, rows: list[sockdiag.DiagRow]) -> bool:
        uniform.append(read_uniform(data, wanted, rows))
        return uniform[-1]

    monkeypatch.setattr(sockdiag, "_read_uniform", counted)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        port = listener.getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        accepted = [listener.accept()[0] for _ in range(250)]  # 50 wait in the accept queue
        for i, client in enumerate(clients[:100]):
            client.sendall(b"x" * (i + 1))  # receive queues of every size
        for client in clients[100:120]:
            client.shutdown(socket.SHUT_WR)  # FIN_WAIT2 here, CLOSE_WAIT on the server's side
        time.sleep(0.05)
        try:
            rows = {tuple(r) for r in _tcp_rows(os.getpid(), port) or []}
            assert rows == proc_rows(port)
            assert len(rows) == 1 + 300 + 300  # the unaccepted have a server side too (inode 0)
            assert True in uniform and False in uniform  # both ways of reading were taken
            assert {r for r in rows if r[3] or r[4]}, "no queue to compare"
        finally:
            for sock in clients + accepted:
                sock.close()


def test_the_process_tree_is_psutils() -> None:
    shell = subprocess.Popen(
        ["bash", "-c", "sleep 30 & bash -c 'sleep 30 & wait' & wait"], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        below: list[psutil.Process] = []
        while time.monotonic() < deadline and len(below) < 3:
            below = psutil.Process(shell.pid).children(recursive=True)
            time.sleep(0.02)
        assert any(p.ppid() != shell.pid for p in below), below  # a grandchild among them
        assert set(descendants(shell.pid)) == {p.pid for p in below}
        assert {p.pid for p in ServerObserver(shell.pid).tree()} == {p.pid for p in below} | {shell.pid}
    finally:
        os.killpg(shell.pid, signal.SIGKILL)  # the session we started, by its group
        shell.wait()


def test_forged_packets_are_the_bytes_scapy_builds() -> None:
    from scapy.layers.inet import IP, TCP

    from harness.drive.wire import ACK, FORGED_IP_ID, RST, tcp_packet

    rst = IP(src="127.0.0.1", dst="127.0.0.2", id=FORGED_IP_ID) / TCP(sport=40000, dport=80, flags="R", seq=7)
    assert tcp_packet("127.0.0.1", "127.0.0.2", 40000, 80, RST, 7) == bytes(rst)
    update = IP(src="127.0.0.2", dst="127.0.0.1", id=FORGED_IP_ID) / TCP(
        sport=80, dport=40000, flags="A", seq=0xFFFFFFF0, ack=12345, window=65535
    )
    assert tcp_packet("127.0.0.2", "127.0.0.1", 80, 40000, ACK, 0xFFFFFFF0, 12345, 65535) == bytes(update)


def test_no_reset_is_forged_on_a_connection_the_server_already_reset() -> None:
    import struct

    from harness.drive.wire import ConnectionGone, forged_packets

    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server_side, _ = listener.accept()
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        server_side.close()  # an RST to the client, as a dying or resetting server sends
        time.sleep(0.05)
        with client, pytest.raises(ConnectionGone):
            forged_packets(client, "server")


def test_a_flood_is_one_stream_of_its_own_made_a_slice_at_a_time() -> None:
    flood = FloodBytes(9, 2)
    pieces: list[bytes] = []
    offset = 0
    while offset < 2 * BULK_BLOCK + 12_345:  # past the block's end, twice
        pieces.append(flood.slice(offset, 50_000))
        assert pieces[-1]
        offset += len(pieces[-1])
    stream = b"".join(pieces)
    assert stream[:BULK_BLOCK] == stream[BULK_BLOCK : 2 * BULK_BLOCK]  # it wraps around the block
    assert len(set(stream[:4096])) > 200 and not set(b"\x00\n\r") & set(stream[:BULK_BLOCK])
    assert flood.slice(123, 10) == stream[123:133]  # back to an earlier offset
    assert FloodBytes(9, 2).slice(0, 4096) == stream[:4096]  # the same (seed, connection): the same bytes
    assert FloodBytes(9, 3).slice(0, 4096) != stream[:4096]
    assert FloodBytes(10, 2).slice(0, 4096) != stream[:4096]
    assert stream[:64] not in pattern_bytes(BULK_BLOCK, 9, 2)  # never a Send's pattern


def test_a_slow_reader_that_reads_fast_opens_its_window_again() -> None:
    # The kernel fixes a connection's window clamp from the SO_RCVBUF set before connect; a
    # larger SO_RCVBUF later leaves it, and the window with it, as small as it was (once, 68 KiB
    # of echo took 22 s to read back through it). _read_fast raises the clamp too.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        executor = Executor(listener.getsockname())
        executor.run_step(Connect(0, rcvbuf=1448))
        client = executor.clients[0]
        clamp = client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP)
        assert clamp < 16 * 1024
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        assert client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP) == clamp
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        executor._read_fast(client)
        assert client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP) >= 512 * 1024
        assert client.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK)  # no delayed ACK
        executor.abort_all()


@contextmanager
def reference_checker(limits: Limits = DEFAULT_LIMITS) -> Iterator[Checker]:
    checker = Checker(ServerProcess(reference_command("lt")), limits=limits)
    checker.start()
    try:
        yield checker
    finally:
        checker.stop()


def test_the_server_has_caught_up_once_it_read_everything_and_sleeps() -> None:
    with reference_checker() as checker, socket.create_connection(checker.address) as client:
        client.sendall(b"x" * 1000)
        deadline = time.monotonic() + 10
        while not checker.caught_up() and time.monotonic() < deadline:
            time.sleep(0.001)
        assert checker.caught_up()


def test_a_connection_left_in_the_accept_queue_is_not_caught_up() -> None:
    server = subprocess.Popen([sys.executable, "-c", NEVER_ACCEPTS], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        observer = ServerObserver(server.pid)
        deadline = time.monotonic() + 10
        while not observer.asleep() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert observer.caught_up(port)  # asleep, nothing sent to it
        with socket.create_connection(("127.0.0.1", port)):
            time.sleep(0.05)
            assert observer.asleep() and not observer.caught_up(port)
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


# An echo server whose echo waits for a client that does not read (a 4 KiB send buffer, output
# kept in a list): it goes on reading, and its kernel, in the interactive mode an echo puts it
# in, leaves the ACK of what it read to the delayed-ACK timer (tens of ms).
ECHO_TO_A_CLIENT_THAT_DOES_NOT_READ = """
import select, socket
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
print(listener.getsockname()[1], flush=True)
poller = select.epoll()
poller.register(listener, select.EPOLLIN)
conns, pending = {}, {}
while True:
    for fd, events in poller.poll():
        if fd == listener.fileno():
            conn, _ = listener.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            conn.setblocking(False)
            conns[conn.fileno()], pending[conn.fileno()] = conn, b""
            poller.register(conn, select.EPOLLIN)
            continue
        try:
            if events & select.EPOLLIN:
                data = conns[fd].recv(1 << 20)
                if not data:
                    raise EOFError
                pending[fd] += data
            pending[fd] = pending[fd][conns[fd].send(pending[fd]):]
        except BlockingIOError:
            pass
        except (OSError, EOFError):
            poller.unregister(fd)
            conns.pop(fd).close()
            continue
        poller.modify(fd, select.EPOLLIN | (select.EPOLLOUT if pending[fd] else 0))
"""


def test_bytes_read_by_the_server_whose_ack_waits_count_as_read_at_the_second_look() -> None:
    server = subprocess.Popen(
        [sys.executable, "-c", ECHO_TO_A_CLIENT_THAT_DOES_NOT_READ], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        observer = ServerObserver(server.pid)
        seen = []
        for _ in range(10):  # a connection per try: the delayed-ACK timer, once it fires, ends the mode
            with socket.socket() as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                client.connect(("127.0.0.1", port))
                client.sendall(b"x" * 64 * 1024)  # read by the server, its echo stuck in the pipe
                time.sleep(0.05)
                client.send(b"y" * 100)  # read at once, acknowledged late
                deadline = time.monotonic() + 5
                while not observer.asleep() and time.monotonic() < deadline:
                    pass  # until the server has read it and waits again
                me = client.getsockname()[1]
                rows = {(r.local_port, r.remote_port): r for r in _tcp_rows(os.getpid(), port) or []}
                if rows[(me, port)].send_queue and not rows[(port, me)].receive_queue:
                    first, second = observer.caught_up(port, first_look=True), observer.caught_up(port)
                    rows = {(r.local_port, r.remote_port): r for r in _tcp_rows(os.getpid(), port) or []}
                    if rows[(me, port)].send_queue:  # the ACK still waited at both looks
                        seen.append((first, second))
        assert seen, "the server's kernel acknowledged every segment at once: nothing tested"
        assert all(not first and second for first, second in seen), seen
    finally:
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()


def test_delays_end_once_the_server_caught_up_and_floods_once_it_stopped_reading() -> None:
    # A pause and a flood stall far longer than the server needs, so that on a loaded machine
    # too the early ends are what ends them.
    with reference_checker(Limits().with_(flood_stall=10.0)) as checker:
        script = Script(
            (Connect(0), Send(0, Payload.of(b"hello" * 100)), Pause(2000), Flood(0, 64 * 1024 * 1024, seed=1))
        )
        executor: Executor = checker.begin()
        outcome = checker.judge(script, executor.run(script))
        assert outcome.ok, outcome.violations
        assert "a delay ended early: the server had caught up" in outcome.evidence
        # The reference server stops reading at its high-water mark and sleeps: seen, not waited out.
        assert "a flood found the server asleep with the client's bytes unread" in outcome.evidence
        assert "flood filled every buffer up to the client" in outcome.evidence


def test_a_short_pause_ends_once_the_server_sleeps_with_input_unread() -> None:
    # After a flood the reference server sleeps with the client's bytes unread (its high-water
    # mark). A pause sees that at two of its own looks: a pause under 8 ms once ran its length,
    # a look of its own at the sleeping server taking 5 ms. Ten tries, for a loaded machine.
    with reference_checker(Limits().with_(flood_stall=10.0)) as checker:
        script = Script((Connect(0), Flood(0, 64 * 1024 * 1024, seed=1), *[Pause(6)] * 10))
        executor: Executor = checker.begin()
        outcome = checker.judge(script, executor.run(script))
        assert outcome.ok, outcome.violations
        assert "a flood found the server asleep with the client's bytes unread" in outcome.evidence
        assert "a delay ended early: the server slept until an event" in outcome.evidence


def test_a_slow_readers_pauses_end_once_the_server_waits_again() -> None:
    # Ten pauses of 500 ms between 100-byte chunks: what ends each is the server waiting again
    # (it had nothing more to write), not its length.
    with reference_checker() as checker:
        script = Script(
            (Connect(0, rcvbuf=2048), Send(0, Payload.of(b"x" * 1000)), Read(0, chunk=100, pace_ms=500))
        )
        executor: Executor = checker.begin()
        outcome = checker.judge(script, executor.run(script))
        assert outcome.ok, outcome.violations
        assert outcome.transcript.oracle.received_count(0) == 1000
        assert "a delay ended early: the server had caught up" in outcome.evidence


@pytest.mark.skipif(not sockdiag.available(), reason="no sock_diag here")
def test_sock_diag_sees_only_our_namespace() -> None:
    assert sockdiag.same_namespace(os.getpid())
    assert not sockdiag.same_namespace(2**22 + 1)  # no such process


# A correct echo server with a listen backlog of 1 that takes 20 ms per accept: a burst overflows it.
SLOW_ACCEPTER = """
import socket, sys, threading, time
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", int(sys.argv[1])))
listener.listen(1)
def echo(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
    time.sleep(0.02)
"""


def test_a_burst_that_overflows_the_backlog_is_a_slow_accept_queue_not_a_failure(tmp_path: Path) -> None:
    program = tmp_path / "slow_accepter.py"
    program.write_text(SLOW_ACCEPTER)
    checker = Checker(ServerProcess(f"{sys.executable} {program} {{port}}"))
    checker.start()
    try:
        script = Script((BurstConnect(10, 100),))
        outcome = checker.judge(script, checker.begin().run(script))
    finally:
        checker.stop()
    assert outcome.ok, outcome.violations
    assert "the listen backlog was full during a burst" in outcome.evidence
    [slow] = outcome.non_strict
    # The kernel's own count of dropped handshakes, not a sample that happened to catch the queue full.
    assert "slow accept queue" in slow.message and "dropped by the kernel and retried" in slow.message, slow


def test_a_connect_dropped_by_a_full_backlog_is_a_close_not_yet_acknowledged() -> None:
    # The cleanup verdict leaves out connections whose SYN or FIN the server's kernel has not
    # acknowledged yet: the server cannot clean up what it has not been told of.
    server = subprocess.Popen([sys.executable, "-c", NEVER_ACCEPTS], stdout=subprocess.PIPE, text=True)
    clients: list[socket.socket] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for _ in range(12):  # a backlog of 7: the last handshakes are dropped and retried
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            clients.append(client)
        time.sleep(0.2)
        ports = {c.getsockname()[1] for c in clients}
        unheard = ServerObserver(server.pid).closes_not_acknowledged(port, ports)
        assert unheard and unheard < ports, (unheard, ports)
    finally:
        for client in clients:
            client.close()
        server.kill()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
