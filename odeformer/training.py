"""Optimiser, the pure jitted train step, evaluation, and one training run.

Structural (one compile per value): model shape, solver name/steps/adjoint/adaptivity/
max_steps, task shapes, ``train.batch_size``, ``train.num_steps``, ``train.warmup_steps``,
``train.grad_clip``, ``train.eval_batch_size``. Traced (same compile): seed, ``train.learning_rate``,
``train.weight_decay``, ``solver.rtol``, ``solver.atol``, ``solver.t1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

FAILURE_SOLVER, FAILURE_LOSS = 1, 2  # codes of state["failure"]


def make_optimizer(train) -> optax.GradientTransformation:
    """AdamW with gradient clipping and a warmup-cosine schedule.

    The peak learning rate and weight decay live in the optimiser state
    (``optax.inject_hyperparams``), so sweeping them does not recompile; the schedule's
    shape (warmup, length) is structural.
    """
    shape = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=1.0, warmup_steps=train.warmup_steps,
        decay_steps=train.num_steps, end_value=0.0)
    return optax.chain(
        optax.clip_by_global_norm(train.grad_clip),
        optax.inject_hyperparams(optax.adamw)(
            learning_rate=train.learning_rate, weight_decay=train.weight_decay),
        optax.scale_by_schedule(shape),
    )


def init_state(params: nnx.State, tx: optax.GradientTransformation, solver) -> dict[str, Any]:
    """The train state: parameters, optimiser state, step, traced solver values, and the
    first failure (step, kind), kept in the state so no step's failure is missed."""
    return {
        "params": params,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "failed_at": jnp.full((), -1, jnp.int32),
        "failure": jnp.zeros((), jnp.int32),
        "hyper": {"rtol": jnp.asarray(solver.rtol, jnp.float32),
                  "atol": jnp.asarray(solver.atol, jnp.float32),
                  "t1": jnp.asarray(solver.t1, jnp.float32)},
    }


def _loss_and_metrics(graphdef, params, hyper, tokens, labels):
    logits, stats = nnx.merge(graphdef, params)(tokens, **hyper)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
    return losses.mean(), {"losses": losses, "correct": correct, **stats}


def make_train_step(graphdef, tx: optax.GradientTransformation, batch_size: int) -> Callable:
    """``train_step(state, data, key) -> (state, metrics)``, pure, state donated.

    The batch is drawn inside the step from ``data`` (the whole train split, on device)
    with ``fold_in(key, step)``, so one key per run is threaded explicitly.
    """
    def train_step(state, data, key):
        key = jax.random.fold_in(key, state["step"])
        index = jax.random.randint(key, (batch_size,), 0, data["label"].shape[0])
        tokens, labels = data["tokens"][index], data["label"][index]

        def loss_fn(params):
            return _loss_and_metrics(graphdef, params, state["hyper"], tokens, labels)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        kind = jnp.where(~aux["ok"], FAILURE_SOLVER, jnp.where(jnp.isfinite(loss), 0, FAILURE_LOSS))
        first = (state["failed_at"] < 0) & (kind > 0)
        new_state = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1,
                     "failed_at": jnp.where(first, state["step"] + 1, state["failed_at"]),
                     "failure": jnp.where(first, kind, state["failure"])}
        metrics = {"loss": loss, "accuracy": aux["correct"].mean(), "nfe": aux["nfe"],
                   "solver_steps": aux["num_steps"], "ok": aux["ok"],
                   "grad_norm": optax.tree.norm(grads), "failed_at": new_state["failed_at"],
                   "failure": new_state["failure"]}
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=0)


def make_eval_step(graphdef) -> Callable:
    """``eval_step(params, hyper, tokens, labels, weight) -> sums`` over one chunk."""
    def eval_step(params, hyper, tokens, labels, weight):
        _, aux = _loss_and_metrics(graphdef, params, hyper, tokens, labels)
        return {"loss": jnp.sum(aux["losses"] * weight), "correct": jnp.sum(aux["correct"] * weight),
                "nfe": aux["nfe"], "ok": aux["ok"]}

    return jax.jit(eval_step)


def evaluate(eval_step: Callable, params, hyper, split: dict, chunk: int) -> dict[str, float]:
    """Mean loss and accuracy over a whole split, in fixed-size chunks (last one padded
    and masked, so every example counts once and the chunk shape never changes)."""
    n = int(split["label"].shape[0])
    totals = {"loss": 0.0, "correct": 0.0}
    nfe, ok = 0, True
    for start in range(0, n, chunk):
        index = jnp.arange(start, start + chunk) % n
        weight = (jnp.arange(start, start + chunk) < n).astype(jnp.float32)
        out = eval_step(params, hyper, split["tokens"][index], split["label"][index], weight)
        totals["loss"] += float(out["loss"])
        totals["correct"] += float(out["correct"])
        nfe = max(nfe, int(out["nfe"]))
        ok = ok and bool(out["ok"])
    return {"loss": totals["loss"] / n, "accuracy": totals["correct"] / n, "nfe": nfe, "ok": ok}
