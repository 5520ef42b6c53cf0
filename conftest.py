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


# The longest tests first (stable otherwise): xdist hands tests out one at a time in collection
# order (--maxschedchunk 1 in pyproject.toml), so a long test never starts last and keeps the other
# worker idle until it ends.
LONG_FIRST = ("test_separate_project.py", "test_campaign.py", "test_mutation_selftest.py", "test_shapes.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)
