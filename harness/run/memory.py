"""``bounded-memory``: what a server keeps for a client that does not read, judged against the data.

A correct server holds a bounded amount per connection, whatever that
amount is (4 KiB to many MiB): once its buffer for a client that does not
read is full, it stops reading from it (the client's ``send()`` blocks) or
drops it. An unbounded one reads everything and queues it, so what it holds
grows with the data pushed past the echo path. After each flood the checker
computes what the server holds in user space for each flooded client (sent,
less read back, less every kernel queue on the way: see
:func:`harness.drive.observe.bytes_in_kernel`). Past ``memory_bound`` (64 MiB
by default), with the server's memory (PSS summed over its process tree,
from before the flood) grown by at least half of it, the server is
unbounded. A fixed growth bound would judge the buffer's size instead, and
GC runtimes that grow their heap at first (V8, Go) would fail it.

A server that drops a client that floods without reading is bounded: that
policy is a non-strict finding (see the oracle), never corruption.
"""

from __future__ import annotations

from harness.drive.executor import Client, Connections
from harness.drive.executor.connections import bytes_queued_in
from harness.drive.observe import ServerObserver, bytes_in_kernel
from harness.model.limits import Limits
from harness.model.properties import BOUNDED_MEMORY, Violation
from harness.model.wording import mib

MIB = 1024 * 1024
#: Held bytes that count as evidence of deep unread output (Hypothesis events).
HELD_EVIDENCE = (1 * MIB, 16 * MIB, 64 * MIB)
#: The server's memory must have grown by at least this fraction of what it holds.
GROWTH_FRACTION = 0.5


def held_by_server(executor: Connections, client: Client, server_pid: int, server_port: int) -> int:
    """Bytes the client sent and did not read back that are in none of the kernel's queues."""
    owed = executor.oracle.owed(client.conn)
    if owed <= 0:
        return 0
    try:
        queued = bytes_queued_in(client.sock)
    except OSError:
        return 0
    return max(0, owed - queued - bytes_in_kernel(server_pid, server_port, client.port))


def judge_after_flood(
    executor: Connections,
    observer: ServerObserver,
    server_port: int,
    memory_before: int,
    limits: Limits,
) -> list[Violation]:
    """After a flood: a violation per client whose held bytes passed the bound, and evidence of depth."""
    found = []
    for client in executor.clients.values():
        if not client.flooded or client.closed:
            continue
        if executor.oracle.sent_count(client.conn) > limits.memory_bound:
            executor.transcript.evidence.add("a client sent past the memory bound without reading")
        held = held_by_server(executor, client, observer.pid, server_port)
        for level in HELD_EVIDENCE:
            if held >= level:
                executor.transcript.evidence.add(f"the server held >= {mib(level)} for a client not reading")
        if held <= limits.memory_bound:
            continue
        growth = observer.memory() - memory_before
        if growth < held * GROWTH_FRACTION:
            continue  # not in memory (a file, a pipe): not this property's concern
        found.append(
            Violation(
                BOUNDED_MEMORY,
                f"the server read {mib(held)} from a client that read nothing back, and kept it: its "
                f"memory (PSS) grew by {mib(growth)}. A server may hold up to "
                f"{mib(limits.memory_bound)} for a client that does not read (--memory-bound); past "
                "that it must stop reading from it or drop it",
                conn=client.conn,
            )
        )
    return found
