"""Checks of gin-bound numbers where they are read.

A value of the wrong type or range (`ScorerTrainer.batch_size = 'abc'`, `= 2.5`, `= 0`) would
otherwise fail far from the config as a TypeError, a ZeroDivisionError or a silently empty run;
these raise a RecError that names the binding instead.
"""
from __future__ import annotations

import math
import numbers

from retrieval.core.errors import RecError


def integer(binding: str, value, minimum: int = 1) -> int:
    """`value` as an int >= minimum; a bool, float or string is refused (2.5 is not a batch size)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise RecError(f"{binding} = {value!r} must be an integer >= {minimum}; fix it in the gin config")
    if value < minimum:
        raise RecError(f"{binding} = {value!r} must be >= {minimum}; fix it in the gin config")
    return int(value)


def positive_number(binding: str, value) -> float:
    """`value` as a finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RecError(f"{binding} = {value!r} must be a number > 0; fix it in the gin config")
    if not (value > 0 and math.isfinite(value)):
        raise RecError(f"{binding} = {value!r} must be > 0; fix it in the gin config")
    return float(value)
