"""A campaign's end: ``summary.json`` and ``summary.png`` (findings and coverage over time).

The JSON has what a CI or a person needs afterwards: examples and examples/s
(in all and per worker), per-property counts, each finding (key, property,
message, reproducer and pcap relative to the output folder, the shape of its
script, its size, confirmations, time to find, how many times it was found),
the fault events seen and when each last grew, and the series of snapshots
the picture is drawn from. The picture needs matplotlib (the ``campaign``
extra); without it the JSON says so.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from harness.run.campaign import Campaign, counts_as_failure

SUMMARY = "summary.json"
PICTURE = "summary.png"
FORMAT = "epoll-harness-campaign/1"
EVENTS_DRAWN = 10  # the most frequent fault events get a line each; the rest would be noise


def summary_of(campaign: Campaign, interrupted: bool) -> dict[str, Any]:
    out = campaign.config.out
    seconds = max((w.seconds for w in campaign.workers), default=0.0) or campaign.elapsed
    findings = sorted(campaign.findings.values(), key=lambda f: f.seconds_to_find)
    per_property: dict[str, dict[str, int]] = {}
    for finding in findings:
        counts = per_property.setdefault(finding.property_name, {"findings": 0, "times_found": 0})
        counts["findings"] += 1
        counts["times_found"] += finding.times_found
    return {
        "format": FORMAT,
        "server_command": campaign.config.server_command,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(campaign.elapsed, 1),
        "duration": campaign.config.seconds,
        "workers": campaign.config.workers,
        "database": campaign.config.database,
        "steer": campaign.config.steer,
        "ended": "interrupted" if interrupted else campaign.stopping or "the time was up",
        "examples": campaign.examples,
        "corpus_replayed": sum(w.replayed for w in campaign.workers),
        "examples_per_second": round(campaign.examples / seconds, 2) if seconds else 0.0,
        "per_worker": [
            {
                "worker": w.index,
                "examples": w.examples,
                "examples_per_second": round(w.rate, 2),
                "restarts": w.restarts,
                "corpus_replayed": w.replayed,
                "findings": w.findings,
                "network": w.network,
                "error": w.error,
                "exit_status": w.exit_status,
            }
            for w in campaign.workers
        ],
        "per_property": per_property,
        "findings": [
            {
                **asdict(f),
                "reproducer": _relative(f.reproducer, out),
                "pcap": _relative(f.pcap, out) if f.pcap else None,
                "counts": counts_as_failure(f),
            }
            for f in findings
        ],
        "coverage": dict(Counter(campaign.coverage).most_common()),
        "coverage_last_grew": {k: round(v, 1) for k, v in sorted(campaign.coverage_changed.items())},
        "series": campaign.series,
        "regression_tests": "test_findings.py",
        "picture": None,
    }


def _relative(path: str, out: Path) -> str:
    return os.path.relpath(path, out)


def write_summary(campaign: Campaign, interrupted: bool) -> Path:
    """Write summary.json (and summary.png when matplotlib is there); the JSON's path."""
    out = campaign.config.out
    summary = summary_of(campaign, interrupted)
    try:
        summary["picture"] = draw(summary, out / PICTURE).name
    except ImportError:
        summary["picture_missing"] = "matplotlib is not installed: pip install 'epoll-harness[campaign]'"
    path = out / SUMMARY
    path.write_text(json.dumps(summary, indent=1) + "\n")
    return path


def draw(summary: dict[str, Any], path: Path) -> Path:
    """Two panels over the campaign's time: findings (and examples), then the fault events seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = summary["series"] or [{"seconds": 0, "examples": 0, "findings": 0, "coverage": {}}]
    minutes = [point["seconds"] / 60 for point in series]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7.5), sharex=True, layout="constrained")
    figure.suptitle(
        f"{summary['server_command']}\n{summary['workers']} workers, {summary['examples']} examples "
        f"({summary['examples_per_second']}/s), {len(summary['findings'])} findings",
        fontsize=10,
    )
    top.step(minutes, [p["findings"] for p in series], where="post", color="crimson", linewidth=2)
    top.set_ylabel("distinct confirmed findings", color="crimson")
    top.set_ylim(bottom=0)
    top.yaxis.get_major_locator().set_params(integer=True)
    for finding in summary["findings"]:
        top.annotate(
            finding["property_name"],
            (finding["seconds_to_find"] / 60, 0),
            xytext=(2, 4),
            textcoords="offset points",
            rotation=90,
            fontsize=8,
            color="crimson",
        )
    examples = top.twinx()
    examples.plot(minutes, [p["examples"] for p in series], color="grey", linewidth=1)
    examples.set_ylabel("examples run", color="grey")
    top.grid(alpha=0.3)
    events = list(summary["coverage"])[:EVENTS_DRAWN]
    for event in events:
        bottom.plot(minutes, [p["coverage"].get(event, 0) for p in series], label=_short(event))
    bottom.set_ylabel("times each fault event was seen")
    bottom.set_xlabel("minutes since the campaign started")
    bottom.grid(alpha=0.3)
    if events:
        bottom.legend(fontsize=7, loc="upper left")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _short(event: str, width: int = 60) -> str:
    return event if len(event) <= width else event[: width - 1] + "…"
