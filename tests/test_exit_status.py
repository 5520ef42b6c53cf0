"""The exit status of ``epoll-harness`` is a contract: one row per way a user can call it.

0 every property held (or every reproducer passed); 1 a property was violated,
and only then; 2 a usage error, an unreadable or invalid reproducer or
``[tool.epoll-harness]`` table, or a server that could not start or did not
answer before any script (one paragraph naming the cause, never a traceback
nor a Python tuple); 130 interrupted. A closed standard output changes none of
these. Real ``epoll-harness`` processes against real servers.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from harness import cli
from harness.drive.process import reference_command
from harness.model.limits import DEFAULT_LIMITS
from harness.model.script import Close, Connect, Payload, Read, Script, Send
from harness.run.report import Reproducer

PROGRAMS = Path(__file__).parent / "programs"
PY = shlex.quote(sys.executable)
FAILING = f"{PY} {shlex.quote(str(PROGRAMS / 'exit_status_servers.py'))}"
MISBEHAVING = f"{PY} {shlex.quote(str(PROGRAMS / 'misbehaving.py'))}"
SEED = f"{PY} -m server_under_test.seed_server --port {{port}}"
QUICK = ["--max-examples", "3", "--no-scenarios", "--scripts", "short", "--quiet"]
ECHO = Script(
    (Connect(0), Send(0, Payload.of(b"hello, epoll\n")), Read(0), Close(0)),
)


def harness(
    *args: str, cwd: Path, stdout: int | None = subprocess.PIPE, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_reproducer(tmp_path: Path, command: str | None = None, **changes: object) -> Path:
    """A reproducer of ECHO against ``command`` (the reference server), with JSON fields changed."""
    repro = Reproducer("echo-exact", "a test", command or reference_command("lt"), None, DEFAULT_LIMITS, ECHO)
    path = repro.save(tmp_path / "repros")
    if changes:
        obj = json.loads(path.read_text())
        for key, value in changes.items():
            if value is ...:
                del obj[key]
            else:
                obj[key] = value
        path.write_text(json.dumps(obj))
    return path


@dataclass
class Row:
    """One way to call the command, what it must exit with and what stderr must say."""

    args: Callable[[Path], list[str]]
    status: int
    says: tuple[str, ...] = ()
    pyproject: str | None = None
    stdout_contains: tuple[str, ...] = field(default=())
    # Run as a real process. The others (bad input found before any server or namespace) call
    # harness.cli.main in this process: the same code, the status it returns to the console script.
    process: bool = False


def _bad_file(content: bytes) -> Callable[[Path], list[str]]:
    def args(tmp_path: Path) -> list[str]:
        path = tmp_path / "repro-bad.json"
        path.write_bytes(content)
        return ["replay", str(path)]

    return args


def _changed(**changes: object) -> Callable[[Path], list[str]]:
    return lambda tmp_path: ["replay", str(write_reproducer(tmp_path, **changes))]


ROWS: dict[str, Row] = {
    # -- 2: unreadable or invalid reproducers ------------------------------------------------------------
    "repro-not-utf8": Row(
        _bad_file(b"\xff\xfe{}"), 2, ("is not UTF-8 text", "byte 0xff at offset 0"), process=True
    ),
    "repro-not-json": Row(_bad_file(b"{not json"), 2, ("is not JSON",)),
    "repro-not-a-reproducer": Row(_bad_file(b'{"steps": []}'), 2, ("is not an epoll-harness reproducer",)),
    "repro-no-property": Row(_changed(property=...), 2, ("'property' must name a property",), process=True),
    "repro-unknown-property": Row(_changed(property="fast"), 2, ("unknown property 'fast'",)),
    "repro-limit-not-a-number": Row(
        _changed(limits={"stall_timeout": "abc"}),
        2,
        ("limit 'stall_timeout' must be a number, not 'abc'",),
        process=True,
    ),
    "repro-limit-not-positive": Row(_changed(limits={"stall_timeout": -1}), 2, ("must be positive",)),
    "repro-limit-not-whole": Row(_changed(limits={"nofile": 6.5}), 2, ("'nofile' must be a whole number",)),
    "repro-script-a-string": Row(_changed(script="hello"), 2, ("'script' must be an object",), process=True),
    "repro-script-steps-malformed": Row(
        _changed(script={"version": 1, "steps": [{"op": "pause", "ms": "x"}]}),
        2,
        ("its script is malformed",),
    ),
    "repro-script-step-not-an-object": Row(
        _changed(script={"version": 1, "steps": ["connect"]}), 2, ("its script is malformed",)
    ),
    "repro-script-unknown-op": Row(
        _changed(script={"version": 1, "steps": [{"op": "teleport"}]}), 2, ("unknown step op 'teleport'",)
    ),
    "repro-nothing-to-replay": Row(_changed(script=None), 2, ("needs either a 'script' or a 'scenario'",)),
    "repro-missing": Row(lambda p: ["replay", str(p / "nowhere.json")], 2, ("cannot read the reproducer",)),
    "repro-empty-directory": Row(lambda p: ["replay", str(p)], 2, ("holds no repro-*.json",)),
    "repro-of-an-attached-server": Row(
        _changed(server_command=None), 2, ("recorded against an attached server", "--attach HOST:PORT")
    ),
    "replay-capture-of-a-directory": Row(
        lambda p: ["replay", str(write_reproducer(p).parent), "--capture", str(p / "x.pcap")],
        2,
        ("--capture records one replay",),
    ),
    # -- 2: usage ------------------------------------------------------------------------------------------
    "memory-bound-negative": Row(
        lambda p: ["check", "--memory-bound", "-1"],
        2,
        ("expected a positive number of MiB, not -1",),
        process=True,
    ),
    "only-unknown-property": Row(lambda p: ["check", "--only", "frobs"], 2, ("unknown property 'frobs'",)),
    "only-and-skip-leave-nothing": Row(
        lambda p: ["check", "--only", "cleanup", "--skip", "cleanup"], 2, ("leave no property to check",)
    ),
    "netns-with-attach": Row(
        lambda p: ["check", "--attach", "127.0.0.1:9", "--netns"], 2, ("--netns cannot reach an attached",)
    ),
    "table-unknown-key": Row(
        lambda p: ["check", *QUICK],
        2,
        ("unknown key 'servr'",),
        pyproject='[tool.epoll-harness]\nservr = "x"\n',
    ),
    "table-bad-number": Row(
        lambda p: ["check", *QUICK],
        2,
        ("stall-timeout must be a number, not 'fast'",),
        pyproject='[tool.epoll-harness]\nstall-timeout = "fast"\n',
    ),
    "table-bad-fraction": Row(
        lambda p: ["check", *QUICK],
        2,
        ("idle-cpu = 2", "between 0 and 1"),
        pyproject="[tool.epoll-harness]\nidle-cpu = 2\n",
    ),
    "table-not-toml": Row(
        lambda p: ["check", *QUICK], 2, ("cannot read", "pyproject.toml"), pyproject="[tool.epoll-harness\n"
    ),
    "table-cwd-missing": Row(
        lambda p: ["check", *QUICK],
        2,
        ("is not a directory",),
        pyproject='[tool.epoll-harness]\ncwd = "no/such/dir"\n',
    ),
    "table-env-not-strings": Row(
        lambda p: ["check", *QUICK],
        2,
        ("env must be a table of strings",),
        pyproject="[tool.epoll-harness]\nenv = { PORT = 1 }\n",
    ),
    # -- 2: the server could not start, or did not answer before any script --------------------------------
    "server-not-found": Row(
        lambda p: ["check", "--server", "/no/such/server --port {port}", *QUICK],
        2,
        ("cannot run the server command", "No such file or directory"),
        process=True,
    ),
    "server-exits-at-once": Row(
        lambda p: ["check", "--server", f"{MISBEHAVING} exits-at-once", *QUICK],
        2,
        ("exited with code 3 before it was ready", "fatal: cannot open /etc/echo.conf"),
        process=True,
    ),
    "server-never-ready": Row(
        lambda p: ["check", "--server", f"{MISBEHAVING} never-ready", "--startup-timeout", "1", *QUICK],
        2,
        ("has not printed a 'LISTENING host:port' line after 1.0 s",),
        process=True,
    ),
    "server-never-ready-table-timeout": Row(
        lambda p: ["check", "--server", f"{MISBEHAVING} never-ready", *QUICK],
        2,
        ("after 1.5 s",),
        pyproject="[tool.epoll-harness]\nstartup-timeout = 1.5\n",
        process=True,
    ),
    "server-dies-on-first-connection": Row(
        lambda p: ["check", "--server", f"{FAILING} dies-on-connect --port {{port}}", *QUICK],
        2,
        ("exited with code 7 on its first connection", "fatal: cannot handle client 127.0.0.1"),
        process=True,
    ),
    "server-killed-on-first-connection": Row(
        lambda p: ["check", "--server", f"{FAILING} aborts-on-connect --port {{port}}", *QUICK],
        2,
        ("was killed by SIGABRT on its first connection", "fatal: cannot handle client"),
        process=True,
    ),
    "server-does-not-echo": Row(
        lambda p: ["check", "--server", f"{FAILING} mute --port {{port}}", *QUICK],
        2,
        ("did not echo a first message", "so no script was run"),
        process=True,
    ),
    "attach-nothing-listening": Row(
        lambda p: ["check", "--attach", f"127.0.0.1:{free_port()}", *QUICK],
        2,
        ("nothing is listening on 127.0.0.1:", "connection was refused"),
        process=True,
    ),
    "attach-no-such-pid": Row(
        lambda p: ["check", "--attach", "127.0.0.1:9", "--pid", str(_dead_pid()), *QUICK],
        2,
        ("there is no process",),
        process=True,
    ),
    # -- 1: a property was violated ------------------------------------------------------------------------
    "replay-still-fails": Row(
        lambda p: ["replay", str(write_reproducer(p, SEED))],
        1,
        stdout_contains=("FAILED: echo-exact",),
        process=True,
    ),
    "replay-repeat-counts": Row(
        lambda p: ["replay", str(write_reproducer(p, SEED)), "--repeat", "3"],
        1,
        stdout_contains=("(3/3 failed)",),
        process=True,
    ),
    "replay-directory-one-fails": Row(
        lambda p: ["replay", str(_corpus(p))],
        1,
        stdout_contains=("1/2 reproducers still fail", "passed"),
        process=True,
    ),
    # -- 0: held ------------------------------------------------------------------------------------------
    "replay-passes": Row(
        lambda p: ["replay", str(write_reproducer(p))],
        0,
        stdout_contains=("passed: echo-exact held",),
        process=True,
    ),
    "replay-repeat-passes": Row(
        lambda p: ["replay", str(write_reproducer(p)), "--repeat", "2"],
        0,
        stdout_contains=("in 2/2 replays",),
        process=True,
    ),
    "properties": Row(lambda p: ["properties"], 0, stdout_contains=("echo-exact",)),
}


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _corpus(tmp_path: Path) -> Path:
    """A directory with a reproducer that passes against the reference server and one that fails."""
    write_reproducer(tmp_path)
    failing = Reproducer("cleanup", "a test", SEED, None, DEFAULT_LIMITS, Script((Connect(0), Close(0))))
    failing.save(tmp_path / "repros")
    return tmp_path / "repros"


@pytest.mark.parametrize("name", list(ROWS))
def test_exit_status(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    row = ROWS[name]
    if row.pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(row.pyproject)
    args = row.args(tmp_path)
    if row.process:
        result = harness(*args, cwd=tmp_path)
        status, out, err = result.returncode, result.stdout, result.stderr
    else:
        status, out, err = in_process(args, tmp_path, monkeypatch, capsys)
    assert status == row.status, out + err
    for text in row.says:
        assert text in err, err
    for text in row.stdout_contains:
        assert text in out, out
    assert "Traceback" not in err.replace("Its last output", "")  # a server's may be shown
    assert "('127.0.0.1'" not in err  # no Python tuple
    if row.status == 2 and name.startswith(("repro", "memory", "only", "table", "server", "attach")):
        assert err.count("epoll-harness") <= 3, err  # one paragraph, not a log


def in_process(
    args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """``epoll-harness ARGS`` as harness.cli.main runs it, here; never past the checks of its input."""

    def no_network(wanted: bool | None) -> None:
        raise AssertionError("this row must fail before a network is chosen")

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(cli, "choose_network", no_network)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        status = cli.main(args)
    except SystemExit as exc:  # argparse's usage errors
        status = int(exc.code or 0)
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_a_violation_found_by_check_exits_1(tmp_path: Path) -> None:
    result = harness(
        "check",
        "--server",
        SEED,
        "--only",
        "cleanup,half-close,idle-cpu,survives",
        "--seed",
        "3",
        "--time-budget",
        "5",
        "--shrink-budget",
        "2",
        "--confirm",
        "1",
        *QUICK,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "VIOLATED" in result.stdout
    assert "skipped (not selected (--only/--skip))" in result.stdout  # echo-exact was left out


def test_a_closed_stdout_is_not_a_violation(tmp_path: Path) -> None:
    """``epoll-harness check | head -1``: the reader is gone before the summary is printed."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = harness("check", *QUICK, cwd=tmp_path, stdout=write_end)
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr


def test_a_time_budget_alone_decides_and_a_ci_log_gets_progress_lines(tmp_path: Path) -> None:
    """No tty, no --max-examples: scripts until the budget is spent, a progress line every few seconds."""
    report = tmp_path / "report.json"
    result = harness(
        "check", "--time-budget", "7", "--scripts", "short", "--no-scenarios", "--report", str(report),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    progress = [line for line in result.stderr.splitlines() if "violated so far: none" in line]
    assert progress, result.stderr
    assert " scripts in " in progress[0] and "/s)" in progress[0]
    # How the time is spent is said before it starts: the search's 7 s, then the shrink budget.
    first = result.stderr.splitlines()[0]
    assert "searching for 7 s, then at most 60 s more to shrink what it finds, then 3 replays" in first
    run = json.loads(report.read_text())
    assert run["examples"] != 200 and run["seconds"] >= 6.5, run  # not stopped by the old 200 scripts
    server_line = next(line for line in result.stdout.splitlines() if line.startswith("server: "))
    assert "{host}" not in server_line and "--host 127.0.0.1" in server_line  # filled, not the template
    assert "listening on 127.0.0.1:" in server_line


def test_sigterm_during_a_run_exits_130(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "check", "--time-budget", "120", "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any("server_under_test" in _cmdline(p) for p in _children(proc.pid)):
            assert time.monotonic() < deadline and proc.poll() is None, "no server started"
            time.sleep(0.05)
        time.sleep(0.5)  # into the examples
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _cmdline(process: psutil.Process) -> str:
    """A process's command line; "" for one that is gone or a zombie (a helper the harness ran,
    such as ss, exiting while the test looks)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def test_reproducers_of_distinct_findings_do_not_overwrite_each_other(tmp_path: Path) -> None:
    first = write_reproducer(tmp_path)
    other = Reproducer(
        "echo-exact", "another", reference_command("lt"), None, DEFAULT_LIMITS, Script((Connect(0),))
    )
    second = other.save(tmp_path / "repros")
    again = Reproducer.load(first).save(tmp_path / "repros")  # the same finding, found again
    assert first != second and again == first
    assert first.name.startswith("repro-echo-exact-") and first.suffix == ".json"
    assert sorted(p.name for p in (tmp_path / "repros").iterdir()) == sorted([first.name, second.name])


def test_the_startup_timeout_reaches_every_server_the_harness_starts(tmp_path: Path) -> None:
    """A server that takes 2.5 s to listen, and the servers of fixed scenarios and replays.

    The scenario starts a server of its own (under a small RLIMIT_NOFILE); the
    start-up timeout given on the command line must reach it too, not only the
    first server of a check.
    """
    scenario = {"scenario": "fd-exhaustion", "nofile": 64, "connections": 80}
    slow_start = f"{MISBEHAVING} slow-start --port {{port}}"
    repro = write_reproducer(tmp_path, slow_start, script=..., scenario=scenario)
    short = harness("replay", str(repro), "--startup-timeout", "1", "--no-netns", cwd=tmp_path)
    assert short.returncode == 2, short.stdout + short.stderr
    assert "after 1.0 s" in short.stderr
    enough = harness("replay", str(repro), "--startup-timeout", "10", "--no-netns", cwd=tmp_path)
    assert enough.returncode == 0, enough.stdout + enough.stderr
    slow = harness(
        "check", "--server", f"{MISBEHAVING} slow-start", "--startup-timeout", "1", *QUICK, cwd=tmp_path
    )
    assert slow.returncode == 2 and "after 1.0 s" in slow.stderr, slow.stdout + slow.stderr
