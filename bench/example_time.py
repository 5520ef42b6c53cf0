"""Where a campaign example's time goes (issue 16): a breakdown by step kind and by check.

    python -m bench.example_time                    # 120 full-mix scripts, as a campaign worker runs them
    python -m bench.example_time --examples 40 --seed 7
    python -m bench.example_time --campaign 60      # a campaign worker's steered search, 60 s
    python -m bench.example_time --campaign 60 --score scarcity   # steered by another score
    python -m bench.example_time --campaign 60 --search-round 0    # one Hypothesis run, not rounds

A benchmark, never a test. It does what one campaign worker does, in one
process: enter a private network namespace (16 KiB socket buffers, the
campaign's default), start the reference server, draw the campaign's script
mix (:func:`harness.run.runner.strategy_for`) with Hypothesis, and check every
script with a :class:`~harness.run.checker.Checker` (the scripts are drawn
first, timed, then checked: ``--scripts FILE`` saves them, or checks the
ones saved there, so that two trees of the harness do the same work side by
side). Around each part of an example it keeps a stopwatch (exclusive time: a flood's memory checkpoint is
counted as the checkpoint, not as the flood), and prints a table: where the
seconds went, per example and as a share of the total, with the fault-event
counts per 1,000 examples (the evidence a faster mix must not lose).

Nothing here changes what is measured: the same classes run, wrapped.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from harness.drive.executor import Executor
from harness.drive.netns import choose_network
from harness.drive.process import ServerProcess, reference_command
from harness.model.limits import Limits
from harness.model.script import Script
from harness.run import checker as checker_module
from harness.run import runner
from harness.run.checker import Checker, Outcome
from harness.run.runner import SEARCH_ROUND, STEER_COST_UNIT, scarcity, strategy_for


def _per_step(outcome: Outcome, seen_before: Counter[str]) -> float:
    return scarcity(outcome.evidence, seen_before) / (1 + len(outcome.script) / 10)


def _per_second_coarse(outcome: Outcome, seen_before: Counter[str]) -> float:
    # Plateaus instead of a slope: scarcity to one decimal, the time in powers of two of the unit,
    # so that a mutation counts as better only when it reaches rarer events or halves the time.
    rare = round(scarcity(outcome.evidence, seen_before), 1)
    return rare / 2 ** round(math.log2(1 + outcome.seconds / STEER_COST_UNIT))


#: The steering scores a campaign can be timed with (``--score``): the harness's own, and the ones
#: it was measured against (bench/CAMPAIGN_RESULTS.md).
SCORES: dict[str, Callable[[Outcome, Counter[str]], float]] = {
    "per-second": runner.steering_score,
    "scarcity": lambda outcome, seen: scarcity(outcome.evidence, seen),
    "per-step": _per_step,
    "per-second-coarse": _per_second_coarse,
}


class Stopwatch:
    """Exclusive wall time per section name: nested sections pause their parent."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._stack: list[tuple[str, float]] = []

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        now = time.perf_counter()
        if self._stack:
            parent, since = self._stack[-1]
            self.seconds[parent] += now - since
        self._stack.append((name, now))
        try:
            yield
        finally:
            end = time.perf_counter()
            _, since = self._stack.pop()
            self.seconds[name] += end - since
            self.calls[name] += 1
            if self._stack:
                parent, _ = self._stack[-1]
                self._stack[-1] = (parent, end)


def _wrap(owner: Any, attribute: str, watch: Stopwatch, name: Callable[..., str] | str) -> None:
    original = getattr(owner, attribute)

    def timed(*args: Any, **kwargs: Any) -> Any:
        label = name(*args, **kwargs) if callable(name) else name
        with watch.section(label):
            return original(*args, **kwargs)

    setattr(owner, attribute, timed)


def instrument(watch: Stopwatch) -> None:
    _wrap(Executor, "run_step", watch, lambda self, step: f"step {type(step).__name__}")
    _wrap(Executor, "settle", watch, "settle (read what is owed, close)")
    if hasattr(Executor, "_give_time"):
        _wrap(Executor, "_give_time", watch, "delays and pauses")
    _wrap(Checker, "_checkpoint", watch, lambda self, name, executor: f"checkpoint {name}")
    _wrap(Checker, "_wait_fds", watch, "after: wait for fds (cleanup)")
    _wrap(Checker, "_probe_after", watch, "after: probe connections (survives)")
    _wrap(Checker, "_busy_fraction", watch, "after: idle-cpu sample")
    _wrap(Checker, "restart", watch, "server restart")
    _wrap(checker_module, "judge_transcript", watch, "judge transcript (oracle)")
    _wrap(Checker, "ensure_running", watch, "before: server alive?")


def draw(examples: int, seed_: int, strategy: st.SearchStrategy[Script]) -> tuple[list[Script], float]:
    """The scripts a ``@given`` run with this seed draws, and the seconds Hypothesis took."""
    drawn: list[Script] = []

    @seed(seed_)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(script: Script) -> None:
        drawn.append(script)

    started = time.perf_counter()
    collect()
    return drawn, time.perf_counter() - started


def run(examples: int, seed_: int, server: str, scripts_file: Path | None = None) -> dict[str, Any]:
    network = choose_network(None)
    limits = Limits()
    if scripts_file is not None and scripts_file.exists():
        # Scripts drawn by another run (another tree of the harness): the same work for both.
        saved = json.loads(scripts_file.read_text())
        scripts = [Script.from_json(obj) for obj in saved["scripts"]][:examples]
        drawing = saved["draw_seconds"] * len(scripts) / len(saved["scripts"])
    else:
        scripts, drawing = draw(examples, seed_, strategy_for(network, "full", limits))
        if scripts_file is not None:
            scripts_file.write_text(
                json.dumps({"draw_seconds": drawing, "scripts": [s.to_json() for s in scripts]})
            )
    watch = Stopwatch()
    watch.seconds["draw (Hypothesis)"] = drawing
    watch.calls["draw (Hypothesis)"] = len(scripts)
    evidence: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    checker = Checker(ServerProcess(reference_command(server)), limits=limits)
    checker.start()
    instrument(watch)
    started = time.perf_counter()
    try:
        for script in scripts:
            with watch.section("check (rest)"):
                outcome = checker.check(script)
            evidence.update(outcome.evidence)
            steps.update(type(s).__name__ for s in script.steps)
    finally:
        checker.stop()
    checking = time.perf_counter() - started
    return {
        "examples": len(scripts),
        "seed": seed_,
        "network": network.describe(),
        "seconds": drawing + checking,
        "sections": {k: [v, watch.calls[k]] for k, v in watch.seconds.items()},
        "steps": dict(steps),
        "evidence": dict(evidence),
        "restarts": checker.restarts,
    }


def campaign(seconds: float, server: str, steer: bool, search_round: int | None = None) -> dict[str, Any]:
    """One campaign worker's search, as ``fuzz`` runs it (steered by default), timed the same way."""
    import tempfile

    from harness.run.runner import UNBOUNDED, CheckConfig, run_check

    network = choose_network(None)
    limits = Limits()
    watch = Stopwatch()
    evidence: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    original_check = Checker.check

    def check(self: Checker, script: Script, skip: frozenset[str] = frozenset()) -> Any:
        steps.update(type(s).__name__ for s in script.steps)
        with watch.section("check (rest)"):
            outcome = original_check(self, script, skip)
        evidence.update(outcome.evidence)
        return outcome

    Checker.check = check  # type: ignore[method-assign]
    instrument(watch)
    with tempfile.TemporaryDirectory(prefix="example-time-") as tmp:
        config = CheckConfig(
            server_command=reference_command(server),
            max_examples=UNBOUNDED,
            time_budget=seconds,
            shrink_budget=10,
            limits=limits,
            artifacts=Path(tmp),
            database=None,
            scenarios=False,
            confirm=0,
            settle_as_found=True,
            steer=steer,
            search_round=search_round,
        )
        started = time.perf_counter()
        report = run_check(config, strategy_for(network, "full", limits))
        total = time.perf_counter() - started
        # A violation here is a false alarm on the reference server: keep what shows it.
        violations = [f"{v.property_name}: {v.message} ({v.confirmation()})" for v in report.violations]
        if report.violations:
            kept = Path(tempfile.mkdtemp(prefix="example-time-violations-"))
            shutil.copytree(tmp, kept, dirs_exist_ok=True)
            violations.append(f"artifacts kept in {kept}")
    checked = sum(watch.seconds.values())
    watch.seconds["Hypothesis (drawing, steering, the rest)"] = total - checked
    watch.calls["Hypothesis (drawing, steering, the rest)"] = report.examples
    return {
        "examples": report.examples,
        "seed": None,
        "network": network.describe(),
        "seconds": total,
        "sections": {k: [v, watch.calls[k]] for k, v in watch.seconds.items()},
        "steps": dict(steps),
        "evidence": dict(evidence),
        "restarts": report.restarts,
        "violations": violations,
    }


def show(result: dict[str, Any]) -> None:
    try:
        _show(result)
    except BrokenPipeError:  # piped into head
        sys.stderr.close()


def _show(result: dict[str, Any]) -> None:
    n, total = result["examples"], result["seconds"]
    print(f"{n} examples in {total:.1f} s: {n / total:.2f} examples/s, {result['restarts']} restarts")
    print(f"network: {result['network']}")
    print(f"{'section':<40} {'calls':>7} {'s total':>8} {'ms/example':>10} {'share':>6}")
    for name, (seconds, calls) in sorted(result["sections"].items(), key=lambda kv: -kv[1][0]):
        print(f"{name:<40} {calls:>7} {seconds:>8.2f} {1000 * seconds / n:>10.1f} {seconds / total:>6.1%}")
    for violation in result.get("violations", ()):
        print(f"VIOLATION (a false alarm on the reference server): {violation}")
    print("steps drawn:", ", ".join(f"{k} {v}" for k, v in sorted(result["steps"].items())))
    print("fault events per 1,000 examples:")
    for name, count in sorted(result["evidence"].items(), key=lambda kv: -kv[1]):
        print(f"  {1000 * count / n:>7.0f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.example_time", description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=120)
    parser.add_argument("--seed", type=int, default=20261203)
    parser.add_argument("--server", default="lt", help="reference server mode (lt or et)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument(
        "--scripts",
        type=Path,
        help="check the scripts saved in this file (drawn and saved there if it is missing)",
    )
    parser.add_argument(
        "--campaign", type=float, metavar="SECONDS", help="time a campaign worker's search this long instead"
    )
    parser.add_argument("--no-steer", action="store_true", help="with --campaign: no target() steering")
    parser.add_argument(
        "--score",
        choices=sorted(SCORES),
        default="per-second",
        help="with --campaign: the steering score (default: the harness's, per-second)",
    )
    parser.add_argument(
        "--search-round",
        type=int,
        metavar="N",
        default=SEARCH_ROUND,
        help=f"with --campaign: Hypothesis runs of N examples each, as fuzz runs them "
        f"(default {SEARCH_ROUND}; 0: one run for the whole time)",
    )
    args = parser.parse_args(argv)
    runner.steering_score = SCORES[args.score]  # type: ignore[assignment]  # read at each example
    if args.campaign:
        result = campaign(args.campaign, args.server, not args.no_steer, args.search_round or None)
    else:
        result = run(args.examples, args.seed, args.server, args.scripts)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
