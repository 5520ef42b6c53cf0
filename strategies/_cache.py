"""Strategy objects built once and reused, for draws inside composites.

Hypothesis caches ``st.integers(a, b)`` by its arguments, but a fresh
``st.sampled_from(...)`` or composite strategy is a new object every call,
and every new object is validated and checked for emptiness on its first
draw: tens of microseconds, paid at every draw of a script in the loop of a
composite. These caches make each distinct strategy once.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from typing import TypeVar

from hypothesis import strategies as st

T = TypeVar("T", bound=Hashable)
T_co = TypeVar("T_co", covariant=True)
V = TypeVar("V")


@functools.lru_cache(maxsize=1024)
def _sampled_from(options: tuple[Hashable, ...]) -> st.SearchStrategy[Hashable]:
    return unwrapped(st.sampled_from(options))


def sampled_from(options: tuple[T, ...]) -> st.SearchStrategy[T]:
    """``st.sampled_from(options)``, one object per distinct tuple."""
    return _sampled_from(options)  # type: ignore[return-value]


@functools.lru_cache(maxsize=4096)
def integers(min_value: int, max_value: int) -> st.SearchStrategy[int]:
    """``st.integers(min_value, max_value)`` through a C-level cache: Hypothesis's own
    cache of strategy objects builds a key from the arguments at every call."""
    return unwrapped(st.integers(min_value, max_value))


def draw_one_of(draw: st.DrawFn, options: Sequence[V]) -> V:
    """One of ``options`` (shrinking towards the first); no choice at all when there is only one.

    An index, as ``st.sampled_from`` draws it, but from a strategy cached by
    length alone: caching by the options themselves would hash every one of
    them (enum members hash in Python) at every draw.
    """
    if len(options) == 1:
        return options[0]
    return options[draw(integers(0, len(options) - 1))]


def unwrapped(strategy: st.SearchStrategy[T_co]) -> st.SearchStrategy[T_co]:
    """The strategy a lazy one stands for, or ``strategy`` itself.

    Public strategy functions (and composites) return a lazy wrapper that every
    draw unwraps again through a thread-local cache; the wrapped strategy
    draws the same values and labels without that step.
    """
    inner = getattr(strategy, "wrapped_strategy", strategy)
    return inner if isinstance(inner, st.SearchStrategy) else strategy
