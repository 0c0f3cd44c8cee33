"""python benchmarks/plan_sweep.py [--config configs/param_efficiency.py] [--repeats 2]

Planning a sweep (``odeformer.experiment.runner.plan``: expand, validate, resolve parameter budgets)
with the budget search's parameter counts made once per (shape, task sizes, shards), as
``odeformer.experiment.budgets`` does, against the same planning with every count traced again (the
behaviour before the count cache). A count traces the model's construction; the table
gives the counts traced and the wall time of each, alternating the two in one process.
The plans must be equal.
"""

import argparse
import statistics
import time

from harness import load_config, start_benchmark

from odeformer.experiment import budgets
from odeformer.experiment.runner import _TaskCache, plan


class _Forgetful(dict):
    """A count cache that keeps nothing: every count is traced."""

    def __setitem__(self, key, value):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/param_efficiency.py")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    start_benchmark()
    config = load_config(args.config)
    tasks = _TaskCache()  # the task's data is made once, outside the timings
    plan(config, tasks)
    traced = [0]
    build_model = budgets.build_model

    def counting(*a, **k):  # called once per traced count
        traced[0] += 1
        return build_model(*a, **k)

    budgets.build_model = counting
    results = {"cached": [], "uncached": []}
    plans = {}
    try:
        for _ in range(args.repeats):
            for name, cache in (("uncached", _Forgetful()), ("cached", {})):
                budgets._COUNTS = cache
                traced[0] = 0
                t = time.perf_counter()
                plans[name] = plan(config, tasks)
                results[name].append((time.perf_counter() - t, traced[0]))
    finally:
        budgets.build_model = build_model
        budgets._COUNTS = {}
    assert plans["cached"] == plans["uncached"], "the cached plan differs"
    print(f"config {args.config}: {len(plans['cached'])} runs, {args.repeats} alternating repeats")
    print(f"{'planning':10s} {'counts traced':>14s} {'median s':>9s}")
    for name, rows in results.items():
        print(f"{name:10s} {rows[0][1]:14d} {statistics.median(s for s, _ in rows):9.2f}")
    ratio = statistics.median(s for s, _ in results["cached"]) / statistics.median(
        s for s, _ in results["uncached"])
    print(f"cached / uncached: {ratio:.3f}")


if __name__ == "__main__":
    main()
