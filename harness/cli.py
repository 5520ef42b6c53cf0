"""The ``epoll-harness`` command: ``check`` a server, ``replay`` reproducers, list ``properties``.

Exit status, a contract a CI can rely on:

* 0: every property held (``check``), or every reproducer passed (``replay``);
* 1: a property was violated, or a replayed reproducer still fails; only then;
* 2: a usage error, an unreadable or invalid reproducer or ``pyproject.toml``
  table, or a server that could not be started or did not answer before any
  script ran (the message names the command, its exit status or signal and
  the last lines it printed);
* 3: an internal error of the harness (a bug: the traceback is printed);
* 130: interrupted (SIGINT or SIGTERM).

A closed standard output (``epoll-harness check | head -1``) changes none of
these. No server process outlives the command, whatever the way it ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from harness import __version__
from harness.drive.netns import NetnsUnavailable, choose_network, host_setup
from harness.drive.process import reference_command
from harness.face import (
    FaceChecker,
    Target,
    check_attach,
    filled_command,
    scenario_line,
    script_lines,
    server_template,
)
from harness.fuzz_cli import add_fuzz_parser, run_fuzz_command
from harness.matrix_cli import add_matrix_parser, run_matrix_command
from harness.model.errors import HarnessError, UsageError
from harness.model.limits import Limits
from harness.model.properties import GRACEFUL_FIN, PROPERTIES, Violation
from harness.model.script import Script
from harness.model.wording import plural
from harness.options import (
    BY_NAME,
    DEFAULT_STARTUP_TIMEOUT,
    Option,
    Table,
    add_cli_options,
    host_port,
    limits_from,
    positive_int,
    read_table,
    resolve,
    seconds,
    unselected,
)
from harness.run.checker import Outcome
from harness.run.lab import replay_with_capture
from harness.run.report import Reproducer, RunReport
from harness.run.runner import (
    DEFAULT_MAX_EXAMPLES,
    DEFAULT_TIME_BUDGET,
    UNBOUNDED,
    CheckConfig,
    Interrupted,
    StopSignal,
    explicit_examples,
    run_check,
    strategy_for,
)
from harness.run.scenarios import run_scenario

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130
PROGRESS_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal

DESCRIPTION = """\
Property-based tests for TCP echo servers (epoll or not): Hypothesis draws
client scripts (fragmented writes, half-closes, resets, slow readers, floods,
bursts of connects), the harness plays them against the server and checks
byte-exact echoes and the cleanup after every connection. A violation is
shrunk to a minimal script and saved as a reproducer.
"""

EXIT_STATUS = """\
exit status: 0 every property held; 1 a property was violated (only then);
2 usage error, invalid reproducer or pyproject.toml table, or a server that
could not start or did not answer before any script; 3 internal error;
130 interrupted.
"""

CHECK_EPILOG = f"""\
The server command is a template: {{port}} is replaced by a free port the
harness chooses (and {{host}} by 127.0.0.1); without {{port}} the server must
print a line 'LISTENING host:port' once it accepts connections. The command,
its cwd and env, the start-up timeout and the bounds can also be set in the
[tool.epoll-harness] table of the closest pyproject.toml (the command line wins).

examples:
  epoll-harness check                                   # the bundled reference server
  epoll-harness check --server './my_server --port {{port}}'
  epoll-harness check --server 'socat TCP-LISTEN:{{port}},bind={{host}},reuseaddr,fork EXEC:cat'
  epoll-harness check --attach 127.0.0.1:9000 --pid 4242
  epoll-harness check --time-budget 600 --skip idle-cpu   # search for ten minutes

{EXIT_STATUS}"""

REPLAY_EPILOG = f"""\
examples:
  epoll-harness replay epoll-harness-artifacts/repro-half-close-1f2e3d4c5b.json
  epoll-harness replay epoll-harness-artifacts/            # every repro-*.json: a regression corpus
  epoll-harness replay FILE --repeat 20                    # says how many of 20 replays failed
  epoll-harness replay FILE --attach 127.0.0.1:9000 --pid 4242

{EXIT_STATUS}"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="epoll-harness",
        description=DESCRIPTION,
        epilog=EXIT_STATUS,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"epoll-harness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    check = sub.add_parser(
        "check",
        help="run every property against a server",
        description="Run every property against a server and report violations with minimal reproducers.",
        epilog=CHECK_EPILOG,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    add_cli_options(check)

    rep = sub.add_parser(
        "replay",
        help="run reproducers again",
        description="Run saved reproducers again: one file, or every repro-*.json of a directory.",
        epilog=REPLAY_EPILOG,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    rep.add_argument(
        "reproducer", type=Path, help="a repro-*.json file written by check, or a directory of them"
    )
    rep.add_argument("--server", metavar="CMD", help="server command (default: the one recorded)")
    rep.add_argument("--attach", type=host_port, metavar="HOST:PORT", help="replay against a running server")
    rep.add_argument(
        "--pid", type=positive_int, help="with --attach: the server's pid (it must own the listening socket)"
    )
    rep.add_argument(
        "--allow-remote", action="store_true", help="with --attach: allow a target outside loopback"
    )
    rep.add_argument(
        "--repeat", type=positive_int, default=1, metavar="N", help="replay each reproducer N times"
    )
    rep.add_argument(
        "--startup-timeout",
        type=seconds,
        metavar="S",
        help=f"seconds the server may take to listen (default {DEFAULT_STARTUP_TIMEOUT:.0f})",
    )
    rep.add_argument(
        "--capture",
        type=Path,
        metavar="PCAP",
        help="capture the replay's packets into this file (one reproducer)",
    )
    rep.add_argument(
        "--netns",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replay in a private network namespace with small TCP buffers (default: when permitted)",
    )

    add_matrix_parser(sub)
    add_fuzz_parser(sub)
    sub.add_parser("properties", help="list the properties and what each checks")
    return parser


# -- check ----------------------------------------------------------------------------------------------


def _target(ns: argparse.Namespace, table: Table, startup_timeout: float) -> Target:
    if ns.attach is not None and ns.server is not None:
        raise UsageError("give either --server or --attach, not both")
    if ns.pid is not None and ns.attach is None:
        raise UsageError("--pid goes with --attach (a server started with --server is observed already)")
    if ns.attach is not None:
        if ns.netns:
            raise UsageError(
                "--netns cannot reach an attached server (it runs outside the private namespace)"
            )
        target = Target(None, ns.attach, ns.pid, startup_timeout)
        check_attach(target, ns.allow_remote)
        return target
    command = resolve(BY_NAME["server"], ns.server, table) or reference_command("lt")
    return Target(server_template(command, table.cwd, table.env), startup_timeout=startup_timeout)


class _Tally:
    """Watches every example: counts them, notes the properties violated, shows progress."""

    def __init__(self, show: Callable[[_Tally], None] | None) -> None:
        self.started = time.monotonic()
        self.examples = 0
        self.violated: set[str] = set()
        self._show = show

    def before(self, script: Script) -> None:
        pass

    def after(self, outcome: Outcome) -> None:
        self.examples += 1
        self.violated.update(v.property_name for v in outcome.violations)
        if self._show is not None:
            self._show(self)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.examples / elapsed if elapsed > 0 else 0.0
        found = ", ".join(sorted(self.violated)) if self.violated else "none"
        return f"{self.examples} scripts in {elapsed:.0f} s ({rate:.1f}/s); violated so far: {found}"


class _Lines:
    """A plain progress line on stderr every PROGRESS_EVERY seconds (a CI log, not a terminal)."""

    def __init__(self) -> None:
        self._next = time.monotonic() + PROGRESS_EVERY

    def __call__(self, tally: _Tally) -> None:
        now = time.monotonic()
        if now >= self._next:
            self._next = now + PROGRESS_EVERY
            _say(f"epoll-harness: {tally.line()}")


def _run_check(ns: argparse.Namespace, console: Console) -> int:
    stop = StopSignal()  # from here on SIGINT and SIGTERM end the run between examples: exit 130
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    table = read_table(Path.cwd())

    def value(option: Option) -> Any:
        return resolve(option, getattr(ns, option.dest), table)

    target = _target(ns, table, value(BY_NAME["startup-timeout"]))
    leave_out = unselected(ns.only, ns.skip)
    limits = limits_from(value)
    time_budget = ns.time_budget if ns.time_budget is not None else DEFAULT_TIME_BUDGET
    max_examples = ns.max_examples
    if max_examples is None:
        max_examples = UNBOUNDED if ns.time_budget is not None else DEFAULT_MAX_EXAMPLES
    artifacts = ns.artifacts
    owned = target.attach is None
    capture_dir = artifacts / "captures" if ns.capture == "always" and owned else None
    # Before any server starts or socket opens: they must all be inside the namespace.
    network = choose_network(ns.netns) if owned else host_setup()
    if network.note:
        _say(f"epoll-harness: {network.note}; using the host's loopback and its buffers")
    strategy = strategy_for(network, ns.scripts, limits)
    bar_wanted = not ns.quiet and console.is_terminal
    lines = _Lines() if not ns.quiet and not console.is_terminal else None
    tally = _Tally(lines)
    checker = FaceChecker(target, limits, unselected=leave_out, capture_dir=capture_dir, watch=tally)
    config = CheckConfig(
        server_command=target.template,
        attach=target.attach,
        pid=target.pid,
        max_examples=max_examples,
        time_budget=time_budget,
        shrink_budget=value(BY_NAME["shrink-budget"]),
        seed=ns.seed,
        limits=limits,
        artifacts=artifacts,
        database=None if ns.no_database else Path(".hypothesis") / "epoll-harness",
        scenarios=not ns.no_scenarios and owned and "accept-robust" not in leave_out,
        capture_dir=capture_dir,
        until_found=ns.until_found,
        confirm=value(BY_NAME["confirm"]),
        explicit=explicit_examples(network, ns.scripts, limits),
    )
    bound = f"{time_budget:g} s" + (f" or {max_examples} scripts" if max_examples != UNBOUNDED else "")
    if not ns.quiet:
        # Said before it starts: the search has the time budget, what it found gets the shrink
        # budget on top (shrinking, reducing, confirming replays), and the scenario its own.
        what = target.template if owned else f"the server at {target.address}"
        replays = plural(config.confirm, "replay")
        confirm = f", then {replays} of each finding to confirm it" if config.confirm else ""
        _say(
            f"epoll-harness: checking {what} in {network.describe()}: searching for {bound}, "
            f"then at most {config.shrink_budget:g} s more to shrink what it finds{confirm}"
        )
    if bar_wanted:
        with Progress(
            TextColumn("checking"),
            BarColumn(),
            MofNCompleteColumn() if max_examples != UNBOUNDED else TextColumn("{task.completed}"),
            TextColumn("scripts"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[found]}"),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("check", total=max_examples if max_examples != UNBOUNDED else None, found="")
            tally._show = _bar_update(bar, task)
            report = run_check(config, strategy, stop=stop, checker=checker)
    else:
        report = run_check(config, strategy, stop=stop, checker=checker)
    report.network = network.describe()
    for name in leave_out:
        stats = report.properties[name]
        stats.skipped, stats.examples, stats.seconds = "not selected (--only/--skip)", 0, 0.0
    if ns.capture != "never" and target.template is not None:
        _capture_failures(report, target.template, limits)
    if ns.report is not None:
        report.save(ns.report)
    status = EXIT_OK if report.ok else EXIT_VIOLATION
    if owned:
        assert checker.server is not None
        port = checker.server.port
        server = filled_command(checker) + (f" (listening on {checker.server.host}:{port})" if port else "")
    else:
        server = f"attached to {target.address}" + (f" (pid {target.pid})" if target.pid else "")
    _printing(lambda: _print_report(report, server, target))
    if ns.report is not None:
        _printing(lambda: print(f"report: {ns.report}"))
    return status


def _bar_update(bar: Progress, task: TaskID) -> Callable[[_Tally], None]:
    def show(tally: _Tally) -> None:
        found = f"violated: {', '.join(sorted(tally.violated))}" if tally.violated else ""
        bar.update(task, completed=tally.examples, found=found)

    return show


class _Stdout(Console):
    """Rich's console on stdout, except that a closed stdout is not ``SystemExit(1)``."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        _stdout_gone()


class _Stderr(Console):
    """Rich's console on stderr (the progress bar); a closed stderr only silences it."""

    def on_broken_pipe(self) -> None:
        self.quiet = True


def _print_report(report: RunReport, server: str, target: Target) -> None:
    console = _Stdout(highlight=False, soft_wrap=True)
    console.print(f"server: {escape(server)}")
    if report.network:
        console.print(f"network: {report.network}")
    restarts = f"server restarts: {report.restarts}"
    if report.abandoned:
        # A restart a correct server gets too: say so, or it reads like a crash.
        restarts += f" ({report.abandoned} after a script cut off when the time was up)"
    console.print(
        f"{report.examples} scripts in {report.seconds:.1f} s, {restarts}"
        + (f", seed {report.seed}" if report.seed is not None else "")
    )
    shown = {
        "violated": "[red]VIOLATED[/]",
        "unconfirmed": "[yellow]unconfirmed[/]",
        "skipped": "[yellow]skipped[/]",
        "non-strict": "[yellow]non-strict[/]",
        "ok": "[green]ok[/]",
    }
    for name, stats in report.properties.items():
        word, why = stats.status()
        detail = f" ({escape(why)})" if why and word != "non-strict" else ""
        noun = "example " if stats.examples == 1 else "examples"  # padded: the verdicts stay aligned
        console.print(f"  {name:<26} {stats.examples:>5} {noun}  {shown.get(word, word)}{detail}")
    for v in report.violations:
        console.print(f"\n[red]{v.property_name}[/]: {escape(v.message)}", highlight=False)
        if v.confirmation():
            console.print(f"  {v.confirmation()}", highlight=False)
        if v.reproducer:
            size = f" ({v.steps} steps, {v.bytes_sent} bytes)" if v.steps is not None else ""
            console.print(f"  reproducer{size}: {escape(v.reproducer)}", highlight=False)
            for line in _replayed_lines(v.reproducer):
                console.print(f"    {escape(line)}", highlight=False)
            replay = f"epoll-harness replay {v.reproducer}{target.replay_arguments()}"
            console.print(f"  replay with: {escape(replay)}", highlight=False)
        if v.capture:
            console.print(f"  packet capture of a replay: {escape(v.capture)}", highlight=False)
        for line in v.on_the_wire:
            console.print(f"  on the wire: {escape(line)}", highlight=False)


def _replayed_lines(path: str) -> list[str]:
    try:
        repro = Reproducer.load(path)
    except HarnessError:
        return []
    if repro.script is not None:
        return script_lines(repro.script)
    return [scenario_line(repro.scenario)] if repro.scenario is not None else []


def _capture_failures(report: RunReport, command: str, limits: Limits) -> None:
    """Replay each script reproducer under a capture; note the pcap and the wire's verdicts."""
    for stats in report.properties.values():
        for i, record in enumerate(stats.violations):
            if record.reproducer is None or record.capture is not None:
                continue
            repro = Reproducer.load(record.reproducer)
            if repro.script is None:
                continue  # a fixed scenario: nothing small to capture
            pcap = Path(record.reproducer).with_suffix(".pcap")
            try:
                replayed = replay_with_capture(command, repro.script, limits, pcap)
            except (OSError, ImportError, HarnessError) as exc:
                _say(f"epoll-harness: no capture of {record.reproducer}: {exc}")
                continue
            wire = tuple(v.describe() for v in replayed.violations if v.property_name == GRACEFUL_FIN)
            stats.violations[i] = dataclasses.replace(record, capture=str(pcap), on_the_wire=wire)


# -- replay ---------------------------------------------------------------------------------------------


def _reproducer_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("repro-*.json"))
        if not files:
            raise UsageError(f"{path} holds no repro-*.json file; give a reproducer or a directory of them")
        return files
    return [path]


def _run_replay(ns: argparse.Namespace) -> int:
    table = read_table(Path.cwd())
    if ns.attach is not None and ns.server is not None:
        raise UsageError("give either --server or --attach, not both")
    if ns.pid is not None and ns.attach is None:
        raise UsageError("--pid goes with --attach")
    startup = resolve(BY_NAME["startup-timeout"], ns.startup_timeout, table)
    reproducers = [(path, Reproducer.load(path)) for path in _reproducer_files(ns.reproducer)]
    if ns.startup_timeout is not None or "startup-timeout" in table.values:
        # Given now, it wins over the one each reproducer recorded (scenarios and captures too).
        reproducers = [
            (path, dataclasses.replace(repro, limits=repro.limits.with_(startup_timeout=startup)))
            for path, repro in reproducers
        ]
    if ns.capture is not None and (ns.reproducer.is_dir() or ns.repeat > 1 or ns.attach is not None):
        raise UsageError(
            "--capture records one replay of one reproducer, against a server the harness starts"
        )
    attached: Target | None = None
    if ns.attach is not None:
        if ns.netns:
            raise UsageError(
                "--netns cannot reach an attached server (it runs outside the private namespace)"
            )
        attached = Target(None, ns.attach, ns.pid, startup)
        check_attach(attached, ns.allow_remote)
    targets = []
    for path, repro in reproducers:
        if attached is not None:
            if repro.scenario is not None:
                raise UsageError(
                    f"{path} is a fixed scenario: it starts the server itself; give --server CMD"
                )
            targets.append(attached)
            continue
        command = server_template(ns.server, table.cwd, table.env) if ns.server else repro.server_command
        if command is None:
            raise UsageError(
                f"{path} was recorded against an attached server: give --attach HOST:PORT [--pid PID] "
                "to replay it against that server, or --server CMD to start one"
            )
        targets.append(Target(command, startup_timeout=repro.limits.startup_timeout))
    if attached is None:
        choose_network(ns.netns)  # before any server starts: they must all be inside the namespace
    failed = 0
    for (path, repro), target in zip(reproducers, targets, strict=True):
        failed += _replay_one(path, repro, target, ns.repeat, ns.capture, many=len(reproducers) > 1)
    if len(reproducers) > 1:
        _printing(lambda: print(f"{failed}/{len(reproducers)} reproducers still fail"))
    return EXIT_VIOLATION if failed else EXIT_OK


def _replay_one(
    path: Path, repro: Reproducer, target: Target, repeat: int, pcap: Path | None, many: bool
) -> int:
    """Replay ``repeat`` times and print the verdict; 1 if any replay failed."""
    runs: list[list[Violation]] = []
    server = target.template or f"the server at {target.address}"
    if repro.scenario is not None:
        assert target.template is not None
        for _ in range(repeat):
            violation = run_scenario(target.template, repro.scenario, repro.limits)
            runs.append([] if violation is None else [violation])
    elif pcap is not None:
        assert repro.script is not None and target.template is not None
        replayed = replay_with_capture(target.template, repro.script, repro.limits, pcap)
        runs.append(replayed.violations)
        _printing(lambda: print(f"capture: {pcap} ({replayed.packets} packets)"))
    else:
        assert repro.script is not None
        with FaceChecker(target, repro.limits) as checker:
            for _ in range(repeat):
                runs.append(checker.check(repro.script).violations)
            server = filled_command(checker) or server
    failed = sum(1 for run in runs if run)
    name = f"{path}: " if many else ""
    if not failed:
        times = "this time" if repeat == 1 else f"in {repeat}/{repeat} replays"
        _printing(lambda: print(f"{name}passed: {repro.property_name} held {times} against {server}"))
        return 0
    first = next(run for run in runs if run)
    counted = f" ({failed}/{repeat} failed)" if repeat > 1 else ""
    verdict = [f"{name}FAILED: {repro.property_name}{counted} against {server}"]
    verdict += [f"  {v.property_name}: {v.describe()}" for v in first]
    _printing(lambda: print("\n".join(verdict)))
    return 1


# -- plumbing ---------------------------------------------------------------------------------------------


def _say(text: str) -> None:
    """A line on stderr (progress, notes); a closed stderr is ignored."""
    try:
        print(text, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass


def _printing(write: Callable[[], None]) -> None:
    """Run ``write``; if stdout is closed (``| head -1``), stop writing there and carry on."""
    try:
        write()
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_gone()


def _stdout_gone() -> None:
    # Anything still buffered, and the interpreter's flush at exit, go nowhere instead of
    # raising BrokenPipeError again (which would turn a result into exit status 120).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _list_properties() -> int:
    def write() -> None:
        for name, text in PROPERTIES.items():
            print(f"{name:<26} {text}")

    _printing(write)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    console = _Stderr(stderr=True)
    try:
        if ns.command == "check":
            return _run_check(ns, console)
        if ns.command == "matrix":
            return run_matrix_command(ns)
        if ns.command == "fuzz":
            return run_fuzz_command(ns)
        if ns.command == "replay":
            return _run_replay(ns)
        return _list_properties()
    except (KeyboardInterrupt, Interrupted):
        _say("epoll-harness: interrupted; every server it started has been stopped")
        return EXIT_INTERRUPTED
    except (HarnessError, NetnsUnavailable) as exc:
        # Usage, an invalid reproducer or table, a server that did not start or answer: never a violation.
        _say(f"epoll-harness: error: {exc}")
        return EXIT_USAGE
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_OK
    except Exception:
        _say(traceback.format_exc().rstrip())
        _say(
            "epoll-harness: internal error (a bug of the harness, not a verdict on the server); "
            "please report it with the traceback above"
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
