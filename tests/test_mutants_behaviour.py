"""Every mutant's bug really manifests, and the same scenario passes against the reference.

For each module of ``server_under_test/mutants`` a direct, fast scenario with
real sockets against the real subprocess shows the bug (bytes missing, no
EOF, a reset, a leaked fd, a busy loop, a dead process...), and the same
scenario, against the reference server in the same mode, shows nothing. So
each mutant is a real, detectable bug and not a no-op, whatever the harness
built on top of it does.

Racy triggers are retried a few times within a deadline (see ``Case.attempts``);
a scenario is only ever a failure of the *server*, never a timing accident of
the client, because every wait is bounded and generous next to loopback
latencies. Floods are bounded, only 127.0.0.1 is used, and every subprocess
and socket is closed by the ``lab`` fixture's finalizer.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import pkgutil
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

import server_under_test.mutants as mutants_package
from server_under_test.mutants import CATALOGUE, NAMES, PROPERTIES, Mutant, by_name
from server_under_test.mutants._base import contract_argv
from server_under_test.reference import ReferenceServer

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[1]
KIB = 1024
MIB = 1024 * KIB

# -- payloads --------------------------------------------------------------------
#
# Flood payloads are a cycle of 251 byte values (a prime period: a lost or
# duplicated chunk cannot line up again by accident), sent from a bounded view;
# the expected echo of n bytes is rebuilt on demand.

CYCLE = bytes(range(251))
SEND_CHUNK = 64 * KIB
_CYCLE_BLOCK = CYCLE * (SEND_CHUNK // len(CYCLE) + 2)
# Bytes a second client sends when we check for crosstalk: none of them is in CYCLE.
FOREIGN = bytes([0xFE, 0xFF]) * 16


def cycle_bytes(offset: int, length: int) -> memoryview:
    start = offset % len(CYCLE)
    return memoryview(_CYCLE_BLOCK)[start : start + length]


def expected_echo(n: int) -> bytes:
    return (CYCLE * (n // len(CYCLE) + 1))[:n]


# -- servers -----------------------------------------------------------------------


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    ps: psutil.Process

    def alive(self) -> bool:
        return self.proc.poll() is None

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def max_fd(self) -> int:
        return max(int(fd) for fd in os.listdir(f"/proc/{self.proc.pid}/fd"))


def reference_argv(mode: str) -> list[str]:
    return [sys.executable, "-m", "server_under_test", "--host", HOST, "--port", "0", "--mode", mode]


def _stop(server: Server) -> None:
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            # Blocked in a send() (blocking_accepted) or spinning: no more courtesy.
            proc.kill()
            proc.wait(timeout=5.0)
    if proc.stdout is not None:
        proc.stdout.close()


class Lab:
    """Starts servers and opens client sockets; the finalizer closes them all."""

    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.sockets: list[socket.socket] = []

    def start(self, name: str, argv: list[str]) -> Server:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # reset_kills dies with a traceback, by design
        )
        server = Server(name, proc, 0, psutil.Process(proc.pid))
        self.servers.append(server)  # registered first: the finalizer kills it whatever happens
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15.0)
        line = proc.stdout.readline().decode() if ready else ""
        if not line.startswith("LISTENING "):
            pytest.fail(f"{name} did not announce itself (got {line!r}, exit {proc.poll()})")
        server.port = int(line.split()[1].rsplit(":", 1)[1])
        return server

    def start_mutant(self, mutant: Mutant, mode: str | None = None) -> Server:
        return self.start(mutant.name, mutant.argv(mode=mode))

    def start_reference(self, mode: str) -> Server:
        return self.start("reference", reference_argv(mode))

    def connect(self, server: Server, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sockets.append(sock)
        if rcvbuf is not None:
            # Before connect(): the window scale is negotiated in the handshake.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(3.0)
        sock.connect((HOST, server.port))
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        for server in self.servers:
            _stop(server)


@pytest.fixture
def lab() -> Iterator[Lab]:
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.close()


# -- client moves --------------------------------------------------------------------


def flood(sock: socket.socket, limit: int, stall: float = 0.3, deadline: float = 10.0) -> int:
    """Send the cycle without reading, until ``limit`` bytes or no progress for ``stall`` s."""
    sent = 0
    end = time.monotonic() + deadline
    last = time.monotonic()
    while sent < limit and time.monotonic() < end:
        try:
            n = sock.send(cycle_bytes(sent, min(SEND_CHUNK, limit - sent)))
        except BlockingIOError:
            if time.monotonic() - last >= stall:
                break
            select.select([], [sock], [], 0.05)
            continue
        sent += n
        last = time.monotonic()
    return sent


def read_until(
    sock: socket.socket,
    want: int | None = None,
    idle: float = 1.0,
    deadline: float = 10.0,
    pace: float = 0.0,
) -> tuple[bytes, str]:
    """Read until EOF, a reset, ``want`` bytes, ``idle`` s without data or ``deadline``.

    ``pace`` seconds of sleep after each read make a slow reader. Returns the
    bytes and why reading stopped: "eof", "reset", "enough", "idle", "deadline".
    """
    data = bytearray()
    start = last = time.monotonic()
    while True:
        if want is not None and len(data) >= want:
            return bytes(data), "enough"
        now = time.monotonic()
        if now - start >= deadline:
            return bytes(data), "deadline"
        if now - last >= idle:
            return bytes(data), "idle"
        ready, _, _ = select.select([sock], [], [], 0.05)
        if not ready:
            continue
        try:
            chunk = sock.recv(1 * MIB)
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return bytes(data), "reset"
        if not chunk:
            return bytes(data), "eof"
        data += chunk
        if pace:
            time.sleep(pace)
        last = time.monotonic()


def send_all(sock: socket.socket, data: bytes, deadline: float = 3.0) -> None:
    view = memoryview(data)
    end = time.monotonic() + deadline
    while view:
        if time.monotonic() >= end:
            raise TimeoutError("the server does not read")
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            select.select([], [sock], [], 0.05)


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.02)


def echo_once(lab: Lab, server: Server, message: bytes = b"ping\n", idle: float = 1.0) -> bytes:
    sock = lab.connect(server)
    send_all(sock, message)
    data, _ = read_until(sock, want=len(message), idle=idle, deadline=3.0)
    return data


def describe(data: bytes, how: str, expected: int) -> str:
    return f"read {len(data)} of {expected} bytes, then {how}"


# -- scenarios: each returns None when the server behaves, else what went wrong ----------


def flood_shut_read(lab: Lab, server: Server, limit: int = 16 * MIB, pace: float = 0.0) -> str | None:
    """Flood a slow reader, half-close, then read: every byte back, in order, then EOF.

    With ``pace`` the client reads slowly, so that the server still has output
    queued when it reads the half-close.
    """
    sock = lab.connect(server, rcvbuf=4 * KIB)
    sent = flood(sock, limit)
    sock.shutdown(socket.SHUT_WR)
    data, how = read_until(sock, idle=1.0, deadline=20.0, pace=pace)
    if how != "eof" or data != expected_echo(sent):
        first_bad = next(
            (i for i, (a, b) in enumerate(zip(data, expected_echo(sent), strict=False)) if a != b), None
        )
        where = f"; first wrong byte at {first_bad}" if first_bad is not None else ""
        return describe(data, how, sent) + where
    return None


def half_close_exchange(lab: Lab, server: Server, message: bytes = b"hello\n") -> str | None:
    """Send, half-close, read: the message back, then a clean EOF."""
    sock = lab.connect(server)
    send_all(sock, message)
    sock.shutdown(socket.SHUT_WR)
    data, how = read_until(sock, idle=1.0, deadline=3.0)
    if how != "eof" or data != message:
        return f"sent {message!r}, read {data!r}, then {how}"
    return None


def corked_half_close_exchange(lab: Lab, server: Server, message: bytes = b"hello\n") -> str | None:
    """Send and half-close at once (TCP_CORK: the bytes and the FIN in one segment), then read.

    The server's first event reports the input and the peer's FIN together:
    a server that takes EPOLLRDHUP for a disconnect closes before it reads.
    """
    sock = lab.connect(server)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    send_all(sock, message)
    sock.shutdown(socket.SHUT_WR)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
    data, how = read_until(sock, idle=1.0, deadline=3.0)
    if how != "eof" or data != message:
        return f"sent {message!r} with the FIN, read {data!r}, then {how}"
    return None


def binary_exchange(lab: Lab, server: Server) -> str | None:
    return half_close_exchange(lab, server, b"binary\x00data\x00" * 8 + b"tail\n")


def fd_released(lab: Lab, server: Server, *, abort: bool) -> str | None:
    """After an echo the client closes (FIN, or RST if ``abort``): the server's fd count comes back."""
    baseline = server.ps.num_fds()
    sock = lab.connect(server)
    send_all(sock, b"ping\n")
    data, how = read_until(sock, want=5, idle=1.0, deadline=3.0)
    if data != b"ping\n":
        return f"no echo before the close ({how})"
    if abort:
        reset(sock)
    else:
        sock.close()
    if not wait_for(lambda: server.ps.num_fds() <= baseline, 1.0):
        states = sorted({c.status for c in server.ps.net_connections(kind="tcp")} - {"LISTEN"})
        return f"{server.ps.num_fds() - baseline} fd(s) still open 1 s after the close; tcp states {states}"
    return None


def cpu_while_idle(server: Server, seconds: float = 1.0) -> float:
    time.sleep(0.2)
    before = server.cpu_seconds()
    time.sleep(seconds)
    return server.cpu_seconds() - before


# CPU seconds in one idle second. An idle server uses ~0.00; a busy loop uses up to 1,
# and still 0.3 or more when other jobs load the two cores: the margin is for them.
IDLE_CPU_LIMIT = 0.05


def idle_connection_cpu(lab: Lab, server: Server) -> str | None:
    """One open, idle connection: the server must sleep in epoll_wait."""
    if echo_once(lab, server) != b"ping\n":
        return "no echo"
    used = cpu_while_idle(server)
    if used > IDLE_CPU_LIMIT:
        return f"{used:.2f} s of CPU in 1 s with one idle connection"
    return None


def emfile_cpu(lab: Lab, server: Server) -> str | None:
    """Out of descriptors with clients queued: the server must not spin on the listener."""
    # Room for two connections, then EMFILE on accept().
    limit = server.max_fd() + 3
    server.ps.rlimit(psutil.RLIMIT_NOFILE, (limit, limit))
    for _ in range(6):
        lab.connect(server)  # completes in the listen backlog, accepted or not
    used = cpu_while_idle(server)
    if not server.alive():
        return "died on EMFILE"
    if used > IDLE_CPU_LIMIT:
        return f"{used:.2f} s of CPU in 1 s while out of descriptors"
    return None


def reset_with_pending_output(lab: Lab, server: Server) -> str | None:
    """A slow reader resets while output is pending: the server survives and still echoes."""
    sock = lab.connect(server, rcvbuf=4 * KIB)
    flood(sock, 16 * MIB)
    reset(sock)
    if wait_for(lambda: not server.alive(), 1.0):
        return f"the server exited (status {server.proc.returncode}) after a client's reset"
    if echo_once(lab, server) != b"ping\n":
        return "no echo after a client's reset"
    return None


def second_client_after_reset(lab: Lab, server: Server) -> str | None:
    """A slow reader resets with output pending; the next client (same fd) gets only its own bytes."""
    first = lab.connect(server, rcvbuf=4 * KIB)
    flood(first, 16 * MIB)
    reset(first)
    time.sleep(0.2)  # let the server see the reset and free the fd
    second = lab.connect(server)
    send_all(second, FOREIGN)
    data, how = read_until(second, idle=0.5, deadline=5.0)
    if data != FOREIGN:
        return f"second client sent {len(FOREIGN)} bytes and read {len(data)} ({how}): {data[:16]!r}..."
    return None


def second_client_beside_slow_reader(lab: Lab, server: Server) -> str | None:
    """A slow reader has output pending; another client gets its own echo, and only it, promptly."""
    slow = lab.connect(server, rcvbuf=4 * KIB)
    flood(slow, 16 * MIB)
    other = lab.connect(server)
    send_all(other, FOREIGN)
    data, how = read_until(other, idle=0.5, deadline=2.0)
    if data != FOREIGN:
        return f"other client sent {len(FOREIGN)} bytes and read {len(data)} ({how}): {data[:16]!r}..."
    return None


def memory_under_flood(lab: Lab, server: Server) -> str | None:
    """A client that never reads must not grow the server's memory without bound."""
    before = server.ps.memory_info().rss
    sock = lab.connect(server, rcvbuf=4 * KIB)
    sent = flood(sock, 48 * MIB)
    time.sleep(0.2)
    grown = server.ps.memory_info().rss - before
    if grown > 16 * MIB:
        return (
            f"RSS grew by {grown / MIB:.0f} MiB while the client sent {sent / MIB:.0f} MiB and read nothing"
        )
    return None


def burst_then_read(lab: Lab, server: Server, limit: int = 1 * MIB) -> str | None:
    """Send a burst without reading, then read (no half-close): every byte comes back."""
    sock = lab.connect(server)
    sent = flood(sock, limit)
    data, how = read_until(sock, want=sent, idle=1.0, deadline=10.0)
    if data != expected_echo(sent):
        return describe(data, how, sent)
    return None


def two_requests(lab: Lab, server: Server) -> str | None:
    """Two requests in a row on one connection: both are echoed."""
    sock = lab.connect(server)
    for message in (b"one\n", b"two\n"):
        try:
            send_all(sock, message)
        except OSError as exc:
            return f"sending {message!r} failed: {exc!r}"
        data, how = read_until(sock, want=len(message), idle=1.0, deadline=3.0)
        if data != message:
            return f"sent {message!r}, read {data!r}, then {how}"
        time.sleep(0.05)
    return None


def connect_burst(lab: Lab, server: Server, count: int = 40, frozen: bool = False) -> str | None:
    """A burst of connects: every client is served within a second.

    ``frozen``: the server is stopped (SIGSTOP) while the burst's handshakes
    complete in the kernel, so all of them wait in the accept queue when it
    goes on (SIGCONT) and it sees one readiness for them all, whatever the
    machine's load; otherwise how many arrive per epoll_wait is a race.
    """
    socks = []
    if frozen:
        os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            lab.sockets.append(sock)
            sock.setblocking(False)
            sock.connect_ex((HOST, server.port))
            socks.append(sock)
        _, writable, _ = select.select([], socks, [], 3.0)
    finally:
        if frozen:
            os.kill(server.proc.pid, signal.SIGCONT)
    if len(writable) < count:
        return f"only {len(writable)} of {count} connects completed"
    for sock in socks:
        send_all(sock, b"x")
    pending = set(socks)
    end = time.monotonic() + 1.0
    while pending and time.monotonic() < end:
        ready, _, _ = select.select(list(pending), [], [], 0.05)
        for sock in ready:
            with contextlib.suppress(BlockingIOError):
                if sock.recv(16) == b"x":
                    pending.discard(sock)
    if pending:
        return f"{len(pending)} of {count} clients of a burst got no echo within 1 s"
    return None


def blocked_behind_slow_reader(lab: Lab, server: Server) -> str | None:
    """A client that stops reading must not delay another client's echo."""
    slow = lab.connect(server, rcvbuf=4 * KIB)
    flood(slow, 16 * MIB)
    other = lab.connect(server)
    send_all(other, b"ping\n")
    data, how = read_until(other, want=5, idle=1.0, deadline=2.0)
    if data != b"ping\n":
        return f"the other client read {data!r} ({how}) while one client was not reading"
    return None


# -- the table: mutant -> scenario ---------------------------------------------------------


@dataclass(frozen=True)
class Case:
    scenario: Callable[[Lab, Server], str | None]
    attempts: int = 1  # how many times the trigger is tried on the mutant before giving up
    slow: bool = False


CASES: dict[str, Case] = {
    "ignore_send_return": Case(flood_shut_read),
    "ignore_eof": Case(lambda lab, server: fd_released(lab, server, abort=False)),
    "err_hup_no_close": Case(lambda lab, server: fd_released(lab, server, abort=True)),
    "drop_pending_on_half_close": Case(
        lambda lab, server: flood_shut_read(lab, server, 4 * MIB, pace=0.0005), attempts=3, slow=True
    ),
    "et_no_drain": Case(burst_then_read, attempts=4),
    "stale_state_on_fd_reuse": Case(second_client_after_reset, attempts=3),
    "reset_kills": Case(reset_with_pending_output, attempts=3),
    "no_backpressure": Case(memory_under_flood, slow=True),
    "epollout_always": Case(idle_connection_cpu, attempts=3, slow=True),
    "blocking_accepted": Case(blocked_behind_slow_reader),
    "rdhup_early_close": Case(corked_half_close_exchange),
    "eagain_no_epollout": Case(flood_shut_read, slow=True),
    "emfile_spin": Case(emfile_cpu, attempts=3, slow=True),
    "shared_output_buffer": Case(second_client_beside_slow_reader),
    "never_close_after_half_close": Case(half_close_exchange),
    "et_accept_one": Case(lambda lab, server: connect_burst(lab, server, frozen=True)),
    "linger0_close": Case(half_close_exchange),
    "oneshot_no_rearm": Case(two_requests),
    "recv_truncation": Case(lambda lab, server: flood_shut_read(lab, server, 1 * MIB)),
    "strlen_echo": Case(binary_exchange),
    "eagain_as_eof": Case(two_requests),
}

MANIFEST_DEADLINE = 30.0  # seconds for all attempts on one mutant


def _params() -> list[object]:
    return [
        pytest.param(name, marks=[pytest.mark.slow] if CASES[name].slow else [], id=name) for name in NAMES
    ]


@pytest.mark.parametrize("name", _params())
def test_bug_manifests(lab: Lab, name: str) -> None:
    mutant = by_name(name)
    case = CASES[name]
    server = lab.start_mutant(mutant)
    end = time.monotonic() + MANIFEST_DEADLINE
    tried = 0
    while tried < case.attempts and server.alive() and time.monotonic() < end:
        tried += 1
        failure = case.scenario(lab, server)
        if failure is not None:
            print(f"{name}, attempt {tried}: {failure}")  # the bug showed
            return
    pytest.fail(
        f"{name} ({mutant.expected_property}, {mutant.default_mode}): no failure in {tried} attempt(s)"
    )


@pytest.mark.parametrize("name", _params())
def test_reference_passes_the_same_scenario(lab: Lab, name: str) -> None:
    mutant = by_name(name)
    server = lab.start_reference(mutant.default_mode)
    failure = CASES[name].scenario(lab, server)
    assert failure is None, f"the reference server ({mutant.default_mode}) fails {name}'s scenario: {failure}"
    assert server.alive()


# -- the catalogue itself --------------------------------------------------------------------


def test_every_mutant_has_a_scenario() -> None:
    assert set(CASES) == set(NAMES)


def test_catalogue_matches_the_modules() -> None:
    modules = {
        info.name for info in pkgutil.iter_modules(mutants_package.__path__) if not info.name.startswith("_")
    }
    assert set(NAMES) == modules
    assert len(NAMES) >= 17
    assert [entry.name for entry in CATALOGUE] == list(NAMES)
    for entry in CATALOGUE:
        module = importlib.import_module(entry.module)
        assert module.__doc__ and len(module.__doc__.strip()) > 100, entry.name
        assert not hasattr(module, "BUG"), "what a mutant is lives in catalogue.toml alone"
        assert issubclass(entry.server_class(), ReferenceServer)
        assert entry.expected_property in PROPERTIES
        assert entry.default_mode in ("lt", "et")
        with pytest.raises(AttributeError):
            entry.name = "x"  # type: ignore[misc]


def test_mutants_override_only_reference_methods() -> None:
    """A mutant overrides methods the reference has: a renamed reference method would orphan it."""
    for entry in CATALOGUE:
        module = importlib.import_module(entry.module)
        classes = [
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, ReferenceServer) and cls is not ReferenceServer
        ]
        assert len(classes) == 1, entry.name
        overridden = [name for name in vars(classes[0]) if callable(vars(classes[0])[name])]
        assert overridden, entry.name
        for method in overridden:
            assert hasattr(ReferenceServer, method), f"{entry.name}: {method} is not a ReferenceServer method"


def test_default_mode_goes_first_so_an_explicit_mode_wins() -> None:
    assert contract_argv("et", ["--port", "0"]) == ["--mode", "et", "--port", "0"]
    assert contract_argv("et", ["--mode", "lt"])[-2:] == ["--mode", "lt"]
    with pytest.raises(ValueError):
        contract_argv("both", [])


def test_listing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server_under_test.mutants"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == len(NAMES)
    for line, entry in zip(lines, CATALOGUE, strict=True):
        assert line.split()[:3] == [entry.name, entry.expected_property, entry.default_mode]


@pytest.mark.parametrize("name", NAMES)
def test_contract_listening_and_sigterm(lab: Lab, name: str) -> None:
    server = lab.start_mutant(by_name(name))
    assert server.port > 0
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=5.0) == 0
