"""Examples per second of the harness against the reference server (issue 4 §4). A benchmark, never a test.

    python -m bench.examples_per_second                      # the run behind bench/EXAMPLES_RESULTS.md
    python -m bench.examples_per_second --quick              # a smoke run
    python -m bench.examples_per_second --profile short      # cProfile of one worker, short scripts

What is measured, per script mix and worker count, three runs each:

* mixes: ``short`` (:func:`strategies.short_scripts`: no deliberate delays,
  no floods) and ``full`` (:func:`strategies.scripts`, the default mix of
  ``epoll-harness check``);
* modes: ``hypothesis``, the real thing: ``@given(mix)`` with a fixed
  ``@seed``, generate phase only, every example through
  :meth:`Checker.check` and the evidence recording of
  :func:`harness.run.verdict.enforce` (without raising); and ``replay``, the
  same number of scripts drawn beforehand with the same seed and checked
  in a loop, which is the harness alone without Hypothesis;
* workers: 1 (one process, one Checker reused across examples) and 2 (two
  processes, each with its own server and Checker, started before the clock
  starts and released together); the figure is the aggregate: all examples
  divided by the wall time from the common start to the last worker's end.
  Each worker of a run has its own seed (``seed + worker``) and
  ``examples / workers`` examples, so both worker counts do the same amount
  of work.

Every run uses the same seeds, so the three runs of a row do the same work
and their spread is timing noise. Server start-up and, in replay mode,
drawing the scripts happen before the clock starts; in hypothesis mode each
worker first runs WARM_UP_EXAMPLES examples of another seed, off the clock
(the strategies are built and cached once per process, ~0.1 s, which a
pytest session pays once per worker, not once per 400 examples). The load average of the
machine is recorded with every row, because the host may be shared.

Every server is stopped by its Checker in a ``finally``; traffic is to
127.0.0.1 only; the full mix's floods are the strategies' own (bounded).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import multiprocessing as mp
import os
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from harness.drive.process import ServerProcess, reference_command
from harness.model.script import Script
from harness.run.checker import Checker, Outcome
from harness.run.verdict import record_evidence
from strategies import scripts, short_scripts

DEFAULT_SEED = 20240605
DEFAULT_EXAMPLES = {"short": 400, "full": 60}
RUNS = 3
#: Examples each Hypothesis worker runs, with another seed, before the clock starts.
WARM_UP_EXAMPLES = 50
WARM_UP_SEED = 1_000_000
MIXES: dict[str, Callable[[], st.SearchStrategy[Script]]] = {"short": short_scripts, "full": scripts}


@dataclass
class WorkerResult:
    examples: int
    violations: int
    started: float  # time.monotonic(): CLOCK_MONOTONIC is system-wide, comparable across processes
    ended: float
    restarts: int


@dataclass
class Run:
    mix: str
    mode: str
    workers: int
    examples: int
    violations: int
    seconds: float
    load_before: float
    load_after: float

    @property
    def per_second(self) -> float:
        return self.examples / self.seconds


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


def draw_scripts(mix: str, examples: int, seed_: int) -> list[Script]:
    """The scripts a ``@given`` run with this seed draws, in order (no server involved)."""
    drawn: list[Script] = []

    @seed(seed_)
    @_settings(examples)
    @given(MIXES[mix]())
    def collect(script: Script) -> None:
        drawn.append(script)

    collect()
    return drawn


def _worker(index: int, mix: str, mode: str, examples: int, seed_: int, start: Any, results: Any) -> None:
    # A port block per worker, as under xdist: two servers never race for one port.
    os.environ["PYTEST_XDIST_WORKER"] = f"gw{index}"
    drawn = draw_scripts(mix, examples, seed_) if mode == "replay" else []
    counts = [0, 0]

    def one(script: Script) -> None:
        outcome: Outcome = checker.check(script)
        record_evidence(outcome)
        counts[0] += 1
        counts[1] += not outcome.ok

    checker = Checker(ServerProcess(reference_command("lt")))
    try:
        checker.start()
        if mode == "hypothesis":
            # Steady state, as in a long pytest session: the first examples of a
            # process also build and cache the strategies (~0.1 s), once per worker.
            seed(seed_ + WARM_UP_SEED)(_settings(WARM_UP_EXAMPLES)(given(MIXES[mix]())(one)))()
            counts[:] = [0, 0]
        start.wait()
        started = time.monotonic()
        if mode == "replay":
            for script in drawn:
                one(script)
        else:
            seed(seed_)(_settings(examples)(given(MIXES[mix]())(one)))()
        ended = time.monotonic()
        results.put(asdict(WorkerResult(counts[0], counts[1], started, ended, checker.restarts)))
    finally:
        checker.stop()


def measure(mix: str, mode: str, workers: int, examples: int, seed_: int) -> Run:
    ctx = mp.get_context("spawn")
    start = ctx.Barrier(workers + 1)
    results = ctx.Queue()
    share = examples // workers
    procs = [
        ctx.Process(target=_worker, args=(w, mix, mode, share, seed_ + w, start, results))
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    try:
        start.wait(timeout=120)  # every server is up and every script drawn
        load_before = os.getloadavg()[0]
        got = [WorkerResult(**results.get(timeout=1800)) for _ in procs]
        load_after = os.getloadavg()[0]
    finally:
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():  # only our own worker, by its handle
                proc.terminate()
                proc.join()
    seconds = max(r.ended for r in got) - min(r.started for r in got)
    return Run(
        mix,
        mode,
        workers,
        sum(r.examples for r in got),
        sum(r.violations for r in got),
        seconds,
        load_before,
        load_after,
    )


def profile(mix: str, examples: int, seed_: int, sort: str, limit: int) -> None:
    """cProfile of the checker over pre-drawn scripts, one worker (the harness side only)."""
    drawn = draw_scripts(mix, examples, seed_)
    checker = Checker(ServerProcess(reference_command("lt")))
    try:
        checker.start()
        prof = cProfile.Profile()
        started = time.perf_counter()
        prof.enable()
        for script in drawn:
            checker.check(script)
        prof.disable()
        seconds = time.perf_counter() - started
    finally:
        checker.stop()
    print(f"{len(drawn)} {mix} examples in {seconds:.2f} s: {len(drawn) / seconds:.1f} examples/s")
    stats = pstats.Stats(prof).sort_stats(sort)
    stats.print_stats(limit)
    stats.print_callers("poll|sleep|ppid_map")


def _row(runs: list[Run]) -> dict[str, Any]:
    rates = [r.per_second for r in runs]
    first = runs[0]
    return {
        "mix": first.mix,
        "mode": first.mode,
        "workers": first.workers,
        "examples_per_run": first.examples,
        "mean": statistics.mean(rates),
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "stdev": statistics.stdev(rates) if len(rates) > 1 else 0.0,
        "runs": [round(r, 2) for r in rates],
        "violations": sum(r.violations for r in runs),
        "load": [round(x, 2) for r in runs for x in (r.load_before, r.load_after)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.examples_per_second", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--mix", choices=sorted(MIXES), action="append", help="default: both")
    parser.add_argument("--mode", choices=("hypothesis", "replay"), action="append", help="default: both")
    parser.add_argument("--workers", type=int, action="append", help="default: 1 and 2")
    parser.add_argument("--examples", type=int, help="examples per run (default: short 400, full 60)")
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--quick", action="store_true", help="40 short / 10 full examples, one run")
    parser.add_argument("--json", help="write the rows here too")
    parser.add_argument("--profile", choices=sorted(MIXES), help="profile one worker instead")
    parser.add_argument("--sort", default="cumulative", help="pstats sort key for --profile")
    parser.add_argument("--limit", type=int, default=40, help="pstats rows for --profile")
    args = parser.parse_args(argv)

    if args.profile:
        profile(
            args.profile, args.examples or DEFAULT_EXAMPLES[args.profile], args.seed, args.sort, args.limit
        )
        return 0
    mixes = args.mix or ["short", "full"]
    modes = args.mode or ["hypothesis", "replay"]
    worker_counts = args.workers or [1, 2]
    runs = 1 if args.quick else args.runs
    rows = []
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, seed {args.seed}, {runs} run(s)")
    print(
        f"{'mix':<6} {'mode':<10} {'workers':>7} {'examples':>8} {'mean/s':>8} {'median/s':>8} "
        f"{'spread':>16} {'load':>10}"
    )
    for mix in mixes:
        examples = args.examples or ({"short": 40, "full": 10}[mix] if args.quick else DEFAULT_EXAMPLES[mix])
        for mode in modes:
            for workers in worker_counts:
                # Repeats of one row back to back: the same work each time.
                done = [measure(mix, mode, workers, examples, args.seed) for _ in range(runs)]
                row = _row(done)
                rows.append(row)
                spread = f"{row['min']:.1f}..{row['max']:.1f}"
                load = f"{min(row['load']):.1f}..{max(row['load']):.1f}"
                print(
                    f"{mix:<6} {mode:<10} {workers:>7} {row['examples_per_run']:>8} {row['mean']:>8.1f} "
                    f"{row['median']:>8.1f} "
                    f"{spread:>16} {load:>10}"
                    + (f"  violations: {row['violations']}" if row["violations"] else ""),
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"seed": args.seed, "runs": runs, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
