"""A fuzzing campaign: N workers for a while, one corpus, a short list of distinct confirmed findings.

:func:`run_campaign` starts the workers (:mod:`harness.run.campaign_worker`,
each a process in a session of its own, with its own network lab and server),
reads what they tell, and keeps:

* the totals and each worker's progress (examples, examples/s, restarts);
* the fault events seen (EAGAIN reached, RST forged, EMFILE hit, ...), how
  often, and when each last grew: the coverage;
* the findings, deduplicated (:mod:`harness.model.finding`): one per property,
  the first reproducer copied to ``OUT/findings/``, replaced by any smaller
  confirmed script from any worker; a script already kept for another property
  joins that finding (``also``).

It ends when the time is up, at the first finding with ``stop_on_first``, or
when :meth:`Campaign.stop` is called (the CLI calls it on Ctrl-C): the workers
get SIGTERM, save what they found, and exit; one that does not within
:data:`GRACE` seconds is killed with its process group. Nothing is left
running. Then each finding's reproducer is replayed once under a capture (its
pcap beside it), the regression tests are written (``OUT/test_findings.py``:
``pytest OUT/`` replays every finding against ``--server-cmd``), and
``summary.json`` and ``summary.png`` (findings and coverage over time) sum it up.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.drive.process import terminate_with_parent
from harness.model.errors import HarnessError
from harness.model.finding import message_template, script_shape
from harness.model.limits import DEFAULT_LIMITS, Limits
from harness.model.script import Script
from harness.run.campaign_worker import WorkerSpec
from harness.run.corpus import open_corpus
from harness.run.report import Reproducer

GRACE = 60.0  # seconds a worker has, after SIGTERM, to save what it found (a shrink may be running)
SNAPSHOT_EVERY = 5.0  # seconds between points of the coverage-over-time series
FINDINGS = "findings"
REGRESSION_TESTS = "test_findings.py"


@dataclass(frozen=True)
class CampaignConfig:
    server_command: str
    seconds: float
    workers: int
    database: str  # a directory or a redis:// URL
    out: Path
    stop_on_first: bool = False
    steer: bool = True
    shrink_budget: float = 60.0
    confirm: int = 3
    seed: int | None = None
    netns: bool | None = None
    limits: Limits = DEFAULT_LIMITS


@dataclass
class WorkerState:
    index: int
    examples: int = 0
    seconds: float = 0.0
    restarts: int = 0
    findings: int = 0
    evidence: dict[str, int] = field(default_factory=dict)
    network: str = ""
    started: float | None = None  # seconds into the campaign when it said it started
    replayed: int = 0  # saved examples of the corpus it replayed
    done: bool = False
    error: str | None = None
    exit_status: int | None = None

    @property
    def rate(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Finding:
    property_name: str
    message: str
    reproducer: str  # in OUT/findings/
    shape: str
    steps: int | None
    bytes_sent: int | None
    confirmed: int | None
    replays: int
    level: str
    seconds_to_find: float  # since the campaign started
    worker: int
    times_found: int = 1
    pcap: str | None = None
    also: list[str] = field(default_factory=list)  # other properties its reproducer violates
    variants: list[str] = field(default_factory=list)  # the templates of what workers saw


@dataclass
class Campaign:
    """The state of a running campaign; what a display reads."""

    config: CampaignConfig
    started: float = field(default_factory=time.monotonic)
    workers: list[WorkerState] = field(default_factory=list)
    findings: dict[str, Finding] = field(default_factory=dict)  # by property
    scripts: dict[str, Script | None] = field(default_factory=dict)  # each finding's reproducer's
    coverage_changed: dict[str, float] = field(default_factory=dict)  # event -> when its count last grew
    series: list[dict[str, Any]] = field(default_factory=list)  # coverage and findings over time
    stopping: str | None = None  # why the workers were told to stop
    stopped_at: float | None = None
    _processes: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def examples(self) -> int:
        return sum(w.examples for w in self.workers)

    @property
    def rate(self) -> float:
        return sum(w.rate for w in self.workers)

    @property
    def coverage(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for worker in self.workers:
            total.update(worker.evidence)
        return total

    def stop(self, why: str) -> None:
        """Ask every worker to stop (SIGTERM): each saves what it found, then exits."""
        if self.stopping is None:
            self.stopping, self.stopped_at = why, time.monotonic()
        for process in self._processes:
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)

    def kill(self) -> None:
        """Stop now: SIGKILL to every worker (a second Ctrl-C); what they had not saved is lost."""
        _kill_all(self)


Display = Callable[[Campaign], None]


def run_campaign(
    config: CampaignConfig,
    display: Display | None = None,
    on_start: Callable[[Campaign], None] | None = None,
) -> Campaign:
    """Run the campaign to its end (time, first finding, or :meth:`Campaign.stop`); never leaves a process.

    ``on_start`` gets the campaign before any worker starts (to stop it from a signal handler);
    ``display`` gets it after everything the workers tell, and at least twice a second.
    """
    open_corpus(config.database)  # a bad --db is an error now, not N workers' errors later
    out = config.out
    (out / FINDINGS).mkdir(parents=True, exist_ok=True)
    campaign = Campaign(config)
    if on_start is not None:
        on_start(campaign)
    streams: dict[int, IO[str]] = {}
    selector = selectors.DefaultSelector()
    try:
        for index in range(config.workers):
            process = _start_worker(config, index)
            campaign._processes.append(process)
            campaign.workers.append(WorkerState(index))
            assert process.stdout is not None
            streams[index] = process.stdout
            selector.register(process.stdout, selectors.EVENT_READ, index)
        deadline = campaign.started + config.seconds
        last_snapshot = 0.0
        while any(p.poll() is None for p in campaign._processes) or selector.get_map():
            now = time.monotonic()
            if now > deadline + config.shrink_budget + GRACE and campaign.stopping is None:
                campaign.stop("the workers overran their time")
            if campaign.stopped_at is not None and now > campaign.stopped_at + GRACE:
                _kill_all(campaign)
            for key, _ in selector.select(timeout=0.5):
                line = key.fileobj.readline()  # type: ignore[union-attr]
                if not line:
                    selector.unregister(key.fileobj)
                    continue
                _heard(campaign, key.data, line)
            if time.monotonic() - last_snapshot >= SNAPSHOT_EVERY:
                last_snapshot = time.monotonic()
                _snapshot(campaign)
            if display is not None:
                display(campaign)
    finally:
        _kill_all(campaign)
        selector.close()
        for index, process in enumerate(campaign._processes):
            campaign.workers[index].exit_status = process.wait()
    _snapshot(campaign)
    return campaign


def _start_worker(config: CampaignConfig, index: int) -> subprocess.Popen[str]:
    folder = config.out / "workers" / str(index)
    folder.mkdir(parents=True, exist_ok=True)
    spec = WorkerSpec(
        index=index,
        server_command=config.server_command,
        seconds=config.seconds,
        database=config.database,
        artifacts=str(folder / "artifacts"),
        shrink_budget=config.shrink_budget,
        confirm=config.confirm,
        steer=config.steer,
        scenarios=index == 0,
        seed=config.seed,
        netns=config.netns,
        limits=asdict(config.limits),
    )
    log = (folder / "worker.log").open("w")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "harness.run.campaign_worker", spec.to_json()],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its own group: Ctrl-C reaches the coordinator, which forwards it
            preexec_fn=terminate_with_parent,
            # The user's directory, as for check: a server command says './my_server' (the worker
            # folder was the cwd once, and such a command could not start).
        )
    finally:
        log.close()


def _heard(campaign: Campaign, index: int, line: str) -> None:
    try:
        told = json.loads(line)
    except ValueError:
        return  # not ours (a library printing to stdout): the worker's log has its stderr
    worker = campaign.workers[index]
    event = told.get("event")
    if event == "started":
        worker.network = told.get("network", "")
        worker.started = round(campaign.elapsed, 2)
    elif event in ("progress", "done"):
        worker.examples = int(told.get("examples", worker.examples))
        worker.seconds = float(told.get("seconds", worker.seconds))
        worker.restarts = int(told.get("restarts", worker.restarts))
        worker.replayed = int(told.get("replayed", worker.replayed))
        _grow(campaign, worker, told.get("evidence", {}))
        worker.done = event == "done"
    elif event == "finding":
        worker.findings += 1
        _found(campaign, index, told)
    elif event == "error":
        worker.error = str(told.get("message"))
        worker.done = True


def _grow(campaign: Campaign, worker: WorkerState, evidence: dict[str, int]) -> None:
    before = campaign.coverage
    worker.evidence = {str(k): int(v) for k, v in evidence.items()}
    after = campaign.coverage
    for event, count in after.items():
        if count > before.get(event, 0):
            campaign.coverage_changed[event] = campaign.elapsed


def _found(campaign: Campaign, index: int, told: dict[str, Any]) -> None:
    """A worker's finding: a new one is kept; a known one counts, and a smaller script replaces it."""
    source = Path(str(told["reproducer"]))
    try:
        repro = Reproducer.load(source)
    except HarnessError:  # a half-written or unreadable file: no reason to stop the campaign
        return
    key = str(told["property"])
    message = str(told["message"])
    for other, script in campaign.scripts.items():
        if other != key and repro.script is not None and script == repro.script:
            joined = campaign.findings[other]
            if key not in joined.also:
                joined.also.append(key)
            return  # one script, one finding: it violates several properties
    shape = script_shape(repro.script) if repro.script is not None else f"scenario {repro.scenario}"
    kept = campaign.findings.get(key)
    size = (told.get("steps") or 0, told.get("bytes_sent") or 0)
    variants = list(kept.variants) if kept is not None else []
    if message_template(message) not in variants:
        variants.append(message_template(message))
    if kept is not None:
        kept.times_found += 1
        kept.variants = variants
        if size >= ((kept.steps or 0), (kept.bytes_sent or 0)) or not _confirmed(told):
            return
    target = campaign.config.out / FINDINGS / source.name
    shutil.copyfile(source, target)
    if kept is not None and Path(kept.reproducer) != target:
        Path(kept.reproducer).unlink(missing_ok=True)
    finding = Finding(
        property_name=key,
        message=message,
        reproducer=str(target),
        shape=shape,
        steps=told.get("steps"),
        bytes_sent=told.get("bytes_sent"),
        confirmed=told.get("confirmed"),
        replays=int(told.get("replays") or 0),
        level=str(told.get("level", "fail")),
        seconds_to_find=kept.seconds_to_find if kept is not None else _when(campaign, index, told),
        worker=kept.worker if kept is not None else index,
        times_found=kept.times_found if kept is not None else 1,
        also=sorted(set(told.get("also", [])) | set(kept.also if kept is not None else [])),
        variants=variants,
        pcap=_copy_pcap(told.get("pcap"), target),
    )
    campaign.findings[key] = finding
    campaign.scripts[key] = repro.script
    if kept is None and campaign.config.stop_on_first and counts_as_failure(finding):
        campaign.stop("--stop-on-first: a finding")


def _when(campaign: Campaign, index: int, told: dict[str, Any]) -> float:
    """Seconds into the campaign when the worker's search first saw the finding."""
    after = told.get("found_after")
    started = campaign.workers[index].started
    if isinstance(after, int | float) and started is not None:
        return round(started + after, 2)
    return round(campaign.elapsed, 2)


def _copy_pcap(pcap: object, reproducer: Path) -> str | None:
    if not isinstance(pcap, str) or not Path(pcap).exists():
        return None
    target = reproducer.with_suffix(".pcap")
    shutil.copyfile(pcap, target)
    return str(target)


def _confirmed(told: dict[str, Any]) -> bool:
    confirmed = told.get("confirmed")
    return confirmed is None or int(confirmed) > 0


def counts_as_failure(finding: Finding) -> bool:
    """A confirmed (or not replayed) failure; not a non-strict finding, not an unconfirmed one."""
    return finding.level == "fail" and (finding.confirmed is None or finding.confirmed > 0)


def _snapshot(campaign: Campaign) -> None:
    campaign.series.append(
        {
            "seconds": round(campaign.elapsed, 2),
            "examples": campaign.examples,
            "findings": sum(1 for f in campaign.findings.values() if counts_as_failure(f)),
            "coverage": dict(campaign.coverage),
        }
    )


def _signal_group(process: subprocess.Popen[str], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # start_new_session: the group is the worker's pid
    except ProcessLookupError:
        pass


def _kill_all(campaign: Campaign) -> None:
    """SIGKILL to every worker's group still there (its servers die with it: PR_SET_PDEATHSIG)."""
    for process in campaign._processes:
        if process.poll() is None:
            _signal_group(process, signal.SIGKILL)
