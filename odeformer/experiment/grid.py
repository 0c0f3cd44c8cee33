"""The resolved grid of a sweep, shown before anything trains (``--dry_run``).

Everything here is what the runner would do: the same expansion, normalisation, budget
resolution and compile grouping (``odeformer.experiment.runner.plan``). Only the task data
is built (a tabular task's table sizes depend on it); nothing is trained or written.
"""

from __future__ import annotations

import ml_collections
import pandas as pd

from odeformer.experiment.runner import estimated_cost, plan, structure_key
from odeformer.experiment.sweeps import expand, shard


def grid(config: ml_collections.ConfigDict, shard_index: int = 0, shard_count: int = 1) -> pd.DataFrame:
    """One row per run of this shard, in grid order: ``run_id``, the swept values, and for
    training runs ``compile`` (runs with the same number share one compiled train step),
    ``params`` and ``cost`` (training steps x batch x field evaluations per forward pass x
    width^2, relative to the cheapest run).

    Raises:
      ValueError: naming the first invalid key, as the runner would.
    """
    if config.get("experiment") != "train":
        runs = shard(expand(config), shard_index, shard_count)
        return pd.DataFrame([{"run_id": run.run_id, **run.swept} for run in runs])
    planned = shard(plan(config), shard_index, shard_count)
    groups: dict[str, int] = {}
    rows = []
    for p in planned:
        group = groups.setdefault(structure_key(p), len(groups))
        rows.append({"run_id": p.run.run_id, **p.run.swept, "compile": group, "params": p.params,
                     "cost": estimated_cost(p)})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["cost"] = frame["cost"] / frame["cost"].min()
    return frame


def format_grid(config: ml_collections.ConfigDict, shard_index: int = 0, shard_count: int = 1) -> str:
    """:func:`grid` as text, with a first line counting runs, compiles and total cost."""
    frame = grid(config, shard_index, shard_count)
    if frame.empty:
        return f"{config.name}: no runs"
    head = f"{config.name}: {len(frame)} run(s)"
    if "compile" in frame:
        head += (f", {frame['compile'].nunique()} compiled train step(s), total cost "
                 f"{frame['cost'].sum():.4g} x the cheapest run")
    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_rows", None):
        table = frame.to_string(index=False, float_format=lambda x: f"{x:.4g}")
    return f"{head}\n{table}"
