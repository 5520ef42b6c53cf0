"""Replays under the packet capture: a reproducer's script, run once more with scapy listening.

When a property fails, ``check`` replays each shrunk reproducer with a
capture on the loopback interface (of the run's private namespace, when it
has one) and saves ``repro-<property>.pcap`` beside it; ``tcpdump -r`` or
Wireshark open it. The capture is also judged on the wire (``graceful-fin``),
and its zero-window evidence noted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness.checker import Checker
from harness.limits import Limits
from harness.process import ServerProcess
from harness.properties import Violation
from harness.script import Script
from harness.wire import Capture, judge_graceful_fin, zero_window_seen

# Segments still in flight when the script returns reach the capture socket within this.
CAPTURE_TAIL = 0.1


@dataclass(frozen=True)
class CapturedReplay:
    violations: list[Violation]  # what the checker saw, then what the wire showed
    pcap: Path
    packets: int
    zero_window: bool


def replay_with_capture(command: str, script: Script, limits: Limits, pcap: Path) -> CapturedReplay:
    with Checker(ServerProcess(command), limits=limits) as checker:
        capture = Capture(checker.address[1])
        with capture:
            violations = list(checker.check(script).violations)
            time.sleep(CAPTURE_TAIL)
    capture.save(pcap)
    segments = capture.segments()
    violations += judge_graceful_fin(segments)
    return CapturedReplay(violations, pcap, len(capture.packets), zero_window_seen(segments))
