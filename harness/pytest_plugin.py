"""The pytest plugin (entry point ``pytest11``): options, the header line, fixtures. Only glue.

    pytest --server-cmd './my_server --port {port}' --pyargs harness.suite

runs the same property suite as ``epoll-harness check`` (one implementation,
two entry points). Each xdist worker starts its own server once and reuses it
across tests and Hypothesis examples; the :class:`~harness.run.checker.Checker`
checks the cleanup baseline after every example and restarts the server after
a crash. Run state lives in ``config.stash``, not in globals.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.drive.process import ServerCommand, ServerProcess, reference_command
from harness.model.errors import HarnessError, UsageError
from harness.model.limits import Limits
from harness.options import BY_NAME, add_pytest_options, limits_from
from harness.run.checker import Checker

limits_key = pytest.StashKey[Limits]()
command_key = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("epoll-harness", "epoll-harness: the server under test and its deadlines")
    add_pytest_options(group.addoption)


def pytest_configure(config: pytest.Config) -> None:
    command = config.getoption(BY_NAME["server"].pytest_dest) or reference_command("lt")
    try:
        ServerCommand(command)
        limits = limits_from(lambda option: config.getoption(option.pytest_dest))
    except UsageError as exc:
        raise pytest.UsageError(f"epoll-harness: {exc}") from exc
    config.stash[command_key] = command
    config.stash[limits_key] = limits


def pytest_report_header(config: pytest.Config) -> str:
    return f"epoll-harness: server command: {config.stash[command_key]}"


@pytest.fixture(scope="session")
def harness_limits(pytestconfig: pytest.Config) -> Limits:
    """The deadlines and bounds given on the command line."""
    return pytestconfig.stash[limits_key]


@pytest.fixture(scope="session")
def server_command(pytestconfig: pytest.Config) -> str:
    """The server command template under test (``--server-cmd``)."""
    return pytestconfig.stash[command_key]


@pytest.fixture(scope="session")
def harness_checker(server_command: str, harness_limits: Limits) -> Iterator[Checker]:
    """One server per xdist worker, started once and reused; stopped at the end of the session."""
    checker = Checker(ServerProcess(server_command), limits=harness_limits)
    try:
        checker.start()
    except HarnessError as exc:
        pytest.fail(f"epoll-harness could not start the server under test: {exc}", pytrace=False)
    try:
        yield checker
    finally:
        checker.stop()
