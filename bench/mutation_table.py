"""The mutation table of issue 5 §3: does ``check`` catch every known bug, and how fast?

    python -m bench.mutation_table                       # every target, the table on stdout
    python -m bench.mutation_table --jobs 2 --json out.json
    python -m bench.mutation_table --only ignore_eof --only reference-lt

Runs :func:`harness.run.runner.run_check` (the same code as ``epoll-harness
check``) with a fixed seed against the seed's server, every mutant of
:data:`server_under_test.mutants.CATALOGUE` and the reference server in both
modes, each in a subprocess of its own (``--jobs`` at a time), with a fresh
artifacts directory and no example database, so nothing is replayed from an
earlier run. Prints a Markdown table: target, expected property, caught,
properties reported, seconds to the first violation (of the expected property
when it was found), and the size of the shrunk reproducer of the expected
property (steps, bytes sent).

A target is *caught* when its expected property is among the violated ones:
the primary property of a reproducer, or one a reproducer's script also
violated. The reference server is expected to pass (``none``); the seed's
server is expected to break every property its docstring documents.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.drive.netns import choose_network
from harness.drive.process import reference_command
from harness.run.runner import CheckConfig, run_check, strategy_for
from server_under_test.mutants import catalogue

SEED = 20240605
MAX_EXAMPLES = 200
TIME_BUDGET = 45.0
SHRINK_BUDGET = 5.0

# The seed's server's documented bugs (server_under_test/seed_server.py), by property.
SEED_SERVER_PROPERTIES = ("cleanup", "idle-cpu", "half-close", "survives", "accept-robust")
NONE = "none"


@dataclass(frozen=True)
class Target:
    name: str
    command: str
    expected: tuple[str, ...]  # () for a server that must pass


@dataclass
class Result:
    name: str
    expected: tuple[str, ...]
    caught: bool  # every expected property violated (for the reference: no violation at all)
    primary: list[str]  # the properties with a reproducer
    also: list[str]  # properties only seen alongside another's reproducer
    seconds_to_find: float | None  # the expected property's (the first one's, for the reference)
    steps: int | None
    bytes_sent: int | None
    examples: int
    seconds: float
    messages: dict[str, str]


def targets() -> list[Target]:
    python = shlex.quote(sys.executable)
    found = [
        Target(
            "seed_server",
            f"{python} -m server_under_test.seed_server --port {{port}}",
            SEED_SERVER_PROPERTIES,
        ),
        Target("reference-lt", reference_command("lt"), ()),
        Target("reference-et", reference_command("et"), ()),
    ]
    for mutant in catalogue():
        found.append(Target(mutant.name, shlex.join(mutant.argv(host="{host}")), (mutant.expected_property,)))
    return found


def run_target(
    target: Target,
    seed: int = SEED,
    max_examples: int = MAX_EXAMPLES,
    time_budget: float = TIME_BUDGET,
    shrink_budget: float = SHRINK_BUDGET,
    artifacts: Path | None = None,
    netns: bool | None = None,
) -> Result:
    # In the pool's worker process (its main thread): the lab holds every target that worker runs.
    network = choose_network(netns)
    with tempfile.TemporaryDirectory(prefix="mutation-table-") as scratch:
        config = CheckConfig(
            server_command=target.command,
            max_examples=max_examples,
            time_budget=time_budget,
            shrink_budget=shrink_budget,
            seed=seed,
            artifacts=artifacts if artifacts is not None else Path(scratch) / "artifacts",
            database=None,
            until_found=frozenset(target.expected),
        )
        report = run_check(config, strategy_for(network))
        return summarize(target, report.to_json())


def summarize(target: Target, report: dict[str, Any]) -> Result:
    primary: list[str] = []
    also: set[str] = set()
    records: dict[str, dict[str, Any]] = {}
    for name, stats in report["properties"].items():
        for record in stats["violations"]:
            primary.append(name)
            records.setdefault(name, record)
            if record.get("reproducer"):
                try:
                    repro = json.loads(Path(record["reproducer"]).read_text())
                except OSError:
                    continue
                also.update(repro.get("also_violated", ()))
    violated = set(primary) | also
    if target.expected:
        caught = set(target.expected) <= violated
        chosen = next((records[p] for p in target.expected if p in records), None)
    else:
        caught = not violated
        chosen = next(iter(records.values()), None)
    return Result(
        name=target.name,
        expected=target.expected,
        caught=caught,
        primary=primary,
        also=sorted(also - set(primary)),
        seconds_to_find=None if chosen is None else chosen.get("seconds_to_find"),
        steps=None if chosen is None else chosen.get("steps"),
        bytes_sent=None if chosen is None else chosen.get("bytes_sent"),
        examples=report["examples"],
        seconds=report["seconds"],
        messages={p: r["message"] for p, r in records.items()},
    )


def _cell(value: object, missing: str = "–") -> str:
    return missing if value is None else str(value)


def markdown(results: list[Result]) -> str:
    lines = [
        "| target | expected property | caught | property reported | s to first violation "
        "| shrunk reproducer (steps, bytes) | examples | run s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        reported = ", ".join(r.primary) or NONE
        if r.also:
            reported += " (also: " + ", ".join(r.also) + ")"
        expected = ", ".join(r.expected) or f"{NONE} (must pass)"
        if r.expected and r.steps is not None:
            size = f"{r.steps}, {r.bytes_sent}"
        elif r.expected and r.seconds_to_find is None and r.caught:
            size = "scenario" if "accept-robust" in r.expected else "–"
        else:
            size = "–"
        if r.expected and r.caught and r.seconds_to_find is None:
            found = "scenario"
        else:
            found = _cell(r.seconds_to_find)
        caught = "yes" if r.caught else "NO"
        missing = [p for p in r.expected if p not in r.primary and p not in r.also]
        if not r.caught and len(r.expected) > 1 and len(missing) < len(r.expected):
            seen = len(r.expected) - len(missing)
            caught = f"NO ({seen} of {len(r.expected)}; missing: {', '.join(missing)})"
        lines.append(
            f"| {r.name} | {expected} | {caught} | {reported} | {found} "
            f"| {size} | {r.examples} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.mutation_table", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--max-examples", type=int, default=MAX_EXAMPLES)
    parser.add_argument("--time-budget", type=float, default=TIME_BUDGET)
    parser.add_argument("--shrink-budget", type=float, default=SHRINK_BUDGET)
    parser.add_argument("--jobs", type=int, default=1, help="targets checked at once (default 1)")
    parser.add_argument(
        "--netns",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run in the network lab (default: when permitted, as epoll-harness check does)",
    )
    parser.add_argument("--only", action="append", help="a target name; repeat for several")
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument("--render", type=Path, metavar="JSON", help="print the table of an earlier --json")
    ns = parser.parse_args(argv)
    if ns.render is not None:
        saved = json.loads(ns.render.read_text())
        print(markdown([Result(**{**r, "expected": tuple(r["expected"])}) for r in saved]))
        return 0
    chosen = [t for t in targets() if not ns.only or t.name in ns.only]
    if not chosen:
        parser.error(f"no target named {ns.only}; known: {', '.join(t.name for t in targets())}")
    started = time.monotonic()
    args = (ns.seed, ns.max_examples, ns.time_budget, ns.shrink_budget, None, ns.netns)
    with ProcessPoolExecutor(max_workers=ns.jobs) as pool:
        futures = [pool.submit(run_target, t, *args) for t in chosen]
        results = []
        for target, future in zip(chosen, futures, strict=True):
            result = future.result()
            results.append(result)
            print(
                f"{target.name}: {'caught' if result.caught else 'NOT caught'} "
                f"{result.primary} also {result.also} in {result.seconds:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    print(markdown(results))
    print(
        f"\n{len(results)} targets, seed {ns.seed}, max {ns.max_examples} examples, time budget "
        f"{ns.time_budget:g} s, shrink budget {ns.shrink_budget:g} s, {ns.jobs} job(s): "
        f"{time.monotonic() - started:.0f} s in all"
    )
    if ns.json is not None:
        ns.json.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")
    return 0 if all(r.caught for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
