"""README's pytest and CI sections, run as written in someone else's repository.

A wheel of the harness is built from this checkout and installed into a fresh
virtual environment (``pip install epoll-harness`` in the workflow; the only
line not run word for word, since the wheel is what is being tested). A new
project holds a C echo server built by ``make`` (tests/programs/ci_project/)
and the files README shows: the ``[tool.epoll-harness]`` table, the test
file, or the ``conftest.py`` instead of the table. In it the workflow's
``make`` and ``pytest`` lines run: the correct server passes; the same server
built with its bug (``CFLAGS=-DECHO_BUG``, the one thing the test adds, through
the environment) fails with the short report and leaves reproducers that
replay; README's ``--hypothesis-profile dev`` line works with the
``conftest.py`` that names the server instead of the table.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROJECT = Path(__file__).parent / "programs" / "ci_project"
SOURCES = ("pyproject.toml", "README.md", "harness", "strategies", "server_under_test")


def readme_blocks() -> tuple[dict[str, str], list[str]]:
    """The code blocks of README's pytest and CI sections that name a file, and its shell lines."""
    text = (ROOT / "README.md").read_text()
    part = text[text.index("## As a pytest plugin") : text.index("## The servers in")]
    files: dict[str, str] = {}
    shell: list[str] = []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", part, re.DOTALL):
        first = body.splitlines()[0]
        named = re.fullmatch(r"# (\S+)", first)
        if named:
            files[named.group(1)] = body
        elif lang == "sh":
            shell += body.splitlines()
    return files, shell


def workflow_steps(workflow: str) -> list[str]:
    return re.findall(r"^\s*- run: (.+)$", workflow, re.MULTILINE)


def build_and_install(tmp_path: Path) -> Path:
    """A wheel of this checkout (built from a copy: the build writes into its source) in a new venv."""
    source = tmp_path / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    dist = tmp_path / "dist"
    built = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)], tmp_path
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("epoll_harness-*.whl")
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    installed = run([str(environment / "bin" / "pip"), "install", "-q", str(wheel)], tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return environment


def run(
    argv: list[str] | str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        shell=isinstance(argv, str),
        executable="/bin/bash" if isinstance(argv, str) else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result


def user_environment(environment: Path, **extra: str) -> dict[str, str]:
    """A CI job's environment: the venv first on PATH, nothing of this test run's pytest."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTEST_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env.update(
        PATH=f"{environment / 'bin'}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(environment), COLUMNS="200"
    )
    env.update(extra)
    return env


def new_project(where: Path, files: dict[str, str]) -> Path:
    where.mkdir()
    for name in ("echo_server.c", "Makefile"):
        shutil.copy2(PROJECT / name, where / name)
    for name, body in files.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(body)
    return where


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_readme_ci_section_runs_in_a_separate_project_from_a_wheel(tmp_path: Path) -> None:
    files, shell = readme_blocks()
    test_file, table, conftest = "tests/test_echo_server.py", "pyproject.toml", "conftest.py"
    assert {test_file, table, conftest, ".github/workflows/echo-server.yml"} <= set(files)
    make, install, pytest_line = workflow_steps(files[".github/workflows/echo-server.yml"])
    assert (make, install) == ("make", "pip install epoll-harness")  # the wheel stands in for the install
    (dev_line,) = [line for line in shell if "--hypothesis-profile dev" in line]
    environment = build_and_install(tmp_path)

    # A correct server passes, and the header says what it tests and where.
    correct = new_project(tmp_path / "correct", {test_file: files[test_file], table: files[table]})
    env = user_environment(environment)
    assert run(make, correct, env).returncode == 0
    result = run(pytest_line, correct, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout, result.stdout
    assert "epoll-harness: server command: ./build/echo_server --port {port}" in result.stdout
    assert f"epoll-harness: settings from {correct / 'pyproject.toml'}" in result.stdout
    assert "epoll-harness: network: a private namespace" in result.stdout  # root here: the lab

    # The same server with its bug fails in a few lines and leaves reproducers that replay.
    buggy = new_project(tmp_path / "buggy", {test_file: files[test_file], table: files[table]})
    env = user_environment(environment, CFLAGS="-O2 -DECHO_BUG", PYTEST_ADDOPTS="--harness-shrink-budget 5")
    assert run(make, buggy, env).returncode == 0
    result = run(pytest_line, buggy, env)
    assert result.returncode == 1, result.stdout + result.stderr
    failures = result.stdout.split("= FAILURES =")[1].split("short test summary")[0]
    assert "epoll-harness: a property was violated" in failures or "properties were violated" in failures
    assert "  shrunk script (" in failures and "  replay with: epoll-harness replay " in failures
    assert "ExceptionGroup" not in failures and "Traceback" not in failures
    artifacts = buggy / "epoll-harness-artifacts"
    reproducers = sorted(artifacts.glob("repro-*.json"))
    assert reproducers, list(buggy.iterdir())
    report = json.loads((artifacts / "report.json").read_text())
    violated = {name for name, stats in report["properties"].items() if stats["violations"]}
    assert violated & {"cleanup", "half-close"}, violated
    repro = next(p for p in reproducers if p.name.startswith(("repro-cleanup-", "repro-half-close-")))
    assert json.loads(repro.read_text())["server_command"] == "./build/echo_server --port {port}"
    replayed = run(["epoll-harness", "replay", str(repro.relative_to(buggy))], buggy, env)
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert "FAILED: " in replayed.stdout

    # The conftest.py instead of the table names the same server (the buggy one: the reference would
    # pass), and README's --hypothesis-profile dev line runs (an unregistered profile is an INTERNALERROR).
    with_conftest = new_project(
        tmp_path / "conftest", {test_file: files[test_file], conftest: files[conftest]}
    )
    assert run(make, with_conftest, env).returncode == 0
    result = run(dev_line, with_conftest, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hypothesis profile 'dev'" in result.stdout or "INTERNALERROR" not in result.stdout + result.stderr
    recorded = {
        json.loads(p.read_text())["server_command"]
        for p in (with_conftest / "epoll-harness-artifacts").glob("repro-*.json")
    }
    assert recorded == {"./build/echo_server --port {port}"}, recorded
