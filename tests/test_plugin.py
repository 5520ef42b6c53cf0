"""The pytest plugin, through pytester: options, header, fixtures, failures with property names."""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SEED = f"{shlex.quote(sys.executable)} -m server_under_test.seed_server --port {{port}}"

QUICK_PROFILE = """
from hypothesis import HealthCheck, Phase, settings
# No shrinking: against a broken server every failing example costs seconds,
# and these tests are about how a failure is reported, not how small it gets.
settings.register_profile(
    "quick", max_examples=8, deadline=None, database=None,
    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate],
)
settings.load_profile("quick")
"""

USER_TEST = """
from hypothesis import given
from harness.run.verdict import enforce
from strategies import short_scripts

@given(script=short_scripts())
def test_my_server(harness_checker, script):
    enforce(harness_checker.check(script))
"""


def test_the_header_names_the_server_command(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(
        "--server-cmd", "./my_server --port {port}", "-p", "no:cacheprovider"
    )
    result.stdout.fnmatch_lines(["epoll-harness: server command: ./my_server --port {port}"])
    assert result.ret == 0


def test_options_are_in_their_own_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(
        ["epoll-harness: the server under test and its deadlines:", "*--server-cmd=CMD*"]
    )


def test_a_bad_template_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--server-cmd", "./server --port {prot}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*epoll-harness: *uses {prot}*"])


def test_a_users_test_passes_against_the_reference_server(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(QUICK_PROFILE)
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_a_users_test_fails_against_the_seed_server_with_a_short_report(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(QUICK_PROFILE)
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess(
        "--server-cmd",
        SEED,
        "--harness-shrink-budget",
        "5",
        "--harness-capture",
        "never",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(failed=1)
    # The EOF bug: connections are never closed, so cleanup (or half-close) is what breaks.
    result.stdout.re_match_lines([r"epoll-harness: (a property was|\d properties were) violated .*"])
    result.stdout.re_match_lines([r"(cleanup|half-close|survives|idle-cpu): .*"])
    result.stdout.fnmatch_lines(
        ["  shrunk script (*", "    1. connect 0*", "  reproducer: epoll-harness-artifacts/repro-*.json"]
    )
    result.stdout.fnmatch_lines(["  replay with: epoll-harness replay epoll-harness-artifacts/repro-*.json"])
    result.stdout.re_match_lines(
        [r"FAILED test_user.py::test_my_server - \[(cleanup|half-close|survives|idle-cpu)\].*"]
    )
    failures = result.stdout.str().split("= FAILURES =")[1].split("short test summary")[0]
    assert "ExceptionGroup" not in failures and "Falsifying example" not in failures
    assert "Traceback" not in failures
    assert len(failures.splitlines()) < 40, failures
    artifacts = pytester.path / "epoll-harness-artifacts"
    assert sorted(p.name for p in artifacts.glob("repro-*.json")), list(artifacts.iterdir())
    report = json.loads((artifacts / "report.json").read_text())
    assert not report["ok"] and report["server_command"] == SEED
    result.stdout.fnmatch_lines(["*= epoll-harness =*", "*: reproducer epoll-harness-artifacts/repro-*.json"])


def test_a_server_that_cannot_start_fails_the_test_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(QUICK_PROFILE)
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("--server-cmd", "/no/such/server --port {port}")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*could not start the server under test*No such file or directory*"])


PROFILE_PROBE = """
from hypothesis import settings

def test_profile():
    current = settings.default
    print("PROFILE", settings.get_current_profile_name(), current.max_examples, current.deadline)
"""


@pytest.mark.parametrize(
    ("args", "conftest", "expected"),
    [
        ((), None, "PROFILE ci 60 None"),
        (("--hypothesis-profile", "dev"), None, "PROFILE dev 15 None"),
        (("--hypothesis-profile", "fuzz"), None, "PROFILE fuzz 5000 None"),
        (("--harness-max-examples", "7"), None, "PROFILE ci-max-examples-7 7 None"),
        (
            ("--hypothesis-profile", "dev", "--harness-max-examples", "3"),
            None,
            "PROFILE dev-max-examples-3 3 None",
        ),
        # A profile the user's conftest loaded is theirs; so is one it registers under our names.
        (
            (),
            'settings.register_profile("mine", max_examples=4)\nsettings.load_profile("mine")',
            "PROFILE mine 4",
        ),
        ((), 'settings.register_profile("ci", max_examples=9)', "PROFILE ci 9"),
    ],
)
def test_the_plugin_brings_its_profiles(
    pytester: pytest.Pytester, args: tuple[str, ...], conftest: str | None, expected: str
) -> None:
    if conftest is not None:
        pytester.makeconftest("from hypothesis import settings\n" + conftest)
    pytester.makepyfile(test_probe=PROFILE_PROBE)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([f"*{expected}*"])


NETWORK_PROBE = """
def test_network(harness_network, harness_checker):
    print("PRIVATE", harness_network.private, harness_network.tcp_wmem)
"""


@pytest.mark.parametrize(("args", "private"), [((), True), (("--no-harness-netns",), False)])
def test_the_lab_is_entered_by_the_fixtures_when_permitted(
    pytester: pytest.Pytester, args: tuple[str, ...], private: bool
) -> None:
    pytester.makepyfile(test_probe=NETWORK_PROBE)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *args)
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([f"*PRIVATE {private} *"])
    header = "*a private namespace*(the lab)*" if private else "*the host's loopback (--no-harness-netns)*"
    result.stdout.fnmatch_lines([f"epoll-harness: network: {header}"])


def test_the_pyproject_table_sets_the_server_and_the_command_line_wins(pytester: pytest.Pytester) -> None:
    (pytester.path / "pyproject.toml").write_text(
        '[tool.epoll-harness]\nserver = "./from_table --port {port}"\nstall-timeout = 2.5\ncwd = "."\n'
    )
    pytester.makepyfile(
        test_probe="def test_limits(harness_limits):\n    print('STALL', harness_limits.stall_timeout)\n"
    )
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(
        [f"epoll-harness: server command: *env -C {pytester.path} ./from_table --port {{port}}"]
    )
    result.stdout.fnmatch_lines(["epoll-harness: settings from *pyproject.toml", "*STALL 2.5"])
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", "--harness-stall-timeout", "3")
    result.stdout.fnmatch_lines(["*STALL 3.0"])


def test_only_and_skip_leave_properties_out_of_the_report(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(QUICK_PROFILE)
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--harness-only", "echo-exact,cleanup,no-crosstalk", "--harness-skip",
        "no-crosstalk", "--harness-report", "report.json",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["ok"] and report["examples"] >= 1
    assert report["properties"]["cleanup"]["examples"] >= 1
    for name in ("no-crosstalk", "survives", "half-close"):
        assert report["properties"][name]["skipped"].startswith("not selected"), name


def test_an_unknown_property_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--harness-skip", "speed")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown property 'speed'*"])


def test_the_time_budget_ends_a_test_that_found_nothing_as_a_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--harness-max-examples",
        "100000",
        "--harness-time-budget",
        "2",
        "--durations=1",
    )
    result.assert_outcomes(passed=1)
    durations = re.findall(r"^(\d+\.\d+)s call ", result.stdout.str(), re.MULTILINE)
    assert durations and float(durations[0]) < 30, result.stdout.str()


def test_a_violation_that_never_replays_is_reported_apart_and_does_not_fail(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    marker = tmp_path / "failed-once"
    program = Path(__file__).parent / "programs" / "exit_status_servers.py"
    command = f"{shlex.quote(sys.executable)} {program} fails-once --port {{port}} --marker {marker}"
    pytester.makeconftest(QUICK_PROFILE)
    pytester.makepyfile(test_user=USER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--server-cmd", command, "-rP")
    assert marker.exists()  # it did fail, once
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*epoll-harness: unconfirmed violations*", "*unconfirmed: 0/3 replays failed*"]
    )
    result.stdout.fnmatch_lines(["*= epoll-harness =*", "* (unconfirmed: 0/3 replays failed): reproducer *"])
