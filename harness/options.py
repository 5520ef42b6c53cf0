"""Every option of both faces, declared once: ``epoll-harness check`` and the pytest plugin.

Each :class:`Option` has its name, how its value is read and checked, its
default, its help, the group it is listed in and the faces that show it. The
CLI builds its argparse groups from :data:`OPTIONS` and the plugin its
``epoll-harness`` group, so a knob has the same meaning, default and help in
both. The pytest face prefixes names with ``--harness-`` (pytest's own and
other plugins' options share one namespace); the server command is
``--server-cmd`` there.

Some options can also be set in the ``[tool.epoll-harness]`` table of the
user's ``pyproject.toml`` (:func:`read_table`), with the server's ``cwd`` and
``env``, which have no command-line form: the command line beats the table,
and the table beats the default (:func:`resolve`).
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.model.errors import UsageError
from harness.model.limits import DEFAULT_LIMITS, MIB, Limits
from harness.model.properties import PROPERTIES
from harness.run.runner import (
    DEFAULT_ARTIFACTS,
    DEFAULT_CONFIRM,
    DEFAULT_MAX_EXAMPLES,
    DEFAULT_SHRINK_BUDGET,
    DEFAULT_TIME_BUDGET,
)

CLI = "cli"
PYTEST = "pytest"
BOTH = frozenset({CLI, PYTEST})
DEFAULT_STARTUP_TIMEOUT = DEFAULT_LIMITS.startup_timeout
TABLE = "tool.epoll-harness"


# -- how values are read: each raises argparse.ArgumentTypeError with what was expected -------------


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def replay_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of replays (0 or more), not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of replays (0 or more), not {value}")
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
    """One knob. ``name`` is the CLI flag without dashes; ``dest`` the attribute it is read into.

    ``in_table``: it may also be set in ``[tool.epoll-harness]`` (under ``name``); it is then
    declared with a default of None, so that :func:`resolve` can tell "not given" apart.
    """

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
    in_table: bool = False

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
        table = f"; or {self.name} in [{TABLE}]" if self.in_table else ""
        return f"{self.help} (default {shown}{table})"

    def add_to(self, add: Callable[..., Any], flag: str, dest: str) -> None:
        """Declare this option with ``add`` (argparse's ``add_argument`` or pytest's ``addoption``)."""
        kwargs: dict[str, Any] = {"dest": dest, "help": self.help_text()}
        if self.flag:
            kwargs["action"] = "store_true"
        elif self.negatable:
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["default"] = None
        else:
            default = None if self.in_table else self.default
            kwargs.update(type=self.type, default=default, metavar=self.metavar)
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
        f"default: the bundled reference server, level-triggered; or server in [{TABLE}]",
        SERVER,
        metavar="CMD",
        pytest_name="--server-cmd",
        in_table=True,
    ),
    Option("attach", "test a server that is already running", SERVER, host_port, metavar="HOST:PORT"),
    Option(
        "pid",
        "with --attach: the server's pid, to check cleanup, idle CPU, memory, survival;\n"
        "it must own the listening socket (it or one of its children)",
        SERVER,
        positive_int,
    ),
    Option("allow-remote", "with --attach: allow a target outside loopback", SERVER, flag=True),
    Option(
        "startup-timeout",
        "seconds the server may take to listen (or print LISTENING) after it starts",
        SERVER,
        seconds,
        DEFAULT_STARTUP_TIMEOUT,
        "S",
        in_table=True,
    ),
    Option(
        "netns",
        "run the server and the clients in a private network namespace with small TCP buffers\n"
        "(tcp_wmem/tcp_rmem 4096 8192 16384: send() hits EAGAIN after ~16 KiB); default: when permitted",
        SERVER,
        negatable=True,
    ),
    Option(
        "max-examples",
        f"scripts to try at most (default {DEFAULT_MAX_EXAMPLES}; no limit when --time-budget is given;\n"
        "under pytest: the Hypothesis profile's max_examples, this sets it)",
        SEARCH,
        positive_int,
        None,
        "N",
    ),
    Option(
        "time-budget",
        f"stop searching after this many seconds (default {DEFAULT_TIME_BUDGET:.0f};\n"
        "under pytest: per test, default none)",
        SEARCH,
        seconds,
        None,
        "SECONDS",
    ),
    Option(
        "confirm",
        "replays of each shrunk reproducer that confirm it before it fails the run; one that never\n"
        "replays is reported as unconfirmed (exit 0). 0: no replays, every violation fails",
        SEARCH,
        replay_count,
        DEFAULT_CONFIRM,
        "K",
        faces=frozenset({CLI}),
    ),
    Option("shrink-budget", "extra seconds to shrink a violation", SEARCH, seconds, DEFAULT_SHRINK_BUDGET,
           "SECONDS"),
    Option("seed", "Hypothesis seed, for a run that draws the same scripts", SEARCH, int),
    Option(
        "scripts",
        "full: every fault (default); short: no floods and no deliberate delays",
        SEARCH,
        default="full",
        choices=("full", "short"),
    ),
    Option("only", "check only these properties", SEARCH, property_list, None, "PROP[,PROP]"),
    Option("skip", "do not check these properties", SEARCH, property_list, None, "PROP[,PROP]"),
    Option("no-scenarios", "skip the fd-exhaustion scenario (RLIMIT_NOFILE)", SEARCH, flag=True),
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
           DEFAULT_LIMITS.stall_timeout, "S", in_table=True),
    Option("cleanup-timeout", "seconds for the server's fds to return to the baseline", BOUNDS, seconds,
           DEFAULT_LIMITS.cleanup_timeout, "S", in_table=True),
    Option("memory-bound", "MiB a server may hold for one client that sends without reading", BOUNDS,
           mebibytes, DEFAULT_LIMITS.memory_bound / MIB, "MIB", in_table=True),
    Option("idle-cpu", "idle CPU above this fraction of a core is a busy loop", BOUNDS, fraction,
           DEFAULT_LIMITS.idle_cpu_fraction, "FRACTION", in_table=True),
    Option("report", "write a JSON report here (under pytest: always, not only after a violation)",
           OUTPUT, Path, metavar="PATH"),
    Option("artifacts", "where reproducers, their pcaps and (under pytest) report.json go", OUTPUT, Path,
           DEFAULT_ARTIFACTS, "DIR"),
    Option("quiet", "no progress display", OUTPUT, flag=True, faces=frozenset({CLI})),
    Option(
        "capture",
        "failures (default): replay each reproducer under a packet capture (scapy) and save\n"
        "its .pcap beside it; always: capture every script too (judging graceful-fin\n"
        "on the wire; pcaps in ARTIFACTS/captures/); never: no capture",
        OUTPUT,
        default="failures",
        choices=("failures", "always", "never"),
    ),
)

BY_NAME = {option.name: option for option in OPTIONS}
# Keys of [tool.epoll-harness] that have no command-line form.
TABLE_ONLY = ("cwd", "env")


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


# -- [tool.epoll-harness] in pyproject.toml -------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """The ``[tool.epoll-harness]`` table of a pyproject.toml, read and checked (empty when none)."""

    path: Path | None = None
    values: Mapping[str, Any] = field(default_factory=dict)  # option name -> value, read like its flag
    cwd: Path | None = None  # the server's working directory (relative to the pyproject.toml's)
    env: Mapping[str, str] = field(default_factory=dict)  # added to the server's environment


def find_pyproject(start: Path) -> Path | None:
    """The closest pyproject.toml in ``start`` or a directory above it."""
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def read_table(start: Path) -> Table:
    """``[tool.epoll-harness]`` of the closest pyproject.toml from ``start`` upward; UsageError if bad."""
    path = find_pyproject(start.resolve())
    if path is None:
        return Table()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}. Fix the file (its [{TABLE}] table is read).") from exc
    raw = document.get("tool", {}).get("epoll-harness")
    if raw is None:
        return Table(path)
    where = f"{path}: [{TABLE}]"
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be a table")
    known = [o.name for o in OPTIONS if o.in_table] + list(TABLE_ONLY)
    values: dict[str, Any] = {}
    cwd: Path | None = None
    env: dict[str, str] = {}
    for key, value in raw.items():
        if key not in known:
            raise UsageError(f"{where} has an unknown key {key!r}; known: {', '.join(known)}")
        if key == "cwd":
            if not isinstance(value, str) or not value:
                raise UsageError(f"{where} cwd must be a directory (a string), not {value!r}")
            cwd = (path.parent / value).resolve()
            if not cwd.is_dir():
                raise UsageError(f"{where} cwd = {value!r}: {cwd} is not a directory")
        elif key == "env":
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in value.items()
            ):
                raise UsageError(f'{where} env must be a table of strings, e.g. env = {{ PORT_FILE = "x" }}')
            env = dict(value)
        else:
            values[key] = _table_value(BY_NAME[key], value, where)
    return Table(path, values, cwd, env)


def _table_value(option: Option, value: Any, where: str) -> Any:
    if option.type is None:  # a string (the server command)
        if not isinstance(value, str):
            raise UsageError(f"{where} {option.name} must be a string, not {value!r}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{where} {option.name} must be a number, not {value!r}")
    try:
        return option.type(str(value))
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"{where} {option.name} = {value!r}: {exc}") from None


def resolve(option: Option, given: Any, table: Table) -> Any:
    """The value in force: given on the command line, else from the table, else the default."""
    if given is not None:
        return given
    if option.in_table and option.name in table.values:
        return table.values[option.name]
    return option.default


def duration(text: str) -> float:
    """``90``, ``90s``, ``1.5m``, ``2h``: seconds (argparse's type for durations)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration such as 60, 60s, 2m or 2h, not {text!r}")
    value = float(match[1]) * {"m": 60, "min": 60, "h": 3600}.get(match[2] or "s", 1)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, not {text!r}")
    return value


def default_jobs() -> int:
    """The cores this process may run on: the default number of workers and jobs."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def limits_from(value: Callable[[Option], Any], base: Limits = DEFAULT_LIMITS) -> Limits:
    """The limits set by the bounds options, ``value(option)`` reading each from either face."""
    return base.with_(
        stall_timeout=value(BY_NAME["stall-timeout"]),
        cleanup_timeout=value(BY_NAME["cleanup-timeout"]),
        memory_bound=int(value(BY_NAME["memory-bound"]) * MIB),
        idle_cpu_fraction=value(BY_NAME["idle-cpu"]),
        startup_timeout=value(BY_NAME["startup-timeout"]),
    )


def unselected(only: frozenset[str] | None, skip: frozenset[str] | None) -> frozenset[str]:
    """The properties ``--only``/``--skip`` leave out; UsageError when none is left."""
    left = frozenset(only if only is not None else PROPERTIES) - (skip or frozenset())
    if not left:
        raise UsageError("--only and --skip leave no property to check")
    return frozenset(PROPERTIES) - left
