"""The mutant catalogue: single-bug variants of the reference server.

Each module ``server_under_test.mutants.NAME`` is the reference server with
exactly one bug that real epoll servers have, runnable with the reference
server's command-line contract::

    python -m server_under_test.mutants.NAME --port 0 [--mode lt|et] [--max-connections N]

It prints ``LISTENING host:port`` once ready and exits 0 on SIGTERM. Without
``--mode`` it starts in the mode in which its bug shows (``DEFAULT_MODE``).

Each module defines ``BUG``, ``EXPECTED_PROPERTY`` (the harness property that
must catch it), ``DEFAULT_MODE`` and ``REAL_WORLD`` (how real servers get this
wrong). Each subclasses :class:`~server_under_test.reference.ReferenceServer`
and overrides only the small hook method that carries the bug, marked
``# BUG:`` (the reference's class docstring lists its hooks); where a second
override is needed to set the stage, it says it is not the bug. Nothing of
the reference is copied.

:data:`CATALOGUE` describes them all; it is built on first use, by importing
every module, so that ``python -m server_under_test.mutants.NAME`` does not
import its own module twice. ``python -m server_under_test.mutants`` lists it.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from server_under_test.mutants._base import MODES, PACKAGE, PROPERTIES

# Every mutant module, in catalogue order.
NAMES: tuple[str, ...] = (
    "ignore_send_return",
    "ignore_eof",
    "err_hup_no_close",
    "drop_pending_on_half_close",
    "et_no_drain",
    "stale_state_on_fd_reuse",
    "reset_kills",
    "no_backpressure",
    "epollout_always",
    "blocking_accepted",
    "rdhup_early_close",
    "eagain_no_epollout",
    "emfile_spin",
    "shared_output_buffer",
    "never_close_after_half_close",
    "et_accept_one",
    "linger0_close",
    "oneshot_no_rearm",
    "recv_truncation",
    "strlen_echo",
    "eagain_as_eof",
)


@dataclass(frozen=True)
class Mutant:
    """One catalogue entry."""

    name: str  # the module's last component, e.g. "ignore_eof"
    module: str  # the importable module, e.g. "server_under_test.mutants.ignore_eof"
    bug: str
    expected_property: str  # one of PROPERTIES
    default_mode: str  # "lt" or "et": the mode in which the bug shows
    real_world: str = ""

    def argv(self, port: int = 0, mode: str | None = None, host: str = "127.0.0.1") -> list[str]:
        """The command that starts this mutant (``mode`` defaults to :attr:`default_mode`)."""
        return [
            sys.executable,
            "-m",
            self.module,
            "--host",
            host,
            "--port",
            str(port),
            "--mode",
            mode or self.default_mode,
        ]


def load(name: str) -> Mutant:
    """Import one mutant module and check its constants."""
    module_name = f"{PACKAGE}.{name}"
    module = importlib.import_module(module_name)
    entry = Mutant(
        name=name,
        module=module_name,
        bug=module.BUG,
        expected_property=module.EXPECTED_PROPERTY,
        default_mode=module.DEFAULT_MODE,
        real_world=module.REAL_WORLD,
    )
    if entry.expected_property not in PROPERTIES:
        raise ValueError(f"{module_name}: EXPECTED_PROPERTY {entry.expected_property!r} is not a property")
    if entry.default_mode not in MODES:
        raise ValueError(f"{module_name}: DEFAULT_MODE {entry.default_mode!r} is not 'lt' or 'et'")
    if not entry.bug or not entry.real_world:
        raise ValueError(f"{module_name}: BUG and REAL_WORLD must not be empty")
    return entry


@cache
def catalogue() -> tuple[Mutant, ...]:
    """Every mutant, in :data:`NAMES` order."""
    return tuple(load(name) for name in NAMES)


def by_name(name: str) -> Mutant:
    for entry in catalogue():
        if entry.name == name:
            return entry
    raise KeyError(name)


if TYPE_CHECKING:
    CATALOGUE: tuple[Mutant, ...]


def __getattr__(name: str) -> object:
    # CATALOGUE is built lazily (PEP 562): see the module docstring.
    if name == "CATALOGUE":
        return catalogue()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CATALOGUE", "MODES", "NAMES", "PROPERTIES", "Mutant", "by_name", "catalogue", "load"]
