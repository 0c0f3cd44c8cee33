"""Convergence of residual transformers to the ODE of their weights, and solver orders
(Sander, Ablin, Peyré 2022; ``configs/convergence.py``): the block of docs/results.md from the
committed table of the numerical study ``odeformer.experiment.studies.convergence``.

The verdict (a rule written after the study's first measurement) is **reproduced** when the
K-layer network with smooth weights converges at its nominal first order (fitted slope within
:data:`ORDER_TOLERANCE` of −1) while random layers with step 1/K converge no faster than the
random-walk rate (slope above −0.75): the condition the claim names (smoothness in depth)
decides the limit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from odeformer.analysis.tables import ok_rows
from odeformer.experiment.studies import convergence as study

ORDER_TOLERANCE = 0.05  # a fitted slope this close to its nominal order counts as that order
W, S, N = "convergence.weights", "convergence.solver", "convergence.steps"
_DEPTH_COLUMNS = {("smooth", "error"): "smooth: error vs ODE",
                  ("smooth", "successive_distance"): r"smooth: \|x_K − x_2K\|",
                  ("random", "successive_distance"): r"random: \|x_K − x_2K\|",
                  ("random", "distance_from_input"): r"random: \|x_K − x_0\|",
                  ("random_sqrt", "successive_distance"): r"random_sqrt: \|x_K − x_2K\|"}


def verdict(table: pd.DataFrame) -> str:
    """The verdict word and its reason, from the fitted slopes."""
    fitted = study.slopes(table).set_index(["weights", "solver"])["slope"]
    smooth, random = fitted[("smooth", "euler")], fitted[("random", "euler")]
    shown = f"smooth weights at slope {_f(smooth)}, random layers at step 1/K at {_f(random)}"
    if abs(smooth + 1) <= ORDER_TOLERANCE and random > -0.75:
        return (f"**reproduced**: {shown}; the first is within {ORDER_TOLERANCE} of −1, the second no faster "
                "than the random-walk rate")
    return f"**not supported**: {shown} (reproduced needs −1 ± {ORDER_TOLERANCE} and above −0.75)"


def _f(value: float) -> str:
    return f"{value:.3f}".replace("-", "−")


def _g(value: float) -> str:
    return f"{value:.3g}".replace("-", "−")


def render(table: pd.DataFrame) -> str:
    """The docs block: fitted slopes, the depth curves' medians, the solvers' finest points and
    local slopes, and the verdict."""
    done = ok_rows(table)
    fitted = study.slopes(done)
    lines = ["| weights | solver | metric | fitted steps | slope | nominal |", "|---|---|---|---|---|---|"]
    for row in fitted.itertuples():
        nominal = "" if np.isnan(row.nominal) else f"{row.nominal:.0f}".replace("-", "−")
        span = row.fitted_steps.replace("-", "–")
        cells = [row.weights, row.solver, row.metric, span, _f(row.slope), nominal]
        lines.append(f"| {' | '.join(cells)} |")
    layers = done[done[S] == "euler"]
    depth = [f"| K | {' | '.join(_DEPTH_COLUMNS.values())} |", "|---|" + "---|" * len(_DEPTH_COLUMNS)]
    for k in sorted(layers[N].unique()):
        at = layers[layers[N] == k]
        cells = [_g(at.loc[at[W] == w, m].median()) for w, m in _DEPTH_COLUMNS]
        depth.append(f"| {int(k)} | {' | '.join(cells)} |")
    smooth = done[done[W] == "smooth"]
    finest, local = [], []
    for solver, curve in smooth.groupby(S, sort=False):
        last = curve[curve[N] == curve[N].max()]
        finest.append(f"{solver} {last['error'].median():.1e} at {int(last[N].iloc[0])} steps "
                      f"({int(last['nfe'].iloc[0])} NFE)")
        spans = study.local_slopes(done, solver)
        local.append(f"{solver}: " + ", ".join(f"{span.replace('-', '–')}: {value:.2f}"
                                               for span, value in spans.items()).replace("-", "−"))
    reference = done["reference_nfe"]
    planned = int(table["planned_runs"].max()) if "planned_runs" in table else len(table)
    seeds = done["seed"].nunique()
    return "\n".join([
        f"Runs: {len(done)} finished, {len(table) - len(done)} failed, of {planned} planned; {seeds} seeds; "
        "distances are max-norms at depth 1, medians over seeds.",
        "",
        "Fitted slopes (least squares of log metric on log steps, pooled over seeds, over the 3 largest step "
        f"counts whose metric lies above the {study.ROUNDOFF_FLOOR:.0e} floor for every seed):",
        "",
        *lines,
        "",
        "Depth K (Euler in K steps is the K-layer network):",
        "",
        *depth,
        "",
        f"Finest point of each curve (median error, exact NFE): {'; '.join(finest)}; the reference took "
        f"{int(reference.min())}–{int(reference.max())} evaluations.",
        "",
        "Local slopes of the seed medians between successive step counts:",
        "",
        *[f"- {line}" for line in local],
        "",
        f"Verdict: {verdict(done)}.",
    ])
