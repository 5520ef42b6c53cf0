"""The command line, end to end: real ``epoll-harness`` processes against real servers."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.drive.process import ServerProcess, reference_command

PROGRAM = Path(__file__).parent / "programs" / "misbehaving.py"
SEED = f"{shlex.quote(sys.executable)} -m server_under_test.seed_server --port {{port}}"
QUICK = ["--max-examples", "12", "--time-budget", "20", "--quiet"]


def harness(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def descendants_of(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def wait_gone(procs: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = procs
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.05)
    return alive


def test_help_explains_the_command_template_and_exit_codes(tmp_path: Path) -> None:
    result = harness("check", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "{port}" in result.stdout
    assert "LISTENING host:port" in result.stdout
    assert "exit status" in result.stdout


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["check", "--max-examples", "0"], "expected a positive integer"),
        (["check", "--attach", "nowhere"], "expected HOST:PORT"),
        (["check", "--server", "x {bad}"], "uses {bad}"),
        (["check", "--attach", "10.1.2.3:80"], "not a loopback address"),
        (["check", "--pid", "1"], "--pid goes with --attach"),
        (["check", "--server", "x", "--attach", "127.0.0.1:1"], "either --server or --attach"),
        (["frobnicate"], "invalid choice"),
        (["replay", "/no/such/repro.json"], "cannot read the reproducer"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_error(args: list[str], complaint: str, tmp_path: Path) -> None:
    result = harness(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert complaint in result.stderr
    assert "Traceback" not in result.stderr


def test_a_server_that_cannot_start_exits_2_naming_the_cause(tmp_path: Path) -> None:
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(PROGRAM))} exits-at-once"
    result = harness("check", "--server", command, *QUICK, cwd=tmp_path)
    assert result.returncode == 2
    assert "exited with code 3 before it was ready" in result.stderr
    assert "fatal: cannot open /etc/echo.conf" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lt", "et"])
def test_check_passes_against_the_reference_server(mode: str, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = harness(
        "check",
        "--server",
        reference_command(mode),
        "--seed",
        "7",
        "--report",
        str(report_path),
        *QUICK,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["ok"] is True
    assert report["seed"] == 7
    assert report["server_command"] == reference_command(mode)
    assert report["examples"] >= 1
    assert report["properties"]["accept-robust"]["examples"] >= 1  # the fd-exhaustion scenario ran
    for name, stats in report["properties"].items():
        assert stats["violations"] == [], name
    assert not (tmp_path / "epoll-harness-artifacts").exists()


@pytest.mark.slow
def test_check_fails_against_the_seed_server_and_the_reproducer_replays(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = harness(
        "check",
        "--server",
        SEED,
        "--seed",
        "1",
        "--report",
        str(report_path),
        *QUICK,
        "--time-budget",
        "10",
        "--shrink-budget",
        "5",
        "--capture",
        "never",
        "--confirm",
        "1",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    violated = {name for name, stats in report["properties"].items() if stats["violations"]}
    # Bug 1 of the seed's docstring: EOF is never handled.
    assert violated & {"cleanup", "half-close", "idle-cpu"}, violated
    assert "accept-robust" in violated  # bug 5: EMFILE on accept() kills it
    record = report["properties"][sorted(violated)[0]]["violations"][0]
    repro = Path(record["reproducer"])
    if not repro.is_absolute():
        repro = tmp_path / repro
    assert repro.exists()
    assert f"replay with: epoll-harness replay {record['reproducer']}" in result.stdout
    replayed = harness("replay", str(repro), cwd=tmp_path)
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    # The same reproducer passes against the reference server.
    fixed = harness("replay", str(repro), "--server", reference_command("lt"), cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "passed" in fixed.stdout


def test_attach_without_pid_skips_the_process_properties(tmp_path: Path) -> None:
    with ServerProcess(reference_command("lt")) as server:
        host, port = server.address
        report_path = tmp_path / "report.json"
        result = harness(
            "check",
            "--attach",
            f"{host}:{port}",
            "--report",
            str(report_path),
            "--max-examples",
            "5",
            "--time-budget",
            "10",
            "--quiet",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert server.alive
    report = json.loads(report_path.read_text())
    for name in ("cleanup", "idle-cpu", "bounded-memory", "survives"):
        assert report["properties"][name]["skipped"], name
        assert report["properties"][name]["examples"] == 0
    assert report["properties"]["echo-exact"]["examples"] >= 1


def test_attach_with_pid_observes_the_process(tmp_path: Path) -> None:
    with ServerProcess(reference_command("et")) as server:
        host, port = server.address
        report_path = tmp_path / "report.json"
        result = harness(
            "check",
            "--attach",
            f"{host}:{port}",
            "--pid",
            str(server.pid),
            "--report",
            str(report_path),
            "--max-examples",
            "5",
            "--time-budget",
            "10",
            "--quiet",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(report_path.read_text())
    assert report["properties"]["cleanup"]["skipped"] is None
    assert report["properties"]["cleanup"]["examples"] >= 1


def _cmdline(process: psutil.Process) -> str:
    """A process's command line; empty for one that is gone or a zombie (a restart's old server)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def _start_check(tmp_path: Path) -> tuple[subprocess.Popen[str], psutil.Process]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.cli",
            "check",
            "--time-budget",
            "120",
            "--max-examples",
            "100000",
            "--quiet",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        servers = [p for p in descendants_of(proc.pid) if "server_under_test" in _cmdline(p)]
        if servers:
            time.sleep(0.5)  # let it get into the examples
            return proc, servers[0]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("epoll-harness check did not start a server within 30 s")


def test_ctrl_c_during_a_run_exits_130_and_leaves_no_server(tmp_path: Path) -> None:
    proc, server = _start_check(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert wait_gone([server]) == []


def test_a_harness_killed_outright_takes_its_server_with_it(tmp_path: Path) -> None:
    proc, server = _start_check(tmp_path)
    proc.kill()
    proc.communicate(timeout=30)
    assert wait_gone([server]) == []
