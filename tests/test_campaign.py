"""Fuzzing campaigns (``epoll-harness fuzz``), run as a user runs them: real workers, servers, Redis.

* against the seed's server, two workers find its bugs once each, with
  confirmed reproducers whose regression tests fail against the seed's server
  and pass against the reference server; the reference server gives nothing;
* a second campaign on the same corpus replays the findings first;
* two campaigns share one real redis-server;
* Ctrl-C leaves no process and no temporary file, and writes the summary;
* bad input is a clear error with exit 2.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis.database import DirectoryBasedExampleDatabase

from harness.drive.process import reference_command
from harness.model.finding import message_template, script_shape
from harness.model.script import Close, Connect, Payload, ReadToEof, Script, Send, ShutdownWrite
from harness.run.corpus import FAILING_KEY, CountingDatabase, forget, save_failure, saved_failures
from tests.test_exit_status import harness

pytestmark = pytest.mark.slow

PY = shlex.quote(sys.executable)
SEED_SERVER = f"{PY} -m server_under_test.seed_server --port {{port}}"
# The seed's bugs as properties (its docstring): any finding outside these would be a false alarm.
SEED_PROPERTIES = {"half-close", "cleanup", "idle-cpu", "survives", "accept-robust", "echo-complete"}


def fuzz(*args: str, cwd: Path, timeout: float = 300) -> Any:
    return harness("fuzz", *args, cwd=cwd, timeout=timeout)


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())  # type: ignore[no-any-return]


# -- pure and small ---------------------------------------------------------------------------------


def test_a_message_template_hides_what_varies_between_runs() -> None:
    one = "client port 36676: 3 of 42 burst connections got no echo; byte 1150 differs: 0d0af82dd5c5593b..."
    two = "client port 41000: 7 of 42 burst connections got no echo; byte 9 differs: 77aa001122334455..."
    assert message_template(one) == message_template(two)
    assert message_template("the server never closed") != message_template("the server closed with RST")


def test_a_scripts_shape_is_its_operations() -> None:
    script = Script((Connect(0), Send(0, Payload.of(b"x")), ShutdownWrite(0), ReadToEof(0), Close(0)))
    assert script_shape(script) == "connect send shutdown_wr read_eof close"


def test_the_corpus_keeps_scripts_once_each_and_leaves_what_it_cannot_read(tmp_path: Path) -> None:
    corpus = CountingDatabase(DirectoryBasedExampleDatabase(str(tmp_path)), str(tmp_path))
    script = Script((Connect(0), Send(0, Payload.of(b"x")), ShutdownWrite(0), ReadToEof(0), Close(0)))
    save_failure(corpus, "half-close", script)
    save_failure(corpus, "half-close", script)  # found again by another worker: kept once
    corpus.save(FAILING_KEY, b"{not json")
    saved, unreadable = saved_failures(corpus)
    assert [(s.property_name, s.script) for s in saved] == [("half-close", script)]
    assert unreadable == 1 and corpus.replayed == 2
    forget(corpus, saved[0])
    assert saved_failures(corpus) == ([], 1)  # the unreadable value is not this harness's to delete


# -- campaigns -----------------------------------------------------------------------------------


def test_a_campaign_against_the_seed_server_finds_each_bug_once(tmp_path: Path) -> None:
    out, db = tmp_path / "out", tmp_path / "corpus"
    result = fuzz(
        "--server", SEED_SERVER, "--workers", "2", "--duration", "25s", "--shrink-budget", "12",
        "--confirm", "2", "--db", str(db), "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    got = summary(out)
    found = [f["property_name"] for f in got["findings"]]
    assert len(found) == len(set(found)), f"a bug reported twice: {found}"
    assert {"half-close", "cleanup"} <= set(found) | {a for f in got["findings"] for a in f["also"]}, got
    assert set(found) <= SEED_PROPERTIES, got
    for finding in got["findings"]:
        assert (out / finding["reproducer"]).exists()
        assert finding["counts"] is (finding["confirmed"] is None or finding["confirmed"] > 0)
    assert got["examples"] > 0 and len(got["per_worker"]) == 2
    assert (out / "summary.png").stat().st_size > 10_000
    assert "regression tests: pytest" in result.stdout
    # The regression tests: they fail against the seed's server and pass against the reference.
    failing = _pytest(out, SEED_SERVER)
    assert failing.returncode == 1, failing.stdout
    assert "half-close" in failing.stdout and "failed" in failing.stdout
    passing = _pytest(out, reference_command("lt"))
    assert passing.returncode == 0, passing.stdout
    # Resume: a second campaign on the same corpus replays the saved failures first.
    again = fuzz(
        "--server", SEED_SERVER, "--workers", "1", "--duration", "20s", "--shrink-budget", "4",
        "--confirm", "1", "--stop-on-first", "--db", str(db), "--out", str(tmp_path / "again"),
        cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 1, again.stdout + again.stderr
    resumed = summary(tmp_path / "again")
    assert resumed["corpus_replayed"] >= 1, resumed
    assert resumed["ended"] == "--stop-on-first: a finding"
    assert min(f["seconds_to_find"] for f in resumed["findings"]) < 15, resumed["findings"]


def _pytest(out: Path, server: str) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "pytest", str(out), "-q", "-p", "no:cacheprovider", "--server-cmd", server],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_campaign_against_the_reference_server_finds_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # A server command with a path relative to the user's directory, as README's './my_server'.
    serve = "import runpy\nrunpy.run_module('server_under_test', run_name='__main__')\n"
    (tmp_path / "serve.py").write_text(serve)
    result = fuzz(
        "--server", f"{sys.executable} serve.py --host {{host}} --port 0 --mode lt", "--workers", "2",
        "--duration", "12s", "--db", str(tmp_path / "corpus"), "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    got = summary(out)
    assert got["findings"] == [] and got["examples"] >= 6, got
    assert "no confirmed finding" in result.stdout
    # A log without a tty gets plain progress lines.
    assert any(line.startswith("fuzz ") and "examples" in line for line in result.stderr.splitlines())
    assert not (out / "test_findings.py").exists()
    assert not (tmp_path / ".hypothesis").exists()  # the workers' own files stay in their folders


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A real redis-server on a free loopback port, stopped at the end."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


def test_two_campaigns_share_one_redis_corpus(tmp_path: Path, redis_url: str) -> None:
    import redis

    # Two campaigns, one after the other, each its own process and output folder, one Redis:
    # the second replays what the first saved. (The first searches for a while: stopped on its
    # first finding, the fd-exhaustion scenario's, it would have searched for no script at all.)
    for name, stop in (("first", ()), ("second", ("--stop-on-first",))):
        result = fuzz(
            "--server", SEED_SERVER, "--workers", "1", "--duration", "8s", "--shrink-budget", "4",
            "--confirm", "1", *stop, "--db", redis_url, "--out", str(tmp_path / name),
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        if name == "first":
            assert redis.Redis.from_url(redis_url).keys("epoll-harness:*"), "nothing saved into Redis"
    got = summary(tmp_path / "second")
    assert got["corpus_replayed"] >= 1, got
    assert got["database"] == redis_url


def test_ctrl_c_stops_every_worker_and_server_and_writes_the_summary(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    out, scratch = tmp_path / "out", tmp_path / "tmp"
    scratch.mkdir()
    campaign = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "fuzz", "--server", f"env CAMPAIGN_MARK={mark} "
         + reference_command("lt"), "--workers", "2", "--duration", "10m", "--db", str(tmp_path / "db"),
         "--out", str(out)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(_marked(mark)) < 2:
            time.sleep(0.5)
        assert len(_marked(mark)) >= 2, "both workers' servers should be running"
        time.sleep(2)
        campaign.send_signal(signal.SIGINT)
        stdout, stderr = campaign.communicate(timeout=120)
    finally:
        if campaign.poll() is None:
            campaign.kill()
    assert campaign.returncode == 130, stdout + stderr
    assert "(interrupted)" in stdout
    got = summary(out)
    assert got["ended"] == "interrupted"
    time.sleep(1)
    assert _marked(mark) == [], "a server outlived the campaign"
    workers = [p for p in psutil.process_iter(["cmdline"]) if str(out) in " ".join(p.info["cmdline"] or [])]
    assert workers == [], "a worker outlived the campaign"
    assert list(scratch.iterdir()) == [], "temporary files left behind"


def _marked(mark: str) -> list[int]:
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("CAMPAIGN_MARK") == mark:
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--db", "redis://127.0.0.1:9/0"], "cannot reach Redis"),
        (["--db", "FILE"], "not a directory"),
        (["--duration", "soon"], "expected a duration"),
        (["--workers", "0"], "positive"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "FILE").write_text("not a folder")
    args = [str(tmp_path / "FILE") if a == "FILE" else a for a in args]
    result = fuzz("--server", reference_command("lt"), "--duration", "5s", *args, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_a_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    result = fuzz(
        "--server", "/no/such/server --port {port}", "--workers", "2", "--duration", "10s",
        "--out", str(tmp_path / "out"), "--db", str(tmp_path / "db"), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no worker could run" in result.stderr and "No such file or directory" in result.stderr
