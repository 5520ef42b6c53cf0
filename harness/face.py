"""What the two faces (``epoll-harness`` and the pytest plugin) share beyond their options.

* :class:`Target`: the server under test as a user configures it: a command
  template (with the ``[tool.epoll-harness]`` table's ``cwd`` and ``env`` folded
  in, so that every server the harness starts for it, reproducers' replays
  included, runs the same way), or an address to attach to with an optional pid.
* :func:`check_attach`: an attached target is checked before anything runs:
  loopback (unless allowed), and a ``--pid`` must own the listening socket.
* :class:`FaceChecker`: a :class:`~harness.run.checker.Checker` that judges only
  the selected properties (``--only``/``--skip``), tells a :class:`Watch` of
  every example, and says in one paragraph why a server that started does not
  answer (its exit status or signal and its last lines, or "nothing is
  listening" for an attached address).
* :func:`script_lines`: a shrunk script as a few readable lines.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from harness.drive.process import ServerCommand, ServerProcess, describe_exit
from harness.model.errors import ServerStartError, UsageError
from harness.model.limits import Limits
from harness.model.scenario import CONTROL_CLIENTS, Scenario
from harness.model.script import Payload, Script, Step
from harness.run.checker import Checker, Outcome

SCRIPT_LINES = 12  # steps shown before "... N more steps"


# -- the server under test ------------------------------------------------------------------------------


def server_template(command: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """``command`` run in ``cwd`` with ``env`` added: ``env -C CWD K=V ... command`` (GNU env).

    A template that carries its own directory and environment starts the same
    way wherever the harness starts it: the fd-exhaustion scenario's second
    server, the replays under capture, and ``epoll-harness replay`` of a
    reproducer from any directory.
    """
    if cwd is None and not env:
        return command
    program = shutil.which("env") or "/usr/bin/env"
    words = [program]
    if cwd is not None:
        words += ["-C", str(cwd)]
    words += [f"{key}={value}" for key, value in (env or {}).items()]
    prefix = " ".join(shlex.quote(word).replace("{", "{{").replace("}", "}}") for word in words)
    return f"{prefix} {command}"


@dataclass(frozen=True)
class Target:
    """A command template to start, or an address (and maybe a pid) to attach to."""

    template: str | None
    attach: tuple[str, int] | None = None
    pid: int | None = None
    startup_timeout: float = 15.0

    def __post_init__(self) -> None:
        if (self.template is None) == (self.attach is None):
            raise UsageError("give either a server command or an address to attach to, not both")
        if self.template is not None:
            ServerCommand(self.template)  # UsageError on a bad template

    @property
    def address(self) -> str:
        assert self.attach is not None
        host, port = self.attach
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def replay_arguments(self) -> str:
        """What ``epoll-harness replay FILE`` needs besides the file to reach this server again."""
        if self.attach is None:
            return ""
        return f" --attach {self.address}" + (f" --pid {self.pid}" if self.pid is not None else "")


def check_attach(target: Target, allow_remote: bool) -> None:
    """Refuse a remote target (unless allowed) and a pid that does not own the listening socket."""
    assert target.attach is not None
    host, port = target.attach
    if not allow_remote:
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise UsageError(
                f"{host} is not a loopback address; floods and resets are meant for servers you own. "
                "Add --allow-remote if this one is yours."
            )
    if target.pid is not None:
        _check_pid_listens(target.pid, port)


def _check_pid_listens(pid: int, port: int) -> None:
    try:
        root = psutil.Process(pid)
        name = root.name()
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        raise UsageError(
            f"--pid {pid}: there is no process {pid}; give the pid of the running server"
        ) from None
    except psutil.AccessDenied:
        raise UsageError(
            f"--pid {pid}: not permitted to inspect process {pid}; run as its user or root"
        ) from None
    ports: set[int] = set()
    for proc in tree:
        try:
            conns = proc.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            raise UsageError(
                f"--pid {pid}: not permitted to read the sockets of process {proc.pid}; "
                "run as its user or root"
            ) from None
        ports.update(c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr)
    if port not in ports:
        listens = (
            f"it and its children listen on port {', '.join(map(str, sorted(ports)))}"
            if ports
            else "neither it nor its children listen on a TCP port"
        )
        raise UsageError(
            f"--pid {pid} ({name}) does not own the socket listening on port {port} ({listens}). "
            "Give the pid of the server that accepts the connections, or leave --pid out "
            "(cleanup, idle-cpu, bounded-memory and survives are then skipped)."
        )


# -- the checker both faces use ---------------------------------------------------------------------------


class Watch(Protocol):
    """Told of every example a :class:`FaceChecker` runs (progress lines, budgets, findings)."""

    def before(self, script: Script) -> None: ...

    def after(self, outcome: Outcome) -> None: ...


class FaceChecker(Checker):
    """A Checker for a :class:`Target`: selected properties only, a watch, clear start-up failures."""

    def __init__(
        self,
        target: Target,
        limits: Limits,
        *,
        unselected: frozenset[str] = frozenset(),
        capture_dir: Path | None = None,
        watch: Watch | None = None,
    ) -> None:
        if target.attach is not None:
            super().__init__(address=target.attach, pid=target.pid, limits=limits, capture_dir=capture_dir)
        else:
            assert target.template is not None
            server = ServerProcess(target.template, ready_timeout=target.startup_timeout)
            super().__init__(server, limits=limits, capture_dir=capture_dir)
        self.target = target
        self.unselected = unselected
        self.watch = watch
        self._starting = False

    def start(self) -> None:
        self._starting = True
        try:
            super().start()
        finally:
            self._starting = False

    def probe(self) -> str | None:
        problem = super().probe()
        if problem is not None and self._starting:
            raise ServerStartError(self._not_answering(problem))
        return problem

    def _not_answering(self, problem: str) -> str:
        if self.server is None:
            where = self.target.address
            if "ConnectionRefused" in problem:
                return (
                    f"nothing is listening on {where} (the connection was refused). Start the server "
                    "first, or check the address given to --attach."
                )
            return (
                f"the server at {where} accepts connections but did not echo a first message ({problem}), "
                "so no script was run. Check that it is an echo server and that it is not stuck."
            )
        command = filled_command(self)
        time.sleep(0.05)  # a server that is going down: let it go, and its last words drain
        code = self.server.popen.poll() if self.server.popen is not None else None
        if code is not None:
            return (
                f"The server {command!r} {describe_exit(code)} on its first connection, before any "
                f"script ran ({problem}). {self.server.last_words()}"
            )
        return (
            f"The server {command!r} listens on {self.address[0]}:{self.address[1]} but did not echo a "
            f"first message ({problem}), so no script was run. {self.server.last_words()}"
        )

    def check(self, script: Script, skip: frozenset[str] = frozenset()) -> Outcome:
        if self.watch is not None:
            self.watch.before(script)
        outcome = super().check(script, skip | self.unselected)
        if self.unselected:
            outcome.violations = [v for v in outcome.violations if v.property_name not in self.unselected]
            outcome.non_strict = [v for v in outcome.non_strict if v.property_name not in self.unselected]
        if self.watch is not None:
            self.watch.after(outcome)
        return outcome


def filled_command(checker: Checker) -> str:
    """The command line the checker's server was last started with (the template, if never started)."""
    server = checker.server
    if server is None:
        return ""
    if server.port is None and server.command.chooses_port:
        return server.command.template
    return shlex.join(server.argv)


# -- how a finding is shown ----------------------------------------------------------------------------------


def script_lines(script: Script, limit: int = SCRIPT_LINES) -> list[str]:
    """One short line per step (``2. send 0: 12 bytes b'hello world\\n'``), at most ``limit`` of them."""
    lines = [f"{i}. {describe_step(step)}" for i, step in enumerate(script.steps[:limit], 1)]
    if len(script) > limit:
        lines.append(f"... {len(script) - limit} more steps (all of them in the reproducer)")
    return lines


def describe_step(step: Step) -> str:
    """``op conn: field value, ...``, leaving out the fields that have their default value."""
    conn = getattr(step, "conn", None)
    words = [step.op] + ([str(conn)] if conn is not None else [])
    details = []
    for f in dataclasses.fields(step):
        value = getattr(step, f.name)
        if f.name == "conn" or value == f.default:
            continue
        if isinstance(value, Payload):
            details.append(_payload(value))
        elif isinstance(value, tuple):
            details.append(f"{f.name} {_runs(value)}")
        else:
            details.append(f"{f.name} {value}")
    return " ".join(words) + (": " + ", ".join(details) if details else "")


def _runs(values: tuple[Any, ...]) -> str:
    """``1x36, 5`` for (1, 1, ..., 1, 5): repeated values counted, not listed."""
    parts = []
    for value, group in itertools.groupby(values):
        count = len(list(group))
        parts.append(f"{value}x{count}" if count > 2 else ", ".join([str(value)] * count))
    return "[" + ", ".join(parts) + "]"


def _payload(payload: Payload) -> str:
    head = payload.literal[:24]
    shown = repr(head) + ("..." if len(payload.literal) > len(head) else "")
    if not payload.size:
        return f"{len(payload)} bytes {shown}"
    if not head:
        return f"{len(payload)} pattern bytes"
    return f"{len(payload)} bytes ({shown} then {payload.size} pattern bytes)"


def scenario_line(scenario: Scenario) -> str:
    return (
        f"fixed scenario {scenario.name}: the server started with RLIMIT_NOFILE={scenario.nofile}, "
        f"a control of {CONTROL_CLIENTS} clients, then {scenario.connections} clients connect at once, "
        "then close"
    )
