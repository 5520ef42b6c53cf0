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
import functools
import os
import socket
import struct
from typing import NamedTuple

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
# inet_diag_msg (72 bytes) after the 16-byte nlmsghdr: family, state, timer, retrans (a byte
# each), the sockid (ports in network order at 4 and 6, then addresses, interface, cookie), then
# expires, rqueue, wqueue, uid and inode from byte 52; attributes may follow. One unpack reads
# what a row needs (the ports, read in host order, are swapped after): a dump of a burst's 600
# sockets was parsed field by field into dataclasses, 2 ms where the kernel took 0.2 ms to write it.
_MESSAGE_SIZE = 72
_ROW = "=IH10xxB2xHH48xII4xI"  # from the nlmsghdr: length, type, state, ports, rqueue, wqueue, inode
_ONE_ROW = struct.Struct(_ROW)


class DiagRow(NamedTuple):
    """One socket: its ports, TCP state, queues and inode (0 when no file holds it)."""

    local_port: int
    remote_port: int
    state: int
    send_queue: int
    receive_queue: int
    inode: int = 0


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
    wanted = None if port is None else _swap(port)  # compared as read, in network order
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return rows
        if _read_uniform(data, wanted, rows):
            continue
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, kind, _flags, _seq, _pid = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                return rows
            if kind == NLMSG_DONE:
                return rows
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, offset + _HEADER.size)
                raise SockDiagUnavailable(-code, f"sock_diag refused the dump: {os.strerror(-code)}")
            if kind == SOCK_DIAG_BY_FAMILY and length - _HEADER.size >= _MESSAGE_SIZE:
                _, _, state, local, remote, rqueue, wqueue, inode = _ONE_ROW.unpack_from(data, offset)
                if wanted is None or wanted in (local, remote):
                    rows.append(DiagRow(_swap(local), _swap(remote), state, wqueue, rqueue, inode))
            offset += (length + 3) & ~3


def _read_uniform(data: bytes, wanted: int | None, rows: list[DiagRow]) -> bool:
    """Read a chunk made only of socket messages of one length at once; False if it is not one.

    Most chunks are: every established socket comes with the same attributes.
    The last chunk (NLMSG_DONE) and one with handshakes in it are read a
    message at a time.
    """
    (length,) = _LENGTH.unpack_from(data)
    if length < _HEADER.size + _MESSAGE_SIZE or length % 4 or len(data) % length:
        return False
    records = _messages_of(length).iter_unpack(data)
    found = [r for r in records if r[1] == SOCK_DIAG_BY_FAMILY and r[0] == length]
    if len(found) * length != len(data):
        return False
    new = tuple.__new__
    rows.extend(
        new(DiagRow, (_swap(local), _swap(remote), state, wqueue, rqueue, inode))
        for _, _, state, local, remote, rqueue, wqueue, inode in found
        if wanted is None or wanted in (local, remote)
    )
    return True


_LENGTH = struct.Struct("=I")


@functools.lru_cache(maxsize=8)
def _messages_of(length: int) -> struct.Struct:
    return struct.Struct(f"{_ROW}{length - _ONE_ROW.size}x")


def _swap(port: int) -> int:
    """A port between network and host order (this reads ports as native 16-bit integers)."""
    return socket.ntohs(port)


def same_namespace(pid: int) -> bool:
    """Is ``pid`` in our network namespace (so that a sock_diag dump is its table)?

    Ours is read each time: a campaign worker enters a namespace of its own after it starts.
    """
    try:
        return os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except OSError:
        return False
