"""Row-sharded embedding lookups: ``rows[ids]`` for a table split by rows on ``model``.

Under the mesh's Explicit axes a plain ``jnp.take`` on a row-sharded table is refused as
ambiguous. Here, inside ``jax.shard_map``, each device gathers the ids that fall in its own
rows (zeros elsewhere) and a ``psum`` over ``model`` adds the pieces. What crosses devices is
the looked-up rows of the local batch, never a table; the gradient of a table is a local
scatter-add into its own rows and stays sharded. Outside any mesh (or with one ``model``
shard) the lookup is a plain local gather.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from odeformer.parallel.mesh import MODEL


def padded_rows(rows: int, shards: int) -> int:
    """``rows`` rounded up to a multiple of ``shards`` (tables split evenly on ``model``)."""
    return shards * math.ceil(rows / shards)


def spec_of(x) -> P:
    """The array's own PartitionSpec under an Explicit mesh (all None under Auto axes)."""
    spec = jax.typeof(x).sharding.spec
    return P(*spec, *([None] * (x.ndim - len(spec))))


def _gather(rows, ids, offset):
    """Rows ``ids - offset`` of this shard, zeros for ids held by another shard."""
    local = ids - offset
    inside = (local >= 0) & (local < rows.shape[0])
    out = jnp.take(rows, jnp.where(inside, local, 0), axis=0)
    return jnp.where(inside[..., None], out, jnp.zeros((), rows.dtype))


def _onehot_matmul(rows, ids, offset):
    """``one_hot(ids) @ rows`` restricted to this shard's rows (the one-hot baseline)."""
    hot = jax.nn.one_hot(ids - offset, rows.shape[0], dtype=rows.dtype)  # zero outside
    return hot @ rows


def _row_sharded(local_fn, rows, ids):
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or MODEL not in mesh.axis_names:
        return local_fn(rows, ids, 0)
    # Under Explicit axes even a one-shard or replicated table's type carries its sharding,
    # so every lookup under a mesh goes through shard_map with the arrays' own specs.
    rows_spec, ids_spec = spec_of(rows), spec_of(ids)
    split = rows_spec[0] == MODEL

    def body(rows, ids):
        if not split:
            return local_fn(rows, ids, 0)
        offset = jax.lax.axis_index(MODEL) * rows.shape[0]
        return jax.lax.psum(local_fn(rows, ids, offset), MODEL)

    return jax.shard_map(body, in_specs=(rows_spec, ids_spec),
                         out_specs=P(*ids_spec, *rows_spec[1:]))(rows, ids)


def lookup(rows: jax.Array, ids: jax.Array) -> jax.Array:
    """``rows[ids]`` (shape ``ids.shape + (dim,)``) for a table that may be row-sharded.

    ``ids`` must already be validated to lie in ``[0, rows.shape[0])``: that happens where
    data enters (``odeformer.experiment.tasks.check_ids``), never silently here.
    """
    return _row_sharded(_gather, rows, ids)


def onehot_lookup(rows: jax.Array, ids: jax.Array) -> jax.Array:
    """``one_hot(ids, V) @ rows``: the same numbers as :func:`lookup`, computed the way a
    one-hot input layer computes them (a dense ``[batch, V]`` operand)."""
    return _row_sharded(_onehot_matmul, rows, ids)
