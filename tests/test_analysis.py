"""Seed aggregation, budget-to-reach interpolation and the bootstrap budget ratio."""

import math

import numpy as np
import pandas as pd
import pytest

from odeformer.analysis.tables import budget_ratio, budget_to_reach, seed_summary


def test_seed_summary_mean_std_count_over_ok_runs_only():
    table = pd.DataFrame({
        "family": ["a", "a", "a", "b", "b"],
        "acc": [0.5, 0.7, 99.0, 0.4, 0.4],
        "status": ["ok", "ok", "failed: diverged", "ok", "ok"],
    })
    out = seed_summary(table, ["family"], ["acc"]).set_index("family")
    assert out.loc["a", "acc_mean"] == pytest.approx(0.6)
    assert out.loc["a", "acc_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert out.loc["a", "acc_n"] == 2
    assert out.loc["b", "acc_std"] == 0.0


def test_budget_to_reach_interpolates_in_log_budget():
    # Accuracy 0.5 at 100, 0.9 at 10,000: 0.7 is half-way in log budget, at 1,000.
    assert budget_to_reach([10_000, 100], [0.9, 0.5], 0.7) == pytest.approx(1000.0)
    assert budget_to_reach([100, 1000], [0.5, 0.6], 0.7) == math.inf
    assert budget_to_reach([100, 1000], [0.8, 0.9], 0.7) == 100.0  # censored at the grid's start
    # The first crossing counts, even if the curve dips later.
    assert budget_to_reach([1, 10, 100], [0.0, 1.0, 0.0], 0.5) == pytest.approx(math.sqrt(10))


def _family(name, scale, seeds, noise, rng):
    """Accuracy = clip(log10(budget / scale) / 4): reaches 0.5 at budget scale * 100."""
    rows = []
    for budget in (10, 100, 1_000, 10_000, 100_000):
        for seed in range(seeds):
            acc = np.clip(np.log10(budget / scale) / 4, 0, 1) + noise * rng.standard_normal()
            rows.append({"label": name, "params": budget, "seed": seed, "test_accuracy": acc,
                         "status": "ok"})
    return rows


def test_budget_ratio_recovers_a_known_ratio_and_its_interval_covers_it():
    rng = np.random.default_rng(0)
    table = pd.DataFrame(_family("ode", 0.7, 5, 0.01, rng) + _family("discrete", 1.0, 5, 0.01, rng))
    ratio = budget_ratio(table, "label", "ode", "discrete", target=0.5, resamples=500)
    assert ratio.value == pytest.approx(0.7, rel=0.1)
    assert ratio.low < 0.7 < ratio.high
    assert ratio.high - ratio.low < 0.3
    assert ratio.unreached == 0.0


def test_budget_ratio_interval_widens_with_seed_noise_and_reports_unreached():
    rng = np.random.default_rng(1)
    quiet = pd.DataFrame(_family("a", 1.0, 3, 0.005, rng) + _family("b", 1.0, 3, 0.005, rng))
    noisy = pd.DataFrame(_family("a", 1.0, 3, 0.1, rng) + _family("b", 1.0, 3, 0.1, rng))
    width = [(r.high - r.low) for r in (budget_ratio(t, "label", "a", "b", target=0.5, resamples=300)
                                          for t in (quiet, noisy))]
    assert width[1] > 3 * width[0]
    never = budget_ratio(quiet, "label", "a", "b", target=2.0, resamples=50)
    assert never.unreached == 1.0 and math.isnan(never.low)
    with pytest.raises(ValueError, match="no finished runs with label='c'"):
        budget_ratio(quiet, "label", "c", "b", target=0.5)
