"""The property suite of ``epoll-harness check``, run by pytest through the plugin.

The tests are the ones users run with ``pytest --pyargs harness.suite``;
imported here, they run against ``--server-cmd`` (default: the reference
server) as part of the project's own suite.
"""

from harness.suite import (
    test_a_half_closing_client_gets_its_echo_then_eof,
    test_accept_survives_fd_exhaustion,
    test_every_property_holds,
    test_memory_stays_bounded_for_a_client_that_does_not_read,
)

__all__ = [
    "test_a_half_closing_client_gets_its_echo_then_eof",
    "test_accept_survives_fd_exhaustion",
    "test_every_property_holds",
    "test_memory_stays_bounded_for_a_client_that_does_not_read",
]
