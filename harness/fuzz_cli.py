"""``epoll-harness fuzz``: a campaign of hours on every core, ending in a short list of confirmed bugs.

::

    epoll-harness fuzz --server CMD [--duration 2h] [--workers N] [--db DIR | --db redis://HOST:PORT/N]
                       [--out DIR] [--stop-on-first]

:func:`add_fuzz_parser` and :func:`run_fuzz_command` are what ``harness.cli``
wires in. The campaign itself is :mod:`harness.run.campaign`; this module
parses, shows progress (a live table on a terminal, a plain line every few
seconds in a CI log), handles Ctrl-C (the workers save what they found and
stop: exit 130, nothing left running), and writes the regression tests and
the summary at the end.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from harness.face import server_template
from harness.model.errors import HarnessError, UsageError
from harness.model.limits import DEFAULT_LIMITS
from harness.model.wording import plural
from harness.options import BY_NAME, default_jobs, duration, positive_int, read_table, resolve
from harness.regression import write_regression_tests
from harness.run.campaign import Campaign, CampaignConfig, counts_as_failure, run_campaign
from harness.run.campaign_summary import write_summary

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_DURATION = 3600.0
DEFAULT_OUT = Path("epoll-harness-campaign")
DEFAULT_DB = Path(".hypothesis") / "epoll-harness"  # the one check uses: check replays what fuzz found
PLAIN_EVERY = 10.0  # seconds between progress lines when stderr is not a terminal

FUZZ_EPILOG = """\
Each worker is a process with its own server and, when permitted, its own
network namespace; each draws different scripts. The example database is
replayed first, so a campaign resumes where the last one stopped; several
machines pool one corpus with --db redis://HOST:PORT/N. There is one finding
per property, whichever workers found it, confirmed by replays, with the
smallest script any worker found; a script that violates several properties is
one finding that names them all.

outputs in --out:
  findings/repro-*.json   one reproducer per distinct finding (and its .pcap)
  test_findings.py        pytest replays every finding:  pytest OUT/ --server-cmd CMD
  summary.json            examples, examples/s, findings, coverage over time
  summary.png             findings and fault-event coverage over time
  workers/N/              each worker's log and raw artifacts

examples:
  epoll-harness fuzz --server './echo --port {port}' --duration 2h
  epoll-harness fuzz --server './echo --port {port}' --duration 10m --stop-on-first
  epoll-harness fuzz --server './echo --port {port}' --db redis://10.0.0.5:6379/0   # on each machine

exit status: 0 no confirmed finding; 1 confirmed findings (only then); 2 usage
error or a server that cannot run; 130 interrupted (the summary is written).
"""


def add_fuzz_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fuzz`` to ``epoll-harness``'s subcommands."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "fuzz",
        help="a long campaign on many workers: distinct, minimal, confirmed findings",
        description=(
            "Fuzz one server for a long time on every core (or several machines sharing a corpus) and "
            "end with a short list of distinct, minimal, confirmed bugs, each a regression test."
        ),
        epilog=FUZZ_EPILOG,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument(
        "--server",
        metavar="CMD",
        help="server command; {port} and {host} are filled in (default: [tool.epoll-harness] server)",
    )
    parser.add_argument(
        "--duration",
        type=duration,
        default=DEFAULT_DURATION,
        metavar="TIME",
        help=f"how long the workers search (default {DEFAULT_DURATION / 3600:g}h; 90s, 10m, 2h)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes (default: the cores)",
    )
    parser.add_argument(
        "--db",
        default=str(DEFAULT_DB),
        metavar="DIR|URL",
        help=f"the example database: a directory (default {DEFAULT_DB}) or redis://HOST:PORT/N",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument("--stop-on-first", action="store_true", help="stop at the first confirmed finding")
    parser.add_argument(
        "--no-steer",
        action="store_true",
        help="do not steer the search toward scarce fault events (Hypothesis target())",
    )
    parser.add_argument(
        "--shrink-budget",
        type=duration,
        default=60.0,
        metavar="TIME",
        help="per batch of findings: time to cut them down and confirm them (default 60s)",
    )
    parser.add_argument(
        "--confirm", type=int, default=3, metavar="K", help="replays that confirm each finding (default 3)"
    )
    parser.add_argument("--seed", type=int, default=None, help="worker K uses seed+K (default: random)")
    parser.add_argument(
        "--netns",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="each worker in a private network namespace (default: when permitted)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress; only the findings at the end")
    return parser


def run_fuzz_command(ns: argparse.Namespace) -> int:
    """Run ``epoll-harness fuzz``; the exit status."""
    try:
        config = _config(ns)
    except HarnessError as exc:
        _say(f"epoll-harness fuzz: error: {exc}")
        return EXIT_USAGE
    interrupted = [False]
    running: list[Campaign] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if not running:
            raise KeyboardInterrupt
        if interrupted[0]:
            running[0].kill()  # a second Ctrl-C: now
        interrupted[0] = True
        running[0].stop("interrupted")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    console = Console(stderr=True)
    show = None if ns.quiet else (_Live(console) if console.is_terminal else _Plain())
    try:
        if not ns.quiet:
            _say(
                f"epoll-harness fuzz: {config.server_command}: {plural(config.workers, 'worker')} for "
                f"{_clock(config.seconds)} (then at most {config.shrink_budget:g} s to settle findings); "
                f"corpus {config.database}; output {config.out}"
            )
        try:
            campaign = run_campaign(config, show, on_start=running.append)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        finally:
            if isinstance(show, _Live):
                show.close()
    except HarnessError as exc:
        _say(f"epoll-harness fuzz: error: {exc}")
        return EXIT_USAGE
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return _finish(campaign, interrupted[0])


def _config(ns: argparse.Namespace) -> CampaignConfig:
    table = read_table(Path.cwd())
    command = ns.server or resolve(BY_NAME["server"], None, table)
    if not command:
        raise UsageError("give the server command: --server CMD (or server in [tool.epoll-harness])")
    if ns.confirm < 0:
        raise UsageError(f"--confirm must be 0 or more, not {ns.confirm}")
    startup = resolve(BY_NAME["startup-timeout"], None, table)
    return CampaignConfig(
        server_command=server_template(command, table.cwd, table.env),
        seconds=ns.duration,
        workers=ns.workers or default_jobs(),
        database=ns.db,
        out=ns.out.resolve(),
        stop_on_first=ns.stop_on_first,
        steer=not ns.no_steer,
        shrink_budget=ns.shrink_budget,
        confirm=ns.confirm,
        seed=ns.seed,
        netns=ns.netns,
        limits=DEFAULT_LIMITS.with_(startup_timeout=startup),
    )


def _finish(campaign: Campaign, interrupted: bool) -> int:
    out = campaign.config.out
    errors = [w.error for w in campaign.workers if w.error]
    if errors and len(errors) == len(campaign.workers) and not campaign.findings:
        _say(f"epoll-harness fuzz: error: no worker could run: {errors[0]}")
        write_summary(campaign, interrupted)
        return EXIT_USAGE
    failures = [f for f in campaign.findings.values() if counts_as_failure(f)]
    if campaign.findings:
        write_regression_tests(out)
    summary = write_summary(campaign, interrupted)
    lines = [
        f"{campaign.examples} examples in {_clock(campaign.elapsed)} on "
        f"{plural(len(campaign.workers), 'worker')} ({campaign.rate:.1f}/s); "
        + (f"{plural(len(failures), 'confirmed finding')}" if failures else "no confirmed finding")
        + (" (interrupted)" if interrupted else "")
    ]
    for finding in sorted(campaign.findings.values(), key=lambda f: f.seconds_to_find):
        status = "FOUND" if counts_as_failure(finding) else finding.level.upper()
        if finding.level == "fail" and not counts_as_failure(finding):
            status = "unconfirmed"
        confirmed = f", confirmed {finding.confirmed}/{finding.replays}" if finding.replays else ""
        lines += [
            f"  {status} {finding.property_name}: {finding.message}",
            f"      after {_clock(finding.seconds_to_find)} (worker {finding.worker}), found "
            f"{plural(finding.times_found, 'time')}{confirmed}; {finding.steps} steps: {finding.shape}",
            f"      {finding.reproducer}" + (f"  (pcap: {Path(finding.pcap).name})" if finding.pcap else ""),
        ]
        if finding.also:
            lines.append(f"      the same script also violates {', '.join(finding.also)}")
        if len(finding.variants) > 1:
            lines.append(f"      seen in {len(finding.variants)} forms (summary.json lists them)")
    for worker in campaign.workers:
        if worker.error:
            lines.append(f"  worker {worker.index}: {worker.error}")
    if campaign.findings:
        lines.append(
            f"regression tests: pytest {shlex.quote(str(out))} --server-cmd "
            f"{shlex.quote(campaign.config.server_command)}"
        )
    lines.append(f"summary: {summary}")
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:
        pass
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FINDINGS if failures else EXIT_OK


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _say(text: str) -> None:
    try:
        print(text, file=sys.stderr, flush=True)
    except (BrokenPipeError, ValueError):
        pass


class _Plain:
    """A CI log: one line every :data:`PLAIN_EVERY` seconds, and one per new finding."""

    def __init__(self) -> None:
        self.last = 0.0
        self.findings = 0

    def __call__(self, campaign: Campaign) -> None:
        now = time.monotonic()
        new = len(campaign.findings) != self.findings
        if not new and now - self.last < PLAIN_EVERY:
            return
        self.last, self.findings = now, len(campaign.findings)
        found = sorted({f.property_name for f in campaign.findings.values()})
        coverage = campaign.coverage
        newest = max(campaign.coverage_changed.values(), default=0.0)
        _say(
            f"fuzz {_clock(campaign.elapsed)}: {campaign.examples} examples ({campaign.rate:.1f}/s), "
            f"{plural(len(found), 'finding')}{': ' + ', '.join(found) if found else ''}; "
            f"{plural(len(coverage), 'fault event')} seen, the last new one "
            f"{_clock(campaign.elapsed - newest)} ago"
            + (f"; stopping ({campaign.stopping})" if campaign.stopping else "")
        )


class _Live:
    """A terminal: a live table per worker, the findings, and the coverage."""

    def __init__(self, console: Console) -> None:
        self.live = Live(console=console, refresh_per_second=2, transient=False)
        self.live.start()

    def __call__(self, campaign: Campaign) -> None:
        self.live.update(_tables(campaign))

    def close(self) -> None:
        self.live.stop()


def _tables(campaign: Campaign) -> Group:
    workers = Table(title=f"fuzzing for {_clock(campaign.elapsed)}", title_justify="left")
    for column in ("worker", "examples", "per s", "restarts", "findings", "status"):
        workers.add_column(column, justify="right" if column != "status" else "left")
    for w in campaign.workers:
        status = w.error or ("done" if w.done else "searching")
        workers.add_row(
            str(w.index), str(w.examples), f"{w.rate:.1f}", str(w.restarts), str(w.findings), status
        )
    workers.add_row(
        "all", str(campaign.examples), f"{campaign.rate:.1f}", "", str(len(campaign.findings)), ""
    )
    findings = Table(title="distinct findings", title_justify="left")
    for column in ("property", "after", "found", "confirmed", "steps", "message"):
        findings.add_column(column)
    for f in sorted(campaign.findings.values(), key=lambda f: f.seconds_to_find):
        confirmed = f"{f.confirmed}/{f.replays}" if f.replays else "-"
        findings.add_row(
            f.property_name,
            _clock(f.seconds_to_find),
            f"{f.times_found}x",
            confirmed,
            str(f.steps),
            f.message[:70],
        )
    coverage = Table(title="fault events (coverage)", title_justify="left")
    coverage.add_column("event")
    coverage.add_column("seen", justify="right")
    coverage.add_column("last grew", justify="right")
    for event, count in campaign.coverage.most_common(12):
        ago = campaign.elapsed - campaign.coverage_changed.get(event, 0.0)
        coverage.add_row(event[:70], str(count), f"{_clock(ago)} ago")
    parts: list[Any] = [workers, findings, coverage]
    if campaign.stopping:
        parts.append(f"stopping: {campaign.stopping}")
    return Group(*parts)
