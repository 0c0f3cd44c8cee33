"""Device meshes, joining processes, and where each array of a train state lives.

The mesh has two axes: ``data`` (the batch is split along it) and ``model`` (embedding
tables are split along their rows, ``odeformer.categorical.sharded_lookup``). Every other array is
replicated. The mesh's axes are Explicit (``jax.make_mesh``'s default in this JAX):
shardings are part of array types. Use it as ``with jax.set_mesh(mesh): ...``: layers read
the mesh from that context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

DATA, MODEL = "data", "model"
_Tree = TypeVar("_Tree")


class EmbeddingRows(nnx.Param):
    """A parameter whose leading axis is a vocabulary; row-sharded on ``model``."""


def join_processes(coordinator: str | None, num_processes: int, process_id: int) -> None:
    """``jax.distributed.initialize`` after checking the arguments (call before any JAX work).

    On CPU the processes talk through JAX's CPU collectives (Gloo); on GPU/TPU through the
    accelerator's own.

    Raises:
      ValueError: naming the bad argument.
    """
    if not coordinator or ":" not in coordinator:
        raise ValueError(f"--coordinator={coordinator!r} must be host:port of process 0")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must lie in [0, --num_processes={num_processes})")
    jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id)


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


def _auto_axes(mesh: jax.sharding.Mesh) -> jax.sharding.Mesh:
    return mesh.update(axis_types=(AxisType.Auto,) * len(mesh.axis_names))


def lower_init_sharded(init: Callable[[jax.Array], _Tree], key: jax.Array,
                       mesh: jax.sharding.Mesh) -> jax.stages.Lowered:
    """The program :func:`init_sharded` runs, lowered; its compiled ``memory_analysis()``
    gives the bytes each device needs."""
    auto = _auto_axes(mesh)
    shardings = state_shardings(jax.eval_shape(init, key), mesh)
    key = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=replicated(auto))
    # Traced with the axes Auto: XLA's sharding propagation then splits every computation
    # that feeds a row-sharded output, random draws included. Under Explicit axes each
    # intermediate's type would say replicated and every device would compute whole tables.
    with jax.set_mesh(auto):
        return jax.jit(init, out_shardings=shardings).lower(key)


def init_sharded(init: Callable[[jax.Array], _Tree], key: jax.Array, mesh: jax.sharding.Mesh) -> _Tree:
    """``init(key)`` created in place with :func:`state_shardings`: each device computes and
    keeps only its rows of every :class:`EmbeddingRows` leaf (and of the optimiser's moments
    of it) and a copy of everything else, so no table is ever whole on one device.

    The values equal those of ``jax.jit(init)(key)`` on one device bit for bit: with JAX's
    default ``jax_threefry_partitionable`` a random draw does not depend on how it is split.
    (``init`` run eagerly, op by op, can differ in the last bit: compiled as one program, XLA
    folds a draw's scalings, e.g. ``std * sqrt(2) * erfinv(u)``, into one multiply.)
    With several processes each one runs the same program from the same ``key`` and keeps
    its own devices' shards; only the key goes through host memory.

    Args:
      init: ``key -> pytree`` of arrays and nnx Variables (params, optimiser state); static
        parts such as an ``nnx.GraphDef`` pass through. It is traced, never run eagerly, and
        compiled on every call.
      key: a PRNG key, the same in every process.
      mesh: the run's mesh.

    Returns:
      ``init(key)`` with every array on ``mesh``: row-sharded on ``model`` or replicated.
    """
    compiled = lower_init_sharded(init, key, mesh).compile()
    return compiled(place(key, replicated(_auto_axes(mesh))))


def batch_sharding(mesh: jax.sharding.Mesh, axis: int = 0) -> NamedSharding:
    """Axis ``axis`` (the batch's; 0 unless a chunk axis leads) split on ``data``,
    replicated on ``model``."""
    return NamedSharding(mesh, P(*[None] * axis, DATA))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def place(tree, shardings):
    """``jax.device_put`` of a pytree onto ``shardings`` (a matching tree, or one sharding).

    With several processes every process must pass the same values (e.g. arrays built
    from the same seed; JAX checks it): each one keeps the shards of its own devices.
    Arrays go through host memory then, since JAX only spreads host values across
    processes; PRNG keys travel as their key data.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def put(x, sharding):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = jax.device_put(np.asarray(jax.random.key_data(x)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.device_put(np.asarray(x), sharding)

    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda x: put(x, shardings), tree)
    return jax.tree.map(put, tree, shardings)


def to_host(tree):
    """Every array of ``tree`` whole on this host as a NumPy array, also one split across processes
    (gathered from them: every process must call this together); typed PRNG keys stay key arrays,
    other leaves are returned as they are."""
    def gather(x):
        if not isinstance(x, jax.Array):
            return x
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(gather(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        if x.is_fully_addressable:
            return np.asarray(x)
        if x.is_fully_replicated:  # every process holds it all: no collective needed
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(gather, tree)
