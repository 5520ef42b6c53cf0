"""A private network namespace for a run, with small TCP buffers.

Why: on the host's loopback a client that stops reading lets several MiB
pile up in kernel buffers before the server's ``send()`` returns EAGAIN, so
every flood has to be megabytes long. ``net.ipv4.tcp_wmem`` and ``tcp_rmem``
are per network namespace: in a namespace of our own we set them to
``4096 8192 16384`` and a non-blocking send hits EAGAIN after about 16 KiB,
partial sends become common, and floods can be small. No port can clash with
another worker's, and nothing touches the host's network.

How: ``unshare(CLONE_NEWNET)`` on the calling thread (Python 3.11 has no
``os.unshare``, so through libc). Namespaces belong to threads, and children
inherit the namespace of the thread that forks them; so this must run in the
main thread before the harness opens sockets or starts servers, and the
servers and client sockets created afterwards all live in the new namespace.
It disappears by itself when the last process in it exits: nothing to clean
up, nothing left behind by a crash. Only ``lo`` exists there, and it starts
down, so we bring it up (SIOCSIFFLAGS, no external tool needed).

Where the process may not create a namespace (not root, no CAP_SYS_ADMIN, a
container that forbids it) :func:`enter_private_netns` raises
:class:`NetnsUnavailable` and callers fall back to the host's loopback.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from harness.model.errors import HarnessError

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
SMALL_BUFFERS = (4096, 8192, 16384)
SYSCTL = Path("/proc/sys/net/ipv4")
# A namespace shares the host's table of TCP connections (262,144 buckets on this 24 GiB host)
# unless its parent sets tcp_child_ehash_entries (Linux 6.1+) before creating it. Every dump of
# the socket table (sock_diag, /proc/net/tcp) walks every bucket and every socket in it, TIME_WAIT
# ones too: 5 ms per address family with the host's table. The namespace's TIME_WAIT sockets are
# capped at half its buckets (tcp_max_tw_buckets), and a campaign keeps the cap full: a dump of
# both families took 167 us with 4,096 buckets (2,048 TIME_WAIT), 74 us with 256 (128), the same
# few live sockets listed. 256 buckets hold a script's two bursts of 200 connections in chains of
# three or so. The lab's namespace is therefore made from a first, throw-away one.
CHILD_EHASH = SYSCTL / "tcp_child_ehash_entries"
CHILD_EHASH_ENTRIES = 256


class NetnsUnavailable(HarnessError):
    """This process may not create a network namespace; the message says why."""


@dataclass(frozen=True)
class NetworkSetup:
    """Where the run's traffic goes, and the TCP buffer sysctls in force there."""

    private: bool
    tcp_wmem: tuple[int, int, int]
    tcp_rmem: tuple[int, int, int]
    note: str = ""

    def describe(self) -> str:
        where = "a private network namespace" if self.private else "the host's loopback"
        return f"{where} (tcp_wmem {_fmt(self.tcp_wmem)}, tcp_rmem {_fmt(self.tcp_rmem)})"


def _fmt(values: tuple[int, int, int]) -> str:
    return " ".join(str(v) for v in values)


def read_buffers() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """The calling thread's namespace's tcp_wmem and tcp_rmem."""
    return _read_triple("tcp_wmem"), _read_triple("tcp_rmem")


def _read_triple(name: str) -> tuple[int, int, int]:
    low, default, high = (int(v) for v in (SYSCTL / name).read_text().split())
    return (low, default, high)


def host_setup() -> NetworkSetup:
    wmem, rmem = read_buffers()
    return NetworkSetup(False, wmem, rmem)


_entered: NetworkSetup | None = None
_lock = threading.Lock()


def enter_private_netns(buffers: tuple[int, int, int] | None = SMALL_BUFFERS) -> NetworkSetup:
    """Move the calling thread (and what it starts from now on) into a new network namespace.

    Idempotent: a second call returns the namespace entered by the first.
    ``buffers`` sets tcp_wmem and tcp_rmem there (None keeps the kernel's defaults).
    """
    global _entered
    with _lock:
        if _entered is not None:
            return _entered
        if threading.current_thread() is not threading.main_thread():
            raise NetnsUnavailable("a network namespace must be entered from the main thread")
        libc = ctypes.CDLL(None, use_errno=True)
        home = os.open("/proc/self/ns/net", os.O_RDONLY)  # the way back, if the setup fails
        try:
            _unshare(libc)
            try:
                if _ask_for_own_hash_table():
                    _unshare(libc)  # the namespace made from the first gets a table of its own
                _set_up(buffers)
            except OSError as exc:
                # A container may grant CAP_SYS_ADMIN yet mount /proc/sys read-only (Docker
                # without --privileged): the namespace exists but cannot be set up. Go home.
                if libc.setns(home, CLONE_NEWNET) != 0:
                    raise NetnsUnavailable(
                        f"the private namespace could not be set up ({exc.strerror}) "
                        f"nor left ({os.strerror(ctypes.get_errno())})"
                    ) from exc
                raise NetnsUnavailable(_setup_failure(exc)) from exc
        finally:
            os.close(home)
        wmem, rmem = read_buffers()
        _entered = NetworkSetup(True, wmem, rmem)
        return _entered


def _unshare(libc: ctypes.CDLL) -> None:
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetnsUnavailable(f"unshare(CLONE_NEWNET) failed: {os.strerror(err)}")


def _ask_for_own_hash_table() -> bool:
    """Set tcp_child_ehash_entries in the namespace we are in; False where that cannot be done.

    Only a speed-up: an older kernel without the sysctl, or a read-only
    ``/proc/sys`` (whose tcp_wmem write then fails and says so), keeps the shared table.
    """
    try:
        CHILD_EHASH.write_text(str(CHILD_EHASH_ENTRIES))
    except OSError:
        return False
    return True


def _set_up(buffers: tuple[int, int, int] | None) -> None:
    _bring_up("lo")
    if buffers is not None:
        text = _fmt(buffers)
        (SYSCTL / "tcp_wmem").write_text(text)
        (SYSCTL / "tcp_rmem").write_text(text)


def _setup_failure(exc: OSError) -> str:
    if exc.filename is not None:
        what = f"cannot write {exc.filename} in it: {exc.strerror}"
        if exc.errno == errno.EROFS:
            what += " (a container mounts /proc/sys read-only unless it runs --privileged)"
    else:
        what = f"cannot bring up its loopback interface: {exc.strerror}"
    return f"a private network namespace was created but {what}"


def _bring_up(interface: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14s", interface.encode(), 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(
            sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14s", interface.encode(), flags | IFF_UP, b"")
        )


def choose_network(wanted: bool | None) -> NetworkSetup:
    """``True``: a private namespace or an error; ``False``: the host; ``None``: private if permitted."""
    if wanted is False:
        return host_setup()
    try:
        return enter_private_netns()
    except NetnsUnavailable as exc:
        if wanted:
            raise NetnsUnavailable(f"--netns was given but {exc}; run as root or use --no-netns") from exc
        setup = host_setup()
        return NetworkSetup(
            False, setup.tcp_wmem, setup.tcp_rmem, note=f"no private network namespace ({exc})"
        )
