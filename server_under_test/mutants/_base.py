"""What every mutant shares: the command line (the reference server's contract)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence

from server_under_test.contract import ServerOptions, run
from server_under_test.reference import ReferenceServer

PACKAGE = "server_under_test.mutants"

# The harness properties a mutant may be caught by (see the harness docs).
PROPERTIES = (
    "echo-exact",
    "echo-complete",
    "half-close",
    "no-crosstalk",
    "cleanup",
    "survives",
    "idle-cpu",
    "bounded-memory",
    "no-head-of-line-blocking",
    "accept-robust",
)
MODES = ("lt", "et")


def contract_argv(default_mode: str, argv: Sequence[str] | None) -> list[str]:
    """The arguments, with ``--mode default_mode`` in front.

    The contract's own default is ``lt``; a mutant whose bug only shows in
    edge-triggered mode defaults to ``et``. argparse keeps the last ``--mode``,
    so an explicit one on the command line still wins.
    """
    if default_mode not in MODES:
        raise ValueError(f"default_mode must be 'lt' or 'et', not {default_mode!r}")
    args = list(sys.argv[1:] if argv is None else argv)
    return ["--mode", default_mode, *args]


def run_mutant(
    server_class: type[ReferenceServer], argv: Sequence[str] | None = None, name: str | None = None
) -> int:
    """``python -m server_under_test.mutants.NAME``: the contract of contract.run.

    ``name`` defaults to the module the class is defined in; run as
    ``__main__`` that is the module's spec name, the name it was run by.
    """
    if name is None:
        module = sys.modules[server_class.__module__]
        spec = getattr(module, "__spec__", None)
        name = (spec.name if spec is not None else server_class.__module__).rpartition(".")[2]
    from server_under_test.mutants import by_name

    entry = by_name(name)

    def make_server(listener: socket.socket, options: ServerOptions) -> ReferenceServer:
        return server_class(listener, options.mode, options.max_connections)

    return run(
        f"python -m {PACKAGE}.{name}",
        f"Mutant {name!r} of the reference epoll echo server (default --mode {entry.default_mode}). "
        f"Bug: {entry.bug}",
        make_server,
        contract_argv(entry.default_mode, argv),
    )
