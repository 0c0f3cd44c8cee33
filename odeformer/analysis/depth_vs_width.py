"""Depth vs width on the toy task (``configs/depth_vs_width.py``): the committed table's
statistics and the block of docs/results.md.

K counts the blocks a forward pass evaluates: the discrete family's layers, the tied ODE's
Euler steps. At K = 1 the two families are the same model, a check of the pipeline. The
verdict (**inconclusive**) is the design's, not a rule's: one learning rate for every depth
(capacity and trainability confounded) and the mechanism not measured; the block gives every
statistic the section's text reads (mean ± sample std over seeds).
"""

from __future__ import annotations

import pandas as pd

from odeformer.analysis.tables import mean_std, ok_rows, runs_line

BUDGET, FAMILY, K = "model.param_budget", "model.family", "solver.steps"
VERDICT = ("**inconclusive** by design: one learning rate for every depth confounds capacity with "
           "trainability, and no model's closeness to a continuous process (the mechanism) is measured")


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of test and train accuracy over seeds, per budget, family and K."""
    done = ok_rows(table)
    grouped = done.groupby([BUDGET, FAMILY, K])
    return grouped.agg(test=("test_accuracy", "mean"), test_std=("test_accuracy", "std"),
                       train=("train_accuracy", "mean"), width=("shape.width", "mean"),
                       seeds=("seed", "count"))


def _signed(value: float) -> str:
    return f"{value:+.3f}".replace("-", "−")


def render(table: pd.DataFrame) -> str:
    """The docs block: test accuracy per K, budget and family (discrete widths in parentheses),
    each family's best K, and the tied ODE's margin over the stack."""
    done = ok_rows(table)
    stats = summary(table)
    budgets = sorted(done[BUDGET].unique())
    families = [f for f in ("discrete", "ode") if f in set(done[FAMILY])]
    heads = [f"{int(b):,} {'discrete' if f == 'discrete' else 'ODE'}" for b in budgets for f in families]
    lines = [f"| K | {' | '.join(heads)} |", "|---|" + "---|" * len(heads)]
    for k in sorted(done[K].unique()):
        cells = []
        for b in budgets:
            for f in families:
                runs = done[(done[BUDGET] == b) & (done[FAMILY] == f) & (done[K] == k)]
                width = f" ({int(runs['shape.width'].iloc[0])})" if f == "discrete" and len(runs) else ""
                cells.append(mean_std(runs["test_accuracy"], 3) + width if len(runs) else "")
        lines.append(f"| {int(k)} | {' | '.join(cells)} |")
    best = [f"{'discrete' if f == 'discrete' else 'ODE'} at {int(b):,}: K = "
            f"{int(stats.loc[(b, f)]['test'].idxmax())}" for b in budgets for f in families]
    notes = [f"- Best K (mean test accuracy): {'; '.join(best)}."]
    if len(families) == 2:
        wide = stats["test"].unstack(FAMILY)
        margin = (wide["ode"] - wide["discrete"]).dropna()
        deep = margin[margin.index.get_level_values(K) >= 4]
        two = ", ".join(_signed(v) for v in margin.xs(2, level=K)) if 2 in set(done[K]) else "none"
        if len(deep):
            notes.append(f"- The tied ODE minus the discrete stack at K ≥ 4: {_signed(deep.min())} to "
                         f"{_signed(deep.max())}.")
        notes.append(f"- The tied ODE minus the discrete stack at K = 2: {two} (by budget).")
    if "discrete" in families:  # trainability: does train accuracy fall with depth too?
        for b in budgets:
            train = stats.loc[(b, "discrete")]["train"]
            notes.append(f"- Train accuracy of the discrete models at {int(b):,}: "
                         + ", ".join(f"{v:.3f} at K = {int(k)}" for k, v in train.items()) + ".")
    return "\n".join([
        runs_line(table, done, "test accuracy, mean ± sample std over seeds (the discrete model's width in "
                  "parentheses; the ODE's is the 1-layer model's)."),
        "",
        *lines,
        "",
        *notes,
        "",
        f"Verdict: {VERDICT}.",
    ])
