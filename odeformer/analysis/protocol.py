"""Statistics of a reviewer-grade comparison: Student-t intervals over seeds, selection on the
validation metric, paired differences, and comparisons at equal cost.

Only runs with ``status == "ok"`` are read (:func:`~odeformer.analysis.tables.ok_rows`), and no
failed run vanishes silently: a finished run with a non-finite metric is refused, an unpaired
run is an error, and :func:`summarise` counts each group's failed runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from odeformer.analysis.tables import ok_rows


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b), by its continued fraction (Lentz)."""
    if x <= 0.0 or x >= 1.0:
        return float(x >= 1.0)
    if x > (a + 1.0) / (a + b + 2.0):  # the fraction converges fast only below this point
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - math.log(a) - (
        math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    tiny = 1e-300
    f, c, d = 1.0, 1.0, 0.0  # evaluates 1 + d1/(1 + d2/(1 + ...))
    for j in range(1, 200_000):
        m = j // 2
        if j % 2:
            term = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            term = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        d, c = 1.0 + term * d, 1.0 + term / c
        d, c = 1.0 / (d if abs(d) > tiny else tiny), (c if abs(c) > tiny else tiny)
        f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) / f


def _t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0 (standard normal when ``df`` is infinite)."""
    if math.isinf(df):
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t distribution: the ``t`` with P(T <= t) = ``p``.

    Found by bisection on the distribution function, itself the regularised incomplete beta
    function; accurate to about 12 significant digits. ``df`` may be fractional or ``math.inf``
    (the standard normal). E.g. ``t_quantile(0.975, 4) == 2.7764...``.
    """
    if not (0.0 < p < 1.0 and df > 0):
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while _t_upper_tail(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-13 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_upper_tail(mid, df) > tail else (lo, mid)
    return 0.5 * (lo + hi)


@dataclasses.dataclass(frozen=True)
class MeanCI:
    """A mean with its Student-t interval ``mean ± half_width`` of coverage ``level``
    (``low``, ``high`` and ``half_width`` are NaN for ``n == 1``)."""

    mean: float
    low: float
    high: float
    n: int
    level: float
    half_width: float


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean of ``values`` (e.g. one metric over seeds) with its two-sided Student-t interval,
    ``t_{(1+level)/2, n-1} * std(ddof=1) / sqrt(n)`` either side.

    Raises:
      ValueError: no values, or a NaN or infinite value (a failed run must be dealt with
        explicitly, never dropped here).
    """
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0 or not 0.0 < level < 1.0:
        raise ValueError(f"mean_ci needs values and 0 < level < 1, got {x.size} values, level={level}")
    if not np.isfinite(x).all():
        raise ValueError(f"{int((~np.isfinite(x)).sum())} of {x.size} values are NaN or infinite "
                         "(a failed run?); remove or rerun it explicitly")
    mean = float(x.mean())
    half = (t_quantile((1.0 + level) / 2.0, x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size)
            if x.size > 1 else math.nan)
    return MeanCI(mean, mean - half, mean + half, int(x.size), level, half)


def format_ci(ci: MeanCI, digits: int = 3, sign: bool = False) -> str:
    """``mean [low, high]`` to ``digits`` decimals (with a sign where ``sign``); one value is
    marked ``(1 seed)``, having no interval."""
    f = f"{{:+.{digits}f}}" if sign else f"{{:.{digits}f}}"
    if ci.n < 2:
        return f.format(ci.mean) + " (1 seed)"
    return f"{f.format(ci.mean)} [{f.format(ci.low)}, {f.format(ci.high)}]"


def side(ci: MeanCI, margin: float) -> str:
    """Where an interval lies against ``±margin``: ``"above"`` (its low end above ``margin``),
    ``"below"`` (its high end below ``-margin``), ``"inside"`` (within ``(-margin, margin)``: no
    difference that matters), else ``"straddles"`` (also for one value: no interval)."""
    if ci.n < 2:
        return "straddles"
    if ci.low > margin:
        return "above"
    if ci.high < -margin:
        return "below"
    return "inside" if -margin < ci.low and ci.high < margin else "straddles"


def _groups(frame: pd.DataFrame, cols: Sequence[str]) -> Iterator[tuple[tuple, pd.DataFrame]]:
    """(key tuple, rows) per group of ``cols``, sorted; one group ``()`` if ``cols`` is empty."""
    parts = frame.groupby(list(cols), dropna=False, sort=True) if cols else [((), frame)]
    for key, part in parts:
        yield (key if isinstance(key, tuple) else (key,)), part


def _where(cols: Sequence[str], key: tuple) -> str:
    return ", ".join(f"{c}={k!r}" for c, k in zip(cols, key, strict=True)) or "the whole table"


def _require(table: pd.DataFrame, cols: Sequence[str]) -> None:
    if missing := [c for c in cols if c not in table.columns]:
        raise ValueError(f"results table has no column(s) {missing}")


def lowest(scores: pd.Series, what: str = "scores"):
    """The index of the lowest finite score; scores within a relative 1e-12 tie, and the smallest
    index wins (the smaller learning rate, the shallower depth).

    Raises:
      ValueError: no score is finite (the message names ``what`` was scored).
    """
    scores = scores[np.isfinite(scores.to_numpy(float))]
    if scores.empty:
        raise ValueError(f"no finite {what} to choose from")
    best = scores.min()
    return min(scores.index[(scores - best).abs() <= 1e-12 * abs(best)])


def select_by_validation(table: pd.DataFrame, group_by: Sequence[str], axis: str = "train.learning_rate",
                         metric: str = "val_loss", report: Sequence[str] = ("test_loss",)) -> pd.DataFrame:
    """Choose, per group, the ``axis`` value (e.g. the learning rate) with the lowest seed-mean
    validation ``metric``, and return every run (seed) of the chosen setting.

    ``group_by`` names every varying config column except ``axis`` and the seed. A setting is
    eligible only if all its runs finished with a finite ``metric`` (a value that diverged for
    one seed is not one to recommend; rerun infrastructure failures first). Seed means within
    a relative 1e-12 tie, and the smaller ``axis`` value wins.

    Returns:
      The chosen runs (all columns) plus ``chosen_<axis>`` and ``<metric>_mean``; their
      ``report`` columns (the metrics to publish) are checked finite.

    Raises:
      ValueError: ``metric`` starts with "test" (never select on the test set); a column is
        missing; groups without an eligible setting (all named); a chosen run lacks a finite
        ``report`` value.
    """
    if metric.startswith("test"):
        raise ValueError(f"refusing to select on {metric!r}: select on validation, report test")
    group_by = list(group_by)
    _require(table, [*group_by, axis, metric, *report])
    chosen, empty = [], []
    for key, part in _groups(table, group_by):
        scores = {}
        for value, runs in part.groupby(axis, sort=True):
            done = ok_rows(runs)[metric].to_numpy(float)
            if len(done) == len(runs) and np.isfinite(done).all():
                scores[value] = float(done.mean())
        if not scores:
            empty.append(_where(group_by, key))
            continue
        value = lowest(pd.Series(scores))
        rows = part[part[axis] == value].copy()
        bad = [r for r in report if not np.isfinite(rows[r].to_numpy(float)).all()]
        if bad:
            raise ValueError(f"chosen runs ({_where(group_by, key)}, {axis}={value!r}) lack finite {bad}")
        rows[f"chosen_{axis}"] = value
        rows[f"{metric}_mean"] = scores[value]
        chosen.append(rows)
    if empty:
        raise ValueError(f"no {axis} setting finished every run with a finite {metric} in: "
                         + "; ".join(empty))
    return pd.concat(chosen).reset_index(drop=True)


def paired_differences(table: pd.DataFrame, by: str = "seed", pair_on: str = "model.family",
                       a: str = "gpt", b: str = "ode", metric: str = "test_loss",
                       group_by: Sequence[str] = (), level: float = 0.95) -> pd.DataFrame:
    """Per-group mean of the paired differences ``b - a`` of ``metric``, matched on ``by``
    (the seed) and the ``group_by`` columns, with its Student-t interval.

    Returns:
      One row per group: the ``group_by`` columns, ``mean``, ``low``, ``high``, ``n``.

    Raises:
      ValueError: a run of ``a`` or ``b`` has no finished partner with a finite ``metric``
        (every such family and seed is named), or a family has several finished runs at one
        seed in a group (select one setting first, e.g. with :func:`select_by_validation`).
    """
    group_by = list(group_by)
    _require(table, [*group_by, by, pair_on, metric])
    both = table[table[pair_on].isin([a, b])]
    records, unpaired = [], []
    for key, part in _groups(both, group_by):
        diffs = []
        for seed, runs in part.groupby(by, sort=True):
            found = {}
            for name in (a, b):
                vals = ok_rows(runs[runs[pair_on] == name])[metric].to_numpy(float)
                vals = vals[np.isfinite(vals)]
                if len(vals) > 1:
                    raise ValueError(f"{len(vals)} finished {pair_on}={name!r} runs at {by}={seed!r} "
                                     f"({_where(group_by, key)}): select one setting first")
                if len(vals) == 1:
                    found[name] = vals[0]
            if len(found) == 2:
                diffs.append(found[b] - found[a])
            else:
                lacking = [n for n in (a, b) if n not in found]
                unpaired.append(f"{by}={seed!r} ({_where(group_by, key)}): no finished "
                                f"{' or '.join(map(repr, lacking))} run with a finite {metric}")
        if diffs:
            ci = mean_ci(diffs, level)
            records.append({**dict(zip(group_by, key, strict=True)), "mean": ci.mean,
                            "low": ci.low, "high": ci.high, "n": ci.n})
    if unpaired:
        raise ValueError("unpaired runs: " + "; ".join(unpaired))
    return pd.DataFrame(records, columns=[*group_by, "mean", "low", "high", "n"])


def summarise(table: pd.DataFrame, group_by: Sequence[str], metrics: Sequence[str],
              level: float = 0.95) -> pd.DataFrame:
    """Per group, the seed mean of each metric with its Student-t interval.

    Returns:
      One row per group (including groups whose every run failed): the ``group_by`` columns,
      ``failed`` (runs whose status is not ok), then ``<m>_mean``, ``<m>_low``, ``<m>_high``,
      ``<m>_n`` for each metric (NaN bounds for one run; NaN mean and ``n == 0`` for none).
    """
    group_by = list(group_by)
    _require(table, [*group_by, *metrics])
    records = []
    for key, part in _groups(table, group_by):
        done = ok_rows(part)
        rec = {**dict(zip(group_by, key, strict=True)), "failed": len(part) - len(done)}
        for m in metrics:
            try:
                ci = mean_ci(done[m], level) if len(done) else MeanCI(*[math.nan] * 3, 0, level, math.nan)
            except ValueError as err:
                raise ValueError(f"{m} ({_where(group_by, key)}): {err}") from err
            rec.update({f"{m}_mean": ci.mean, f"{m}_low": ci.low, f"{m}_high": ci.high, f"{m}_n": ci.n})
        records.append(rec)
    return pd.DataFrame(records)


def at_equal(table: pd.DataFrame, x: str, metric: str, family_col: str = "model.family",
             at: Sequence[float] | None = None) -> pd.DataFrame:
    """Compare families at equal ``x`` (``"params"``, ``"flops_per_token"``, ``"train_flops"``).

    Each family's curve joins its seed-mean ``metric`` at every distinct measured ``x`` by
    straight lines in log(x); it is read at the values ``at`` (default: every ``x`` measured
    for any family). Outside a family's measured range the value is NaN: never extrapolated.

    Returns:
      Long format, one row per family and ``at`` value: ``family_col``, ``x``, ``metric``,
      and ``interpolated`` (True only where the value lies strictly between two measured
      points; False where measured exactly there, or NaN outside the range).
    """
    _require(table, [family_col, x, metric])
    rows, curves = ok_rows(table), {}
    for (family,), part in _groups(rows, [family_col]):
        if not ((part[x] > 0).all() and np.isfinite(part[[x, metric]].to_numpy(float)).all()):
            raise ValueError(f"finished {family_col}={family!r} runs need positive {x} and finite {metric}")
        means = part.groupby(x, sort=True)[metric].mean()
        curves[family] = (means.index.to_numpy(float), means.to_numpy(float))
    if not curves:
        raise ValueError("no finished runs")
    points = np.asarray(np.unique(np.concatenate([c[0] for c in curves.values()])) if at is None else at,
                        dtype=float)
    if not (points > 0).all():
        raise ValueError(f"values of {x} to compare at must be positive, got {points}")
    records = []
    for family, (xs, ys) in curves.items():
        for v in points:
            exact = np.isclose(xs, v, rtol=1e-9, atol=0.0)
            if exact.any():
                y, between = float(ys[exact][0]), False
            elif xs[0] < v < xs[-1]:
                y, between = float(np.interp(np.log(v), np.log(xs), ys)), True
            else:
                y, between = math.nan, False
            records.append({family_col: family, x: float(v), metric: y, "interpolated": between})
    return pd.DataFrame(records, columns=[family_col, x, metric, "interpolated"])
