"""Deadlines and bounds: every default in one place, every one a user can change.

Deadlines are *inactivity* deadlines where that makes sense: a read fails when
no byte arrives for ``stall_timeout`` seconds, however long the whole
transfer takes, so a 10 MiB echo is not mistaken for a stall on a loaded
machine and a stalled echo is still caught in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from harness.model.errors import UsageError

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    connect_timeout: float = 5.0  # seconds to establish one connection
    stall_timeout: float = 1.0  # seconds with no progress before a read or send gives up
    step_timeout: float = 60.0  # seconds any one step may take in all
    pace_budget: float = 1.0  # seconds a slow reader may spend pausing in one step
    flood_stall: float = 0.15  # seconds a flood waits for writability before it calls the pipe full
    cleanup_timeout: float = 1.0  # seconds for the server's fds to return to their baseline
    idle_window: float = 0.25  # seconds over which idle CPU is measured, when it looks busy
    # More than this fraction of one core while idle is a busy loop. A loop that spins shares its
    # core with whatever else runs (on a loaded two-core machine it was measured at 53 %), so the
    # bound stays well below 1; an idle epoll server uses about 0.
    idle_cpu_fraction: float = 0.25
    # What a server may hold in user space for one client that sends and does not read. Real
    # servers buffer from 4 KiB to many MiB per connection (the reference: 320 KiB); one that holds
    # more than this reads without bound (see harness.run.memory). Floods are drawn past it.
    memory_bound: int = 64 * MIB
    nofile: int = 64  # RLIMIT_NOFILE for the fd-exhaustion scenario
    # Seconds the server may take to listen, at every start: the first, each restart after a
    # crash, the scenarios' own servers and every replay's (a JVM or a build step takes a while).
    startup_timeout: float = 15.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value <= 0:
                raise UsageError(f"limit {f.name} must be positive, not {value!r}")
        if self.idle_cpu_fraction >= 1.0:
            raise UsageError(f"idle_cpu_fraction must be below 1.0, not {self.idle_cpu_fraction}")

    def with_(self, **changes: Any) -> Limits:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise UsageError(f"unknown limit {sorted(unknown)[0]!r}; known: {', '.join(sorted(known))}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


DEFAULT_LIMITS = Limits()
