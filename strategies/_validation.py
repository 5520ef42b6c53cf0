"""Argument checks in Hypothesis's style: fail at once, name the argument and its value.

Hypothesis's own checks live in ``hypothesis.internal.validation``, which is
not public API; these few mirror its messages so that a wrong call to one of
our strategies reads like a wrong call to one of Hypothesis's. A strategy
validates in the function body, before it builds the (lazy) strategy object,
so the error comes from the call that is wrong rather than from the first
draw, possibly far away inside a test.
"""

from __future__ import annotations

from collections.abc import Collection

from hypothesis.errors import InvalidArgument


def check_integer(
    value: object, name: str, *, min_value: int | None = None, max_value: int | None = None
) -> int:
    """``value`` as an int within [min_value, max_value]; bools are not integers here."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"Expected int but got {name}={value!r} (type={type(value).__name__})")
    if min_value is not None and value < min_value:
        raise InvalidArgument(f"Invalid {name}={value!r}: must be at least {min_value}")
    if max_value is not None and value > max_value:
        raise InvalidArgument(f"Invalid {name}={value!r}: must be at most {max_value}")
    return value


def check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgument(f"Expected bool but got {name}={value!r} (type={type(value).__name__})")
    return value


def check_interval(lower: int, upper: int, lower_name: str, upper_name: str) -> None:
    if upper < lower:
        raise InvalidArgument(f"Cannot have {upper_name}={upper!r} < {lower_name}={lower!r}")


def check_choices(values: object, name: str, allowed: Collection[object]) -> None:
    """``values`` is a non-empty collection of members of ``allowed``."""
    if isinstance(values, str | bytes) or not isinstance(values, Collection):
        raise InvalidArgument(
            f"Expected a collection but got {name}={values!r} (type={type(values).__name__})"
        )
    if not values:
        raise InvalidArgument(f"Invalid {name}={values!r}: must not be empty")
    for value in values:
        if value not in allowed:
            raise InvalidArgument(
                f"Invalid {name}={values!r}: {value!r} is not one of {sorted(map(str, allowed))}"
            )
