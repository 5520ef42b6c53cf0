"""epoll-harness: property-based protocol testing for epoll echo servers.

The names a test file needs are importable from here (``from harness import
Checker, enforce``); each is loaded on first use, so that importing a module
of the model layer does not pull in the drivers and runs above it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "Checker": "harness.run.checker",
    "Outcome": "harness.run.checker",
    "enforce": "harness.run.verdict",
    "Script": "harness.model.script",
    "Limits": "harness.model.limits",
    "HarnessError": "harness.model.errors",
    "PropertyViolation": "harness.model.errors",
    "ServerProcess": "harness.drive.process",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
