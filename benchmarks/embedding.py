"""python benchmarks/embedding.py [--cardinalities 1000,10000,100000,1000000] [--dim 32] [--batch 4096]
    [--ids zipf|uniform] [--optimizer adamw|sgd] [--sharded_mesh 1x8] [--repeats 10] [--onehot_max 10000]

One embedding training step, replicated vs row-sharded table, on 8 simulated CPU devices.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``); sets
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` itself (appended to any XLA_FLAGS).
The step: ``FeatureEmbedding(V, dim, kind="table")`` looks up a batch of ids, loss
``mean(sum((rows[ids] @ W)**2, -1))`` with a fixed random ``W`` [dim, dim], gradient in the
table, optax AdamW (lr 1e-3, default weight decay) or SGD update, jitted with the train state
(table and optimiser state) donated. Ids are drawn once, Zipf (P(id = k) ~ 1/(k + 1), id 0
most frequent, as ``odeformer.categorical.vocabulary`` orders rows) or uniform. Two placements:

- replicated: mesh (data=8, model=1), every device holds the whole table and optimiser
  state, ids split on ``data``;
- sharded: mesh (data=1, model=8) by default, the table and its AdamW moments split by rows
  on ``model``, every device sees the whole batch. Chosen over (data=2, model=4) because it
  holds 1/8 rather than 1/4 of the table per device and the table gradient needs no
  all-reduce (with data=2 each shard's gradient is summed over the two data replicas every
  step); its cost is that the per-id work (masked gather, psum of the looked-up rows, loss)
  is repeated on all 8 devices. ``--sharded_mesh 2x4`` measures the other choice.

Both are placed by ``odeformer.parallel.mesh.state_shardings`` (rows on ``model``, a size-1 axis in
the replicated mesh) and call the layer inside ``jax.set_mesh``, so the lookup is
``odeformer.parallel.mesh.lookup`` (shard_map over ``model``, psum of the looked-up rows).

Per V: median step ms (placements interleaved), ids/s, the median over interleaved pairs of
sharded/replicated, bytes of the table and of the optimiser state held by one device (read
from ``addressable_shards[0]``), and the collectives of the compiled step's HLO: whether it
has an all-gather and its largest all-reduce. The first step's loss and updated table are
checked equal across placements before anything is timed. ``--onehot_max`` adds
``kind="onehot"`` (a dense [batch, V] operand) for V up to that value.
"""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()

import argparse
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from harness import interleaved_ms, start_benchmark

from odeformer.categorical.embeddings import FeatureEmbedding
from odeformer.parallel.mesh import batch_sharding, make_mesh, place, replicated, state_shardings

DEVICES = 8
LEARNING_RATE = 1e-3
DTYPE_BYTES = {"f32": 4, "s32": 4, "u32": 4, "pred": 1, "f16": 2, "bf16": 2, "f64": 8, "s64": 8}


def draw_ids(cardinality, batch, distribution, seed=0):
    """int32 [batch] in [0, cardinality): Zipf with exponent 1 (id 0 most frequent) or uniform."""
    rng = np.random.default_rng(seed)
    if distribution == "uniform":
        return rng.integers(0, cardinality, batch).astype(np.int32)
    weights = 1.0 / np.arange(1, cardinality + 1)
    return rng.choice(cardinality, batch, p=weights / weights.sum()).astype(np.int32)


def make_step(graphdef, tx):
    """``step(state, ids, w) -> (state, loss)`` with ``state = {"params", "opt_state"}``."""
    def loss_fn(params, ids, w):
        vectors = nnx.merge(graphdef, params)(ids)
        return jnp.mean(jnp.sum(jnp.square(vectors @ w), axis=-1))

    def step(state, ids, w):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], ids, w)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, loss

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
    """``{op: largest result in bytes}`` of the all-gathers (any) and the all-reduces that span
    more than one device in HLO text (an all-reduce over a size-1 mesh axis moves nothing)."""
    out = {}
    for line in hlo.splitlines():
        match = re.search(r"=\s*(.*?)\s(all-gather|all-reduce)(-start)?\(", line)
        if not match or (match.group(2) == "all-reduce" and group_size(line) == 1):
            continue
        size = sum(DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(",") if d]))
                   for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1)))
        out[match.group(2)] = max(out.get(match.group(2), 0), size)
    return out


class Trainer:
    """A compiled step and the (donated) state it threads from call to call."""

    def __init__(self, cardinality, kind, mesh_shape, args, ids_host):
        data, model = mesh_shape
        self.mesh = make_mesh(data, model)
        embed = FeatureEmbedding(cardinality, args.dim, kind=kind, shards=model, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(embed)
        tx = optax.adamw(LEARNING_RATE) if args.optimizer == "adamw" else optax.sgd(LEARNING_RATE)
        state = {"params": params, "opt_state": tx.init(params)}
        self.state = place(state, state_shardings(state, self.mesh))
        self.ids = jax.device_put(jnp.asarray(ids_host), batch_sharding(self.mesh))
        w = jax.random.normal(jax.random.key(1), (args.dim, args.dim)) * args.dim ** -0.5
        self.w = jax.device_put(w, replicated(self.mesh))
        start = time.perf_counter()
        with jax.set_mesh(self.mesh):
            self.compiled = jax.jit(make_step(graphdef, tx), donate_argnums=0).lower(
                self.state, self.ids, self.w).compile()
        hlo = self.compiled.as_text()
        self.collectives, self.has_all_gather = collectives(hlo), "all-gather" in hlo
        self.first_loss = float(self())  # first run, not timed
        self.first_rows = np.asarray(self.state["params"]["rows"][...])
        self.compile_s = time.perf_counter() - start

    def __call__(self):
        self.state, loss = self.compiled(self.state, self.ids, self.w)
        return loss

    def bytes_per_device(self):
        """(table, optimiser state) bytes on the first device, read from the arrays."""
        table = self.state["params"]["rows"][...].addressable_shards[0].data.nbytes
        opt = sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(self.state["opt_state"]))
        return table, opt


def mb(n):
    return f"{n / 1e6:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[3])
    parser.add_argument("--cardinalities", default="1000,10000,100000,1000000",
                        help="comma-separated V values")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096, help="ids per step")
    parser.add_argument("--ids", choices=("zipf", "uniform"), default="zipf")
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    parser.add_argument("--sharded_mesh", choices=("1x8", "2x4"), default="1x8",
                        help="data x model of the row-sharded placement")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed steps per configuration (a third of it, at least 3, for V >= 1e6)")
    parser.add_argument("--onehot_max", type=int, default=10000,
                        help="also time kind='onehot' for V up to this (0: never)")
    args = parser.parse_args()
    cardinalities = [int(float(v)) for v in args.cardinalities.split(",")]
    sharded_mesh = tuple(int(n) for n in args.sharded_mesh.split("x"))
    placements = {"replicated": (DEVICES, 1), "sharded": sharded_mesh}

    start_benchmark(optax=optax.__version__)
    print(f"workload: FeatureEmbedding(V, {args.dim}) float32, batch {args.batch} {args.ids} ids, "
          f"loss mean(sum((rows[ids] @ W)^2)), {args.optimizer} lr {LEARNING_RATE}, state donated; "
          f"replicated = mesh data {DEVICES} x model 1, sharded = mesh data {sharded_mesh[0]} x "
          f"model {sharded_mesh[1]}; {DEVICES} simulated devices on {os.cpu_count()} CPUs")
    print("bytes per device read from addressable_shards[0]; 'all-gather' (any in the text) and 'max "
          "all-reduce' (groups of > 1 device) from the compiled step's HLO; ratio = median over "
          "interleaved pairs of sharded ms / replicated ms")
    print(f"\n{'V':>8s} {'kind':>6s} {'placement':>10s} {'mesh':>4s} {'ms':>8s} {'ids/s':>9s} "
          f"{'shard/repl':>10s} {'table MB/dev':>12s} {'opt MB/dev':>10s} {'all-gather':>10s} "
          f"{'max all-reduce MB':>17s} {'compile+1st s':>13s}")
    for cardinality in cardinalities:
        ids_host = draw_ids(cardinality, args.batch, args.ids)
        kinds = ("table", "onehot") if cardinality <= args.onehot_max else ("table",)
        repeats = max(3, args.repeats // 3) if cardinality >= 10**6 else args.repeats
        for kind in kinds:
            trainers = {name: Trainer(cardinality, kind, shape, args, ids_host)
                        for name, shape in placements.items()}
            reference, sharded = trainers["replicated"], trainers["sharded"]
            np.testing.assert_allclose(sharded.first_loss, reference.first_loss, rtol=1e-5)
            np.testing.assert_allclose(sharded.first_rows, reference.first_rows, rtol=1e-5, atol=1e-7)
            times = interleaved_ms(trainers, repeats)
            ratio = statistics.median(s / r for s, r in zip(times["sharded"], times["replicated"],
                                                             strict=True))
            for name, trainer in trainers.items():
                ms = statistics.median(times[name])
                table, opt = trainer.bytes_per_device()
                gather = mb(trainer.collectives.get("all-gather", 0)) + " MB"
                print(f"{cardinality:8d} {kind:>6s} {name:>10s} {'x'.join(map(str, placements[name])):>4s} "
                      f"{ms:8.2f} {args.batch / ms * 1e3:9.3g} "
                      f"{(f'{ratio:.2f}' if name == 'sharded' else ''):>10s} {mb(table):>12s} "
                      f"{mb(opt):>10s} {(gather if trainer.has_all_gather else 'no'):>10s} "
                      f"{mb(trainer.collectives.get('all-reduce', 0)):>17s} {trainer.compile_s:13.1f}")
            del trainers, reference, sharded
        share = np.mean(ids_host < cardinality // sharded_mesh[1])
        print(f"{'':8s} ({repeats} repeats; {share:.0%} of the batch's ids fall in the first "
              f"model shard's rows)")


if __name__ == "__main__":
    main()
