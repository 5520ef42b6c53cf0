"""``cleanup``: judged by connections, not by fd counts.

Every connection the client closed or reset must be gone from the server
within the deadline. Two ways a server keeps one:

* a socket of the server still holds the 4-tuple in the namespace's TCP table
  (CLOSE_WAIT after the client's FIN, ESTABLISHED, ...): named with its state;
* a socket the server holds is in no socket table at all: its connection is
  over (reset) and the server never closed it.

Other descriptors (a log file opened on the first warning, a pool of pipes
for splice(2) that grows with peak connections, an eventfd, a second epoll
fd) are no leak by themselves. When the fd count stays above its baseline
with no connection held, the harness opens :data:`LEAK_PROBES` connections
one after another, closing half gracefully and resetting the rest: if the
count grows by about one per connection, that is a leak per connection (a
violation); if not, it is a plateau, reported as a diagnostic, and becomes
the new baseline. The harness's own probe connections are never counted.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Hashable
from dataclasses import dataclass

from harness.drive.executor.faults import BURST_ID_BASE
from harness.drive.observe import Descriptors, ServerObserver
from harness.drive.quiescence import QUIET_REASON
from harness.model.limits import Limits
from harness.model.properties import CLEANUP, Violation
from harness.model.script import InjectReset
from harness.model.transcript import Transcript
from harness.model.wording import plural

#: Connections the leak probe opens one after another.
LEAK_PROBES = 8
#: Growth of at least this many fds over the leak probe is a leak per connection.
LEAK_THRESHOLD = LEAK_PROBES // 2
LINGER_ZERO = struct.pack("ii", 1, 0)
# While a socket of the server looks dead (reset, in no table), it is looked at again this often.
DEAD_RECHECK = 0.01


@dataclass(frozen=True)
class CleanupVerdict:
    violation: Violation | None = None
    diagnostic: str | None = None  # descriptors that are no leak, worth a line in the report
    new_baseline: int | None = None  # the plateau the fd count settled on


def connection_name(conn: Hashable) -> str:
    if isinstance(conn, int) and conn >= BURST_ID_BASE:
        step, k = divmod(conn - BURST_ID_BASE, 1000)
        return f"burst connection {k} (step {step})"
    return f"connection {conn}"


def exempt_connections(transcript: Transcript) -> set[Hashable]:
    """Connections whose lingering is another finding's consequence, or no bug at all.

    One whose echo was already wrong (the oracle's verdict says it first: a
    server that lost bytes still "owes" them, so the harness's idea of what
    was pending is off), and one ended by an RST forged toward the client
    while the server had nothing to send: the server cannot know its peer is
    gone until it sends (a half-open connection is TCP keepalive's business).
    """
    exempt = {conn for conn in transcript.client_ports if transcript.oracle.problem(conn) is not None}
    exempt.update(
        step.conn for step in transcript.script if isinstance(step, InjectReset) and step.toward == "client"
    )
    return exempt


def judge(
    observer: ServerObserver,
    transcript: Transcript,
    server_address: tuple[str, int],
    baseline: int,
    baseline_descriptors: Descriptors,
    waited: float,
    limits: Limits,
) -> CleanupVerdict:
    """The verdict when the fd count stayed above ``baseline`` for ``waited`` seconds after the script."""
    server_port = server_address[1]
    exempt = exempt_connections(transcript)
    when = f"{waited:.2f} s after the client closed it"
    if waited < limits.cleanup_timeout:
        when += f" (none will close: {QUIET_REASON})"
    ports = {
        port: connection_name(conn) for conn, port in transcript.client_ports.items() if conn not in exempt
    }
    # A close the server has not been told of yet (the client's FIN, or its SYN, still waits for
    # the server's ACK: a handshake a full accept queue dropped is being retried) is not the
    # server's to clean up yet.
    unheard = observer.closes_not_acknowledged(server_port, set(ports))
    held = observer.connections_held(server_port, {p: n for p, n in ports.items() if p not in unheard})
    # A server socket still ESTABLISHED never received the client's FIN or RST (on loopback only
    # a full accept queue loses them: a handshake completed late, after the client had given up
    # and closed). The server cannot know; a CLOSE_WAIT socket, told and never closed, can.
    unheard |= {h.client_port for h in held if h.state == "ESTABLISHED"}
    held = [h for h in held if h.state != "ESTABLISHED"]
    descriptors = observer.descriptors()
    dead = _still_dead(observer, observer.dead_sockets(descriptors) - baseline_descriptors.sockets, limits)
    if held or dead:
        parts = []
        if held:
            listed = ", ".join(f"{h.name} (client port {h.client_port}, {h.state})" for h in held[:4])
            more = f" and {len(held) - 4} more" if len(held) > 4 else ""
            parts.append(
                f"{plural(len(held), 'connection')} the client closed "
                f"{'is' if len(held) == 1 else 'are'} still open in the server {when}: {listed}{more}"
            )
        if dead:
            parts.append(
                f"{plural(len(dead), 'socket')} whose connection is over (reset, in no socket table) "
                f"{'is' if len(dead) == 1 else 'are'} still open in the server"
            )
        return CleanupVerdict(Violation(CLEANUP, "; ".join(parts)))
    verdict = _leak_probe(observer, server_address, baseline, baseline_descriptors, descriptors, limits)
    if unheard and verdict.violation is None and verdict.diagnostic is None:
        names = ", ".join(sorted(ports[p] for p in unheard)[:4])
        return CleanupVerdict(
            diagnostic=f"{plural(len(unheard), 'connection')} closed by the client "
            f"{'was' if len(unheard) == 1 else 'were'} not yet known closed to the server {when} "
            f"(its SYN or FIN unacknowledged, or never received: a full accept queue): {names}"
        )
    return verdict


def _still_dead(observer: ServerObserver, dead: set[int], limits: Limits) -> set[int]:
    """The sockets of ``dead`` the server still holds ``cleanup_timeout`` after they were first seen.

    A socket leaves the TCP table the moment its reset is processed, and the
    server closes it when it next handles its events: seen in between (a
    server still busy, or one with a timer that keeps the fd count above its
    baseline so that this verdict runs at once) it is not yet a leak. Each
    gets the cleanup deadline from when it was seen.
    """
    deadline = time.monotonic() + limits.cleanup_timeout
    while dead and time.monotonic() < deadline:
        time.sleep(DEAD_RECHECK)
        dead &= observer.dead_sockets(observer.descriptors())
    return dead


def _leak_probe(
    observer: ServerObserver,
    address: tuple[str, int],
    baseline: int,
    baseline_descriptors: Descriptors,
    descriptors: Descriptors,
    limits: Limits,
) -> CleanupVerdict:
    before = observer.fd_count()
    for i in range(LEAK_PROBES):
        _one_connection(address, limits, reset=bool(i % 2))
    after = observer.wait_fds(before, limits.cleanup_timeout, address[1])
    grew = after - before
    if grew >= LEAK_THRESHOLD:
        now = observer.descriptors()
        return CleanupVerdict(
            Violation(
                CLEANUP,
                f"the server keeps a descriptor per connection: {plural(grew, 'fd')} more after "
                f"{LEAK_PROBES} connections opened and closed one after another (baseline {baseline}, "
                f"now {after}; what they are: {now.describe_others()})",
            )
        )
    new_kinds = sorted(set(descriptors.others) - set(baseline_descriptors.others))
    kinds = ", ".join(new_kinds) or "more of the kinds it had"
    return CleanupVerdict(
        diagnostic=(
            f"descriptors other than connections grew ({kinds}) and held steady over {LEAK_PROBES} more "
            "connections: no leak"
        ),
        new_baseline=max(after, before),
    )


def _one_connection(address: tuple[str, int], limits: Limits, *, reset: bool) -> None:
    """Connect, echo a few bytes, close (or reset): the leak probe's unit. Failures are not judged here."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(limits.connect_timeout)
            sock.connect(address)
            sock.settimeout(limits.stall_timeout)
            sock.sendall(b"epoll-harness leak probe\n")
            got = b""
            while len(got) < 25:
                chunk = sock.recv(64)
                if not chunk:
                    break
                got += chunk
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    except OSError:
        pass
