"""Network-lab experiments, each run in a process of its own (a namespace is per process).

    python tests/programs/lab.py EXPERIMENT

Prints one JSON object. The tests in test_network_lab.py run these in
subprocesses so that no pytest worker ever leaves the host's network.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

from harness.drive.executor import Executor
from harness.drive.netns import choose_network, enter_private_netns, host_setup
from harness.drive.observe import ServerObserver
from harness.drive.process import ServerProcess, reference_command
from harness.drive.wire import Capture, has_hole, segments_of
from harness.model.limits import DEFAULT_LIMITS
from harness.model.script import (
    Close,
    Connect,
    Flood,
    InjectReset,
    Payload,
    Read,
    ReadToEof,
    Script,
    Send,
    ShutdownWrite,
)
from harness.run.checker import Checker
from harness.run.lab import replay_with_capture


def bytes_until_eagain() -> int:
    """How much a non-blocking send takes while the peer never reads."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        peer, _ = listener.accept()
        client.setblocking(False)
        sent = 0
        try:
            while sent < 64 * 1024 * 1024:
                sent += client.send(b"x" * 65536)
        except BlockingIOError:
            pass
        client.close()
        peer.close()
    return sent


def buffers() -> dict[str, object]:
    host = host_setup()
    host_eagain = bytes_until_eagain()
    lab = enter_private_netns()
    return {
        "host_wmem": host.tcp_wmem,
        "lab_wmem": lab.tcp_wmem,
        "lab_rmem": lab.tcp_rmem,
        "private": lab.private,
        "host_eagain": host_eagain,
        "lab_eagain": bytes_until_eagain(),
        # The namespace's own table of connections (Linux 6.1+), not the host's shared one.
        "lab_ehash": _sysctl("tcp_ehash_entries"),
        "lab_max_tw": _sysctl("tcp_max_tw_buckets"),
    }


def _sysctl(name: str) -> int | None:
    try:
        return int(Path(f"/proc/sys/net/ipv4/{name}").read_text())
    except OSError:
        return None


def fallback() -> dict[str, object]:
    import os

    home = os.readlink("/proc/self/ns/net")
    setup = choose_network(None)
    return {"private": setup.private, "note": setup.note, "home": os.readlink("/proc/self/ns/net") == home}


def capture(pcap: str) -> dict[str, object]:
    enter_private_netns()
    script = Script(
        (
            Connect(0),
            Send(0, Payload.of(b"hello, wire")),
            Read(0),
            ShutdownWrite(0),
            ReadToEof(0),
            Close(0),
        )
    )
    replayed = replay_with_capture(reference_command("lt"), script, DEFAULT_LIMITS, Path(pcap))
    return {"violations": [v.describe() for v in replayed.violations], "packets": replayed.packets}


def linger0(pcap: str) -> dict[str, object]:
    enter_private_netns()
    command = f"{sys.executable} -m server_under_test.mutants.linger0_close --port {{port}}"
    script = Script((Connect(0), Send(0, Payload.of(b"bye")), ShutdownWrite(0), ReadToEof(0), Close(0)))
    replayed = replay_with_capture(command, script, DEFAULT_LIMITS, Path(pcap))
    return {"violations": [[v.property_name, v.describe()] for v in replayed.violations]}


def injected_reset() -> dict[str, object]:
    """Forge an RST toward the server; its fd must close while our socket stays open."""
    enter_private_netns()
    with Checker(ServerProcess(reference_command("lt"))) as checker:
        assert checker.observer is not None
        observer: ServerObserver = checker.observer
        baseline = observer.fd_count()
        executor = Executor(checker.address, DEFAULT_LIMITS)
        executor.run_step(Connect(0))
        executor.run_step(Send(0, Payload.of(b"x" * 1000)))
        executor.run_step(Read(0))
        with_connection = observer.wait_fds(baseline + 1, 5.0)
        started = time.monotonic()
        executor.run_step(InjectReset(0, "server"))
        after = observer.wait_fds(baseline, DEFAULT_LIMITS.cleanup_timeout)
        seconds = time.monotonic() - started
        client_socket_open = all(s.fileno() >= 0 for s in executor.orphans)
        executor.abort_all()
    return {
        "baseline": baseline,
        "with_connection": with_connection,
        "after": after,
        "seconds": seconds,
        "client_socket_open": client_socket_open,
        "evidence": sorted(executor.transcript.evidence),
    }


def piggyback(pcap: str) -> dict[str, object]:
    """A half-close with a tail: the tail and the FIN must leave in one segment; et_no_drain misses it."""
    import shlex

    from server_under_test.mutants import by_name

    enter_private_netns()
    script = Script(
        (Connect(0), ShutdownWrite(0, Payload.of(b"GET / HTTP/1.0\r\n\r\n")), ReadToEof(0), Close(0))
    )
    replayed = replay_with_capture(reference_command("et"), script, DEFAULT_LIMITS, Path(pcap))
    from scapy.utils import rdpcap

    segments = segments_of(rdpcap(pcap), _server_port(Path(pcap)))
    mutant = shlex.join(by_name("et_no_drain").argv(host="{host}"))
    missed = replay_with_capture(mutant, script, DEFAULT_LIMITS, Path(pcap).with_suffix(".mutant.pcap"))
    return {
        "reference": [v.property_name for v in replayed.violations],
        "fin_with_data": any(not s.from_server and s.flags & 0x01 and s.length == 18 for s in segments),
        "et_no_drain": [v.property_name for v in missed.violations],
    }


def reset_after_flood(pcap_dir: str) -> dict[str, object]:
    """Flood, read, forge an RST toward the server, three times: the case a lossy capture misjudged.

    The orphaned client socket closes at the end; the server's kernel, whose
    socket the forged RST ended, answers that FIN with RST. Seen with the
    forged RST, that is no fault of the server.
    """
    enter_private_netns()
    script = Script(
        (Connect(0), Flood(0, 263704, 1), Read(0, chunk=2109699, pace_ms=5), InjectReset(0, "server"))
    )
    runs = []
    for k in range(3):
        pcap = Path(pcap_dir) / f"reset-{k}.pcap"
        replayed = replay_with_capture(reference_command("lt"), script, DEFAULT_LIMITS, pcap)
        from scapy.utils import rdpcap

        segments = segments_of(rdpcap(str(pcap)), _server_port(pcap))
        ports = {s.client_port for s in segments}
        runs.append(
            {
                "violations": [v.describe() for v in replayed.violations],
                "packets": replayed.packets,
                "forged_seen": sum(s.forged for s in segments),
                "holes": sum(has_hole([s for s in segments if s.client_port == port]) for port in ports),
            }
        )
    return {"runs": runs}


def _server_port(pcap: Path) -> int:
    """The port every captured segment shares: the server's."""
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap

    ports = [{p[TCP].sport, p[TCP].dport} for p in rdpcap(str(pcap)) if TCP in p]
    return set.intersection(*ports).pop()


def capture_filter() -> dict[str, object]:
    """Traffic to two ports under a capture of one: the kernel filter keeps that port's alone."""
    enter_private_netns()
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    watched, other = (s.getsockname()[1] for s in listeners)
    with Capture(watched) as capture:
        for listener in listeners:
            with socket.create_connection(listener.getsockname()) as client:
                peer, _ = listener.accept()
                client.sendall(b"ping")
                peer.recv(4)
                peer.close()
        time.sleep(0.2)
    from scapy.layers.inet import TCP

    for listener in listeners:
        listener.close()
    # Only the kernel filters (no filter in Python): every packet kept is the watched port's.
    kept = [{p[TCP].sport, p[TCP].dport} if TCP in p else set() for p in capture.packets]
    return {
        "packets": len(capture.packets),
        "dropped": capture.dropped,
        "all_watched": all(watched in ports for ports in kept),
        "other_port_seen": any(other in ports for ports in kept),
    }


def capture_drops() -> dict[str, object]:
    """A capture whose queue overflows counts the packets it lost (and the judgement then abstains)."""
    enter_private_netns()
    listener = socket.create_server(("127.0.0.1", 0))
    capture = Capture(listener.getsockname()[1])
    # A queue of a few KiB and no sniffer reading it yet: most segments cannot be queued.
    capture._socket.ins.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client = socket.create_connection(listener.getsockname())
    peer, _ = listener.accept()
    for _ in range(200):
        client.sendall(b"y" * 1000)
        peer.recv(65536)
    client.close()
    peer.close()
    listener.close()
    with capture:
        time.sleep(0.1)
    return {"packets": len(capture.packets), "dropped": capture.dropped}


EXPERIMENTS = {
    "reset-after-flood": reset_after_flood,
    "piggyback": piggyback,
    "capture-filter": capture_filter,
    "capture-drops": capture_drops,
    "buffers": buffers,
    "fallback": fallback,
    "capture": capture,
    "linger0": linger0,
    "injected-reset": injected_reset,
}

if __name__ == "__main__":
    name, *args = sys.argv[1:]
    print(json.dumps(EXPERIMENTS[name](*args)))
