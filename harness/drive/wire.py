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
* after both sides sent FIN (a graceful close) no RST may follow from the
  server (the client's own RST there answers data it had closed against);
* an RST from the server is fine only after the client reset first.

A capture that lost packets cannot be judged: a missing forged RST or a
missing stretch of a flow turns a correct close into an apparent reset. The
socket drops nothing the kernel filter does not refuse (a filter on the
server's port, a 32 MiB queue), counts what it did drop (PACKET_STATISTICS),
and a flow whose sequence numbers jump is left out.

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
CAPTURE_INCOMPLETE = "the capture lost packets: graceful-fin was not judged on that script"
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
    """graceful-fin on each flow captured whole, the harness's own probes left out.

    A flow whose first segment is not the client's SYN began before the
    capture (a leftover of an earlier script): what it shows is out of
    context, and judging it blamed servers for resets they owed nobody. A
    flow with a hole in its sequence numbers lost packets in the capture;
    judged, it blamed correct servers for the RST that answered a FIN after
    a forged reset the capture had missed.
    """
    found = []
    for port, flow in _flows(segments):
        first = flow.segments[0]
        if port in ignore_ports or first.from_server or not first.flags & SYN or first.flags & ACK:
            continue
        if has_hole(flow.segments) or refused_by_a_full_backlog(flow.segments):
            continue
        problem = _judge_flow(flow.segments)
        if problem is not None:
            found.append(Violation(GRACEFUL_FIN, f"client port {port}: {problem}"))
    return found


def _flows(segments: list[Segment]) -> list[tuple[int, _Flow]]:
    """The connections in the capture, by client port; a port reused for a new connection
    (a client SYN with a new initial sequence number: loopback reuses ports in TIME_WAIT) starts
    a flow of its own, so that one connection's close is never judged with the next one's reset."""
    flows: list[tuple[int, _Flow]] = []
    current: dict[int, tuple[_Flow, int | None]] = {}
    for seg in segments:
        opening = not seg.from_server and seg.flags & SYN and not seg.flags & ACK
        flow, isn = current.get(seg.client_port, (None, None))
        if flow is None or (opening and isn is not None and seg.seq != isn):
            flow = _Flow()
            flows.append((seg.client_port, flow))
            isn = None
        if opening:
            isn = seg.seq
        current[seg.client_port] = (flow, isn)
        flow.segments.append(seg)
    return flows


def _judge_flow(segments: list[Segment]) -> str | None:
    client_fin = server_fin = client_rst = closed = False
    server_data_end: int | None = None  # sequence number after the server's last byte
    server_fin_end: int | None = None  # the sequence number the client acknowledges the FIN with
    for seg in segments:
        if seg.forged:
            # Ours: from then on either side may reset, answering the other.
            client_rst = True
            continue
        if seg.from_server:
            if seg.flags & RST:
                if client_rst or closed:
                    # closed: both FINs were acknowledged, the server's socket is gone, and its
                    # kernel answers a stray segment (a duplicate ACK from the client's TIME_WAIT).
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
                server_fin_end = (seg.seq + seg.length + 1) & 0xFFFFFFFF
        else:
            if seg.flags & RST:
                # The client's own stack resets only when data reaches a socket it closed: the
                # echo a server still owed after the client closed with output pending (legal,
                # and the client's doing), or bytes nobody sent, which echo-exact judges.
                client_rst = True
            if seg.flags & FIN:
                client_fin = True
            if client_fin and seg.flags & ACK and seg.ack == server_fin_end:
                closed = True  # the client acknowledged the server's FIN after its own: all done
    return None


def refused_by_a_full_backlog(segments: list[Segment]) -> bool:
    """Did the server's kernel reset a connection its full listen queue never let the server accept?

    The handshake needed a retransmission (a SYN or SYN-ACK sent twice: the
    queue had no room), and the server sent neither data nor FIN before its
    RST. A burst against a small backlog (socat's is 5) makes these: the
    burst's own verdict (accept-robust) judges them, not graceful-fin.
    """
    syns = synacks = 0
    for seg in segments:
        if seg.from_server:
            if seg.flags & SYN:
                synacks += 1
            elif seg.length or seg.flags & FIN:
                return False
            elif seg.flags & RST:
                return syns > 1 or synacks > 1
        elif seg.flags & SYN:
            syns += 1
    return False


def has_hole(segments: list[Segment]) -> bool:
    """Does a flow's data skip sequence numbers that no captured segment carried?

    Each side's next sequence number starts after its SYN; a segment that
    begins beyond it (modulo 2**32) means segments were lost by the capture
    (on loopback nothing is lost on the wire itself).
    """
    expected: dict[bool, int] = {}
    for seg in segments:
        if seg.forged:
            continue
        side = seg.from_server
        if seg.flags & SYN:
            expected[side] = (seg.seq + 1) & 0xFFFFFFFF
            continue
        if side not in expected:
            continue
        ahead = (seg.seq - expected[side]) & 0xFFFFFFFF
        if 0 < ahead < 1 << 31:
            return True
        end = (seg.seq + seg.length + (1 if seg.flags & FIN else 0)) & 0xFFFFFFFF
        if 0 < (end - expected[side]) & 0xFFFFFFFF < 1 << 31:
            expected[side] = end
    return False


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
        _steady(self._socket.ins, server_port)
        self.dropped = 0  # packets the kernel had to drop: the capture is incomplete
        # The kernel filter keeps the port's segments alone: no filter in Python.
        self._sniffer = AsyncSniffer(opened_socket=self._socket, store=True)
        self._lock = threading.Lock()
        self.packets: list[Any] = []

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
        # The thread stops at its next poll, not when the queue is empty: under a flood the
        # socket still holds what it had not read yet (the end of the run, a forged RST). Read it.
        import select

        while select.select([self._socket], [], [], 0)[0]:
            packet = self._socket.recv()  # None: a copy the socket drops (outgoing), not the end
            if packet is not None:
                self.packets.append(packet)
        self.dropped += _drops(self._socket.ins)
        self._socket.close()
        return self.packets

    def segments(self) -> list[Segment]:
        return segments_of(self.packets, self.server_port)

    def save(self, path: Path) -> Path:
        from scapy.utils import wrpcap

        path.parent.mkdir(parents=True, exist_ok=True)
        wrpcap(str(path), self.packets)
        return path


SOL_PACKET = 263
PKTTYPE = (-0x1000 + 4) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_PKTTYPE: the skb's packet type
PACKET_OUTGOING = 4
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
CAPTURE_QUEUE = 32 << 20  # bytes the socket may queue while the sniffer thread catches up


def _port_filter(port: int) -> bytes:
    """A classic BPF program: IPv4 or IPv6 TCP segments to or from ``port``, whole.

    Run by the kernel, it spares the sniffer thread every other packet on the
    interface (the harness's own probes to other ports, other servers), so the
    queue holds only what the judgement reads. Frames on ``lo`` are Ethernet
    frames; IPv6 is matched without extension headers (loopback TCP has none).
    """
    import struct

    ld_h, ld_b, ldx_ip_len, ld_h_after_ip = 0x28, 0x30, 0xB1, 0x48
    jeq, jset, ret = 0x15, 0x45, 0x06
    # (opcode, operand, label if true, label if false); None: the next instruction
    code: list[tuple[int, int, str | None, str | None]] = [
        # Loopback hands every packet to the socket twice, going out and coming in: only the
        # incoming copy is kept (the kernel's packet type, an ancillary load), once, here.
        (ld_b, PKTTYPE, None, None),
        (jeq, PACKET_OUTGOING, "drop", None),
        (ld_h, 12, None, None),  # ethertype
        (jeq, 0x0800, None, "ipv6"),
        (ld_b, 23, None, None),  # IPv4 protocol
        (jeq, 6, None, "drop"),
        (ld_h, 20, None, None),  # fragment offset: a later fragment has no TCP header
        (jset, 0x1FFF, "drop", None),
        (ldx_ip_len, 14, None, None),
        (ld_h_after_ip, 14, None, None),  # source port
        (jeq, port, "keep", None),
        (ld_h_after_ip, 16, None, None),  # destination port
        (jeq, port, "keep", "drop"),
        (jeq, 0x86DD, None, "drop"),  # "ipv6": the ethertype is still loaded
        (ld_b, 20, None, None),  # next header
        (jeq, 6, None, "drop"),
        (ld_h, 54, None, None),
        (jeq, port, "keep", None),
        (ld_h, 56, None, None),
        (jeq, port, "keep", "drop"),
        (ret, 0x40000, None, None),  # "keep": the whole packet
        (ret, 0, None, None),  # "drop"
    ]
    labels = {"ipv6": 13, "keep": 20, "drop": 21}
    program = b""
    for index, (op, operand, if_true, if_false) in enumerate(code):
        true_offset = labels[if_true] - index - 1 if if_true else 0
        false_offset = labels[if_false] - index - 1 if if_false else 0
        program += struct.pack("HBBI", op, true_offset, false_offset, operand)
    return program


def _steady(sock: Any, port: int) -> None:
    """Give the capture socket a kernel filter on ``port`` and a deep queue; reset its counters."""
    import socket as socket_module
    import struct

    try:
        sock.setsockopt(socket_module.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_QUEUE)
    except OSError:
        sock.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, CAPTURE_QUEUE)
    program = _port_filter(port)
    import ctypes

    buffer = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
    sock.setsockopt(socket_module.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    _drops(sock)


def _drops(sock: Any) -> int:
    """Packets dropped since the last call (reading PACKET_STATISTICS resets them)."""
    import struct

    try:
        _, dropped = struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except OSError:
        return 0
    return int(dropped)


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


class ConnectionGone(Exception):
    """The connection was over before its RST could be forged (the server reset it, or died)."""


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


def forged_packets(sock: Any, toward: str) -> list[tuple[str, bytes]]:
    """The IPv4 packets that reset ``sock``'s connection toward one side: (destination, bytes), in order.

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

    Built by hand (:func:`tcp_packet`): scapy took 8 ms to build two packets
    and 11 ms to open and close its raw socket, a third of a forged reset's
    cost in a campaign (``bench/example_time.py``).
    """
    import fcntl
    import struct

    client_ip, client_port = sock.getsockname()[:2]
    try:
        server_ip, server_port = sock.getpeername()[:2]
    except OSError as exc:  # ENOTCONN: the server's RST (or its death) came first
        raise ConnectionGone(exc.strerror) from exc
    try:
        unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0"))[0]
        client_next = (_queue_seq(sock, TCP_SEND_QUEUE) - unsent) & 0xFFFFFFFF
        client_acked = _queue_seq(sock, TCP_RECV_QUEUE)
    except OSError as exc:
        raise InjectionUnavailable(f"cannot read the connection's sequence numbers: {exc.strerror}") from exc
    if toward == "server":
        return [(server_ip, tcp_packet(client_ip, server_ip, client_port, server_port, RST, client_next))]
    return [
        (client_ip, tcp_packet(server_ip, client_ip, server_port, client_port, RST, client_acked)),
        (
            server_ip,
            tcp_packet(
                client_ip, server_ip, client_port, server_port, ACK, client_next, client_acked, WINDOW
            ),
        ),
    ]


RST = 0x04
ACK = 0x10


def tcp_packet(
    src: str, dst: str, sport: int, dport: int, flags: int, seq: int, ack: int = 0, window: int = 8192
) -> bytes:
    """An IPv4 packet holding one TCP segment with no payload, checksums filled in, IP id FORGED_IP_ID."""
    import socket as socket_module
    import struct

    source, destination = socket_module.inet_aton(src), socket_module.inet_aton(dst)
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, 0, 0)
    pseudo = source + destination + struct.pack("!BBH", 0, socket_module.IPPROTO_TCP, len(header))
    tcp = header[:16] + struct.pack("!H", _checksum(pseudo + header)) + header[18:]
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(tcp),
        FORGED_IP_ID,
        0,
        64,
        socket_module.IPPROTO_TCP,
        0,
        source,
        destination,
    )
    return ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:] + tcp


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    import struct

    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def inject_reset(sock: Any, toward: str) -> None:
    """Send forged packets that reset ``sock``'s connection, through a raw IP socket (IP_HDRINCL)."""
    import socket as socket_module

    packets = forged_packets(sock, toward)
    try:
        raw = socket_module.socket(socket_module.AF_INET, socket_module.SOCK_RAW, socket_module.IPPROTO_RAW)
    except OSError as exc:
        raise InjectionUnavailable(f"cannot open a raw socket: {exc.strerror}") from exc
    try:
        for destination, packet in packets:
            raw.sendto(packet, (destination, 0))
    finally:
        raw.close()
