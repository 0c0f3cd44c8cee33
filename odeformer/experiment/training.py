"""Optimiser, the pure jitted train step, evaluation, and one training run.

Which config keys are part of a compiled step (structural) and which are values fed to it
(traced: seed, learning rate, weight decay, tolerances, ``solver.t1``, ``solver.steps`` up
to the model's ``SolverSpec.steps``, regulariser weights) is defined in
``odeformer.experiment.config``; the functions here take those values as arrays so that
changing them never recompiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx

from odeformer._checks import is_int
from odeformer._compile_options import compiler_options
from odeformer.experiment.microbatch import accumulate
from odeformer.parallel.mesh import DATA, EmbeddingRows, batch_sharding, to_host

FAILURE_SOLVER, FAILURE_LOSS = 1, 2  # codes of state["failure"]


DECAY = ("all", "matrices")  # values of train.decay
# Names of decayed weights; "rows"/"remainder_rows" are the tabular tables (EmbeddingRows), which
# a row-sparse lazy_adam decays too.
_MATRICES = ("kernel", "tokens", "positions", "embedding", "rows", "remainder_rows")


def decay_mask(params) -> Any:
    """True for the matrices of ``params`` (linear kernels, embedding tables), False for
    LayerNorm scales, biases and other vectors: the weights nanoGPT decays."""
    def is_matrix(path, _):
        names = {str(getattr(k, "key", getattr(k, "name", k))) for k in path}
        return bool(names & set(_MATRICES))
    return jax.tree_util.tree_map_with_path(is_matrix, params)


def lr_shape(train) -> optax.Schedule:
    """The learning rate's shape over the run, peak 1: linear warmup over
    ``train.warmup_steps``, then cosine decay to ``train.min_lr_ratio`` at ``train.num_steps``."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=1.0, warmup_steps=train.warmup_steps,
        decay_steps=train.num_steps, end_value=train.min_lr_ratio)


def make_optimizer(train) -> optax.GradientTransformation:
    """AdamW (``b2 = train.beta2``) with gradient clipping, linear warmup then cosine decay to
    ``train.min_lr_ratio`` times the peak, and weight decay on every parameter
    (``train.decay = "all"``) or the matrices only (``"matrices"``, :func:`decay_mask`).

    The peak learning rate and weight decay live in the optimiser state
    (``optax.inject_hyperparams``), so sweeping them does not recompile; the schedule's
    shape (warmup, length, floor) is structural.
    """
    if train.decay not in DECAY:
        raise ValueError(f"train.decay={train.decay!r} is not one of {', '.join(DECAY)}")
    return optax.chain(
        optax.clip_by_global_norm(train.grad_clip),
        optax.inject_hyperparams(optax.adamw, static_args=("b2", "mask"))(
            learning_rate=train.learning_rate, weight_decay=train.weight_decay, b2=train.beta2,
            mask=decay_mask if train.decay == "matrices" else None),
        optax.scale_by_schedule(lr_shape(train)),
    )


def init_state(params: nnx.State, tx: optax.GradientTransformation, solver,
               penalty: dict[str, float] | None = None, sparse: dict | None = None) -> dict[str, Any]:
    """The train state: parameters, optimiser state, step, traced solver values, and the
    first failure (step, kind), kept in the state so no step's failure is missed.

    ``penalty`` maps the regularisers that are on to their weights
    (``odeformer._regularisers.weights(config.train)``); it becomes ``state["penalty"]``
    (traced weights; its keys are structural). Without it the state has no such entry
    and the train step computes no regulariser.

    ``sparse`` (``SparseTables.init``'s state of row-sparse embedding tables,
    ``odeformer.experiment.sparse_training``) becomes ``state["sparse"]``; ``tx`` then
    holds the state of the other parameters only.

    ``solver`` (a config's solver section) gives the traced ``rtol``, ``atol`` and ``t1``,
    and ``steps`` when it has that key (the runner's does): a fixed-step model then solves
    with that many steps, at most its ``SolverSpec.steps``; without it, with that many.
    """
    state = {
        "params": params,
        "opt_state": tx.init(params if sparse is None else nnx.split_state(params, EmbeddingRows, ...)[1]),
        "step": jnp.zeros((), jnp.int32),
        "failed_at": jnp.full((), -1, jnp.int32),
        "failure": jnp.zeros((), jnp.int32),
        "hyper": {"rtol": jnp.asarray(solver.rtol, jnp.float32),
                  "atol": jnp.asarray(solver.atol, jnp.float32),
                  "t1": jnp.asarray(solver.t1, jnp.float32)},
    }
    if "steps" in solver:
        if not (is_int(solver.steps) and solver.steps >= 1):
            raise ValueError(f"solver.steps={solver.steps!r} must be an integer >= 1")
        state["hyper"]["steps"] = jnp.asarray(solver.steps, jnp.int32)
    if penalty:
        state["penalty"] = {name: jnp.asarray(w, jnp.float32) for name, w in penalty.items()}
    if sparse is not None:
        state["sparse"] = sparse
    return state


def _inputs(split: dict) -> dict:
    """The model's keyword inputs: every array of a split except its labels."""
    return {k: v for k, v in split.items() if k != "label"}


def _model_loss(model, tokens, labels, hyper, penalty=None, key=None, drop=None):
    """Mean cross-entropy of ``model`` on the flow's initial ``tokens`` (:meth:`embed`'s
    output), plus ``weight * integral`` of each regulariser in ``penalty``; returns
    ``(loss, metrics)``."""
    logits, stats = model.classify(tokens, **hyper, penalties=tuple(penalty or ()), key=key, **(drop or {}))
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = jnp.argmax(logits, -1) == labels
    loss = losses.mean()
    metrics = {"logits": logits, "losses": losses, "correct": correct, **stats}
    if penalty:
        metrics["cross_entropy"] = loss
        loss = loss + sum(weight * stats[name] for name, weight in penalty.items())
    return loss, metrics


def _loss_and_metrics(graphdef, params, hyper, inputs, labels, penalty=None, key=None,
                      dropout_key=None):
    """Mean cross-entropy, plus ``weight * integral`` of each regulariser in ``penalty``
    (``{name: weight}``; ``key`` draws the Jacobian term's noise); the integrals and the
    cross-entropy alone are then in the metrics too. ``dropout_key`` turns on the dropout of a
    model that has some (language models with ``dropout > 0``)."""
    model = nnx.merge(graphdef, params)
    drop = {"dropout_key": dropout_key} if dropout_key is not None and getattr(model, "dropout", 0) else {}
    return _model_loss(model, model.embed(**inputs, **drop), labels, hyper, penalty, key, drop)


def _batch_placement(mesh, axis: int = 0) -> Callable:
    """Puts a batch's axis ``axis`` on the mesh's ``data`` axis (identity without a mesh)."""
    if mesh is None or mesh.shape[DATA] == 1:
        return lambda tree: tree
    return lambda tree: jax.sharding.reshard(tree, batch_sharding(mesh, axis))


def check_microbatch(microbatch, batch_size: int, data_shards: int = 1) -> int:
    """The number of chunks a batch of ``batch_size`` is split into for ``microbatch``
    (see :func:`make_train_step`); ValueError naming ``train.microbatch`` if it is not
    0 or a divisor of the batch that each of the ``data_shards`` devices can split evenly."""
    if not is_int(microbatch) or microbatch < 0:
        raise ValueError(f"train.microbatch={microbatch!r} must be an integer >= 0 (0 = the whole "
                         "batch in one pass)")
    if microbatch == 0:
        return 1
    if batch_size % microbatch or microbatch % data_shards:
        raise ValueError(f"train.microbatch={microbatch} must divide train.batch_size={batch_size} "
                         f"and be a multiple of mesh.data={data_shards} (or be 0 = off)")
    return batch_size // microbatch


def _combine_chunks(metrics: dict) -> dict:
    """One step's metrics from the per-chunk ones (leading chunk axis): chunks are equal in
    size, so means average; counts take the largest chunk's, ``ok`` needs every chunk."""
    def combine(name, x):
        if name == "ok":
            return jnp.all(x)
        if jnp.issubdtype(x.dtype, jnp.integer):
            return jnp.max(x)
        return jnp.mean(x)
    return {name: combine(name, x) for name, x in metrics.items()}


def _step_metrics(loss, aux, penalty) -> dict:
    metrics = {"loss": loss, "accuracy": aux["correct"].mean(), "nfe": aux["nfe"],
               "solver_steps": aux["num_steps"], "ok": aux["ok"]}
    if penalty:
        metrics.update({name: aux[name] for name in ("cross_entropy", *penalty)})
    return metrics


def batch_gradient(graphdef, params, hyper, batch: dict, penalty=None, noise_key=None,
                   chunks: int = 1, dropout_key=None) -> tuple[Any, dict]:
    """``(gradient, metrics)`` of the training objective on ``batch``.

    ``chunks == 1``: one pass over ``batch`` (arrays with a leading batch axis).
    ``chunks > 1``: ``batch``'s arrays are ``[chunks, chunk_size, ...]``; the chunks are
    differentiated one after another (:func:`odeformer.experiment.microbatch.accumulate`) and
    their gradients and
    metrics averaged (equal sizes, so the means are the whole batch's; ``nfe`` and
    ``solver_steps`` are the largest chunk's, ``ok`` holds if it holds for every chunk).
    Chunk ``i`` draws its Jacobian noise from ``fold_in(noise_key, i)`` and its dropout masks
    from ``fold_in(dropout_key, i)``.
    """
    def one(params, batch, noise_key, dropout_key):
        def loss_fn(params):
            return _loss_and_metrics(graphdef, params, hyper, _inputs(batch), batch["label"],
                                     penalty, noise_key, dropout_key)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, _step_metrics(loss, aux, penalty)

    if chunks == 1:
        return one(params, batch, noise_key, dropout_key)

    def fold(key, i):
        return None if key is None else jax.random.fold_in(key, i)

    grads, per_chunk = accumulate(
        lambda params, chunk, i: one(params, chunk, fold(noise_key, i), fold(dropout_key, i)),
        params, batch)
    return grads, _combine_chunks(per_chunk)


def draw_batch(data: dict, key: jax.Array, batch_size: int, block_size: int | None = None) -> dict:
    """A batch of ``batch_size`` examples drawn uniformly with replacement from ``data``:
    rows of a classification split, or (``block_size``) windows of a language split's
    ``stream``: ``tokens`` = ``block_size`` characters from a uniform start, ``label`` =
    the characters one position later."""
    if block_size is None:
        index = jax.random.randint(key, (batch_size,), 0, data["label"].shape[0])
        return jax.tree.map(lambda a: a[index], data)
    stream = data["stream"]
    starts = jax.random.randint(key, (batch_size, 1), 0, stream.shape[0] - block_size)
    index = starts + jnp.arange(block_size)
    return {"tokens": stream[index], "label": stream[index + 1]}


def make_train_step(graphdef, tx: optax.GradientTransformation, batch_size: int,
                    mesh: jax.sharding.Mesh | None = None, microbatch: int = 0,
                    block_size: int | None = None, sparse=None) -> Callable:
    """``train_step(state, data, key) -> (state, metrics)``, pure, state donated.

    The batch is drawn inside the step from ``data`` (the whole train split, on device)
    with ``fold_in(key, step)`` (:func:`draw_batch`; ``block_size`` for a language split),
    so one key per run is threaded explicitly, and runs that share a seed see the same
    batches whatever their model (paired comparisons). Under a
    ``mesh`` (call it inside ``jax.set_mesh(mesh)``) the batch is split on ``data``.

    With ``state["penalty"]`` (see :func:`init_state`) the objective adds the regularisers,
    whose Jacobian noise comes from a key derived from the step's (the batch is the same as
    without regularisers); the metrics
    then carry ``cross_entropy`` and each regulariser's integral. A model with dropout draws
    its masks from another key derived from the step's (the batch is again the same).

    ``microbatch > 0`` computes the loss and gradient in ``batch_size / microbatch`` chunks
    of that many examples, one after another, and averages them (gradient accumulation,
    one optimiser update per step; see :func:`batch_gradient`). The examples are the same
    (chunk ``i`` is rows ``i * microbatch ...`` of the batch drawn without chunks); with a
    fixed-step solver and no dropout the loss and gradient equal the whole batch's up to float
    rounding (each chunk draws its own dropout masks).
    Each chunk is its own solve, so an adaptive solver picks each chunk's steps, and the
    Jacobian regulariser's noise is drawn per chunk. Smaller chunks need less memory and,
    on CPU, can be faster when one pass's activations outgrow the cache (``python
    benchmarks/microbatch.py``).

    ``sparse`` (``odeformer.experiment.sparse_training.SparseTables``, with the state made by
    ``init_state(..., sparse=)``) updates a tabular model's embedding tables row-sparsely;
    it needs ``microbatch = 0``.

    Compiled with :func:`odeformer.compiler_options` for the mesh's platform (as is the
    eval step).
    """
    chunks = check_microbatch(microbatch, batch_size, 1 if mesh is None else mesh.shape[DATA])
    if sparse is not None and chunks > 1:
        raise ValueError(f"train.microbatch={microbatch} needs train.embedding_optimizer='dense' (a "
                         "row-sparse update takes the whole batch in one pass)")
    place = _batch_placement(mesh, axis=0 if chunks == 1 else 1)
    shape = (batch_size,) if chunks == 1 else (chunks, batch_size // chunks)

    def train_step(state, data, key):
        key = jax.random.fold_in(key, state["step"])
        penalty = state.get("penalty")
        # The noise key is derived, not split off, so a regularised run draws the same
        # batches as its unregularised twin (paired comparisons).
        noise_key = jax.random.fold_in(key, 1) if penalty else None
        batch = draw_batch(data, key, batch_size, block_size)
        batch = place(jax.tree.map(lambda a: a.reshape(*shape, *a.shape[1:]), batch))
        if sparse is None:
            grads, metrics = batch_gradient(graphdef, state["params"], state["hyper"], batch, penalty,
                                            noise_key, chunks, jax.random.fold_in(key, 2))
            updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            updated, grad_norm = {"params": params, "opt_state": opt_state}, optax.tree.norm(grads)
        else:
            (loss, aux), rest_grads, row_grads = sparse.gradient(
                lambda model, tokens: _model_loss(model, tokens, batch["label"], state["hyper"], penalty,
                                                  noise_key), graphdef, state["params"], _inputs(batch))
            metrics = _step_metrics(loss, aux, penalty)
            params, opt_state, sparse_state, grad_norm = sparse.apply(graphdef, tx, state, rest_grads,
                                                                      row_grads)
            updated = {"params": params, "opt_state": opt_state, "sparse": sparse_state}
        loss = metrics["loss"]
        kind = jnp.where(~metrics["ok"], FAILURE_SOLVER, jnp.where(jnp.isfinite(loss), 0, FAILURE_LOSS))
        first = (state["failed_at"] < 0) & (kind > 0)
        new_state = {**state, **updated, "step": state["step"] + 1,
                     "failed_at": jnp.where(first, state["step"] + 1, state["failed_at"]),
                     "failure": jnp.where(first, kind, state["failure"])}
        metrics = {**metrics, "grad_norm": grad_norm,
                   "failed_at": new_state["failed_at"], "failure": new_state["failure"]}
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=0, compiler_options=compiler_options(mesh))


def make_eval_step(graphdef, mesh: jax.sharding.Mesh | None = None) -> Callable:
    """``eval_step(params, hyper, batch, weight) -> sums and scores`` over one chunk of a
    split (split on ``data`` under a mesh). Every chunk has the same shape whichever split
    it comes from, so the train and test splits share one compile."""
    place = _batch_placement(mesh)

    def eval_step(params, hyper, batch, weight):
        batch = place(batch)
        _, aux = _loss_and_metrics(graphdef, params, hyper, _inputs(batch), batch["label"])
        return {"loss": jnp.sum(aux["losses"] * weight), "correct": jnp.sum(aux["correct"] * weight),
                # P(last class): the ranking score of binary tasks (ROC AUC)
                "score": jax.nn.softmax(aux["logits"])[..., -1], "nfe": aux["nfe"], "ok": aux["ok"]}

    return jax.jit(eval_step, compiler_options=compiler_options(mesh))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of binary ``labels`` ranked by ``scores`` (Mann–Whitney U,
    ties counted as one half); NaN when a class is absent."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = pd.Series(np.asarray(scores, np.float64)).rank(method="average").to_numpy()
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@jax.jit
def _take(split: dict, index) -> dict:
    """Rows ``index`` of every array of a split (compiles in milliseconds per split shape)."""
    return jax.tree.map(lambda a: a[index], split)


def evaluate(eval_step: Callable, params, hyper, split: dict, chunk: int,
             num_classes: int) -> dict[str, float]:
    """Mean loss and accuracy over a whole split (and ROC AUC for two classes), in
    fixed-size chunks (last one padded and masked, so every example counts once and the
    chunk shape never changes)."""
    n = int(split["label"].shape[0])
    totals = {"loss": 0.0, "correct": 0.0}
    nfe, ok, scores = 0, True, []
    for start in range(0, n, chunk):
        # NumPy operands: every process of a multi-process run passes the same ones.
        index = (np.arange(start, start + chunk) % n).astype(np.int32)
        weight = (np.arange(start, start + chunk) < n).astype(np.float32)
        out = eval_step(params, hyper, _take(split, index), weight)
        totals["loss"] += float(out["loss"])
        totals["correct"] += float(out["correct"])
        scores.append(np.asarray(to_host(out["score"])))
        nfe = max(nfe, int(out["nfe"]))
        ok = ok and bool(out["ok"])
    result = {"loss": totals["loss"] / n, "accuracy": totals["correct"] / n, "nfe": nfe, "ok": ok}
    if num_classes == 2:
        result["auc"] = roc_auc(np.asarray(split["label"]), np.concatenate(scores)[:n])
    return result


def stream_windows(length: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping windows covering a stream of ``length`` characters: ``(index,
    weight)``, each ``[windows, block_size]``. Window ``w`` reads positions ``w * block_size
    + j`` and predicts the next; ``weight`` is 1 where that next position exists, so every
    character but the first is predicted exactly once (the last window is partial; its
    padding points at position 0 with weight 0)."""
    windows = -(-(length - 1) // block_size)
    index = np.arange(windows * block_size, dtype=np.int64).reshape(windows, block_size)
    weight = (index + 1 < length).astype(np.float32)
    return np.where(weight > 0, index, 0).astype(np.int32), weight


def evaluate_stream(eval_step: Callable, params, hyper, stream, block_size: int,
                    chunk: int) -> dict[str, float]:
    """Mean next-character loss (nats) and accuracy over a whole stream: every character
    but the first predicted once, in :func:`stream_windows` (each window's first
    characters see a short context), ``chunk`` windows per call (the last call padded
    with zero-weight windows, so the shape never changes)."""
    host = np.asarray(stream)
    index, weight = stream_windows(host.shape[0], block_size)
    pad = -index.shape[0] % chunk
    index = np.concatenate([index, np.zeros((pad, block_size), np.int32)])
    weight = np.concatenate([weight, np.zeros((pad, block_size), np.float32)])
    totals, nfe, ok = {"loss": 0.0, "correct": 0.0}, 0, True
    for start in range(0, index.shape[0], chunk):
        rows = index[start:start + chunk]
        batch = {"tokens": host[rows], "label": host[np.minimum(rows + 1, host.shape[0] - 1)]}
        out = eval_step(params, hyper, batch, weight[start:start + chunk])
        totals["loss"] += float(out["loss"])
        totals["correct"] += float(out["correct"])
        nfe = max(nfe, int(out["nfe"]))
        ok = ok and bool(out["ok"])
    count = float(weight.sum())
    return {"loss": totals["loss"] / count, "accuracy": totals["correct"] / count,
            "predicted": int(count), "nfe": nfe, "ok": ok}
