"""The steps of ``benchmarks/embedding.py`` (its docstring describes them): a dense and a row-sparse
embedding update compiled for one placement, the checks of their first step, and the collectives of
a compiled program."""

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P

from odeformer.categorical.embeddings import FeatureEmbedding
from odeformer.categorical.sharded_lookup import lookup
from odeformer.categorical.sparse import SPARSE_OPTIMIZERS, SparseOptimizer, row_gradient
from odeformer.parallel.mesh import (
    batch_sharding,
    init_sharded,
    lower_init_sharded,
    make_mesh,
    replicated,
    state_shardings,
)

LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4  # optax.adamw's default; lazy_adam takes the same
DENSE = {"adamw": lambda: optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY),
         "sgd": lambda: optax.sgd(LEARNING_RATE)}
UPDATES = (*DENSE, *SPARSE_OPTIMIZERS)
DTYPE_BYTES = {"f32": 4, "s32": 4, "u32": 4, "pred": 1, "f16": 2, "bf16": 2, "f64": 8, "s64": 8}
COLLECTIVE = re.compile(r"=\s*(.*?)\s(all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
                        r"(-start)?\(")


def loss_of(vectors, w):
    return jnp.mean(jnp.sum(jnp.square(vectors @ w), axis=-1))


def make_dense_step(graphdef, tx):
    """``step(state, ids, w) -> (state, loss)``, ``state = {"params", "opt_state"}``: the gradient
    is taken in the table."""
    def step(state, ids, w):
        loss, grads = jax.value_and_grad(lambda p: loss_of(nnx.merge(graphdef, p)(ids), w))(state["params"])
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, loss

    return step


def make_sparse_step(graphdef, optimizer):
    """``step(state, ids, w) -> (state, loss)``, ``state = {"params", "opt_state", "count"}``: the
    gradient is taken in the looked-up rows; nothing table-sized is differentiated."""
    def step(state, ids, w):
        embed = nnx.merge(graphdef, state["params"])
        row_ids = embed.row_ids(ids)
        loss, row_grads = jax.value_and_grad(lambda rows: loss_of(embed.combine(rows), w))(
            embed.gather(row_ids))
        # Batch-sized: every device needs all of it to update the rows it holds.
        row_ids, row_grads = jax.sharding.reshard((row_ids, row_grads), P())
        count = state["count"] + 1
        states = []
        for table, table_state, ids_, grads in zip(embed.tables(), state["opt_state"], row_ids, row_grads,
                                                   strict=True):
            grad = row_gradient(ids_, grads, fill=table.shape[0])
            table[...], table_state = optimizer.update(table[...], table_state, grad, LEARNING_RATE,
                                                       WEIGHT_DECAY, count)
            states.append(table_state)
        return {"params": nnx.split(embed)[1], "opt_state": tuple(states), "count": count}, loss

    return step


def group_size(line):
    """Devices per replica group of an HLO collective (1: the op moves no data)."""
    groups = re.search(r"replica_groups=\{\{([\d,]*)\}", line)
    if groups:
        return len(groups.group(1).split(","))
    mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
    if not mesh:
        return None  # a form not parsed here: counted as moving data
    sizes = dict(re.findall(r"'(\w+)'=(\d+)", mesh.group(1)))
    return int(np.prod([int(sizes[axis]) for axis in re.findall(r"'(\w+)'", mesh.group(2))]))


def collectives(hlo):
    """``{op: largest result in bytes}`` of the collectives in HLO text that span more than one
    device (one over a size-1 mesh axis moves nothing)."""
    out = {}
    for line in hlo.splitlines():
        match = COLLECTIVE.search(line)
        if not match or group_size(line) == 1:
            continue
        size = sum(DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d]))
                   for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1)))
        out[match.group(2)] = max(out.get(match.group(2), 0), size)
    return out


@jax.jit
def fingerprints(table):
    """uint32 [rows]: each row's float bits times random odd constants, summed mod 2**32 (a change
    of any one element changes its row's)."""
    odd = np.random.default_rng(0).integers(0, 2**32, table.shape[1], dtype=np.uint64).astype(np.uint32) | 1
    bits = jax.lax.bitcast_convert_type(table, jnp.uint32)
    return jnp.sum(bits * odd, axis=1, dtype=jnp.uint32)


class Trainer:
    """One update on one placement: compiled from abstract shapes at construction (nothing
    allocated); :meth:`start` creates the state and runs the checked first step."""

    def __init__(self, cardinality, kind, update, placement, mesh_shape, args):
        self.update, self.placement, self.mesh_shape = update, placement, mesh_shape
        self.mesh = make_mesh(*mesh_shape)

        def embedding(key):
            return FeatureEmbedding(cardinality, args.dim, kind=kind, shards=mesh_shape[1],
                                    rngs=nnx.Rngs(key))

        def init(key):
            embed = embedding(key)
            params = nnx.split(embed)[1]
            if update in DENSE:
                return {"params": params, "opt_state": DENSE[update]().init(params)}
            return {"params": params, "opt_state": SparseOptimizer(update).init(embed.tables()),
                    "count": jnp.zeros((), jnp.int32)}

        graphdef = nnx.split(nnx.eval_shape(lambda: embedding(jax.random.key(0))))[0]
        step = (make_dense_step(graphdef, DENSE[update]()) if update in DENSE
                else make_sparse_step(graphdef, SparseOptimizer(update)))
        self.init, self.key = init, jax.random.key(0)
        shapes = jax.eval_shape(init, self.key)
        state = jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                             shapes, state_shardings(shapes, self.mesh))
        ids = jax.ShapeDtypeStruct((args.batch,), jnp.int32, sharding=batch_sharding(self.mesh))
        w = jax.ShapeDtypeStruct((args.dim, args.dim), jnp.float32, sharding=replicated(self.mesh))
        start = time.perf_counter()
        with jax.set_mesh(self.mesh):
            self.compiled = jax.jit(step, donate_argnums=0).lower(state, ids, w).compile()
        self.compile_s = time.perf_counter() - start
        self.collectives = collectives(self.compiled.as_text())
        memory = self.compiled.memory_analysis()
        init_memory = lower_init_sharded(init, self.key, self.mesh).compile().memory_analysis()
        self.temp_per_device = memory.temp_size_in_bytes
        self.resident = memory.argument_size_in_bytes * self.mesh.size  # bytes, all devices
        self.temp = max(memory.temp_size_in_bytes, init_memory.temp_size_in_bytes) * self.mesh.size

    def start(self, ids_host, w):
        """Creates the state and runs the first step: ``first_loss``, ``read_rows`` (the rows the
        batch read, after it) and the counts of unread rows it changed and read rows it did not."""
        self.state = init_sharded(self.init, self.key, self.mesh)
        self.ids = jax.device_put(ids_host, batch_sharding(self.mesh))
        self.w = jax.device_put(w, replicated(self.mesh))
        read = np.unique(ids_host)
        with jax.set_mesh(self.mesh):
            before = np.asarray(fingerprints(self.table()))
            self.first_loss = float(self())
            changed = before != np.asarray(fingerprints(self.table()))
            read_ids = jax.device_put(read, replicated(self.mesh))
            self.read_rows = np.asarray(jax.jit(lookup)(self.table(), read_ids))
        was_read = np.zeros(changed.shape, bool)
        was_read[read] = True
        self.unread_changed = int(np.sum(changed & ~was_read))
        self.read_unchanged = int(np.sum(~changed & was_read))
        self.table_bytes = self.table().addressable_shards[0].data.nbytes
        self.state_bytes = sum(x.addressable_shards[0].data.nbytes
                               for x in jax.tree.leaves(self.state["opt_state"]))

    def table(self):
        return self.state["params"]["rows"][...]

    def __call__(self):
        self.state, loss = self.compiled(self.state, self.ids, self.w)
        return loss

    def stop(self):
        del self.state, self.ids, self.w


def check_first_step(trainer, first):
    """Asserts what ``benchmarks/embedding.py``'s docstring says of a first step; ``first`` maps
    each update to its first trainer at this V and kind (``trainer`` is added if it is the first)."""
    what = f"{trainer.update} on {trainer.placement}"
    if trainer.update in SPARSE_OPTIMIZERS:
        assert trainer.unread_changed == 0 and trainer.read_unchanged == 0, (
            f"{what}: {trainer.unread_changed} unread rows changed, {trainer.read_unchanged} read rows "
            "did not")
    anchor = first.setdefault(trainer.update, trainer)
    np.testing.assert_allclose(trainer.first_loss, next(iter(first.values())).first_loss, rtol=1e-5,
                               err_msg=what)
    np.testing.assert_allclose(trainer.read_rows, anchor.read_rows, rtol=1e-5, atol=1e-7, err_msg=what)
    other = first.get({"lazy_adam": "adamw", "adamw": "lazy_adam"}.get(trainer.update))
    if other is not None:  # rows ~0.2, moved by ~1e-3: 1e-6 is a thousandth of the move
        np.testing.assert_allclose(trainer.read_rows, other.read_rows, rtol=0, atol=1e-6, err_msg=what)
