"""Row-sparse gradients and updates of embedding tables.

JAX differentiates a table as a dense ``[V, d]`` array even when a batch reads a few
hundred rows. Here a table's gradient is held as :class:`RowGradient`: the distinct rows a
batch read (``ids``) and the summed gradient of each (``rows``), got by differentiating the
looked-up rows instead of the table (``FeatureTokenizer.row_ids`` / ``from_rows``). The
optimizers below then read and write those rows only:

- ``rowwise_adagrad`` (DLRM's and TorchRec's fused default, FBGEMM's exact row-wise
  Adagrad): one accumulator per row, ``a_r += mean_j g_rj^2``,
  ``row_r -= lr * g_r / (sqrt(a_r) + eps)``; no weight decay.
- ``lazy_adam`` (TensorFlow Addons' LazyAdam, with AdamW's decoupled weight decay): Adam's
  moments of a row move only when a batch reads it; the bias correction uses the global
  step, as optax's ``adamw`` does; decay ``lr * wd * row`` on read rows only. When every
  row is read at every step it is optax's ``adamw`` exactly.

A row no batch reads is never written: it keeps its value bit for bit. Under a mesh whose
``model`` axis splits the tables by rows, every device updates its own rows inside
``shard_map`` from the (replicated) row gradient; nothing the size of a table crosses devices.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from odeformer.categorical.sharded_lookup import spec_of
from odeformer.parallel.mesh import MODEL, EmbeddingRows

EMBEDDING_OPTIMIZERS = ("dense", "lazy_adam", "rowwise_adagrad")
SPARSE_OPTIMIZERS = EMBEDDING_OPTIMIZERS[1:]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RowGradient:
    """The gradient of a table ``[V, d]`` as its nonzero rows.

    Attributes:
      ids: int32 [n], distinct row ids, then a fill value ``>= V`` (a row no device holds)
        in the unused slots.
      rows: [n, d], the gradient of each row of ``ids`` (zeros in the unused slots).
    """

    ids: jax.Array
    rows: jax.Array

    def dense(self, num_rows: int) -> jax.Array:
        """The same gradient as a ``[num_rows, d]`` array (tests and references)."""
        return jnp.zeros((num_rows, self.rows.shape[-1]), self.rows.dtype).at[self.ids].add(
            self.rows, mode="drop")


def row_gradient(ids: jax.Array, grads: jax.Array, fill: int) -> RowGradient:
    """Sums the gradients of looked-up rows by row: ``ids`` int [...] (the row each lookup
    read, duplicates allowed) and ``grads`` [..., d] (the gradient of each lookup's result)
    -> :class:`RowGradient` with ``ids.size`` slots, unused ones holding ``fill``."""
    flat = ids.reshape(-1)
    unique, inverse = jnp.unique(flat, size=flat.shape[0], fill_value=fill, return_inverse=True)
    rows = jax.ops.segment_sum(grads.reshape(flat.shape[0], -1), inverse.reshape(-1),
                               num_segments=flat.shape[0])
    return RowGradient(unique.astype(jnp.int32), rows)


def _local_rows(table: jax.Array, ids: jax.Array, offset) -> jax.Array:
    """Indices of ``ids`` into this shard's rows; ids the shard does not hold point one past
    its end, so a ``mode="fill"`` gather reads zeros and a ``mode="drop"`` scatter skips them."""
    local = ids - offset
    inside = (local >= 0) & (local < table.shape[0])
    return jnp.where(inside, local, table.shape[0])


def _rowwise_adagrad_rows(row, acc, grad, lr, eps):
    acc = acc + jnp.mean(jnp.square(grad), axis=-1)
    return row - lr * grad / (jnp.sqrt(acc)[:, None] + eps), acc


def _lazy_adam_rows(row, mu, nu, grad, lr, wd, count, b1, b2, eps):
    mu = b1 * mu + (1 - b1) * grad
    nu = b2 * nu + (1 - b2) * jnp.square(grad)
    mu_hat = mu / (1 - b1 ** count)
    nu_hat = nu / (1 - b2 ** count)
    return row - lr * (mu_hat / (jnp.sqrt(nu_hat) + eps) + wd * row), mu, nu


@dataclasses.dataclass(frozen=True)
class SparseOptimizer:
    """A row-sparse optimizer of embedding tables (see the module docstring).

    Attributes:
      name: one of :data:`SPARSE_OPTIMIZERS`.
      b1, b2, eps: Adam's moment decays and epsilon (``lazy_adam``); ``eps`` also Adagrad's.
    """

    name: str
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if self.name not in SPARSE_OPTIMIZERS:
            raise ValueError(f"sparse optimizer {self.name!r} is not one of {', '.join(SPARSE_OPTIMIZERS)}")

    def init(self, tables) -> tuple[dict, ...]:
        """The state of each table of ``tables`` (arrays or :class:`EmbeddingRows`): per-row
        arrays as :class:`EmbeddingRows`, so they are row-sharded like their table."""
        def zeros(table, shape):
            return EmbeddingRows(jnp.zeros(shape, jnp.asarray(table[...]).dtype))

        if self.name == "rowwise_adagrad":
            return tuple({"accumulator": zeros(t, t.shape[:1])} for t in tables)
        return tuple({"mu": zeros(t, t.shape), "nu": zeros(t, t.shape)} for t in tables)

    def update(self, table: jax.Array, state: dict, grad: RowGradient, learning_rate, weight_decay,
               count) -> tuple[jax.Array, dict]:
        """The table and its state after one step on the rows of ``grad``; ``count`` is the
        step's number (1 for the first; Adam's bias correction). Other rows are untouched.
        Under a mesh (``jax.set_mesh``) that splits ``table`` on ``model``, each device
        updates the rows it holds."""
        values = {k: jnp.asarray(v[...]) for k, v in state.items()}
        table = jnp.asarray(table)

        def local(table, values, ids, grads, scalars, offset):
            learning_rate, weight_decay, count = scalars
            index = _local_rows(table, ids, offset)
            read = {k: v.at[index].get(mode="fill", fill_value=0) for k, v in values.items()}
            row = table.at[index].get(mode="fill", fill_value=0)
            if self.name == "rowwise_adagrad":
                row, acc = _rowwise_adagrad_rows(row, read["accumulator"], grads, learning_rate, self.eps)
                new = {"accumulator": acc}
            else:
                row, mu, nu = _lazy_adam_rows(row, read["mu"], read["nu"], grads, learning_rate,
                                              weight_decay, count, self.b1, self.b2, self.eps)
                new = {"mu": mu, "nu": nu}
            written = {k: values[k].at[index].set(new[k], mode="drop") for k in values}
            return table.at[index].set(row, mode="drop"), written

        scalars = tuple(jnp.asarray(x, table.dtype) for x in (learning_rate, weight_decay, count))
        out_table, out_values = _on_row_shards(local, table, values, grad, scalars)
        return out_table, {k: state[k].replace(v) if isinstance(state[k], EmbeddingRows) else v
                           for k, v in out_values.items()}


def _on_row_shards(local, table, values, grad: RowGradient, scalars):
    """``local(table, values, ids, grads, scalars, offset)`` on each ``model`` shard of ``table``
    (and of the per-row ``values``), or on the whole table outside a mesh that splits it."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or MODEL not in mesh.axis_names or spec_of(table)[0] != MODEL:
        return local(table, values, grad.ids, grad.rows, scalars, 0)
    table_spec = spec_of(table)
    value_specs = {k: spec_of(v) for k, v in values.items()}
    # The row gradient is batch-sized: every shard reads all of it and keeps its own rows.
    ids, rows, scalars = jax.sharding.reshard((grad.ids, grad.rows, scalars), P())

    def body(table, values, ids, rows, scalars):
        return local(table, values, ids, rows, scalars, jax.lax.axis_index(MODEL) * table.shape[0])

    return jax.shard_map(body, in_specs=(table_spec, value_specs, P(), P(), P()),
                         out_specs=(table_spec, value_specs))(table, values, ids, rows, scalars)
