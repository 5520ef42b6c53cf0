"""Replays under the packet capture: a reproducer's script, run once more with scapy listening.

When a property fails, ``check`` replays each shrunk reproducer with a
capture on the loopback interface (of the run's private namespace, when it
has one) and saves ``repro-<property>.pcap`` beside it; ``tcpdump -r`` or
Wireshark open it. The capture is also judged on the wire (``graceful-fin``),
and its zero-window evidence noted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.drive.process import ServerProcess
from harness.drive.wire import ZERO_WINDOW_EVIDENCE
from harness.model.limits import Limits
from harness.model.properties import Violation
from harness.model.script import Script
from harness.run.checker import Checker


@dataclass(frozen=True)
class CapturedReplay:
    violations: list[Violation]  # what the checker saw, the wire's verdicts included
    pcap: Path
    packets: int
    zero_window: bool


def replay_with_capture(command: str, script: Script, limits: Limits, pcap: Path) -> CapturedReplay:
    with Checker(ServerProcess(command, ready_timeout=limits.startup_timeout), limits=limits) as checker:
        outcome, packets = checker.check_captured(script, pcap)
    return CapturedReplay(outcome.violations, pcap, packets, ZERO_WINDOW_EVIDENCE in outcome.evidence)
