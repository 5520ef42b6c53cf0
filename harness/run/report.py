"""Reproducers and the run report: what a failed run leaves behind.

A reproducer is one JSON file with everything needed to see the failure
again: the property, the message, the server command, the seed, the limits,
and the shrunk script (or the fixed scenario). ``epoll-harness replay FILE``
runs it. ``report.json`` records the whole run, per property.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import __version__
from harness.model.errors import ScriptError, UsageError
from harness.model.limits import DEFAULT_LIMITS, Limits
from harness.model.properties import PROPERTIES
from harness.model.scenario import Scenario
from harness.model.script import Script

REPRO_FORMAT = "epoll-harness-reproducer/1"
#: Verdict levels, as Autobahn's: a failure, or legal but impolite behaviour worth knowing of.
FAIL = "fail"
NON_STRICT = "non-strict"


@dataclass(frozen=True)
class Reproducer:
    property_name: str
    message: str
    server_command: str | None
    seed: int | None
    limits: Limits
    script: Script | None = None
    scenario: Scenario | None = None
    also: tuple[str, ...] = ()
    level: str = FAIL

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPRO_FORMAT,
            "harness_version": __version__,
            "property": self.property_name,
            "message": self.message,
            "also_violated": list(self.also),
            "level": self.level,
            "server_command": self.server_command,
            "seed": self.seed,
            "limits": asdict(self.limits),
            "script": self.script.to_json() if self.script is not None else None,
            "scenario": self.scenario.to_json() if self.scenario is not None else None,
        }

    @property
    def name(self) -> str:
        """The file name: one per distinct finding, the same every time it is found again.

        ``repro-<property>-<hash>.json``, the hash being of what the reproducer
        replays (its script or scenario) and its level: a later run that finds
        another script adds a file instead of overwriting an earlier finding.
        """
        replayed = {
            "script": self.script.to_json() if self.script is not None else None,
            "scenario": self.scenario.to_json() if self.scenario is not None else None,
            "level": self.level,
        }
        digest = hashlib.sha256(json.dumps(replayed, sort_keys=True).encode()).hexdigest()[:10]
        return f"repro-{self.property_name}-{digest}.json"

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / self.name
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Reproducer:
        """Read and check a reproducer. UsageError: it cannot be read; ScriptError: it is not valid."""
        where = repr(os.fspath(path))
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read the reproducer {where}: {exc.strerror}") from exc
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ScriptError(
                f"{where} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}), so not a "
                "reproducer written by epoll-harness; give a repro-*.json file from its artifacts directory"
            ) from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScriptError(f"{where} is not JSON: {exc}") from None
        if not isinstance(obj, dict) or obj.get("format") != REPRO_FORMAT:
            raise ScriptError(f"{where} is not an epoll-harness reproducer (format {REPRO_FORMAT})")
        return cls._from_json(obj, where)

    @classmethod
    def _from_json(cls, obj: dict[str, Any], where: str) -> Reproducer:
        def bad(what: str) -> ScriptError:
            return ScriptError(f"{where} is not a valid reproducer: {what}")

        name = obj.get("property")
        if not isinstance(name, str):
            raise bad(f"'property' must name a property, not {name!r}")
        if name not in PROPERTIES:
            raise bad(f"unknown property {name!r}; known: {', '.join(PROPERTIES)}")
        for key, types in (("message", str), ("server_command", str), ("seed", int), ("level", str)):
            value = obj.get(key)
            if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
                raise bad(f"{key!r} must be a {types.__name__} or null, not {value!r}")
        level = obj.get("level") or FAIL
        if level not in (FAIL, NON_STRICT):
            raise bad(f"'level' must be {FAIL!r} or {NON_STRICT!r}, not {level!r}")
        also = obj.get("also_violated") or []
        if not isinstance(also, list) or not all(isinstance(a, str) for a in also):
            raise bad(f"'also_violated' must be a list of property names, not {also!r}")
        raw_limits = obj.get("limits") or {}
        if not isinstance(raw_limits, dict):
            raise bad(f"'limits' must be an object, not {raw_limits!r}")
        fields = Limits.__dataclass_fields__
        for key, value in raw_limits.items():
            if key not in fields:
                continue  # a limit of another version of the harness
            integral = isinstance(getattr(DEFAULT_LIMITS, key), int)
            kind = int if integral else int | float
            if isinstance(value, bool) or not isinstance(value, kind):
                raise bad(f"limit {key!r} must be a {'whole ' if integral else ''}number, not {value!r}")
        try:
            limits = Limits(**{k: v for k, v in raw_limits.items() if k in fields})
        except UsageError as exc:
            raise bad(str(exc)) from None
        script = scenario = None
        raw_script, raw_scenario = obj.get("script"), obj.get("scenario")
        if raw_script is not None:
            if not isinstance(raw_script, dict):
                raise bad(f"'script' must be an object with 'version' and 'steps', not {raw_script!r}")
            try:
                script = Script.from_json(raw_script)
            except ScriptError as exc:
                raise bad(f"its script: {exc}") from None
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise bad(f"its script is malformed ({type(exc).__name__}: {exc})") from None
        if raw_scenario is not None:
            if not isinstance(raw_scenario, dict):
                raise bad(f"'scenario' must be an object, not {raw_scenario!r}")
            try:
                scenario = Scenario.from_json(raw_scenario)
            except ScriptError as exc:
                raise bad(f"its scenario: {exc}") from None
            except (KeyError, TypeError, ValueError) as exc:
                raise bad(f"its scenario is malformed ({type(exc).__name__}: {exc})") from None
        if (script is None) == (scenario is None):
            raise bad("it needs either a 'script' or a 'scenario'")
        return cls(
            property_name=name,
            message=obj.get("message") or "",
            server_command=obj.get("server_command"),
            seed=obj.get("seed"),
            limits=limits,
            script=script,
            scenario=scenario,
            also=tuple(also),
            level=level,
        )


@dataclass(frozen=True)
class ViolationRecord:
    property_name: str
    message: str
    reproducer: str | None
    steps: int | None = None  # size of the shrunk script
    bytes_sent: int | None = None
    flaky: bool = False
    seconds_to_find: float | None = None
    capture: str | None = None  # the pcap of a replay of the reproducer
    on_the_wire: tuple[str, ...] = ()  # what the capture showed (graceful-fin, ...)
    confirmed: int | None = None  # replays that violated the property again (None: not replayed)
    replays: int = 0
    also: tuple[str, ...] = ()  # other properties the same reproducer violates
    level: str = FAIL

    @property
    def fails(self) -> bool:
        """Does this record fail the run? A failure that replays (or was not replayed); not an
        unconfirmed one (seen once, never again in ``replays`` tries), not a non-strict finding."""
        return self.level == FAIL and (self.confirmed is None or self.confirmed > 0)

    @property
    def unconfirmed(self) -> bool:
        return self.level == FAIL and self.confirmed == 0 and self.replays > 0

    def confirmation(self) -> str:
        """``confirmed 3/3``, ``unconfirmed (0/3 replays)``, or "" when not replayed."""
        if self.confirmed is None or not self.replays:
            return ""
        if self.confirmed == 0:
            return f"unconfirmed (0/{self.replays} replays)"
        return f"confirmed {self.confirmed}/{self.replays}"


@dataclass
class PropertyStats:
    examples: int = 0
    seconds: float = 0.0
    skipped: str | None = None  # why, when the property could not be checked
    violations: list[ViolationRecord] = field(default_factory=list)
    non_strict: list[ViolationRecord] = field(default_factory=list)

    def status(self) -> tuple[str, str]:
        """What a summary says of the property: a word and, where it helps, why.

        ``violated`` (a failure that replays), ``unconfirmed`` (seen, never
        replayed), ``non-strict`` (legal but impolite), ``skipped``, ``not
        exercised`` (no script put it to the test: never "ok"), or ``ok``.
        """
        if any(v.fails for v in self.violations):
            return "violated", ""
        if self.violations:
            return "unconfirmed", "seen once, did not replay"
        if self.skipped:
            return "skipped", self.skipped
        if self.non_strict:
            return "non-strict", self.non_strict[0].message
        if not self.examples:
            return "not exercised", "no script reached it"
        return "ok", ""


@dataclass
class RunReport:
    server_command: str
    seed: int | None
    examples: int = 0
    seconds: float = 0.0
    restarts: int = 0
    abandoned: int = 0  # scripts cut off when the search's time was up (the server restarted for each)
    network: str = ""
    evidence: dict[str, int] = field(default_factory=dict)
    diagnostics: list[str] = field(default_factory=list)  # seen, not violations (fds that plateau ...)
    properties: dict[str, PropertyStats] = field(
        default_factory=lambda: {p: PropertyStats() for p in PROPERTIES}
    )

    @property
    def violations(self) -> list[ViolationRecord]:
        return [v for stats in self.properties.values() for v in stats.violations]

    @property
    def ok(self) -> bool:
        """No violation that fails the run (see :attr:`ViolationRecord.fails`)."""
        return not any(v.fails for v in self.violations)

    def to_json(self) -> dict[str, Any]:
        return {
            "harness_version": __version__,
            "server_command": self.server_command,
            "seed": self.seed,
            "examples": self.examples,
            "seconds": round(self.seconds, 3),
            "server_restarts": self.restarts,
            "abandoned_scripts": self.abandoned,
            "network": self.network,
            "evidence": dict(sorted(self.evidence.items())),
            "diagnostics": self.diagnostics,
            "ok": self.ok,
            "properties": {
                name: {
                    "description": PROPERTIES[name],
                    "examples": stats.examples,
                    "seconds": round(stats.seconds, 3),
                    "skipped": stats.skipped,
                    "status": stats.status()[0],
                    "violations": [asdict(v) for v in stats.violations],
                    "non_strict": [asdict(v) for v in stats.non_strict],
                }
                for name, stats in self.properties.items()
            },
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "server"
