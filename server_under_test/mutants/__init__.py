"""The mutant catalogue: single-bug variants of the reference server.

Each module ``server_under_test.mutants.NAME`` is the reference server with
exactly one bug that real epoll servers have, runnable with the reference
server's command-line contract::

    python -m server_under_test.mutants.NAME --port 0 [--mode lt|et] [--max-connections N]

It prints ``LISTENING host:port`` once ready and exits 0 on SIGTERM. Without
``--mode`` it starts in the mode in which its bug shows (its ``mode`` in ``catalogue.toml``).

What each mutant is lives in one table, ``catalogue.toml``: the property that
must catch it (``caught_by``), the mode in which it shows (``mode``), the bug,
and how real servers get it wrong (``real_world``). Each module holds only the
server: a subclass of :class:`~server_under_test.reference.ReferenceServer`
that overrides the small hook method carrying the bug, marked ``# BUG:`` (the
reference's class docstring lists its hooks); where a second override is
needed to set the stage, it says it is not the bug. Nothing of the reference
is copied.

:data:`CATALOGUE` describes them all; it is read on first use and does not
import the modules (``python -m server_under_test.mutants.NAME`` must not
import its own module twice); :meth:`Mutant.server_class` imports one.
``python -m server_under_test.mutants`` lists it.
"""

from __future__ import annotations

import importlib
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server_under_test.reference import ReferenceServer

from server_under_test.mutants._base import MODES, PACKAGE, PROPERTIES

CATALOGUE_FILE = "catalogue.toml"


@cache
def _table() -> dict[str, dict[str, str]]:
    text = (resources.files(__name__) / CATALOGUE_FILE).read_text(encoding="utf-8")
    return tomllib.loads(text)


def __getattr__(name: str) -> object:
    # NAMES and CATALOGUE are read lazily (PEP 562): see the module docstring.
    if name == "NAMES":
        return tuple(_table())
    if name == "CATALOGUE":
        return catalogue()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Mutant:
    """One catalogue entry."""

    name: str  # the module's last component, e.g. "ignore_eof"
    module: str  # the importable module, e.g. "server_under_test.mutants.ignore_eof"
    bug: str
    expected_property: str  # one of PROPERTIES
    default_mode: str  # "lt" or "et": the mode in which the bug shows
    real_world: str = ""

    def server_class(self) -> type[ReferenceServer]:
        """The module's server: the one ReferenceServer subclass it defines."""
        from server_under_test.reference import ReferenceServer

        module = importlib.import_module(self.module)
        found = [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, ReferenceServer)
            and value.__module__ == module.__name__
        ]
        if len(found) != 1:
            raise ValueError(f"{self.module} must define one ReferenceServer subclass, not {len(found)}")
        return found[0]

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
    """One catalogue entry, checked."""
    row = _table().get(name)
    if row is None:
        raise KeyError(name)
    module_name = f"{PACKAGE}.{name}"
    entry = Mutant(
        name=name,
        module=module_name,
        bug=row.get("bug", ""),
        expected_property=row.get("caught_by", ""),
        default_mode=row.get("mode", ""),
        real_world=row.get("real_world", ""),
    )
    if entry.expected_property not in PROPERTIES:
        raise ValueError(f"{CATALOGUE_FILE} [{name}]: caught_by {entry.expected_property!r} is no property")
    if entry.default_mode not in MODES:
        raise ValueError(f"{CATALOGUE_FILE} [{name}]: mode {entry.default_mode!r} is not 'lt' or 'et'")
    if not entry.bug or not entry.real_world:
        raise ValueError(f"{CATALOGUE_FILE} [{name}]: bug and real_world must not be empty")
    return entry


@cache
def catalogue() -> tuple[Mutant, ...]:
    """Every mutant, in the catalogue's order."""
    return tuple(load(name) for name in _table())


def by_name(name: str) -> Mutant:
    return load(name)


if TYPE_CHECKING:
    CATALOGUE: tuple[Mutant, ...]
    NAMES: tuple[str, ...]


__all__ = ["CATALOGUE", "MODES", "NAMES", "PROPERTIES", "Mutant", "by_name", "catalogue", "load"]
