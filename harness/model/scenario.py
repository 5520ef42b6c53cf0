"""Fixed scenarios, as plain data: what a scenario reproducer records.

A Hypothesis script cannot lower the server's RLIMIT_NOFILE, so the EMFILE
check is a fixed scenario run against a second instance of the server (see
:mod:`harness.run.scenarios`); this is its description.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.model.errors import ScriptError
from harness.model.limits import Limits

FD_EXHAUSTION = "fd-exhaustion"
EXTRA_CONNECTIONS = 32
CONTROL_CLIENTS = 8  # the control's clients, before the exhaustion: well under any RLIMIT_NOFILE set


@dataclass(frozen=True)
class Scenario:
    name: str
    nofile: int
    connections: int

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.name, "nofile": self.nofile, "connections": self.connections}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Scenario:
        if obj.get("scenario") != FD_EXHAUSTION:
            raise ScriptError(f"unknown scenario {obj.get('scenario')!r}; known: {FD_EXHAUSTION}")
        return cls(FD_EXHAUSTION, int(obj["nofile"]), int(obj["connections"]))


def fd_exhaustion_scenario(limits: Limits) -> Scenario:
    return Scenario(FD_EXHAUSTION, limits.nofile, limits.nofile + EXTRA_CONNECTIONS)
