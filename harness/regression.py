"""Regression tests from saved reproducers, for pytest: each finding fails while its bug is there.

A campaign writes ``OUT/test_findings.py``, which is all it takes::

    from harness.regression import finding_tests

    test_finding = finding_tests(__file__)

``finding_tests`` returns a test parametrized over the ``repro-*.json`` files
of the ``findings/`` folder beside that file (one test each, named after the
file). Each replays its reproducer up to :data:`REPLAYS` times against the
server named by ``--server-cmd`` (or ``[tool.epoll-harness]``), or else the
command it was found with, and fails, with the message and the replay command,
as soon as the property is violated again. A fixed bug passes. A non-strict
finding (legal but impolite behaviour) is skipped: it is no regression.
Copy the folder into a repository and ``pytest`` keeps every bug fixed.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.drive.netns import NetworkSetup
from harness.run.report import NON_STRICT, Reproducer
from harness.run.runner import replay

REPLAYS = 3  # a bug that shows in one replay of three is still caught; a fixed one passes all three
TEST_FILE = '''"""Regression tests written by `epoll-harness fuzz`: one per reproducer in findings/.

    pytest {out} --server-cmd 'CMD'

Each replays its finding against the server (--server-cmd, or [tool.epoll-harness] in
pyproject.toml; without either, the command it was found with) and fails while the bug is
there. Commit this folder into your repository to keep the bugs fixed.
"""

from harness.regression import finding_tests

test_finding = finding_tests(__file__)
'''


def finding_tests(test_file: str, folder: str = "findings") -> Callable[..., None]:
    """A test over every ``repro-*.json`` in ``folder`` beside ``test_file`` (see the module docstring)."""
    paths = sorted((Path(test_file).resolve().parent / folder).glob("repro-*.json"))

    @pytest.mark.parametrize("reproducer", paths, ids=[path.stem.removeprefix("repro-") for path in paths])
    def test_finding(
        reproducer: Path, harness_regression_command: str | None, harness_network: NetworkSetup
    ) -> None:
        repro = Reproducer.load(reproducer)
        if repro.level == NON_STRICT:
            pytest.skip(f"{repro.property_name}: a non-strict finding (legal behaviour), not a regression")
        command = harness_regression_command or repro.server_command
        if command is None:
            pytest.skip("recorded against an attached server: give --server-cmd to replay it")
        for _ in range(REPLAYS):
            again = [v for v in replay(repro, command) if v.property_name == repro.property_name]
            if again:
                pytest.fail(
                    f"{repro.property_name}: {again[0].describe()}\n"
                    f"  reproducer: {reproducer}\n"
                    f"  replay it:  epoll-harness replay {shlex.quote(str(reproducer))} "
                    f"--server {shlex.quote(command)}",
                    pytrace=False,
                )

    return test_finding


def write_regression_tests(out: Path) -> Path:
    """``OUT/test_findings.py`` (see the module docstring); written once, never overwritten."""
    path = out / "test_findings.py"
    if not path.exists():
        path.write_text(TEST_FILE.format(out=out))
    return path
