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

from odeformer._solvers import solver_order
from odeformer.analysis.tables import ok_rows, runs_line

ROUNDOFF_FLOOR = 1e-13  # not fitted below: round-off, and the error of a 1e-14 reference
ORDER_TOLERANCE = 0.05  # a fitted slope this close to its nominal order counts as that order
W, S, N = "convergence.weights", "convergence.solver", "convergence.steps"
_DEPTH_COLUMNS = {("smooth", "error"): "smooth: error vs ODE",
                  ("smooth", "successive_distance"): r"smooth: \|x_K − x_2K\|",
                  ("random", "successive_distance"): r"random: \|x_K − x_2K\|",
                  ("random", "distance_from_input"): r"random: \|x_K − x_0\|",
                  ("random_sqrt", "successive_distance"): r"random_sqrt: \|x_K − x_2K\|"}


def _asymptotic_range(steps: np.ndarray, values: np.ndarray, points: int, floor: float) -> list[float]:
    """The ``points`` largest distinct step counts at which every value is above ``floor``."""
    return [n for n in np.unique(steps) if np.all(values[steps == n] > floor)][-points:]


def fit_slope(steps, values, *, points: int = 3, floor: float = ROUNDOFF_FLOOR) -> float:
    """Least-squares slope of ``log(values)`` against ``log(steps)`` on the asymptotic range.

    The asymptotic range is the ``points`` largest distinct step counts at which every value
    (all seeds) lies above ``floor`` (round-off and reference error). Several values per step
    count (seeds) are all fitted. NaN when fewer than 2 step counts qualify.
    """
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    fitted = _asymptotic_range(steps, values, points, floor)
    if len(fitted) < 2:
        return float("nan")
    chosen = np.isin(steps, fitted)
    return float(np.polyfit(np.log(steps[chosen]), np.log(values[chosen]), 1)[0])


def slopes(table: pd.DataFrame, *, points: int = 3, floor: float = ROUNDOFF_FLOOR) -> pd.DataFrame:
    """One fitted slope per curve of a results table (pooled over seeds).

    Smooth weights: the slope of ``error`` (``nominal`` = minus the solver's order). Random
    weights: the slope of ``successive_distance`` (no nominal value). Columns: ``weights``,
    ``solver``, ``metric``, ``slope``, ``nominal``, ``fitted_steps`` (the range fitted).
    """
    rows = []
    ok = table[table.status == "ok"]
    for (weights, solver), curve in ok.groupby(["convergence.weights", "convergence.solver"], sort=False):
        metric = "error" if weights == "smooth" else "successive_distance"
        steps, values = curve["convergence.steps"].to_numpy(float), curve[metric].to_numpy(float)
        fitted = _asymptotic_range(steps, values, points, floor)
        rows.append(dict(weights=weights, solver=solver, metric=metric,
                         slope=fit_slope(steps, values, points=points, floor=floor),
                         nominal=-solver_order(solver) if weights == "smooth" else float("nan"),
                         fitted_steps=f"{int(fitted[0])}-{int(fitted[-1])}" if fitted else ""))
    return pd.DataFrame(rows)


def local_slopes(table: pd.DataFrame, solver: str, *, weights: str = "smooth",
                 metric: str = "error") -> pd.Series:
    """Slopes of the seed-median ``metric`` between successive step counts of one curve,
    indexed ``"N1-N2"``: how the local order settles (pre-asymptotic at small N)."""
    ok = table[(table.status == "ok") & (table["convergence.weights"] == weights)
               & (table["convergence.solver"] == solver)]
    median = ok.groupby("convergence.steps")[metric].median()
    steps, values = median.index.to_numpy(float), median.to_numpy(float)
    return pd.Series(np.diff(np.log(values)) / np.diff(np.log(steps)),
                     index=[f"{int(a)}-{int(b)}" for a, b in zip(steps, steps[1:], strict=False)])


def verdict(table: pd.DataFrame) -> str:
    """The verdict word and its reason, from the fitted slopes."""
    fitted = slopes(table).set_index(["weights", "solver"])["slope"]
    smooth, random = fitted[("smooth", "euler")], fitted[("random", "euler")]
    shown = f"smooth weights at slope {_f(smooth)}, random layers at step 1/K at {_f(random)}"
    if abs(smooth + 1) <= ORDER_TOLERANCE and random > -0.75:
        return (f"**reproduced**: {shown}; the first is within {ORDER_TOLERANCE} of −1, the second well "
                "short of first order (above −0.75)")
    return f"**not supported**: {shown} (reproduced needs −1 ± {ORDER_TOLERANCE} and above −0.75)"


def _f(value: float) -> str:
    return f"{value:.3f}".replace("-", "−")


def _g(value: float) -> str:
    return f"{value:.3g}".replace("-", "−")


def render(table: pd.DataFrame) -> str:
    """The docs block: fitted slopes, the depth curves' medians, the solvers' finest points and
    local slopes, and the verdict."""
    done = ok_rows(table)
    fitted = slopes(done)
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
        spans = local_slopes(done, solver)
        local.append(f"{solver}: " + ", ".join(f"{span.replace('-', '–')}: {value:.2f}"
                                               for span, value in spans.items()).replace("-", "−"))
    reference = done["reference_nfe"]
    seeds = done["seed"].nunique()
    return "\n".join([
        runs_line(table, done, f"{seeds} seeds; distances are max-norms at depth 1, medians over seeds."),
        "",
        "Fitted slopes (least squares of log metric on log steps, pooled over seeds, over the 3 largest step "
        f"counts whose metric lies above the {ROUNDOFF_FLOOR:.0e} floor for every seed):",
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
