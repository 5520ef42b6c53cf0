"""Hypothesis strategies that build client scripts: what the harness does to a server.

Everything here is pure: a strategy draws plain data (:class:`harness.model.script.Script`
and its steps), never opens a socket and never reads a clock. Public strategies
are nouns, validate their arguments when called (a bad one raises
:class:`hypothesis.errors.InvalidArgument` naming it), compose, and shrink towards
fewer connections, fewer steps and fewer bytes.

* :func:`payloads`: literal bytes when small, ``Payload.pattern(size, seed)`` when large;
* :func:`fragmentations`: how one payload is cut into writes, and the pauses between;
* :func:`sends`: a Send step, a payload cut by a fragmentation;
* :func:`floods`: Flood steps larger than the kernel's echo path, so the server hits EAGAIN;
* :func:`lifecycles`: one connection from Connect to its ending (:class:`LifecycleKind`);
* :func:`slow_readers`: a connection with a small SO_RCVBUF reading in paced chunks;
* :func:`scripts` and :func:`short_scripts`: whole valid scripts of interleaved connections.
"""

from strategies.floods import DEFAULT_FLOOD_BUFFER_BYTES, echo_path_capacity, floods, min_flood_size
from strategies.fragments import Cut, Fragmentation, fragmentations
from strategies.lifecycles import LifecycleKind, lifecycles, sends, slow_readers
from strategies.payloads import LITERAL_MAX_SIZE, payload_sizes, payloads
from strategies.scripts import scripts, short_scripts

__all__ = [
    "DEFAULT_FLOOD_BUFFER_BYTES",
    "LITERAL_MAX_SIZE",
    "Cut",
    "Fragmentation",
    "LifecycleKind",
    "echo_path_capacity",
    "floods",
    "fragmentations",
    "lifecycles",
    "min_flood_size",
    "payload_sizes",
    "payloads",
    "scripts",
    "sends",
    "short_scripts",
    "slow_readers",
]
