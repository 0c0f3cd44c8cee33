"""Measurements that train nothing (numerical studies), run by the same sweep runner.

A config whose ``experiment`` key names a study here (``configs/convergence.py``:
``experiment = "convergence"``) is expanded into runs like a training sweep
(``config.sweep`` axes, run ids, resume, failures recorded), but each run calls the
study's ``measure(config) -> row`` instead of training. ``experiment = "train"`` is the
training runner (``odeformer.experiment.runner``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections

from odeformer._checks import is_int, is_number


@dataclasses.dataclass(frozen=True)
class Study:
    """A numerical study.

    Attributes:
      validate: raises ``ValueError`` naming the first invalid key of one run's config
        (called for every run before anything is computed or written).
      measure: one run's metrics (a flat dict of numbers and strings), from its config.
      section: the keys of the study's config section (named like the study): key ->
        (default, meaning); the run definition (``odeformer.experiment.config``) reads it.
    """

    validate: Callable[[ml_collections.ConfigDict], None]
    measure: Callable[[ml_collections.ConfigDict], dict[str, Any]]
    section: dict[str, tuple[Any, str]]


STUDIES: dict[str, Study] = {}


def check_section(c: ml_collections.ConfigDict, section: str, keys) -> ml_collections.ConfigDict:
    """The checks every study's ``validate`` starts with: ``seed`` is an int and the
    study's section has exactly ``keys``. Returns the section.

    Raises:
      ValueError: naming the key.
    """
    if not is_int(c.seed):
        raise ValueError(f"seed={c.seed!r} must be an int")
    if section not in c or not isinstance(c[section], ml_collections.ConfigDict):
        raise ValueError(f"the config has no {section} section; a {section} study needs one with "
                         f"keys {', '.join(sorted(keys))}")
    if set(c[section].keys()) != set(keys):
        raise ValueError(f"{section} has keys {sorted(c[section].keys())}; expected exactly {sorted(keys)}")
    return c[section]


def check_numbers(section: str, values: dict[str, Any]) -> None:
    """Each value (or each element of a tuple value) must be a finite int or float, not a
    bool, before any range check compares it.

    Raises:
      ValueError: naming ``<section>.<key>``.
    """
    for key, value in values.items():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if not is_number(item):
                raise ValueError(f"{section}.{key}={value!r} must be a finite number"
                                 f"{' (each element)' if isinstance(value, (tuple, list)) else ''}")


def register_study(name: str, *, validate: Callable[[ml_collections.ConfigDict], None],
                   section: dict[str, tuple[Any, str]]):
    """Decorator adding ``measure`` as the study ``name`` of :data:`STUDIES`, whose config
    section ``name`` holds the keys of ``section`` (key -> (default, meaning))."""
    def add(measure):
        STUDIES[name] = Study(validate, measure, dict(section))
        return measure
    return add


