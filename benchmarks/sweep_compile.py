"""python benchmarks/sweep_compile.py [--quick]

A K-value tolerance sweep through the runner compiles its train step once, against a
loop that runs the same K trainings as separate sweeps (a fresh compile each, as a
script that bakes rtol into the program would). XLA backend compilations are counted
with ``jax.monitoring``, independently of the runner's own ``compile_reused`` column.

Workload: configs/quick.py shrunk to adaptive Tsit5 on associative recall, width 16,
``--train-steps`` steps per run, rtol swept over K log-spaced values (atol = rtol / 10).
"""

import argparse
import tempfile
import time

import jax
import ml_collections
import numpy as np
from harness import load_config, start_benchmark

from odeformer.runner import run_sweep

COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: COMPILES.append(duration)
    if event == "/jax/core/compile/backend_compile_duration" else None)


def base_config(train_steps: int) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(load_config("configs/quick.py").to_dict())
    c.model.width, c.model.heads = 16, 2
    c.solver.name, c.solver.adaptive = "tsit5", True
    c.task.num_train, c.task.num_test = 512, 128
    c.train.num_steps, c.train.warmup_steps, c.train.log_every = train_steps, 1, train_steps
    c.train.eval_batch_size = 128
    c.sweep = ml_collections.ConfigDict({})
    return c


def tolerances(k: int) -> list[tuple[float, float]]:
    rtols = np.geomspace(1e-2, 1e-5, k)
    return [(float(r), float(r) / 10) for r in rtols]


def one_sweep(k: int, train_steps: int) -> tuple[float, int, int]:
    """All K values in one sweep: (seconds, backend compiles, runs reusing a compile)."""
    c = base_config(train_steps)
    rtols, atols = zip(*tolerances(k), strict=True)
    c.sweep = ml_collections.ConfigDict({"solver": {"rtol": rtols, "atol": atols}})
    c.sweep_zip = (("solver.rtol", "solver.atol"),)
    before, t = len(COMPILES), time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        summary = run_sweep(c, workdir, quiet=True)
        reused = int(summary.table.compile_reused.sum())
    return time.perf_counter() - t, len(COMPILES) - before, reused


def recompiling_loop(k: int, train_steps: int) -> tuple[float, int]:
    """The same K trainings as K separate sweeps: (seconds, backend compiles)."""
    before, t = len(COMPILES), time.perf_counter()
    for rtol, atol in tolerances(k):
        c = base_config(train_steps)
        c.solver.rtol, c.solver.atol = rtol, atol
        with tempfile.TemporaryDirectory() as workdir:
            run_sweep(c, workdir, quiet=True)
    return time.perf_counter() - t, len(COMPILES) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--values", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="K = 1, 2 and 10 train steps")
    args = parser.parse_args()
    if args.quick:
        args.values, args.train_steps = [1, 2], 10
    start_benchmark()
    print(f"{'K':>3} {'sweep s':>8} {'compiles':>8} {'reused':>6} {'loop s':>8} {'compiles':>8} "
          f"{'loop/sweep':>10}")
    one_sweep(1, args.train_steps)  # warm caches shared by both (task data, imports)
    for k in args.values:
        sweep_s, sweep_compiles, reused = one_sweep(k, args.train_steps)
        loop_s, loop_compiles = recompiling_loop(k, args.train_steps)
        print(f"{k:>3} {sweep_s:>8.2f} {sweep_compiles:>8} {reused:>6} {loop_s:>8.2f} "
              f"{loop_compiles:>8} {loop_s / sweep_s:>10.2f}")


if __name__ == "__main__":
    main()
