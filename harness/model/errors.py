"""One root exception, and a type per thing a user has to act on differently.

* :class:`UsageError`: the call was wrong (an argument, a command template);
  fix the call. The CLI exits 2.
* :class:`ServerStartError`: the server under test could not be started or
  never became ready; the message names the command, the exit status and the
  last lines it printed. The CLI exits 2.
* :class:`ServerDiedError`: the server was running and is not any more.
* :class:`ScriptError`: a client script (a reproducer file, say) is malformed.
* :class:`PropertyViolation`: the server broke a property. It is also an
  ``AssertionError``, so pytest and Hypothesis treat it as a test failure; each
  property has its own subclass so Hypothesis keeps distinct bugs apart.
"""

from __future__ import annotations


class HarnessError(Exception):
    """Root of every error epoll-harness raises on purpose."""


class UsageError(HarnessError):
    """The harness was called wrongly; the message says how to call it."""


class ScriptError(HarnessError, ValueError):
    """A client script is malformed."""


class ServerStartError(HarnessError):
    """The server under test could not be started, or never became ready."""


class ServerDiedError(HarnessError):
    """The server under test exited while the harness was using it."""


class ExampleAbandoned(HarnessError):
    """A script was stopped between two steps because the run's time was up: no verdict on it."""


class PropertyViolation(HarnessError, AssertionError):
    """A property did not hold. ``property_name`` is the stable name used in reports."""

    property_name: str = "unknown"

    def __init__(self, message: str, *, step: int | None = None, conn: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.step = step
        self.conn = conn

    def __str__(self) -> str:
        return f"[{self.property_name}] {self.message}"


_VIOLATION_TYPES: dict[str, type[PropertyViolation]] = {}


def violation_type(property_name: str) -> type[PropertyViolation]:
    """The PropertyViolation subclass for one property (made once, then reused).

    Hypothesis tells bugs apart by exception type and origin; one type per
    property makes a run report each violated property with its own minimal
    example instead of shrinking them all into one.
    """
    cls = _VIOLATION_TYPES.get(property_name)
    if cls is None:
        class_name = "".join(part.capitalize() for part in property_name.split("-")) + "Violation"
        cls = type(class_name, (PropertyViolation,), {"property_name": property_name})
        _VIOLATION_TYPES[property_name] = cls
    return cls
