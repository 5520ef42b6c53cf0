"""Every option of both faces, declared once: ``epoll-harness check`` and the pytest plugin.

Each :class:`Option` has its name, how its value is read and checked, its
default, its help, the group it is listed in and the faces that show it. The
CLI builds its argparse groups from :data:`OPTIONS` and the plugin its
``epoll-harness`` group, so a knob has the same meaning, default and help in
both. The pytest face prefixes names with ``--harness-`` (pytest's own and
other plugins' options share one namespace); the server command is
``--server-cmd`` there.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.model.limits import DEFAULT_LIMITS, MIB, Limits
from harness.model.properties import PROPERTIES
from harness.run.runner import (
    DEFAULT_ARTIFACTS,
    DEFAULT_MAX_EXAMPLES,
    DEFAULT_SHRINK_BUDGET,
    DEFAULT_TIME_BUDGET,
)

CLI = "cli"
PYTEST = "pytest"
BOTH = frozenset({CLI, PYTEST})



# -- how values are read: each raises argparse.ArgumentTypeError with what was expected -------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def _positive_number(unit: str) -> Callable[[str], float]:
    def read(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number of {unit}, not {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected a positive number of {unit}, not {text}")
        return value

    read.__name__ = unit.replace(" ", "_")
    return read


seconds = _positive_number("seconds")
mebibytes = _positive_number("MiB")


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction of a core, not {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction of a core between 0 and 1, not {text}")
    return value


def property_list(text: str) -> frozenset[str]:
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    unknown = names - set(PROPERTIES)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown property {sorted(unknown)[0] if unknown else text!r}; known: {', '.join(PROPERTIES)}"
        )
    return names


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


# -- the table ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One knob. ``name`` is the CLI flag without dashes; ``dest`` the attribute it is read into."""

    name: str
    help: str
    group: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    flag: bool = False  # a switch (store_true)
    negatable: bool = False  # --x / --no-x, default None ("when permitted")
    faces: frozenset[str] = BOTH
    pytest_name: str | None = None

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def cli_flag(self) -> str:
        return f"--{self.name}"

    @property
    def pytest_flag(self) -> str:
        return self.pytest_name or f"--harness-{self.name}"

    @property
    def pytest_dest(self) -> str:
        return f"epoll_harness_{self.dest}"

    def help_text(self) -> str:
        if not isinstance(self.default, int | float | Path) or isinstance(self.default, bool):
            return self.help  # no default, or one the help text states
        shown = self.default
        if isinstance(shown, float) and shown.is_integer():
            shown = int(shown)
        return f"{self.help} (default {shown})"

    def add_to(self, add: Callable[..., Any], flag: str, dest: str) -> None:
        """Declare this option with ``add`` (argparse's ``add_argument`` or pytest's ``addoption``)."""
        kwargs: dict[str, Any] = {"dest": dest, "help": self.help_text()}
        if self.flag:
            kwargs["action"] = "store_true"
        elif self.negatable:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = None
        else:
            kwargs.update(type=self.type, default=self.default, metavar=self.metavar)
            if self.choices is not None:
                kwargs["choices"] = self.choices
        add(flag, **kwargs)


SERVER = "the server"
SEARCH = "the search"
BOUNDS = "deadlines and bounds"
OUTPUT = "output"

OPTIONS: tuple[Option, ...] = (
    Option(
        "server",
        "server command template with {port} (and {host}), or one that prints 'LISTENING host:port';\n"
        "default: the bundled reference server, level-triggered",
        SERVER,
        metavar="CMD",
        pytest_name="--server-cmd",
    ),
    Option("attach", "test a server that is already running", SERVER, host_port, metavar="HOST:PORT",
           faces=frozenset({CLI})),
    Option("pid", "with --attach: the server's pid, to check cleanup, idle CPU, memory", SERVER,
           positive_int, faces=frozenset({CLI})),
    Option("allow-remote", "with --attach: allow a target outside loopback", SERVER, flag=True,
           faces=frozenset({CLI})),
    Option(
        "netns",
        "run the server and the clients in a private network namespace with small TCP buffers\n"
        "(tcp_wmem/tcp_rmem 4096 8192 16384: send() hits EAGAIN after ~16 KiB); default: when permitted",
        SERVER,
        negatable=True,
        faces=frozenset({CLI}),
    ),
    Option("max-examples", "scripts to try at most", SEARCH, positive_int, DEFAULT_MAX_EXAMPLES, "N",
           faces=frozenset({CLI})),
    Option("time-budget", "stop searching after this many seconds", SEARCH, seconds, DEFAULT_TIME_BUDGET,
           "SECONDS", faces=frozenset({CLI})),
    Option("shrink-budget", "extra seconds to shrink a violation", SEARCH, seconds, DEFAULT_SHRINK_BUDGET,
           "SECONDS", faces=frozenset({CLI})),
    Option("seed", "Hypothesis seed, for a run that draws the same scripts", SEARCH, int,
           faces=frozenset({CLI})),
    Option(
        "scripts",
        "full: every fault (default); short: no floods and no deliberate delays",
        SEARCH,
        default="full",
        choices=("full", "short"),
        faces=frozenset({CLI}),
    ),
    Option("no-scenarios", "skip the fd-exhaustion scenario (RLIMIT_NOFILE)", SEARCH, flag=True,
           faces=frozenset({CLI})),
    Option(
        "until-found",
        "stop searching once each of these properties has been violated\n"
        "(a known bug that only needs to be seen again: regression suites, the mutation self-test)",
        SEARCH,
        property_list,
        frozenset(),
        "PROP[,PROP]",
        faces=frozenset({CLI}),
    ),
    Option("no-database", "do not replay or save failures in .hypothesis/", SEARCH, flag=True,
           faces=frozenset({CLI})),
    Option("stall-timeout", "seconds without progress that count as a stall", BOUNDS, seconds,
           DEFAULT_LIMITS.stall_timeout, "S"),
    Option("cleanup-timeout", "seconds for the server's fds to return to the baseline", BOUNDS, seconds,
           DEFAULT_LIMITS.cleanup_timeout, "S"),
    Option("memory-bound", "MiB a server may hold for one client that sends without reading", BOUNDS,
           mebibytes, DEFAULT_LIMITS.memory_bound / MIB, "MIB"),
    Option("idle-cpu", "idle CPU above this fraction of a core is a busy loop", BOUNDS, fraction,
           DEFAULT_LIMITS.idle_cpu_fraction, "FRACTION"),
    Option("report", "write a JSON report here", OUTPUT, Path, metavar="PATH", faces=frozenset({CLI})),
    Option("artifacts", "where reproducers go", OUTPUT, Path, DEFAULT_ARTIFACTS, "DIR",
           faces=frozenset({CLI})),
    Option("quiet", "no progress display", OUTPUT, flag=True, faces=frozenset({CLI})),
    Option(
        "capture",
        "failures (default): replay each reproducer under a packet capture (scapy) and save\n"
        "repro-<property>.pcap beside it; always: capture every script too (judging graceful-fin\n"
        "on the wire; pcaps in ARTIFACTS/captures/); never: no capture",
        OUTPUT,
        default="failures",
        choices=("failures", "always", "never"),
        faces=frozenset({CLI}),
    ),
)

BY_NAME = {option.name: option for option in OPTIONS}


def for_face(face: str) -> Iterable[Option]:
    return (option for option in OPTIONS if face in option.faces)


def add_cli_options(parser: argparse.ArgumentParser) -> None:
    """The ``check`` command's options, in their groups."""
    groups: dict[str, Any] = {}
    for option in for_face(CLI):
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        option.add_to(groups[option.group].add_argument, option.cli_flag, option.dest)


def add_pytest_options(addoption: Callable[..., Any]) -> None:
    """The plugin's options: ``addoption`` is the ``epoll-harness`` group's."""
    for option in for_face(PYTEST):
        option.add_to(addoption, option.pytest_flag, option.pytest_dest)


def limits_from(value: Callable[[Option], Any], base: Limits = DEFAULT_LIMITS) -> Limits:
    """The limits set by the bounds options, ``value(option)`` reading each from either face."""
    return base.with_(
        stall_timeout=value(BY_NAME["stall-timeout"]),
        cleanup_timeout=value(BY_NAME["cleanup-timeout"]),
        memory_bound=int(value(BY_NAME["memory-bound"]) * MIB),
        idle_cpu_fraction=value(BY_NAME["idle-cpu"]),
    )
