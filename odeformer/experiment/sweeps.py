"""Expanding a config's sweep into runs: axes, zipped groups, overrides, run ids, shards.

``config.sweep`` is a nested ConfigDict whose leaves are tuples of values; its dotted
paths (``solver.steps``) name the config keys being swept. The runs are the product of
the axes, except that the keys grouped in one tuple of ``config.sweep_zip`` vary
together (zipped). Every run is normalised and validated by the run definition
(``odeformer.experiment.config``), so runs that cannot differ are one run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Iterable
from typing import Any

import ml_collections

from odeformer.experiment import config as run_config
from odeformer.experiment.paths import flatten, get_path, set_path
from odeformer.experiment.studies import STUDIES


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of a sweep: its id, full config, the swept values, and the keys it does
    not read (``odeformer.experiment.config.normalise``)."""

    run_id: str
    config: ml_collections.ConfigDict
    swept: dict[str, Any]
    unread: frozenset[str] = frozenset()


def run_id(config: ml_collections.ConfigDict) -> str:
    """Stable 12-hex-digit hash of everything that defines a run (not name/sweep), leaving out
    keys marked ``added`` while at their defaults (``odeformer.experiment.keys.Key``)."""
    def text(value) -> str:  # as the hash sees it: a tuple and a list alike
        return json.dumps(value, sort_keys=True, default=str)

    added = {path: text(key.default) for keys in (run_config.TOP, run_config.TRAIN, run_config.ANALYSIS)
             for path, key in keys.items() if key.added}
    payload = {k: v for k, v in flatten(config).items() if k.split(".")[0] not in run_config.META_SECTIONS
               and not (k in added and text(v) == added[k])}
    blob = text(payload)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _coerce(path: str, value, base):
    """Checks a swept value against the base value's type (ints allowed for floats)."""
    if isinstance(base, bool) or isinstance(value, bool):
        if type(value) is not type(base):
            raise ValueError(f"sweep.{path} value {value!r} must be {type(base).__name__}, like {path}")
        return value
    if isinstance(base, float) and isinstance(value, int):
        return float(value)
    if not isinstance(value, type(base)):
        raise ValueError(
            f"sweep.{path} value {value!r} has type {type(value).__name__}, but {path} is "
            f"{type(base).__name__}")
    return value


def _axes(config) -> list[tuple[tuple[str, ...], list[tuple]]]:
    """Sweep dimensions: (keys, list of value tuples), zipped keys sharing one."""
    base = flatten(config)
    axes = flatten(config.sweep) if "sweep" in config else {}
    for path, values in axes.items():
        if path.split(".")[0] in run_config.META_SECTIONS or path not in base:
            known = ", ".join(k for k in base if k.split(".")[0] not in run_config.META_SECTIONS)
            raise ValueError(f"sweep.{path} is not a config key; keys are: {known}")
        if not isinstance(values, (tuple, list)) or len(values) == 0:
            raise ValueError(f"sweep.{path}={values!r} must be a non-empty tuple of values")
    groups = [tuple(g) for g in config.get("sweep_zip", ())]
    zipped = [k for g in groups for k in g]
    for key in zipped:
        if key not in axes:
            raise ValueError(f"sweep_zip names {key!r}, which is not a sweep axis")
    if len(zipped) != len(set(zipped)):
        raise ValueError(f"sweep_zip={groups!r} names a key twice")
    dims = []
    for group in groups:
        lengths = {len(axes[k]) for k in group}
        if len(lengths) != 1:
            raise ValueError(f"sweep_zip group {group} has axes of different lengths "
                             f"{[len(axes[k]) for k in group]}")
        columns = [[_coerce(k, v, base[k]) for v in axes[k]] for k in group]
        dims.append((group, list(zip(*columns, strict=True))))
    for key, values in axes.items():
        if key not in zipped:
            dims.append(((key,), [(_coerce(key, v, base[key]),) for v in values]))
    return dims


def expand(config: ml_collections.ConfigDict) -> list[Run]:
    """All distinct runs of the sweep, validated, in grid order.

    ``config.experiment`` says what a run is: ``"train"`` (normalised and checked by
    ``odeformer.experiment.config``) or a study of ``odeformer.experiment.studies.STUDIES``
    (checked by its own ``validate``). Every value of the base config is checked too,
    whether or not a sweep replaces it.

    Raises:
      ValueError: naming the first invalid key or value.
    """
    if config.get("experiment") not in run_config.experiments():
        raise ValueError(f"experiment={config.get('experiment')!r} is not one of "
                         f"{', '.join(run_config.experiments())}")
    train = config.experiment == "train"
    run_config.check_keys(config)
    run_config.check_values(config)
    dims = _axes(config)
    runs, seen = [], set()
    for combo in itertools.product(*[values for _, values in dims]):
        cfg = ml_collections.ConfigDict(config.to_dict())
        swept = {}
        for (keys, _), values in zip(dims, combo, strict=True):
            for key, value in zip(keys, values, strict=True):
                set_path(cfg, key, value)
                swept[key] = value
        unread = set()
        if train:
            unread = run_config.normalise(cfg, config)
            run_config.validate_run(cfg)
        else:
            STUDIES[config.experiment].validate(cfg)
        swept = {k: get_path(cfg, k) for k in swept if _has(cfg, k)}
        cfg.lock()
        rid = run_id(cfg)
        if rid not in seen:
            seen.add(rid)
            runs.append(Run(rid, cfg, swept, frozenset(unread)))
    return runs


def _has(config, path: str) -> bool:
    try:
        get_path(config, path)
    except KeyError:
        return False
    return True


def pin(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> list[str]:
    """Makes each overridden key (a dotted path set on the command line) a single value:
    a sweep axis over it is removed, in place, so the override holds for every run.

    Returns:
      One line per axis replaced, for the summary.
    """
    notes = []
    if "sweep" not in config:
        return notes
    axes = flatten(config.sweep)
    with config.unlocked():
        for path in overrides:
            if path.split(".")[0] in ("sweep", "sweep_zip") or path not in axes:
                continue
            zipped = [group for group in config.get("sweep_zip", ()) if path in group]
            notes.append(f"--config.{path}={get_path(config, path)!r} replaces the sweep axis "
                         f"{path}={tuple(axes[path])!r}" + (
                             f", taken out of the zipped group {tuple(zipped[0])!r} (its other keys "
                             "still vary together)" if zipped else ""))
            _delete(config.sweep, path)
            groups = [tuple(k for k in group if k != path) for group in config.get("sweep_zip", ())]
            config.sweep_zip = tuple(g for g in groups if len(g) > 1)
    return notes


def _delete(section: ml_collections.ConfigDict, path: str) -> None:
    """Deletes a dotted path and the sections it leaves empty."""
    head, _, rest = path.partition(".")
    if rest:
        _delete(section[head], rest)
        if not len(section[head]):
            del section[head]
    else:
        del section[head]


def unread_keys(runs: list[Run], overrides: Iterable[str], axes: Iterable[str] = ()) -> list[str]:
    """One line per overridden key and per sweep axis that no run reads (e.g.
    ``solver.rtol`` when every solve has fixed steps): such a value changes nothing, and
    is never dropped without a word.

    Args:
      runs: the expanded sweep (:func:`expand`).
      overrides: dotted paths set on the command line.
      axes: the swept dotted paths (``flatten(config.sweep)``).
    """
    def unread(path):
        return bool(runs) and all(path in run.unread for run in runs)

    notes = [f"--config.{path} is read by no run of this sweep (each run resets or drops it)"
             for path in overrides if unread(path)]
    notes += [f"sweep axis {path} is read by no run of this sweep (each run resets or drops it): "
              "its values give the same runs" for path in axes if unread(path)]
    return notes


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard={text!r} must look like i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard={text!r} needs 0 <= i < n")
    return index, count


def shard(runs: list[Run], index: int, count: int) -> list[Run]:
    """Every ``count``-th run starting at ``index``."""
    return runs[index::count]
