"""Adaptive integration and the kinetic + Jacobian regulariser on the toy task
(``configs/adaptive.py``): the committed table's statistics and the block of docs/results.md.

Every arm has the same parameters and width, so equal NFE is equal FLOPs. The front is the
arms whose mean test accuracy beats that of every arm with fewer mean test NFE. The
regulariser's cut is the unregularised Dopri5 arm's NFE over the regularised arm's, at the same
tolerance; the controller's floor (the smallest NFE of any Dopri5 solve in the table) bounds
the test-time cut. The verdict (**inconclusive**) is the design's: the finer solves are
under-trained at one learning rate and the floor caps the cut (module text in docs/results.md).
Mean ± sample std over seeds.
"""

from __future__ import annotations

import pandas as pd

from odeformer.analysis.tables import mean_std, ok_rows, runs_line

COLUMNS = {  # column -> (heading, format)
    "nfe_forward": ("test NFE", 1), "train_nfe": ("train NFE (last quarter)", 1),
    "test_accuracy": ("test accuracy", 3), "train_accuracy": ("train accuracy", 3),
    "step_ms": ("step ms", 0), "train_kinetic": ("kinetic", ".3g"), "train_jacobian": ("jacobian", ".3g"),
}
VERDICT = ("**inconclusive** by design: the finer solves are under-trained at one learning rate, so the "
           "front measures how fast each solve trains, and Dopri5's evaluation floor caps the cut the "
           "regulariser can show")


def _label(row) -> str:
    if not row["solver.adaptive"]:
        return f"{row['solver.name']} {int(row['solver.steps'])} step{'s' if row['solver.steps'] > 1 else ''}"
    label = f"{row['solver.name']} tol {row['solver.rtol']:.0e}".replace("e-0", "e-")
    if row["train.kinetic"] > 0 or row["train.jacobian"] > 0:
        label += f", regulariser {row['train.kinetic']:g}"
    return label


def arms(table: pd.DataFrame) -> pd.DataFrame:
    """The finished runs with an ``arm`` label, fixed-step arms first, each by its NFE."""
    done = ok_rows(table).copy()
    done["arm"] = done.apply(_label, axis=1)
    done["regularised"] = (done["train.kinetic"] > 0) | (done["train.jacobian"] > 0)
    order = done.groupby("arm").agg(adaptive=("solver.adaptive", "first"), nfe=("nfe_forward", "mean"),
                                    name=("solver.name", "first"), reg=("regularised", "first"),
                                    weight=("train.kinetic", "first"))
    order = order.sort_values(["adaptive", "reg", "name", "weight", "nfe"], kind="stable").index
    done["arm"] = pd.Categorical(done["arm"], categories=list(order), ordered=True)
    return done.sort_values("arm", kind="stable")


def means_of(done: pd.DataFrame, column: str) -> pd.Series:
    """Each arm's mean of ``column`` over seeds."""
    return done.groupby("arm", observed=True)[column].mean()


def front(done: pd.DataFrame) -> list[str]:
    """The arms on the NFE-accuracy front (mean test NFE, mean test accuracy)."""
    means = done.groupby("arm", observed=True)[["nfe_forward", "test_accuracy"]].mean()
    means = means.sort_values(["nfe_forward", "test_accuracy"], ascending=[True, False])
    best, out = float("-inf"), []
    for arm, row in means.iterrows():
        if row["test_accuracy"] > best:
            out.append(str(arm))
            best = row["test_accuracy"]
    return out


def render(table: pd.DataFrame) -> str:
    """The docs block: every arm's NFE, accuracy, step time and penalties; the front; the
    regulariser's cuts against the controller's floor."""
    done = arms(table)
    lines = ["| arm | seeds | " + " | ".join(h for h, _ in COLUMNS.values()) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for arm, group in done.groupby("arm", observed=True):
        cells = [mean_std(group[c], f) if c in group and group[c].notna().all() else "" for c, (_, f) in
                 COLUMNS.items()]
        lines.append(f"| {arm} | {len(group)} | " + " | ".join(cells) + " |")
    means = done.groupby("arm", observed=True)[["nfe_forward", "train_nfe", "test_accuracy"]].mean()
    dopri = done[done["solver.adaptive"]]
    floor = int(dopri["nfe_forward"].min())
    cuts = []
    for arm, group in dopri[dopri["regularised"]].groupby("arm", observed=True):
        plain = dopri[~dopri["regularised"] & (dopri["solver.rtol"] == group["solver.rtol"].iloc[0])]
        base = plain["arm"].iloc[0]
        base_nfe, nfe = means.loc[base], means.loc[arm]
        cuts.append(f"{arm}: train NFE {base_nfe['train_nfe'] / nfe['train_nfe']:.2f}x fewer, "
                    f"test NFE {base_nfe['nfe_forward'] / nfe['nfe_forward']:.2f}x fewer "
                    f"(the floor allows at most {base_nfe['nfe_forward'] / floor:.2f}x), accuracy "
                    f"{means.loc[arm, 'test_accuracy'] - means.loc[base, 'test_accuracy']:+.3f}")
    gap = float((means_of(done, "train_accuracy") - means_of(done, "test_accuracy")).max())
    regularised = done[done["regularised"]]
    if regularised["train.kinetic"].nunique() > 1:  # how far the penalties fall from weight to weight
        by = regularised.groupby("train.kinetic")[["train_kinetic", "train_jacobian"]].mean()
        low, high = by.index.min(), by.index.max()
        fall = by.loc[low] / by.loc[high]
        cuts.append(f"penalties at the end of training, weight {low:g} over weight {high:g}: kinetic "
                    f"{fall['train_kinetic']:.1f}x, Jacobian {fall['train_jacobian']:.1f}x")
    return "\n".join([
        runs_line(table, done, "mean ± sample std over seeds (step times on the shared machine: only their "
                  "order is meaningful)."),
        "",
        *lines,
        "",
        f"- The NFE-accuracy front: {', '.join(front(done))}.",
        f"- Dopri5's fewest evaluations in any solve (the controller's floor): {floor}.",
        f"- Train minus test accuracy (arm means): at most {gap:.3f} in any arm.",
        *[f"- Regulariser, {cut}." for cut in cuts],
        "",
        f"Verdict: {VERDICT}.",
    ])
