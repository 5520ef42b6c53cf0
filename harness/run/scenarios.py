"""Fixed scenarios that need a server of their own: fd exhaustion.

A Hypothesis script cannot lower the server's RLIMIT_NOFILE, so the
``accept-robust`` check for EMFILE runs here, once per ``check``, against a
second instance of the server started with a low limit:

0. a control: a few clients do what the exhausting ones will do (send a
   byte, some reset, the others stay open and idle), well under the limit.
   A server that dies or spins here does so without EMFILE: that is
   ``survives``'s or ``idle-cpu``'s finding, reported as theirs, so one bug
   is one finding (a server killed by any client's reset is not an
   accept-robustness bug);
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
from harness.model.properties import ACCEPT_ROBUST, CLEANUP, IDLE_CPU, SURVIVES, Violation, primary
from harness.model.scenario import CONTROL_CLIENTS, Scenario
from harness.model.script import Connect, Payload, Read, Reset, Script, Send
from harness.run.checker import Checker

RECOVERY_TIMEOUT = 10.0
ACCEPT_SETTLE = 1.0  # the fd count unchanged this long at the limit: the server tried its last accept()
RETRY_SETTLE = 2.5  # ... or this long anywhere (past the kernel's first handshake retry, at 1 s)
AT_LIMIT = 2  # "at the limit": this close to RLIMIT_NOFILE (a descriptor or two may be spare)


def control_script(clients: int = CONTROL_CLIENTS) -> Script:
    """What the exhausting clients do, by a few: send a byte, read its echo; every other one
    resets, the rest stay open, idle, until the script ends."""
    steps: list[Connect | Send | Read | Reset] = []
    for conn in range(clients):
        steps += [Connect(conn), Send(conn, Payload.of(b"x")), Read(conn, 1)]
    steps += [Reset(conn) for conn in range(0, clients, 2)]
    return Script(tuple(steps))


def run_scenario(command: str, scenario: Scenario, limits: Limits) -> Violation | None:
    control = _control(command, scenario, limits)
    if control is not None and control.property_name == SURVIVES:
        return control  # dead before any EMFILE: nothing left to exhaust
    server = ServerProcess(command, nofile=scenario.nofile, ready_timeout=limits.startup_timeout)
    with server:
        checker = Checker(address=server.address, pid=server.pid, limits=limits)
        checker.start()
        observer = ServerObserver(server.pid)
        # A server that spins already (after the warm-up connection's close, say) spins for a
        # reason of its own, which idle-cpu reports: this scenario judges what EMFILE does. So does
        # one that spun in the control: what EMFILE does to it is still judged (a crash, no
        # recovery), its CPU not; the control's finding stands if nothing else does.
        spinning = control is not None or (
            observer.looks_busy() and observer.cpu_fraction(limits.idle_window) > limits.idle_cpu_fraction
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
            _until_accepts_stop(server, observer, scenario.nofile, limits)  # let it run into EMFILE
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
            when = (
                f"after fd exhaustion (RLIMIT_NOFILE={scenario.nofile}, {scenario.connections} clients) "
                "and every client closed"
            )
            if not server.alive:
                return Violation(ACCEPT_ROBUST, f"{when}, the server died: {server.last_words()}")
            held = observer.fd_count()
            if held >= scenario.nofile - AT_LIMIT:
                # Every client is gone and the server still sits at its limit: descriptors it never
                # gave back, and no accept() can succeed. That is cleanup's finding, not accept's.
                return Violation(
                    CLEANUP,
                    f"{when}, the server still holds {held} fds (RLIMIT_NOFILE {scenario.nofile}), so it "
                    f"cannot accept again: a new connection failed for {RECOVERY_TIMEOUT:.0f} s",
                )
            return Violation(
                ACCEPT_ROBUST,
                f"{when}, the server is alive but a new connection failed for {RECOVERY_TIMEOUT:.0f} s: "
                f"{problem}",
            )
    return control


def _control(command: str, scenario: Scenario, limits: Limits) -> Violation | None:
    """Step 0 of the module docstring: a death or spin with a few clients, as survives's or idle-cpu's.

    On a server instance of its own: what a leaky server keeps of the control's clients must not
    make the exhaustion that follows start nearer the limit than the clients alone take it.
    """
    with ServerProcess(command, nofile=scenario.nofile, ready_timeout=limits.startup_timeout) as server:
        checker = Checker(address=server.address, pid=server.pid, limits=limits)
        checker.start()
        outcome = checker.check(control_script())
    seen = [v for v in outcome.violations if v.property_name in (SURVIVES, IDLE_CPU)]
    if not seen:
        return None
    found = primary(seen)
    return Violation(
        found.property_name,
        f"with {CONTROL_CLIENTS} clients, before any fd exhaustion (the fd-exhaustion scenario's control): "
        f"{found.describe()}",
    )


def _until_accepts_stop(server: ServerProcess, observer: ServerObserver, nofile: int, limits: Limits) -> None:
    """Wait while the server still takes the clients in, up to ``2 * connect_timeout``.

    A slow server (one that prints lines per event) takes seconds to reach its
    fd limit, and with a small listen backlog (the seed's is 10) most
    handshakes wait for a retry (the kernel drops them while the queue is
    full, then resends 1 s, 3 s later): measuring before would call honest
    work a spin and miss the crash EMFILE causes. So the wait ends once the fd
    count sits at the limit for ACCEPT_SETTLE, or anywhere for RETRY_SETTLE
    (longer than the first retry: a server that caps its connections below
    the limit), or the server dies.
    """
    deadline = time.monotonic() + 2 * limits.connect_timeout
    count, changed = observer.fd_count(), time.monotonic()
    while server.alive and time.monotonic() < deadline:
        still = time.monotonic() - changed
        if still >= RETRY_SETTLE or (still >= ACCEPT_SETTLE and count >= nofile - AT_LIMIT):
            return
        time.sleep(ACCEPT_SETTLE / 4)
        now = observer.fd_count()
        if now != count:
            count, changed = now, time.monotonic()
