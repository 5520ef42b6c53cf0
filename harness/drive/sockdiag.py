"""The TCP socket table of our network namespace, from the kernel's sock_diag netlink interface.

The same rows as ``/proc/net/tcp{,6}`` (ports, state, queues, inode), but the
kernel leaves out the states not asked for. That matters: a namespace that
has run a few hundred scripts holds thousands of TIME_WAIT sockets, and
``/proc/net/tcp`` prints every one of them as a line of text; reading and
splitting it took 20 to 30 ms, several times per example (a third of a
campaign example's time, measured by ``bench/example_time.py``). A dump
without TIME_WAIT is a few hundred 72-byte records.

sock_diag answers for the namespace of the netlink socket, which is ours; a
server in another namespace (an attached pid) is read from ``/proc`` instead
(see :func:`harness.drive.observe._tcp_rows`). For a listening socket the
receive queue is the accept queue and the send queue the ``listen()``
backlog, as ``ss`` shows them.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
TCP_TIME_WAIT = 6
#: Every TCP state but TIME_WAIT (bit n is state n; states 1..12, include/net/tcp_states.h).
STATES_BUT_TIME_WAIT = 0x1FFE & ~(1 << TCP_TIME_WAIT)

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_REQUEST = struct.Struct("=BBBBI48x")  # inet_diag_req_v2: family, protocol, ext, pad, states, sockid
# inet_diag_msg (72 bytes): family, state, timer, retrans (a byte each), the sockid (ports in
# network order at 4 and 6, then addresses, interface, cookie), then expires, rqueue, wqueue,
# uid and inode from byte 52.
_MESSAGE_TAIL = struct.Struct("=IIIII")
_MESSAGE_SIZE = 72
_TAIL_OFFSET = 52


@dataclass(frozen=True)
class DiagRow:
    local_port: int
    remote_port: int
    state: int
    send_queue: int
    receive_queue: int
    inode: int


class SockDiagUnavailable(OSError):
    """The kernel has no sock_diag for TCP (no ``inet_diag`` module) or refuses the request."""


_unavailable = False
_UNSUPPORTED = frozenset(
    {errno.EPROTONOSUPPORT, errno.EAFNOSUPPORT, errno.ENOENT, errno.EOPNOTSUPP, errno.EPERM}
)


def available() -> bool:
    return not _unavailable


def tcp_rows(port: int | None = None, states: int = STATES_BUT_TIME_WAIT) -> list[DiagRow]:
    """TCP sockets of our namespace in ``states``, both address families; with ``port``, only
    those whose local or remote port it is. Raises :class:`SockDiagUnavailable`."""
    global _unavailable
    rows: list[DiagRow] = []
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as sock:
            for family in (socket.AF_INET, socket.AF_INET6):
                rows += _dump(sock, family, states, port)
    except SockDiagUnavailable:
        _unavailable = True  # the kernel refused the dump itself
        raise
    except OSError as exc:
        # No netlink or no inet_diag here: never again. Out of descriptors or buffers (the
        # fd-exhaustion scenario): this read only; the caller falls back to /proc meanwhile.
        _unavailable |= exc.errno in _UNSUPPORTED
        raise SockDiagUnavailable(exc.errno, f"sock_diag: {exc}") from exc
    return rows


def _dump(sock: socket.socket, family: int, states: int, port: int | None) -> list[DiagRow]:
    request = _REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, states)
    header = _HEADER.pack(_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    sock.send(header + request)
    rows: list[DiagRow] = []
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _flags, _seq, _pid = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                return rows
            body = offset + _HEADER.size
            if kind == NLMSG_DONE:
                return rows
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, body)
                raise SockDiagUnavailable(-code, f"sock_diag refused the dump: {os.strerror(-code)}")
            if kind == SOCK_DIAG_BY_FAMILY and length - _HEADER.size >= _MESSAGE_SIZE:
                state = data[body + 1]
                local_port, remote_port = struct.unpack_from(">HH", data, body + 4)
                if port is None or port in (local_port, remote_port):
                    _expires, rqueue, wqueue, _uid, inode = _MESSAGE_TAIL.unpack_from(
                        data, body + _TAIL_OFFSET
                    )
                    rows.append(DiagRow(local_port, remote_port, state, wqueue, rqueue, inode))
            offset += (length + 3) & ~3
        if not data:
            return rows


def same_namespace(pid: int) -> bool:
    """Is ``pid`` in our network namespace (so that a sock_diag dump is its table)?

    Ours is read each time: a campaign worker enters a namespace of its own after it starts.
    """
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except OSError:
        return False
