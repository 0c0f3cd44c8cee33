"""configs/quick.py:tiny for runner tests (seconds per run)."""

import ml_collections

from configs import quick
from odeformer.experiment.paths import set_path


def tiny_config(**overrides) -> ml_collections.ConfigDict:
    """configs/quick.py:tiny over solver.steps (1, 2); ``overrides`` maps dotted keys to values."""
    c = ml_collections.ConfigDict(quick.get_config("tiny").to_dict())
    c.name = "quick"
    c.sweep = ml_collections.ConfigDict({"solver": {"steps": (1, 2)}})
    return with_overrides(c, overrides)


def with_overrides(c: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
    """Sets dotted keys of ``c`` and locks it."""
    for key, value in overrides.items():
        set_path(c, key, value)
    c.lock()
    return c
