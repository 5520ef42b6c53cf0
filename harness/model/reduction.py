"""Smaller scripts to try, in the order a network engineer would cut: halves, connections, steps, sizes.

The search keeps the first script that broke a property, as drawn; this
cuts the script itself, which is how a person makes a reproducer small:
drop half of it, then a connection and everything it did, then one step,
then make what is left plainer (no head, half the bytes, one write instead
of fragments, no pacing, no small window). :func:`candidates` yields every such script that is still valid,
biggest cut first; :func:`harness.run.reduce.reduce` keeps each one that
still fails. Pure: no sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from dataclasses import replace

from harness.model.errors import ScriptError
from harness.model.script import (
    AbortConnect,
    BurstConnect,
    Connect,
    Flood,
    Pause,
    Payload,
    Read,
    ReadToEof,
    Script,
    Send,
    ShutdownWrite,
    Step,
)


def candidates(script: Script) -> Iterator[Script]:
    """Valid scripts smaller or plainer than ``script``, biggest cut first; never one with no client.

    A script with no connection at all would "fail" only through the
    harness's own probe connections after it: a reproducer that shows the
    user nothing of their server's bug.
    """
    for steps in _cuts(script.steps):
        if not any(isinstance(s, Connect | AbortConnect | BurstConnect) for s in steps):
            continue
        try:
            yield Script(steps, meta=script.meta)
        except ScriptError:
            continue  # a cut that leaves a step on a connection never opened, say


def renumbered(script: Script) -> Script:
    """Connection ids 0, 1, 2 ... in order of first appearance (a reducer's cuts leave gaps), and
    no fragment sizes past a payload's end (cuts that halved the payload leave them)."""
    ids: dict[Hashable, int] = {}
    steps: list[Step] = []
    for step in script.steps:
        if isinstance(step, Send):
            step = replace(step, fragments=_fitting(step.fragments, len(step.payload)))
        conn = getattr(step, "conn", None)
        if conn is None:
            steps.append(step)
            continue
        new = ids.setdefault(conn, len(ids))
        steps.append(step if new == conn else replace(step, conn=new))  # type: ignore[arg-type]
    return Script(tuple(steps), meta=script.meta)


def _cuts(steps: tuple[Step, ...]) -> Iterator[tuple[Step, ...]]:
    # 0. A half, then a quarter, of the script (a search's script can be long: a few big cuts
    #    first make every later pass shorter), with what the connections opened there did later.
    for parts in (2, 4):
        size = len(steps) // parts
        if size < 2:
            break
        for start in range(0, len(steps), size):
            yield _without(steps, range(start, start + size))
    # 1. A whole thread: every step of one connection; a burst; a pause.
    for conn in _connections(steps):
        yield tuple(s for s in steps if getattr(s, "conn", None) != conn or isinstance(s, BurstConnect))
    for i, step in enumerate(steps):
        if isinstance(step, BurstConnect | Pause):
            yield steps[:i] + steps[i + 1 :]
    # 2. One step.
    for i in range(len(steps)):
        yield steps[:i] + steps[i + 1 :]
    # 3. One step made plainer.
    for i, step in enumerate(steps):
        for plainer in _plainer(step):
            yield (*steps[:i], plainer, *steps[i + 1 :])


def _without(steps: tuple[Step, ...], cut: range) -> tuple[Step, ...]:
    """``steps`` less those at ``cut``, and less every step of a connection whose opening was cut."""
    gone = {s.conn for i, s in enumerate(steps) if i in cut and isinstance(s, Connect | AbortConnect)}
    return tuple(s for i, s in enumerate(steps) if i not in cut and getattr(s, "conn", None) not in gone)


def _connections(steps: tuple[Step, ...]) -> list[Hashable]:
    return [s.conn for s in steps if isinstance(s, Connect | AbortConnect)]


def _plainer(step: Step) -> Iterator[Step]:
    if isinstance(step, Send):
        yield from (replace(step, payload=p) for p in _smaller_payloads(step.payload))
        if step.fragments:
            yield replace(step, fragments=())
        if step.delay_ms:
            yield replace(step, delay_ms=0)
    elif isinstance(step, ShutdownWrite) and step.payload is not None:
        yield replace(step, payload=None)  # a plain half-close, if the FIN's company was not the point
    elif isinstance(step, Flood):
        if step.size > 1:
            yield replace(step, size=step.size // 2)
    elif isinstance(step, Read | ReadToEof):
        if step.pace_ms:
            yield replace(step, pace_ms=0)
        if step.chunk is not None:
            yield replace(step, chunk=None)
        if isinstance(step, Read) and step.nbytes is not None:
            yield replace(step, nbytes=None)
    elif isinstance(step, Connect):
        if step.rcvbuf is not None:
            yield replace(step, rcvbuf=None)
        if not step.nodelay:
            yield replace(step, nodelay=True)
    elif isinstance(step, BurstConnect):
        if step.count > 1:
            yield replace(step, count=step.count // 2)
        if step.size > 1:
            yield replace(step, size=step.size // 2)
    elif isinstance(step, Pause) and step.ms:
        yield replace(step, ms=step.ms // 2)


def _smaller_payloads(payload: Payload) -> Iterator[Payload]:
    head, size = payload.literal, payload.size
    if size:
        yield replace(payload, size=0, seed=0)
        yield replace(payload, size=size // 2)
    if len(head) > 1:
        yield replace(payload, literal=head[: len(head) // 2])
        yield replace(payload, literal=head[len(head) // 2 :])
        yield replace(payload, literal=head[1:])
        yield replace(payload, literal=head[:-1])
    if head and size:
        yield replace(payload, literal=b"")


def _fitting(fragments: tuple[int, ...], size: int) -> tuple[int, ...]:
    """The fragment sizes that cut inside ``size`` bytes (the last write takes the rest)."""
    kept: list[int] = []
    total = 0
    for fragment in fragments:
        if total + fragment >= size:
            break
        kept.append(fragment)
        total += fragment
    return tuple(kept)
