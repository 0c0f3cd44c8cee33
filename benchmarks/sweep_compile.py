"""python benchmarks/sweep_compile.py [--axis rtol|steps] [--quick]

A K-value sweep through the runner compiles its train step once, against a loop that
runs the same K trainings as separate sweeps (a fresh compile each, as a script that
bakes the value into the program would). XLA backend compilations are counted with
``jax.monitoring``, independently of the runner's own ``compile_reused`` column.

Workload: configs/quick.py shrunk to width 16 on associative recall, ``--train-steps``
steps per run. ``--axis rtol`` (default): adaptive Tsit5, rtol swept over K log-spaced
values (atol = rtol / 10). ``--axis steps``: fixed-step RK4 with 1..K steps (the sweep's
runs share one program bounded by K steps; each loop run compiles for its own count).
"""

import argparse
import tempfile
import time

import jax
import ml_collections
import numpy as np
from harness import load_config, start_benchmark

from odeformer.experiment.runner import run_sweep

COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: COMPILES.append(duration)
    if event == "/jax/core/compile/backend_compile_duration" else None)


def base_config(train_steps: int, axis: str = "rtol") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(load_config("configs/quick.py").to_dict())
    c.model.width, c.model.heads = 16, 2
    c.solver.name, c.solver.adaptive = ("tsit5", True) if axis == "rtol" else ("rk4", False)
    c.task.num_train, c.task.num_test = 512, 128
    c.train.num_steps, c.train.warmup_steps, c.train.log_every = train_steps, 1, train_steps
    c.train.eval_batch_size = 128
    c.sweep = ml_collections.ConfigDict({})
    return c


def tolerances(k: int) -> list[tuple[float, float]]:
    rtols = np.geomspace(1e-2, 1e-5, k)
    return [(float(r), float(r) / 10) for r in rtols]


def axis_values(axis: str, k: int) -> list[dict]:
    """The K values of the swept solver keys, one dict per run."""
    if axis == "rtol":
        return [{"rtol": r, "atol": a} for r, a in tolerances(k)]
    return [{"steps": n} for n in range(1, k + 1)]


def one_sweep(k: int, train_steps: int, axis: str = "rtol") -> tuple[float, int, int]:
    """All K values in one sweep: (seconds, backend compiles, runs reusing a compile)."""
    c = base_config(train_steps, axis)
    values = axis_values(axis, k)
    c.sweep = ml_collections.ConfigDict({"solver": {key: tuple(v[key] for v in values)
                                                    for key in values[0]}})
    c.sweep_zip = (tuple(f"solver.{key}" for key in values[0]),) if len(values[0]) > 1 else ()
    before, t = len(COMPILES), time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        summary = run_sweep(c, workdir, quiet=True)
        reused = int(summary.table.compile_reused.sum())
    return time.perf_counter() - t, len(COMPILES) - before, reused


def recompiling_loop(k: int, train_steps: int, axis: str = "rtol") -> tuple[float, int]:
    """The same K trainings as K separate sweeps: (seconds, backend compiles)."""
    before, t = len(COMPILES), time.perf_counter()
    for value in axis_values(axis, k):
        c = base_config(train_steps, axis)
        c.solver.update(value)
        with tempfile.TemporaryDirectory() as workdir:
            run_sweep(c, workdir, quiet=True)
    return time.perf_counter() - t, len(COMPILES) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--values", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--axis", choices=("rtol", "steps"), default="rtol",
                        help="the swept solver key: tolerances (adaptive) or step counts (fixed)")
    parser.add_argument("--quick", action="store_true", help="K = 1, 2 and 10 train steps")
    args = parser.parse_args()
    if args.quick:
        args.values, args.train_steps = [1, 2], 10
    start_benchmark()
    print(f"{'K':>3} {'sweep s':>8} {'compiles':>8} {'reused':>6} {'loop s':>8} {'compiles':>8} "
          f"{'loop/sweep':>10}")
    one_sweep(1, args.train_steps, args.axis)  # warm caches shared by both (task data, imports)
    for k in args.values:
        sweep_s, sweep_compiles, reused = one_sweep(k, args.train_steps, args.axis)
        loop_s, loop_compiles = recompiling_loop(k, args.train_steps, args.axis)
        print(f"{k:>3} {sweep_s:>8.2f} {sweep_compiles:>8} {reused:>6} {loop_s:>8.2f} "
              f"{loop_compiles:>8} {loop_s / sweep_s:>10.2f}")


if __name__ == "__main__":
    main()
