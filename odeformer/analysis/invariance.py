"""Solver invariance on the toy task (Ott et al. 2021; ``configs/invariance.py``): the committed
table's statistics, the verdicts and the block of docs/results.md.

The gap is ``invariance_gap`` = test accuracy under the training solver minus that under Dopri5
(the reference), per run; intervals are Student-t 95% over seeds. The rules are those of the
language-model experiment (:func:`odeformer.analysis.lm_invariance.read_gaps`) with a margin of
:data:`MARGIN` accuracy (10 of the 512 test sequences); unlike there, they were written after
this toy task's first measurement. The claim as a whole is **reproduced** when both of its sides
are, **suggestive** when only the discrete map is (no critical step size within the steps
trained), **not supported** when the 1-step models lose no accuracy, else **inconclusive**.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pandas as pd

from odeformer.analysis.lm_invariance import arm_rows, arms, read_gaps
from odeformer.analysis.protocol import MeanCI, format_ci, mean_ci
from odeformer.analysis.tables import ok_rows, runs_line

MARGIN = 0.02  # accuracy: a smaller drop under the reference counts as none
EVALS = {"euler": 1, "rk4": 4}


def test_solvers(table: pd.DataFrame) -> list[str]:
    """The table's test-time solvers (``test_accuracy@<spec>`` columns): fixed-step ones by name
    and steps, the adaptive reference (the one Dopri5 spec) last."""
    specs = [c.partition("@")[2] for c in table.columns if c.startswith("test_accuracy@")]
    reference = [s for s in specs if s.startswith("dopri5:")]
    if len(reference) != 1:
        raise ValueError(f"the table's test-time solvers {specs} need exactly one dopri5 reference")
    fixed = [s.split(":") for s in specs if s not in reference]
    fixed.sort(key=lambda s: (s[0] != "euler", s[0], int(s[1])))
    return [f"{name}:{steps}" for name, steps in fixed] + reference


def _name(spec: str) -> str:
    solver, _, value = spec.partition(":")
    return f"{ {'euler': 'Euler', 'rk4': 'RK4', 'dopri5': 'Dopri5'}.get(solver, solver)} {value}"


def gap_interval(table: pd.DataFrame, name: str, steps: int) -> MeanCI:
    return mean_ci(ok_rows(arm_rows(table, name, steps))["invariance_gap"].to_numpy(float))


def verdicts(table: pd.DataFrame) -> dict[str, str]:
    """``{"discrete_map", "critical_step", "claim"}``: each a verdict word and its reason."""
    euler = sorted(s for n, s in arms(ok_rows(table)) if n == "euler")
    if 1 not in euler:
        raise ValueError("the table has no 1-step Euler arm, the coarsest step the rules read")
    out = read_gaps({s: gap_interval(table, "euler", s) for s in euler}, MARGIN, "accuracy", 3)
    first, second = (out[k].split(":")[0] for k in ("discrete_map", "critical_step"))
    if first == second == "**reproduced**":
        out["claim"] = "**reproduced**: both sides observed"
    elif first == "**reproduced**" and "not reached" in out["critical_step"]:
        out["claim"] = ("**suggestive**: the discrete map is observed, but no trained step size reaches the "
                        "critical one, so the flow side is not")
    elif first == "**reproduced**":
        out["claim"] = ("**suggestive**: the discrete map is observed, but the critical step size is not "
                        "established")
    elif first == "**not supported**":
        out["claim"] = "**not supported**: the 1-step models lose no accuracy under the reference"
    else:
        out["claim"] = "**inconclusive**: the rules decide neither side"
    return out


def equal_cost(table: pd.DataFrame) -> list[str]:
    """RK4 against Euler at the same evaluations (same parameters, so the same FLOPs)."""
    euler = {s for n, s in arms(ok_rows(table)) if n == "euler"}
    cells = []
    for name, steps in arms(ok_rows(table)):
        match = steps * EVALS[name]
        if name == "rk4" and match in euler:
            rk4, euler_gap = gap_interval(table, name, steps), gap_interval(table, "euler", match)
            cells.append(f"at {match} evaluations RK4's gap is {format_ci(rk4)}, "
                         f"Euler's {format_ci(euler_gap)}")
    return cells


def render(table: pd.DataFrame) -> str:
    """The docs block: each training solver's accuracy and gap, the accuracy under every test-time
    solver, the reference check and the verdicts."""
    specs = test_solvers(table)
    reference = specs[-1]
    lines = ["| trained with | h | NFE | seeds (failed) | test acc, own solver | test acc, "
             f"{_name(reference)} | gap (own − reference) | test loss, own | test loss, reference |",
             "|---|" + "---|" * 8]
    grid = ["| trained with | " + " | ".join(_name(s) for s in specs) + " |", "|---|" + "---|" * len(specs)]
    for name, steps in arms(table):
        rows = arm_rows(table, name, steps)
        ok = ok_rows(rows)
        label = f"{'Euler' if name == 'euler' else 'RK4'}, {steps} step{'s' if steps > 1 else ''}"
        columns = ["test_accuracy", f"test_accuracy@{reference}", "invariance_gap", "test_loss",
                   f"test_loss@{reference}"]
        cis = [format_ci(mean_ci(ok[c].to_numpy(float))) for c in columns]
        lines.append(f"| {label} | {Fraction(1, steps)} | {steps * EVALS[name]} | {len(ok)} "
                     f"({len(rows) - len(ok)}) | {' | '.join(cis)} |")
        own = f"{name}:{steps}"
        cells = [f"{ok[f'test_accuracy@{s}'].mean():.3f}" for s in specs]
        cells = [f"**{c}**" if s == own else c for s, c in zip(specs, cells, strict=True)]
        grid.append(f"| {label} | {' | '.join(cells)} |")
    done = ok_rows(table)
    # the most accurate fixed-step solve: highest order (RK4's 4 evaluations per step), then most steps
    finest = max(specs[:-1], key=lambda s: (EVALS.get(s.split(":")[0], 1), int(s.split(":")[1])))
    check = float(np.abs(done[f"test_accuracy@{finest}"] - done[f"test_accuracy@{reference}"]).max())
    nfe = done[f"nfe_forward@{reference}"]
    verdict = verdicts(table)
    return "\n".join([
        runs_line(table, done, "intervals Student-t 95% over seeds."),
        "",
        *lines,
        "",
        "Mean test accuracy under each test-time solver (the training solver's own in bold, where it is one "
        "of them):",
        "",
        *grid,
        "",
        f"Reference check: the most accurate fixed-step solve ({_name(finest)}) and the reference "
        f"({_name(reference)}) differ by at most {check:.3f} accuracy in any run; the reference took "
        f"{int(nfe.min())}–{int(nfe.max())} evaluations.",
        "",
        f"- Coarse fixed steps learn a discrete map of the step: {verdict['discrete_map']}.",
        f"- A critical step size below which the model is a flow: {verdict['critical_step']}.",
        f"- Verdict on the claim: {verdict['claim']}.",
        *([f"- At equal FLOPs (same parameters and evaluations): {'; '.join(cost)}."]
          if (cost := equal_cost(table)) else []),
    ])
