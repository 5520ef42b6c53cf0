"""``epoll-harness matrix``: servers files, real runs against real servers, report.json, JUnit, shards.

The end-to-end test runs a small matrix for real (the reference server and a
mutant with one known bug), as a whole and as two shards, and checks what a CI
would: the exit status, the mismatch it names, report.json's cells, junit.xml
parsed as a CI parses it, and that the merged shards hold the whole run's cells.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.matrix_cli import main
from harness.model.properties import PROPERTIES
from harness.run.matrix import (
    EXPECTABLE,
    Cell,
    MatrixError,
    MatrixReport,
    load_servers,
    parse_shard,
    shard_of,
    verdict_matches,
)

ROOT = Path(__file__).resolve().parent.parent

# What the run checks: properties that short scripts put to the test, the mutant's among them; the
# others' cells are skipped (so a short run's "not exercised" cannot make it flaky).
CHECKED = ("echo-exact", "echo-complete", "cleanup", "survives")
# Short scripts (no floods, no delays) with a fixed seed and count: the same scripts every run, quickly.
OPTIONS = "--budget 60 --max-examples 40 --scripts short --shrink-budget 2 --seed 1 --capture failures"
RUN_ARGS = [*OPTIONS.split(), "--no-scenarios", "--until-expected", "--only", ",".join(CHECKED)]

SERVERS = """\
[[server]]
name = "reference"
command = "{python} -m server_under_test --port {port}"
notes = "correct"

[[server]]
name = "ignores EOF"
command = "{python} -m server_under_test.mutants.ignore_eof --port {port}"
notes = "EOF ignored: the socket is never closed (CLOSE_WAIT)"
expected = { "cleanup" = "fail" }
"""


def matrix(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.matrix_cli", "matrix", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- the servers file ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[[server]\nname = 'x'", "is not valid TOML"),
        ("[[server]]\ncommand = 'x {port}'\n", "has no name"),
        ("[[server]]\nname = 'a'\n", "has no command"),
        (
            "[[server]]\nname = 'a'\ncommand = 'x {port}'\nexpected = { 'echo-exakt' = 'fail' }\n",
            "unknown property 'echo-exakt'",
        ),
        (
            "[[server]]\nname = 'a'\ncommand = 'x {port}'\nexpected = { 'echo-exact' = 'broken' }\n",
            "'broken' is not a verdict",
        ),
        ("[[server]]\nname = 'a'\ncommand = 'x {port}'\nexpect = {}\n", "unknown key 'expect'"),
        ("[[server]]\nname = 'a'\ncommand = 'x {prot}'\n", "uses {prot}"),
        ("[[server]]\nname = 'a'\ncommand = 'x {port}'\ncwd = 'nowhere'\n", "is not a directory"),
        (
            "[[server]]\nname = 'a b'\ncommand = 'x {port}'\n[[server]]\nname = 'a-b'\ncommand = 'y'\n",
            "same name",
        ),
        ("title = 'x'\n", "unknown top-level key 'title'"),
        ("", "lists no server"),
    ],
)
def test_a_bad_servers_file_is_refused_with_what_to_fix(tmp_path: Path, text: str, complaint: str) -> None:
    path = write(tmp_path / "servers.toml", text)
    with pytest.raises(MatrixError) as caught:
        load_servers(path)
    message = str(caught.value)
    assert complaint in message
    assert str(path) in message
    assert "\n" not in message.strip()  # one paragraph


def test_the_command_line_exits_2_on_a_bad_file_and_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path / "servers.toml", "[[server]]\nname = 'a'\ncommand = 'x {port}'\nexpected = {x = 1}\n"
    )
    result = matrix(str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "unknown property 'x'" in result.stderr
    assert "Traceback" not in result.stderr
    for args, complaint in (
        ([str(path), "--shard", "3/2"], "1 <= K <= N"),
        ([str(path), "--budget", "soon"], "expected a duration"),
        ([str(path), str(path)], "give one servers file"),
        (["merge", str(tmp_path / "nothing")], "does not exist"),
        (["merge", str(tmp_path), "--budget", "5"], "--budget goes with a run"),
        (["merge", str(path)], "not a directory with a matrix report"),
    ):
        try:  # in this process: the same parser, without an interpreter's start-up per case
            status = main(["matrix", *args])
        except SystemExit as exc:
            status = exc.code
        err = capsys.readouterr().err
        assert status == 2, (args, err)
        assert complaint in err, (args, err)
        assert "Traceback" not in err


def test_paths_are_relative_to_the_file_and_python_is_the_harness_interpreter(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    path = write(
        tmp_path / "conf" / "servers.toml",
        "[defaults]\ncwd = '../srv'\nenv = { A = '1' }\nexpected = { cleanup = 'fail', survives = 'fail' }\n"
        "[[server]]\nname = 'one'\ncommand = '{python} echo.py --port {port}'\n"
        "[[server]]\nname = 'two'\ncommand = './two {port}'\ncwd = '.'\nenv = { B = '2' }\n"
        "expected = { 'half-close' = 'non-strict', survives = 'pass' }\n",
    )
    one, two = load_servers(path)
    assert one.cwd == tmp_path / "srv" and two.cwd == tmp_path / "conf"
    assert one.env == {"A": "1"} and two.env == {"A": "1", "B": "2"}
    assert one.command.startswith(sys.executable)
    assert two.expectation("half-close") == "non-strict" and one.expectation("half-close") == "pass"
    assert one.expectation("cleanup") == two.expectation("cleanup") == "fail"  # [defaults]
    assert one.expectation("survives") == "fail" and two.expectation("survives") == "pass"  # its own wins
    racy = write(
        tmp_path / "racy.toml",
        "[[server]]\nname = 'r'\ncommand = 'x {port}'\nexpected = { survives = ['fail', 'pass'] }\n",
    )
    assert load_servers(racy)[0].expectation("survives") == "pass or fail"
    assert f"-C {tmp_path / 'conf'} A=1 B=2 ./two {{port}}" in two.template()


def test_a_shard_is_every_nth_server_and_the_shards_cover_the_file() -> None:
    specs = list(range(7))
    slices = [shard_of(specs, (k, 3)) for k in (1, 2, 3)]  # type: ignore[arg-type]
    assert slices == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(x for s in slices for x in s) == specs
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "1", "a/b"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_what_matches_an_expectation() -> None:
    assert verdict_matches("fail", "fail") and verdict_matches("pass", "pass")
    assert not verdict_matches("fail", "pass") and not verdict_matches("pass", "fail")
    assert not verdict_matches("not exercised", "pass") and not verdict_matches("non-strict", "pass")
    assert verdict_matches("skipped", "fail")  # not checked in this run: not judged
    assert verdict_matches("unconfirmed", "pass") and verdict_matches("unconfirmed", "fail")
    assert not verdict_matches("error", "pass") and "error" not in EXPECTABLE
    assert verdict_matches("fail", "pass or fail") and verdict_matches("pass", "pass or fail")
    assert not verdict_matches("non-strict", "pass or fail")
    cell = Cell("srv", "half-close", "pass", "fail", examples=12)
    assert cell.mismatch() == (
        "srv × half-close: expected fail, got pass: "
        "not seen in 12 scripts (fixed, or not found within the budget)"
    )


# -- a real matrix ---------------------------------------------------------------------------------------


def junit_counts(path: Path) -> tuple[ET.Element, dict[str, int]]:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    cases = root.findall("./testsuite/testcase")
    counted = {
        "tests": len(cases),
        "failures": sum(1 for c in cases if c.find("failure") is not None),
        "errors": sum(1 for c in cases if c.find("error") is not None),
        "skipped": sum(1 for c in cases if c.find("skipped") is not None),
    }
    for key, value in counted.items():
        assert int(root.get(key, "-1")) == value, (key, root.attrib)
    for suite in root.findall("testsuite"):
        suite_cases = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(suite_cases)
        assert int(suite.get("failures", "-1")) == sum(
            1 for c in suite_cases if c.find("failure") is not None
        )
    return root, counted


def check_report(out: Path) -> MatrixReport:
    data = json.loads((out / "report.json").read_text())
    assert data["format"] == "epoll-harness-matrix/1"
    assert list(data["properties"]) == list(PROPERTIES)
    assert data["summary"]["cells"] == len(data["servers"]) * len(PROPERTIES)
    for server in data["servers"]:
        assert [c["property_name"] for c in server["cells"]] == list(PROPERTIES)
        assert (out / server["log"]).is_file()
        for cell in server["cells"]:
            assert cell["matches"] == verdict_matches(cell["verdict"], cell["expected"])
            for key in ("reproducer", "pcap", "reproducer_page"):
                if cell[key]:
                    assert not Path(cell[key]).is_absolute(), cell[key]
                    assert (out / cell[key]).is_file(), cell[key]
    return MatrixReport.load(out / "report.json")


def test_a_matrix_run_its_shards_and_their_merge(tmp_path: Path) -> None:
    servers = write(tmp_path / "servers.toml", SERVERS)

    # The whole matrix: every verdict as expected, exit 0.
    whole = matrix(str(servers), "--out", "whole", "--jobs", "2", *RUN_ARGS, cwd=tmp_path)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "22 of 22 cells as expected" in whole.stdout
    report = check_report(tmp_path / "whole")
    verdicts = {(c.server, c.property_name): c for c in report.cells}
    for prop in PROPERTIES:
        want = "pass" if prop in CHECKED else "skipped"
        assert verdicts["reference", prop].verdict == want, verdicts["reference", prop]
    bug = verdicts["ignores EOF", "cleanup"]
    assert bug.verdict == "fail" and bug.expected == "fail" and bug.matches
    assert bug.confirmed is not None and int(bug.confirmed.split("/")[0]) > 0
    assert bug.seconds_to_first is not None and bug.seconds_to_first > 0
    assert bug.reproducer and bug.reproducer.startswith("servers/ignores-EOF/artifacts/repro-")
    assert bug.pcap and bug.pcap.endswith(".pcap")
    assert bug.reproducer_page and (tmp_path / "whole" / bug.reproducer_page).is_file()
    assert (tmp_path / "whole" / "index.html").is_file()

    root, counts = junit_counts(tmp_path / "whole" / "junit.xml")
    assert counts == {
        "tests": 22,
        "failures": 0,
        "errors": 0,
        "skipped": 2 * (len(PROPERTIES) - len(CHECKED)),
    }
    assert {s.get("name") for s in root.findall("testsuite")} == {"reference", "ignores EOF"}
    case = root.find("./testsuite[@name='ignores EOF']/testcase[@name='cleanup']")
    assert case is not None and case.get("classname") == "matrix.ignores-EOF"
    note = case.findtext("system-out") or ""
    assert "verdict: fail (expected: fail)" in note and "known finding" in note

    # Two shards, with one expectation changed: the shard that runs that server fails and names the cell.
    changed = write(
        tmp_path / "changed.toml",
        SERVERS.replace('notes = "correct"', 'notes = "correct"\nexpected = { "echo-exact" = "fail" }'),
    )
    command = [sys.executable, "-m", "harness.matrix_cli", "matrix", str(changed), "--jobs", "1", *RUN_ARGS]
    shards = [  # at once, as two machines of a CI job matrix would
        subprocess.Popen(
            [*command, "--shard", f"{k}/2", "--out", f"part{k}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for k in (1, 2)
    ]
    outputs = [shard.communicate(timeout=300) for shard in shards]
    first, second = ((shard.returncode, out) for shard, (out, _) in zip(shards, outputs, strict=True))
    mismatch = "MISMATCH reference × echo-exact: expected fail, got pass"
    assert first[0] == 1 and mismatch in first[1], outputs[0]
    assert second[0] == 0, outputs[1]
    assert [s.name for s in check_report(tmp_path / "part1").servers] == ["reference"]
    assert [s.name for s in check_report(tmp_path / "part2").servers] == ["ignores EOF"]

    merged = matrix("merge", "part1", "part2", "--out", "merged", cwd=tmp_path)
    assert merged.returncode == 1 and mismatch in merged.stdout, merged.stdout + merged.stderr
    merged_report = check_report(tmp_path / "merged")
    assert [s.name for s in merged_report.servers] == ["reference", "ignores EOF"]
    assert merged_report.shards == ["1/2", "2/2"]
    assert {(c.server, c.property_name): c.verdict for c in merged_report.cells} == {
        key: cell.verdict for key, cell in verdicts.items()
    }
    _, counts = junit_counts(tmp_path / "merged" / "junit.xml")
    assert counts["failures"] == 1 and counts["tests"] == 22
    merged_bug = next(
        c for c in merged_report.cells if c.server == "ignores EOF" and c.property_name == "cleanup"
    )
    assert merged_bug.reproducer and (tmp_path / "merged" / merged_bug.reproducer).is_file()

    # The same shards judged against the original expectations: every cell matches again.
    rejudged = matrix("merge", "part1", "part2", "--out", "rejudged", "--servers", str(servers), cwd=tmp_path)
    assert rejudged.returncode == 0, rejudged.stdout + rejudged.stderr

    # A missing shard is bad input, named.
    partial = matrix("merge", "part1", "--out", "partial", cwd=tmp_path)
    assert partial.returncode == 2 and "missing shards: 2/2" in partial.stderr, partial.stderr


def test_a_server_that_cannot_start_is_an_error_row_with_its_last_words(tmp_path: Path) -> None:
    servers = write(
        tmp_path / "servers.toml",
        "[[server]]\nname = 'broken'\ncommand = \"sh -c 'echo cannot bind >&2; exit 3' {port}\"\n",
    )
    result = matrix(str(servers), "--out", "out", "--budget", "5", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ERROR broken: the server could not be checked (check exit status 2)" in result.stdout
    assert "0 of 11 cells as expected, 11 differ" in result.stdout
    report = check_report(tmp_path / "out")
    (server,) = report.servers
    assert server.error and "exited with code 3" in server.error
    assert server.last_output and "cannot bind" in server.last_output
    assert {c.verdict for c in server.cells} == {"error"}
    _, counts = junit_counts(tmp_path / "out" / "junit.xml")
    assert counts == {"tests": len(PROPERTIES), "failures": 0, "errors": len(PROPERTIES), "skipped": 0}
    assert "cannot bind" in (tmp_path / "out" / "index.html").read_text()
