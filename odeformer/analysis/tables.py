"""Reading a results table the way a careful reviewer would: seeds, error bars, budgets.

Importable from notebooks (which only read results and plot). Every function takes the
DataFrame of :func:`odeformer.experiment.results.load` and uses only rows with ``status == "ok"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

FAMILY_ORDER = {"gpt": 0, "ode": 1, "smooth": 2, "rk2_gated": 3}  # the language families, as tables list them
_LAYERED = ("gpt", "rk2_gated")  # families whose depth is their layer count


def lm_depth(table: pd.DataFrame) -> pd.Series:
    """A language model's depth: the layers of gpt and rk2_gated, the ODE families' solver steps."""
    layered = table["model.family"].isin(_LAYERED)
    depth = np.where(layered, table["model.layers"], table["solver.steps"])
    return pd.Series(depth, index=table.index).astype(int)


def fewer_heads(runs: pd.DataFrame, where: pd.Series) -> str:
    """One sentence naming the language models with fewer attention heads than the most any has:
    a width resolved from a budget (or taken from such a gpt, at equal FLOPs) that is not a
    multiple of the configured heads keeps its largest divisor below them
    (``odeformer.experiment.budgets``). ``where`` labels each row's budget or arm."""
    if runs["shape.heads"].isna().all():
        return "No finished model to count attention heads of."
    most = int(runs["shape.heads"].max())
    runs = runs.assign(depth=lm_depth, where=where)  # before filtering: an empty frame adopts an index
    few = runs[runs["shape.heads"] < most]
    if few.empty:
        return f"Every model has {most} attention heads."
    few = few.drop_duplicates(["model.family", "depth", "where", "shape.width", "shape.heads"])
    few = few.iloc[np.lexsort((np.arange(len(few)), few["depth"], few["model.family"].map(FAMILY_ORDER)))]
    cells = [f"{r['model.family']} at depth {r['depth']}, {r['where']} (width {int(r['shape.width'])}, "
             f"{int(r['shape.heads'])} head{'s' if r['shape.heads'] > 1 else ''})" for _, r in few.iterrows()]
    return (f"Attention heads: {most} wherever the resolved width is a multiple of {most}, else the width's "
            f"largest divisor below {most}: {'; '.join(cells)}.")


def ok_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The finished, successful runs (failed runs stay in the table, recorded)."""
    if table.empty or "status" not in table:
        return table
    return table[table["status"] == "ok"]


def seed_summary(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean, sample standard deviation (ddof=1; NaN for one seed) and count of each
    metric over the runs that share the ``by`` columns (i.e. over seeds).

    Returns:
      One row per group: the ``by`` columns, then ``<metric>_mean``, ``<metric>_std``,
      ``<metric>_n`` for each metric.
    """
    rows = ok_rows(table)
    grouped = rows.groupby(list(by), dropna=False)[list(metrics)]
    out = grouped.agg(["mean", "std", "count"])
    out.columns = [f"{metric}_{stat.replace('count', 'n')}" for metric, stat in out.columns]
    return out.reset_index()


def budget_to_reach(budgets: Sequence[float], accuracies: Sequence[float], target: float) -> float:
    """The smallest budget at which the accuracy curve first reaches ``target``.

    The curve is piecewise linear in log(budget) between grid points (sorted by budget),
    so the answer falls between the last grid point below the target and the first one
    at or above it.

    Returns:
      The interpolated budget; the smallest budget if the curve starts at or above the
      target (the true value may be smaller: the grid is censored there); ``inf`` if it
      never reaches it.
    """
    order = np.argsort(np.asarray(budgets, dtype=float))
    b = np.asarray(budgets, dtype=float)[order]
    a = np.asarray(accuracies, dtype=float)[order]
    above = np.flatnonzero(a >= target)
    if above.size == 0:
        return float("inf")
    i = int(above[0])
    if i == 0:
        return float(b[0])
    lb0, lb1 = np.log(b[i - 1]), np.log(b[i])
    frac = (target - a[i - 1]) / (a[i] - a[i - 1])
    return float(np.exp(lb0 + frac * (lb1 - lb0)))


@dataclasses.dataclass(frozen=True)
class Ratio:
    """Budget ratio ``numerator / denominator`` to reach a target accuracy.

    Attributes:
      value: from the seed-mean accuracy curves.
      low, high: percentile bootstrap interval over seeds (``level``), NaN if more than
        half of the resamples never reach the target for one of the families.
      level: the interval's coverage, e.g. 0.95.
      unreached: fraction of bootstrap resamples where one family never reached it.
      numerator_budget, denominator_budget: the two budgets behind ``value``.
    """

    value: float
    low: float
    high: float
    level: float
    unreached: float
    numerator_budget: float
    denominator_budget: float


def budget_ratio(table: pd.DataFrame, family: str, numerator: str, denominator: str, *,
                 target: float, budget: str = "params", metric: str = "test_accuracy",
                 group_budget: str | None = None, resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> Ratio:
    """How many parameters ``numerator`` needs relative to ``denominator`` to reach
    ``target`` (below 1: ``numerator`` is more parameter-efficient).

    Each family's accuracy-vs-budget curve is the mean over seeds at every budget
    point; the interval resamples the seeds of every (family, budget) point with
    replacement (a percentile bootstrap).

    Args:
      table: results, one row per run.
      family: column naming the family (e.g. ``"label"``); ``numerator`` and
        ``denominator`` are two of its values.
      target: accuracy to reach.
      budget: column used as the x axis (realised parameter counts by default).
      metric: column of the accuracy.
      group_budget: column identifying a budget point when the realised counts of its
        seeds differ (e.g. ``"model.param_budget"``); the x value is then the mean of
        ``budget`` over the point. Default: ``budget`` itself.
      resamples: bootstrap resamples.
      level: the interval's coverage (e.g. 0.95).
      seed: seed of the bootstrap's draws.
    """
    rows = ok_rows(table)
    key = group_budget or budget
    curves = {}
    for name in (numerator, denominator):
        part = rows[rows[family] == name]
        if part.empty:
            raise ValueError(f"no finished runs with {family}={name!r}")
        x = part.groupby(key)[budget].mean()
        accs = part.groupby(key)[metric].apply(lambda s: s.to_numpy(float))
        curves[name] = (x.loc[accs.index].to_numpy(float), list(accs))
    budgets_needed = {name: budget_to_reach(x, [a.mean() for a in accs], target)
                      for name, (x, accs) in curves.items()}
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        needed = []
        for name in (numerator, denominator):
            x, accs = curves[name]
            means = [rng.choice(a, size=a.size, replace=True).mean() for a in accs]
            needed.append(budget_to_reach(x, means, target))
        draws.append(needed[0] / needed[1] if np.isfinite(needed).all() else np.nan)
    draws = np.asarray(draws)
    unreached = float(np.isnan(draws).mean())
    if unreached > 0.5:
        low = high = float("nan")
    else:
        # Resamples in which a family never reaches the target are dropped; their share
        # is reported as ``unreached``.
        finite = draws[np.isfinite(draws)]
        low, high = np.quantile(finite, [(1 - level) / 2, (1 + level) / 2])
    value = budgets_needed[numerator] / budgets_needed[denominator]
    return Ratio(float(value), float(low), float(high), level, unreached,
                 budgets_needed[numerator], budgets_needed[denominator])


def mean_std(values, digits: int | str = 3) -> str:
    """``mean ± std`` over seeds (sample std; no ``±`` for one value): ``digits`` decimals for
    both, or a format spec such as ``".3g"`` for the mean with two significant figures for the std."""
    values = np.asarray(values, float)
    spec = f".{digits}f" if isinstance(digits, int) else digits
    spread = ".2g" if spec.endswith("g") else spec
    if values.size < 2:
        return f"{values.mean():{spec}}"
    return f"{values.mean():{spec}} ± {values.std(ddof=1):{spread}}"


def runs_line(table: pd.DataFrame, done: pd.DataFrame, what: str = "") -> str:
    """A block's first line: how many runs finished and failed of those planned (the exported
    table's ``planned_runs``, else its length), then ``what``."""
    planned = int(table["planned_runs"].max()) if "planned_runs" in table else len(table)
    head = f"Runs: {len(done)} finished, {len(table) - len(done)} failed, of {planned} planned"
    return f"{head}; {what}" if what else f"{head}."
