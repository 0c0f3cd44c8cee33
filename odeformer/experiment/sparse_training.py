"""Training a tabular model whose embedding tables take row-sparse updates.

With ``train.embedding_optimizer`` ``lazy_adam`` or ``rowwise_adagrad`` the train step
(``odeformer.experiment.training.make_train_step(..., sparse=SparseTables(...))``) never
forms a table-sized gradient. It looks up the rows the batch reads
(``FeatureTokenizer.row_ids`` / ``gather``), differentiates the loss in those rows and in the
other parameters, sums each table's row gradients by row
(:func:`odeformer.categorical.sparse.row_gradient`), clips both parts by their joint global
norm (the norm of the dense gradient they stand for), updates the other parameters with
the run's optax AdamW and the tables with the sparse optimizer, which writes only the rows
the batch read. The learning-rate schedule (warmup, cosine) is the same for both.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from odeformer.categorical.sparse import RowGradient, SparseOptimizer, row_gradient
from odeformer.experiment.training import lr_shape
from odeformer.parallel.mesh import EmbeddingRows


def _table_values(model) -> tuple[jax.Array, ...]:
    return tuple(t[...] for t in model.tokenizer.tables())


@dataclasses.dataclass(frozen=True)
class SparseTables:
    """How a train step updates a tabular model's embedding tables row-sparsely.

    Attributes:
      optimizer: the sparse optimizer of the tables.
      schedule: the run's learning-rate shape (a function of the step, peak 1), as in
        ``make_optimizer``.
      grad_clip: the global gradient-norm clip (tables and the rest together).
    """

    optimizer: SparseOptimizer
    schedule: Any
    grad_clip: float

    def split(self, params: nnx.State) -> tuple[nnx.State, nnx.State]:
        """``(tables, rest)`` of a model's parameters: the optax optimiser sees ``rest`` only."""
        return nnx.split_state(params, EmbeddingRows, ...)

    def init(self, graphdef, params: nnx.State, learning_rate, weight_decay) -> dict:
        """``state["sparse"]``: per-table optimizer state in ``tokenizer.tables()`` order, and
        the traced learning rate and weight decay of the tables."""
        tables = nnx.merge(graphdef, params).tokenizer.tables()
        return {"tables": self.optimizer.init(tables),
                "learning_rate": jnp.asarray(learning_rate, jnp.float32),
                "weight_decay": jnp.asarray(weight_decay, jnp.float32)}

    def gradient(self, loss_and_metrics, graphdef, params, inputs: dict):
        """``(loss, aux), rest_grads, row_grads`` of ``loss_and_metrics(model, tokens)``.

        The tables are read (forward only) at the batch's rows; the derivative is taken in
        those rows and in the other parameters.
        """
        tables, rest = self.split(params)
        tokenizer = nnx.merge(graphdef, params).tokenizer
        row_ids = tokenizer.row_ids(inputs["categorical"], inputs.get("bag_ids"))
        rows = tokenizer.gather(row_ids)

        def loss_fn(rest, rows):
            model = nnx.merge(graphdef, tables, rest)
            tokens = model.tokenizer.from_rows(rows, inputs["numeric"], inputs.get("bag_weights"))
            return loss_and_metrics(model, tokens)

        (loss, aux), (rest_grads, row_grads) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(rest, rows)
        sizes = tuple(t.shape[0] for t in tokenizer.tables())
        # A bag's padding is looked up but never used: it names no row (the fill), so no row
        # counts as read for it.
        read = tokenizer.read(row_ids, inputs.get("bag_weights"))
        row_ids = tuple(jnp.where(r, i, n) for i, r, n in zip(row_ids, read, sizes, strict=True))
        # Row ids and their gradients are batch-sized: gather them whole before deduplicating.
        mesh = jax.sharding.get_abstract_mesh()
        if not mesh.empty:
            row_ids, row_grads = jax.sharding.reshard((row_ids, row_grads), jax.sharding.PartitionSpec())
        grads = tuple(row_gradient(i, g, fill=n) for i, g, n in zip(row_ids, row_grads, sizes, strict=True))
        return (loss, aux), rest_grads, grads

    def apply(self, graphdef, tx, state: dict, rest_grads, row_grads: tuple[RowGradient, ...]):
        """``(params, opt_state, sparse_state, grad_norm)`` after one step."""
        norm = jnp.sqrt(jnp.square(optax.tree.norm(rest_grads))
                        + sum(jnp.sum(jnp.square(g.rows)) for g in row_grads))
        scale = jnp.where(norm < self.grad_clip, 1.0, self.grad_clip / norm)
        rest_grads = jax.tree.map(lambda g: g * scale, rest_grads)
        tables, rest = self.split(state["params"])
        updates, opt_state = tx.update(rest_grads, state["opt_state"], rest)
        rest = optax.apply_updates(rest, updates)

        sparse = state["sparse"]
        lr = sparse["learning_rate"] * self.schedule(state["step"])
        model = nnx.merge(graphdef, tables, rest)
        new_states = []
        for var, table_state, grad in zip(model.tokenizer.tables(), sparse["tables"], row_grads, strict=True):
            grad = RowGradient(grad.ids, grad.rows * scale)
            value, table_state = self.optimizer.update(var[...], table_state, grad, lr,
                                                       sparse["weight_decay"], state["step"] + 1)
            var[...] = value
            new_states.append(table_state)
        _, params = nnx.split(model)
        return params, opt_state, {**sparse, "tables": tuple(new_states)}, norm


def sparse_tables(train) -> tuple[SparseTables, dict[str, float]] | None:
    """For a config's ``train`` section: ``None`` for ``embedding_optimizer = "dense"``, else
    the :class:`SparseTables` of the step and the traced values of its state (peak learning
    rate: ``embedding_learning_rate``, or ``learning_rate`` when that is 0; weight decay:
    ``weight_decay``, which ``rowwise_adagrad`` does not apply; ``lazy_adam``'s ``b2`` is
    ``beta2``)."""
    if train.embedding_optimizer == "dense":
        return None
    # lazy_adam's second-moment decay is the run's AdamW's, so that both see one Adam.
    optimizer = SparseOptimizer(train.embedding_optimizer, b2=train.beta2)
    tables = SparseTables(optimizer, lr_shape(train), train.grad_clip)
    values = {"learning_rate": train.embedding_learning_rate or train.learning_rate,
              "weight_decay": train.weight_decay}
    return tables, values
