"""One worker of a fuzzing campaign: its own network lab, its own server, the shared corpus.

    python -m harness.run.campaign_worker SPEC_JSON

Started by :mod:`harness.run.campaign` (never by hand). It enters a private
network namespace of its own (no port or buffer clash with the other
workers), then runs one long :func:`~harness.run.runner.run_check` against
its own server instance: one search that draws different scripts in each
worker (no seed, or the campaign's seed plus the worker's index), the shared
example database replayed first, its findings cut down, confirmed and saved
in batches as it goes. What happens is told to the coordinator as JSON lines on
stdout:

* ``{"event": "progress", ...}`` about once a second: examples, restarts,
  the fault events seen (how often each);
* ``{"event": "finding", ...}`` per finding, once its reproducer is saved;
* ``{"event": "done", ...}`` at the end (the time was up, or SIGTERM/SIGINT);
* ``{"event": "error", "message": ...}`` when it cannot run at all.

SIGTERM or SIGINT ends the search at the next example; what was found is
saved before the worker exits (0; 2 on an error).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hypothesis.configuration import set_hypothesis_home_dir

from harness.drive.netns import choose_network
from harness.model.errors import HarnessError
from harness.model.limits import Limits
from harness.run.corpus import open_corpus
from harness.run.lab import replay_with_capture
from harness.run.report import Reproducer, RunReport, ViolationRecord
from harness.run.runner import (
    SEARCH_ROUND,
    UNBOUNDED,
    CheckConfig,
    Interrupted,
    StopSignal,
    explicit_examples,
    run_check,
    run_scenarios,
    strategy_for,
)

PROGRESS_EVERY = 1.0  # seconds between progress lines


@dataclass(frozen=True)
class WorkerSpec:
    """What the coordinator tells a worker (one JSON argument)."""

    index: int
    server_command: str
    seconds: float
    database: str
    artifacts: str
    shrink_budget: float
    confirm: int
    steer: bool
    scenarios: bool  # the fd-exhaustion scenario: one worker runs it, first
    seed: int | None = None
    netns: bool | None = None
    limits: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        return cls(**json.loads(text))


def _tell(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def _finding(record: ViolationRecord) -> dict[str, Any]:
    return {
        "property": record.property_name,
        "message": record.message,
        "reproducer": record.reproducer,
        "steps": record.steps,
        "bytes_sent": record.bytes_sent,
        "confirmed": record.confirmed,
        "replays": record.replays,
        "level": record.level,
        "also": list(record.also),
        # seconds since the worker's search began, when the search first saw it (not when settled)
        "found_after": record.seconds_to_find,
    }


def _capture(record: ViolationRecord, command: str, limits: Limits) -> str | None:
    """Replay a finding's reproducer once under a packet capture; the pcap, beside the reproducer."""
    if record.reproducer is None:
        return None
    repro = Reproducer.load(record.reproducer)
    if repro.script is None:
        return None  # a fixed scenario: thousands of connections, nothing a pcap would show
    pcap = Path(record.reproducer).with_suffix(".pcap")
    try:
        replay_with_capture(command, repro.script, limits, pcap)
    except HarnessError:
        return None  # the server no longer starts: the finding stands, without a pcap
    return str(pcap)


def run_worker(spec: WorkerSpec, stop: StopSignal) -> int:
    started = time.monotonic()
    # The worker runs in the user's directory (the server command's paths are relative to it);
    # what Hypothesis keeps for itself goes in the worker's folder, not there.
    set_hypothesis_home_dir(str(Path(spec.artifacts).parent / ".hypothesis"))
    # The corpus first: a Redis connection made now stays in the host's network (where the
    # redis-server is) after the worker enters a namespace of its own.
    corpus = open_corpus(spec.database)
    network = choose_network(spec.netns)
    limits = Limits().with_(**spec.limits)
    last_progress = [0.0]
    report = RunReport(spec.server_command, spec.seed)

    def progress(searching: RunReport) -> None:
        report.examples, report.evidence = searching.examples, searching.evidence
        now = time.monotonic()
        if now - last_progress[0] >= PROGRESS_EVERY:
            last_progress[0] = now
            _tell(
                "progress",
                examples=searching.examples,
                seconds=round(now - started, 2),
                evidence=dict(searching.evidence),
                replayed=corpus.replayed,
            )

    def heard(record: ViolationRecord) -> None:
        pcap = _capture(record, spec.server_command, limits) if network.private else None
        _tell("finding", seconds=round(time.monotonic() - started, 2), pcap=pcap, **_finding(record))

    config = CheckConfig(
        server_command=spec.server_command,
        max_examples=UNBOUNDED,
        time_budget=spec.seconds,
        shrink_budget=spec.shrink_budget,
        seed=None if spec.seed is None else spec.seed + spec.index,
        limits=limits,
        artifacts=Path(spec.artifacts),
        database=None,
        shared_database=corpus,
        scenarios=False,
        confirm=spec.confirm,
        settle_as_found=True,
        steer=spec.steer,
        search_round=SEARCH_ROUND,
        explicit=explicit_examples(network, "full", limits),
    )
    _tell("started", network=network.describe(), note=network.note)
    try:
        if spec.scenarios:
            for record in run_scenarios(config, RunReport(spec.server_command, config.seed)):
                heard(record)
        searched = run_check(config, strategy_for(network, "full", limits), progress, stop, on_finding=heard)
        report.examples, report.restarts = searched.examples, searched.restarts
    except Interrupted:
        pass
    _tell(
        "done",
        examples=report.examples,
        seconds=round(time.monotonic() - started, 2),
        restarts=report.restarts,
        evidence=dict(report.evidence),
        replayed=corpus.replayed,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = WorkerSpec.from_json(args[0])
    stop = StopSignal()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return run_worker(spec, stop)
    except HarnessError as exc:
        _tell("error", message=str(exc))
        return 2


if __name__ == "__main__":
    sys.exit(main())
