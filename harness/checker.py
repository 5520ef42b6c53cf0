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

import socket
import time
from dataclasses import dataclass, field

from harness.errors import ServerDiedError, ServerStartError
from harness.executor import Executor, Transcript
from harness.limits import DEFAULT_LIMITS, Limits
from harness.observe import ServerObserver, server_send_queue
from harness.process import ServerProcess
from harness.properties import (
    BOUNDED_MEMORY,
    CLEANUP,
    IDLE_CPU,
    SURVIVES,
    Violation,
    judge_transcript,
)
from harness.script import Script

PROBE_MESSAGE = b"epoll-harness probe\n"
SETTLE_ROUNDS = 3


@dataclass
class Outcome:
    script: Script
    violations: list[Violation]
    transcript: Transcript
    evidence: set[str] = field(default_factory=set)
    seconds: float = 0.0

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
    ) -> None:
        if server is None and address is None:
            raise ValueError("give a ServerProcess or an address")
        self.server = server
        self._address = address
        self._pid = pid
        self.limits = limits
        self.observer: ServerObserver | None = None
        self.fd_baseline = 0
        self.restarts = 0
        self._checks: list[Violation] = []

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

    def ensure_running(self) -> None:
        if self.server is not None and not self.server.alive:
            self.restart()

    # -- one example -------------------------------------------------------

    def check(self, script: Script) -> Outcome:
        started = time.monotonic()
        self.ensure_running()
        self._checks = []
        rss_before = self.observer.rss() if self.observer else 0
        self._rss_peak = rss_before
        executor = Executor(self.address, self.limits, self._checkpoint)
        transcript = executor.run(script)
        violations = judge_transcript(transcript) + self._checks
        violations += self._after_script(transcript, rss_before)
        outcome = Outcome(script, violations, transcript, set(transcript.evidence))
        if violations and self.server is not None:
            self.restart()
        outcome.seconds = time.monotonic() - started
        return outcome

    def _checkpoint(self, name: str, executor: Executor) -> None:
        if self.observer is None:
            return
        if name == "flood":
            self._rss_peak = max(self._rss_peak, self.observer.rss())
            self._note_send_queues(executor)
        elif name == "quiescent":
            self._rss_peak = max(self._rss_peak, self.observer.rss())
            open_count = sum(1 for c in executor.clients.values() if not c.closed)
            busy = self._busy_fraction()
            if busy is not None:
                self._checks.append(
                    Violation(
                        IDLE_CPU,
                        f"the server used {busy:.0%} of a CPU over {self.limits.idle_window:.2f} s with "
                        f"{open_count} idle connection(s) open and nothing to send (a busy loop)",
                    )
                )

    def _note_send_queues(self, executor: Executor) -> None:
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
        """The CPU fraction if the server spins while it should be idle, else None."""
        assert self.observer is not None
        if not self.observer.looks_busy():
            return None
        fraction = self.observer.cpu_fraction(self.limits.idle_window)
        return fraction if fraction > self.limits.idle_cpu_fraction else None

    def _after_script(self, transcript: Transcript, rss_before: int) -> list[Violation]:
        found: list[Violation] = []
        if self.server is not None and not self.server.alive:
            try:
                self.server.ensure_alive()
            except ServerDiedError as exc:
                return [Violation(SURVIVES, str(exc))]
        problem = self.probe()
        if problem is not None:
            return [Violation(SURVIVES, f"a fresh connection after the script failed: {problem}")]
        if self.observer is None:
            return found
        count = self.observer.wait_fds(self.fd_baseline, self.limits.cleanup_timeout)
        if count > self.fd_baseline:
            found.append(Violation(CLEANUP, self._leak_message(count)))
        busy = self._busy_fraction()
        if busy is not None:
            found.append(
                Violation(
                    IDLE_CPU,
                    f"after every connection closed the server used {busy:.0%} of a CPU over "
                    f"{self.limits.idle_window:.2f} s (a busy loop)",
                )
            )
        growth = self._rss_peak - rss_before
        if growth > self.limits.memory_bound:
            found.append(
                Violation(
                    BOUNDED_MEMORY,
                    f"RSS grew by {growth / 2**20:.1f} MiB while clients flooded without reading "
                    f"(bound {self.limits.memory_bound / 2**20:.1f} MiB)",
                )
            )
        return found

    def _leak_message(self, count: int) -> str:
        assert self.observer is not None
        stuck = [s for s in self.observer.sockets() if s.status == "CLOSE_WAIT"]
        text = (
            f"{count - self.fd_baseline} fd(s) still open {self.limits.cleanup_timeout:.1f} s after the "
            f"connections ended (baseline {self.fd_baseline}, now {count})"
        )
        if stuck:
            text += f"; {len(stuck)} socket(s) in CLOSE_WAIT: " + ", ".join(
                f"{s.local}<-{s.remote}" for s in stuck[:4]
            )
        return text

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
