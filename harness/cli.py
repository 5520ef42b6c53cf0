"""The ``epoll-harness`` command: ``check`` a server, ``replay`` a reproducer, list ``properties``.

Exit status: 0 every property held; 1 a property was violated (or a replayed
reproducer still fails); 2 a usage error, or the server could not be
started; 130 interrupted. No server process outlives the command, whatever
the way it ends.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness import __version__
from harness.drive.netns import NetnsUnavailable, choose_network, host_setup
from harness.drive.process import ServerCommand, reference_command
from harness.model.errors import HarnessError, ScriptError, ServerStartError, UsageError
from harness.model.limits import Limits
from harness.model.properties import GRACEFUL_FIN, PROPERTIES
from harness.options import add_cli_options, limits_from
from harness.run.lab import replay_with_capture
from harness.run.report import Reproducer, RunReport
from harness.run.runner import (
    CheckConfig,
    Interrupted,
    StopSignal,
    replay,
    run_check,
    strategy_for,
)

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DESCRIPTION = """\
Property-based tests for TCP echo servers (epoll or not): Hypothesis draws
client scripts (fragmented writes, half-closes, resets, slow readers, floods,
bursts of connects), the harness plays them against the server and checks
byte-exact echoes and the cleanup after every connection. A violation is
shrunk to a minimal script and saved as a reproducer.
"""

CHECK_EPILOG = """\
The server command is a template: {port} is replaced by a free port the
harness chooses (and {host} by 127.0.0.1); without {port} the server must
print a line 'LISTENING host:port' once it accepts connections.

examples:
  epoll-harness check                                   # the bundled reference server
  epoll-harness check --server './my_server --port {port}'
  epoll-harness check --server 'socat TCP-LISTEN:{port},bind={host},reuseaddr,fork EXEC:cat'
  epoll-harness check --attach 127.0.0.1:9000 --pid 4242

exit status: 0 all properties held, 1 a property was violated, 2 usage error
or the server could not start.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="epoll-harness", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
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
        help="run one reproducer again",
        description="Run a saved reproducer again. Exit 1 if it still fails, 0 if it passes.",
    )
    rep.add_argument("reproducer", type=Path, help="a repro-*.json file written by check")
    rep.add_argument("--server", metavar="CMD", help="server command (default: the one recorded)")
    rep.add_argument(
        "--capture", type=Path, metavar="PCAP", help="capture the replay's packets into this file"
    )
    rep.add_argument(
        "--netns",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replay in a private network namespace with small TCP buffers (default: when permitted)",
    )

    sub.add_parser("properties", help="list the properties and what each checks")
    return parser


def _limits(ns: argparse.Namespace) -> Limits:
    return limits_from(lambda option: getattr(ns, option.dest))


def _check_config(ns: argparse.Namespace) -> CheckConfig:
    if ns.attach is not None and ns.server is not None:
        raise UsageError("give either --server or --attach, not both")
    if ns.pid is not None and ns.attach is None:
        raise UsageError("--pid goes with --attach (a server started with --server is observed already)")
    if ns.attach is not None and not ns.allow_remote:
        host = ns.attach[0]
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise UsageError(
                f"{host} is not a loopback address; floods and resets are meant for servers you own. "
                "Add --allow-remote if this one is yours."
            )
    command = None
    if ns.attach is None:
        command = ns.server if ns.server is not None else reference_command("lt")
        ServerCommand(command)  # raises UsageError on a bad template
    return CheckConfig(
        server_command=command,
        attach=ns.attach,
        pid=ns.pid,
        max_examples=ns.max_examples,
        time_budget=ns.time_budget,
        shrink_budget=ns.shrink_budget,
        seed=ns.seed,
        limits=_limits(ns),
        artifacts=ns.artifacts,
        database=None if ns.no_database else Path(".hypothesis") / "epoll-harness",
        scenarios=not ns.no_scenarios and ns.attach is None,
        capture_dir=ns.artifacts / "captures" if ns.capture == "always" and ns.attach is None else None,
        until_found=ns.until_found,
    )


def _print_report(console: Console, report: RunReport) -> None:
    console.print(f"server: {escape(report.server_command)}")
    if report.network:
        console.print(f"network: {report.network}")
    console.print(
        f"{report.examples} scripts in {report.seconds:.1f} s, server restarts: {report.restarts}"
        + (f", seed {report.seed}" if report.seed is not None else "")
    )
    for name, stats in report.properties.items():
        if stats.skipped:
            status = f"[yellow]skipped[/] ({stats.skipped})"
        elif stats.violations:
            status = "[red]VIOLATED[/]"
        else:
            status = "[green]ok[/]"
        console.print(f"  {name:<26} {stats.examples:>5} examples  {status}", highlight=False)
    for v in report.violations:
        console.print(f"\n[red]{v.property_name}[/]: {escape(v.message)}", highlight=False)
        if v.reproducer:
            size = f" ({v.steps} steps, {v.bytes_sent} bytes)" if v.steps is not None else ""
            console.print(f"  reproducer{size}: {escape(v.reproducer)}", highlight=False)
            console.print(f"  replay with: epoll-harness replay {escape(v.reproducer)}", highlight=False)
        if v.capture:
            console.print(f"  packet capture of a replay: {escape(v.capture)}", highlight=False)
        for line in v.on_the_wire:
            console.print(f"  on the wire: {escape(line)}", highlight=False)


def _run_check(ns: argparse.Namespace, console: Console) -> int:
    config = _check_config(ns)
    # Before any server starts or socket opens: they must all be inside the namespace.
    network = choose_network(ns.netns) if config.attach is None else host_setup()
    if network.note:
        print(f"epoll-harness: {network.note}; using the host's loopback and its buffers", file=sys.stderr)
    strategy = strategy_for(network, ns.scripts)
    stop = StopSignal()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    show_progress = not ns.quiet and console.is_terminal
    if show_progress:
        with Progress(
            TextColumn("checking"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("scripts"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("check", total=config.max_examples)
            report = run_check(
                config,
                strategy,
                progress=lambda r: bar.update(task, completed=r.examples),
                stop=stop,
            )
    else:
        report = run_check(config, strategy, stop=stop)
    report.network = network.describe()
    if ns.capture != "never" and config.server_command is not None:
        _capture_failures(report, config.server_command, config.limits)
    if ns.report is not None:
        report.save(ns.report)
    _print_report(Console(highlight=False, soft_wrap=True), report)
    if ns.report is not None:
        print(f"report: {ns.report}")
    return EXIT_OK if report.ok else EXIT_VIOLATION


def _capture_failures(report: RunReport, command: str, limits: Limits) -> None:
    """Replay each script reproducer under a capture; note the pcap and the wire's verdicts."""
    for stats in report.properties.values():
        for i, record in enumerate(stats.violations):
            if record.reproducer is None:
                continue
            repro = Reproducer.load(record.reproducer)
            if repro.script is None:
                continue  # a fixed scenario: nothing small to capture
            pcap = Path(record.reproducer).with_suffix(".pcap")
            try:
                replayed = replay_with_capture(command, repro.script, limits, pcap)
            except (OSError, ImportError, HarnessError) as exc:
                print(f"epoll-harness: no capture of {record.reproducer}: {exc}", file=sys.stderr)
                continue
            wire = tuple(v.describe() for v in replayed.violations if v.property_name == GRACEFUL_FIN)
            stats.violations[i] = dataclasses.replace(record, capture=str(pcap), on_the_wire=wire)


def _run_replay(ns: argparse.Namespace) -> int:
    repro = Reproducer.load(ns.reproducer)
    if ns.server is not None:
        ServerCommand(ns.server)
    choose_network(ns.netns)
    server = ns.server or repro.server_command
    if ns.capture is not None and repro.script is not None and server is not None:
        replayed = replay_with_capture(server, repro.script, repro.limits, ns.capture)
        violations = replayed.violations
        print(f"capture: {ns.capture} ({replayed.packets} packets)")
    else:
        violations = replay(repro, ns.server)
    if not violations:
        print(f"passed: {repro.property_name} held this time against {server}")
        return EXIT_OK
    for v in violations:
        print(f"{v.property_name}: {v.describe()}")
    return EXIT_VIOLATION


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    console = Console(stderr=True)
    try:
        if ns.command == "check":
            return _run_check(ns, console)
        if ns.command == "replay":
            return _run_replay(ns)
        for name, text in PROPERTIES.items():
            print(f"{name:<26} {text}")
        return EXIT_OK
    except (UsageError, ScriptError, ServerStartError, NetnsUnavailable) as exc:
        print(f"epoll-harness: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HarnessError as exc:
        print(f"epoll-harness: error: {exc}", file=sys.stderr)
        return EXIT_VIOLATION
    except (KeyboardInterrupt, Interrupted):
        print("epoll-harness: interrupted; every server it started has been stopped", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
