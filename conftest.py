"""This repository's own test suite: the plugin (harness/pytest_plugin.py) brings the rest.

The Hypothesis profiles (``ci`` by default, ``dev``, ``fuzz``) come from the
plugin, as for any project that installs epoll-harness. Here the property
suite (tests/test_property_suite.py) runs on the host's loopback, not in the
network lab: a pytest worker that enters the lab stays there for the rest of
the session, and this suite's other tests in that worker expect the host's
network (its buffer sizes, its namespace). ``--harness-netns`` overrides it.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("epoll_harness_netns") is None:
        config.option.epoll_harness_netns = False
