"""Checks of values that the configuration and the specs derived from it share."""

from __future__ import annotations

import numbers

from common.errors import ConfigError


def check_type(name: str, kind: str, value) -> None:
    """Raise ConfigError unless `value` has the type the field `name` declares.

    bool is an int in Python, so True is refused where a number belongs, and 0 / 1 where
    a boolean does; an int is accepted for a float field (JSON writes 1.0 as 1 at times).
    """
    is_bool = isinstance(value, bool)
    if kind == "bool":
        ok, text = is_bool, "must be true or false"
    elif kind == "int":
        ok, text = isinstance(value, numbers.Integral) and not is_bool, "must be an integer"
    elif kind == "float":
        ok, text = isinstance(value, numbers.Real) and not is_bool, "must be a number"
    elif kind == "str":
        ok, text = isinstance(value, str), "must be a string"
    else:  # a field of another type: nothing generic to check
        return
    if not ok:
        raise ConfigError(f"{name}={value!r}: {text}")
