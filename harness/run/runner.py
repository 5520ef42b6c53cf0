"""``check``: every property, against one server, driven by Hypothesis.

The search checks the scripts the example database kept from earlier runs
(:mod:`harness.run.corpus`), then the explicit examples (a flood past the
memory bound, a half-close: :func:`explicit_examples`), then draws new ones
with Hypothesis; each example goes through the
:class:`~harness.run.checker.Checker`, which judges every property at once.
The test never raises: a violated property is recorded with the script that
first broke it, and the search goes on for the others, the properties
already broken no longer judged (so a server
whose easy bug, say a leaked fd on close, shows in every example is still
searched for its hard one, no EOF after a half-close, in the same run, with
Hypothesis's target() steering intact). Hypothesis would stop looking soon
after a first failure; a fresh run per finding started from its simplest
scripts every time.

Budgets, in wall-clock time: ``time_budget`` for the search (no new
example is started past it; ``max_examples`` bounds it too), then at most
``shrink_budget`` more to make what it found small and confirm it, so a run
ends within ``time_budget + shrink_budget`` (plus the fd-exhaustion scenario,
a few seconds). ``until_found`` ends the search early, once each of its
properties has been violated. After the search, each failing script is cut
down by the reducer (:mod:`harness.run.reduce`: halves, whole connections,
steps, then sizes; every cut kept only if it still fails twice), then
replayed ``confirm`` times: the report says ``confirmed 3/3``, and a
violation that never replays is reported apart, as unconfirmed. Campaigns
(``settle_as_found``) cut down, confirm and save findings in batches as the
search goes on (a batch is started at most half a minute after its first
find). With a ``seed`` no example database is used, so the same seed and
``max_examples`` draw the same scripts on every run.

Non-strict findings (legal but impolite: a slow accept queue, a server that
drops a client that does not read) are recorded with the first script that
showed them and never fail a run or stop the search.
"""

from __future__ import annotations

import dataclasses
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
from hypothesis.errors import Unsatisfiable

from harness.drive.netns import NetworkSetup
from harness.drive.process import ServerProcess
from harness.model.errors import ExampleAbandoned, ServerStartError, UsageError
from harness.model.limits import DEFAULT_LIMITS, MIB, Limits
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
from harness.model.script import Close, Connect, Flood, Payload, ReadToEof, Script, Send, ShutdownWrite
from harness.run.checker import Checker, Outcome
from harness.run.corpus import SavedFailure, forget, forget_failure, save_failure, saved_failures
from harness.run.reduce import reduce, still_fails
from harness.run.report import NON_STRICT, Reproducer, RunReport, ViolationRecord
from harness.run.scenarios import run_scenario
from harness.run.verdict import record_evidence

DEFAULT_MAX_EXAMPLES = 200
DEFAULT_TIME_BUDGET = 60.0
DEFAULT_SHRINK_BUDGET = 60.0
UNBOUNDED = 10**9  # max_examples when only the time budget bounds the search
DEFAULT_CONFIRM = 3
#: A campaign's finding is cut down, confirmed and reported at most this long after it was found.
SETTLE_WITHIN = 30.0
CONFIRM_RESERVE = 2.0  # seconds kept per failure for its confirming replays when the reducer runs
DEFAULT_ARTIFACTS = Path("epoll-harness-artifacts")
PROCESS_PROPERTIES = (CLEANUP, IDLE_CPU, BOUNDED_MEMORY, SURVIVES)


class _BudgetSpent(KeyboardInterrupt):
    """Stops Hypothesis once the search's time is up.

    A KeyboardInterrupt, because that is the one exception Hypothesis's engine
    lets through as it is: any other raised while a script is drawn makes it
    conclude the half-drawn example and report its own (false)
    "inconsistent data generation" error.
    """


class Interrupted(KeyboardInterrupt):
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
    # (see harness.run.corpus); None: ``database``.
    shared_database: ExampleDatabase | None = None
    # Campaigns: findings are cut down, confirmed and saved in batches while the search goes on
    # (``on_finding`` hears of each), not when the run ends; and the search is steered
    # toward the fault events seen least so far, with Hypothesis's target().
    settle_as_found: bool = False
    steer: bool = False
    # The search is run as Hypothesis runs of this many examples each (None: one run):
    # see _hypothesis_search.
    search_round: int | None = None
    # Checked after the corpus and before the first drawn script, every run (explicit_examples).
    explicit: tuple[Script, ...] = ()

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
    from_scenario: set[str] = field(default_factory=set)  # properties the fixed scenario broke first
    corpus: ExampleDatabase | None = None  # where reproducers' scripts are kept for the next run
    # Campaigns: the example count and time of the first finding not settled yet, and the
    # count at the last new one (see _time_to_settle).
    unsettled_since: tuple[int, float] | None = None
    last_new_at: int = 0


Progress = Callable[[RunReport], None]
FindingHeard = Callable[[ViolationRecord], None]
#: The target() label under which a campaign steers toward scarce fault events.
SCARCE_EVENTS = "scarce fault events"
#: Steering divides an example's scarcity by 1 + its checking time in these units (seconds).
STEER_COST_UNIT = 0.05
#: A campaign's search is Hypothesis runs of this many examples each (see _hypothesis_search).
SEARCH_ROUND = 200


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


def explicit_examples(
    network: NetworkSetup, kind: str = "full", limits: Limits = DEFAULT_LIMITS
) -> tuple[Script, ...]:
    """Scripts every ``full`` run checks before it draws (as Hypothesis's ``@example``).

    Two shapes every server meets and the strategy reaches only by luck, each
    the smallest script that shows its bug, checked first so that a verdict
    does not depend on the draw: :func:`flood_past_the_memory_bound` (first:
    a run of one example checks it) and :func:`half_close_with_echo_owed`.
    """
    if kind != "full":
        return ()
    return (flood_past_the_memory_bound(network, limits), half_close_with_echo_owed())


def flood_past_the_memory_bound(network: NetworkSetup, limits: Limits = DEFAULT_LIMITS) -> Script:
    """A client floods past the memory bound without reading, then closes.

    The strategy draws such a flood now and then (one flood in six); a run of
    a few hundred scripts under load once drew none, and an unbounded queue
    went unreported. A bounded server stops reading at its high-water mark
    (the flood ends as soon as it sleeps with the bytes unread), an unbounded
    one reads it all.
    """
    from strategies import echo_path_capacity, min_flood_size

    # Past the bound by well over the kernel's queues on the way (client send queue, server
    # receive and send queues, client receive queue), so that what an unbounded server holds
    # passes it whatever the buffers; a bounded server stops reading long before.
    margin = MIB + 4 * min_flood_size(echo_path_capacity(network.tcp_wmem, network.tcp_rmem))
    return Script((Connect(0), Flood(0, size=limits.memory_bound + margin), Close(0)))


def half_close_with_echo_owed() -> Script:
    """A client sends one byte, shuts its side down, and reads to EOF.

    The whole of the commonest half-close bug (a server that never acts on
    EOF, or closes before it echoed): the drawn scripts reach it among a dozen
    other steps, and a two-worker campaign against the seed's server once
    spent 25 s without drawing it.
    """
    return Script((Connect(0), Send(0, Payload.of(b"x")), ShutdownWrite(0), ReadToEof(0), Close(0)))


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
    ``settle_as_found``, in batches during the search; otherwise at the end).
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
    state = _RunState(time.monotonic(), corpus=_corpus(config))
    # The fixed scenario is the one way to see some accept-robust bugs (EMFILE): when the run
    # is only after known bugs, it goes first, so that a search need not wait for it.
    scenarios_first = config.scenarios and ACCEPT_ROBUST in config.until_found
    if scenarios_first:
        run_scenarios(config, report)
        if report.properties[ACCEPT_ROBUST].violations:
            state.seen.add(ACCEPT_ROBUST)
            state.from_scenario.add(ACCEPT_ROBUST)
    try:
        checker.start()
        chosen = strategy if strategy is not None else default_strategy()
        _search(config, checker, chosen, report, state, progress, stop, on_finding)
        unsettled = [name for name in state.failures if name not in state.settled]
        if not _stopping(stop):
            # The shrink budget counts from the search's end: a search that ended early
            # (until_found, max_examples) does not hand the rest of its time to the reducer.
            search_end = min(time.monotonic(), state.started + config.time_budget)
            last = search_end + config.shrink_budget
            _reduce(config, checker, state, stop, unsettled, last)
            _confirm(config, checker, state, stop, unsettled)
    finally:
        checker.stop()
    report.restarts = checker.restarts
    report.abandoned = checker.abandoned
    report.evidence = dict(state.evidence)
    report.diagnostics = sorted(state.diagnostics)
    for record in _record_failures(config, report, state, unsettled):
        if on_finding is not None:
            on_finding(record)
    _record_non_strict(config, report, state)
    if _stopping(stop):
        raise Interrupted
    if config.scenarios and not scenarios_first:
        run_scenarios(config, report)
    report.seconds = time.monotonic() - state.started
    return report


def _search(
    config: CheckConfig,
    checker: Checker,
    strategy: st.SearchStrategy[Script],
    report: RunReport,
    state: _RunState,
    progress: Progress | None,
    stop: StopSignal | None,
    on_finding: FindingHeard | None = None,
) -> None:
    """The saved scripts, then one Hypothesis run, until the time budget, ``max_examples`` or ``until_found``.

    The test never raises: a violation is recorded (the first script that
    broke each property) and the search goes on, so that a server with an
    easy bug (a leaked fd on every close) is still searched for its hard one
    (no EOF after a half-close) by the same run, its target() steering
    intact. Hypothesis would stop soon after its first failure and shrink;
    earlier versions then started a new run, from the simplest scripts
    again, for each finding: a 45 s run against the one-shot mutant drew 46
    scripts in all and never the one that shows its bug. Properties that
    have a failing script are not judged again (no cleanup wait for a server
    known to leak), which keeps the examples that look for the others short.
    """
    deadline = [state.started + config.time_budget]  # moved earlier once until_found is satisfied

    def stop_if_due() -> None:
        if _stopping(stop):
            raise Interrupted
        if time.monotonic() > deadline[0]:
            raise _BudgetSpent

    def one_example(script: Script) -> Outcome:
        known = frozenset(state.failures) | frozenset(state.from_scenario)
        try:
            outcome = checker.check(script, skip=known)
        except ExampleAbandoned:
            raise _BudgetSpent from None
        _count(report, outcome)
        state.evidence.update(outcome.evidence)
        report.evidence = dict(state.evidence)  # live, for progress displays
        state.diagnostics.update(outcome.diagnostics)
        for finding in outcome.non_strict:
            state.non_strict.setdefault(finding.property_name, (finding, script))
        if progress is not None:
            progress(report)
        if _record_new(state, script, outcome, known):
            state.last_new_at = report.examples
            if state.unsettled_since is None:
                state.unsettled_since = (report.examples, time.monotonic())
        state.seen.update(v.property_name for v in outcome.violations)
        if config.until_found and config.until_found <= state.seen:
            deadline[0] = min(deadline[0], time.monotonic())
        if config.settle_as_found and _time_to_settle(state, report.examples) and not _stopping(stop):
            give_up_at, checker.give_up_at = checker.give_up_at, None  # the shrink budget's, not the search's
            try:
                _settle(config, checker, report, state, stop, on_finding)
            finally:
                checker.give_up_at = give_up_at
            state.unsettled_since = None
        return outcome

    # An example still running when the time is up stops at its next step (or inside a read that
    # keeps receiving), unjudged: the budget the user gave holds, not an example's (a slow server's
    # can take 20 s).
    checker.give_up_at = state.started + config.time_budget
    try:
        _replay_corpus(state, one_example, stop_if_due)
        for script in config.explicit[: max(0, config.max_examples - report.examples)]:
            stop_if_due()
            one_example(script)
        rounds = 0
        while report.examples < config.max_examples:
            first = report.examples
            _hypothesis_search(
                config, strategy, state, one_example, stop_if_due, first, config.search_round, rounds
            )
            rounds += 1
            if config.search_round is None or report.examples == first:
                break  # one run, or a round that checked nothing (the strategy rejected all)
    except (_BudgetSpent, Interrupted):
        pass  # what was found is in state.failures; run_check raises Interrupted once it is saved
    finally:
        checker.give_up_at = None


def _time_to_settle(state: _RunState, examples: int) -> bool:
    """Has a campaign searched long enough past its unsettled findings to settle them now?

    Hypothesis's own rule for going on after a first failure (at least ten
    examples more, and stop once the later half of the search found nothing
    new, or after 1,000), with a cap in time: findings come in batches (a
    server's easy bugs show in the same first examples, and settling each
    one as it came cost a 25 s campaign its first 10 s), and none waits long.
    """
    if state.unsettled_since is None:
        return False
    first, since = state.unsettled_since
    if time.monotonic() - since >= SETTLE_WITHIN:
        return True
    return examples - first >= 10 and (examples >= 2 * state.last_new_at or examples - first >= 1000)


def _stopping(stop: StopSignal | None) -> bool:
    return stop is not None and stop.signal is not None


def _replay_corpus(
    state: _RunState, one_example: Callable[[Script], Outcome], stop_if_due: Callable[[], None]
) -> None:
    """Check the corpus's saved scripts first; forget the ones that no longer break their property."""
    if state.corpus is None:
        return
    saved, unreadable = saved_failures(state.corpus)
    if unreadable:
        state.diagnostics.add(f"{unreadable} saved script(s) in the example database could not be read")
    by_script: dict[Script, list[SavedFailure]] = {}
    for entry in saved:  # one script kept for several properties is checked once
        by_script.setdefault(entry.script, []).append(entry)
    for script, entries in by_script.items():
        stop_if_due()
        outcome = one_example(script)
        broken = {v.property_name for v in outcome.violations} | set(state.failures)
        for entry in entries:
            if entry.property_name not in broken:
                forget(state.corpus, entry)


def _hypothesis_search(
    config: CheckConfig,
    strategy: st.SearchStrategy[Script],
    state: _RunState,
    one_example: Callable[[Script], Outcome],
    stop_if_due: Callable[[], None],
    done: int,
    round_: int | None = None,
    rounds_before: int = 0,
) -> None:
    """One Hypothesis run: up to ``max_examples - done`` examples, or ``round_`` of them.

    A campaign's search runs in rounds (:data:`SEARCH_ROUND`). Unsteered, a
    long Hypothesis run turns more and more to mutating the examples it has
    (copying spans of one into another, most tries simulated first): its own
    time grew to 42 ms per example, 65 % of a 60 s worker's time and scripts
    made mostly of floods, against 5 ms in rounds. Steered, Hypothesis
    generates for half the round, then climbs its best scores for the rest.
    The scarcity score goes stale as the events it rewarded become common,
    and in one long run Hypothesis kept climbing (and re-simulating) the
    heavy scripts that had scored best early: its own time per example
    was 6 to 27 ms (4 to 6 in rounds), and a worker checked 2.2 to 19.9
    examples/s in five 60 s runs, 11.8 on average, against 9.2 to 24.4, 18.3
    on average, in six runs in rounds of 200, the fault events reached about
    as often per 1,000 examples (bench/CAMPAIGN_RESULTS.md). Each round
    starts from fresh scores.
    """

    def test(script: Script) -> None:
        stop_if_due()
        outcome = one_example(script)
        record_evidence(outcome)
        if config.steer:
            # Scripts that reach fault events seen rarely so far score high: Hypothesis's target
            # phase then mutates them further, so hours explore states that minutes do not. The
            # events of this example are already counted: its own score is what it adds.
            before = state.evidence - Counter(outcome.evidence)
            hypothesis_target(steering_score(outcome, before), label=SCARCE_EVENTS)

    run = settings(
        max_examples=max(1, min(config.max_examples - done, round_ or UNBOUNDED)),
        deadline=None,
        database=None,  # failing scripts are kept in the corpus (harness.run.corpus), not as choices
        derandomize=False,
        phases=(Phase.generate, Phase.target),  # nothing raises, so nothing would be shrunk
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
    )(given(_checked_before_drawing(strategy, stop_if_due))(test))
    if config.seed is not None:
        # A later round's seed must not be another worker's (a campaign seeds worker i with S + i).
        round_seed = f"{config.seed} round {rounds_before}" if rounds_before else config.seed
        run = hypothesis_seed(round_seed)(run)
    try:
        run()
    except Unsatisfiable:
        pass  # the strategy rejected everything it drew until Hypothesis gave up: nothing to check


def _record_new(state: _RunState, script: Script, outcome: Outcome, known: frozenset[str]) -> bool:
    """Keep ``script`` for each property it is the first to break; was any?

    Every newly broken property gets the script, so that each is cut down
    for itself, except when the server died: a dead server explains the
    rest, and survives alone is recorded.
    """
    new = [v for v in outcome.violations if v.property_name not in known]
    if not new:
        return False
    if any(v.property_name == SURVIVES for v in new):
        new = [primary(new)]
    elapsed = time.monotonic() - state.started
    for violation in new:
        state.first_found.setdefault(violation.property_name, elapsed)
        state.failures[violation.property_name] = _Failure(script, violation, outcome.violations, elapsed)
        if state.corpus is not None:
            # Kept at once, as drawn: a run stopped before this is cut down loses nothing.
            save_failure(state.corpus, violation.property_name, script)
    return True


def _corpus(config: CheckConfig) -> ExampleDatabase | None:
    """The campaign's shared corpus, else the run's own database; none for a seeded run (so that
    the same seed checks the same scripts every time)."""
    if config.shared_database is not None:
        return config.shared_database
    if config.database is None or config.seed is not None:
        return None
    return DirectoryBasedExampleDatabase(str(config.database))


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


def steering_score(outcome: Outcome, seen_before: Counter[str]) -> float:
    """What a steered search climbs: the example's scarcity per unit of the time it took to check.

    A fuzzer keeps the fastest of the inputs that reach the same states (AFL
    favours small, quick entries). Scarcity alone made Hypothesis climb the
    heaviest scripts, whose rare events came with seconds of paced reads and
    megabytes moved: a steered worker checked 1.5 to 15 examples/s from run to
    run, 8 on average; per second of checking, 8 to 19, 13 on average
    (bench/CAMPAIGN_RESULTS.md), with the same fault events reached.
    """
    return scarcity(outcome.evidence, seen_before) / (1 + outcome.seconds / STEER_COST_UNIT)


def _settle(
    config: CheckConfig,
    checker: Checker,
    report: RunReport,
    state: _RunState,
    stop: StopSignal | None,
    on_finding: FindingHeard | None,
) -> None:
    """Cut down, confirm and save the failures not settled yet, in the shrink budget."""
    names = [name for name in state.failures if name not in state.settled]
    if not names:
        return
    _reduce(config, checker, state, stop, names, time.monotonic() + config.shrink_budget)
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
        if _stopping(stop):
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
        if _stopping(stop):
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
        if state.corpus is not None:
            save_failure(state.corpus, name, failure.script)
            if failure.found is not None and failure.found != failure.script:
                forget_failure(state.corpus, name, failure.found)  # the reproducer replaces it
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
