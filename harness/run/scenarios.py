"""Fixed scenarios that need a server of their own: fd exhaustion.

A Hypothesis script cannot lower the server's RLIMIT_NOFILE, so the
``accept-robust`` check for EMFILE runs here, once per ``check``, against a
second instance of the server started with a low limit:

1. open more connections than the server has fds (the kernel completes the
   handshakes in the listen backlog; ``accept()`` then fails with EMFILE);
2. the server must stay alive and must not spin (a level-triggered listener
   that is still readable after a failed accept makes epoll_wait return at
   once, forever);
3. once the clients close, a fresh connection must be served again.
"""

from __future__ import annotations

import contextlib
import socket
import time

from harness.drive.observe import ServerObserver
from harness.drive.process import ServerProcess
from harness.model.errors import ServerDiedError
from harness.model.limits import Limits
from harness.model.properties import ACCEPT_ROBUST, Violation
from harness.model.scenario import Scenario
from harness.run.checker import Checker

RECOVERY_TIMEOUT = 10.0
ACCEPT_SETTLE = 0.25  # the fd count unchanged this long: the server accepts no more


def run_scenario(command: str, scenario: Scenario, limits: Limits) -> Violation | None:
    server = ServerProcess(command, nofile=scenario.nofile)
    with server:
        checker = Checker(address=server.address, pid=server.pid, limits=limits)
        checker.start()
        observer = ServerObserver(server.pid)
        # A server that spins already (after the warm-up connection's close, say) spins for a
        # reason of its own, which idle-cpu reports: this scenario judges what EMFILE does.
        spinning = observer.looks_busy() and (
            observer.cpu_fraction(limits.idle_window) > limits.idle_cpu_fraction
        )
        clients: list[socket.socket] = []
        try:
            for _ in range(scenario.connections):
                sock = socket.socket(socket.AF_INET6 if ":" in server.host else socket.AF_INET)
                sock.setblocking(False)
                sock.connect_ex(server.address)
                clients.append(sock)
            deadline = time.monotonic() + limits.connect_timeout
            for sock in clients:
                # Wait for each handshake; the kernel completes it in the backlog.
                while (
                    sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and time.monotonic() < deadline
                ):
                    try:
                        sock.getpeername()
                        break
                    except OSError:
                        time.sleep(0.001)
                with contextlib.suppress(OSError):
                    sock.send(b"x")
            _until_accepts_stop(server, observer, limits)  # let the server run into EMFILE
            try:
                server.ensure_alive()
            except ServerDiedError as exc:
                return Violation(
                    ACCEPT_ROBUST,
                    f"with RLIMIT_NOFILE={scenario.nofile} and {scenario.connections} clients: {exc}",
                )
            fraction = 0.0 if spinning else observer.cpu_fraction(max(limits.idle_window, 0.5))
            if fraction > limits.idle_cpu_fraction:
                return Violation(
                    ACCEPT_ROBUST,
                    f"with RLIMIT_NOFILE={scenario.nofile} and {scenario.connections} clients the server "
                    f"used {fraction:.0%} of a CPU: accept() failing with EMFILE makes it spin",
                )
        finally:
            for sock in clients:
                sock.close()
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        problem = checker.probe()
        while problem is not None and time.monotonic() < deadline and server.alive:
            time.sleep(0.1)
            problem = checker.probe()
        if problem is not None:
            state = "died" if not server.alive else "is alive"
            return Violation(
                ACCEPT_ROBUST,
                f"after fd exhaustion (RLIMIT_NOFILE={scenario.nofile}, {scenario.connections} clients) "
                f"and every client closed, the server {state} but a new connection failed for "
                f"{RECOVERY_TIMEOUT:.0f} s: {problem}",
            )
    return None


def _until_accepts_stop(server: ServerProcess, observer: ServerObserver, limits: Limits) -> None:
    """Wait while the server is still accepting the clients (its fd count grows), up to connect_timeout.

    A slow server (one that prints lines per event) takes seconds to reach its
    fd limit; measuring its CPU before would call its honest work a spin.
    """
    deadline = time.monotonic() + limits.connect_timeout
    count, changed = observer.fd_count(), time.monotonic()
    while server.alive and time.monotonic() < deadline and time.monotonic() - changed < ACCEPT_SETTLE:
        time.sleep(ACCEPT_SETTLE / 4)
        now = observer.fd_count()
        if now != count:
            count, changed = now, time.monotonic()
