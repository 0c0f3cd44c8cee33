"""Language-model runs: whole-split evaluation, counted compute, re-solves under other solvers
(:func:`resolve_language`), robustness (:func:`robustness_row`), and the trained parameters a run
keeps so that it can be sampled later (:func:`load_trained`)."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from odeformer import forward_mode
from odeformer.experiment import results
from odeformer.experiment.evaluators.invariance import parse_solvers, solver_report
from odeformer.experiment.executor import BuildOnce, RunFailed
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.tasks import LanguageData, make_task
from odeformer.experiment.training import evaluate_stream, make_eval_step
from odeformer.language.closeness import adjacent_change
from odeformer.language.corpus import CharVocabulary
from odeformer.language.flops import forward_flops_per_token, nominal_nfe
from odeformer.language.models import LanguageModel
from odeformer.language.robustness import make_robustness_step, summarise_robustness
from odeformer.parallel.mesh import to_host

PARAMS_DIR = "params"  # a finished language run's final parameters (orbax), in its run dir
TRAIN_FLOPS_FACTOR = 3  # training FLOPs = 3 x forward (odeformer.language.flops)
SUBSTITUTION_RATES = (0.01, 0.02, 0.05, 0.1)  # fractions of the context replaced
ATTACK_MULTIPLES = (1, 2, 4, 8)  # attack budgets, in units of evaluate.epsilon
ATTACK_STEPS = 10
ROBUSTNESS_KEY = 0  # one key for every run: every model meets the same corrupted text


def language_row(eval_step, state: dict, data: LanguageData, model: LanguageModel, chunk: int,
                 late: dict, tokens: int, train_time: float, initial: LanguageModel | None = None,
                 ) -> dict[str, Any]:
    """The metrics of a trained language model: validation and test loss (nats) and bits per
    character over the whole splits, accuracy, NFE, FLOPs per token, training tokens per second,
    ``layer_change``, the relative change of adjacent layers' weights, and ``update_change``, that
    of the updates training made to them (given the ``initial`` model; ``odeformer.language.closeness``).

    ``late`` holds means of the values logged over the last quarter of training (``loss``,
    ``nfe``); ``tokens`` counts the training tokens of this process's steps, timed by
    ``train_time``.
    """
    params, hyper = state["params"], state["hyper"]
    row: dict[str, Any] = {}
    ok = True
    for split in ("validation", "test"):
        out = evaluate_stream(eval_step, params, hyper, getattr(data, split)["stream"],
                              data.block_size, chunk)
        prefix = "val" if split == "validation" else "test"
        row.update({f"{prefix}_loss": out["loss"], f"{prefix}_bpc": out["loss"] / math.log(2),
                    f"{prefix}_accuracy": out["accuracy"], f"{prefix}_chars": out["predicted"]})
        ok = ok and out["ok"]
        if split == "test":
            row["nfe_forward"] = out["nfe"]
    train_nfe = late.get("nfe") or nominal_nfe(model) or row["nfe_forward"]
    forward = forward_flops_per_token(model, row["nfe_forward"])
    row.update({
        "train_loss": late.get("loss"), "tokens_per_s": tokens / train_time if train_time else None,
        "flops_per_token": forward,
        "train_flops": TRAIN_FLOPS_FACTOR * forward_flops_per_token(model, train_nfe) * tokens,
        "params_embedding": model.embedding_params(), "solved_ok": ok,
        "layer_change": _layer_change(model, hyper),
        "update_change": _layer_change(model, hyper, initial) if initial is not None else None,
    })
    return row


def resolve_language(c, graphdef, state, data: LanguageData, mesh, compiled: BuildOnce,
                      val_loss: float) -> dict[str, Any]:
    """A language model's validation loss under ``evaluate.solvers``
    (``odeformer.experiment.evaluators.invariance``) over the first ``evaluate.chars``
    characters of the validation split (all of them when 0). ``val_loss`` is the training
    solver's over the same characters when they are a slice, the run's otherwise."""
    if not c.evaluate.solvers:
        return {}
    t = time.perf_counter()
    stream = data.validation["stream"]
    stream = stream[:c.evaluate.chars] if c.evaluate.chars else stream
    params, hyper, chunk = state["params"], state["hyper"], c.train.eval_batch_size

    def evaluate_with(solved, values):
        step, _ = compiled.get(("eval", solved, mesh), lambda: make_eval_step(solved, mesh))
        return evaluate_stream(step, params, values, stream, data.block_size, chunk)

    row = {}
    if c.evaluate.chars:
        own = evaluate_with(graphdef, hyper)
        if not own["ok"]:
            raise RunFailed("solver failed during evaluation")
        val_loss = row["val_loss@train"] = own["loss"]
    row.update(solver_report(parse_solvers(c.evaluate.solvers), graphdef, params, hyper, val_loss,
                             evaluate_with, split="val", gap="loss"))
    row["evaluate_s"] = time.perf_counter() - t
    return row


def robustness_row(c, graphdef, state, data: LanguageData, compiled: BuildOnce) -> dict[str, Any]:
    """``evaluate.stability`` of a language model (``odeformer.language.robustness``) over the
    first ``evaluate.examples`` windows of the test split (consecutive, ``block_size`` characters
    each): loss under character substitution at :data:`SUBSTITUTION_RATES`, under embedding
    noise, and under a PGD attack of :data:`ATTACK_STEPS` steps at budgets ``evaluate.epsilon``
    times :data:`ATTACK_MULTIPLES`, and the depth map's Jacobian norm and Lyapunov exponent
    (``evaluate.power_iterations``). Noise and budgets are absolute, one scale for every model:
    the noise has standard deviation ``epsilon / sqrt(width)`` per entry, so about ``epsilon``
    per position at any width, and a budget is an RMS norm per position. Every run draws from
    the same key (:data:`ROBUSTNESS_KEY`). A solve that fails here leaves the trained run's row
    standing, with ``robust.solved_ok`` False. The jitted step is cached by graphdef.

    Raises:
      RunFailed: the test split is shorter than one window.
    """
    if not c.evaluate.stability:
        return {}
    e, n = c.evaluate, data.block_size
    stream = data.test["stream"]
    windows = min(e.examples, (stream.shape[0] - 1) // n)
    if windows < 1:
        raise RunFailed(f"the test split ({stream.shape[0]} characters) holds no window of {n + 1}")
    tokens = jnp.asarray(stream[:windows * n]).reshape(windows, n)
    targets = jnp.asarray(stream[1:windows * n + 1]).reshape(windows, n)
    # A few windows on one device, outside the training mesh (its explicit shardings would meet the
    # unsharded windows inside the solves' checkpointed loops): every process measures the whole model.
    params, hyper = to_host((state["params"], state["hyper"]))
    width = nnx.merge(graphdef, params).width
    t = time.perf_counter()
    step, _ = compiled.get(
        ("robustness", graphdef, e.epsilon, e.power_iterations),
        lambda: make_robustness_step(graphdef, forward_mode(graphdef, params), SUBSTITUTION_RATES,
                                     e.epsilon / math.sqrt(width),
                                     tuple(e.epsilon * k for k in ATTACK_MULTIPLES), ATTACK_STEPS,
                                     e.power_iterations))
    row = summarise_robustness(step(params, hyper, tokens, targets, jax.random.key(ROBUSTNESS_KEY)))
    return {**row, "robust_s": time.perf_counter() - t}


def _layer_change(model: LanguageModel, hyper: dict, initial: LanguageModel | None = None) -> float:
    """``odeformer.language.closeness.adjacent_change`` over the depth the model was trained
    with (an adaptive solve has no fixed grid of layers: NaN)."""
    if model.family in ("gpt", "rk2_gated"):
        return adjacent_change(model, model.layers, initial)
    if model.flow.steps is None:
        return math.nan
    # The block's count is the bound of the runs sharing its compile; hyper holds the run's own.
    return adjacent_change(model, int(hyper.get("steps", model.flow.steps)), initial)


def save_params(rdir: Path, params) -> None:
    """Writes a run's final parameters under ``rdir / PARAMS_DIR`` (replacing an older copy)."""
    target = (Path(rdir) / PARAMS_DIR).absolute()
    if target.exists():
        shutil.rmtree(target)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, params)
    checkpointer.wait_until_finished()


def load_trained(workdir: str | Path, run_id: str) -> tuple[LanguageModel, CharVocabulary, dict]:
    """A finished language run's model with its final parameters, its vocabulary and the
    solver values it was trained with (``rtol``, ``atol``, ``t1``, ``steps`` as applicable),
    rebuilt from the run's ``config.json``, ``result.json`` (its resolved shape) and
    ``params/``.

    Raises:
      FileNotFoundError: naming what is missing (an unfinished run, or not a language run).
    """
    rdir = results.run_dir(Path(workdir), run_id)
    for name in ("config.json", results.RESULT_FILE, PARAMS_DIR, "vocabulary.json"):
        if not (rdir / name).exists():
            raise FileNotFoundError(f"{rdir / name} is missing: run {run_id!r} of {workdir} is not a "
                                    "finished language-model run")
    config = ml_collections.ConfigDict(json.loads((rdir / "config.json").read_text()))
    row = results.read_record(rdir / results.RESULT_FILE)
    shape = ModelShape(**{k.removeprefix("shape."): v for k, v in row.items() if k.startswith("shape.")})
    c = config.solver
    solver = SolverSpec(name=c.name, steps=None if c.adaptive else c.steps, adjoint=c.adjoint,
                        max_steps=c.max_steps)
    vocabulary = CharVocabulary.from_json((rdir / "vocabulary.json").read_text())
    data = make_task(config.task)
    if data.vocabulary != vocabulary:
        raise ValueError(f"the vocabulary of task {config.task.to_dict()} differs from the one run "
                         f"{run_id!r} was trained on ({rdir / 'vocabulary.json'})")
    abstract = nnx.eval_shape(lambda: build_model(shape, solver, data, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    params = ocp.StandardCheckpointer().restore((rdir / PARAMS_DIR).absolute(), state)
    model = nnx.merge(graphdef, params)
    values = {}
    if shape.family in ("ode", "smooth"):
        values = {"t1": c.t1, **({"rtol": c.rtol, "atol": c.atol} if c.adaptive else {})}
    return model, vocabulary, values
