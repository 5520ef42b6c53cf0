"""``--attach`` against real, already running servers: the pid must own the listening socket,
and reproducers recorded against an attached server replay against it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import psutil

from harness.drive.process import ServerProcess, reference_command
from tests.test_exit_status import ECHO, harness, write_reproducer

SEED = f"{shlex.quote(sys.executable)} -m server_under_test.seed_server --port {{port}}"
QUICK = ["--max-examples", "3", "--time-budget", "10", "--scripts", "short", "--quiet"]


def test_a_pid_that_does_not_own_the_listening_socket_is_refused(tmp_path: Path) -> None:
    with ServerProcess(reference_command("lt")) as server:
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            host, port = server.address
            result = harness(
                "check", "--attach", f"{host}:{port}", "--pid", str(sleeper.pid), *QUICK, cwd=tmp_path
            )
        finally:
            sleeper.kill()
            sleeper.wait()
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--pid {sleeper.pid} (sleep) does not own the socket listening on port {port}" in result.stderr
    assert "neither it nor its children listen on a TCP port" in result.stderr


def test_the_pid_of_a_parent_of_the_listener_is_accepted(tmp_path: Path) -> None:
    """A wrapper (a shell, a supervisor) whose child listens: the tree owns the socket."""
    inner = reference_command("lt").replace("{host}", "127.0.0.1")
    with ServerProcess(f"sh -c {shlex.quote(inner + '; true')}") as wrapper:
        host, port = wrapper.address
        shell = psutil.Process(wrapper.pid)
        assert shell.name() == "sh" and shell.children()  # the listener is the shell's child
        report = tmp_path / "report.json"
        result = harness(
            "check", "--attach", f"{host}:{port}", "--pid", str(wrapper.pid), "--report", str(report), *QUICK,
            cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    cleanup = json.loads(report.read_text())["properties"]["cleanup"]
    assert cleanup["skipped"] is None and cleanup["examples"] >= 1


def test_a_violation_of_an_attached_server_replays_against_it(tmp_path: Path) -> None:
    with ServerProcess(SEED) as server:
        host, port = server.address
        result = harness(
            "check", "--attach", f"{host}:{port}", "--pid", str(server.pid), "--only", "cleanup",
            "--shrink-budget", "2", "--seed", "2", *QUICK,
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        match = re.search(r"replay with: (epoll-harness replay \S+ --attach \S+ --pid \d+)", result.stdout)
        assert match, result.stdout
        assert f"--attach {host}:{port} --pid {server.pid}" in match.group(1)
        replay_args = shlex.split(match.group(1))[1:]
        replayed = harness(*replay_args, cwd=tmp_path)
        assert server.alive  # an attached server is not the harness's to stop
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert "FAILED: cleanup" in replayed.stdout


def test_replay_attach_passes_against_a_correct_server(tmp_path: Path) -> None:
    path = write_reproducer(tmp_path, server_command=None)
    assert json.loads(path.read_text())["script"] == ECHO.to_json()
    with ServerProcess(reference_command("et")) as server:
        host, port = server.address
        result = harness(
            "replay", str(path), "--attach", f"{host}:{port}", "--pid", str(server.pid), cwd=tmp_path
        )
        assert server.alive
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"passed: echo-exact held this time against the server at {host}:{port}" in result.stdout
