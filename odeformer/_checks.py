"""Type predicates for config values, shared by every validator (sweeps, tasks, studies).

Python's ``bool`` is an ``int``; a config value ``True`` must never pass as a count or a
weight, so both predicates refuse it.
"""

from __future__ import annotations

import math

import numpy as np


def is_int(value) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float (Python or NumPy), not a bool."""
    return (isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
            and math.isfinite(value))
