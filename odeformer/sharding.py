"""Device meshes, row-sharded embedding lookups, and where each array of a train state lives.

The mesh has two axes: ``data`` (the batch is split along it) and ``model`` (embedding
tables are split along their rows). Every other array is replicated. The mesh's axes are
Explicit (``jax.make_mesh``'s default in this JAX): shardings are part of array types, so a
plain ``jnp.take`` on a row-sharded table is refused as ambiguous. The lookup here is
deliberate instead: inside ``jax.shard_map`` each device gathers the ids that fall in its
own rows (zeros elsewhere) and a ``psum`` over ``model`` adds the pieces. What crosses devices
is the looked-up rows of the local batch, never a table; the gradient of a table is a local
scatter-add into its own rows and stays sharded.

Use it as ``with jax.set_mesh(mesh): ...``: layers read the mesh from that context, and
outside any mesh (or with one ``model`` shard) they do a plain local gather.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

DATA, MODEL = "data", "model"


class EmbeddingRows(nnx.Param):
    """A parameter whose leading axis is a vocabulary; row-sharded on ``model``."""


def make_mesh(data: int = 1, model: int = 1, devices=None) -> jax.sharding.Mesh:
    """A ``(data, model)`` mesh with Explicit axes over ``devices`` (default: the first
    ``data * model`` of ``jax.devices()``, which spans every process when it uses them all).

    Raises:
      ValueError: if the sizes are not positive or there are fewer devices than
        ``data * model``.
    """
    devices = jax.devices()[:data * model] if devices is None else list(devices)
    if data < 1 or model < 1 or data * model != len(devices):
        raise ValueError(f"mesh data={data} x model={model} must be positive and multiply to the "
                         f"number of devices given, {len(devices)}")
    return jax.make_mesh((data, model), (DATA, MODEL), axis_types=(AxisType.Explicit,) * 2,
                         devices=devices)


def padded_rows(rows: int, shards: int) -> int:
    """``rows`` rounded up to a multiple of ``shards`` (tables split evenly on ``model``)."""
    return shards * math.ceil(rows / shards)


def _model_shards(mesh) -> int:
    if mesh.empty or MODEL not in mesh.axis_names:
        return 1
    return mesh.shape[MODEL]


def _spec_of(x) -> P:
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
    if _model_shards(mesh) == 1:
        return local_fn(rows, ids, 0)

    def body(rows, ids):
        offset = jax.lax.axis_index(MODEL) * rows.shape[0]
        return jax.lax.psum(local_fn(rows, ids, offset), MODEL)

    ids_spec = _spec_of(ids)
    return jax.shard_map(body, in_specs=(P(MODEL, None), ids_spec),
                         out_specs=P(*ids_spec, None))(rows, ids)


def lookup(rows: jax.Array, ids: jax.Array) -> jax.Array:
    """``rows[ids]`` (shape ``ids.shape + (dim,)``) for a table that may be row-sharded.

    ``ids`` must already be validated to lie in ``[0, rows.shape[0])``: that happens where
    data enters (``odeformer.tasks.check_ids``), never silently here.
    """
    return _row_sharded(_gather, rows, ids)


def onehot_lookup(rows: jax.Array, ids: jax.Array) -> jax.Array:
    """``one_hot(ids, V) @ rows``: the same numbers as :func:`lookup`, computed the way a
    one-hot input layer computes them (a dense ``[batch, V]`` operand)."""
    return _row_sharded(_onehot_matmul, rows, ids)


def state_shardings(tree, mesh: jax.sharding.Mesh):
    """NamedShardings for a pytree of nnx Variables (params, optimiser state, train state):
    :class:`EmbeddingRows` leaves split on ``model`` by rows, everything else replicated."""
    def spec(x):
        if isinstance(x, EmbeddingRows):
            return x.replace(NamedSharding(mesh, P(MODEL, *([None] * (x.ndim - 1)))))
        if isinstance(x, nnx.Variable):
            return x.replace(NamedSharding(mesh, P()))
        return NamedSharding(mesh, P())

    return jax.tree.map(spec, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
    """Leading (batch) axis split on ``data``, replicated on ``model``."""
    return NamedSharding(mesh, P(DATA))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def place(tree, shardings):
    """``jax.device_put`` of a pytree onto ``shardings`` (a matching tree, or one sharding).

    With several processes every process must pass the same values (e.g. arrays built
    from the same seed): each one keeps the shards of its own devices.
    """
    return jax.device_put(tree, shardings)
