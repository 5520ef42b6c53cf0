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
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

import psutil

from harness.drive import sockdiag
from harness.drive.quiescence import HopelessWait
from harness.model.errors import ServerDiedError
from harness.model.transcript import AcceptQueue

POLL_INTERVAL = 0.002
FIRST_POLL_INTERVAL = 0.0001
EAGER_POLLS = 10
# A server seen asleep for good twice this far apart, having not run in between, is quiescent.
QUIET_RESAMPLE = 0.005
# A tree runnable at every sample over this span is checked for a busy loop.
BUSY_SPAN = 0.004
# Children are found by reading every /proc/<pid>/stat of the host (see descendants); the
# tree is reused for this long, so an example scans once or twice, not ten times.
TREE_TTL = 0.1


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    rss: int
    fds: int


# Each process of a tree asleep for good: its threads' schedstat (see sleeping_for_good).
_Tree = dict[int, dict[int, str]]


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
        # The sleeping tree (None: not asleep) at caught_up's last two looks, older first.
        self._looks: tuple[_Tree | None, _Tree | None] = (None, None)

    def tree(self) -> list[psutil.Process]:
        now = time.monotonic()
        if now - self._tree_at > TREE_TTL:
            if not os.path.exists(f"/proc/{self.pid}"):
                self._tree = []
            else:
                known = {proc.pid: proc for proc in self._tree}
                tree = [self.root]
                for pid in descendants(self.pid):
                    proc = known.get(pid)
                    if proc is None:
                        try:
                            proc = psutil.Process(pid)
                        except psutil.NoSuchProcess:
                            continue
                    tree.append(proc)
                self._tree = tree
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

    def memory(self) -> int:
        """Memory the tree owns: PSS summed over its processes (``/proc/PID/smaps_rollup``).

        RSS summed over a forked tree counts every shared page once per child
        (a socat fork per connection: 17 MiB of RSS for 2.3 MiB of PSS); PSS
        shares each page among the processes that map it. RSS where the
        kernel has no ``smaps_rollup``.
        """
        total = 0
        for proc in self.tree():
            pss = _pss(proc.pid)
            if pss is None:
                stat = _stat(proc.pid)
                pss = stat.rss if stat is not None else 0
            total += pss
        return total

    def descriptors(self) -> Descriptors:
        """What the tree's fds are, one ``readlink`` each (see :class:`Descriptors`)."""
        found = Descriptors()
        for proc in self.tree():
            try:
                fds = os.listdir(f"/proc/{proc.pid}/fd")
            except OSError:
                continue  # gone, or a zombie
            for fd in fds:
                try:
                    target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                except OSError:
                    continue  # closed meanwhile
                if target.startswith("socket:["):
                    found.sockets.add(int(target[8:-1]))
                else:
                    found.others[_fd_kind(target)] += 1
        return found

    def connections_held(self, server_port: int, client_ports: dict[int, str]) -> list[HeldConnection]:
        """The connections in ``client_ports`` (port -> name) that a socket of the server still holds.

        A server-side row of the namespace's TCP table (local port
        ``server_port``) whose remote port is one of them and whose inode is
        held by a process (a socket still open: CLOSE_WAIT, ESTABLISHED ...).
        A connection that was reset leaves no row: see :meth:`dead_sockets`.
        """
        rows = _tcp_rows(self.pid, server_port) or []
        return [
            HeldConnection(client_ports[r.remote_port], r.remote_port, _TCP_STATES.get(r.state, str(r.state)))
            for r in rows
            if r.local_port == server_port and r.remote_port in client_ports and r.inode
        ]

    def closes_not_acknowledged(self, server_port: int, client_ports: set[int]) -> set[int]:
        """The client ports whose socket (ours) still waits for the server's ACK of its SYN or FIN.

        SYN_SENT, FIN_WAIT1, CLOSING or LAST_ACK: the server's kernel has not
        acknowledged the handshake or the close yet (a full accept queue drops
        handshakes; the client's kernel retransmits, 200 ms, then 400 ms ...
        later). Read from our own namespace's table, which holds the clients.
        """
        rows = _tcp_rows(os.getpid(), server_port) or []
        return {
            r.local_port
            for r in rows
            if r.remote_port == server_port and r.local_port in client_ports and r.state in _UNACKNOWLEDGED
        }

    def dead_sockets(self, descriptors: Descriptors) -> set[int]:
        """Socket inodes the tree holds that no socket table of its namespace lists.

        A TCP socket leaves the table when its connection is over (closed by
        a reset, or both FINs acknowledged and the server's side closed by
        the peer): one the server still holds then is a connection it never
        closed. Unix, UDP, raw, netlink and packet sockets are listed in their
        own tables and are not counted.
        """
        if not descriptors.sockets:
            return set()
        return descriptors.sockets - _listed_inodes(self.pid)

    def accept_queue(self, server_port: int, limit: int | None) -> AcceptQueue | None:
        """The listening socket's accept queue now: its row in the namespace's TCP table.

        For a listener the row's receive queue is the number of connections
        waiting for ``accept()``; the limit given to ``listen()`` is not in
        ``/proc`` (see :func:`listen_backlog`).
        """
        for row in _tcp_rows(self.pid, server_port, listeners_only=True) or []:
            if row.state == _LISTEN and row.local_port == server_port:
                return AcceptQueue(row.receive_queue, limit, listen_overflows(self.pid))
        return None

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

    def asleep(self) -> bool:
        """Does every thread of the tree wait for events with no timeout, twice, QUIET_RESAMPLE apart,
        without having run in between? Then it runs again only when one of its descriptors gets
        an event. A server with a timer, a busy one or one blocked in a write is never asleep."""
        first = self._sleeping_tree()
        if first is None:
            return False
        time.sleep(QUIET_RESAMPLE)
        return self._sleeping_tree() == first

    def caught_up(self, server_port: int, *, first_look: bool = False) -> bool:
        """Has the server read every byte sent to it and gone back to waiting for events?

        No server socket on ``server_port`` holds unread bytes, no connection
        waits in its accept queue or for a handshake, no client socket (in
        our namespace) has bytes on their way to it, and every thread of the
        tree waits for events with no timeout: nothing more happens until a
        client acts. (Output the server could not send because a client does
        not read is not waited for.) One snapshot is enough: with nothing to
        read, a thread found waiting has finished with what it read.

        A client's send queue holds its bytes until the server's kernel
        acknowledges them. A server that has read them but has nothing to
        send back (its echo waits for a client that does not read) leaves the
        ACK to its delayed-ACK timer, up to 40 ms: 78 % of the delays that ran
        their whole length in a campaign worker were that, a quarter of its
        time. Such bytes count as read when the server's side of the
        connection holds none unread, at two looks in a row between which the
        server did not run (:meth:`asleep_between_looks`): bytes still in the
        kernel's backlog on their way would have woken it. ``first_look``: the
        first of a wait's looks; the ones before it, taken before the client's
        last step, do not count.
        """
        tree = self._sleeping_tree()
        self._looks = (None if first_look else self._looks[1], tree)
        if tree is None:
            return False  # the cheaper question first: a server still at work is not caught up
        rows = _tcp_rows(self.pid, server_port)
        if rows is None:
            return False
        unread = {row.remote_port: row.receive_queue for row in rows if row.local_port == server_port}
        acks_owed = False
        for row in rows:
            if row.state in _HANDSHAKING or (row.receive_queue and row.local_port == server_port):
                return False  # a connect in progress, unread input or an unaccepted connection
            if row.remote_port == server_port and row.send_queue:
                if unread.get(row.local_port, 1):
                    return False  # a client's bytes on their way
                acks_owed = True  # the server's side has read them all: the ACK is what waits
        return not acks_owed or self.asleep_between_looks()

    def asleep_between_looks(self) -> bool:
        """Was the server asleep for good at caught_up's last two looks, without running in between?

        As :meth:`asleep`, with the looks a delay takes anyway instead of two
        QUIET_RESAMPLE apart: it runs again only when an event comes.
        """
        before, last = self._looks
        return last is not None and last == before

    def stopped_reading(self, server_port: int, client_port: int) -> bool:
        """Has the server stopped reading one connection: bytes wait in its socket, and it is asleep?

        It will not read them until some new event comes: a server that keeps
        a high-water mark, or one that lost an edge.
        """
        unread = _unread_by_server(self.pid, server_port, client_port)
        return (
            bool(unread) and self.asleep() and _unread_by_server(self.pid, server_port, client_port) == unread
        )

    def _sleeping_tree(self) -> _Tree | None:
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


def descendants(root: int) -> list[int]:
    """The pids of every process below ``root``, from one scan of ``/proc/*/stat``.

    The kernel lists no children unless built with CONFIG_PROC_CHILDREN (this
    one is not), so every process's parent is read: with ``os.read`` and one
    split, 1.1 ms for 120 processes where psutil's ``children()`` took 3.4 ms,
    once or twice per example (``bench/example_time.py``).
    """
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            try:
                data = os.read(fd, 512)
            finally:
                os.close(fd)
        except OSError:
            continue  # gone meanwhile
        # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
        fields = data[data.rfind(b")") + 2 :].split(None, 2)
        if len(fields) >= 2:
            parents.setdefault(int(fields[1]), []).append(int(name))
    found: list[int] = []
    todo = [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


@dataclass
class Descriptors:
    """A server tree's fds at one moment: socket inodes, and a count of everything else by kind."""

    sockets: set[int] = field(default_factory=set)
    others: Counter[str] = field(default_factory=Counter)

    def describe_others(self) -> str:
        return ", ".join(f"{n} x {kind}" for kind, n in self.others.most_common(4)) or "none"


@dataclass(frozen=True)
class HeldConnection:
    name: str  # the connection's name in the script ("connection 2", "probe 1")
    client_port: int
    state: str


_LISTEN = 0x0A
#: TCP states (include/net/tcp_states.h), as ss(8) names them.
_TCP_STATES = {
    0x01: "ESTABLISHED",
    0x02: "SYN_SENT",
    0x03: "SYN_RECV",
    0x04: "FIN_WAIT1",
    0x05: "FIN_WAIT2",
    0x06: "TIME_WAIT",
    0x07: "CLOSE",
    0x08: "CLOSE_WAIT",
    0x09: "LAST_ACK",
    0x0A: "LISTEN",
    0x0B: "CLOSING",
}
#: The tables of a namespace that list sockets by inode (column 10, or the last one for unix).
_SOCKET_TABLES = ("tcp", "tcp6", "udp", "udp6", "raw", "raw6", "unix", "netlink", "packet", "udplite")


def _listed_inodes(pid: int) -> set[int]:
    found: set[int] = set()
    for table in _SOCKET_TABLES:
        try:
            with open(f"/proc/{pid}/net/{table}") as fh:
                header = next(fh, "")
                column = header.split().index("Inode") if "Inode" in header.split() else None
                for line in fh:
                    parts = line.split()
                    try:
                        if table == "unix":
                            found.add(int(parts[6]))
                        elif column is not None and table in ("netlink", "packet"):
                            found.add(int(parts[column]))
                        else:
                            found.add(int(parts[9]))
                    except (IndexError, ValueError):
                        continue
        except OSError:
            continue
    return found


def _fd_kind(target: str) -> str:
    """What an fd is, from its link: "pipe", "eventfd", "/dev/null", "/var/log/x.log" ..."""
    if target.startswith("pipe:"):
        return "pipe"
    if target.startswith("anon_inode:"):
        return target[len("anon_inode:") :].strip("[]")
    return target


def _pss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


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

    A thread an event has woken but the scheduler has not run yet still shows
    its wait in ``syscall``, and its ``schedstat`` does not move while it
    waits for a CPU (a loaded machine: several milliseconds); its state is R,
    not S. Without that look, a server woken by a reset was taken for one
    asleep for good, and the sockets it was about to close for a leak.
    """
    syscalls = _thread_syscalls(pid)
    if not syscalls or not all(_waits_for_ever(fields) for fields in syscalls.values()):
        return None
    found = {}
    for tid in syscalls:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as fh:
                stat = fh.read()
            if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"S":
                return None  # woken (R), or not in an interruptible wait
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                found[tid] = fh.read()
        except (OSError, ValueError):
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


# A client socket's states (include/net/tcp_states.h) whose SYN or FIN the server has not acknowledged.
_UNACKNOWLEDGED = frozenset({0x02, 0x04, 0x09, 0x0B})  # SYN_SENT FIN_WAIT1 LAST_ACK CLOSING
# TCP states (include/net/tcp_states.h) in which a SYN or a FIN awaits its ACK.
_HANDSHAKING = frozenset({0x02, 0x03, 0x04, 0x09, 0x0B})  # SYN_SENT SYN_RECV FIN_WAIT1 LAST_ACK CLOSING


# A socket's row, from sock_diag or from /proc: ports, state, send_queue (bytes sent and not yet
# acknowledged by the peer), receive_queue (bytes received and not yet read), inode (0 when no
# file holds the socket: an orphan, TIME_WAIT, not accepted).
_TcpRow = sockdiag.DiagRow


def _tcp_rows(pid: int, port: int, listeners_only: bool = False) -> list[_TcpRow] | None:
    """The TCP sockets on ``port`` (local or remote) of ``pid``'s network namespace; None if unreadable.

    ``listeners_only``: the listening sockets alone (sock_diag then walks no
    connection table at all: 0.03 ms, where a burst's few hundred connections
    took a millisecond to list).

    From sock_diag when ``pid`` shares our namespace (the kernel leaves out
    TIME_WAIT: see :mod:`harness.drive.sockdiag`), else from
    ``/proc/<pid>/net/tcp{,6}``, the table of the process's own namespace
    (psutil has no queue sizes). A busy host's text table holds thousands of
    TIME_WAIT lines: only lines that name the port are parsed.
    """
    if sockdiag.available() and sockdiag.same_namespace(pid):
        try:
            states = 1 << _LISTEN if listeners_only else sockdiag.STATES_BUT_TIME_WAIT
            found = sockdiag.tcp_rows(port, states=states)
            # A listener's send queue in sock_diag is its backlog, not bytes (see listen_backlog).
            return [row._replace(send_queue=0) if row.state == _LISTEN else row for row in found]
        except sockdiag.SockDiagUnavailable:
            pass  # no inet_diag in this kernel: the text table
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
                            int(parts[9]),
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


def _server_row(pid: int, server_port: int, client_port: int) -> _TcpRow | None:
    """The server socket's row for one client connection (see :func:`_tcp_rows`)."""
    rows = _tcp_rows(pid, client_port) or []
    return next((r for r in rows if r.local_port == server_port and r.remote_port == client_port), None)


def server_send_queue(pid: int, server_port: int, client_port: int) -> int | None:
    """Bytes in the server socket's send queue for one client."""
    row = _server_row(pid, server_port, client_port)
    return None if row is None else row.send_queue


def _unread_by_server(pid: int, server_port: int, client_port: int) -> int:
    """Bytes in the server socket's receive queue for one client."""
    row = _server_row(pid, server_port, client_port)
    return 0 if row is None else row.receive_queue


def bytes_in_kernel(server_pid: int, server_port: int, client_port: int) -> int:
    """Bytes of one connection that sit in kernel buffers, in neither application's hands.

    The server socket's send and receive queues (its namespace's table) and
    the client socket's send queue (ours); the client's receive queue is
    asked of the socket itself (FIONREAD). What a client sent and has not
    read back, less all of these, is what the server holds in user space.
    """
    total = 0
    for row in _tcp_rows(server_pid, client_port) or []:
        if row.local_port == server_port and row.remote_port == client_port:
            total += row.send_queue + row.receive_queue
    for row in _tcp_rows(os.getpid(), client_port) or []:
        if row.local_port == client_port and row.remote_port == server_port:
            total += row.send_queue
    return total


def listen_overflows(pid: int) -> int | None:
    """Handshakes dropped so far in ``pid``'s network namespace because an accept queue was full.

    ``TcpExt: ListenOverflows`` of ``/proc/<pid>/net/netstat``: per namespace,
    so in the lab it counts the server's listener alone.
    """
    try:
        with open(f"/proc/{pid}/net/netstat") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:") and "ListenOverflows" in names:
            return int(values.split()[names.split().index("ListenOverflows")])
    return None


def listen_backlog(server_port: int) -> int | None:
    """The backlog the server passed to ``listen()`` (as the kernel caps it), from ``ss``; None if unknown.

    Only sock_diag tells it (a listener's send queue there; ``ss``'s Send-Q
    column, when our own dump is unavailable). Both read our network
    namespace, which is the server's in the lab and on the host's loopback.
    """
    if sockdiag.available():
        try:
            for row in sockdiag.tcp_rows(server_port, states=1 << _LISTEN):
                if row.local_port == server_port:
                    return row.send_queue
            return None
        except sockdiag.SockDiagUnavailable:
            pass
    try:
        out = subprocess.run(
            ["ss", "-Hltn", f"sport = :{server_port}"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0] == "LISTEN" and parts[2].isdigit():
            return int(parts[2])
    return None
