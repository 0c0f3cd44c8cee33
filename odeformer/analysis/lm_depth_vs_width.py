"""Depth vs width on language modelling (``configs/lm_depth_vs_width.py``): the learning rate of
each family and depth chosen on validation, and the rules its verdicts follow.

The claim: fewer, wider layers beat many narrow ones at a fixed parameter budget *because they
better approximate the continuous process*. Rules, fixed before the test runs (margin
:data:`MARGIN` nats per character; Student-t 95% intervals over seeds 0-4, paired by seed):

- *Outcome, equal parameters*: for gpt at each budget, the paired difference of validation loss
  ``deep - shallow``, deep = 8 layers, shallow = the better of 1 and 2 layers. **Reproduced** if
  at every budget the interval lies above the margin; **not supported** if at every budget it lies
  below minus the margin (the deep model wins) or inside ±margin (no difference); else
  **inconclusive**. The same contrast is reported for the ODE families.
- *Outcome, equal FLOPs*: the same rule for the tied ODE at a gpt's width (equal FLOPs across its
  depths), 8 steps against the better of 1 and 2.
- *Mechanism*: closeness to a flow is the validation loss change when re-solved at twice the steps
  (``|val_loss@train:x2 - val_loss@train|``, ode and smooth) and the relative change between
  adjacent layers' weights (``layer_change``, gpt and smooth). At each budget and family, the
  Spearman correlation between distance from a flow and validation loss over that family's models
  (depths x seeds), with a 95% bootstrap interval over models. **Reproduced** if the correlation is
  positive (closer to a flow, lower loss) with an interval above 0 at every budget for some
  family and the winning (shallower) shapes are the closer ones; **not supported** if every
  interval excludes 0 the other way, or the winners are the farther ones; else **inconclusive**.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from odeformer.analysis.protocol import select_by_validation

MARGIN = 0.01  # nats per character


def with_depth(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``depth`` column: gpt's layers, the ODE families' solver steps."""
    out = table.copy()
    gpt = out["model.family"] == "gpt"
    out["depth"] = np.where(gpt, out["model.layers"], out["solver.steps"]).astype(int)
    return out


def choose_learning_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per family and depth, the learning rate with the lowest validation loss averaged over the
    pilot's runs (one seed at each pilot budget); ``at_edge`` marks a choice at the end of the grid
    tried for that arm (the grid must then be extended there).

    Returns:
      Columns ``model.family``, ``depth``, ``learning_rate``, ``val_loss``, ``at_edge``, ``tried``.
    """
    table = with_depth(table)
    chosen = select_by_validation(table, ["model.family", "depth"], axis="train.learning_rate",
                                  metric="val_loss", report=("val_loss",))
    rows = []
    for (family, depth), runs in chosen.groupby(["model.family", "depth"], sort=False):
        rate = float(runs["chosen_train.learning_rate"].iloc[0])
        tried = sorted(table.loc[(table["model.family"] == family) & (table["depth"] == depth),
                                 "train.learning_rate"].unique())
        rows.append({"model.family": family, "depth": int(depth), "learning_rate": rate,
                     "val_loss": float(runs["val_loss_mean"].iloc[0]),
                     "at_edge": rate in (tried[0], tried[-1]), "tried": ", ".join(f"{r:g}" for r in tried)})
    order = {"gpt": 0, "ode": 1, "smooth": 2}
    return pd.DataFrame(rows).sort_values(["model.family", "depth"], key=lambda s: s.map(order) if
                                          s.name == "model.family" else s).reset_index(drop=True)


def render_choice(table: pd.DataFrame) -> str:
    """The docs block of the learning-rate pilot: the grid's mean validation loss per family,
    depth and rate, and the choice."""
    table = with_depth(table)
    choice = choose_learning_rates(table)
    rates = sorted(table["train.learning_rate"].unique())
    done = table[table["status"] == "ok"]
    lines = [f"Runs: {len(done)} finished of {len(table)} recorded (seed {sorted(table['seed'].unique())}, "
             f"budgets {', '.join(f'{b:,}' for b in sorted(table['model.param_budget'].unique()))}); mean "
             "validation loss over the budgets, nats per character:",
             "",
             "| family | depth | " + " | ".join(f"lr {r:g}" for r in rates) + " | chosen |",
             "|---|---|" + "---|" * len(rates) + "---|"]
    for _, row in choice.iterrows():
        runs = done[(done["model.family"] == row["model.family"]) & (done["depth"] == row["depth"])]
        means = runs.groupby("train.learning_rate")["val_loss"].mean()
        cells = [(f"**{means[r]:.4f}**" if r == row["learning_rate"] else f"{means[r]:.4f}") if r in means
                 else "" for r in rates]
        edge = " (edge of the grid)" if row["at_edge"] else ""
        lines.append(f"| {row['model.family']} | {row['depth']} | {' | '.join(cells)} | "
                     f"{row['learning_rate']:g}{edge} |")
    return "\n".join(lines)
