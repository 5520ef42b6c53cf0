"""``epoll-harness matrix``: check many servers against every property, side by side, as a regression suite.

::

    epoll-harness matrix servers.toml [--out DIR] [--budget 60s] [--jobs N] [--shard K/N]
    epoll-harness matrix merge DIR... [--out DIR] [--servers servers.toml]

The first runs one ``check`` per server of the file (``jobs`` at a time, each
in its own network lab) and writes ``report.json``, ``junit.xml`` and
``index.html`` into ``--out``; the second joins the report.json files of
shards into one report, JUnit file and page. Exit status: 0 every cell's
verdict is the one expected; 1 some differ (each is printed); 2 bad input (a
servers file, a shard, a report that cannot be used); 130 interrupted.

:func:`add_matrix_parser` and :func:`run_matrix_command` are what
``harness.cli`` wires in; :func:`main` runs the command on its own
(``python -m harness.matrix_cli matrix ...``).
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from harness.model.errors import HarnessError
from harness.model.properties import PROPERTIES
from harness.options import default_jobs, duration, positive_int, property_list
from harness.run.matrix import (
    ERROR,
    FAIL,
    NON_STRICT,
    NOT_EXERCISED,
    PASS,
    SKIPPED,
    UNCONFIRMED,
    MatrixError,
    MatrixReport,
    RunOptions,
    ServerResult,
    load_servers,
    merge_reports,
    parse_shard,
    rejudge,
    run_matrix,
)
from harness.run.matrix_page import write_pages
from harness.run.matrix_report import write_junit, write_markdown, write_report_json

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_OUT = Path("epoll-harness-matrix")
DEFAULT_BUDGET = 60.0
MERGE = "merge"
# One letter per verdict for the terminal's grid.
LETTERS = {
    PASS: ".",
    NON_STRICT: "n",
    FAIL: "F",
    UNCONFIRMED: "u",
    NOT_EXERCISED: "-",
    SKIPPED: "s",
    ERROR: "E",
}

MATRIX_EPILOG = """\
servers.toml (TOML): one [[server]] table per server:
  [[server]]
  name = "socat-exec-cat"
  command = "socat TCP-LISTEN:{port},bind={host},reuseaddr,fork EXEC:cat"
  cwd = "servers"                  # optional, relative to the file's folder (the default)
  env = { LANG = "C" }             # optional, added to the server's environment
  notes = "socat forking a cat per connection"
  expected = { "accept-robust" = "fail", "bounded-memory" = "non-strict" }
Unlisted properties are expected to pass. Verdicts: pass, non-strict, fail,
unconfirmed, not exercised, skipped. {python} in a command is the interpreter
running the harness. An optional [defaults] table gives every server a cwd,
env and expected (a server's own win).

outputs in --out: report.json (every cell), junit.xml (one test case per
server x property: a verdict that differs from its expectation is a failure),
index.html (the grid; reproducers as readable pages, pcaps, check logs).

examples:
  epoll-harness matrix examples/servers.toml --budget 30 --jobs 2
  epoll-harness matrix servers.toml --shard 1/2 --out part1    # on one machine
  epoll-harness matrix servers.toml --shard 2/2 --out part2    # on another
  epoll-harness matrix merge part1 part2 --out matrix

exit status: 0 every verdict is the one expected; 1 some differ (only then);
2 bad input (servers file, shard, report); 130 interrupted.
"""


def shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_matrix_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``matrix`` to ``epoll-harness``'s subcommands (``subparsers`` from ``add_subparsers``)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "matrix",
        help="check many servers side by side against expected verdicts (a conformance matrix)",
        description=(
            "Run every property against every server of a servers.toml, in parallel, and compare each "
            "verdict with the one the file expects; or merge the reports of shards."
        ),
        usage="%(prog)s SERVERS.toml [options]\n       %(prog)s merge DIR... [--out DIR] [--servers FILE]",
        epilog=MATRIX_EPILOG,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "matrix_args",
        nargs="+",
        metavar="SERVERS.toml | merge DIR...",
        help="the servers file, or: merge DIR...",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"where report.json, junit.xml and index.html go (default {DEFAULT_OUT})",
    )
    out.add_argument("--quiet", action="store_true", help="no line per server as it finishes")
    run = parser.add_argument_group("the run")
    run.add_argument(
        "--budget",
        type=duration,
        default=None,
        metavar="SECONDS",
        help=f"search time per server (default {DEFAULT_BUDGET:.0f}; 60s, 2m)",
    )
    run.add_argument(
        "--jobs",
        type=positive_int,
        default=None,
        metavar="N",
        help="servers checked at once (default: the number of cores)",
    )
    run.add_argument(
        "--shard",
        type=shard,
        default=None,
        metavar="K/N",
        help="run only the K-th of N slices of the servers (every N-th, from the K-th)",
    )
    run.add_argument("--seed", type=int, default=None, help="Hypothesis seed for every server's check")
    run.add_argument(
        "--shrink-budget",
        type=duration,
        default=None,
        metavar="SECONDS",
        help="extra seconds to shrink a violation (default: the budget, at most 60)",
    )
    run.add_argument(
        "--max-examples",
        type=positive_int,
        default=None,
        metavar="N",
        help="scripts per server at most (default: only the budget bounds the search)",
    )
    run.add_argument(
        "--scripts",
        choices=("full", "short"),
        default=None,
        help="full: every fault (default); short: no floods and no deliberate delays",
    )
    run.add_argument(
        "--only",
        type=property_list,
        default=None,
        metavar="PROP[,PROP]",
        help="check only these properties (the others' cells are skipped)",
    )
    run.add_argument(
        "--skip",
        type=property_list,
        default=None,
        metavar="PROP[,PROP]",
        help="do not check these properties (their cells are skipped)",
    )
    run.add_argument("--no-scenarios", action="store_true", help="skip the fd-exhaustion scenario")
    run.add_argument(
        "--until-expected",
        action="store_true",
        help="stop a server's search once every failure it is expected to show has been seen\n"
        "(faster; a known-buggy server then gets less search for new findings)",
    )
    run.add_argument(
        "--capture",
        choices=("always", "failures", "never"),
        default=None,
        help="always (default): capture every script, judging graceful-fin on the wire;\n"
        "failures: only replays of reproducers (graceful-fin is skipped); never",
    )
    run.add_argument(
        "--timeout",
        type=duration,
        default=None,
        metavar="SECONDS",
        help="stop a server's check after this long (default: 2 x (budget + shrink) + 240)",
    )
    merge = parser.add_argument_group("merge")
    merge.add_argument(
        "--servers",
        type=Path,
        default=None,
        metavar="FILE",
        help="with merge: judge the cells against this servers file's expectations",
    )
    return parser


# -- running ---------------------------------------------------------------------------------------------

_RUN_ONLY = (
    "budget",
    "jobs",
    "shard",
    "seed",
    "shrink_budget",
    "max_examples",
    "scripts",
    "only",
    "skip",
    "capture",
    "timeout",
)


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass


def _print(text: str = "") -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        pass


def _options(ns: argparse.Namespace) -> RunOptions:
    return RunOptions(
        budget=ns.budget if ns.budget is not None else DEFAULT_BUDGET,
        shrink_budget=ns.shrink_budget,
        max_examples=ns.max_examples,
        seed=ns.seed,
        scripts=ns.scripts or "full",
        only=tuple(p for p in PROPERTIES if ns.only and p in ns.only),
        skip=tuple(p for p in PROPERTIES if ns.skip and p in ns.skip),
        no_scenarios=ns.no_scenarios,
        until_expected=ns.until_expected,
        capture=ns.capture or "always",
        jobs=ns.jobs if ns.jobs is not None else default_jobs(),
        timeout=ns.timeout,
    )


def _progress(result: ServerResult, done: int, total: int) -> None:
    wrong = result.mismatches
    if result.error:
        how = f"ERROR: {result.error}"
    elif wrong:
        how = f"{len(wrong)} cell{'s differ' if len(wrong) != 1 else ' differs'}: " + ", ".join(
            f"{c.property_name} {c.verdict} (expected {c.expected})" for c in wrong
        )
    else:
        how = "every cell as expected"
    _say(f"epoll-harness matrix: [{done}/{total}] {result.name}: {how} ({result.seconds:.0f} s)")


def grid_lines(report: MatrixReport) -> list[str]:
    """The matrix as text: one letter per cell (a ``!`` after a cell that differs from its expectation)."""
    width = max([len(s.name) for s in report.servers] + [6])
    lines = [" " * width + "  " + " ".join(f"{i + 1:>2}" for i in range(len(PROPERTIES)))]
    for server in report.servers:
        by = {c.property_name: c for c in server.cells}
        marks = []
        for prop in PROPERTIES:
            cell = by.get(prop)
            mark = "  " if cell is None else f"{LETTERS.get(cell.verdict, '?')}{'' if cell.matches else '!'}"
            marks.append(f"{mark:>2}")
        lines.append(f"{server.name:<{width}}  " + " ".join(marks))
    lines.append("columns: " + ", ".join(f"{i + 1} {p}" for i, p in enumerate(PROPERTIES)))
    lines.append(
        "cells: "
        + ", ".join(f"{letter} {verdict}" for verdict, letter in LETTERS.items())
        + "; ! differs from the expectation"
    )
    return lines


def _finish(report: MatrixReport, out: Path) -> int:
    write_report_json(report, out)
    junit = write_junit(report, out)
    write_markdown(report, out)
    index = write_pages(report, out)
    for line in grid_lines(report):
        _print(line)
    mismatches = report.mismatches
    _print()
    for server in report.servers:
        if server.error:
            _print(f"ERROR {server.name}: {server.error}")
        for cell in server.mismatches:
            if cell.verdict != ERROR:
                _print(f"MISMATCH {cell.mismatch()}")
    cells = report.cells
    _print(
        f"{len(cells) - len(mismatches)} of {len(cells)} cells as expected"
        + (f", {len(mismatches)} differ" if mismatches else "")
        + f" ({len(report.servers)} servers)"
    )
    _print(f"report: {out / 'report.json'}")
    _print(f"junit: {junit}")
    _print(f"page: {index.resolve().as_uri()}")
    return EXIT_OK if not mismatches else EXIT_MISMATCH


def _run(ns: argparse.Namespace, servers_file: Path) -> int:
    if ns.servers is not None:
        raise MatrixError("--servers goes with merge (a run reads the servers file it is given)")
    specs = load_servers(servers_file)
    options = _options(ns)
    out: Path = ns.out or DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    chosen = specs if ns.shard is None else specs[ns.shard[0] - 1 :: ns.shard[1]]
    if not ns.quiet:
        slice_ = f" (shard {ns.shard[0]}/{ns.shard[1]}: {len(chosen)} of {len(specs)})" if ns.shard else ""
        _say(
            f"epoll-harness matrix: {len(chosen)} servers{slice_}, {options.budget:g} s each, "
            f"{options.jobs} at a time, into {out}"
        )
    report = run_matrix(
        specs,
        options,
        out,
        servers_file=servers_file,
        shard=ns.shard,
        command="epoll-harness " + shlex.join(sys.argv[1:]),
        progress=None if ns.quiet else _progress,
    )
    return _finish(report, out)


def _merge(ns: argparse.Namespace, folders: Sequence[str]) -> int:
    given = [name for name in _RUN_ONLY if getattr(ns, name, None) is not None]
    given += [name for name in ("no_scenarios", "until_expected") if getattr(ns, name, False)]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise MatrixError(f"{flag} goes with a run, not with merge (merge only joins reports)")
    if not folders:
        raise MatrixError("merge needs the directories of the shards' runs: matrix merge DIR... [--out DIR]")
    for folder in folders:
        if Path(folder).exists() and not Path(folder).is_dir():
            raise MatrixError(
                f"{folder} is not a directory with a matrix report: give the --out directories of the runs"
            )
    parts = [(Path(f), MatrixReport.load(Path(f) / "report.json")) for f in folders]
    out: Path = ns.out or DEFAULT_OUT
    out.mkdir(parents=True, exist_ok=True)
    report = merge_reports(parts, out)
    if ns.servers is not None:
        for name in rejudge(report, load_servers(ns.servers)):
            report.notes.append(f"{name} is not in {ns.servers}: its cells keep the expectations of the run")
    for note in report.notes:
        _say(f"epoll-harness matrix: note: {note}")
    return _finish(report, out)


def run_matrix_command(ns: argparse.Namespace) -> int:
    """Run ``epoll-harness matrix`` with the parsed arguments; the exit status."""
    args: list[str] = ns.matrix_args
    previous: Any = None

    def terminate(signum: int, frame: FrameType | None) -> NoReturn:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread
        previous = None
    started = time.monotonic()
    try:
        if args[0] == MERGE:
            return _merge(ns, args[1:])
        if len(args) != 1:
            raise MatrixError(
                f"give one servers file (or: merge DIR...), not {len(args)} arguments: {' '.join(args)}"
            )
        return _run(ns, Path(args[0]))
    except KeyboardInterrupt:
        _say(
            f"epoll-harness matrix: interrupted after {time.monotonic() - started:.0f} s; every check it "
            "started has been stopped"
        )
        return EXIT_INTERRUPTED
    except HarnessError as exc:
        _say(f"epoll-harness matrix: error: {exc}")
        return EXIT_USAGE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``epoll-harness matrix`` on its own, parsed as ``harness.cli`` parses it."""
    parser = _Parser(prog="epoll-harness", formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    add_matrix_parser(sub)
    ns = parser.parse_args(argv)
    return run_matrix_command(ns)


if __name__ == "__main__":
    sys.exit(main())
