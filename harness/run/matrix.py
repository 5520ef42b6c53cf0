"""The conformance matrix: many servers × every property, each cell with its expected verdict.

A matrix run reads a ``servers.toml`` (:func:`load_servers`), runs one
``epoll-harness check`` per server, each in a process of its own (so each
enters a network lab of its own), ``jobs`` at a time (:func:`run_matrix`), and
splits each server's ``RunReport`` into one :class:`Cell` per property. A cell's
verdict is read from :meth:`PropertyStats.status`:

========== ========================================================================
pass        the property held in every script that put it to the test
non-strict  legal but impolite behaviour was seen (reported, never a failure)
fail        a violation that replays (confirmed k/n)
unconfirmed a violation seen once that did not replay
not exercised no script put the property to the test
skipped     not checked in this run (not selected, or graceful-fin without captures)
error       the server could not be checked (it did not start, the check crashed
            or did not finish): never expected, always a mismatch
========== ========================================================================

Expectations make the matrix a regression suite: a property a server lists in
``expected`` must get that verdict (or one of a list of them, for a racy
finding), every other property must pass; a cell *matches* when its verdict
is one expected, when it is skipped (not judged), or when it is unconfirmed
and ``pass`` or ``fail`` was expected (seen once and never again: evidence for
neither, as ``check`` does not fail a run on it). The run fails only on cells
that do not match.

``--shard K/N`` runs servers K-1, K-1+N, K-1+2N ... of the file;
:func:`merge_reports` joins the shards' reports into one.

This module is plain data and subprocesses; the report files and the page are
written by :mod:`harness.run.matrix_report` and :mod:`harness.run.matrix_page`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__
from harness.drive.process import ServerCommand
from harness.model.errors import UsageError
from harness.model.properties import PROPERTIES
from harness.run.report import PropertyStats, ViolationRecord, safe_name

MATRIX_FORMAT = "epoll-harness-matrix/1"

PASS = "pass"
NON_STRICT = "non-strict"
FAIL = "fail"
UNCONFIRMED = "unconfirmed"
NOT_EXERCISED = "not exercised"
SKIPPED = "skipped"
ERROR = "error"

#: Every verdict a cell can have, with what it means (the page's legend says the same).
VERDICTS: dict[str, str] = {
    PASS: "the property held in every script that put it to the test",
    NON_STRICT: "legal but impolite behaviour was seen: reported, never a failure",
    FAIL: "violated, and the shrunk reproducer fails again when replayed (confirmed k/n)",
    UNCONFIRMED: "violated once, but the reproducer did not fail again in its replays",
    NOT_EXERCISED: "no script put this property to the test (never counted as a pass)",
    SKIPPED: "not checked in this run (not selected, or graceful-fin without --capture always)",
    ERROR: "the server could not be checked: it did not start, or the check crashed or ran out of time",
}
#: What an expectation may name (``error`` is never expected).
EXPECTABLE = tuple(v for v in VERDICTS if v != ERROR)
#: ``PropertyStats.status()`` word -> cell verdict.
_FROM_STATUS = {
    "ok": PASS,
    "violated": FAIL,
    "unconfirmed": UNCONFIRMED,
    "non-strict": NON_STRICT,
    "skipped": SKIPPED,
    "not exercised": NOT_EXERCISED,
}

#: How an expectation of several verdicts (a racy finding) is written in reports: "fail or pass".
ANY_OF = " or "
_SERVER_KEYS = ("name", "command", "cwd", "env", "notes", "expected")
_DEFAULT_KEYS = ("cwd", "env", "expected")
PYTHON_FIELD = "{python}"


class MatrixError(UsageError):
    """A servers file, a shard or a report that cannot be used; the message says what to fix."""


# -- the servers file -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSpec:
    """One row of the matrix, as the servers file gives it (``cwd`` resolved, ``{python}`` filled)."""

    name: str
    command: str  # the {host}/{port} template, as written (with {python} filled in)
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)
    notes: str = ""
    # property -> verdict ("fail or pass" for several); unlisted properties: pass
    expected: Mapping[str, str] = field(default_factory=dict)
    index: int = 0  # its place in the file

    @property
    def slug(self) -> str:
        """A file name for the server (unique within a file: :func:`load_servers` checks)."""
        return safe_name(self.name)

    def expectation(self, prop: str) -> str:
        return self.expected.get(prop, PASS)

    def template(self) -> str:
        """The command run in ``cwd`` with ``env`` added, as one template: ``env -C CWD K=V ... command``.

        The same form as ``harness.face.server_template`` (the entry points' helper, which this
        layer may not import), so that the reproducers a check saves replay from any directory.
        """
        words = [shutil.which("env") or "/usr/bin/env", "-C", str(self.cwd)]
        words += [f"{key}={value}" for key, value in self.env.items()]
        prefix = " ".join(shlex.quote(word).replace("{", "{{").replace("}", "}}") for word in words)
        return f"{prefix} {self.command}"


def load_servers(path: Path) -> list[ServerSpec]:
    """Read and check a servers file; :class:`MatrixError` with one paragraph on what is wrong.

    The file is TOML: an optional ``[defaults]`` table (``cwd``, ``env``, ``expected``: every
    server's, each server's own win) and one
    ``[[server]]`` table per server with ``name``, ``command`` and optional ``cwd``
    (relative to the file's folder, which is also the default), ``env``, ``notes``
    and ``expected = { "property" = "verdict" }``.
    """
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MatrixError(f"cannot read the servers file {where}: {exc.strerror or exc}.") from None
    except UnicodeDecodeError:
        raise MatrixError(f"the servers file {where} is not UTF-8 text; a servers file is TOML.") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(
            f"the servers file {where} is not valid TOML: {exc}. Each server is a [[server]] table with "
            'name = "...", command = "... {port} ..." and optionally cwd, env, notes and '
            'expected = { "property" = "verdict" }.'
        ) from None
    unknown = sorted(set(document) - {"server", "defaults"})
    if unknown:
        raise MatrixError(
            f"{where}: unknown top-level key {unknown[0]!r}; a servers file has [[server]] tables and an "
            "optional [defaults] table (cwd, env, expected)."
        )
    folder = path.resolve().parent
    defaults = document.get("defaults", {})
    if not isinstance(defaults, dict):
        raise MatrixError(f"{where}: [defaults] must be a table with cwd, env and/or expected.")
    for key in defaults:
        if key not in _DEFAULT_KEYS:
            raise MatrixError(f"{where}: [defaults] has an unknown key {key!r}; known: cwd, env, expected.")
    default_cwd = _cwd(defaults.get("cwd"), folder, f"{where}: [defaults]") if "cwd" in defaults else folder
    default_env = _env(defaults.get("env", {}), f"{where}: [defaults]")
    default_expected = _expected(defaults.get("expected", {}), f"{where}: [defaults]")
    servers = document.get("server")
    if not isinstance(servers, list) or not servers:
        raise MatrixError(
            f'{where} lists no server: add one [[server]] table per server, with name = "..." and '
            'command = "... {port} ..." (the command template of epoll-harness check --server).'
        )
    specs: list[ServerSpec] = []
    slugs: dict[str, str] = {}
    for index, raw in enumerate(servers):
        spec = _server(raw, index, where, folder, default_cwd, default_env, default_expected)
        if spec.slug in slugs:
            raise MatrixError(
                f"{where}: server {spec.name!r} has the same name as {slugs[spec.slug]!r} (names are used "
                "for file names: give each server a distinct name)."
            )
        slugs[spec.slug] = spec.name
        specs.append(spec)
    return specs


def _server(
    raw: Any,
    index: int,
    where: str,
    folder: Path,
    default_cwd: Path,
    default_env: Mapping[str, str],
    default_expected: Mapping[str, str],
) -> ServerSpec:
    if not isinstance(raw, dict):
        raise MatrixError(f"{where}: server {index + 1} is not a table; write each server as [[server]].")
    name = raw.get("name")
    here = f"{where}: server {index + 1}" + (f" ({name!r})" if isinstance(name, str) and name else "")
    for key in raw:
        if key not in _SERVER_KEYS:
            raise MatrixError(f"{here} has an unknown key {key!r}; known: {', '.join(_SERVER_KEYS)}.")
    if not isinstance(name, str) or not name.strip():
        raise MatrixError(f'{here} has no name: give it name = "..." (shown in the report and the page).')
    command = raw.get("command")
    if not isinstance(command, str) or not command.strip():
        raise MatrixError(
            f'{here} has no command: give it command = "./server --port {{port}}" ({{port}} and {{host}} '
            "are filled in; {python} is the interpreter running the harness)."
        )
    command = command.replace(PYTHON_FIELD, shlex.quote(sys.executable).replace("{", "{{").replace("}", "}}"))
    try:
        ServerCommand(command)
    except UsageError as exc:
        raise MatrixError(f"{here}: {exc}.") from None
    cwd = _cwd(raw["cwd"], folder, here) if "cwd" in raw else default_cwd
    env = {**default_env, **_env(raw.get("env", {}), here)}
    notes = raw.get("notes", "")
    if not isinstance(notes, str):
        raise MatrixError(f"{here}: notes must be a string, not {notes!r}.")
    wanted = {**default_expected, **_expected(raw.get("expected", {}), here)}
    return ServerSpec(name.strip(), command, cwd, env, notes.strip(), wanted, index)


def _expected(expected: Any, here: str) -> dict[str, str]:
    if not isinstance(expected, dict):
        raise MatrixError(f'{here}: expected must be a table such as {{ "half-close" = "fail" }}.')
    wanted: dict[str, str] = {}
    for prop, verdict in expected.items():
        if prop not in PROPERTIES:
            raise MatrixError(
                f"{here}: expected names an unknown property {prop!r}; known: {', '.join(PROPERTIES)}."
            )
        verdicts = verdict if isinstance(verdict, list) else [verdict]
        if not verdicts or any(v not in EXPECTABLE for v in verdicts):
            raise MatrixError(
                f"{here}: expected {prop!r} = {verdict!r} is not a verdict; known: {', '.join(EXPECTABLE)} "
                '(or a list of them for a racy finding, e.g. ["fail", "pass"]).'
            )
        wanted[prop] = ANY_OF.join(v for v in VERDICTS if v in verdicts)
    return wanted


def _cwd(value: Any, folder: Path, here: str) -> Path:
    if not isinstance(value, str) or not value:
        raise MatrixError(f"{here}: cwd must be a directory (a string, relative to the file's folder).")
    cwd = (folder / value).resolve()
    if not cwd.is_dir():
        raise MatrixError(f"{here}: cwd = {value!r}: {cwd} is not a directory.")
    return cwd


def _env(value: Any, here: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in value.items()
    ):
        raise MatrixError(f'{here}: env must be a table of strings, e.g. env = {{ NODE_ENV = "test" }}.')
    return dict(value)


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` with 1 <= K <= N; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"expected K/N (this job's slice and the number of slices), not {text!r}")
    k, n = int(match[1]), int(match[2])
    if not 1 <= k <= n:
        raise ValueError(f"expected K/N with 1 <= K <= N, not {text!r}")
    return k, n


def shard_of(specs: Sequence[ServerSpec], shard: tuple[int, int] | None) -> list[ServerSpec]:
    """This shard's servers: every N-th of the file, from the K-th (deterministic, order kept)."""
    if shard is None:
        return list(specs)
    k, n = shard
    return list(specs[k - 1 :: n])


# -- cells ------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    """One server × property."""

    server: str
    property_name: str
    verdict: str
    expected: str
    detail: str = ""  # why (not exercised, skipped), or the finding's message
    examples: int = 0
    level: str | None = None  # of the finding shown: "fail" or "non-strict"
    confirmed: str | None = None  # "k/n" replays that failed again
    seconds_to_first: float | None = None  # seconds from the start of the check to the first finding
    reproducer: str | None = None  # paths relative to the output directory
    reproducer_page: str | None = None
    pcap: str | None = None
    steps: int | None = None
    bytes_sent: int | None = None
    also: list[str] = field(default_factory=list)
    findings: int = 0
    last_output: str | None = None  # the server's last output, when the finding says it died

    @property
    def matches(self) -> bool:
        return verdict_matches(self.verdict, self.expected)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["matches"] = self.matches
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Cell:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in known})

    def mismatch(self) -> str:
        """One line on how the verdict differs from the expectation."""
        head = f"{self.server} × {self.property_name}: expected {self.expected}, got {self.verdict}"
        detail, _, more = self.detail.partition("\n")
        if more:
            detail += " [...]"  # a server's last output: in the report and on the page
        if self.verdict in (FAIL, NON_STRICT) and self.expected == PASS:
            return f"{head} (a new finding): {detail}"
        if PASS not in self.expected.split(ANY_OF) and self.verdict == PASS:
            return f"{head}: not seen in {self.examples} scripts (fixed, or not found within the budget)"
        return f"{head}" + (f": {detail}" if detail else "")


def verdict_matches(verdict: str, expected: str) -> bool:
    """Does ``verdict`` meet ``expected`` (one verdict, or several joined by " or ")?"""
    allowed = expected.split(ANY_OF)
    if verdict in allowed or verdict == SKIPPED:
        return True
    return verdict == UNCONFIRMED and (PASS in allowed or FAIL in allowed)


_LAST_OUTPUT = re.compile(r"Its last output:\n(.*)", re.DOTALL)


def last_output_of(message: str) -> str | None:
    """The server's last lines, from a message that quotes them (a server that died)."""
    match = _LAST_OUTPUT.search(message)
    if not match:
        return "(it printed nothing)" if "It printed nothing." in message else None
    lines = [line[4:] if line.startswith("    ") else line for line in match[1].splitlines()]
    return "\n".join(lines).rstrip() or None


def reproducer_page_for(server_slug: str, reproducer: str) -> str:
    """Where the readable page of a reproducer goes (relative to the output directory)."""
    return f"reproducers/{server_slug}--{Path(reproducer).stem}.html"


def _relative(path: str | None, out: Path) -> str | None:
    if not path:
        return None
    absolute = Path(path)
    if not absolute.is_absolute():
        return path
    try:
        return absolute.relative_to(out).as_posix()
    except ValueError:
        return str(absolute)


def _stats_from_json(obj: Mapping[str, Any]) -> PropertyStats:
    known = {f.name for f in dataclasses.fields(ViolationRecord)}

    def record(raw: Mapping[str, Any]) -> ViolationRecord:
        values: dict[str, Any] = {
            k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in known
        }
        return ViolationRecord(**values)

    return PropertyStats(
        examples=int(obj.get("examples") or 0),
        seconds=float(obj.get("seconds") or 0.0),
        skipped=obj.get("skipped"),
        violations=[record(v) for v in obj.get("violations") or []],
        non_strict=[record(v) for v in obj.get("non_strict") or []],
    )


def cells_from_report(spec: ServerSpec, report: Mapping[str, Any], out: Path) -> list[Cell]:
    """Split one check's report.json into this server's cells (paths relative to ``out``)."""
    cells = []
    properties = report.get("properties") or {}
    for prop in PROPERTIES:
        raw = properties.get(prop)
        expected = spec.expectation(prop)
        if raw is None:
            cells.append(Cell(spec.name, prop, SKIPPED, expected, "not in this harness version's report"))
            continue
        stats = _stats_from_json(raw)
        word, why = stats.status()
        verdict = _FROM_STATUS.get(word, ERROR)
        cell = Cell(spec.name, prop, verdict, expected, why, examples=stats.examples)
        records = (
            stats.violations
            if verdict in (FAIL, UNCONFIRMED)
            else (stats.non_strict if verdict == NON_STRICT else [])
        )
        if records:
            shown = next((r for r in records if r.fails), records[0])
            timed = [r.seconds_to_find for r in records if r.seconds_to_find is not None]
            cell.detail = shown.message
            cell.level = shown.level
            cell.findings = len(records)
            if shown.replays:
                cell.confirmed = f"{shown.confirmed or 0}/{shown.replays}"
            cell.seconds_to_first = min(timed) if timed else None
            cell.reproducer = _relative(shown.reproducer, out)
            cell.pcap = _relative(shown.capture, out)
            cell.steps, cell.bytes_sent = shown.steps, shown.bytes_sent
            cell.also = list(shown.also)
            cell.last_output = last_output_of(shown.message)
            if cell.reproducer is not None:
                cell.reproducer_page = reproducer_page_for(spec.slug, cell.reproducer)
        cells.append(cell)
    return cells


# -- one server -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOptions:
    """How each server is checked: the ``check`` options a matrix passes on."""

    budget: float = 60.0
    shrink_budget: float | None = None  # None: the same as the budget, at most the check's default
    max_examples: int | None = None
    seed: int | None = None
    scripts: str = "full"
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    no_scenarios: bool = False
    capture: str = "always"  # graceful-fin is judged only on captured packets
    until_expected: bool = False  # stop a server's search once each failure it is expected to show is seen
    jobs: int = 1
    timeout: float | None = None  # per server; None: from the budgets (see hard_timeout)

    def shrink(self) -> float:
        return self.shrink_budget if self.shrink_budget is not None else min(self.budget, 60.0)

    def hard_timeout(self) -> float:
        """How long one server's check may run before it is stopped (its budgets bound it well below)."""
        if self.timeout is not None:
            return self.timeout
        return 2 * (self.budget + self.shrink()) + 240

    def check_arguments(self) -> list[str]:
        args = ["--time-budget", f"{self.budget:g}", "--shrink-budget", f"{self.shrink():g}", "--no-database"]
        args += ["--capture", self.capture, "--scripts", self.scripts]
        if self.max_examples is not None:
            args += ["--max-examples", str(self.max_examples)]
        if self.seed is not None:
            args += ["--seed", str(self.seed)]
        if self.only:
            args += ["--only", ",".join(self.only)]
        if self.skip:
            args += ["--skip", ",".join(self.skip)]
        if self.no_scenarios:
            args.append("--no-scenarios")
        return args

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["shrink_budget"] = self.shrink()
        out["only"], out["skip"] = list(self.only), list(self.skip)
        return out


@dataclass
class ServerResult:
    """One row: how the server's check went, and its cells."""

    name: str
    index: int
    command: str
    template: str
    cwd: str
    env: dict[str, str]
    notes: str
    expected: dict[str, str]
    exit_status: int | None = None
    seconds: float = 0.0
    examples: int = 0
    restarts: int = 0
    network: str = ""
    seed: int | None = None
    error: str | None = None  # why the server could not be checked
    last_output: str | None = None  # the server's last output, when it died or did not start
    log: str | None = None  # the check's output (relative path)
    check_report: str | None = None  # the check's own report.json (relative path)
    evidence: dict[str, int] = field(default_factory=dict)
    cells: list[Cell] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return safe_name(self.name)

    @property
    def mismatches(self) -> list[Cell]:
        return [cell for cell in self.cells if not cell.matches]

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "cells"}
        out["cells"] = [cell.to_json() for cell in self.cells]
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ServerResult:
        known = {f.name for f in dataclasses.fields(cls)} - {"cells"}
        result = cls(**{k: v for k, v in obj.items() if k in known})
        result.cells = [Cell.from_json(c) for c in obj.get("cells") or []]
        return result


def _result_for(spec: ServerSpec) -> ServerResult:
    return ServerResult(
        spec.name,
        spec.index,
        spec.command,
        spec.template(),
        str(spec.cwd),
        dict(spec.env),
        spec.notes,
        dict(spec.expected),
    )


def _error_cells(spec: ServerSpec, why: str) -> list[Cell]:
    return [Cell(spec.name, prop, ERROR, spec.expectation(prop), why) for prop in PROPERTIES]


def _pdeathsig() -> Callable[[], None] | None:
    """A preexec function that has the child SIGTERMed if the matrix process dies (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def setup() -> None:
        prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG

    return setup


_PREEXEC = _pdeathsig()


class _Running:
    """One server's check, running as ``python -m harness.cli check`` in a process group of its own."""

    def __init__(self, spec: ServerSpec, options: RunOptions, out: Path) -> None:
        self.spec = spec
        self.options = options
        self.out = out
        self.folder = out / "servers" / spec.slug
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self.report_path = self.folder / "check-report.json"
        self.log_path = self.folder / "check.log"
        argv = [
            sys.executable,
            "-m",
            "harness.cli",
            "check",
            "--server",
            spec.template(),
            "--report",
            str(self.report_path),
            "--artifacts",
            str(self.folder / "artifacts"),
            *options.check_arguments(),
        ]
        expected_failures = [p for p in PROPERTIES if spec.expected.get(p) == FAIL]
        if options.until_expected and expected_failures:
            argv += ["--until-found", ",".join(expected_failures)]
        root = str(Path(__file__).resolve().parents[2])  # so that -m harness.cli works uninstalled too
        env = {**os.environ, "COLUMNS": "160", "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        self.started = time.monotonic()
        with self.log_path.open("wb") as log:
            log.write(f"$ {shlex.join(argv)}\n\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                env=env,
                start_new_session=True,
                preexec_fn=_PREEXEC,
            )

    def overdue(self) -> bool:
        return time.monotonic() - self.started > self.options.hard_timeout()

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the check's group (the check stops its servers), SIGKILL it after ``grace`` s."""
        if self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def result(self, timed_out: bool = False) -> ServerResult:
        spec = self.spec
        result = _result_for(spec)
        result.exit_status = self.popen.returncode
        result.seconds = round(time.monotonic() - self.started, 1)
        result.log = self.log_path.relative_to(self.out).as_posix()
        if timed_out:
            why = (
                f"the check did not finish within {self.options.hard_timeout():.0f} s and was stopped "
                f"(see {result.log})"
            )
            result.error, result.cells = why, _error_cells(spec, why)
            return result
        report: dict[str, Any] | None = None
        if self.report_path.is_file():
            try:
                report = json.loads(self.report_path.read_text())
            except (OSError, ValueError):
                report = None
        if report is None or self.popen.returncode not in (0, 1):
            why = self._failure_words()
            result.error, result.cells = why, _error_cells(spec, why)
            result.last_output = last_output_of(self._log_tail(20_000))
            return result
        result.check_report = self.report_path.relative_to(self.out).as_posix()
        result.examples = int(report.get("examples") or 0)
        result.restarts = int(report.get("server_restarts") or 0)
        result.network = str(report.get("network") or "")
        result.seed = report.get("seed")
        result.evidence = dict(report.get("evidence") or {})
        result.cells = cells_from_report(spec, report, self.out)
        result.last_output = next((c.last_output for c in result.cells if c.last_output), None)
        return result

    def _log_tail(self, size: int) -> str:
        try:
            data = self.log_path.read_bytes()[-size:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace")

    def _failure_words(self) -> str:
        code = self.popen.returncode
        lines = [line for line in self._log_tail(4000).splitlines() if line.strip()]
        said = next(
            (line.partition("error: ")[2] for line in reversed(lines) if "epoll-harness: error:" in line),
            "",
        )
        what = {
            2: "the server could not be checked",
            3: "the harness hit an internal error",
            130: "the check was interrupted",
        }
        head = f"{what.get(code or 0, 'the check failed')} (check exit status {code})"
        return f"{head}: {said}" if said else f"{head}; see the log"


def run_servers(
    specs: Sequence[ServerSpec],
    options: RunOptions,
    out: Path,
    progress: Callable[[ServerResult, int, int], None] | None = None,
    poll: float = 0.2,
) -> list[ServerResult]:
    """Check every server, ``options.jobs`` at a time; results in the file's order.

    Each check is a process of its own (``python -m harness.cli check``): each
    enters its own network lab, and a crash or a hang of one leaves the others
    alone. A KeyboardInterrupt stops every check still running (each stops its
    servers) before it goes on up.
    """
    out = out.resolve()
    waiting = list(specs)
    running: list[_Running] = []
    done: list[ServerResult] = []
    try:
        while waiting or running:
            while waiting and len(running) < max(1, options.jobs):
                running.append(_Running(waiting.pop(0), options, out))
            time.sleep(poll)
            for job in list(running):
                timed_out = False
                if job.popen.poll() is None:
                    if not job.overdue():
                        continue
                    job.stop()
                    timed_out = True
                running.remove(job)
                result = job.result(timed_out)
                done.append(result)
                if progress is not None:
                    progress(result, len(done), len(specs))
    except BaseException:
        for job in running:
            try:
                os.killpg(job.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for job in running:
            job.stop()
        raise
    return sorted(done, key=lambda r: r.index)


# -- the whole matrix -------------------------------------------------------------------------------------


@dataclass
class MatrixReport:
    servers: list[ServerResult]
    servers_file: str = ""
    total_servers: int = 0  # in the whole file (a shard runs some of them)
    shard: tuple[int, int] | None = None
    shards: list[str] = field(default_factory=list)  # "K/N" of each shard merged in
    options: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    command: str = ""
    harness_version: str = __version__
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def cells(self) -> list[Cell]:
        return [cell for server in self.servers for cell in server.cells]

    @property
    def mismatches(self) -> list[Cell]:
        return [cell for cell in self.cells if not cell.matches]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def counts(self) -> dict[str, int]:
        found = {verdict: 0 for verdict in VERDICTS}
        for cell in self.cells:
            found[cell.verdict] = found.get(cell.verdict, 0) + 1
        return found

    def to_json(self) -> dict[str, Any]:
        cells = self.cells
        return {
            "format": MATRIX_FORMAT,
            "harness_version": self.harness_version,
            "created": self.created,
            "command": self.command,
            "servers_file": self.servers_file,
            "total_servers": self.total_servers,
            "shard": f"{self.shard[0]}/{self.shard[1]}" if self.shard else None,
            "shards": self.shards,
            "seconds": round(self.seconds, 1),
            "options": self.options,
            "notes": self.notes,
            "properties": dict(PROPERTIES),
            "verdicts": dict(VERDICTS),
            "summary": {
                "servers": len(self.servers),
                "cells": len(cells),
                "matching": sum(1 for c in cells if c.matches),
                "mismatches": len(cells) - sum(1 for c in cells if c.matches),
                "verdicts": self.counts(),
            },
            "ok": self.ok,
            "mismatches": [cell.mismatch() for cell in self.mismatches],
            "servers": [server.to_json() for server in self.servers],
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> MatrixReport:
        where = str(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise MatrixError(
                f"{where} does not exist: give the output directory of an epoll-harness matrix run "
                "(one that holds its report.json)."
            ) from None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise MatrixError(f"cannot read the matrix report {where}: {exc}.") from None
        if not isinstance(obj, dict) or obj.get("format") != MATRIX_FORMAT:
            raise MatrixError(f"{where} is not a matrix report (format {MATRIX_FORMAT}).")
        shard = obj.get("shard")
        try:
            report = cls(
                servers=[ServerResult.from_json(s) for s in obj.get("servers") or []],
                servers_file=str(obj.get("servers_file") or ""),
                total_servers=int(obj.get("total_servers") or 0),
                shard=parse_shard(shard) if shard else None,
                shards=list(obj.get("shards") or []),
                options=dict(obj.get("options") or {}),
                created=str(obj.get("created") or ""),
                command=str(obj.get("command") or ""),
                harness_version=str(obj.get("harness_version") or ""),
                seconds=float(obj.get("seconds") or 0.0),
                notes=list(obj.get("notes") or []),
            )
        except (TypeError, ValueError) as exc:
            raise MatrixError(f"{where} is not a valid matrix report: {exc}.") from None
        return report


def run_matrix(
    specs: Sequence[ServerSpec],
    options: RunOptions,
    out: Path,
    *,
    servers_file: Path | None = None,
    shard: tuple[int, int] | None = None,
    command: str = "",
    progress: Callable[[ServerResult, int, int], None] | None = None,
) -> MatrixReport:
    """Run this shard's servers (all of them without a shard) and return the report (not yet written)."""
    started = time.monotonic()
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # when the run started
    chosen = shard_of(specs, shard)
    results = run_servers(chosen, options, out, progress)
    return MatrixReport(
        servers=results,
        servers_file=str(servers_file.resolve()) if servers_file else "",
        total_servers=len(specs),
        shard=shard,
        shards=[f"{shard[0]}/{shard[1]}"] if shard else [],
        options=options.to_json(),
        created=created,
        command=command,
        seconds=time.monotonic() - started,
    )


def merge_reports(parts: Sequence[tuple[Path, MatrixReport]], out: Path) -> MatrixReport:
    """Join shards' reports into one, copying each server's files from its shard's folder into ``out``.

    The shards must be slices of one servers file: no server twice, and none
    missing (every K of K/N present). MatrixError says what is wrong.
    """
    if not parts:
        raise MatrixError("give at least one directory with a matrix report.json to merge.")
    out = out.resolve()
    totals = {report.total_servers for _, report in parts}
    if len(totals) > 1:
        raise MatrixError(
            "the reports come from different servers files (they count "
            + " and ".join(str(t) for t in sorted(totals))
            + " servers); merge the shards of one run."
        )
    seen: dict[int, Path] = {}
    servers: list[ServerResult] = []
    shards: list[str] = []
    for folder, report in parts:
        shards += report.shards or ["whole"]
        for server in report.servers:
            if server.index in seen:
                raise MatrixError(
                    f"server {server.name!r} is in both {seen[server.index]} and {folder}: each shard must "
                    "run its own slice (--shard K/N with the same N and a different K)."
                )
            seen[server.index] = folder
            servers.append(server)
    total = totals.pop()
    missing = sorted(set(range(total)) - set(seen))
    if missing:
        counts = {report.shard[1] for _, report in parts if report.shard}
        have = sorted(report.shard[0] for _, report in parts if report.shard)
        hint = ""
        if len(counts) == 1:
            n = counts.pop()
            absent = ", ".join(f"{k}/{n}" for k in range(1, n + 1) if k not in have)
            hint = f" (missing shards: {absent})"
        raise MatrixError(
            f"the reports hold {len(seen)} of the file's {total} servers{hint}; "
            "merge every shard's directory."
        )
    for folder, report in parts:
        source = folder.resolve()
        if source == out:
            continue
        for server in report.servers:
            _copy_tree(source / "servers" / server.slug, out / "servers" / server.slug)
    servers.sort(key=lambda s: s.index)
    first = parts[0][1]
    notes = []
    if any(report.options != first.options for _, report in parts):
        notes.append("the shards were run with different options; those of the first are shown")
    return MatrixReport(
        servers=servers,
        servers_file=first.servers_file,
        total_servers=total,
        shard=None,
        shards=shards,
        options=first.options,
        created=max(report.created for _, report in parts),
        command=first.command,
        seconds=max(report.seconds for _, report in parts),
        notes=notes,
    )


def _copy_tree(source: Path, target: Path) -> None:
    if not source.is_dir():
        return
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)


def fingerprint(cells: Iterable[Cell]) -> dict[tuple[str, str], str]:
    """server, property -> verdict: what two runs of a matrix are compared by."""
    return {(cell.server, cell.property_name): cell.verdict for cell in cells}


def rejudge(report: MatrixReport, specs: Sequence[ServerSpec]) -> list[str]:
    """Set every cell's expectation from ``specs`` (a servers file edited since the run), by server name.

    The names of the report's servers the file no longer lists are returned (their cells keep the
    expectations they were run with).
    """
    by_name = {spec.name: spec for spec in specs}
    unknown = []
    for server in report.servers:
        spec = by_name.get(server.name)
        if spec is None:
            unknown.append(server.name)
            continue
        server.expected = dict(spec.expected)
        server.notes = spec.notes or server.notes
        for cell in server.cells:
            cell.expected = spec.expectation(cell.property_name)
    return unknown
