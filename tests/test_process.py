"""Process control against servers that misbehave: real subprocesses, real signals."""

from __future__ import annotations

import shlex
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.drive.process import ServerCommand, ServerProcess, reference_command
from harness.model.errors import ServerDiedError, ServerStartError, UsageError

PROGRAM = Path(__file__).parent / "programs" / "misbehaving.py"


def misbehaving(kind: str, with_port: bool = False) -> str:
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(PROGRAM))} {kind}"
    return command + (" --port {port}" if with_port else "")


def echo_once(address: tuple[str, int], message: bytes = b"ping") -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(message)
        got = b""
        while len(got) < len(message):
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        return got


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [
            p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        time.sleep(0.02)
    return alive


def test_the_reference_server_starts_announces_its_port_and_stops_cleanly() -> None:
    server = ServerProcess(reference_command("lt"))
    with server:
        assert server.port is not None and server.port > 0
        assert echo_once(server.address) == b"ping"
        pid = server.pid
    assert server.popen is not None and server.popen.returncode == 0
    assert wait_gone([pid]) == []


def test_a_port_template_gets_a_port_and_readiness_from_the_socket_table() -> None:
    command = f"{shlex.quote(sys.executable)} -m server_under_test --port {{port}}"
    with ServerProcess(command) as server:
        assert 20000 <= server.address[1] < 65536
        assert echo_once(server.address) == b"ping"


def test_a_server_that_never_gets_ready_is_reported_and_stopped() -> None:
    server = ServerProcess(misbehaving("never-ready"), ready_timeout=1.0)
    with pytest.raises(ServerStartError, match=r"has not printed a 'LISTENING host:port' line after 1\.0 s"):
        server.start()
    assert server.popen is not None
    assert wait_gone([server.popen.pid]) == []


def test_a_server_that_never_listens_on_its_port_is_reported() -> None:
    server = ServerProcess(misbehaving("never-ready", with_port=True), ready_timeout=1.0)
    with pytest.raises(ServerStartError, match=r"is not listening on 127\.0\.0\.1:\d+ after 1\.0 s"):
        server.start()


def test_a_server_that_exits_at_once_is_reported_with_its_code_and_last_words() -> None:
    server = ServerProcess(misbehaving("exits-at-once"))
    with pytest.raises(ServerStartError) as info:
        server.start()
    message = str(info.value)
    assert "exited with code 3 before it was ready" in message
    assert "fatal: cannot open /etc/echo.conf" in message
    assert "misbehaving.py exits-at-once" in message


def test_a_missing_program_is_a_start_error_naming_it() -> None:
    with pytest.raises(ServerStartError, match=r"/no/such/server.*No such file or directory"):
        ServerProcess("/no/such/server --port {port}").start()


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("", "empty"),
        ("./server --port {prot}", r"uses \{prot\}"),
        ("./server 'unclosed", "cannot split"),
        ("./server {port", "cannot read"),
    ],
)
def test_bad_templates_are_usage_errors(template: str, complaint: str) -> None:
    with pytest.raises(UsageError, match=complaint):
        ServerCommand(template)


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    server = ServerProcess(misbehaving("ignores-sigterm"), stop_grace=0.5)
    server.start()
    pid = server.pid
    assert echo_once(server.address) == b"ping"
    started = time.monotonic()
    server.stop()
    assert server.ignored_sigterm
    assert time.monotonic() - started >= 0.5
    assert wait_gone([pid]) == []


def test_a_server_that_floods_stdout_never_blocks_and_its_tail_is_kept() -> None:
    with ServerProcess(misbehaving("floods-stdout")) as server:
        deadline = time.monotonic() + 10
        while server.output.total < 8 * 1024 * 1024 and time.monotonic() < deadline:
            assert echo_once(server.address) == b"ping"
        # Megabytes went through a 64 KiB pipe: it was drained all along.
        assert server.output.total >= 8 * 1024 * 1024
        assert echo_once(server.address) == b"ping"
        assert len("".join(server.output.lines())) <= 16 * 1024


def test_forked_children_that_ignore_sigterm_are_stopped_with_the_server() -> None:
    server = ServerProcess(misbehaving("forking"), stop_grace=0.5)
    server.start()
    held = socket.create_connection(server.address, timeout=10)
    held.sendall(b"hold")
    assert held.recv(4) == b"hold"
    children = [c.pid for c in psutil.Process(server.pid).children()]
    assert children, "the forking server should have a child for the held connection"
    server.stop()
    held.close()
    assert wait_gone([server.popen.pid, *children]) == []  # type: ignore[union-attr]


def test_ensure_alive_reports_a_crash_with_its_signal() -> None:
    server = ServerProcess(reference_command("lt"))
    with server:
        psutil.Process(server.pid).kill()
        server.popen.wait(10)  # type: ignore[union-attr]
        with pytest.raises(ServerDiedError, match="was killed by SIGKILL"):
            server.ensure_alive()


def test_a_low_rlimit_nofile_is_applied_to_the_server() -> None:
    with ServerProcess(reference_command("lt"), nofile=40) as server:
        soft, _ = psutil.Process(server.pid).rlimit(psutil.RLIMIT_NOFILE)
        assert soft == 40


def test_restart_gives_a_new_working_process() -> None:
    with ServerProcess(reference_command("et")) as server:
        first = server.pid
        server.restart()
        assert server.pid != first
        assert server.starts == 2
        assert echo_once(server.address) == b"ping"
