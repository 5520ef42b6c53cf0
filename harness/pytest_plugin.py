"""The pytest plugin (entry point ``pytest11``): options, the header line, fixtures. Only glue.

    pytest --server-cmd './my_server --port {port}' --pyargs harness.suite

runs the same property suite as ``epoll-harness check`` (one implementation,
two entry points). Each xdist worker starts its own server once and reuses it
across tests and Hypothesis examples; the :class:`~harness.checker.Checker`
checks the cleanup baseline after every example and restarts the server after
a crash. Run state lives in ``config.stash``, not in globals.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.checker import Checker
from harness.errors import HarnessError, UsageError
from harness.limits import DEFAULT_LIMITS, MIB, Limits
from harness.process import ServerCommand, ServerProcess, reference_command

limits_key = pytest.StashKey[Limits]()
command_key = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("epoll-harness", "epoll-harness: the server under test and its deadlines")
    group.addoption(
        "--server-cmd",
        dest="epoll_harness_server_cmd",
        default=None,
        metavar="CMD",
        help="server command template with {port} (or printing 'LISTENING host:port'); "
        "default: the bundled reference server",
    )
    group.addoption(
        "--harness-stall-timeout",
        dest="epoll_harness_stall_timeout",
        type=float,
        default=DEFAULT_LIMITS.stall_timeout,
        metavar="S",
        help=f"seconds without progress that count as a stall (default {DEFAULT_LIMITS.stall_timeout})",
    )
    group.addoption(
        "--harness-cleanup-timeout",
        dest="epoll_harness_cleanup_timeout",
        type=float,
        default=DEFAULT_LIMITS.cleanup_timeout,
        metavar="S",
        help=f"seconds for the server's fds to return to baseline (default {DEFAULT_LIMITS.cleanup_timeout})",
    )
    group.addoption(
        "--harness-memory-bound",
        dest="epoll_harness_memory_bound",
        type=float,
        default=DEFAULT_LIMITS.memory_bound / MIB,
        metavar="MIB",
        help=f"RSS growth allowed per script, MiB (default {DEFAULT_LIMITS.memory_bound // MIB})",
    )


def pytest_configure(config: pytest.Config) -> None:
    command = config.getoption("epoll_harness_server_cmd") or reference_command("lt")
    try:
        ServerCommand(command)
        limits = DEFAULT_LIMITS.with_(
            stall_timeout=config.getoption("epoll_harness_stall_timeout"),
            cleanup_timeout=config.getoption("epoll_harness_cleanup_timeout"),
            memory_bound=int(config.getoption("epoll_harness_memory_bound") * MIB),
        )
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
