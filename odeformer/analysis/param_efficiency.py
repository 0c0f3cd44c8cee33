"""Parameter efficiency on the toy task (``configs/param_efficiency.py``): the committed table's
statistics and the block of docs/results.md.

For each family the budget at which its seed-mean accuracy curve reaches a target (linear in log
parameters between grid points), as a ratio to a baseline's, with a percentile bootstrap over
seeds (``odeformer.analysis.tables.budget_ratio``). The targets and resamples are the config's
``analysis`` keys (:data:`TARGETS`, :data:`RESAMPLES`; a test ties them). The claim, "30% more
parameter-efficient", needs a ratio of at most :data:`CLAIM`. The verdict (**inconclusive**) is
the design's: one learning rate for every family, the 1-layer baseline picked on this task's test
accuracy, no arm at equal FLOPs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from odeformer.analysis.tables import budget_ratio, mean_std, ok_rows, runs_line

TARGETS = (0.6, 0.7, 0.8)  # configs/param_efficiency.py's analysis.targets, fixed before the runs
RESAMPLES = 2000
CLAIM = 1 / 1.3
FAMILIES = {"discrete-L4": "discrete 4 layers", "discrete-L1": "discrete 1 layer", "ode-tied": "ODE tied",
            "ode-concat": "ODE time-conditioned"}
PAIRS = (("ode-tied", "discrete-L4"), ("ode-concat", "discrete-L4"), ("ode-tied", "discrete-L1"),
         ("ode-concat", "discrete-L1"))
VERDICT = ("**inconclusive** by design: one learning rate for every family, the 1-layer baseline picked on "
           "this task's test accuracy, and no arm at equal FLOPs")


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """The finished runs with a ``label``: ``discrete-L<layers>`` or ``ode-<time>``."""
    done = ok_rows(table).copy()
    done["label"] = np.where(done["model.family"] == "discrete", "discrete-L" + done["shape.layers"].astype(
        int).astype(str), "ode-" + done["model.time"].astype(str))
    return done


def render(table: pd.DataFrame, targets=TARGETS, resamples: int = RESAMPLES) -> str:
    """The docs block: test accuracy per budget and family, and the budget ratios at each target."""
    done = labelled(table)
    labels = [k for k in FAMILIES if k in set(done["label"])]
    budgets = sorted(done["model.param_budget"].unique())
    lines = [f"| budget | {' | '.join(FAMILIES[k] for k in labels)} |", "|---|" + "---|" * len(labels)]
    for b in budgets:
        at = done[done["model.param_budget"] == b]
        cells = [mean_std(at.loc[at["label"] == k, "test_accuracy"], 3) for k in labels]
        lines.append(f"| {int(b):,} | {' | '.join(cells)} |")
    pairs = [p for p in PAIRS if set(p) <= set(labels)]
    heads = [f"{FAMILIES[n]} / {FAMILIES[d]}" for n, d in pairs]
    ratios = [f"| target | {' | '.join(heads)} |", "|---|" + "---|" * len(pairs)]
    for target in targets:
        cells = []
        for n, d in pairs:
            r = budget_ratio(done, "label", n, d, target=target, group_budget="model.param_budget",
                             resamples=resamples)
            reached = np.isfinite(r.value)
            cells.append(f"{r.value:.3f} [{r.low:.3f}, {r.high:.3f}]" if reached else "not reached")
        ratios.append(f"| {target:g} | {' | '.join(cells)} |")
    return "\n".join([
        runs_line(table, done, "test accuracy, mean ± sample std over seeds (budget = `model.param_budget`; "
                  "realised counts within 5%)."),
        "",
        *lines,
        "",
        f"Budget ratios (the family's parameters over the baseline's to reach the target; 95% bootstrap over "
        f"seeds, {resamples:,} resamples; at most {CLAIM:.2f} supports the claim):",
        "",
        *ratios,
        "",
        f"Verdict: {VERDICT}.",
    ])
