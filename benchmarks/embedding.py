"""python benchmarks/embedding.py [--cardinalities 1e5,1e6,1e7] [--dim 32] [--batch 4096]
    [--ids zipf|uniform] [--updates adamw,lazy_adam,rowwise_adagrad] [--placements replicated,single,sharded]
    [--sharded_mesh 1x8] [--repeats 10] [--onehot_max 10000] [--memory_gb 0]

One embedding table's training step: dense against row-sparse updates, replicated against row-sharded.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``); sets
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` itself (appended to any XLA_FLAGS).
The step: ``FeatureEmbedding(V, dim, kind="table")`` looks up a batch of ids, loss
``mean(sum((rows[ids] @ W)**2, -1))`` with a fixed random ``W`` [dim, dim], one update, jitted
with the train state (table and optimiser state) donated. Ids are drawn once, Zipf
(P(id = k) ~ 1/(k + 1), id 0 most frequent, as ``odeformer.categorical.vocabulary`` orders
rows) or uniform. Updates (``--updates``), all at learning rate 1e-3:

- ``adamw``: ``jax.grad`` in the table (a [V, dim] gradient), optax AdamW (its default weight
  decay 1e-4), which reads and writes every row and both moments: 3 V dim floats each way.
  ``sgd``: the same gradient, optax SGD (no state).
- ``lazy_adam``, ``rowwise_adagrad`` (``odeformer.categorical.sparse``): the rows are looked up
  with ``embed.gather(embed.row_ids(ids))``, the loss is taken on ``embed.combine(rows)`` and
  differentiated in the looked-up rows only ([batch, dim]); the row ids and their gradients are
  resharded to replicated, summed per distinct row (``row_gradient``) and
  ``SparseOptimizer.update`` writes the rows the batch read, of the table and of its state.
  ``lazy_adam`` takes AdamW's weight decay (on the rows it writes).

Placements (``--placements``), all called inside ``jax.set_mesh`` with the state created in
place by ``odeformer.parallel.mesh.init_sharded`` (``state_shardings``: rows on ``model``), so the
lookup is ``odeformer.categorical.sharded_lookup.lookup`` and the tables equal bit for bit:

- replicated: mesh (data=8, model=1), every device holds the whole table and optimiser state,
  ids split on ``data``;
- single: mesh (data=1, model=1), one device, the plain single-device baseline;
- sharded: mesh (data=1, model=8) by default, the table and its optimiser state split by rows
  on ``model``, every device sees the whole batch. Chosen over (data=2, model=4) because it
  holds 1/8 rather than 1/4 of the table per device and the dense gradient needs no
  all-reduce (with data=2 each shard's gradient is summed over the two data replicas every
  step); its cost is that the per-id work (masked gather, psum of the looked-up rows, loss)
  is repeated on all 8 devices. ``--sharded_mesh 2x4`` measures the other choice.

Memory: before anything of a V is allocated, every step is compiled from abstract shapes and its
``memory_analysis()`` gives each device's state and temporary bytes (the larger of the step's
and of its ``init_sharded`` program's: creating the state takes three table sizes of
temporaries, whatever the optimiser). In order (placement, then update), the steps of a V go
into groups whose state plus the largest temporary, summed over devices, fits ``--memory_gb``
(default 75% of MemAvailable when the V starts); one step that alone does not fit is skipped
with what it needs (replicated AdamW at 1e7 x 32: 8 copies of 3.84 GB). The steps of a group are
timed interleaved, groups one after the other, in turns: each step runs once untimed, then twice
timed (``harness.interleaved_ms`` with ``block=2``). A step timed right after another step's
table-sized one pays for it: at 1e7 rows sharded, ``lazy_adam`` took 52–346 ms right after
AdamW's step and 10–21 ms after one of its own.

Before anything is timed, each step's first call is checked: its loss equals the other
updates' and placements' (rtol 1e-5); the rows the batch read, after the step, equal the same
update's on the first placement, and ``lazy_adam``'s equal ``adamw``'s to 1e-6 (a first Adam
step moves every element by about the learning rate, 1e-3, and both decay read rows alike;
AdamW also decays the unread rows, by 1e-7 of their size, so they are not compared); a sparse
update changes every row the batch read and no other, by a per-row fingerprint taken before and
after (the row's float bits times random odd constants, summed mod 2**32: any one changed
element changes it; it sees AdamW's decay change nearly every unread row in its last bit). The
steps and checks are in ``benchmarks/embedding_steps.py``.

Per V, update and placement: median step ms, ids/s, ``adamw/this`` (the median over
interleaved pairs of the AdamW step's time over this one's on the same placement; a ratio of
medians, marked ``*``, where AdamW ran in another group), bytes per device of the table and of
the optimiser state (``addressable_shards[0]``) and of the step's temporaries, and the largest
result of each kind of collective in the compiled HLO over groups of more than one device.
``--onehot_max`` adds ``kind="onehot"`` (a dense [batch, V] operand) with the dense updates
for V up to that value.
"""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]).strip()

import argparse
import statistics

import jax
import numpy as np
import optax
from embedding_steps import DENSE, LEARNING_RATE, UPDATES, WEIGHT_DECAY, Trainer, check_first_step
from harness import interleaved_ms, start_benchmark

DEVICES = 8


def draw_ids(cardinality, batch, distribution, seed=0):
    """int32 [batch] in [0, cardinality): Zipf with exponent 1 (id 0 most frequent) or uniform."""
    rng = np.random.default_rng(seed)
    if distribution == "uniform":
        return rng.integers(0, cardinality, batch).astype(np.int32)
    weights = 1.0 / np.arange(1, cardinality + 1)
    return rng.choice(cardinality, batch, p=weights / weights.sum()).astype(np.int32)


def memory_budget(memory_gb):
    """Bytes the trainers of one V may use: ``memory_gb``, or 75% of MemAvailable now."""
    if memory_gb > 0:
        return memory_gb * 1e9
    with open("/proc/meminfo") as meminfo:
        available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable"))
    return 0.75 * available


def pack(trainers, budget):
    """``(groups, skipped)``: the trainers in order, in groups whose state plus largest temporary
    fits ``budget``; a trainer that alone does not fit is skipped."""
    groups, skipped = [], []
    for trainer in trainers:
        if trainer.resident + trainer.temp > budget:
            skipped.append(trainer)
        elif groups and (sum(t.resident for t in groups[-1]) + trainer.resident
                         + max(t.temp for t in [*groups[-1], trainer])) <= budget:
            groups[-1].append(trainer)
        else:
            groups.append([trainer])
    return groups, skipped


def short(cardinality):
    """``1e7`` for 10**7, ``3e7``; other values as they are."""
    mantissa, exponent = f"{cardinality:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}" if float(f"{cardinality:.0e}") == cardinality else str(cardinality)


def gb(n):
    return f"{n / 1e9:.2f} GB"


def mb(n):
    return f"{n / 1e6:.3f}"


def time_group(group, turns, medians, pair_ratios):
    """Times the started trainers of ``group`` interleaved: fills ``medians[(update, placement)]``
    and ``pair_ratios[(update, placement)]`` (the median of AdamW / this over pairs)."""
    times = interleaved_ms({(t.update, t.placement): t for t in group}, turns, block=2)
    for (update, placement), ms in times.items():
        medians[update, placement] = statistics.median(ms)
        dense = times.get(("adamw", placement))
        if dense is not None and update != "adamw":
            pair_ratios[update, placement] = statistics.median(a / b for a, b in zip(dense, ms, strict=True))


def print_row(cardinality, kind, trainer, medians, pair_ratios, batch):
    key = (trainer.update, trainer.placement)
    ms = medians[key]
    ratio = ""
    if key in pair_ratios:
        ratio = f"{pair_ratios[key]:.1f}"
    elif trainer.update != "adamw" and ("adamw", trainer.placement) in medians:
        ratio = f"{medians['adamw', trainer.placement] / ms:.1f}*"
    moved = ", ".join(f"{op} {size / 1e6:.3g}" for op, size in sorted(trainer.collectives.items())) or "none"
    print(f"{short(cardinality):>5s} {kind:>6s} {trainer.update:>15s} {trainer.placement:>10s} "
          f"{'x'.join(map(str, trainer.mesh_shape)):>4s} {ms:9.2f} {batch / ms * 1e3:9.3g} {ratio:>10s} "
          f"{mb(trainer.table_bytes):>12s} {mb(trainer.state_bytes):>12s} {mb(trainer.temp_per_device):>11s} "
          f"{trainer.compile_s:9.1f}  {moved}")


def run_cardinality(cardinality, kind, updates, placements, args, ids_host, w):
    """Compiles, packs, checks and times every (placement, update) of one V and kind; prints its rows."""
    trainers = [Trainer(cardinality, kind, update, name, shape, args)
                for name, shape in placements.items() for update in updates]
    budget = memory_budget(args.memory_gb)
    groups, skipped = pack(trainers, budget)
    print(f"{'':5s} memory budget {gb(budget)}; groups timed one after the other: "
          + "; ".join(", ".join(f"{t.update} {t.placement}" for t in g) for g in groups))
    for trainer in skipped:
        print(f"{'':5s} skipped {trainer.update} {trainer.placement}: needs "
              f"{gb(trainer.resident + trainer.temp)} (state {gb(trainer.resident)} + largest temporary "
              f"{gb(trainer.temp)}, all devices) > budget {gb(budget)}")
    timed = max(3, args.repeats // 3) if cardinality >= 10**6 else args.repeats
    turns = max(1, round(timed / 2))
    first, medians, pair_ratios = {}, {}, {}
    for group in groups:
        for trainer in group:
            trainer.start(ids_host, w)
            check_first_step(trainer, first)
        time_group(group, turns, medians, pair_ratios)
        for trainer in group:
            trainer.stop()
    for group in groups:
        for trainer in group:
            print_row(cardinality, kind, trainer, medians, pair_ratios, args.batch)
    return 2 * turns


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[4])
    parser.add_argument("--cardinalities", default="1e5,1e6,1e7", help="comma-separated V values")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4096, help="ids per step")
    parser.add_argument("--ids", choices=("zipf", "uniform"), default="zipf")
    parser.add_argument("--updates", default="adamw,lazy_adam,rowwise_adagrad",
                        help=f"comma-separated, of {', '.join(UPDATES)}")
    parser.add_argument("--placements", default="replicated,single,sharded",
                        help="comma-separated, of replicated, single, sharded")
    parser.add_argument("--sharded_mesh", choices=("1x8", "2x4"), default="1x8",
                        help="data x model of the row-sharded placement")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed steps per configuration, rounded to even (a third of it, at least 3, "
                             "for V >= 1e6)")
    parser.add_argument("--onehot_max", type=int, default=10000,
                        help="also time kind='onehot' (dense updates) for V up to this (0: never)")
    parser.add_argument("--memory_gb", type=float, default=0,
                        help="host memory the steps of one V may hold (0: 75%% of MemAvailable)")
    args = parser.parse_args()
    cardinalities = [int(float(v)) for v in args.cardinalities.split(",")]
    updates = args.updates.split(",")
    shapes = {"replicated": (DEVICES, 1), "single": (1, 1),
              "sharded": tuple(int(n) for n in args.sharded_mesh.split("x"))}
    placements = {name: shapes[name] for name in args.placements.split(",")}
    for value, allowed in ((updates, UPDATES), (list(placements), shapes)):
        if not set(value) <= set(allowed):
            parser.error(f"{','.join(value)} is not a list of {', '.join(allowed)}")

    start_benchmark(optax=optax.__version__)
    print(f"workload: FeatureEmbedding(V, {args.dim}) float32, batch {args.batch} {args.ids} ids, "
          f"loss mean(sum((rows[ids] @ W)^2)), lr {LEARNING_RATE}, adamw and lazy_adam weight decay "
          f"{WEIGHT_DECAY}, state donated; placements "
          + ", ".join(f"{n} = mesh data {s[0]} x model {s[1]}" for n, s in placements.items())
          + f"; {DEVICES} simulated devices on {os.cpu_count()} CPUs")
    print("MB per device: table and optimiser state read from addressable_shards[0], temp from the "
          "compiled step's memory_analysis(); adamw/this = median over interleaved pairs of the AdamW "
          "step's ms over this one's (* a ratio of medians: timed in different groups); collectives: "
          "largest result in MB of each kind, groups of > 1 device")
    print(f"\n{'V':>5s} {'kind':>6s} {'update':>15s} {'placement':>10s} {'mesh':>4s} {'ms':>9s} "
          f"{'ids/s':>9s} {'adamw/this':>10s} {'table MB/dev':>12s} {'state MB/dev':>12s} "
          f"{'temp MB/dev':>11s} {'compile s':>9s}  collectives MB")
    w = np.asarray(jax.random.normal(jax.random.key(1), (args.dim, args.dim)) * args.dim ** -0.5)
    model_shards = placements.get("sharded", (1, 1))[1]
    for cardinality in cardinalities:
        ids_host = draw_ids(cardinality, args.batch, args.ids)
        repeats = run_cardinality(cardinality, "table", updates, placements, args, ids_host, w)
        dense = [u for u in updates if u in DENSE]
        if cardinality <= args.onehot_max and dense:
            run_cardinality(cardinality, "onehot", dense, placements, args, ids_host, w)
        share = np.mean(ids_host < cardinality // model_shards)
        print(f"{'':5s} ({repeats} timed steps each; {share:.0%} of the batch's ids fall in the first model "
              f"shard's rows, {len(np.unique(ids_host))} distinct)")


if __name__ == "__main__":
    main()
