"""Stability on the toy task (``configs/stability.py``): the committed table's statistics and the
block of docs/results.md.

Three models at one parameter budget (a 4-layer discrete transformer, a tied ODE, an ODE smooth
in t), each with the flow-map measurements of ``odeformer.experiment.evaluators.stability``.
The verdict is **inconclusive** by design, not by the numbers: the task's floor effect (most
labels are decided by a margin of one count; the cost block states the share), perturbations
scaled to each model's own input norm, and no model a flow. The block gives every statistic the
section's text reads (mean ± sample std over seeds).
"""

from __future__ import annotations

import pandas as pd

from odeformer.analysis.tables import mean_std, ok_rows, runs_line

ROWS = {  # column -> (label, format)
    "test_accuracy": ("test accuracy", 3), "invariance_gap": ("invariance gap (reference solver)", 2),
    "stability.jacobian_norm": ("σ_max(∂Φ/∂x0)", ".3g"),
    "stability.flow_growth": ("growth ‖Φ(x0)‖/‖x0‖", ".3g"),
    "stability.jacobian_condition": ("σ_max / growth (relative condition)", ".3g"),
    "stability.lyapunov": ("Lyapunov exponent log σ_max / T (1/unit time)", 3),
    "per_evaluation": ("log σ_max per block evaluation", 3),
    "stability.flow_gain_random": ("flow gain, random δ", ".3g"),
    "stability.flow_gain_adv": ("flow gain, gradient δ", ".3g"),
    "stability.logit_gain_random": ("logit gain, random δ (per unit norm)", 2),
    "stability.logit_gain_adv": ("logit gain, gradient δ (per unit norm)", 1),
    "stability.clean_accuracy": ("accuracy on the measured examples: clean", 3),
    "stability.random_accuracy": ("accuracy: random δ", 3),
    "stability.adv_accuracy": ("accuracy: gradient δ", 3),
}
VERDICT = ("**inconclusive** by design: most labels are decided by a margin of one count (floor effect), the "
           "perturbations are scaled to each model's own input norm, no model is a flow, and the explanation "
           "(stability as the cause) is not varied within a family")


def models(table: pd.DataFrame) -> pd.DataFrame:
    """The finished runs, labelled by model (discrete first) with ``per_evaluation`` = log σ_max
    per block evaluation, the expansion rate comparable across horizons (T = 1 against 4)."""
    done = ok_rows(table).copy()
    discrete = done["shape.family"] == "discrete"
    done["model"] = [f"discrete, {int(k)} layers" if d else f"ODE, {'tied' if t == 'tied' else t + ' in t'}"
                     for d, t, k in zip(discrete, done["shape.time"], done["shape.layers"], strict=True)]
    done["per_evaluation"] = done["stability.lyapunov"] * done["stability.horizon"] / done["nfe_forward"]
    return done.sort_values(["shape.family", "shape.time"], ascending=[True, False], kind="stable")


def ratios(done: pd.DataFrame, column: str) -> tuple[float, float]:
    """The discrete model's mean of ``column`` over each ODE's: (smallest, largest)."""
    means = done.groupby("model")[column].mean()
    discrete = means[[m for m in means.index if m.startswith("discrete")]].iloc[0]
    odes = means[[m for m in means.index if m.startswith("ODE")]]
    return float(discrete / odes.max()), float(discrete / odes.min())


def render(table: pd.DataFrame) -> str:
    """The docs block: one column per model, one row per measurement, and the derived ratios."""
    done = models(table)
    order = list(dict.fromkeys(done["model"]))
    groups = {m: done[done["model"] == m] for m in order}
    first = {m: g.iloc[0] for m, g in groups.items()}
    lines = [f"| | {' | '.join(order)} |", "|---|" + "---|" * len(order),
             "| parameters (width) | " + " | ".join(
                 f"{int(first[m]['params']):,} ({int(first[m]['shape.width'])})" for m in order) + " |",
             "| seeds | " + " | ".join(str(len(groups[m])) for m in order) + " |"]
    for column, (label, digits) in ROWS.items():
        lines.append(f"| {label} | " + " | ".join(mean_std(groups[m][column], digits) for m in order) + " |")
    examples = int(done["stability.examples"].iloc[0])
    adv = done["stability.adv_accuracy"]
    modal = adv.round(6).mode().iloc[0]
    norm, condition = ratios(done, "stability.jacobian_norm"), ratios(done, "stability.jacobian_condition")
    logit = done.groupby("model")["stability.logit_gain_adv"].mean()
    iteration = done["stability.jacobian_norm_change"].max()
    return "\n".join([
        runs_line(table, done, f"mean ± sample std over seeds; {examples} test examples per run."),
        "",
        *lines,
        "",
        f"- The discrete model's σ_max is {norm[0]:.1f}–{norm[1]:.1f}x the ODEs', its relative condition "
        f"{condition[0]:.1f}–{condition[1]:.1f}x.",
        f"- Logit gain under the gradient perturbation: {logit.min():.1f}–{logit.max():.1f} per unit norm "
        "across the models.",
        f"- Accuracy under the gradient perturbation: {round(modal * examples)} of {examples} correct in "
        f"{int((adv.round(6) == modal).sum())} of the {len(done)} runs.",
        f"- Under the reference solver the models' accuracy falls by "
        f"{done.groupby('model')['invariance_gap'].mean().min():.2f}–"
        f"{done.groupby('model')['invariance_gap'].mean().max():.2f} (absolute).",
        f"- Power iteration: the largest relative change in its last iteration is {iteration:.3f}.",
        "",
        f"Verdict: {VERDICT}.",
    ])
