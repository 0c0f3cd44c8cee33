"""Clustering of self-attention dynamics on the sphere (Geshkovski et al. 2023;
``configs/clustering.py``): the block of docs/results.md from the committed table of the
numerical study ``odeformer.experiment.studies.clustering``.

The verdict (a rule written after the study's first measurement) is **reproduced** when every
phase run's clustered fraction never decreases in t, the equal-angle particles follow the
scalar ODE within :data:`TARGET`, and the softmax particles' late-time rate of 1 − ρ is 2
within :data:`RATE_TOLERANCE` (relative) wherever the tokens merged; else **not supported**.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from odeformer.analysis.tables import ok_rows, runs_line

TARGET = 1e-6  # the particles against the scalar ODE (max over pairs and times)
RATE_TOLERANCE = 1e-3  # relative, the particles' fitted rate against the predicted one
SHOWN_TIMES = (5.0, 10.0, 30.0)  # the phase table's columns (those of them the table has)


def clustered_columns(table: pd.DataFrame) -> list[tuple[float, str]]:
    """``(t, column)`` for every ``clustered@t=...`` column of a results table, by time."""
    found = [(float(col.split("=", 1)[1]), col) for col in table.columns if col.startswith("clustered@t=")]
    return sorted(found)


def phase_diagram(table: pd.DataFrame, normalisation: str) -> pd.DataFrame:
    """Mean over seeds of the clustered fraction: index β, columns t (phase runs)."""
    phase = _phase_rows(table)
    phase = phase[phase["clustering.normalisation"] == normalisation]
    columns = clustered_columns(table)
    means = phase.groupby("clustering.beta")[[col for _, col in columns]].mean()
    means.columns = [t for t, _ in columns]
    return means


def phase_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per normalisation and β, over seeds: the mean clustered fraction at the last time,
    the fewest and most clusters then, and how many runs' fraction never decreases in t."""
    phase = _phase_rows(table)
    last = clustered_columns(table)[-1][1]
    fractions = phase[[col for _, col in clustered_columns(table)]].to_numpy()
    phase = phase.assign(monotone=np.all(np.diff(fractions, axis=1) >= 0, axis=1))
    clusters_last = last.replace("clustered", "clusters")
    return phase.groupby(["clustering.normalisation", "clustering.beta"]).agg(
        seeds=("seed", "count"), clustered_last=(last, "mean"), clusters_min=(clusters_last, "min"),
        clusters_max=(clusters_last, "max"), monotone_runs=("monotone", "sum"),
        max_norm_deviation=("max_norm_deviation", "max"), nfe=("nfe", "median"))


def equal_angle_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The equal-angle runs' deviations and decay rates, one row per run."""
    rows = table[(table.status == "ok") & (table["clustering.part"] == "equal_angle")]
    columns = ["clustering.normalisation", "clustering.beta", "clustering.rho0",
               "max_inner_product_deviation", "max_norm_deviation", "rho_final", "decay_rate_scalar",
               "decay_rate_particles", "decay_rate_predicted", "nfe"]
    return rows[columns].sort_values(columns[:3]).reset_index(drop=True)


def _phase_rows(table: pd.DataFrame) -> pd.DataFrame:
    return table[(table.status == "ok") & (table["clustering.part"] == "phase")]


def _e(value: float) -> str:
    return f"{value:.1e}"


def _merged(equal: pd.DataFrame) -> pd.DataFrame:
    """The equal-angle runs whose tokens merged by T (ρ(T) within 1e-9 of 1) and whose particles'
    rate could be fitted."""
    return equal[(equal["rho_final"] > 1 - 1e-9) & equal["decay_rate_particles"].notna()]


def verdict(table: pd.DataFrame) -> str:
    """The verdict word and its reason, by the module's rule."""
    summary, equal = phase_summary(table), equal_angle_summary(table)
    monotone, runs = int(summary["monotone_runs"].sum()), int(summary["seeds"].sum())
    worst = float(equal["max_inner_product_deviation"].max())
    softmax = _merged(equal[equal["clustering.normalisation"] == "softmax"])
    rate = float((softmax["decay_rate_particles"] / softmax["decay_rate_predicted"] - 1).abs().max())
    shown = (f"{monotone} of {runs} phase runs never decrease their clustered fraction; the particles follow "
             f"the scalar ODE to {_e(worst)} (target {_short(TARGET)}); the softmax particles' rates are 2 "
             f"within {_e(rate)} (relative)")
    if monotone == runs and worst <= TARGET and rate <= RATE_TOLERANCE:
        return f"**reproduced**: {shown}"
    return f"**not supported**: {shown} (reproduced needs every run, the target and {_short(RATE_TOLERANCE)})"


def _short(value: float) -> str:
    return f"{value:.0e}".replace("e-0", "e-")


def render(table: pd.DataFrame) -> str:
    """The docs block: the phase part's clustered fractions and clusters, the equal-angle part
    against the scalar ODE, and the verdict."""
    done = ok_rows(table)
    times = [(t, col) for t, col in clustered_columns(done) if t in SHOWN_TIMES]
    last = clustered_columns(done)[-1]
    phase = done[done["clustering.part"] == "phase"]
    summary = phase_summary(done)
    norms = sorted(phase["clustering.normalisation"].unique(), key=lambda n: n != "softmax")
    heads = [f"{n} t={t:g}" for n in norms for t, _ in times] + [f"{n} clusters t={last[0]:g}" for n in norms]
    lines = [f"| β | {' | '.join(heads)} |", "|---|" + "---|" * len(heads)]
    for beta in sorted(phase["clustering.beta"].unique()):
        at = phase[phase["clustering.beta"] == beta]
        cells = [f"{at.loc[at['clustering.normalisation'] == n, col].mean():.2f}"
                 for n in norms for _, col in times]
        for n in norms:
            row = summary.loc[(n, beta)]
            low, high = int(row["clusters_min"]), int(row["clusters_max"])
            cells.append(f"{low}" if low == high else f"{low}–{high}")
        lines.append(f"| {beta:g} | {' | '.join(cells)} |")
    nfe = summary["nfe"]
    equal = equal_angle_summary(done)
    grid = ["| Z | β | ρ0 | max \\|<x_i,x_j> − ρ\\| | max \\| \\|x_i\\| − 1 \\| | ρ(T) | rate, scalar ODE | "
            "rate, particles | predicted | NFE |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in equal.itertuples():
        merged = r.rho_final > 1 - 1e-9
        fitted = r.decay_rate_particles
        particles = "(too fast to resolve)" if np.isnan(fitted) else f"{fitted:.6g}"
        cells = [r._1, f"{r._2:g}", f"{r._3:g}", _e(r.max_inner_product_deviation), _e(r.max_norm_deviation),
                 f"{r.rho_final:.2g}", f"{r.decay_rate_scalar:.6g}" if merged else "(not merged by T)",
                 particles if merged else "", f"{r.decay_rate_predicted:.6g}", f"{int(r.nfe):,}"]
        grid.append(f"| {' | '.join(cells)} |")
    largest = {n: nfe.loc[n] for n in norms}
    merged = equal[equal["rho_final"] > 1 - 1e-9]
    scalar = float((merged["decay_rate_scalar"] / merged["decay_rate_predicted"] - 1).abs().max())
    return "\n".join([
        runs_line(table, done),
        "",
        "Phase part: the clustered fraction (mean over seeds) and the range over seeds of the number of "
        "clusters at the last time:",
        "",
        *lines,
        "",
        f"Phase runs whose clustered fraction never decreases in t: {int(summary['monotone_runs'].sum())} of "
        f"{int(summary['seeds'].sum())}; max \\| \\|x_i\\| − 1 \\| = "
        f"{_e(phase['max_norm_deviation'].max())}; "
        "median evaluations per solve, largest over β: "
        + ", ".join(f"{n} {int(largest[n].max()):,} (β = {largest[n].idxmax():g})" for n in norms) + ".",
        "",
        "Equal-angle part:",
        "",
        *grid,
        "",
        f"The scalar ODE's late-time rate matches the predicted one to {_e(scalar)} (relative) in every run "
        "whose tokens merged by T.",
        "",
        f"Verdict: {verdict(done)}.",
    ])
