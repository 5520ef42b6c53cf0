"""The pytest plugin (entry point ``pytest11``): options, profiles, fixtures, short failure reports.

    pytest --pyargs harness.suite --server-cmd './my_server --port {port}' -n auto

runs the same property suite as ``epoll-harness check`` (one implementation,
two entry points). Installing the package is all a pytest user needs:

* **Hypothesis profiles** ``ci`` (60 examples), ``dev`` (15) and ``fuzz``
  (5000), none with a deadline (a network example's duration is the server's
  business; its stalls are judged by the harness's own deadlines). They are
  registered when the plugin is imported, before any ``conftest.py``, so a
  conftest that registers a profile of the same name wins; ``ci`` is loaded
  only when nothing else chose a profile (``--hypothesis-profile`` or a
  conftest's ``settings.load_profile``).
* **The network lab**: the fixtures that start the server move the worker
  process into a private network namespace when it may (root or
  CAP_SYS_ADMIN), as ``check`` does; the worker stays there for the rest of
  the session, so every later test in that worker runs there too
  (``--no-harness-netns`` keeps the host's network).
* **Findings**: every example the ``harness_checker`` judges is watched; a test
  that fails with a property violation is reported in a few lines (property,
  message, the shrunk script, the reproducer's path, the replay command)
  instead of Hypothesis's exception group; its reproducer (and a pcap of a
  replay) goes into ``--harness-artifacts``, and ``report.json`` beside them.
  Shrinking stops ``--harness-shrink-budget`` seconds after the first
  violation, and a test draws no more scripts after ``--harness-time-budget``.

Each xdist worker starts its own server once and reuses it across tests and
Hypothesis examples; the checker checks the cleanup baseline after every
example and restarts the server after a crash. Run state lives in
``config.stash``, not in globals.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import shlex
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest._code.code import ReprExceptionInfo, ReprFileLocation, ReprTracebackNative
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyFailure, InvalidArgument

from harness.drive.netns import CLONE_NEWNET, NetnsUnavailable, NetworkSetup, choose_network, host_setup
from harness.drive.process import reference_command
from harness.face import FaceChecker, Target, check_attach, scenario_line, script_lines, server_template
from harness.model.errors import HarnessError, PropertyViolation, UsageError, violation_type
from harness.model.limits import Limits
from harness.model.properties import ACCEPT_ROBUST, GRACEFUL_FIN, exercised, primary
from harness.model.scenario import Scenario
from harness.model.script import Script
from harness.options import (
    BY_NAME,
    Option,
    Table,
    add_pytest_options,
    limits_from,
    read_table,
    resolve,
    unselected,
)
from harness.run.checker import Checker, Outcome
from harness.run.lab import replay_with_capture
from harness.run.report import Reproducer, RunReport, ViolationRecord
from harness.run.runner import PROCESS_PROPERTIES, strategy_for
from harness.run.scenarios import run_scenario
from harness.run.verdict import violation_of

PROFILE_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
PROFILES = {"ci": 60, "dev": 15, "fuzz": 5000}
RECORD = "epoll-harness"  # the user_properties key of a test's findings
KEPT_OUTCOMES = 64  # recent failing outcomes kept to find the script of a raised violation
CONFIRM = 3  # replays that confirm a violation Hypothesis could not replay (as check's default)


def _register_profiles() -> None:
    for name, examples in PROFILES.items():
        settings.register_profile(name, max_examples=examples, **PROFILE_SETTINGS)


_register_profiles()


# -- run state ----------------------------------------------------------------------------------------


class BudgetSpent(BaseException):
    """Stops a Hypothesis test between examples (it lets BaseExceptions through): a budget is spent."""


@dataclass(frozen=True)
class Finding:
    """One violated property, with what replays it."""

    property_name: str
    message: str
    command: str | None  # None: an attached server
    limits: Limits
    script: Script | None = None
    scenario: Scenario | None = None
    also: tuple[str, ...] = ()

    @property
    def size(self) -> tuple[int, int]:
        return (len(self.script), self.script.bytes_sent) if self.script is not None else (0, 0)


class Findings:
    """What the current test's examples showed; the :class:`~harness.face.Watch` of the checker."""

    def __init__(self, time_budget: float | None, shrink_budget: float) -> None:
        self.time_budget = time_budget
        self.shrink_budget = shrink_budget
        self.command: str | None = None  # the server's, set by the fixture that starts it
        self.limits = Limits()
        self.begin("")

    def begin(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.active = False  # did this test use the harness?
        self.started = time.monotonic()
        self.first_found: float | None = None
        self.spent: str | None = None
        self.smallest: dict[str, Finding] = {}
        self.recent: OrderedDict[tuple[str, str], Finding] = OrderedDict()
        self.examples = 0
        self.exercised: Counter[str] = Counter()
        self.evidence: Counter[str] = Counter()

    # -- the Watch protocol --

    def before(self, script: Script) -> None:
        self.active = True
        now = time.monotonic()
        if self.first_found is not None and now > self.first_found + self.shrink_budget:
            self.spent = f"shrinking stopped after the shrink budget ({self.shrink_budget:g} s)"
        elif self.time_budget is not None and now > self.started + self.time_budget:
            self.spent = f"the search stopped after the time budget ({self.time_budget:g} s)"
        if self.spent is not None:
            raise BudgetSpent(self.spent)

    def after(self, outcome: Outcome) -> None:
        self.examples += 1
        self.exercised.update(exercised(outcome.script))
        self.evidence.update(outcome.evidence)
        exc = violation_of(outcome)
        if exc is None:
            return
        worst = primary(outcome.violations)
        also = tuple(sorted({v.property_name for v in outcome.violations} - {worst.property_name}))
        finding = Finding(
            exc.property_name, exc.message, self.command, self.limits, outcome.script, also=also
        )
        self.note(finding)

    def note(self, finding: Finding) -> None:
        self.active = True
        if self.first_found is None:
            self.first_found = time.monotonic()
        self.recent[(finding.property_name, finding.message)] = finding
        while len(self.recent) > KEPT_OUTCOMES:
            self.recent.popitem(last=False)
        kept = self.smallest.get(finding.property_name)
        if kept is None or finding.size < kept.size:
            self.smallest[finding.property_name] = finding

    def pick(self, raised: list[PropertyViolation]) -> list[Finding]:
        """The findings behind the raised violations (or all, when a budget stopped the test)."""
        if not raised:
            return list(self.smallest.values()) if self.spent else []
        picked: dict[str, Finding] = {}
        for exc in raised:
            if exc.property_name in picked:
                continue
            finding = self.recent.get((exc.property_name, exc.message)) or self.smallest.get(
                exc.property_name
            )
            if finding is None:
                finding = Finding(exc.property_name, exc.message, self.command, self.limits)
            picked[exc.property_name] = dataclasses.replace(finding, message=exc.message)
        return list(picked.values())


@dataclass
class _Run:
    """The plugin's state in one pytest process (the controller or an xdist worker)."""

    target: Target
    limits: Limits
    unselected: frozenset[str]
    table: Table
    artifacts: Path
    report_path: Path | None
    capture: str
    scripts: str
    seed: int | None
    scenarios: bool
    invocation_dir: Path
    findings: Findings
    network: NetworkSetup | None = None
    checker: FaceChecker | None = None  # the worker's, once started
    chosen_command: bool = False  # --server-cmd or [tool.epoll-harness] named the server
    records: list[dict[str, Any]] = field(default_factory=list)

    def shown(self, path: Path | str) -> str:
        """A path as the user would type it: relative to where pytest was started, when inside it."""
        path = Path(path)
        with contextlib.suppress(ValueError):
            return str(path.relative_to(self.invocation_dir))
        return str(path)


run_key = pytest.StashKey[_Run]()


def _run(config: pytest.Config) -> _Run:
    return config.stash[run_key]


# -- options and configuration ---------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("epoll-harness", "epoll-harness: the server under test and its deadlines")
    add_pytest_options(group.addoption)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    try:
        run = _configure(config)
    except UsageError as exc:
        raise pytest.UsageError(f"epoll-harness: {exc}") from exc
    config.stash[run_key] = run
    config.pluginmanager.register(_Reports(run), "epoll-harness-reports")
    _choose_profile(config)


def _configure(config: pytest.Config) -> _Run:
    table = read_table(config.rootpath)

    def value(option: Option) -> Any:
        return resolve(option, config.getoption(option.pytest_dest), table)

    startup = value(BY_NAME["startup-timeout"])
    attach = value(BY_NAME["attach"])
    command = config.getoption(BY_NAME["server"].pytest_dest)
    chosen = None
    if attach is not None:
        if command is not None:
            raise UsageError("give either --server-cmd or --harness-attach, not both")
        target = Target(None, attach, value(BY_NAME["pid"]), startup)
        check_attach(target, bool(value(BY_NAME["allow-remote"])))
    else:
        if value(BY_NAME["pid"]) is not None:
            raise UsageError("--harness-pid goes with --harness-attach")
        chosen = resolve(BY_NAME["server"], command, table)
        command = chosen or reference_command("lt")
        target = Target(server_template(command, table.cwd, table.env), startup_timeout=startup)
    leave_out = unselected(value(BY_NAME["only"]), value(BY_NAME["skip"]))
    invocation_dir = Path(config.invocation_params.dir)
    artifacts = invocation_dir / value(BY_NAME["artifacts"])
    report = value(BY_NAME["report"])
    return _Run(
        target=target,
        limits=limits_from(value),
        unselected=leave_out,
        table=table,
        artifacts=artifacts,
        report_path=invocation_dir / report if report is not None else None,
        capture=value(BY_NAME["capture"]),
        scripts=value(BY_NAME["scripts"]),
        seed=value(BY_NAME["seed"]),
        scenarios=not value(BY_NAME["no-scenarios"]) and ACCEPT_ROBUST not in leave_out and attach is None,
        invocation_dir=invocation_dir,
        findings=Findings(value(BY_NAME["time-budget"]), value(BY_NAME["shrink-budget"])),
        chosen_command=attach is None and chosen is not None,
    )


def _choose_profile(config: pytest.Config) -> None:
    """Load ``ci`` unless a profile was chosen; ``--harness-max-examples``/``--harness-seed`` on top.

    This runs before Hypothesis's own ``pytest_configure``, which loads
    ``--hypothesis-profile`` and applies ``--hypothesis-seed`` after it.
    """
    chosen = config.getoption("hypothesis_profile", None)
    if chosen is None and settings.get_current_profile_name() == "default":
        settings.load_profile("ci")
    seed = config.getoption(BY_NAME["seed"].pytest_dest)
    if seed is not None and config.getoption("hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(seed)
    examples = config.getoption(BY_NAME["max-examples"].pytest_dest)
    if examples is not None:
        base = chosen or settings.get_current_profile_name()
        try:
            parent = settings.get_profile(base)
        except InvalidArgument as exc:
            raise pytest.UsageError(f"epoll-harness: {exc}") from exc
        name = f"{base}-max-examples-{examples}"
        settings.register_profile(name, parent=parent, max_examples=examples)
        settings.load_profile(name)
        if chosen is not None:
            config.option.hypothesis_profile = name


def pytest_report_header(config: pytest.Config) -> list[str]:
    run = _run(config)
    if run.target.attach is not None:
        server = f"attached to {run.target.address}" + (f" (pid {run.target.pid})" if run.target.pid else "")
        return [f"epoll-harness: server: {server}; network: the host's"]
    lines = [f"epoll-harness: server command: {run.target.template}"]
    if run.table.path is not None:
        lines.append(f"epoll-harness: settings from {run.table.path}")
    wanted = config.getoption(BY_NAME["netns"].pytest_dest)
    if wanted is False:
        lines.append("epoll-harness: network: the host's loopback (--no-harness-netns)")
    else:
        refused = _netns_refused()
        lines.append(
            "epoll-harness: network: a private namespace with small TCP buffers, entered by each worker "
            "that starts a server (the lab)"
            if refused is None
            else f"epoll-harness: network: the host's loopback (no private namespace: {refused})"
        )
    return lines


def _netns_refused() -> str | None:
    """Why this process may not create a network namespace (tried in a child), or None if it may."""
    libc = ctypes.CDLL(None, use_errno=True)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0 if libc.unshare(CLONE_NEWNET) == 0 else (ctypes.get_errno() or 1)
        os._exit(min(code, 255))
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return None if code == 0 else f"unshare(CLONE_NEWNET) failed: {os.strerror(code)}"


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def harness_limits(pytestconfig: pytest.Config) -> Limits:
    """The deadlines and bounds in force (command line, then [tool.epoll-harness], then defaults)."""
    return _run(pytestconfig).limits


@pytest.fixture(scope="session")
def server_command(pytestconfig: pytest.Config) -> str:
    """The server command template under test (``--server-cmd``); override it in a conftest.py."""
    template = _run(pytestconfig).target.template
    if template is None:
        pytest.skip("attached to a running server (--harness-attach): there is no command to start")
    return template


@pytest.fixture(scope="session")
def harness_regression_command(pytestconfig: pytest.Config) -> str | None:
    """The server regression tests replay against: ``--server-cmd`` or the table's, else None
    (each reproducer's own recorded command)."""
    run = _run(pytestconfig)
    return run.target.template if run.chosen_command else None


@pytest.fixture(scope="session")
def harness_network(pytestconfig: pytest.Config) -> NetworkSetup:
    """Where the worker's servers and clients run: the lab when permitted (entered here), or the host."""
    run = _run(pytestconfig)
    if run.network is None:
        wanted = pytestconfig.getoption(BY_NAME["netns"].pytest_dest)
        if run.target.attach is not None or wanted is False:
            run.network = host_setup()
        else:
            try:
                run.network = choose_network(wanted)
            except NetnsUnavailable as exc:
                pytest.fail(f"epoll-harness: {exc}".replace("--netns", "--harness-netns"), pytrace=False)
    return run.network


@pytest.fixture(scope="session")
def harness_scripts(
    pytestconfig: pytest.Config, harness_network: NetworkSetup, harness_limits: Limits
) -> st.SearchStrategy[Script]:
    """The scripts the property suite draws, sized for the network in force (``--harness-scripts``)."""
    return strategy_for(harness_network, _run(pytestconfig).scripts, harness_limits)


@pytest.fixture(scope="session")
def harness_checker(
    request: pytest.FixtureRequest, harness_network: NetworkSetup, harness_limits: Limits
) -> Iterator[Checker]:
    """One server per xdist worker, started once and reused; stopped at the end of the session."""
    run = _run(request.config)
    target = _target(request, run)
    capture_dir = None
    if run.capture == "always" and target.template is not None:
        capture_dir = run.artifacts / "captures" / os.environ.get("PYTEST_XDIST_WORKER", "main")
    checker = FaceChecker(
        target, harness_limits, unselected=run.unselected, capture_dir=capture_dir, watch=run.findings
    )
    run.findings.command, run.findings.limits = target.template, harness_limits
    try:
        checker.start()
    except HarnessError as exc:
        checker.stop()
        pytest.fail(f"epoll-harness could not start the server under test: {exc}", pytrace=False)
    run.checker = checker
    try:
        yield checker
    finally:
        run.checker = None
        checker.stop()


def _target(request: pytest.FixtureRequest, run: _Run) -> Target:
    if run.target.attach is not None:
        return run.target
    command = request.getfixturevalue("server_command")  # a conftest.py may override it
    return run.target if command == run.target.template else dataclasses.replace(run.target, template=command)


ScenarioRunner = Callable[[Scenario], None]


@pytest.fixture
def harness_scenario(request: pytest.FixtureRequest, harness_network: NetworkSetup) -> ScenarioRunner:
    """Run a fixed scenario (fd exhaustion) against a second instance of the server; fail on a violation."""
    run = _run(request.config)
    if not run.scenarios:
        why = "attached server" if run.target.attach else "--harness-no-scenarios or not selected"
        pytest.skip(f"the fixed scenarios are not run ({why})")
    command = _target(request, run).template
    assert command is not None

    def scenario_runner(scenario: Scenario) -> None:
        run.findings.active = True
        violation = run_scenario(command, scenario, run.limits)
        if violation is None:
            return
        message = violation.describe()
        run.findings.note(Finding(violation.property_name, message, command, run.limits, scenario=scenario))
        raise violation_type(violation.property_name)(message)

    return scenario_runner


# -- reports -----------------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    run = item.config.stash.get(run_key, None)
    if run is not None:
        run.findings.begin(item.nodeid)
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    run = item.config.stash.get(run_key, None)
    if call.when != "call" or run is None:
        return report
    findings = run.findings
    if not findings.active or findings.nodeid != item.nodeid:
        return report
    record: dict[str, Any] = {
        "examples": findings.examples,
        "seconds": round(time.monotonic() - findings.started, 3),
        "exercised": dict(findings.exercised),
        "evidence": dict(findings.evidence),
        "network": run.network.describe() if run.network is not None else "",
        "server": findings.command,  # the command the worker ran (a conftest.py may override it)
        "violations": [],
    }
    if call.excinfo is not None:
        raised = _violations_in(call.excinfo.value)
        chosen = findings.pick(raised)
        if chosen:
            flaky = _contains(call.excinfo.value, FlakyFailure)
            # Not replayed by Hypothesis (a budget stopped it), or replayed and passed: replay here.
            confirmed = _confirm(run, chosen) if flaky or findings.spent else {}
            lines, records = _describe(run, chosen, flaky=flaky, spent=findings.spent, confirmed=confirmed)
            record["violations"] = [dataclasses.asdict(r) for r in records]
            if any(confirmed.get(f.property_name, 1) for f in chosen):
                report.longrepr = _short_repr(item, chosen, lines)
            else:  # seen once, never again: reported apart, as `check` does; not a failure
                report.outcome = "passed"
                report.longrepr = None
                report.sections.append(("epoll-harness: unconfirmed violations", "\n".join(lines)))
        elif findings.spent and isinstance(call.excinfo.value, BudgetSpent):
            report.outcome = "passed"  # the budget ran out and nothing was found: that is a pass
            report.longrepr = None
    report.user_properties.append((RECORD, record))
    return report


def _confirm(run: _Run, chosen: list[Finding]) -> dict[str, int]:
    """How many of CONFIRM replays of each finding's script violate its property again."""
    checker = run.checker
    counts: dict[str, int] = {}
    if checker is None:
        return counts
    watch, checker.watch = checker.watch, None  # no budget, no findings: these are not the search
    try:
        for finding in chosen:
            if finding.script is None:
                continue
            name, script = finding.property_name, finding.script
            counts[name] = sum(
                any(v.property_name == name for v in checker.check(script).violations) for _ in range(CONFIRM)
            )
    except HarnessError:
        pass  # the server no longer starts: the replays so far stand
    finally:
        checker.watch = watch
    return counts


def _violations_in(exc: BaseException) -> list[PropertyViolation]:
    found: list[PropertyViolation] = []
    if isinstance(exc, PropertyViolation):
        found.append(exc)
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found += _violations_in(inner)
    return found


def _contains(exc: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(exc, kind):
        return True
    return isinstance(exc, BaseExceptionGroup) and any(_contains(e, kind) for e in exc.exceptions)


def _describe(
    run: _Run, chosen: list[Finding], *, flaky: bool, spent: str | None, confirmed: dict[str, int]
) -> tuple[list[str], list[ViolationRecord]]:
    """Save a reproducer (and a pcap of its replay) per finding; the lines that tell of them."""
    lines: list[str] = []
    records: list[ViolationRecord] = []
    for finding in chosen:
        repro = Reproducer(
            property_name=finding.property_name,
            message=finding.message,
            server_command=finding.command,
            seed=run.seed,
            limits=finding.limits,
            script=finding.script,
            scenario=finding.scenario,
            also=finding.also,
        )
        path = repro.save(run.artifacts)
        shown = run.shown(path)
        capture = _capture(run, finding, path)
        replays = CONFIRM if finding.property_name in confirmed else 0
        again = confirmed.get(finding.property_name)
        lines.append(f"{finding.property_name}: {finding.message}")
        if again is not None:
            word = "confirmed" if again else "unconfirmed"
            lines.append(f"  {word}: {again}/{replays} replays failed it again")
        if finding.script is not None:
            steps, sent = finding.size
            lines.append(f"  shrunk script ({steps} step{'s' * (steps != 1)}, {sent} bytes sent):")
            lines += [f"    {line}" for line in script_lines(finding.script)]
        elif finding.scenario is not None:
            lines.append(f"  {scenario_line(finding.scenario)}")
        lines.append(f"  reproducer: {shown}")
        lines.append(
            f"  replay with: epoll-harness replay {shlex.quote(shown)}{run.target.replay_arguments()}"
        )
        if capture is not None:
            lines.append(f"  packet capture of a replay: {run.shown(capture)}")
        lines.append("")
        records.append(
            ViolationRecord(
                finding.property_name,
                finding.message,
                str(path),
                steps=len(finding.script) if finding.script is not None else None,
                bytes_sent=finding.script.bytes_sent if finding.script is not None else None,
                flaky=flaky,
                capture=str(capture) if capture is not None else None,
                also=finding.also,
                confirmed=again,
                replays=replays,
            )
        )
    if flaky:
        lines.append(
            "Hypothesis saw this fail, then pass when it replayed it: the failure depends on timing. "
            "`epoll-harness replay --repeat 20 FILE` says how often it fails."
        )
    if spent:
        lines.append(f"({spent}: the smallest failing script found by then is reported)")
    return lines, records


def _capture(run: _Run, finding: Finding, path: Path) -> Path | None:
    if run.capture == "never" or finding.script is None or finding.command is None:
        return None
    pcap = path.with_suffix(".pcap")
    try:
        replay_with_capture(finding.command, finding.script, finding.limits, pcap)
    except (OSError, ImportError, HarnessError):
        return None
    return pcap


def _short_repr(item: pytest.Item, chosen: list[Finding], lines: list[str]) -> ReprExceptionInfo:
    names = ", ".join(f.property_name for f in chosen)
    head = f"epoll-harness: {'a property was' if len(chosen) == 1 else f'{len(chosen)} properties were'} "
    text = [head + f"violated ({names})\n", "\n"] + [line + "\n" for line in lines]
    path, lineno, _ = item.reportinfo()
    crash = ReprFileLocation(str(path), (lineno or 0) + 1, f"[{chosen[0].property_name}] {chosen[0].message}")
    return ReprExceptionInfo(reprtraceback=ReprTracebackNative(text), reprcrash=crash)


class _Reports:
    """Collects the tests' findings where reports arrive (the controller under xdist); writes report.json."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for name, value in report.user_properties:
            if name == RECORD and isinstance(value, dict):
                self.run.records.append(value)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        run = self.run
        if hasattr(session.config, "workerinput"):
            return  # a worker: its reports go to the controller
        if not any(record["violations"] for record in run.records) and run.report_path is None:
            return
        path = run.report_path or run.artifacts / "report.json"
        _run_report(run).save(path)
        run.report_path = path

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        run = self.run
        violations = [v for record in run.records for v in record["violations"]]
        if not violations and run.report_path is None:
            return
        terminalreporter.section("epoll-harness")
        for v in violations:
            replays, again = v.get("replays") or 0, v.get("confirmed")
            status = f" (unconfirmed: {again}/{replays} replays failed)" if replays and not again else ""
            terminalreporter.line(f"{v['property_name']}{status}: reproducer {run.shown(v['reproducer'])}")
        if run.report_path is not None:
            terminalreporter.line(f"report: {run.shown(run.report_path)}")


def _run_report(run: _Run) -> RunReport:
    ran = next((record["server"] for record in run.records if record.get("server")), None)
    server = ran or run.target.template or f"attached to {run.target.address}"
    report = RunReport(server, run.seed)
    for record in run.records:
        report.examples += record["examples"]
        report.seconds += record["seconds"]
        report.network = report.network or record["network"]
        for name, count in record["exercised"].items():
            report.properties[name].examples += count
        for what, count in record["evidence"].items():
            report.evidence[what] = report.evidence.get(what, 0) + count
        for v in record["violations"]:
            values = {**v, "on_the_wire": tuple(v.get("on_the_wire", ())), "also": tuple(v.get("also", ()))}
            report.properties[v["property_name"]].violations.append(ViolationRecord(**values))
    for name in run.unselected:
        report.properties[name].skipped = "not selected (--harness-only/--harness-skip)"
        report.properties[name].examples = 0
    if run.capture != "always":
        report.properties[GRACEFUL_FIN].skipped = "judged on captured packets: use --harness-capture always"
    if run.target.attach is not None and run.target.pid is None:
        for name in PROCESS_PROPERTIES:
            report.properties[name].skipped = "needs --harness-pid to observe the server process"
    return report
