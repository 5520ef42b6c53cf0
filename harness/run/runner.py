"""``check``: every property, against one server, driven by Hypothesis.

One Hypothesis run draws scripts; each example runs through the
:class:`~harness.run.checker.Checker`, which judges every property at once.
A violated property raises its own exception type, so Hypothesis keeps the
distinct bugs apart, shrinks each to a minimal script, and replays each
minimal script last: the last failing script recorded for a property is its
reproducer.

Hypothesis stops looking soon after its first bug (it then shrinks what it
has), so the search goes on in *rounds*: while budget remains, another
Hypothesis run (seed + round) looks for properties that have no reproducer
yet, the ones that have being ignored in its verdicts. A server whose easy
bug (say, a leaked fd on close) is found first is still searched for its
harder one (no EOF after a half-close).

Budgets, in wall-clock time: ``time_budget`` for the search (no new
example is drawn past it; ``max_examples`` bounds it too), then at most
``shrink_budget`` more to make what it found small and confirm it, so a run
ends within ``time_budget + shrink_budget`` (plus the fd-exhaustion scenario,
a few seconds). Hypothesis's shrinking of the bugs a round found gets half
of ``shrink_budget`` from the round's first find; past that the smallest
failing script found so far is kept, and the next round starts.
``until_found`` ends the search early, once each of its properties has been
violated. After the search, each failing script is cut down further by the
reducer (:mod:`harness.run.reduce`: whole connections, steps, then sizes)
in the rest of the shrink budget, then replayed ``confirm`` times: the
report says ``confirmed 3/3``, and a violation that never replays is
reported apart, as unconfirmed. With a ``seed`` no example database is
used, so the same seed and ``max_examples`` draw the same scripts on every
run.

Non-strict findings (legal but impolite: a slow accept queue, a server that
drops a client that does not read) are recorded with the first script that
showed them and never fail a run or stop the search.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis import target as hypothesis_target
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.errors import Flaky

from harness.drive.netns import NetworkSetup
from harness.drive.process import ServerProcess
from harness.model.errors import PropertyViolation, ServerStartError, UsageError
from harness.model.limits import DEFAULT_LIMITS, Limits
from harness.model.properties import (
    ACCEPT_ROBUST,
    BOUNDED_MEMORY,
    CLEANUP,
    GRACEFUL_FIN,
    IDLE_CPU,
    PRIORITY,
    SURVIVES,
    Violation,
    exercised,
    primary,
)
from harness.model.reduction import renumbered
from harness.model.scenario import fd_exhaustion_scenario
from harness.model.script import Script
from harness.run.checker import Checker, Outcome
from harness.run.corpus import SaveOnlyDatabase
from harness.run.reduce import reduce, still_fails
from harness.run.report import NON_STRICT, Reproducer, RunReport, ViolationRecord
from harness.run.scenarios import run_scenario
from harness.run.verdict import enforce

DEFAULT_MAX_EXAMPLES = 200
DEFAULT_TIME_BUDGET = 60.0
DEFAULT_SHRINK_BUDGET = 60.0
UNBOUNDED = 10**9  # max_examples when only the time budget bounds the search
DEFAULT_CONFIRM = 3
CONFIRM_RESERVE = 2.0  # seconds kept per failure for its confirming replays when the reducer runs
DEFAULT_ARTIFACTS = Path("epoll-harness-artifacts")
PROCESS_PROPERTIES = (CLEANUP, IDLE_CPU, BOUNDED_MEMORY, SURVIVES)


class _BudgetSpent(BaseException):
    """Stops Hypothesis (it lets BaseExceptions through) when shrinking takes too long."""


class Interrupted(BaseException):
    """The user asked the run to stop (SIGINT or SIGTERM); raised between examples."""


class StopSignal:
    """Set from a signal handler, checked between examples.

    A KeyboardInterrupt raised wherever the signal lands can be swallowed
    (CPython ignores exceptions raised in a gc callback, and Hypothesis has
    one), so the handler only sets this flag and the run stops at the next
    example boundary, which the executor's deadlines keep a few seconds away.
    """

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt  # a second signal: stop now
        self.signal = signum


@dataclass(frozen=True)
class CheckConfig:
    server_command: str | None
    attach: tuple[str, int] | None = None
    pid: int | None = None
    max_examples: int = DEFAULT_MAX_EXAMPLES
    time_budget: float = DEFAULT_TIME_BUDGET
    shrink_budget: float = DEFAULT_SHRINK_BUDGET
    seed: int | None = None
    limits: Limits = DEFAULT_LIMITS
    artifacts: Path = DEFAULT_ARTIFACTS
    database: Path | None = Path(".hypothesis") / "epoll-harness"
    scenarios: bool = True
    # End the search once every one of these properties has been violated (shrinking still gets
    # its budget): a known bug that only needs to be seen again, as in the mutation self-test.
    until_found: frozenset[str] = frozenset()
    # Capture every script's packets here (graceful-fin is judged only then); None: no capture.
    capture_dir: Path | None = None
    # Replays of each reproducer that confirm it (0: none; every violation is reported as found).
    confirm: int = DEFAULT_CONFIRM
    # A campaign's shared example database (a directory or Redis), used instead of ``database``
    # (see harness.run.corpus for how each round uses it); None: ``database``.
    shared_database: ExampleDatabase | None = None
    # Campaigns: each round's findings are cut down, confirmed and saved as soon as the round
    # ends (``on_finding`` hears of each), not when the run ends; and the search is steered
    # toward the fault events seen least so far, with Hypothesis's target().
    settle_each_round: bool = False
    steer: bool = False

    @property
    def described_server(self) -> str:
        if self.server_command is not None:
            return self.server_command
        assert self.attach is not None
        return f"attached to {self.attach[0]}:{self.attach[1]}" + (f" (pid {self.pid})" if self.pid else "")


@dataclass
class _Failure:
    script: Script
    violation: Violation
    all_violations: list[Violation]
    found_after: float
    found: Script | None = None  # the script the search found, when the reducer cut it down


@dataclass
class _RunState:
    started: float
    failures: dict[str, _Failure] = field(default_factory=dict)
    first_found: dict[str, float] = field(default_factory=dict)
    evidence: Counter[str] = field(default_factory=Counter)
    seen: set[str] = field(default_factory=set)  # every property violated, with a reproducer or not
    settled: set[str] = field(default_factory=set)  # failures already cut down, confirmed and saved
    non_strict: dict[str, tuple[Violation, Script]] = field(default_factory=dict)  # the first of each
    diagnostics: set[str] = field(default_factory=set)
    confirmations: dict[str, int] = field(default_factory=dict)  # property -> replays that failed it


Progress = Callable[[RunReport], None]
FindingHeard = Callable[[ViolationRecord], None]
#: The target() label under which a campaign steers toward scarce fault events.
SCARCE_EVENTS = "scarce fault events"


def default_strategy() -> st.SearchStrategy[Script]:
    from strategies import scripts

    return scripts()


def strategy_for(
    network: NetworkSetup, kind: str = "full", limits: Limits = DEFAULT_LIMITS
) -> st.SearchStrategy[Script]:
    """The scripts for a run on ``network``: ``full`` (every fault) or ``short``."""
    from strategies import echo_path_capacity, scripts, short_scripts

    if kind == "short":
        return short_scripts()
    # Floods only need to exceed the kernel buffers actually in force, and now and then the memory
    # bound; RSTs are forged on the wire only in the lab (it takes root to create it, and forging
    # needs root).
    return scripts(
        flood_buffer_bytes=echo_path_capacity(network.tcp_wmem, network.tcp_rmem),
        allow_injection=network.private,
        flood_past_bytes=limits.memory_bound,
    )


def run_check(
    config: CheckConfig,
    strategy: st.SearchStrategy[Script] | None = None,
    progress: Progress | None = None,
    stop: StopSignal | None = None,
    checker: Checker | None = None,
    on_finding: FindingHeard | None = None,
) -> RunReport:
    """Run every property against the configured server; never leaves a server running.

    ``checker``: the one to search with, built by the caller for the configured server
    (the entry points' judges only the selected properties); by default one is built here.
    ``on_finding``: told of each violation once its reproducer is saved (with
    ``settle_each_round``, as each round ends; otherwise at the end).
    """
    report = RunReport(config.described_server, config.seed)
    if config.capture_dir is None:
        report.properties[GRACEFUL_FIN].skipped = "judged on captured packets: use --capture always"
    if config.attach is not None:
        if checker is None:
            checker = Checker(address=config.attach, pid=config.pid, limits=config.limits)
        if config.pid is None:
            for name in PROCESS_PROPERTIES:
                report.properties[name].skipped = "needs --pid to observe the server process"
    elif checker is None:
        assert config.server_command is not None
        server = ServerProcess(config.server_command, ready_timeout=config.limits.startup_timeout)
        checker = Checker(server, limits=config.limits, capture_dir=config.capture_dir)
    state = _RunState(time.monotonic())
    # The fixed scenario is the one way to see some accept-robust bugs (EMFILE): when the run
    # is only after known bugs, it goes first, so that a search need not wait for it.
    scenarios_first = config.scenarios and ACCEPT_ROBUST in config.until_found
    if scenarios_first:
        run_scenarios(config, report)
        if report.properties[ACCEPT_ROBUST].violations:
            state.seen.add(ACCEPT_ROBUST)
    try:
        checker.start()
        chosen = strategy if strategy is not None else default_strategy()
        _run_hypothesis(config, checker, chosen, report, state, progress, stop, on_finding)
        unsettled = [name for name in state.failures if name not in state.settled]
        if stop is None or stop.signal is None:
            # The shrink budget counts from the search's end: a search that ended early
            # (until_found, max_examples) does not hand the rest of its time to the reducer.
            search_end = min(time.monotonic(), state.started + config.time_budget)
            last = search_end + config.shrink_budget
            _reduce(config, checker, state, stop, unsettled, last)
            _confirm(config, checker, state, stop, unsettled)
    finally:
        checker.stop()
    report.restarts = checker.restarts
    report.evidence = dict(state.evidence)
    report.diagnostics = sorted(state.diagnostics)
    for record in _record_failures(config, report, state, unsettled):
        if on_finding is not None:
            on_finding(record)
    _record_non_strict(config, report, state)
    if stop is not None and stop.signal is not None:
        raise Interrupted
    if config.scenarios and not scenarios_first:
        run_scenarios(config, report)
    report.seconds = time.monotonic() - state.started
    return report


def _run_hypothesis(
    config: CheckConfig,
    checker: Checker,
    strategy: st.SearchStrategy[Script],
    report: RunReport,
    state: _RunState,
    progress: Progress | None,
    stop: StopSignal | None,
    on_finding: FindingHeard | None = None,
) -> None:
    deadline = [state.started + config.time_budget]  # moved earlier once until_found is satisfied
    # Hypothesis shrinks in the first half of the shrink budget; the reducer and the confirming
    # replays have the second (see _reduce): no example of the search starts past this.
    last = state.started + config.time_budget + config.shrink_budget / 2
    # A property with a reproducer already (from the scenario) is not searched for again.
    before = frozenset(name for name, stats in report.properties.items() if stats.violations)
    for round_ in itertools.count():
        known = before | frozenset(state.failures)
        _search_round(config, checker, strategy, report, state, progress, stop, round_, known, deadline, last)
        if config.settle_each_round and (stop is None or stop.signal is None):
            _settle(config, checker, report, state, stop, on_finding)
        if (
            time.monotonic() >= deadline[0]
            or report.examples >= config.max_examples
            or before | frozenset(state.failures) == known  # nothing new: Hypothesis ran out of examples
        ):
            return


def _search_round(
    config: CheckConfig,
    checker: Checker,
    strategy: st.SearchStrategy[Script],
    report: RunReport,
    state: _RunState,
    progress: Progress | None,
    stop: StopSignal | None,
    round_: int,
    known: frozenset[str],
    deadline: list[float],
    last: float,
) -> None:
    """One Hypothesis run; violations of the ``known`` properties (they have a reproducer) do not fail it."""
    round_end = [last]  # the shrink window, from this round's first find
    found = [False]  # has this round found anything new?

    def stop_if_due() -> None:
        if stop is not None and stop.signal is not None:
            raise Interrupted
        now = time.monotonic()
        if now > round_end[0] or (not found[0] and now > deadline[0]):
            raise _BudgetSpent  # the search is over, or this round's shrinking is

    def one_example(script: Script) -> None:
        stop_if_due()
        outcome = checker.check(script, skip=known)
        _count(report, outcome)
        if config.steer:
            # Scripts that reach fault events seen rarely so far score high: Hypothesis's target
            # phase then mutates them further, so hours explore states that minutes do not.
            hypothesis_target(scarcity(outcome.evidence, state.evidence), label=SCARCE_EVENTS)
        state.evidence.update(outcome.evidence)
        report.evidence = dict(state.evidence)  # live, for progress displays
        state.diagnostics.update(outcome.diagnostics)
        for finding in outcome.non_strict:
            state.non_strict.setdefault(finding.property_name, (finding, script))
        if progress is not None:
            progress(report)
        new = [v for v in outcome.violations if v.property_name not in known]
        if new:
            worst = primary(new)
            now = time.monotonic()
            elapsed = now - state.started
            state.first_found.setdefault(worst.property_name, elapsed)
            # Keep the smallest failing script seen for the property: Hypothesis
            # tries smaller candidates for the bug it shrinks, but shrinking
            # another bug may break this property too, with a larger script.
            kept = state.failures.get(worst.property_name)
            if kept is None or _size(script) < _size(kept.script):
                state.failures[worst.property_name] = _Failure(script, worst, outcome.violations, elapsed)
            round_end[0] = min(round_end[0], now + config.shrink_budget / 2)
            found[0] = True
        state.seen.update(v.property_name for v in outcome.violations)
        if config.until_found and config.until_found <= state.seen:
            deadline[0] = min(deadline[0], time.monotonic())
        enforce(dataclasses.replace(outcome, violations=new) if known else outcome)

    # Later rounds ignore some violations: they must not touch the saved examples. A seeded run
    # replays nothing saved, so that the same seed draws the same scripts every time.
    database: ExampleDatabase | None = None
    if config.shared_database is not None:
        # Later rounds ignore known properties: their saved failures must neither replay nor go.
        database = config.shared_database if not round_ else SaveOnlyDatabase(config.shared_database)
    elif config.database is not None and not round_ and config.seed is None:
        database = DirectoryBasedExampleDatabase(str(config.database))
    test = settings(
        max_examples=max(1, config.max_examples - report.examples),
        deadline=None,
        database=database,
        derandomize=False,
        phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=True,
        print_blob=False,
        # The CLI reports violations itself; Hypothesis would also print a
        # "reproduce with @seed" note whenever a budget stops a search.
        verbosity=Verbosity.quiet,
    )(given(_checked_before_drawing(strategy, stop_if_due))(one_example))
    if config.seed is not None:
        test = hypothesis_seed(config.seed + round_)(test)
    try:
        test()
    except _BudgetSpent:
        pass
    except (PropertyViolation, Flaky, BaseExceptionGroup):
        pass  # every failure is in state.failures, with its script


def _size(script: Script) -> tuple[int, int]:
    """What "smaller" means for a reproducer: fewer steps, then fewer bytes."""
    return len(script), script.bytes_sent


def _checked_before_drawing(
    strategy: st.SearchStrategy[Script], stop_if_due: Callable[[], None]
) -> st.SearchStrategy[Script]:
    """``strategy``, with the budgets and the stop signal checked before every draw too.

    Hypothesis may try many inputs that never reach the test: its target
    phase's hill climbing was seen drawing script after script for minutes
    past the time budget, with the test, where the budget was checked, never
    called (tests/test_runner.py makes the same happen with rejected inputs).
    """

    @st.composite
    def checked(draw: st.DrawFn) -> Script:
        stop_if_due()
        return draw(strategy)

    return checked()


def _count(report: RunReport, outcome: Outcome) -> None:
    report.examples += 1
    for name in exercised(outcome.script):
        stats = report.properties[name]
        if stats.skipped is None:
            stats.examples += 1
            stats.seconds += outcome.seconds


def scarcity(seen_now: set[str] | frozenset[str], seen_before: Counter[str]) -> float:
    """How rare this example's fault events have been: the sum of 1 / (1 + times seen before)."""
    return sum(1.0 / (1 + seen_before[event]) for event in seen_now)


def _settle(
    config: CheckConfig,
    checker: Checker,
    report: RunReport,
    state: _RunState,
    stop: StopSignal | None,
    on_finding: FindingHeard | None,
) -> None:
    """Cut down, confirm and save the failures a round found, in half the shrink budget."""
    names = [name for name in state.failures if name not in state.settled]
    if not names:
        return
    _reduce(config, checker, state, stop, names, time.monotonic() + config.shrink_budget / 2)
    _confirm(config, checker, state, stop, names)
    for record in _record_failures(config, report, state, names):
        if on_finding is not None:
            on_finding(record)


def _reduce(
    config: CheckConfig,
    checker: Checker,
    state: _RunState,
    stop: StopSignal | None,
    failing: list[str],
    last: float,
) -> None:
    """Cut each failing script down (see :mod:`harness.run.reduce`), sharing the time up to ``last``."""
    names = sorted(failing, key=PRIORITY.index)
    for done, name in enumerate(names):
        if stop is not None and stop.signal is not None:
            return
        # Each failure gets an equal share of the time left, keeping a margin for the confirmations.
        left = last - time.monotonic() - CONFIRM_RESERVE * len(names)
        if left <= 0:
            return
        deadline = time.monotonic() + left / (len(names) - done)
        failure = state.failures[name]
        smaller = renumbered(reduce(failure.script, still_fails(checker, name), deadline))
        if _size(smaller) < _size(failure.script):
            state.failures[name] = dataclasses.replace(failure, script=smaller, found=failure.script)


def _confirm(
    config: CheckConfig, checker: Checker, state: _RunState, stop: StopSignal | None, failing: list[str]
) -> None:
    """Replay each failure's script ``config.confirm`` times; count the replays that violate it again.

    When the reducer's script never fails again, the search's own script is
    replayed too, and whichever replays more often is the reproducer. With
    ``confirm`` 0 nothing is replayed and every violation stands as found.
    """
    if not config.confirm:
        return
    for name in failing:
        failure = state.failures[name]
        scripts = [failure.script]
        if failure.found is not None and failure.found != failure.script:
            scripts.append(failure.found)
        for script in scripts:
            failed, first = _replays(config, checker, script, name, stop)
            if first is not None:
                # The reproducer's message is what its own replay shows (the reducer may have cut
                # the script the search's message was about).
                state.failures[name] = dataclasses.replace(
                    failure, script=script, violation=first[0], all_violations=first[1]
                )
            state.confirmations[name] = failed
            if failed:
                break


def _replays(
    config: CheckConfig, checker: Checker, script: Script, name: str, stop: StopSignal | None
) -> tuple[int, tuple[Violation, list[Violation]] | None]:
    """How many of ``config.confirm`` replays violate ``name``; the first such violation, and all of its."""
    failed = 0
    first = None
    for _ in range(config.confirm):
        if stop is not None and stop.signal is not None:
            break
        try:
            outcome = checker.check(script)
        except ServerStartError:
            break  # the server no longer starts: the replays so far stand
        again = [v for v in outcome.violations if v.property_name == name]
        if again and first is None:
            first = (again[0], outcome.violations)
        failed += bool(again)
    return failed, first


def _record_failures(
    config: CheckConfig, report: RunReport, state: _RunState, names: list[str]
) -> list[ViolationRecord]:
    """Save the reproducers of the failures ``names``; their records, as added to the report."""
    records = []
    for name in names:
        failure = state.failures[name]
        state.settled.add(name)
        also = tuple(sorted({v.property_name for v in failure.all_violations if v.strict} - {name}))
        repro = Reproducer(
            property_name=name,
            message=failure.violation.describe(),
            server_command=config.server_command,
            seed=config.seed,
            limits=config.limits,
            script=failure.script,
            also=also,
        )
        path = repro.save(config.artifacts)
        confirmed = state.confirmations.get(name)
        replays = config.confirm if confirmed is not None else 0
        report.properties[name].violations.append(
            ViolationRecord(
                name,
                failure.violation.describe(),
                str(path),
                steps=len(failure.script),
                bytes_sent=failure.script.bytes_sent,
                flaky=confirmed is not None and 0 < confirmed < replays,
                seconds_to_find=round(state.first_found.get(name, failure.found_after), 3),
                confirmed=confirmed,
                replays=replays,
                also=also,
            )
        )
        records.append(report.properties[name].violations[-1])
    # A property violated in a reproducer of another is violated: said so, with that reproducer.
    for name in names:
        failure = state.failures[name]
        for other in failure.all_violations:
            stats = report.properties[other.property_name]
            if not other.strict or stats.violations or other.property_name in state.failures:
                continue
            record = report.properties[name].violations[-1]
            stats.violations.append(
                dataclasses.replace(
                    record,
                    property_name=other.property_name,
                    message=f"{other.describe()} (seen in the reproducer of {name})",
                    also=(),
                    seconds_to_find=None,
                )
            )
    return records


def _record_non_strict(config: CheckConfig, report: RunReport, state: _RunState) -> None:
    for name, (finding, script) in state.non_strict.items():
        repro = Reproducer(
            property_name=name,
            message=finding.describe(),
            server_command=config.server_command,
            seed=config.seed,
            limits=config.limits,
            script=script,
            level=NON_STRICT,
        )
        path = repro.save(config.artifacts)
        report.properties[name].non_strict.append(
            ViolationRecord(
                name,
                finding.describe(),
                str(path),
                steps=len(script),
                bytes_sent=script.bytes_sent,
                level=NON_STRICT,
            )
        )


def run_scenarios(config: CheckConfig, report: RunReport) -> list[ViolationRecord]:
    """The fixed scenario (fd exhaustion) against a server of its own; the records it added."""
    if config.server_command is None:
        return []  # an attached server's RLIMIT_NOFILE is not ours to set
    scenario = fd_exhaustion_scenario(config.limits)
    started = time.monotonic()
    violation = run_scenario(config.server_command, scenario, config.limits)
    stats = report.properties[ACCEPT_ROBUST]
    stats.examples += 1
    stats.seconds += time.monotonic() - started
    if violation is None:
        return []
    # Usually accept-robust's; cleanup's when the server kept the descriptors it ran out of.
    stats = report.properties[violation.property_name]
    if not stats.violations:
        repro = Reproducer(
            violation.property_name,
            violation.describe(),
            config.server_command,
            config.seed,
            config.limits,
            scenario=scenario,
        )
        path = repro.save(config.artifacts)
        stats.violations.append(ViolationRecord(violation.property_name, violation.describe(), str(path)))
        return [stats.violations[-1]]
    return []


def replay(repro: Reproducer, server_command: str | None, limits: Limits | None = None) -> list[Violation]:
    """Run one reproducer again; the violations seen (empty: it passed this time)."""
    command = server_command or repro.server_command
    if command is None:
        raise UsageError(
            "this reproducer was recorded against an attached server: give --server CMD to replay it"
        )
    limits = limits or repro.limits
    if repro.scenario is not None:
        violation = run_scenario(command, repro.scenario, limits)
        return [] if violation is None else [violation]
    assert repro.script is not None
    with Checker(ServerProcess(command, ready_timeout=limits.startup_timeout), limits=limits) as checker:
        return checker.check(repro.script).violations
