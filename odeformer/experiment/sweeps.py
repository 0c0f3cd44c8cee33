"""Expanding a config's sweep into runs, validating every run, run ids and shards.

``config.sweep`` is a nested ConfigDict whose leaves are tuples of values; its dotted
paths (``solver.steps``) name the config keys being swept. The runs are the product of
the axes, except that the keys grouped in one tuple of ``config.sweep_zip`` vary
together (zipped). Keys that cannot affect a run are reset to their base values
(tolerances and max_steps of a fixed-step solve, the step count of an adaptive one,
``model.layers`` of the ode family, ``pieces``/``basis`` of time modes that do not use
them, ``model.width`` when a budget sets it), and the discrete family's solver keys say
what it does (Euler, ``steps = t1 = model.layers``), so runs that differ only in such
keys are one run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from typing import Any

import jax
import ml_collections

from odeformer._checks import is_int, is_number
from odeformer._integrate import ADJOINTS
from odeformer._regularisers import PENALTIES
from odeformer._solvers import ADAPTIVE_SOLVERS, SOLVERS
from odeformer._time_dependence import TIME_MODES
from odeformer.categorical.embeddings import EMBEDDINGS
from odeformer.experiment.evaluators.invariance import parse_solvers
from odeformer.experiment.models import FAMILIES, READOUTS
from odeformer.experiment.studies import STUDIES
from odeformer.experiment.tasks import TABULAR_TASKS, TASKS
from odeformer.experiment.training import check_microbatch

# Keys that do not define a run: its label, the runner it uses, the sweep itself, and
# settings read only by the analysis of the results (notebooks).
_META_KEYS = ("name", "experiment", "sweep", "sweep_zip", "analysis")


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to leaf values."""
    out = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _get(config, path):
    for part in path.split("."):
        config = config[part]
    return config


def _set(config, path, value):
    *parents, leaf = path.split(".")
    for part in parents:
        config = config[part]
    config[leaf] = value


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of a sweep: its id, full config and the swept values."""

    run_id: str
    config: ml_collections.ConfigDict
    swept: dict[str, Any]


def run_id(config: ml_collections.ConfigDict) -> str:
    """Stable 12-hex-digit hash of everything that defines a run (not name/sweep)."""
    payload = {k: v for k, v in flatten(config).items() if k.split(".")[0] not in _META_KEYS}
    blob = json.dumps(payload, sort_keys=True, default=str)
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
        if path.split(".")[0] in _META_KEYS or path not in base:
            known = ", ".join(k for k in base if k.split(".")[0] not in _META_KEYS)
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


def _normalise(run: ml_collections.ConfigDict, base: ml_collections.ConfigDict) -> None:
    """Resets keys that cannot affect this run to their base values."""
    solver, model = run.solver, run.model

    def reset(section, *keys):
        for key in keys:
            run[section][key] = base[section][key]

    if model.param_budget > 0:
        reset("model", "width")  # resolved from the budget
    if "evaluate" in run and not run.evaluate.stability:
        reset("evaluate", "epsilon", "power_iterations", "examples")
    if run.task.name not in TABULAR_TASKS:
        reset("model", "embedding", "embed_dim", "compression")
    elif model.embedding not in ("hashed", "qr"):
        reset("model", "compression")
    if model.family == "discrete":
        reset("solver", *solver.keys())
        reset("model", "time", "pieces", "basis")
        # What the discrete family does: Euler, one unit step per layer.
        solver.name, solver.adaptive, solver.adjoint = "euler", False, "checkpoint"
        solver.steps, solver.t1 = model.layers, float(model.layers)
        return
    reset("model", "layers")
    if model.time != "piecewise":
        reset("model", "pieces")
    if model.time != "smooth":
        reset("model", "basis")
    if solver.adaptive:
        reset("solver", "steps")
    else:
        reset("solver", "rtol", "atol", "max_steps")


def _choices() -> dict[str, tuple[str, ...]]:
    return {"task.name": tuple(sorted(TASKS)), "model.family": FAMILIES, "model.time": TIME_MODES,
            "model.readout": READOUTS, "model.embedding": EMBEDDINGS, "solver.name": SOLVERS,
            "solver.adjoint": ADJOINTS}


# Keys that must be > 0 (floats) or >= 1 (ints); >= 0 for the second group.
_POSITIVE = ("solver.steps", "solver.rtol", "solver.atol", "solver.t1", "solver.max_steps",
             "model.width", "model.heads", "model.mlp_ratio", "model.layers", "model.pieces",
             "model.basis", "model.compression", "mesh.data", "mesh.model", "train.num_steps",
             "train.batch_size", "train.eval_batch_size",
             "train.learning_rate", "train.grad_clip", "train.log_every", "task.num_train",
             "task.num_test", "task.vocab_size", "task.seq_len")
_NON_NEGATIVE = ("model.param_budget", "model.embed_dim", "train.weight_decay", "train.warmup_steps",
                 "train.checkpoint_every")


def validate_run(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid key of one run's config."""
    for key, allowed in _choices().items():
        if _get(c, key) not in allowed:
            raise ValueError(f"{key}={_get(c, key)!r} is not one of {', '.join(allowed)}")
    for key in _POSITIVE:
        if key.startswith("task.") and (c.task.name in TABULAR_TASKS or key.split(".")[1] not in c.task):
            continue  # tabular tasks have keys of their own; their makers check them
        if not _get(c, key) > 0:
            raise ValueError(f"{key}={_get(c, key)!r} must be > 0")
    for key in _NON_NEGATIVE:
        if not _get(c, key) >= 0:
            raise ValueError(f"{key}={_get(c, key)!r} must be >= 0")
    if c.mesh.data * c.mesh.model > jax.device_count():
        raise ValueError(f"mesh.data={c.mesh.data} x mesh.model={c.mesh.model} needs more devices than "
                         f"the {jax.device_count()} available")
    if jax.process_count() > 1 and c.mesh.data * c.mesh.model != jax.device_count():
        raise ValueError(f"mesh.data={c.mesh.data} x mesh.model={c.mesh.model} must use all "
                         f"{jax.device_count()} devices of the {jax.process_count()} processes")
    for key in ("train.batch_size", "train.eval_batch_size"):
        if _get(c, key) % c.mesh.data:
            raise ValueError(f"{key}={_get(c, key)} must be a multiple of mesh.data={c.mesh.data}")
    if "microbatch" not in c.train:
        raise ValueError("train.microbatch is missing: every train section needs it (examples per "
                         "gradient chunk, 0 = the whole batch at once; see configs/quick.py)")
    check_microbatch(c.train.microbatch, c.train.batch_size, c.mesh.data)
    if c.solver.adaptive and c.solver.name not in ADAPTIVE_SOLVERS:
        raise ValueError(f"solver.name={c.solver.name!r} has no error estimate: "
                         f"solver.adaptive=True needs one of {', '.join(ADAPTIVE_SOLVERS)}")
    if c.model.param_budget == 0 and c.model.width % c.model.heads:
        raise ValueError(f"model.width={c.model.width} must be a multiple of model.heads={c.model.heads}")
    if c.train.warmup_steps >= c.train.num_steps:
        raise ValueError(f"train.warmup_steps={c.train.warmup_steps} must be < "
                         f"train.num_steps={c.train.num_steps}")
    if c.model.family == "ode" and c.model.time in ("piecewise", "smooth") and c.solver.t1 != 1.0:
        raise ValueError(f"model.time={c.model.time!r} defines the weights on [0, 1]: solver.t1="
                         f"{c.solver.t1} would integrate past them; use solver.t1=1.0")
    _validate_penalties(c)
    _validate_evaluate(c)


def _validate_penalties(c: ml_collections.ConfigDict) -> None:
    """The regulariser weights ``train.kinetic`` and ``train.jacobian`` (odeformer._regularisers)."""
    for name in PENALTIES:
        key = f"train.{name}"
        if name not in c.train:
            raise ValueError(f"{key} is missing: every train section needs {', '.join(PENALTIES)} "
                             "(regulariser weights, 0.0 = off; see configs/quick.py)")
        weight = c.train[name]
        if not is_number(weight) or weight < 0:
            raise ValueError(f"{key}={weight!r} must be a finite number >= 0 (0 turns it off)")
        if weight > 0 and c.model.family != "ode":
            raise ValueError(f"{key}={weight!r} applies to model.family='ode' only (the "
                             f"{c.model.family} family is a fixed stack of layers whose cost a "
                             f"regulariser cannot change); use {key}=0.0 for its runs")


_EVALUATE_KEYS = ("solvers", "stability", "epsilon", "power_iterations", "examples")


def _validate_evaluate(c: ml_collections.ConfigDict) -> None:
    """The optional ``evaluate`` section: measurements after training (odeformer.experiment.evaluators.invariance,
    odeformer.experiment.evaluators.stability); a config without it evaluates nothing more."""
    if "evaluate" not in c:
        return
    for key in _EVALUATE_KEYS:
        if key not in c.evaluate:
            raise ValueError(f"evaluate.{key} is missing: an evaluate section needs "
                             f"{', '.join(_EVALUATE_KEYS)} (see configs/quick.py)")
    parse_solvers(c.evaluate.solvers)
    e = c.evaluate
    if not isinstance(e.stability, bool):
        raise ValueError(f"evaluate.stability={e.stability!r} must be True or False")
    if not is_number(e.epsilon) or e.epsilon <= 0:
        raise ValueError(f"evaluate.epsilon={e.epsilon!r} must be a finite number > 0 (a perturbation's "
                         "norm relative to the input's)")
    for key, low in (("power_iterations", 2), ("examples", 1)):
        value = e[key]
        if not is_int(value) or value < low:
            raise ValueError(f"evaluate.{key}={value!r} must be an integer >= {low}")


def experiments() -> tuple[str, ...]:
    """Allowed values of ``config.experiment``: training, or a numerical study."""
    return ("train", *sorted(STUDIES))


def expand(config: ml_collections.ConfigDict) -> list[Run]:
    """All distinct runs of the sweep, validated, in grid order.

    ``config.experiment`` says what a run is: ``"train"`` (normalised and checked by
    :func:`validate_run`) or a study of ``odeformer.experiment.studies.STUDIES`` (checked by its own
    ``validate``).
    """
    if config.experiment not in experiments():
        raise ValueError(f"experiment={config.experiment!r} is not one of {', '.join(experiments())}")
    train = config.experiment == "train"
    dims = _axes(config)
    runs, seen = [], set()
    for combo in itertools.product(*[values for _, values in dims]):
        cfg = ml_collections.ConfigDict(config.to_dict())
        swept = {}
        for (keys, _), values in zip(dims, combo, strict=True):
            for key, value in zip(keys, values, strict=True):
                _set(cfg, key, value)
                swept[key] = value
        if train:
            _normalise(cfg, config)
            validate_run(cfg)
        else:
            STUDIES[config.experiment].validate(cfg)
        swept = {k: _get(cfg, k) for k in swept}
        cfg.lock()
        rid = run_id(cfg)
        if rid not in seen:
            seen.add(rid)
            runs.append(Run(rid, cfg, swept))
    return runs


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
