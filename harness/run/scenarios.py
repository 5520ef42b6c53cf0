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


def run_scenario(command: str, scenario: Scenario, limits: Limits) -> Violation | None:
    server = ServerProcess(command, nofile=scenario.nofile)
    with server:
        checker = Checker(address=server.address, pid=server.pid, limits=limits)
        checker.start()
        observer = ServerObserver(server.pid)
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
            time.sleep(limits.idle_window)  # let the server run into EMFILE
            try:
                server.ensure_alive()
            except ServerDiedError as exc:
                return Violation(
                    ACCEPT_ROBUST,
                    f"with RLIMIT_NOFILE={scenario.nofile} and {scenario.connections} clients: {exc}",
                )
            fraction = observer.cpu_fraction(max(limits.idle_window, 0.5))
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
