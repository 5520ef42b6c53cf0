"""Process control and socket helpers for the process-level tests of the reference server.

Everything here talks to a real server subprocess over real sockets on 127.0.0.1.
Two rules shape it:

* every subprocess is registered with a :class:`Spawner` *before* anything can
  fail, and the spawner kills it by pid when the test ends, whatever happened;
* every wait has a deadline, and every flood a byte cap: a broken server makes
  a test fail, never hang.

Deadlines are generous on purpose: these tests run under ``pytest -n auto`` on
a small machine, next to other suites.
"""

from __future__ import annotations

import contextlib
import os
import random
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

# How long a server may take to print LISTENING (a cold Python start on a loaded machine).
STARTUP_TIMEOUT = 30.0
# How long one echo, one EOF, one exit may take before the test calls it a failure.
IO_TIMEOUT = 20.0
# How long the send side must make no progress before a flooding client calls it blocked.
BLOCKED_QUIET = 0.5
CHUNK = 64 * 1024


class ServerDied(AssertionError):
    """The server process exited when it should not have."""


def _server_env() -> dict[str, str]:
    env = dict(os.environ)
    # The package need not be installed: the subprocess imports it from the checkout.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env.pop("PYTHONUNBUFFERED", None)
    return env


@dataclass
class ServerProcess:
    """A started server: its process, the port it listens on, and psutil's view of it."""

    popen: subprocess.Popen[bytes]
    port: int
    ps: psutil.Process = field(init=False)

    def __post_init__(self) -> None:
        self.ps = psutil.Process(self.popen.pid)

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def assert_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise ServerDied(
                f"server pid {self.popen.pid} exited with {code}; stderr: {self.stderr_tail()!r}"
            )

    def stderr_tail(self) -> str:
        """What the (dead) server wrote on stderr, for failure messages; never blocks."""
        if self.popen.poll() is None or self.popen.stderr is None:
            return "<still running>"
        with contextlib.suppress(OSError, ValueError):
            return self.popen.stderr.read()[-2000:].decode(errors="replace")
        return "<unreadable>"

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def cpu_share_over(self, seconds: float) -> float:
        """Fraction of one core the server used over ``seconds`` of wall time."""
        cpu0, t0 = self.cpu_seconds(), time.monotonic()
        time.sleep(seconds)  # a measurement window, not a synchronisation
        cpu1, t1 = self.cpu_seconds(), time.monotonic()
        return (cpu1 - cpu0) / (t1 - t0)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def num_fds(self) -> int:
        return int(self.ps.num_fds())


class Spawner:
    """Starts subprocesses and kills every one of them, by pid, in :meth:`close`."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []
        self._threads: list[threading.Thread] = []

    def popen(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            argv, cwd=REPO_ROOT, env=_server_env(), **kwargs
        )
        self._procs.append(proc)
        return proc

    def adopt_thread(self, thread: threading.Thread) -> None:
        """A pipe-draining thread: joined after its process is killed."""
        self._threads.append(thread)

    def server(
        self,
        mode: str = "lt",
        *extra_args: str,
        preexec_fn: Callable[[], None] | None = None,
    ) -> ServerProcess:
        """Start ``python -m server_under_test`` on an ephemeral port; return once it listens."""
        argv = [sys.executable, "-m", "server_under_test", "--port", "0", "--mode", mode, *extra_args]
        proc = self.popen(argv, bufsize=0, preexec_fn=preexec_fn)
        line = _read_line(proc, STARTUP_TIMEOUT)
        prefix = "LISTENING "
        if not line.startswith(prefix):
            raise AssertionError(f"expected a LISTENING line from {argv}, got {line!r}")
        host, _, port = line[len(prefix) :].rpartition(":")
        assert host == HOST, f"server listens on {host!r}, expected {HOST}"
        return ServerProcess(proc, int(port))

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=IO_TIMEOUT)
        for thread in self._threads:
            thread.join(timeout=IO_TIMEOUT)
        for proc in self._procs:
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line of ``proc``'s stdout, within ``timeout`` seconds."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line on stdout within {timeout} s (got {data!r})")
            if not sel.select(remaining):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                stderr = b""
                if proc.stderr is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=IO_TIMEOUT)
                    stderr = proc.stderr.read()
                raise AssertionError(
                    f"server exited ({proc.poll()}) before printing a line; stdout {data!r}, "
                    f"stderr {stderr[-2000:]!r}"
                )
            data += chunk
    return data.split(b"\n", 1)[0].decode()


# -- the seed server -----------------------------------------------------------


@dataclass
class SeedProcess:
    """The seed server, with a thread draining its chatty stdout and counting lines."""

    popen: subprocess.Popen[bytes]
    port: int
    ps: psutil.Process
    _lines: int = 0
    _first_line: bytes = b""
    _ready: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def lines(self) -> int:
        """Lines the server has printed (and flushed) so far."""
        with self._lock:
            return self._lines

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def drain(self) -> None:
        """Thread body: read stdout until EOF (the process died), counting newlines."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        pending = b""
        try:
            while chunk := os.read(fd, CHUNK):
                with self._lock:
                    self._lines += chunk.count(b"\n")
                if not self._ready.is_set():
                    pending += chunk
                    if b"\n" in pending:
                        self._first_line = pending.split(b"\n", 1)[0]
                        self._ready.set()
        except OSError:
            pass
        finally:
            self._ready.set()  # wake the starter: the process is gone

    def wait_ready(self, timeout: float) -> bool:
        """True once the server printed its start-up line, False if it exited first."""
        if not self._ready.wait(timeout):
            raise AssertionError(f"seed server printed nothing within {timeout} s")
        return bool(self._first_line)


def free_port() -> int:
    """A port that was free a moment ago (the seed server cannot announce port 0)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def start_seed(spawner: Spawner, attempts: int = 5) -> SeedProcess:
    """Start the seed server on a free port; retry if another process took the port meanwhile."""
    failures = []
    for _ in range(attempts):
        port = free_port()
        argv = [sys.executable, "-m", "server_under_test.seed_server", "--port", str(port)]
        proc = spawner.popen(argv, bufsize=0)
        seed = SeedProcess(proc, port, psutil.Process(proc.pid))
        thread = threading.Thread(target=seed.drain, name=f"drain-seed-{proc.pid}", daemon=True)
        spawner.adopt_thread(thread)
        thread.start()
        if seed.wait_ready(STARTUP_TIMEOUT) and str(port).encode() in seed._first_line:
            return seed
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=IO_TIMEOUT)
        failures.append((port, proc.poll()))
    raise AssertionError(f"the seed server did not start: (port, exit code) per attempt: {failures}")


# -- clients ---------------------------------------------------------------------


def connect(
    address: tuple[str, int],
    *,
    rcvbuf: int | None = None,
    nodelay: bool = False,
    timeout: float = IO_TIMEOUT,
) -> socket.socket:
    """A blocking client socket with a timeout; ``rcvbuf`` is set before connect (it caps the window)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER on and a zero timeout: the kernel sends RST, not FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def recv_exactly(sock: socket.socket, n: int, timeout: float = IO_TIMEOUT) -> bytes:
    """Exactly ``n`` bytes, or an AssertionError saying how many came before EOF or the deadline."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"only {len(buf)} of {n} bytes echoed within {timeout} s")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(CHUNK, n - len(buf)))
        except TimeoutError:
            continue
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {n} echoed bytes")
        buf += chunk
    return bytes(buf)


def recv_until_eof(sock: socket.socket, timeout: float = IO_TIMEOUT, limit: int = 64 * 1024 * 1024) -> bytes:
    """Everything until EOF; AssertionError on a reset, the deadline, or more than ``limit`` bytes."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no EOF within {timeout} s ({len(buf)} bytes came meanwhile)")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(CHUNK)
        except TimeoutError:
            continue
        except ConnectionResetError as exc:
            raise AssertionError(f"connection reset after {len(buf)} bytes, expected EOF") from exc
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > limit:
            raise AssertionError(f"more than {limit} bytes and still no EOF")


def echo(sock: socket.socket, payload: bytes, timeout: float = IO_TIMEOUT) -> None:
    """Send ``payload`` and check that exactly it comes back."""
    sock.sendall(payload)
    assert_same_bytes(payload, recv_exactly(sock, len(payload), timeout))


def assert_same_bytes(expected: bytes, got: bytes) -> None:
    """Byte equality with a short message: pytest's own diff of megabytes takes minutes."""
    if expected == got:
        return
    first = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), None)
    if first is None:
        raise AssertionError(f"expected {len(expected)} bytes, got {len(got)} (one is a prefix of the other)")
    raise AssertionError(
        f"expected {len(expected)} bytes, got {len(got)}; first difference at offset {first}: "
        f"expected {expected[first : first + 16]!r}, got {got[first : first + 16]!r}"
    )


def flood_until_blocked(
    sock: socket.socket,
    *,
    cap: int,
    fill: bytes = b"F",
    quiet: float = BLOCKED_QUIET,
    timeout: float = IO_TIMEOUT,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Send without reading until ``send`` made no progress for ``quiet`` s, or ``cap`` bytes went out.

    Returns the bytes sent. The socket is left non-blocking. Bounded both in
    bytes (``cap``) and in time (``timeout``).
    """
    block = memoryview(fill * (CHUNK // len(fill)))
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + timeout
    while sent < cap and time.monotonic() < deadline:
        try:
            sent += sock.send(block[: min(CHUNK, cap - sent)])
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], quiet)
            if not writable:
                break
            continue
        if on_progress is not None:
            on_progress(sent)
    return sent


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(interval)


def server_side_sockets(ps: psutil.Process, server_port: int, client_port: int) -> list[str]:
    """TCP states of the server's own sockets for the connection from ``client_port``."""
    return [
        conn.status
        for conn in ps.net_connections(kind="tcp")
        if conn.laddr and conn.laddr.port == server_port and conn.raddr and conn.raddr.port == client_port
    ]


@contextlib.contextmanager
def clients(address: tuple[str, int], n: int, **kwargs: object) -> Iterator[list[socket.socket]]:
    """``n`` connected clients, all closed on exit."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            socks.append(connect(address, **kwargs))  # type: ignore[arg-type]
        yield socks
    finally:
        for sock in socks:
            sock.close()
