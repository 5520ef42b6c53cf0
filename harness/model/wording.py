"""Words for messages: counts with their nouns, sizes with their units."""

from __future__ import annotations

MIB = 1024 * 1024


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 step``, ``2 steps``, ``0 connections``."""
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


def mib(size: float) -> str:
    """A byte count in MiB, one decimal: ``48.0 MiB``."""
    return f"{size / MIB:.1f} MiB"
