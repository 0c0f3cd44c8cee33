"""Solver invariance on language modelling (Ott et al. 2021; ``configs/lm_invariance.py``):
the committed table's statistics, the verdict rules and the block of docs/results.md.

Ott et al. claim two things: (1) a neural ODE trained with a coarse fixed-step solver learns a
discrete map of that step, so a finer solver makes it worse; (2) below a critical step size the
trained model is solver-invariant, a flow. Here the gap is ``invariance_gap_loss`` =
validation loss under Dopri5 (the reference) minus that under the training solver, over the
first validation characters, per run; intervals are Student-t 95% over seeds (the gap is a
within-model difference, so each seed contributes one value).

Rules, fixed before the runs: a gap within ±:data:`MARGIN` nats per character counts as none.
(1) is **reproduced** if the 1-step Euler models' gap interval lies above the margin, **not
supported** if it lies below it (inside ±margin, or the reference better by more than it), else
**inconclusive**. (2) is **reproduced** if there is a training step ``h*`` at which the Euler
models' gap interval, and that of every finer Euler arm, lies inside ±margin, while the next
coarser arm's lies above it (``h*`` is the critical step size, bracketed); **inconclusive**
otherwise: not reached within the steps trained (a critical step below them is not excluded), an
arm between the last one above the margin and ``h*`` whose interval straddles it (the critical
step lies in that range, not at one trained step), or no discrete regime observed (every arm
inside the margin, so nothing is bracketed). Both are
**inconclusive** whenever the reference is not converged: RK4 in 16 steps and Dopri5 disagree by
more than :data:`REFERENCE_TOLERANCE` in some run.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd

from odeformer.analysis.protocol import MeanCI, format_ci, mean_ci, side
from odeformer.analysis.tables import ok_rows, runs_line

MARGIN = 0.01  # nats per character: a gap smaller than this counts as none
REFERENCE_TOLERANCE = MARGIN / 10  # the reference must agree with another fine solve this well
REFERENCE = "dopri5:1e-4"
EULER_COUNTS = (1, 2, 4, 8, 16, 32, 64)
EVALS = {"euler": 1, "rk4": 4}
_GAP = "invariance_gap_loss"


def _ci(values) -> MeanCI:
    return mean_ci(np.asarray(values, float))


def arms(table: pd.DataFrame) -> list[tuple[str, int]]:
    """The training solvers of the table, Euler first, each by its step count."""
    keys = table[["solver.name", "solver.steps"]].drop_duplicates().itertuples(index=False)
    return sorted(((str(n), int(s)) for n, s in keys), key=lambda a: (a[0] != "euler", a[0], a[1]))


def arm_rows(table: pd.DataFrame, name: str, steps: int) -> pd.DataFrame:
    return table[(table["solver.name"] == name) & (table["solver.steps"] == steps)]


def gap_interval(table: pd.DataFrame, name: str, steps: int) -> MeanCI:
    return _ci(ok_rows(arm_rows(table, name, steps))[_GAP])


def reference_error(table: pd.DataFrame) -> float:
    """The largest disagreement of RK4 in 16 steps with the Dopri5 reference over finished runs."""
    done = ok_rows(table)
    return float(np.abs(done["val_loss@rk4:16"] - done[f"val_loss@{REFERENCE}"]).max())


def verdicts(table: pd.DataFrame) -> dict[str, str]:
    """``{"discrete_map": ..., "critical_step": ...}``: each a verdict word and its reason."""
    euler = sorted(s for n, s in arms(table) if n == "euler")
    if 1 not in euler:
        raise ValueError("the table has no 1-step Euler arm, the coarsest step the rules read")
    error = reference_error(table)
    if not error <= REFERENCE_TOLERANCE:
        reason = (f"**inconclusive**: the reference is not converged (RK4 in 16 steps and Dopri5 differ by "
                  f"{error:.1e} nats in some run, more than {REFERENCE_TOLERANCE})")
        return {"discrete_map": reason, "critical_step": reason}
    gaps = {s: gap_interval(table, "euler", s) for s in euler}
    return read_gaps(gaps, MARGIN, "nats", 4)


def read_gaps(gaps: dict[int, MeanCI], margin: float, unit: str, digits: int) -> dict[str, str]:
    """The two verdicts of the module's rules from the Euler arms' gap intervals (``steps ->
    interval``, with a 1-step arm) against ``±margin``, quoting ``unit`` to ``digits`` decimals;
    shared with the toy task (``odeformer.analysis.invariance``)."""
    euler = sorted(gaps)

    def show(ci: MeanCI) -> str:
        return format_ci(ci, digits, True)

    coarse = gaps[1]
    first = {"above": "**reproduced**", "inside": "**not supported**", "below": "**not supported**",
             "straddles": "**inconclusive**"}[side(coarse, margin)]
    out = {"discrete_map": f"{first}: the 1-step Euler models' gap is {show(coarse)} {unit} "
                           f"(margin ±{margin})"}
    sides = {s: side(gaps[s], margin) for s in euler}
    critical = next((s for s in euler if all(sides[f] == "inside" for f in euler if f >= s)), None)
    coarser = [s for s in euler if critical is not None and s < critical]
    if critical is None:
        out["critical_step"] = ("**inconclusive**: not reached; at the finest training step, "
                                f"h = 1/{max(euler)}, the gap is {show(gaps[max(euler)])} {unit}")
    elif not any(sides[c] == "above" for c in coarser):
        out["critical_step"] = ("**inconclusive**: no discrete regime observed; every Euler arm from "
                                f"h = {Fraction(1, critical)} down has a gap inside ±{margin}, and no "
                                "coarser arm's gap lies above the margin")
    elif sides[max(coarser)] != "above":
        last = max(c for c in coarser if sides[c] == "above")
        between = ", ".join(f"h = {Fraction(1, c)}: {show(gaps[c])}" for c in coarser if c > last)
        low, high = Fraction(1, last), Fraction(1, critical)
        out["critical_step"] = ("**inconclusive**: the critical step size lies between "
                                f"h = {low} (gap above the margin) and h = {high} (from there down every gap "
                                f"inside ±{margin}), and not every arm between them is above the margin "
                                f"({between})")
    else:
        out["critical_step"] = (f"**reproduced**: from h = {Fraction(1, critical)} down every Euler arm's "
                                f"gap lies inside ±{margin}, and at h = 1/{max(coarser)} it is "
                                f"{show(gaps[max(coarser)])}")
    return out


def render(table: pd.DataFrame) -> str:
    """The docs block: the arms' losses and gaps, the loss under every test-time solver, the
    reference's accuracy and the verdicts."""
    table = table.copy()
    lines = ["| trained with | h | NFE | seeds (failed) | val loss, own solver (re-solved slice) | "
             "val loss, Dopri5 1e-4 | "
             "gap (Dopri5 − own) | own solver at h/2 − own | test loss, own solver |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, steps in arms(table):
        rows = arm_rows(table, name, steps)
        ok = ok_rows(rows)
        label = f"{'Euler' if name == 'euler' else name.upper()}, {steps} step{'s' if steps > 1 else ''}"
        half = ok["val_loss@train:x2"] - ok["val_loss@train"]
        lines.append(
            f"| {label} | {Fraction(1, steps)} | {steps * EVALS[name]} | {len(ok)} ({len(rows) - len(ok)}) | "
            f"{format_ci(_ci(ok['val_loss@train']))} | {format_ci(_ci(ok[f'val_loss@{REFERENCE}']))} | "
            f"{format_ci(_ci(ok[_GAP]), 4, True)} | {format_ci(_ci(half), 4, True)} | "
            f"{format_ci(_ci(ok['test_loss']))} |")
    specs = [f"euler:{k}" for k in EULER_COUNTS] + ["rk4:16", REFERENCE]
    heads = [f"Euler {k}" for k in EULER_COUNTS] + ["RK4 16", "Dopri5 1e-4"]
    grid = [f"| trained with | {' | '.join(heads)} |", "|---|" + "---|" * len(heads)]
    for name, steps in arms(table):
        ok = ok_rows(arm_rows(table, name, steps))
        own = f"{name}:{steps}"
        means = {s: f"{ok[f'val_loss@{s}'].mean():.3f}" for s in specs}
        cells = [f"**{means[s]}**" if s == own else means[s] for s in specs]
        grid.append(f"| {'Euler' if name == 'euler' else name.upper()}, {steps} | {' | '.join(cells)} |")
    done = ok_rows(table)
    reference = reference_error(table)
    nfe = done[f"nfe_forward@{REFERENCE}"]
    verdict = verdicts(table)
    return "\n".join([
        runs_line(table, done, "loss in nats per character; intervals Student-t 95% over seeds."),
        "",
        *lines,
        "",
        "Mean validation loss under each test-time solver (the training solver's own count in bold):",
        "",
        *grid,
        "",
        f"Reference check: RK4 in 16 steps and Dopri5 at rtol 1e-4 agree to {reference:.1e} nats in every "
        f"run (largest difference; the verdicts need at most {REFERENCE_TOLERANCE}); Dopri5 took "
        f"{int(nfe.min())}–{int(nfe.max())} evaluations.",
        "",
        f"- (1) Coarse fixed steps learn a discrete map of the step: {verdict['discrete_map']}.",
        f"- (2) A critical step size below which the model is a flow: {verdict['critical_step']}.",
    ])
