"""The packet view: capture a run's packets with scapy, save them, judge them on the wire.

Capture. scapy's default listening socket on Linux also returns the copy of
every packet that the kernel hands to ``lo`` on the way *out*, so a naive
loopback capture shows each segment twice. We sniff with scapy's
``L2Socket``, which drops ``PACKET_OUTGOING`` copies: each segment is seen
once, as it arrives. The filter (the server's port) runs in Python, so no
libpcap or tcpdump is needed to compile BPF.

Judgement (``graceful-fin``), pure over a list of packets:

* a connection the client half-closed (its FIN) must end, on the server's
  side, with a FIN that follows the last byte the server sent, never an RST;
* after both sides sent FIN (a graceful close) no RST may follow from either;
* an RST from the server is fine only after the client reset first.

Evidence: a client that advertises a zero window while the server has data
to send shows that backpressure really happened on the wire.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.model.properties import GRACEFUL_FIN, Violation

# The IP id of every packet we forge, so that the judgement never blames a
# server for an RST that the harness itself put on the wire.
FORGED_IP_ID = 0xE9A1
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
ZERO_WINDOW_EVIDENCE = "client advertised a zero window while the server had data to send"


@dataclass(frozen=True)
class Segment:
    """One TCP segment, reduced to what the judgement needs (plain data, no scapy)."""

    time: float
    from_server: bool
    client_port: int
    flags: int
    seq: int
    ack: int
    window: int
    length: int
    forged: bool = False


@dataclass
class _Flow:
    segments: list[Segment] = field(default_factory=list)


def segments_of(packets: Iterable[Any], server_port: int) -> list[Segment]:
    """scapy packets of one server port, as Segments in capture order."""
    from scapy.layers.inet import IP, TCP

    found = []
    for pkt in packets:
        if TCP not in pkt:
            continue
        tcp = pkt[TCP]
        if server_port not in (tcp.sport, tcp.dport):
            continue
        from_server = tcp.sport == server_port
        payload = len(bytes(tcp.payload))
        found.append(
            Segment(
                float(pkt.time),
                from_server,
                tcp.dport if from_server else tcp.sport,
                int(tcp.flags),
                tcp.seq,
                tcp.ack,
                tcp.window,
                payload,
                IP in pkt and pkt[IP].id == FORGED_IP_ID,
            )
        )
    return found


def judge_graceful_fin(
    segments: list[Segment], ignore_ports: frozenset[int] = frozenset()
) -> list[Violation]:
    """graceful-fin on each flow whose handshake was captured, the harness's own probes left out.

    A flow whose first segment is not the client's SYN began before the
    capture (a leftover of an earlier script): what it shows is out of
    context, and judging it blamed servers for resets they owed nobody.
    """
    flows: dict[int, _Flow] = {}
    for seg in segments:
        flows.setdefault(seg.client_port, _Flow()).segments.append(seg)
    found = []
    for port, flow in flows.items():
        first = flow.segments[0]
        if port in ignore_ports or first.from_server or not first.flags & SYN or first.flags & ACK:
            continue
        problem = _judge_flow(flow.segments)
        if problem is not None:
            found.append(Violation(GRACEFUL_FIN, f"client port {port}: {problem}"))
    return found


def _judge_flow(segments: list[Segment]) -> str | None:
    client_fin = server_fin = client_rst = False
    server_data_end: int | None = None  # sequence number after the server's last byte
    for seg in segments:
        if seg.forged:
            # Ours: from then on either side may reset, answering the other.
            client_rst = True
            continue
        if seg.from_server:
            if seg.flags & RST:
                if client_rst:
                    continue
                if client_fin and server_fin:
                    return "the server sent RST after a graceful close by both sides"
                if client_fin:
                    return "after the client's FIN the server ended the connection with RST instead of FIN"
                return "the server reset the connection while the client had not"
            if seg.length:
                server_data_end = seg.seq + seg.length
            if seg.flags & FIN:
                if server_data_end is not None and seg.seq + seg.length < server_data_end:
                    return "the server's FIN came before the end of the data it had sent"
                server_fin = True
        else:
            if seg.flags & RST:
                if client_fin and server_fin:
                    return "the client's stack sent RST after a graceful close by both sides"
                client_rst = True
            if seg.flags & FIN:
                client_fin = True
    return None


def zero_window_seen(segments: list[Segment]) -> bool:
    """Did the client advertise a zero window while the server still had unacknowledged data?"""
    server_next: dict[int, int] = {}
    for seg in segments:
        if seg.from_server and seg.length:
            server_next[seg.client_port] = max(server_next.get(seg.client_port, 0), seg.seq + seg.length)
        elif (
            not seg.from_server
            and seg.window == 0
            and not seg.flags & (RST | SYN)
            and server_next.get(seg.client_port, 0) > seg.ack
        ):
            return True
    return False


class Capture:
    """Sniff the loopback interface for one server port, in a thread, until stopped.

    The socket is opened in ``__init__``, in the caller's thread (and so in the
    caller's network namespace), so packets are queued from that moment: no
    race with the traffic that follows.
    """

    def __init__(self, server_port: int, iface: str = "lo") -> None:
        # The layers first: they register lo's link type (ARPHRD_LOOPBACK
        # frames are Ethernet frames), which the socket looks up when opened.
        import scapy.layers.inet
        import scapy.layers.l2  # noqa: F401
        from scapy.arch.linux import L2Socket
        from scapy.sendrecv import AsyncSniffer

        self.server_port = server_port
        self._socket = L2Socket(iface=iface)
        self._sniffer = AsyncSniffer(opened_socket=self._socket, store=True, lfilter=self._wanted)
        self._lock = threading.Lock()
        self.packets: list[Any] = []

    def _wanted(self, pkt: Any) -> bool:
        from scapy.layers.inet import TCP

        return TCP in pkt and self.server_port in (pkt[TCP].sport, pkt[TCP].dport)

    def __enter__(self) -> Capture:
        self._sniffer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> list[Any]:
        if self._sniffer.running:
            # Let the last segments of the run reach the socket's queue.
            self._sniffer.stop(join=True)
        self.packets = list(self._sniffer.results or [])
        self._socket.close()
        return self.packets

    def segments(self) -> list[Segment]:
        return segments_of(self.packets, self.server_port)

    def save(self, path: Path) -> Path:
        from scapy.utils import wrpcap

        path.parent.mkdir(parents=True, exist_ok=True)
        wrpcap(str(path), self.packets)
        return path


# -- faults from the network side ----------------------------------------------

TCP_REPAIR = 19
TCP_REPAIR_QUEUE = 20
TCP_QUEUE_SEQ = 21
TCP_RECV_QUEUE = 1
TCP_SEND_QUEUE = 2
SIOCOUTQNSD = 0x894B  # bytes queued but not yet sent
WINDOW = 65535


class InjectionUnavailable(Exception):
    """Forging packets needs CAP_NET_RAW and CAP_NET_ADMIN; the message says what failed."""


def _queue_seq(sock: Any, queue: int) -> int:
    """The kernel's sequence number for a queue of ``sock``, read in TCP_REPAIR mode.

    In repair mode TCP_QUEUE_SEQ reads ``write_seq`` (send queue) or
    ``rcv_nxt`` (receive queue) exactly; the socket sends nothing meanwhile,
    and leaves repair mode straight after.
    """
    import socket as socket_module
    import struct

    sock.setsockopt(socket_module.IPPROTO_TCP, TCP_REPAIR, 1)
    try:
        sock.setsockopt(socket_module.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        raw = sock.getsockopt(socket_module.IPPROTO_TCP, TCP_QUEUE_SEQ, 4)
        return int(struct.unpack("I", raw)[0])
    finally:
        sock.setsockopt(socket_module.IPPROTO_TCP, TCP_REPAIR, 0)


def forged_packets(sock: Any, toward: str) -> list[Any]:
    """The packets (scapy) that reset ``sock``'s connection toward one side, in sending order.

    Toward the server: one RST whose sequence number is the client's
    ``snd_nxt`` (``write_seq`` less what is queued but unsent). On loopback
    everything sent has arrived, so that is exactly the server's ``rcv_nxt``;
    an in-window but inexact RST would only earn a challenge ACK (RFC 5961).

    Toward the client: an RST at the client's own ``rcv_nxt``, then, as if
    from the client, a window update to the server. The server has output
    pending (the strategies only do this after a flood) but the client's
    window was closed: without the update, the server's stack would only
    find out at its next zero-window probe, seconds away once the persist
    timer has backed off. With it, the server sends at once, the client's
    stack (no socket any more) answers RST, and the server sees ECONNRESET.
    """
    import fcntl
    import struct

    from scapy.layers.inet import IP, TCP

    client_ip, client_port = sock.getsockname()[:2]
    server_ip, server_port = sock.getpeername()[:2]
    try:
        unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0"))[0]
        client_next = (_queue_seq(sock, TCP_SEND_QUEUE) - unsent) & 0xFFFFFFFF
        client_acked = _queue_seq(sock, TCP_RECV_QUEUE)
    except OSError as exc:
        raise InjectionUnavailable(f"cannot read the connection's sequence numbers: {exc.strerror}") from exc
    to_server = IP(src=client_ip, dst=server_ip, id=FORGED_IP_ID)
    if toward == "server":
        return [to_server / TCP(sport=client_port, dport=server_port, flags="R", seq=client_next)]
    to_client = IP(src=server_ip, dst=client_ip, id=FORGED_IP_ID)
    return [
        to_client / TCP(sport=server_port, dport=client_port, flags="R", seq=client_acked),
        to_server
        / TCP(
            sport=client_port, dport=server_port, flags="A", seq=client_next, ack=client_acked, window=WINDOW
        ),
    ]


def inject_reset(sock: Any, toward: str) -> None:
    """Send forged packets that reset ``sock``'s connection, through a raw IP socket."""
    from scapy.supersocket import L3RawSocket

    packets = forged_packets(sock, toward)
    try:
        raw = L3RawSocket()
    except OSError as exc:
        raise InjectionUnavailable(f"cannot open a raw socket: {exc.strerror}") from exc
    try:
        for packet in packets:
            raw.send(packet)
    finally:
        raw.close()
