"""What a run is: every config key with its default, meaning and kind; validation;
normalisation; and what a compiled train step depends on.

This module and its key tables (``odeformer.experiment.keys``) are the one definition of a
run. ``configs/base.py`` returns :func:`defaults`; every experiment config starts from it.
The sweep expansion (``odeformer.experiment.sweeps``), the runner, ``docs/config_reference.md``
(:func:`reference`) and the tests read this module instead of restating it.

Each key has a kind (:data:`KINDS`, explained in ``KIND_DOCS`` and the reference page):
whether a new value compiles a new train step (structural), is fed to the same compiled step
(traced), only switches a term on (switch), or is read after training, by the Python loop,
by the analysis or by a study.

A config for ``experiment = "train"`` has the top-level keys and the sections ``task``,
``model``, ``solver``, ``train``, ``mesh``, ``evaluate`` and ``analysis``; a study's config
has the top-level keys, ``analysis`` and the study's own section. The ``task`` section holds
the keys of one or several tasks (:func:`task_section`); each run keeps only the keys its
task reads.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import ml_collections

from odeformer._checks import is_int, is_number
from odeformer._regularisers import PENALTIES
from odeformer._solvers import ADAPTIVE_SOLVERS
from odeformer.experiment.evaluators.invariance import parse_solvers
from odeformer.experiment.keys import (  # noqa: F401  (KINDS, TOP, Key: re-exported)
    ANALYSIS,
    KIND_DOCS,
    KINDS,
    TOP,
    TRAIN,
    Key,
    _tasks,
    experiments,
)
from odeformer.experiment.models import FAMILIES, TABULAR_FAMILIES
from odeformer.experiment.paths import flatten, get_path
from odeformer.experiment.studies import STUDIES
from odeformer.experiment.tasks import BAG_KEYS, LANGUAGE_TASKS, TABULAR_TASKS, TASK_KEYS, TASKS, has_bags
from odeformer.experiment.training import check_microbatch
from odeformer.language.models import FAMILIES as LANGUAGE_FAMILIES


def task_keys(name: str) -> dict[str, Key]:
    """The ``task`` keys task ``name`` reads, with their defaults (``task.<key>`` paths)."""
    if name not in TASKS:
        raise ValueError(f"task.name={name!r} is not one of {', '.join(_tasks())}")
    keys = {"task.name": TRAIN["task.name"], "task.seed": TRAIN["task.seed"]}
    for key, (default, doc, minimum) in TASK_KEYS[name].items():
        keys[f"task.{key}"] = Key(default, doc, "structural",
                                  minimum=None if minimum is None else (minimum, False))
    return keys


def _study_keys(name: str) -> dict[str, Key]:
    return {f"{name}.{k}": Key(default, doc, "study") for k, (default, doc) in STUDIES[name].section.items()}


def schema(experiment: str = "train") -> dict[str, Key]:
    """Every key of a config for ``experiment``, by dotted path; the ``task`` section as
    the union over all registered tasks (a key several tasks read: the default of the first
    task in alphabetical order)."""
    if experiment not in experiments():
        raise ValueError(f"experiment={experiment!r} is not one of {', '.join(experiments())}")
    keys = {**TOP, **ANALYSIS}
    if experiment != "train":
        return {**keys, **_study_keys(experiment)}
    keys.update({k: v for k, v in TRAIN.items() if not k.startswith("task.")})
    for name in _tasks():
        for path, key in task_keys(name).items():
            keys.setdefault(path, key)
    return keys


def _section(keys: dict[str, Key]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, key in keys.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = key.default
    return out


def task_section(*names: str, **values) -> ml_collections.ConfigDict:
    """A ``task`` section holding the keys of tasks ``names`` (the first is ``task.name``)
    at their defaults, then ``values``; a sweep over ``task.name`` needs every swept task's
    keys in the section."""
    keys: dict[str, Key] = {}
    for name in names:
        for path, key in task_keys(name).items():
            keys.setdefault(path, key)
    section = ml_collections.ConfigDict(_section(keys)["task"])
    section.name = names[0]
    for key, value in values.items():
        if key not in section:
            raise ValueError(f"task.{key} is not a key of the tasks {', '.join(names)}; they read "
                             f"{', '.join(sorted(section.keys()))}")
        section[key] = value
    return section


def defaults(experiment: str = "train") -> ml_collections.ConfigDict:
    """The base config of ``experiment``: every key at its default (unlocked).

    A training config's ``task`` section holds the default task's keys; use
    :func:`task_section` for another task.
    """
    keys = dict(schema(experiment))
    if experiment == "train":
        keys = {k: v for k, v in keys.items() if not k.startswith("task.")}
        keys.update(task_keys(TRAIN["task.name"].default))
    config = ml_collections.ConfigDict(_section(keys))
    config.experiment = experiment
    return config


META_SECTIONS = tuple(k for k, key in TOP.items() if key.kind == "meta") + ("analysis",)


def check_keys(config: ml_collections.ConfigDict) -> None:
    """Every key of ``config`` is in the schema of its experiment and every schema key is
    present (the task section: every key of the task named, and only keys some task reads).

    Raises:
      ValueError: naming the first unknown or missing key.
    """
    experiment = config.get("experiment")
    known = schema(experiment)
    present = {path for path in flatten(config) if path.split(".")[0] not in ("sweep", "sweep_zip")}
    present |= {p for p in ("sweep", "sweep_zip") if p in config}
    for path in sorted(present - set(known)):
        section = path.split(".")[0]
        allowed = sorted(k for k in known if k.split(".")[0] == section) or sorted(
            {k.split(".")[0] for k in known})
        raise ValueError(f"{path} is not a config key of experiment={experiment!r}; known here: "
                         f"{', '.join(allowed)}")
    needed = set(schema_of_run(config))
    for path in sorted(needed - present):
        if path.startswith("task."):
            raise ValueError(f"{path} is missing: task.name={config.task.name!r} reads it; a sweep over "
                             "task.name needs every swept task's keys in the task section "
                             "(odeformer.experiment.config.task_section(name, ...))")
        raise ValueError(f"{path} is missing from the config: start from configs/base.py "
                         "(odeformer.experiment.config.defaults), which holds every key")


def schema_of_run(config: ml_collections.ConfigDict) -> dict[str, Key]:
    """The keys one run of ``config`` reads: the schema with the task section narrowed to
    the keys of ``config.task.name``."""
    keys = schema(config.experiment)
    if config.experiment != "train":
        return keys
    keys = {k: v for k, v in keys.items() if not k.startswith("task.")}
    return {**keys, **task_keys(config.task.name)}


def check_value(path: str, value, key: Key) -> None:
    """Raises ValueError unless ``value`` is allowed for ``key``: one of its choices, or of
    its default's type (bool, integer, finite number) and above its lower bound."""
    if key.choices is not None:
        allowed = key.choices()
        if value not in allowed:
            raise ValueError(f"{path}={value!r} is not one of {', '.join(map(str, allowed))}")
        return
    default = key.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{path}={value!r} must be True or False")
        return
    if is_int(default):
        kind, ok = "an integer", is_int(value)
    elif isinstance(default, float):
        kind, ok = "a finite number", is_number(value)
    else:
        return
    bound = ""
    if key.minimum is not None:
        low, strict = key.minimum
        if is_int(default) and strict:  # an integer > n is an integer >= n + 1
            low, strict = low + 1, False
        bound = f" {'>' if strict else '>='} {low}"
        ok = ok and ((value > low) if strict else (value >= low))
    if not ok:
        raise ValueError(f"{path}={value!r} must be {kind}{bound}")


def check_values(config: ml_collections.ConfigDict) -> None:
    """Each value the schema can judge on its own (choices, types, bounds), whether or not
    a sweep replaces it: a bad value is refused before anything runs."""
    keys = schema_of_run(config) if config.experiment == "train" else schema(config.experiment)
    for path, value in flatten(config).items():
        key = keys.get(path)
        if key is not None and key.kind not in ("meta", "study"):
            check_value(path, value, key)


def normalise(run: ml_collections.ConfigDict, base: ml_collections.ConfigDict) -> set[str]:
    """Makes runs that cannot differ equal, in place: drops the task keys the run's task
    does not read, resets keys that cannot affect the run to their base values (tolerances
    of a fixed-step solve, the step count of an adaptive one, ``model.layers`` of the ode
    family, ``pieces``/``basis`` of time modes that do not use them, ``model.width`` when a
    budget sets it, embedding keys of sequence tasks, ``model.combiner`` and the bag keys of
    a task without multi-valued features, stability settings when stability is off; the
    solver, attention and depth-time keys of the ``mlp`` family; ``evaluate.solvers`` of the
    language families without a flow), and
    writes what the discrete family does (Euler, ``steps = t1 = model.layers``) into its
    solver keys.

    Returns:
      The dotted paths this run does not read (dropped, reset or written over).
    """
    solver, model = run.solver, run.model
    read = {path.split(".", 1)[1] for path in task_keys(run.task.name)}
    unread = {f"task.{k}" for k in run.task.keys() if k not in read}
    run.task = ml_collections.ConfigDict({k: v for k, v in run.task.items() if k in read})

    def reset(section, *keys):
        for key in keys:
            run[section][key] = base[section][key]
            unread.add(f"{section}.{key}")

    if model.param_budget == 0:
        reset("model", "resolve")
    elif model.resolve == "width":
        reset("model", "width")  # resolved from the budget
    else:
        reset("model", "layers")
    if not run.evaluate.stability:
        reset("evaluate", "epsilon", "power_iterations", "examples")
    if not (run.evaluate.solvers and run.task.name in LANGUAGE_TASKS):
        reset("evaluate", "chars")
    if run.task.name not in TABULAR_TASKS:
        reset("model", "embedding", "embed_dim", "compression", "embed_init", "combiner")
        reset("train", "embedding_optimizer", "embedding_learning_rate")
    elif model.embedding not in ("hashed", "qr"):
        reset("model", "compression")
    if run.task.name in TABULAR_TASKS and not has_bags(run.task):
        reset("model", "combiner")  # no multi-valued feature to pool
        reset("task", *BAG_KEYS.get(run.task.name, ("", ()))[1])
    if run.task.name in LANGUAGE_TASKS:
        reset("task", "seed")  # the data is the text
        reset("model", "readout")  # every position is predicted
        if model.family in ("gpt", "rk2_gated"):
            reset("solver", *solver.keys())
            reset("model", "time", "pieces", "basis", "form")
            reset("evaluate", "chars")
            run.evaluate.solvers = ()  # a stack of layers has no flow to re-solve
            unread.add("evaluate.solvers")
            return unread
        if model.family == "smooth":
            reset("model", "time", "pieces")
    else:
        reset("model", "form")
    if model.family in TABULAR_FAMILIES:  # a dense network: no solver, attention or depth-time
        reset("solver", *solver.keys())
        reset("model", "time", "pieces", "basis", "heads", "mlp_ratio", "readout")
        return unread
    if model.family == "discrete":
        reset("solver", *solver.keys())
        reset("model", "time", "pieces", "basis")
        # What the discrete family does: Euler, one unit step per layer.
        solver.name, solver.adaptive, solver.adjoint = "euler", False, "checkpoint"
        solver.steps, solver.t1 = model.layers, float(model.layers)
        return unread
    reset("model", "layers")
    if model.time != "piecewise" and "model.pieces" not in unread:
        reset("model", "pieces")
    if model.time != "smooth" and model.family != "smooth":
        reset("model", "basis")
    if solver.adaptive:
        reset("solver", "steps")
    else:
        reset("solver", "rtol", "atol", "max_steps")
    return unread


def validate_run(c: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first invalid key of one training run's config: its
    keys, each value (:func:`check_value`), then the rules that tie keys together."""
    check_keys(c)
    check_values(c)
    if c.mesh.data * c.mesh.model > jax.device_count():
        raise ValueError(f"mesh.data={c.mesh.data} x mesh.model={c.mesh.model} needs more devices than "
                         f"the {jax.device_count()} available")
    if jax.process_count() > 1 and c.mesh.data * c.mesh.model != jax.device_count():
        raise ValueError(f"mesh.data={c.mesh.data} x mesh.model={c.mesh.model} must use all "
                         f"{jax.device_count()} devices of the {jax.process_count()} processes")
    for key in ("train.batch_size", "train.eval_batch_size"):
        if get_path(c, key) % c.mesh.data:
            raise ValueError(f"{key}={get_path(c, key)} must be a multiple of mesh.data={c.mesh.data}")
    check_microbatch(c.train.microbatch, c.train.batch_size, c.mesh.data)
    if c.solver.adaptive and c.solver.name not in ADAPTIVE_SOLVERS:
        raise ValueError(f"solver.name={c.solver.name!r} has no error estimate: "
                         f"solver.adaptive=True needs one of {', '.join(ADAPTIVE_SOLVERS)}")
    _check_family(c)
    _check_embedding_optimizer(c)
    if not c.train.beta2 < 1:
        raise ValueError(f"train.beta2={c.train.beta2!r} must lie in (0, 1)")
    if c.model.param_budget == 0 and c.model.family not in TABULAR_FAMILIES and c.model.width % c.model.heads:
        raise ValueError(f"model.width={c.model.width} must be a multiple of model.heads={c.model.heads}")
    if c.train.warmup_steps >= c.train.num_steps:
        raise ValueError(f"train.warmup_steps={c.train.warmup_steps} must be < "
                         f"train.num_steps={c.train.num_steps}")
    if c.model.family == "ode" and c.model.time in ("piecewise", "smooth") and c.solver.t1 != 1.0:
        raise ValueError(f"model.time={c.model.time!r} defines the weights on [0, 1]: solver.t1="
                         f"{c.solver.t1} would integrate past them; use solver.t1=1.0")
    for name in PENALTIES:
        weight = c.train[name]
        if weight > 0 and c.model.family not in ("ode", "smooth"):
            raise ValueError(f"train.{name}={weight!r} applies to the ode and smooth families only "
                             f"(the {c.model.family} family is a fixed stack of layers whose cost a "
                             f"regulariser cannot change); use train.{name}=0.0 for its runs")
        if weight > 0 and c.task.name in LANGUAGE_TASKS and c.model.form != "parallel":
            raise ValueError(f"train.{name}={weight!r} needs model.form='parallel' (a split step is "
                             "not one field to regularise)")
    relative = [s.spec for s in parse_solvers(c.evaluate.solvers) if s.factor is not None]
    if relative and c.solver.adaptive and c.model.family != "discrete":
        raise ValueError(f"evaluate.solvers {relative} multiply the training steps, and solver.adaptive=True "
                         "trains with none: use 'name:steps' or 'name:rtol'")


def _check_embedding_optimizer(c: ml_collections.ConfigDict) -> None:
    """A row-sparse table update suits the run (tabular tasks; normalise resets it elsewhere)."""
    sparse = c.train.embedding_optimizer != "dense"
    if not sparse and c.train.embedding_learning_rate > 0:
        raise ValueError(f"train.embedding_learning_rate={c.train.embedding_learning_rate!r} applies to "
                         "a row-sparse train.embedding_optimizer (lazy_adam, rowwise_adagrad); with "
                         "'dense' the tables use train.learning_rate: leave it at 0.0")
    if sparse and c.model.embedding == "onehot":
        raise ValueError(f"train.embedding_optimizer={c.train.embedding_optimizer!r} updates the rows a "
                         "batch reads; model.embedding='onehot' multiplies every row (a dense [batch, V] "
                         "operand): use train.embedding_optimizer='dense' or another model.embedding")
    if sparse and c.train.microbatch:
        raise ValueError(f"train.embedding_optimizer={c.train.embedding_optimizer!r} takes the whole "
                         f"batch in one pass: train.microbatch={c.train.microbatch} must be 0")


BFLOAT16_EPS = 2.0**-7  # bfloat16's machine epsilon (8 significand bits)


def _check_family(c: ml_collections.ConfigDict) -> None:
    """The family suits the task; language models' forms and evaluations."""
    language, tabular = c.task.name in LANGUAGE_TASKS, c.task.name in TABULAR_TASKS
    allowed = LANGUAGE_FAMILIES if language else FAMILIES + (TABULAR_FAMILIES if tabular else ())
    if c.model.family not in allowed:
        kind = "a language" if language else "a classification"
        only = "" if tabular or language else f" ({', '.join(TABULAR_FAMILIES)}: tabular tasks only)"
        raise ValueError(f"model.family={c.model.family!r} does not apply to task.name={c.task.name!r} "
                         f"({kind} task); use one of {', '.join(allowed)}{only}")
    if c.model.family in TABULAR_FAMILIES and (c.evaluate.solvers or c.evaluate.stability):
        raise ValueError(f"evaluate.solvers and evaluate.stability measure a flow; model.family="
                         f"{c.model.family!r} has none: leave them off")
    if not c.model.dropout < 1:
        raise ValueError(f"model.dropout={c.model.dropout!r} must lie in [0, 1)")
    if not language:
        for key, default in (("dtype", "float32"), ("dropout", 0.0)):
            if c.model[key] != default:
                raise ValueError(f"model.{key}={c.model[key]!r} applies to language models (task.name="
                                 f"'text'); classifiers compute in float32 without dropout: leave "
                                 f"model.{key}={default!r} for task.name={c.task.name!r}")
        return
    if (c.model.dtype == "bfloat16" and c.model.family in ("ode", "smooth") and c.solver.adaptive
            and c.solver.rtol < BFLOAT16_EPS):
        raise ValueError(f"solver.rtol={c.solver.rtol!r} is below bfloat16's epsilon (2^-7 = {BFLOAT16_EPS}):"
                         " with model.dtype='bfloat16' each field evaluation is rounded at about that "
                         "relative size, so the error estimate is rounding noise and smaller steps need "
                         f"not meet the tolerance; use solver.rtol >= {BFLOAT16_EPS}, fixed steps, or "
                         "model.dtype='float32'")
    if c.model.family in ("ode", "smooth") and c.model.form != "parallel" and c.solver.adaptive:
        raise ValueError(f"model.form={c.model.form!r} splits each fixed step: solver.adaptive=True "
                         "needs model.form='parallel'")
    adaptive = [s.spec for s in parse_solvers(c.evaluate.solvers) if s.rtol is not None]
    if adaptive and c.model.form != "parallel":
        raise ValueError(f"evaluate.solvers {adaptive} are adaptive, and model.form={c.model.form!r} "
                         "splits each fixed step: use fixed steps ('name:steps', 'name:xK') or "
                         "model.form='parallel'")
    if c.model.family == "smooth" and c.solver.t1 != 1.0:
        raise ValueError(f"model.family='smooth' defines the weights on [0, 1]: solver.t1={c.solver.t1} "
                         "would integrate past them; use solver.t1=1.0")


def keys_of_kind(*kinds: str, experiment: str = "train") -> tuple[str, ...]:
    """The schema's dotted paths of the given kinds, in schema order."""
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    return tuple(k for k, key in schema(experiment).items() if key.kind in kinds)


def structure_key(c: ml_collections.ConfigDict, shape: dict, step_bound: int | None,
                  tables: tuple[int, ...]) -> str:
    """What a training run's compiled steps depend on, as text: its structural keys (the
    model section through its resolved ``shape``, a dict), the step bound of a fixed-step
    solve (None leaves it out), which ``switch`` keys are on, and a tabular task's table sizes."""
    flat = flatten(c)
    values = {k: flat[k] for k in keys_of_kind("structural") if k in flat and not k.startswith("model.")}
    if not c.solver.adaptive and step_bound is not None:
        values["solver.steps"] = step_bound
    values["switches_on"] = sorted(k for k in keys_of_kind("switch") if get_path(c, k) > 0)
    return json.dumps([values, shape, list(tables)], sort_keys=True, default=str)


def _allowed(key: Key) -> str:
    """What :func:`check_value` accepts, in words (empty where a key's own check decides)."""
    if key.choices is not None:
        return ", ".join(f"`{c}`" for c in key.choices())
    if key.minimum is None:
        return ""
    low, strict = key.minimum
    if is_int(key.default) and strict:
        low, strict = low + 1, False
    return f"{'>' if strict else '>='} {low}"


def reference() -> str:
    """``docs/config_reference.md``: every key of every experiment, its default, kind and meaning."""
    def table(keys: dict[str, Key]) -> list[str]:
        rows = ["| key | default | allowed | kind | meaning |", "|---|---|---|---|---|"]
        for path, key in keys.items():
            rows.append(f"| `{path}` | `{key.default!r}` | {_allowed(key)} | {key.kind} | {key.doc} |")
        return rows

    lines = ["# Config reference", "",
             "Every key a config may hold, generated from `odeformer/experiment/config.py` by",
             "`odeformer.experiment.config.reference()` (a test checks that this page is current:",
             "`python -c \"from odeformer.experiment.config import reference; print(reference(), end='')\"",
             "> docs/config_reference.md` rewrites it). Configs start from `configs/base.py`, which",
             "holds every key at its default; kinds say what a new value costs:", ""]
    lines += [f"- **{kind}**: {text}" for kind, text in KIND_DOCS.items()]
    lines += ["", "## Every experiment", "", *table({**TOP, **ANALYSIS}), "",
              "## Training (`experiment = \"train\"`)", "",
              *table({k: v for k, v in TRAIN.items() if not k.startswith("task.")}), "",
              "## Tasks", "", "The `task` section holds the keys of the task named by `task.name`; "
              "each run keeps only those.", ""]
    for name in _tasks():
        lines += [f"### `{name}`", "", *table(task_keys(name)), ""]
    for name in sorted(STUDIES):
        lines += [f"## Study `{name}` (`experiment = \"{name}\"`)", "", *table(_study_keys(name)), ""]
    return "\n".join(lines).rstrip() + "\n"

