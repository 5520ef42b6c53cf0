"""Start, watch and stop the server under test.

A server is a command template such as ``./server --port {port}``. With
``{port}`` in it the harness chooses the port and waits until the process
listens on it; without, the server picks one and announces it by printing a
line ``LISTENING host:port``.

Three things here exist because servers misbehave:

* Output is drained all the time by two threads into a bounded tail. A
  server that prints on every event (the seed's server does) would otherwise
  fill its pipe and block in ``write()``; the tail is what error messages show.
* The server runs in its own process group (``start_new_session``) and is
  stopped as a group, SIGTERM then SIGKILL: forked children go too. The child
  also asks the kernel to SIGKILL it when the harness dies
  (``PR_SET_PDEATHSIG``), so even a harness killed by SIGKILL leaves nothing.
* Readiness in ``{port}`` mode is read from the process's own socket table
  (psutil) rather than by connecting: a probe connection is a client, and a
  buggy server can already misbehave on it (the seed's server spins forever
  after the probe's EOF).
"""

from __future__ import annotations

import atexit
import ctypes
import os
import re
import resource
import shlex
import signal
import socket
import string
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from harness.model.errors import ServerDiedError, ServerStartError, UsageError

READY_TIMEOUT = 15.0
STOP_GRACE = 3.0
OUTPUT_TAIL_BYTES = 16 * 1024
TAIL_LINES = 12
LISTENING_LINE = re.compile(rb"LISTENING\s+\[?([0-9A-Za-z.:%-]*?)\]?:(\d+)\s*$")
# Ports for {port} templates come from below the kernel's ephemeral range, so
# client connections (which take ephemeral ports) never occupy one of them,
# split into a block per xdist worker so that workers never race for a port.
PORT_RANGE_START = 20000
PORT_BLOCK = 400
PR_SET_PDEATHSIG = 1
_ALLOWED_FIELDS = {"host", "port"}

_live: weakref.WeakSet[ServerProcess] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    for server in list(_live):
        server.stop()


atexit.register(_stop_all_at_exit)


@dataclass(frozen=True)
class ServerCommand:
    """A server command template; ``{host}`` and ``{port}`` are filled in at start."""

    template: str

    def __post_init__(self) -> None:
        if not self.template.strip():
            raise UsageError("the server command is empty; give a command such as './server --port {port}'")
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(self.template) if name is not None}
        except ValueError as exc:
            raise UsageError(f"cannot read the server command {self.template!r}: {exc}") from None
        unknown = fields - _ALLOWED_FIELDS
        if unknown:
            raise UsageError(
                f"the server command {self.template!r} uses {{{sorted(unknown)[0]}}}; only {{host}} and "
                "{port} are filled in (write {{ and }} for literal braces)"
            )
        try:
            shlex.split(self.template)
        except ValueError as exc:
            raise UsageError(f"cannot split the server command {self.template!r}: {exc}") from None

    @property
    def chooses_port(self) -> bool:
        """True when the harness picks the port (the template has ``{port}``)."""
        return "{port}" in self.template

    def argv(self, host: str, port: int | None) -> list[str]:
        return [part.format(host=host, port=port) for part in shlex.split(self.template)]


def reference_command(mode: str = "lt") -> str:
    """The bundled reference server, run by the interpreter running the harness."""
    return f"{shlex.quote(sys.executable)} -m server_under_test --host {{host}} --port 0 --mode {mode}"


class _OutputTail:
    """Keeps the last bytes a server printed, and notices its LISTENING line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tail = bytearray()
        self.total = 0
        self.listening: tuple[str, int] | None = None
        self.ready = threading.Event()

    def feed(self, chunk: bytes, look_for_listening: bool) -> None:
        with self._lock:
            self.total += len(chunk)
            self._tail += chunk
            if look_for_listening and self.listening is None:
                for line in self._tail.splitlines():
                    match = LISTENING_LINE.search(line)
                    if match:
                        self.listening = (match.group(1).decode() or "127.0.0.1", int(match.group(2)))
                        self.ready.set()
                        break
            if len(self._tail) > OUTPUT_TAIL_BYTES:
                del self._tail[: len(self._tail) - OUTPUT_TAIL_BYTES]

    def lines(self, count: int = TAIL_LINES) -> list[str]:
        with self._lock:
            text = self._tail.decode("utf-8", "replace")
        return text.splitlines()[-count:]


def _drain(pipe: int, tail: _OutputTail, look_for_listening: bool) -> None:
    while True:
        try:
            chunk = os.read(pipe, 65536)
        except OSError:
            break
        if not chunk:
            break
        tail.feed(chunk, look_for_listening)
    os.close(pipe)


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    digits = "".join(ch for ch in worker if ch.isdigit())
    return int(digits) if digits else 0


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str) -> int:
    """A free port in this worker's block, starting at a pid-dependent offset."""
    block_start = PORT_RANGE_START + _worker_index() * PORT_BLOCK
    offset = os.getpid() % PORT_BLOCK
    for i in range(PORT_BLOCK):
        port = block_start + (offset + i) % PORT_BLOCK
        if _port_is_free(host, port):
            return port
    raise ServerStartError(f"no free port in {block_start}..{block_start + PORT_BLOCK - 1} on {host}")


def _find_prctl() -> Callable[..., int] | None:
    # Resolved once in the parent: loading a library between fork and exec
    # of a threaded process can deadlock on the loader's lock.
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: the atexit handler still stops the server


_PRCTL = _find_prctl()


def terminate_with_parent() -> None:
    """For ``preexec_fn``: the child gets SIGTERM when the process that started it dies.

    A campaign's workers: a coordinator killed by SIGKILL leaves no worker
    searching on (each then stops its own server, which has the same guard).
    """
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _child_setup(nofile: int | None) -> None:
    """Runs in the child between fork and exec."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if nofile is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


class ServerProcess:
    """One server under test. Use as a context manager, or call start() and stop()."""

    def __init__(
        self,
        command: str | ServerCommand,
        *,
        host: str = "127.0.0.1",
        ready_timeout: float = READY_TIMEOUT,
        stop_grace: float = STOP_GRACE,
        nofile: int | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.command = command if isinstance(command, ServerCommand) else ServerCommand(command)
        self.host = host
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.nofile = nofile
        self.env = env
        self.cwd = cwd
        self.port: int | None = None
        self.popen: subprocess.Popen[bytes] | None = None
        self.output = _OutputTail()
        self.starts = 0
        self.started_at = 0.0
        self._threads: list[threading.Thread] = []

    # -- life cycle ---------------------------------------------------------

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        if self.port is None:
            raise ServerDiedError("the server has not been started")
        return (self.host, self.port)

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise ServerDiedError("the server has not been started")
        return self.popen.pid

    @property
    def argv(self) -> list[str]:
        return self.command.argv(self.host, self.port)

    def start(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            return
        self.output = _OutputTail()
        self.port = choose_port(self.host) if self.command.chooses_port else None
        argv = self.command.argv(self.host, self.port)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        nofile = self.nofile
        try:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
                preexec_fn=lambda: _child_setup(nofile),
                env=self.env,
                cwd=self.cwd,
            )
        except OSError as exc:
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            raise ServerStartError(
                f"cannot run the server command {shlex.join(argv)!r}: {exc.strerror or exc}. "
                "Check the program path and that it is executable."
            ) from exc
        finally:
            if self.popen is not None:
                os.close(out_w)
                os.close(err_w)
        self.starts += 1
        self.started_at = psutil.Process(self.popen.pid).create_time() if self.alive else time.time()
        _live.add(self)
        look = not self.command.chooses_port
        self._threads = [
            threading.Thread(
                target=_drain, args=(out_r, self.output, look), daemon=True, name="server-stdout"
            ),
            threading.Thread(
                target=_drain, args=(err_r, self.output, False), daemon=True, name="server-stderr"
            ),
        ]
        for thread in self._threads:
            thread.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        assert self.popen is not None
        while True:
            if self.popen.poll() is not None:
                time.sleep(0.05)  # let the drain threads take the last words
                raise ServerStartError(
                    self._start_failure(f"{describe_exit(self.popen.returncode)} before it was ready")
                )
            if self.command.chooses_port:
                if self._listening_on(self.address[1]):
                    return
            elif self.output.ready.wait(0):
                assert self.output.listening is not None
                self.host, self.port = self.output.listening
                return
            if time.monotonic() > deadline:
                what = (
                    f"is not listening on {self.host}:{self.port} after {self.ready_timeout:.1f} s"
                    if self.command.chooses_port
                    else f"has not printed a 'LISTENING host:port' line after {self.ready_timeout:.1f} s "
                    "(give the command a {port} placeholder if it does not announce its port)"
                )
                raise ServerStartError(self._start_failure(what))
            self.output.ready.wait(0.01)

    def _listening_on(self, port: int) -> bool:
        for proc in self.process_tree():
            try:
                for conn in proc.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                        return True
            except psutil.Error:
                continue
        return False

    def _start_failure(self, what: str) -> str:
        return f"The server command {shlex.join(self.argv)!r} {what}. " + self.last_words()

    def last_words(self) -> str:
        lines = self.output.lines()
        if not lines:
            return "It printed nothing."
        return "Its last output:\n    " + "\n    ".join(lines)

    def process_tree(self) -> list[psutil.Process]:
        if self.popen is None:
            return []
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def ensure_alive(self) -> None:
        if self.popen is None:
            raise ServerDiedError("the server has not been started")
        code = self.popen.poll()
        if code is not None:
            time.sleep(0.05)
            raise ServerDiedError(
                f"The server {shlex.join(self.argv)!r} {describe_exit(code)}. " + self.last_words()
            )

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> int | None:
        """SIGTERM the process group, SIGKILL it after the grace period; the exit status."""
        popen = self.popen
        if popen is None:
            return None
        _live.discard(self)
        pgid = popen.pid  # start_new_session: the group id is the leader's pid
        if popen.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                popen.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                popen.wait()
        # Forked children may outlive the leader (and ignore SIGTERM). Linux
        # never hands out a pid that is still some group's id, so members
        # of the group that started after our server are ours.
        for proc in _group_members(pgid, self.started_at):
            try:
                proc.kill()
            except psutil.Error:
                pass
        for thread in self._threads:
            thread.join(1.0)
        return popen.returncode

    @property
    def ignored_sigterm(self) -> bool:
        return self.popen is not None and self.popen.returncode == -signal.SIGKILL


def _group_members(pgid: int, started_at: float) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["create_time"] >= started_at - 1:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
