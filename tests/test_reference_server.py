"""Process-level tests of the reference server (issue 2, §3), and of the seed server's bug 1.

Each test starts ``python -m server_under_test --port 0`` as a real subprocess
and talks to it over real sockets on 127.0.0.1, in both epoll modes. They
prove the wiring and the behaviours that only show with a real kernel:
backpressure, half-close, resets, descriptor exhaustion, signals.

Waiting is always polling against a deadline (see ``wait_until`` and the
``recv_*`` helpers); the only sleeps are CPU-measurement windows and the
paced reads of the half-close test. Every flood has a byte cap.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from reference_helpers import (
    CHUNK,
    HOST,
    IO_TIMEOUT,
    STARTUP_TIMEOUT,
    SeedProcess,
    ServerProcess,
    Spawner,
    assert_same_bytes,
    clients,
    connect,
    echo,
    flood_until_blocked,
    random_bytes,
    recv_exactly,
    recv_until_eof,
    reset,
    server_side_sockets,
    start_seed,
    wait_until,
)

from server_under_test.reference import HIGH_WATER, PER_CONNECTION_BOUND

MiB = 1024 * 1024

# A client receive buffer this small (set before connect) keeps the TCP window
# tiny, so what the server echoes piles up on the server's side.
SMALL_RCVBUF = 4096
# Upper bound on what one flooding client sends; the reference server blocks it
# after roughly 7-9 MiB (kernel buffers on both sides plus PER_CONNECTION_BOUND).
FLOOD_CAP = 32 * MiB
# Wall-clock window over which CPU use is measured.
CPU_WINDOW = 1.0
# Share of one core an idle server may use, and that a server out of fds may use.
IDLE_SHARE = 0.10
SPIN_SHARE = 0.25
# Half-close: more than the kernel buffers hold, read back at most READ_CHUNK per READ_INTERVAL.
HALF_CLOSE_TOTAL = 10 * MiB
HALF_CLOSE_RCVBUF = 16 * 1024
READ_CHUNK = 16 * 1024
READ_INTERVAL = 0.002
HALF_CLOSE_TIMEOUT = 90.0
# Simultaneous connects.
BURST = 50
# Descriptor exhaustion: the server's RLIMIT_NOFILE, and how many clients exceed it.
NOFILE_LIMIT = 32
EXHAUSTING_CLIENTS = NOFILE_LIMIT + 16
# Memory: flooding clients, and the allocator's slack on top of the documented bound.
RSS_FLOODERS = 2
RSS_SLACK = 4 * MiB
# Seed server: loop turns (two printed lines each at least) and CPU that count as spinning.
SPIN_LINES = 10_000
SPIN_CPU_SECONDS = 0.5


@pytest.fixture
def spawner() -> Iterator[Spawner]:
    """Starts subprocesses; kills each one by pid after the test, pass or fail."""
    spawner = Spawner()
    try:
        yield spawner
    finally:
        spawner.close()


@pytest.fixture(params=["lt", "et"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(spawner: Spawner, mode: str) -> ServerProcess:
    return spawner.server(mode)


def expect_clean_eof(sock: socket.socket) -> None:
    """Half-close our side; the server must answer with EOF and nothing more."""
    sock.shutdown(socket.SHUT_WR)
    leftover = recv_until_eof(sock)
    assert leftover == b"", f"{len(leftover)} unexpected bytes before EOF: {leftover[:32]!r}"


# -- echo ------------------------------------------------------------------------


def test_echoes_all_256_byte_values(server: ServerProcess) -> None:
    payload = bytes(range(256)) + bytes(reversed(range(256))) + bytes(range(256)) * 8
    with connect(server.address) as sock:
        echo(sock, payload)
        expect_clean_eof(sock)


def _send_in_pieces(sock: socket.socket, payload: bytes, sizes: Iterator[int]) -> int:
    sends = 0
    offset = 0
    while offset < len(payload):
        size = next(sizes)
        sock.sendall(payload[offset : offset + size])
        offset += size
        sends += 1
    return sends


def _random_sizes(seed: int, low: int, high: int) -> Iterator[int]:
    rng = random.Random(seed)
    while True:
        yield rng.randint(low, high)


def _ones() -> Iterator[int]:
    while True:
        yield 1


@pytest.mark.parametrize(
    ("total", "sizes"),
    [
        pytest.param(4096, _ones, id="one-byte-writes"),
        pytest.param(128 * 1024, lambda: _random_sizes(1, 1, 97), id="small-random-writes"),
        pytest.param(128 * 1024, lambda: _random_sizes(2, 1000, 9000), id="odd-sized-writes"),
    ],
)
def test_fragmented_writes_echo_byte_exact(
    server: ServerProcess, total: int, sizes: Callable[[], Iterator[int]]
) -> None:
    payload = random_bytes(total, seed=total)
    # TCP_NODELAY: each write leaves as its own segment instead of being coalesced.
    with connect(server.address, nodelay=True) as sock:
        sends = _send_in_pieces(sock, payload, sizes())
        assert sends > 10
        assert_same_bytes(payload, recv_exactly(sock, total))
        expect_clean_eof(sock)


def test_one_byte_lockstep_echo(server: ServerProcess) -> None:
    """One byte out, wait for that byte back, 256 times: every value, one segment each."""
    with connect(server.address, nodelay=True) as sock:
        for value in range(256):
            byte = bytes([value])
            sock.sendall(byte)
            assert recv_exactly(sock, 1) == byte, f"wrong echo of byte {value}"
        expect_clean_eof(sock)


# -- half-close and reset -----------------------------------------------------------


def _echo_reading_slowly(sock: socket.socket, payload: bytes, deadline: float) -> tuple[bytes, int]:
    """Send ``payload``, then half-close, reading at most READ_CHUNK per READ_INTERVAL throughout.

    Returns everything read up to EOF, and how many echoed bytes were still on
    their way when the client half-closed. Reading slowly after the half-close
    too keeps the server's output queue non-empty when it reads the EOF.
    """
    view = memoryview(payload)
    received = bytearray()
    sent = 0
    pending_at_half_close = -1
    next_read = time.monotonic()
    sock.setblocking(False)
    while True:
        now = time.monotonic()
        if now > deadline:
            raise AssertionError(
                f"sent {sent} of {len(payload)} bytes and read {len(received)} back, then the deadline"
            )
        if sent == len(payload) and pending_at_half_close < 0:
            pending_at_half_close = sent - len(received)
            sock.shutdown(socket.SHUT_WR)
        read_due = now >= next_read
        # Pacing: between reads, wait only for writability, at most until the next read is due.
        readable, writable, _ = select.select(
            [sock] if read_due else [],
            [sock] if sent < len(payload) else [],
            [],
            0.5 if read_due else next_read - now,
        )
        try:
            if writable:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(view[sent : sent + CHUNK])
            if readable:
                with contextlib.suppress(BlockingIOError):
                    chunk = sock.recv(READ_CHUNK)
                    if not chunk:
                        if pending_at_half_close < 0:
                            raise AssertionError(f"EOF after {len(received)} bytes, before the half-close")
                        return bytes(received), pending_at_half_close
                    received += chunk
                    next_read = time.monotonic() + READ_INTERVAL
        except ConnectionResetError as exc:
            raise AssertionError(
                f"connection reset after {sent} bytes sent, {len(received)} read, "
                f"{'after' if pending_at_half_close >= 0 else 'before'} the half-close"
            ) from exc


@pytest.mark.slow
def test_half_close_with_pending_output_delivers_every_byte_then_eof(server: ServerProcess) -> None:
    payload = random_bytes(HALF_CLOSE_TOTAL, seed=3)
    with connect(server.address, rcvbuf=HALF_CLOSE_RCVBUF) as sock:
        received, pending = _echo_reading_slowly(sock, payload, time.monotonic() + HALF_CLOSE_TIMEOUT)
    # The scenario: much of the echo was still on its way when the client half-closed.
    assert pending > HIGH_WATER, f"only {pending} bytes were pending at the half-close"
    assert_same_bytes(payload, received)
    server.assert_alive()


def test_reset_with_pending_output_leaves_nothing_for_the_next_connection(server: ServerProcess) -> None:
    baseline_fds = server.num_fds()
    flooder = connect(server.address, rcvbuf=SMALL_RCVBUF)
    try:
        flooder_port = flooder.getsockname()[1]
        sent = flood_until_blocked(flooder, cap=FLOOD_CAP, fill=b"A")
        # The server holds echoed output it cannot send (and stopped reading).
        assert sent > PER_CONNECTION_BOUND, f"the flood stalled after only {sent} bytes"
        old = [c for c in server.ps.net_connections(kind="tcp") if c.raddr and c.raddr.port == flooder_port]
        assert len(old) == 1, old
    finally:
        reset(flooder)
    wait_until(lambda: server.num_fds() == baseline_fds, IO_TIMEOUT, "the server closed the reset connection")
    server.assert_alive()

    payload = random_bytes(200_000, seed=4)  # below HIGH_WATER: sendall cannot deadlock
    with connect(server.address) as sock:
        port = sock.getsockname()[1]
        wait_until(
            lambda: any(c.raddr and c.raddr.port == port for c in server.ps.net_connections(kind="tcp")),
            IO_TIMEOUT,
            "the server accepted the new connection",
        )
        new = [c for c in server.ps.net_connections(kind="tcp") if c.raddr and c.raddr.port == port]
        # The scenario: the new connection got the old one's fd number (the lowest free one).
        assert [c.fd for c in new] == [old[0].fd]
        echo(sock, payload)
        expect_clean_eof(sock)
    server.assert_alive()


def test_closes_its_socket_after_the_client_closes(server: ServerProcess) -> None:
    """The reference's side of the seed's bug 1: no CLOSE_WAIT left behind, no fd kept."""
    baseline_fds = server.num_fds()
    with connect(server.address) as sock:
        echo(sock, b"goodbye")
        client_port = sock.getsockname()[1]
        assert server_side_sockets(server.ps, server.port, client_port) == [psutil.CONN_ESTABLISHED]
    wait_until(
        lambda: not server_side_sockets(server.ps, server.port, client_port),
        IO_TIMEOUT,
        "the server closed its side of the connection",
    )
    wait_until(
        lambda: server.num_fds() == baseline_fds, IO_TIMEOUT, "the server's fd count is back to baseline"
    )


# -- fairness and bursts -----------------------------------------------------------


def test_slow_reader_does_not_stall_other_clients(server: ServerProcess) -> None:
    with connect(server.address, rcvbuf=SMALL_RCVBUF) as flooder, connect(server.address) as other:
        sent = flood_until_blocked(flooder, cap=FLOOD_CAP)
        assert sent > PER_CONNECTION_BOUND, f"the flood stalled after only {sent} bytes"
        for i in range(32):
            echo(other, random_bytes(32 * 1024, seed=100 + i))
        expect_clean_eof(other)
    server.assert_alive()


def test_burst_of_simultaneous_connects_is_fully_served(server: ServerProcess) -> None:
    barrier = threading.Barrier(BURST)

    def one_client(i: int) -> bytes:
        payload = f"client {i:02d};".encode() * (50 + i)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(IO_TIMEOUT)
            barrier.wait(IO_TIMEOUT)
            sock.connect(server.address)
            sock.sendall(payload)
            got = recv_exactly(sock, len(payload))
            sock.shutdown(socket.SHUT_WR)
            return got + recv_until_eof(sock)

    with ThreadPoolExecutor(max_workers=BURST) as pool:
        results = list(pool.map(one_client, range(BURST)))
    for i, got in enumerate(results):
        assert got == f"client {i:02d};".encode() * (50 + i), f"client {i} got someone else's bytes"
    server.assert_alive()


# -- resources -----------------------------------------------------------------------


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE_LIMIT, NOFILE_LIMIT))


@pytest.mark.slow
def test_descriptor_exhaustion_neither_kills_nor_spins(spawner: Spawner, mode: str) -> None:
    server = spawner.server(mode, preexec_fn=_low_nofile)
    with clients(server.address, EXHAUSTING_CLIENTS) as socks:
        for i, sock in enumerate(socks):
            sock.sendall(b"client %d\n" % i)
        # Clients beyond the limit wait in the listen backlog; the server's table is full.
        wait_until(
            lambda: server.num_fds() == NOFILE_LIMIT, IO_TIMEOUT, f"the server holds {NOFILE_LIMIT} fds"
        )
        share = server.cpu_share_over(CPU_WINDOW)
        server.assert_alive()
        assert share < SPIN_SHARE, f"the server used {share:.0%} of a core while out of descriptors"
        # The connections it did accept are served meanwhile (the backlog is FIFO).
        for i, sock in enumerate(socks[:8]):
            assert recv_exactly(sock, len(b"client %d\n" % i)) == b"client %d\n" % i
    # Every client closed: new connections are served again.
    with clients(server.address, 8) as fresh:
        for i, sock in enumerate(fresh):
            echo(sock, b"fresh %d" % i)
            expect_clean_eof(sock)
    server.assert_alive()


@pytest.mark.parametrize("with_blocked_reader", [False, True], ids=["idle-clients", "plus-blocked-reader"])
def test_idle_server_uses_almost_no_cpu(server: ServerProcess, with_blocked_reader: bool) -> None:
    with contextlib.ExitStack() as stack:
        socks = stack.enter_context(clients(server.address, 16))
        for i, sock in enumerate(socks):
            echo(sock, b"hello %d" % i)
        if with_blocked_reader:
            # Output pending, EPOLLOUT armed on a full socket: still nothing to do.
            flooder = stack.enter_context(connect(server.address, rcvbuf=SMALL_RCVBUF))
            flood_until_blocked(flooder, cap=FLOOD_CAP)
        share = server.cpu_share_over(CPU_WINDOW)
        server.assert_alive()
    assert share < IDLE_SHARE, f"an idle server used {share:.0%} of a core"


@pytest.mark.slow
def test_memory_stays_bounded_while_clients_flood_without_reading(server: ServerProcess) -> None:
    with connect(server.address) as warm:
        for i in range(8):  # let the allocator settle before the baseline
            echo(warm, random_bytes(128 * 1024, seed=200 + i))
    baseline = server.rss()
    peak = baseline

    def sample(sent: int) -> None:
        nonlocal peak
        if sent % MiB < CHUNK:
            peak = max(peak, server.rss())

    with clients(server.address, RSS_FLOODERS, rcvbuf=SMALL_RCVBUF) as flooders:
        total = sum(flood_until_blocked(sock, cap=FLOOD_CAP, on_progress=sample) for sock in flooders)
        peak = max(peak, server.rss())
        server.assert_alive()
    allowed = RSS_FLOODERS * PER_CONNECTION_BOUND + RSS_SLACK
    # The scenario: a server that buffered everything would have blown the bound.
    assert total > 2 * allowed, f"the clients could send only {total} bytes"
    growth = peak - baseline
    assert growth <= allowed, f"RSS grew by {growth} bytes while {total} bytes were flooded; bound {allowed}"


# -- process contract -----------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("busy", [False, True], ids=["no-connections", "open-connections"])
def test_signal_exits_zero(server: ServerProcess, signum: int, busy: bool) -> None:
    with contextlib.ExitStack() as stack:
        idle = None
        if busy:
            idle = stack.enter_context(connect(server.address))
            echo(idle, b"still here")
            flooder = stack.enter_context(connect(server.address, rcvbuf=SMALL_RCVBUF))
            flood_until_blocked(flooder, cap=2 * MiB)  # leaves output pending in the server
            half = stack.enter_context(connect(server.address))
            half.sendall(b"unanswered")
        os.kill(server.popen.pid, signum)
        try:
            code = server.popen.wait(timeout=IO_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server did not exit within {IO_TIMEOUT} s of {signum!r}") from None
        if idle is not None:
            # Closing everything on the way out: an idle client sees EOF.
            assert recv_until_eof(idle) == b""
    assert server.popen.stderr is not None
    stderr = server.popen.stderr.read()
    assert code == 0, f"exit code {code} on {signum!r}; stderr {stderr!r}"
    assert stderr == b""


BAD_ARGUMENTS = [
    ["--mode", "xx"],
    ["--port", "70000"],
    ["--port", "-1"],
    ["--port", "http"],
    ["--max-connections", "0"],
    ["--max-connections", "many"],
    ["--no-such-option"],
    ["stray"],
]


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=[" ".join(a) for a in BAD_ARGUMENTS])
def test_bad_arguments_exit_2_with_one_line_on_stderr(spawner: Spawner, args: list[str]) -> None:
    proc = spawner.popen([sys.executable, "-m", "server_under_test", *args])
    out, err = proc.communicate(timeout=STARTUP_TIMEOUT)
    lines = err.decode().splitlines()
    assert proc.returncode == 2, f"exit code {proc.returncode}; stderr {err!r}"
    assert out == b"", "a server that refuses its arguments must not announce LISTENING"
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert any(arg in lines[0] for arg in args), f"the message does not name the bad argument: {lines[0]!r}"


@pytest.mark.parametrize("holder", ["plain-listener", "another-server"])
def test_port_in_use_exits_nonzero_with_a_clear_message(spawner: Spawner, mode: str, holder: str) -> None:
    with contextlib.ExitStack() as stack:
        if holder == "another-server":
            port = spawner.server(mode).port
        else:
            taken = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            taken.bind((HOST, 0))
            taken.listen()
            port = taken.getsockname()[1]
        proc = spawner.popen([sys.executable, "-m", "server_under_test", "--port", str(port), "--mode", mode])
        out, err = proc.communicate(timeout=STARTUP_TIMEOUT)
    lines = err.decode().splitlines()
    assert proc.returncode == 1, f"exit code {proc.returncode}; stderr {err!r}"
    assert out == b""
    assert len(lines) == 1, f"expected one line on stderr, got {lines}"
    assert "address already in use" in lines[0] and str(port) in lines[0], lines[0]


# -- the seed server: bug 1 -------------------------------------------------------------


@pytest.fixture
def seed(spawner: Spawner) -> SeedProcess:
    return start_seed(spawner)


def _echo_then_close(address: tuple[str, int]) -> int:
    """One short exchange, then a normal close (FIN); returns the client's port."""
    with connect(address) as sock:
        echo(sock, b"hello")
        return int(sock.getsockname()[1])


def test_seed_server_leaves_a_closed_connection_in_close_wait(seed: SeedProcess) -> None:
    client_port = _echo_then_close(seed.address)
    wait_until(
        lambda: server_side_sockets(seed.ps, seed.port, client_port) == [psutil.CONN_CLOSE_WAIT],
        IO_TIMEOUT,
        "the seed's socket reached CLOSE_WAIT",
    )
    # Thousands of loop turns later the socket is still open: EOF was never acted on.
    lines = seed.lines
    wait_until(lambda: seed.lines - lines >= SPIN_LINES, IO_TIMEOUT, f"the seed printed {SPIN_LINES} lines")
    assert server_side_sockets(seed.ps, seed.port, client_port) == [psutil.CONN_CLOSE_WAIT]
    assert seed.popen.poll() is None


def test_seed_server_spins_after_a_client_closes(seed: SeedProcess) -> None:
    cpu = seed.cpu_seconds()
    lines = seed.lines
    _echo_then_close(seed.address)
    # An idle loop prints two lines per 10 s epoll timeout and burns nothing;
    # a loop woken by the same EOF again and again burns CPU as fast as it can.
    wait_until(
        lambda: seed.cpu_seconds() - cpu >= SPIN_CPU_SECONDS,
        IO_TIMEOUT,
        f"the seed burned {SPIN_CPU_SECONDS} s of CPU",
    )
    assert seed.lines - lines >= SPIN_LINES, f"only {seed.lines - lines} lines: not a busy loop"
