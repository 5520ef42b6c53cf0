"""Run one script against a live server and judge every property.

One :class:`Checker` serves many examples with one server process: it takes
the server's baseline once (after a warm-up connection, so that fds a server
opens lazily on its first client are not counted as a leak), and restarts the
server after any example that broke it, so that examples stay independent and
a failure replays the same way while Hypothesis shrinks it.

Per example, in order: run the script (the executor settles it); judge the
transcript; check the server is alive and echoes a fresh probe connection
(``survives``); wait for the fd count to come back to the baseline
(``cleanup``); check it is not spinning (``idle-cpu``, also measured with the
script's connections open and idle); compare RSS growth to the bound
(``bounded-memory``).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.drive.executor import Client, Connections, Executor
from harness.drive.observe import Descriptors, ServerObserver, listen_backlog, server_send_queue
from harness.drive.process import ServerProcess
from harness.model.errors import ExampleAbandoned, ServerDiedError, ServerStartError
from harness.model.limits import DEFAULT_LIMITS, Limits
from harness.model.oracle import NO_CROSSTALK
from harness.model.properties import (
    BOUNDED_MEMORY,
    CLEANUP,
    IDLE_CPU,
    SURVIVES,
    Violation,
    judge_transcript,
)
from harness.model.script import Script
from harness.model.transcript import AcceptQueue, Transcript
from harness.model.wording import plural
from harness.run import cleanup, memory

PROBE_MESSAGE = b"epoll-harness probe\n"
CAPTURE_TAIL = 0.05  # segments in flight when a script returns reach the capture within this
SETTLE_ROUNDS = 3
# Fresh connections opened at once after each script (one per connection of the script, up to this).
MAX_PROBES = 8
# A thread seen asleep in the same write twice this far apart is blocked in it.
STALL_RESAMPLE = 0.02
# Runnable (on a CPU or queued for one) this much of an idle window: a busy loop, however loaded the host.
SPIN_RUNNABLE_FRACTION = 0.9


@dataclass
class Outcome:
    script: Script
    violations: list[Violation]
    transcript: Transcript
    evidence: set[str] = field(default_factory=set)
    seconds: float = 0.0
    diagnostics: list[str] = field(default_factory=list)  # seen, worth a line, not a violation
    non_strict: list[Violation] = field(default_factory=list)  # legal but impolite: reported, never failed

    @property
    def ok(self) -> bool:
        return not self.violations


class Checker:
    """Judges scripts against a server: a ServerProcess it owns, or an attached address."""

    def __init__(
        self,
        server: ServerProcess | None = None,
        *,
        address: tuple[str, int] | None = None,
        pid: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
        capture_dir: Path | None = None,
    ) -> None:
        if server is None and address is None:
            raise ValueError("give a ServerProcess or an address")
        self.server = server
        self._address = address
        self._pid = pid
        self.limits = limits
        # With a directory, every script runs under a packet capture: judged on
        # the wire (graceful-fin) and saved there as NNNNN.pcap.
        self.capture_dir = capture_dir
        self.captures = 0
        # Scripts still running past this moment are abandoned between steps (see Executor.run).
        self.give_up_at: float | None = None
        self.observer: ServerObserver | None = None
        self.fd_baseline = 0
        self.restarts = 0
        self.abandoned = 0  # scripts cut off between steps because the time was up (each a restart)
        self._skip: frozenset[str] = frozenset()
        self._dirty = False  # a skipped property looked broken: restart after this example
        self._fds_waited = 0.0  # how long the last cleanup wait took (see harness.run.cleanup)
        self._checks: list[Violation] = []
        self._diagnostics: list[str] = []
        self._memory_before: int | None = None  # the server's memory before the script's first flood
        self._baseline_descriptors = Descriptors()
        self._backlog: int | None = None  # the server's listen() backlog, asked of ss once
        self._probe_ports: list[int] = []  # the client ports of this example's probe connections

    # -- the server's life --------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        if self.server is not None:
            return self.server.address
        assert self._address is not None
        return self._address

    @property
    def observes_process(self) -> bool:
        return self.server is not None or self._pid is not None

    def start(self) -> None:
        if self.server is not None:
            self.server.start()
            self._pid = self.server.pid
        if self._pid is not None:
            self.observer = ServerObserver(self._pid)
        self._take_baseline()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def restart(self) -> None:
        if self.server is None:
            return  # an attached server is not ours to restart
        self.restarts += 1
        self.server.restart()
        self._pid = self.server.pid
        self.observer = ServerObserver(self._pid)
        self._take_baseline()

    def __enter__(self) -> Checker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _take_baseline(self) -> None:
        # A warm-up client first: runtimes open fds lazily (an epoll fd, a
        # timer fd) on the first connection; they are not leaks.
        problem = self.probe()
        if problem is not None:
            raise ServerStartError(f"the server at {self.address} is up but does not echo: {problem}")
        if self.observer is not None:
            count = self.observer.fd_count()
            for _ in range(SETTLE_ROUNDS):  # the probe's fd may take a moment to go
                time.sleep(0.01)
                count = min(count, self.observer.fd_count())
            self.fd_baseline = count
            self._baseline_descriptors = self.observer.descriptors()

    def ensure_running(self) -> None:
        if self.server is not None and not self.server.alive:
            self.restart()

    # -- one example -------------------------------------------------------

    def check(self, script: Script, skip: frozenset[str] = frozenset()) -> Outcome:
        """Run ``script`` and judge it. Properties in ``skip`` (already known broken) are not
        waited for: a leak or a busy loop then only restarts the server, so that a search for
        other bugs does not pay a cleanup deadline or an idle window on every example."""
        started = time.monotonic()
        try:
            if self.capture_dir is None:
                executor = self.begin(skip)
                outcome = self.judge(script, executor.run(script))
            else:
                self.captures += 1
                outcome, _ = self.check_captured(script, self.capture_dir / f"{self.captures:05d}.pcap", skip)
        except ExampleAbandoned:
            # Half a script leaves the server in a state no baseline describes: start afresh.
            self.abandoned += 1
            if self.server is not None:
                self.restart()
            raise
        outcome.seconds = time.monotonic() - started
        return outcome

    def check_captured(
        self, script: Script, pcap: Path, skip: frozenset[str] = frozenset()
    ) -> tuple[Outcome, int]:
        """``check`` under a packet capture saved to ``pcap``, judged on the wire too; the packet count.

        The capture covers the script and the probes after it (their closes are
        graceful closes too), and stops before any restart of the server.
        """
        from harness.drive.wire import (
            CAPTURE_INCOMPLETE,
            ZERO_WINDOW_EVIDENCE,
            Capture,
            judge_graceful_fin,
            zero_window_seen,
        )

        executor = self.begin(skip)
        capture = Capture(self.address[1])
        with capture:
            transcript = executor.run(script)
            violations = self._violations(transcript)
            time.sleep(CAPTURE_TAIL)
        capture.save(pcap)
        segments = capture.segments()
        if zero_window_seen(segments):
            transcript.evidence.add(ZERO_WINDOW_EVIDENCE)
        if capture.dropped:
            # A lost forged RST or a lost stretch of a flow reads as a reset by
            # the server: an incomplete capture is not judged at all.
            transcript.evidence.add(CAPTURE_INCOMPLETE)
            wire = []
        else:
            wire = judge_graceful_fin(segments, frozenset(self._probe_ports))
        outcome = self._conclude(script, transcript, violations + wire)
        return outcome, len(capture.packets)

    def begin(self, skip: frozenset[str] = frozenset()) -> Executor:
        """Get ready for one script and return the executor to play it (a step at a time, if need be)."""
        self.ensure_running()
        self._checks = []
        self._skip = skip
        self._dirty = False
        self._diagnostics = []
        self._probe_ports = []
        self._memory_before = None
        executor = Executor(self.address, self.limits, self._checkpoint, self)
        executor.give_up_at = self.give_up_at
        return executor

    def judge(self, script: Script, transcript: Transcript) -> Outcome:
        """Judge a settled transcript and the server after it; restart the server if it broke."""
        return self._conclude(script, transcript, self._violations(transcript))

    def _violations(self, transcript: Transcript) -> list[Violation]:
        violations = judge_transcript(transcript) + self._checks
        return violations + self._after_script(transcript)

    def _conclude(self, script: Script, transcript: Transcript, found: list[Violation]) -> Outcome:
        violations = [v for v in found if v.strict]
        outcome = Outcome(script, violations, transcript, set(transcript.evidence))
        outcome.diagnostics = self._diagnostics
        outcome.non_strict = [v for v in found if not v.strict]
        if (violations or self._dirty) and self.server is not None:
            self.restart()
        return outcome

    def _checkpoint(self, name: str, executor: Connections) -> None:
        if self.observer is None:
            return
        if name == "before-flood":
            if self._memory_before is None and BOUNDED_MEMORY not in self._skip:
                self._memory_before = self.observer.memory()
        elif name == "flood":
            self._note_send_queues(executor)
            if self._memory_before is not None:
                self._checks += memory.judge_after_flood(
                    executor, self.observer, self.address[1], self._memory_before, self.limits
                )
        elif name == "quiescent":
            open_count = sum(1 for c in executor.clients.values() if not c.closed)
            busy = None if IDLE_CPU in self._skip else self._busy_fraction()
            if busy is not None:
                self._checks.append(
                    Violation(
                        IDLE_CPU,
                        f"the server used {busy:.0%} of a CPU over {self.limits.idle_window:.2f} s with "
                        f"{plural(open_count, 'idle connection')} open and nothing to send (a busy loop)",
                    )
                )

    # -- what the executor asks while a client waits (harness.drive.executor.ServerWatch) --

    def quiescent(self) -> bool:
        """The server can do nothing more without new input (see :meth:`ServerObserver.quiescent`)."""
        return self.observer is not None and self.observer.quiescent(self.address[1])

    def accept_queue(self) -> AcceptQueue | None:
        """The server's listen backlog now (see :meth:`ServerObserver.accept_queue`)."""
        if self.observer is None:
            return None
        if self._backlog is None:
            self._backlog = listen_backlog(self.address[1])
        return self.observer.accept_queue(self.address[1], self._backlog)

    def caught_up(self, *, first_look: bool = False) -> bool:
        """The server has read all it was sent and waits (see :meth:`ServerObserver.caught_up`)."""
        return self.observer is not None and self.observer.caught_up(self.address[1], first_look=first_look)

    def asleep(self) -> bool:
        """The server sleeps until an event comes (see :meth:`ServerObserver.asleep`)."""
        return self.observer is not None and self.observer.asleep()

    def asleep_between_looks(self) -> bool:
        """The server slept through the last two caught_up looks (see ServerObserver)."""
        return self.observer is not None and self.observer.asleep_between_looks()

    def stopped_reading(self, client: Client) -> bool:
        """The server holds ``client``'s bytes unread while asleep for good (see ServerObserver)."""
        return self.observer is not None and self.observer.stopped_reading(self.address[1], client.port)

    def blocked_on(self, executor: Connections, stalled: Client) -> str | None:
        """A server thread asleep in a write to another client's socket, twice STALL_RESAMPLE apart.

        The one sign of a server blocked on a client that does not read, what
        that client sent whatever (see :func:`harness.drive.observe.blocked_writes`);
        the same write seen twice is not a write on its way through.
        """
        if self.observer is None:
            return None
        first = self.observer.blocked_writes()
        if not first:
            return None
        time.sleep(STALL_RESAMPLE)
        by_port = {c.port: c.conn for c in executor.clients.values()}
        for pid, writes in self.observer.blocked_writes().items():
            for write in writes:
                if write not in first.get(pid, ()):
                    continue
                port = self.observer.peer_port(pid, write.fd)
                if port is None or port == stalled.port:
                    continue
                who = f"connection {by_port[port]!r}" if port in by_port else f"the client on port {port}"
                return f"the server sat in a blocking {write.call}() on fd {write.fd}, {who}'s socket"
        return None

    def _note_send_queues(self, executor: Connections) -> None:
        assert self._pid is not None
        port = self.address[1]
        for client in executor.clients.values():
            if client.flooded and not client.closed:
                queued = server_send_queue(self._pid, port, client.port)
                if queued:
                    executor.transcript.evidence.add("server send queue non-empty after a flood")
                    if queued >= 64 * 1024:
                        executor.transcript.evidence.add(
                            "server send queue held >= 64 KiB (send() hit EAGAIN)"
                        )

    def _busy_fraction(self) -> float | None:
        """The fraction of a core the server takes (or wants) if it spins while it should be idle.

        CPU time above ``idle_cpu_fraction`` is a busy loop. But what a
        spinning process *gets* depends on the machine's load (53 % on a
        loaded two-core host), so a loop is also recognised by the time it was
        *runnable*, on a CPU or waiting in the run queue
        (``/proc/PID/task/*/schedstat``): nearly all of the window for a busy
        loop whatever else runs, while a server with a little work left (or
        one that is exiting) is runnable only for that work and its wait.
        """
        assert self.observer is not None
        if not self.observer.looks_busy():
            return None
        cpu_before = self.observer.usage().cpu_seconds
        started = time.monotonic()
        runnable = _runnable_fraction(self.observer, self.limits.idle_window)
        elapsed = max(time.monotonic() - started, 1e-6)
        cpu = (self.observer.usage().cpu_seconds - cpu_before) / elapsed
        if runnable is not None and runnable >= SPIN_RUNNABLE_FRACTION:
            return max(cpu, runnable)
        return cpu if cpu > self.limits.idle_cpu_fraction else None

    def _after_script(self, transcript: Transcript) -> list[Violation]:
        found: list[Violation] = []
        if self.server is not None and not self.server.alive:
            try:
                self.server.ensure_alive()
            except ServerDiedError as exc:
                return [Violation(SURVIVES, str(exc))]
        watch_fds = self.observer is not None and CLEANUP not in self._skip
        count = self._wait_fds() if watch_fds else 0
        waited = self._fds_waited
        # The probes come once the script's descriptors are free, so that they
        # take those numbers. Probing earlier (on a loaded machine the server
        # may not have handled the last reset yet) hands a freed descriptor and
        # the state kept on it to the next script's first connection instead,
        # where it is neither recognised nor replays.
        probe_violation = self._probe_after(transcript)
        if probe_violation is not None:
            return [probe_violation]
        if self.observer is None:
            return found
        if not watch_fds:
            self._dirty |= self.observer.fd_count() > self.fd_baseline
        elif count > self.fd_baseline or self._wait_fds() > self.fd_baseline:
            verdict = cleanup.judge(
                self.observer,
                transcript,
                self.address,
                self.fd_baseline,
                self._baseline_descriptors,
                waited,
                self.limits,
            )
            if verdict.violation is not None:
                found.append(verdict.violation)
            if verdict.diagnostic is not None:
                self._diagnostics.append(verdict.diagnostic)
            if verdict.new_baseline is not None:
                self.fd_baseline = verdict.new_baseline
                self._baseline_descriptors = self.observer.descriptors()
        if IDLE_CPU in self._skip:
            self._dirty |= self.observer.looks_busy()
            busy = None
        else:
            busy = self._busy_fraction()
        if busy is not None:
            found.append(
                Violation(
                    IDLE_CPU,
                    f"after every connection closed the server used {busy:.0%} of a CPU over "
                    f"{self.limits.idle_window:.2f} s (a busy loop)",
                )
            )
        return found

    def _wait_fds(self) -> int:
        assert self.observer is not None
        started = time.monotonic()
        count = self.observer.wait_fds(self.fd_baseline, self.limits.cleanup_timeout, self.address[1])
        self._fds_waited = time.monotonic() - started
        return count

    def _probe_after(self, transcript: Transcript) -> Violation | None:
        """Fresh connections after the script, all open at once, each must echo its own message.

        As many as the script had connections (up to :data:`MAX_PROBES`): the
        kernel hands out the lowest free descriptors, so between them they
        take the numbers the script's connections freed, and a server that
        kept per-fd state (output still queued for a client that reset) hands
        it to one of them. That is caught here, in the script that caused it,
        rather than in whichever later script happens to get the descriptor,
        where it would neither be recognised nor replay.
        """
        count = min(max(1, len(transcript.client_ports)), MAX_PROBES)
        messages = [PROBE_MESSAGE] + [b"epoll-harness probe %d\n" % i for i in range(1, count)]
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        socks: list[socket.socket] = []
        try:
            for message in messages:
                sock = socket.socket(family, socket.SOCK_STREAM)
                socks.append(sock)
                sock.settimeout(self.limits.connect_timeout)
                sock.connect(self.address)
                self._probe_ports.append(sock.getsockname()[1])
                sock.settimeout(self.limits.stall_timeout)
                sock.sendall(message)
            for i, (sock, message) in enumerate(zip(socks, messages, strict=True)):
                got = b""
                while len(got) < len(message):
                    chunk = sock.recv(len(message) - len(got))
                    if not chunk:
                        return self._probe_violation(f"the server closed the connection after {got!r}")
                    got += chunk
                if got != message:
                    pairs = enumerate(zip(got, message, strict=True))
                    offset = next((k for k, (a, b) in pairs if a != b), len(got))
                    others = {j: m for j, m in enumerate(messages) if j != i}
                    source = transcript.oracle.sender_of(got[offset:])
                    if source is None:
                        source = next((f"probe {j}" for j, m in others.items() if got[offset:] in m), None)
                    if source is not None:
                        return Violation(
                            NO_CROSSTALK,
                            f"a fresh connection opened after the script received bytes that connection "
                            f"{source!r} sent (state kept from a closed connection?): sent {message!r}, "
                            f"received {got!r}",
                        )
                    return self._probe_violation(f"sent {message!r}, received {got!r}")
        except TimeoutError:
            return self._probe_violation(f"no echo within {self.limits.stall_timeout:.1f} s")
        except OSError as exc:
            return self._probe_violation(f"{type(exc).__name__}: {exc.strerror or exc}")
        finally:
            for sock in socks:
                sock.close()
        return None

    @staticmethod
    def _probe_violation(problem: str) -> Violation:
        return Violation(SURVIVES, f"a fresh connection after the script failed: {problem}")

    def probe(self) -> str | None:
        """Echo one short message on a fresh connection; a description of what failed, or None."""
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.limits.connect_timeout)
                sock.connect(self.address)
                sock.settimeout(self.limits.stall_timeout)
                sock.sendall(PROBE_MESSAGE)
                got = b""
                while len(got) < len(PROBE_MESSAGE):
                    chunk = sock.recv(4096)
                    if not chunk:
                        return f"the server closed the connection after echoing {got!r}"
                    got += chunk
                if got != PROBE_MESSAGE:
                    return f"sent {PROBE_MESSAGE!r}, received {got!r}"
        except TimeoutError:
            return f"no echo within {self.limits.stall_timeout:.1f} s"
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror or exc}"
        return None


def _runnable_fraction(observer: ServerObserver, window: float) -> float | None:
    """Time the server's threads were runnable (on a CPU or queued for one) over ``window``, per second.

    None when a thread's ``schedstat`` cannot be read (a kernel without
    CONFIG_SCHED_INFO, or the process went away).
    """
    before = _runnable_seconds(observer)
    started = time.monotonic()
    time.sleep(window)
    after = _runnable_seconds(observer)
    if before is None or after is None:
        return None
    return max(0.0, after - before) / max(time.monotonic() - started, 1e-6)


def _runnable_seconds(observer: ServerObserver) -> float | None:
    total = 0
    read = 0
    for proc in observer.tree():
        tasks = f"/proc/{proc.pid}/task"
        try:
            tids = os.listdir(tasks)
        except OSError:
            continue  # the process is gone
        for tid in tids:
            try:
                with open(f"{tasks}/{tid}/schedstat") as fh:
                    on_cpu, waiting = fh.read().split()[:2]
            except (OSError, ValueError):
                continue  # the thread is gone, or no schedstat here
            total += int(on_cpu) + int(waiting)
            read += 1
    return total / 1e9 if read else None
