"""Look at the server process from outside: fds, socket states, CPU, memory.

Everything goes through psutil, over the whole process tree, so forking
servers (socat, ncat, inetd-style) are judged as one server. The one thing
psutil does not give is a socket's queue sizes; :func:`server_send_queue`
reads them from the process's own ``/proc/<pid>/net/tcp`` (its namespace's
table), only after floods, where the evidence is worth the parse.

Cheap first, dear when needed: the fd count is one ``listdir``; the socket
table (to name sockets stuck in CLOSE_WAIT) is read only when the fd count
does not come back; the CPU window is measured only when a process of the
tree is seen running at a moment when it should be asleep.

What a waiting harness needs to know comes from ``/proc`` directly, where
psutil has nothing: the system call each thread sleeps in and its arguments
(``task/*/syscall``: asleep in a write to a full socket, or in an event wait
with no timeout), and how often it ran (``task/*/schedstat``).
"""

from __future__ import annotations

import functools
import os
import time
from collections import Counter
from dataclasses import dataclass

import psutil

from harness.drive.quiescence import HopelessWait
from harness.model.errors import ServerDiedError

POLL_INTERVAL = 0.002
FIRST_POLL_INTERVAL = 0.0001
EAGER_POLLS = 10
# A server seen asleep for good twice this far apart, having not run in between, is quiescent.
QUIET_RESAMPLE = 0.005
# A tree runnable at every sample over this span is checked for a busy loop.
BUSY_SPAN = 0.004
# psutil finds children by reading every /proc/<pid>/stat of the host; the
# tree is reused for this long, so an example scans once or twice, not ten times.
TREE_TTL = 0.1


@dataclass(frozen=True)
class SocketInfo:
    status: str
    local: str
    remote: str


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    rss: int
    fds: int


class ServerObserver:
    """Observes one server process (and its children) by pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.root = psutil.Process(pid)
        except psutil.NoSuchProcess as exc:
            raise ServerDiedError(f"no server process with pid {pid}") from exc
        self._tree: list[psutil.Process] = []
        self._tree_at = -TREE_TTL

    def tree(self) -> list[psutil.Process]:
        now = time.monotonic()
        if now - self._tree_at > TREE_TTL:
            try:
                self._tree = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                self._tree = []
            self._tree_at = now
        return self._tree

    @property
    def alive(self) -> bool:
        try:
            return self.root.is_running() and self.root.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def fd_count(self) -> int:
        total = 0
        for proc in self.tree():
            try:
                total += proc.num_fds()
            except psutil.Error:
                continue
        return total

    def usage(self) -> Usage:
        cpu = 0.0
        rss = 0
        fds = 0
        for proc in self.tree():
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    cpu += times.user + times.system
                    rss += proc.memory_info().rss
                    fds += proc.num_fds()
            except psutil.Error:
                continue
        return Usage(cpu, rss, fds)

    def rss(self) -> int:
        total = 0
        for proc in self.tree():
            stat = _stat(proc.pid)
            if stat is not None:
                total += stat.rss
        return total

    def sockets(self) -> list[SocketInfo]:
        found = []
        for proc in self.tree():
            try:
                conns = proc.net_connections(kind="tcp")
            except psutil.Error:
                continue
            for c in conns:
                local = f"{c.laddr.ip}:{c.laddr.port}" if c.laddr else "-"
                remote = f"{c.raddr.ip}:{c.raddr.port}" if c.raddr else "-"
                found.append(SocketInfo(c.status, local, remote))
        return found

    def socket_states(self) -> Counter[str]:
        return Counter(s.status for s in self.sockets())

    def wait_fds(self, baseline: int, timeout: float, server_port: int | None = None) -> int:
        """Poll until the fd count is back to ``baseline``; the last count seen.

        With ``server_port``, give up early once the server is quiescent
        (:meth:`quiescent`): a server asleep for good closes nothing more.
        """
        wait = HopelessWait(
            functools.partial(self.quiescent, server_port) if server_port is not None else None
        )
        deadline = wait.last_progress + timeout
        count = self.fd_count()
        # The server usually closes within a fraction of a millisecond of the
        # client: the first polls come back to back (a listdir each, tens of
        # microseconds), then back off from FIRST_POLL_INTERVAL to POLL_INTERVAL.
        polls = 0
        interval = FIRST_POLL_INTERVAL
        while count > baseline and time.monotonic() < deadline:
            polls += 1
            if polls > EAGER_POLLS:
                time.sleep(interval)
                interval = min(interval * 2, POLL_INTERVAL)
            fewer = self.fd_count()
            if fewer < count:
                wait.progress()
            count = fewer
            if count > baseline and wait.check():
                return self.fd_count()
        return count

    def blocked_writes(self) -> dict[int, list[BlockedWrite]]:
        """Per process of the tree, its threads asleep in a socket write (see :func:`blocked_writes`)."""
        found = {}
        for proc in self.tree():
            writes = blocked_writes(proc.pid)
            if writes:
                found[proc.pid] = writes
        return found

    def peer_port(self, pid: int, fd: int) -> int | None:
        """The remote port of the TCP socket ``fd`` of process ``pid``, if it is one."""
        try:
            conns = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            return None
        return next((c.raddr.port for c in conns if c.fd == fd and c.raddr), None)

    def quiescent(self, server_port: int) -> bool:
        """Can the server do nothing more without new input? Then waiting on it is pointless.

        Every thread of the tree waits for events with no timeout, twice,
        QUIET_RESAMPLE apart, without having run in between, and no byte is on
        its way to or from the server's port (seen from the server's network
        namespace and from ours: in the network lab they differ). A server
        with a timer (a finite timeout), a busy one or one blocked in a write
        is never quiescent, and is waited for as long as the limits say.
        """
        first = self._sleeping_tree()
        if first is None:
            return False
        pids = {self.pid, os.getpid()}
        if any(bytes_in_flight(pid, server_port) for pid in pids):
            return False
        time.sleep(QUIET_RESAMPLE)
        return self._sleeping_tree() == first

    def _sleeping_tree(self) -> dict[int, dict[int, str]] | None:
        found = {}
        for proc in self.tree():
            threads = sleeping_for_good(proc.pid)
            if threads is None:
                return None
            found[proc.pid] = threads
        return found or None

    def looks_busy(self) -> bool:
        """Is a process of the tree runnable (state R) at every sample over BUSY_SPAN seconds?

        A busy loop is runnable all the time (R counts waiting for a CPU too);
        a server still finishing the script's last events is asleep in
        epoll_wait a fraction of a millisecond later, and must not cost an
        idle-CPU window. Half the time the first sample catches the server on
        its way back to epoll_wait, so the samples start FIRST_POLL_INTERVAL
        apart and back off: the usual answer costs ~0.1 ms, not a 2 ms sleep.
        """
        deadline = time.monotonic() + BUSY_SPAN
        interval = FIRST_POLL_INTERVAL
        while True:
            if not any(_running(proc) for proc in self.tree()):
                return False
            if time.monotonic() >= deadline:
                return True
            time.sleep(interval)
            interval = min(interval * 2, POLL_INTERVAL)

    def cpu_fraction(self, window: float) -> float:
        """CPU used by the tree over ``window`` seconds, as a fraction of one core."""
        before = self.usage().cpu_seconds
        started = time.monotonic()
        time.sleep(window)
        after = self.usage().cpu_seconds
        return (after - before) / max(time.monotonic() - started, 1e-6)


@dataclass(frozen=True)
class BlockedWrite:
    """A thread of the server asleep in a write to a socket: ``call(fd, ...)``."""

    tid: int
    call: str
    fd: int


#: The system calls a blocking socket write sleeps in, by machine (the kernel's syscall tables).
_WRITE_SYSCALLS = {
    "x86_64": {1: "write", 20: "writev", 44: "sendto", 46: "sendmsg", 307: "sendmmsg"},
    "aarch64": {64: "write", 66: "writev", 206: "sendto", 211: "sendmsg", 269: "sendmmsg"},
}.get(os.uname().machine, {})


def blocked_writes(pid: int) -> list[BlockedWrite]:
    """The threads of ``pid`` asleep inside a write-like system call, from ``/proc/<pid>/task/*/syscall``.

    The file holds "running" for a thread on a CPU, or the number and
    arguments of the call it sleeps in: a single-threaded epoll server asleep
    in ``sendto()`` has a blocking socket that is full, and serves nobody
    until that peer reads. Empty where the file cannot be read (another
    user's process, an unknown machine).
    """
    found = []
    for tid, fields in (_thread_syscalls(pid) or {}).items():
        call = _WRITE_SYSCALLS.get(int(fields[0])) if len(fields) >= 2 and fields[0].isdigit() else None
        if call is not None:
            found.append(BlockedWrite(tid, call, int(fields[1], 16)))
    return found


def _thread_syscalls(pid: int) -> dict[int, list[str]] | None:
    """Per thread of ``pid``, the fields of ``/proc/<pid>/task/<tid>/syscall``; None if one is unreadable.

    "running", or the number of the call the thread sleeps in, its six
    arguments, stack and instruction pointers (hexadecimal).
    """
    try:
        tids = os.listdir(f"/proc/{pid}/task")
        found = {}
        for tid in tids:
            with open(f"/proc/{pid}/task/{tid}/syscall") as fh:
                found[int(tid)] = fh.read().split()
        return found
    except OSError:
        return None


#: The system calls an event loop sleeps in, by machine, and where their timeout is:
#: (argument index, True for a pointer that is NULL for "no timeout", False for
#: an int in milliseconds that is negative for "no timeout").
_WAIT_SYSCALLS: dict[int, tuple[int, bool]] = {
    "x86_64": {
        232: (3, False),  # epoll_wait
        281: (3, False),  # epoll_pwait
        441: (3, True),  # epoll_pwait2
        7: (2, False),  # poll
        271: (2, True),  # ppoll
        23: (4, True),  # select
        270: (4, True),  # pselect6
    },
    "aarch64": {
        22: (3, False),  # epoll_pwait
        441: (3, True),  # epoll_pwait2
        73: (2, True),  # ppoll
        72: (4, True),  # pselect6
    },
}.get(os.uname().machine, {})


def _waits_for_ever(syscall: list[str]) -> bool:
    """Does a ``/proc/.../syscall`` line show a wait for events with no timeout?"""
    if len(syscall) < 7 or not syscall[0].isdigit() or int(syscall[0]) not in _WAIT_SYSCALLS:
        return False
    index, is_pointer = _WAIT_SYSCALLS[int(syscall[0])]
    value = int(syscall[1 + index], 16)
    return value == 0 if is_pointer else (value & 0xFFFFFFFF) >= 0x80000000


def sleeping_for_good(pid: int) -> dict[int, str] | None:
    """Each thread's ``schedstat`` if every thread of ``pid`` waits for events with no timeout, else None.

    Such a process runs again only when one of its descriptors gets an event
    (or a signal comes). The ``schedstat`` (time run, time waited, times
    scheduled) of two such snapshots is equal only if no thread ran between them.
    """
    syscalls = _thread_syscalls(pid)
    if not syscalls or not all(_waits_for_ever(fields) for fields in syscalls.values()):
        return None
    found = {}
    for tid in syscalls:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                found[tid] = fh.read()
        except OSError:
            return None
    return found


def bytes_in_flight(pid: int, server_port: int) -> bool:
    """Are bytes still on their way to or from the server, in ``pid``'s network namespace's TCP table?

    A server socket (local port ``server_port``) with a send queue (bytes not
    yet acknowledged), or a client socket (remote port ``server_port``) with
    a send queue or unread bytes; or either in a state that waits for a
    segment the kernel will still send or resend (a SYN or a FIN not yet
    acknowledged: a connect dropped from a full backlog is retried a second
    later). A server socket's *receive* queue does not count: what the server
    left unread stays there until it reads.
    """
    rows = _tcp_rows(pid, server_port)
    if rows is None:
        return True  # unknown: assume the worst
    return any(
        row.send_queue or row.state in _HANDSHAKING or (row.remote_port == server_port and row.receive_queue)
        for row in rows
    )


# TCP states (include/net/tcp_states.h) in which a SYN or a FIN awaits its ACK.
_HANDSHAKING = frozenset({0x02, 0x03, 0x04, 0x09, 0x0B})  # SYN_SENT SYN_RECV FIN_WAIT1 LAST_ACK CLOSING


@dataclass(frozen=True)
class _TcpRow:
    local_port: int
    remote_port: int
    state: int
    send_queue: int  # bytes sent and not yet acknowledged by the peer
    receive_queue: int  # bytes received and not yet read


def _tcp_rows(pid: int, port: int) -> list[_TcpRow] | None:
    """The TCP sockets on ``port`` (local or remote) of ``pid``'s network namespace; None if unreadable.

    From ``/proc/<pid>/net/tcp{,6}``: psutil has no queue sizes. The table is
    the one of the process's network namespace, so this works inside a private
    namespace too. A busy host's table holds thousands of TIME_WAIT lines:
    only lines that name the port are parsed.
    """
    needle = f":{port:04X} "
    rows = []
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as fh:
                next(fh, None)
                for line in fh:
                    if needle not in line:
                        continue
                    parts = line.split()
                    send_queue, receive_queue = parts[4].split(":")
                    rows.append(
                        _TcpRow(
                            int(parts[1].rsplit(":", 1)[1], 16),
                            int(parts[2].rsplit(":", 1)[1], 16),
                            int(parts[3], 16),
                            int(send_queue, 16),
                            int(receive_queue, 16),
                        )
                    )
        except OSError:
            return None
    return rows


def _running(proc: psutil.Process) -> bool:
    stat = _stat(proc.pid)
    return stat is not None and stat.state == "R"


@dataclass(frozen=True)
class _Stat:
    state: str
    rss: int


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> _Stat | None:
    """State and RSS from one read of ``/proc/<pid>/stat``; None if the process is gone.

    These two are read several times per example; psutil reads them from two
    other files (``status``, ``statm``) with more parsing around each, about
    five times the cost, and the same kernel counters (``get_mm_rss``).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    return _Stat(state=fields[0].decode(), rss=int(fields[21]) * _PAGE_SIZE)


def server_send_queue(pid: int, server_port: int, client_port: int) -> int | None:
    """Bytes in the server socket's send queue for one client (see :func:`_tcp_rows`)."""
    rows = _tcp_rows(pid, client_port) or []
    return next(
        (r.send_queue for r in rows if r.local_port == server_port and r.remote_port == client_port), None
    )
