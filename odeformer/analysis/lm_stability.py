"""Stability on language modelling (``configs/lm_stability.py``): the rules of its verdicts, fixed
before its runs.

The claim: the ODE's stability *explains* its robustness to perturbations. Measures of robustness
(:data:`MEASURES`): the mean loss change under substitution of 5% of the characters, under the
embedding noise, and under the attack at twice the noise's scale (``robust.*`` columns of
``odeformer.experiment.language.robustness_row``).

- *Outcome, at matched validation loss*: each family's seed-mean measure is joined linearly against
  its seed-mean validation loss across its budgets and read at :data:`POINTS` losses spread evenly
  inside the range every family covers; ``family - gpt`` at each, with a 95% percentile bootstrap
  that resamples the seeds of every (family, budget) point (:data:`RESAMPLES`). An ODE family is
  *more robust* if every interval (every measure, every matched loss) lies below 0. **Reproduced**
  if every ODE family is more robust; **not supported** if every interval of every ODE family is
  defined and none lies below 0; else **inconclusive**: also when a family is missing, a budget
  point has fewer than :data:`MIN_SEEDS` usable runs, or the families' loss ranges do not overlap.
  A run is usable if it finished, every robustness solve succeeded and every measure is finite.
- *Mechanism, stability varied within a family*: over the tied ODE trained at several
  Jacobian-regulariser weights (at least :data:`MIN_MODELS` usable models), the Spearman correlation
  of the Jacobian norm with each measure, plain and partial on validation loss (both ranks less
  their linear fit on the loss's rank, since the regulariser also moves the loss), with a 95%
  percentile bootstrap that resamples models within each weight (the weights are the design). The
  manipulation must work: the correlation of the weight with the Jacobian norm must lie below 0,
  else **inconclusive**. **Reproduced** if the outcome is reproduced and every interval, plain and
  partial, lies above 0 (a smaller Jacobian, a smaller loss change); **suggestive** if the outcome
  is reproduced and every plain interval lies above 0 but a partial one does not; **not supported**
  if every plain interval lies below :data:`WEAK` (at most a weak relation); else **inconclusive**.
  The Lyapunov exponent is reported beside the Jacobian norm: at one horizon it ranks as log σ does.
  So are (``post hoc``, outside the rules, added after the first runs were read) each correlation
  partial on the clean embeddings' RMS, which the regulariser also moves, and the Jacobian norm's
  correlation with the attack at its other budgets.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from odeformer.analysis.tables import fewer_heads, ok_rows

MEASURES = ("robust.sub_delta@0.05", "robust.noise_delta", "robust.attack_delta@0.2")
POINTS = 3
RESAMPLES = 2000
WEAK = 0.3
MIN_SEEDS = 3  # usable runs per (family, budget) point
MIN_MODELS = 15  # usable regulariser-varied models
FAMILIES = ("gpt", "ode", "smooth")


def usable(table: pd.DataFrame) -> pd.DataFrame:
    """The finished runs whose robustness solves all succeeded and whose measures are finite."""
    done = ok_rows(table)
    good = done["robust.solved_ok"].fillna(False).astype(bool) if "robust.solved_ok" in done else True
    finite = np.isfinite(done[[*MEASURES, "robust.jacobian_norm", "val_loss"]].to_numpy(float)).all(1)
    return done[good & finite]


def families_part(table: pd.DataFrame) -> pd.DataFrame:
    """The usable runs of the families' comparison: every run without the Jacobian regulariser in
    the sequential form."""
    done = usable(table)
    return done[(done["train.jacobian"] == 0) & (done["model.form"] == "sequential")]


def varied_part(table: pd.DataFrame) -> pd.DataFrame:
    """The usable runs of the tied ODE in the parallel form (the regulariser's weights varied)."""
    done = usable(table)
    return done[(done["model.family"] == "ode") & (done["model.form"] == "parallel")]


def loss_ranges(done: pd.DataFrame) -> pd.DataFrame:
    """Each family's range of validation loss: the lowest and highest of its budgets' seed means."""
    means = done.groupby(["model.family", "model.param_budget"])["val_loss"].mean()
    return means.groupby(level=0).agg(["min", "max"])


def matched_losses(done: pd.DataFrame, families: tuple[str, ...] = FAMILIES) -> np.ndarray:
    """:data:`POINTS` validation losses spread inside the range every one of ``families`` covers
    (its budgets' seed-mean losses); empty where the ranges do not overlap."""
    ranges = loss_ranges(done)
    if any(f not in ranges.index for f in families):
        return np.array([])
    low = ranges.loc[list(families), "min"].max()
    high = ranges.loc[list(families), "max"].min()
    if not low < high:
        return np.array([])
    return np.linspace(low, high, POINTS + 2)[1:-1]


def matched_differences(table: pd.DataFrame, family: str, measure: str, *, resamples: int = RESAMPLES,
                        seed: int = 0, pairwise: bool = False) -> pd.DataFrame:
    """``family - gpt`` of ``measure`` at the matched losses, with bootstrap intervals: inside the
    range every family covers (the rule), or with ``pairwise`` inside the range of ``family`` and
    gpt alone (reported outside the rules).

    Returns:
      Columns ``loss``, ``difference``, ``low``, ``high``; no rows without matched losses.
    """
    return _matched_differences(families_part(table), family, measure, resamples=resamples, seed=seed,
                                pairwise=pairwise)


def _matched_differences(done: pd.DataFrame, family: str, measure: str, *, resamples: int, seed: int = 0,
                         pairwise: bool = False) -> pd.DataFrame:
    """:func:`matched_differences` on the families' part already taken (``families_part``)."""
    at = matched_losses(done, (family, "gpt") if pairwise else FAMILIES)
    counts = done.groupby(["model.family", "model.param_budget"]).size()
    if at.size == 0 or counts.min() < MIN_SEEDS:
        return pd.DataFrame(columns=["loss", "difference", "low", "high"])
    # Per family, each budget point's (validation loss, measure) over its seeds, as arrays: the
    # bootstrap draws thousands of curves.
    points = {f: [(g["val_loss"].to_numpy(float), g[measure].to_numpy(float))
                  for _, g in done[done["model.family"] == f].groupby("model.param_budget")]
              for f in (family, "gpt")}

    def difference(pick) -> np.ndarray:
        curves = []
        for f in (family, "gpt"):
            means = np.array([(loss[i].mean(), value[i].mean())
                              for loss, value in points[f] for i in [pick(len(loss))]])
            order = np.argsort(means[:, 0], kind="stable")
            curves.append(np.interp(at, means[order, 0], means[order, 1]))
        return curves[0] - curves[1]

    rng = np.random.default_rng(seed)
    draws = np.array([difference(lambda n: rng.integers(0, n, n)) for _ in range(resamples)])
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    return pd.DataFrame({"loss": at, "difference": difference(lambda n: slice(None)), "low": low,
                         "high": high})


def outcome(differences: dict[str, list[pd.DataFrame]]) -> str:
    """The outcome rule over each ODE family's :func:`matched_differences` (one frame per measure)."""
    frames = {f: pd.concat(v) for f, v in differences.items()}
    if set(frames) != set(FAMILIES) - {"gpt"} or any(frame.empty for frame in frames.values()):
        return "**inconclusive**"
    if all((frame["high"] < 0).all() for frame in frames.values()):
        return "**reproduced**"
    defined = all(np.isfinite(frame[["low", "high"]].to_numpy(float)).all() for frame in frames.values())
    if defined and not any((frame["high"] < 0).any() for frame in frames.values()):
        return "**not supported**"
    return "**inconclusive**"


def _ranks(x) -> np.ndarray:
    return pd.Series(np.asarray(x, float)).rank().to_numpy()


def _residual(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``y`` less its least-squares line on ``z``."""
    slope, intercept = np.polyfit(z, y, 1) if np.ptp(z) > 0 else (0.0, y.mean())
    return y - (slope * z + intercept)


def partial_spearman(x, y, control=None) -> float:
    """Spearman correlation of ``x`` and ``y``, with the ranks of ``control`` partialled out when
    one is given."""
    rx, ry = _ranks(x), _ranks(y)
    if control is not None:
        z = _ranks(control)
        rx, ry = _residual(rx, z), _residual(ry, z)
    if np.std(rx) == 0 or np.std(ry) == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def mechanism(table: pd.DataFrame, outcome_verdict: str, *, resamples: int = RESAMPLES,
              seed: int = 0) -> tuple[str, pd.DataFrame]:
    """The mechanism rule over the regulariser-varied models: the verdict and a frame of
    correlations (``relation``, ``rho``, ``low``, ``high``, ``kind``): the manipulation check
    (weight with Jacobian norm), each measure's plain and partial correlation with the Jacobian
    norm, and, reported only, the Lyapunov exponent's and the post hoc rows (partial on the
    embeddings' RMS; the attack at its other budgets)."""
    done = varied_part(table).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    weights = done["train.jacobian"].to_numpy()
    levels = [np.flatnonzero(weights == w) for w in np.unique(weights)]
    index = [np.concatenate([rng.choice(rows, len(rows)) for rows in levels]) for _ in range(resamples)]
    attacks = [c for c in _curve(done) if c not in MEASURES]
    names = ["train.jacobian", "val_loss", "robust.jacobian_norm", "robust.lyapunov", "robust.embed_rms",
             *MEASURES, *attacks]
    columns = {c: done[c].to_numpy(float) for c in names}  # the bootstrap slices arrays, not frames

    def row(name, kind, statistic):
        enough = len(done) > 2
        draws = (np.array([statistic({c: v[i] for c, v in columns.items()}) for i in index]) if enough
                 else np.array([np.nan]))
        low, high = np.nanpercentile(draws, [2.5, 97.5]) if np.isfinite(draws).any() else (np.nan, np.nan)
        return {"relation": name, "kind": kind, "rho": statistic(columns) if enough else np.nan,
                "low": float(low), "high": float(high)}

    rows = [row("regulariser weight, Jacobian norm", "check",
                lambda d: partial_spearman(d["train.jacobian"], d["robust.jacobian_norm"]))]
    for m in MEASURES:
        rows.append(row(f"Jacobian norm, {m}", "plain",
                        lambda d, m=m: partial_spearman(d["robust.jacobian_norm"], d[m])))
        rows.append(row(f"Jacobian norm, {m} (partial on validation loss)", "partial",
                        lambda d, m=m: partial_spearman(d["robust.jacobian_norm"], d[m],
                                                        d["val_loss"])))
    rows += [row(f"Lyapunov exponent, {m}", "reported",
                 lambda d, m=m: partial_spearman(d["robust.lyapunov"], d[m]))
             for m in MEASURES]
    # Added after the first runs were read, outside the rules: the regulariser also raises the
    # embeddings' RMS, against which the absolute noise and attack are smaller.
    rows += [row(f"Jacobian norm, {m} (partial on embedding RMS)", "post hoc",
                 lambda d, m=m: partial_spearman(d["robust.jacobian_norm"], d[m], d["robust.embed_rms"]))
             for m in MEASURES]
    # Also post hoc: the attack's other budgets, since its curves cross between 0.2 and 0.4.
    rows += [row(f"Jacobian norm, {m}", "post hoc",
                 lambda d, m=m: partial_spearman(d["robust.jacobian_norm"], d[m])) for m in attacks]
    frame = pd.DataFrame(rows)
    if len(done) < MIN_MODELS or not frame.loc[0, "high"] < 0:
        return "**inconclusive**", frame
    plain, partial = frame[frame["kind"] == "plain"], frame[frame["kind"] == "partial"]
    if outcome_verdict == "**reproduced**" and (plain["low"] > 0).all():
        return ("**reproduced**" if (partial["low"] > 0).all() else "**suggestive**"), frame
    if (plain["high"] < WEAK).all():
        return "**not supported**", frame
    return "**inconclusive**", frame


def _curve(done: pd.DataFrame, prefix: str = "robust.attack_delta@") -> list[str]:
    """The loss-change columns of one perturbation (default: the attack), smallest budget first."""
    return sorted((c for c in done if c.startswith(prefix)), key=lambda c: float(c.partition("@")[2]))


def render(table: pd.DataFrame, *, resamples: int = RESAMPLES) -> str:
    """The docs block: each arm's robustness, the matched-loss differences, the correlations and
    the verdicts."""
    done = ok_rows(table)
    columns = ["val_loss", *MEASURES, "robust.jacobian_norm", "robust.lyapunov", "robust.embed_rms"]
    lines = [f"Runs: {len(done)} finished of {len(table)} recorded, {len(usable(table))} usable (every "
             "robustness solve succeeded); means over seeds.", "",
             "| family | form | budget | Jacobian weight | seeds | val loss | substitution 5% | noise | "
             "attack | Jacobian norm | Lyapunov | embedding RMS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = ["model.family", "model.form", "model.param_budget", "train.jacobian"]
    for key, runs in done.groupby(keys, sort=True):
        means = runs[columns].mean()
        lines.append(f"| {key[0]} | {key[1]} | {int(key[2]):,} | {key[3]:g} | {len(runs)} | "
                     + " | ".join(f"{means[c]:.4f}" for c in columns) + " |")
    where = done["model.param_budget"].map(lambda b: f"{b:,.0f} parameters") + ", " + done["model.form"]
    lines += ["", fewer_heads(done, where)]
    curves = _curve(done, "robust.sub_delta@") + _curve(done)
    lines += ["", "Loss change against the substituted fraction and the attack budget (RMS per position), "
              "means over seeds:", "", "| family | form | budget | Jacobian weight | "
              + " | ".join(c.removeprefix("robust.").replace("_delta@", " ") for c in curves) + " |",
              "|---|---|---|---|" + "---|" * len(curves)]
    for key, runs in done.groupby(keys, sort=True):
        lines.append(f"| {key[0]} | {key[1]} | {int(key[2]):,} | {key[3]:g} | "
                     + " | ".join(f"{runs[c].mean():+.4f}" for c in curves) + " |")
    part = families_part(table)
    ranges = loss_ranges(part)
    lines += ["", "Validation loss covered by each family (its budgets' seed means): "
              + "; ".join(f"{f} {r['min']:.3f}–{r['max']:.3f}" for f, r in ranges.iterrows()) + "."]
    differences = {f: [_matched_differences(part, f, m, resamples=resamples) for m in MEASURES]
                   for f in ("ode", "smooth")}
    pairs = {f: [_matched_differences(part, f, m, resamples=resamples, pairwise=True) for m in MEASURES]
             for f in ("ode", "smooth")}

    def contrast_rows(frames_by_family):
        out = ["| family | measure | validation loss | difference |", "|---|---|---|---|"]
        for family, frames in frames_by_family.items():
            for measure, frame in zip(MEASURES, frames, strict=True):
                out += [f"| {family} | {measure} | {r['loss']:.3f} | {r['difference']:+.4f} "
                        f"[{r['low']:+.4f}, {r['high']:+.4f}] |" for _, r in frame.iterrows()]
        return out

    lines += ["", "ODE family − gpt at matched validation loss, inside the range every family covers (the "
              "rule; 95% bootstrap over seeds; negative: the ODE family's loss moves less):", ""]
    if all(frame.empty for frames in differences.values() for frame in frames):
        lines.append("No matched loss: the families' ranges do not overlap, or a point has too few seeds.")
    else:
        lines += contrast_rows(differences)
    lines += ["", "Each ODE family − gpt inside the range those two alone cover (reported outside the rules, "
              "which match all three families at once):", "", *contrast_rows(pairs)]
    verdict = outcome(differences)
    explained, correlations = mechanism(table, verdict, resamples=resamples)
    models = len(varied_part(table))
    lines += ["", f"The tied ODE at every Jacobian-regulariser weight ({models} usable models; Spearman, 95% "
              "bootstrap over models within each weight):", "", "| relation | role | ρ |",
              "|---|---|---|"]
    lines += [f"| {r['relation']} | {r['kind']} | {r['rho']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}] |"
              for _, r in correlations.iterrows()]
    lines += ["", f"- ODE transformers are more robust than gpt at matched validation loss: {verdict}.",
              f"- Their stability explains it: {explained}."]
    return "\n".join(lines)
