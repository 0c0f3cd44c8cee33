"""The comparison protocol: t quantiles and intervals, selection on validation, paired
differences, per-group summaries and comparisons at equal cost."""

import math

import numpy as np
import pandas as pd
import pytest

from odeformer.analysis import (
    MeanCI,
    at_equal,
    mean_ci,
    paired_differences,
    select_by_validation,
    summarise,
    t_quantile,
)


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622),
                                          (30, 2.0423), (10**6, 1.9600), (math.inf, 1.9600)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-5)


def test_t_quantile_closed_forms_and_symmetry():
    # df=1 is the Cauchy distribution: quantile tan(pi (p - 1/2)) = 1 / tan(pi (1 - p));
    # df=2: (2p - 1) sqrt(2 / (4p(1 - p))).
    for p in (0.6, 0.9, 0.995, 1 - 1e-9):
        assert t_quantile(p, 1) == pytest.approx(1 / math.tan(math.pi * (1 - p)), rel=1e-10)
        assert t_quantile(p, 2) == pytest.approx((2 * p - 1) * math.sqrt(2 / (4 * p * (1 - p))), rel=1e-10)
    assert t_quantile(0.5, 7) == 0.0
    assert t_quantile(0.025, 4) == pytest.approx(-t_quantile(0.975, 4))
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError):
        t_quantile(0.9, 0)


def test_mean_ci_hand_computed():
    ci = mean_ci([1, 2, 3, 4, 5])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)  # sample variance 2.5, t_{0.975, 4}
    assert isinstance(ci, MeanCI)
    assert (ci.mean, ci.n, ci.level) == (3.0, 5, 0.95)
    assert ci.half_width == pytest.approx(half, rel=1e-7)
    assert (ci.low, ci.high) == (pytest.approx(3 - half, rel=1e-7), pytest.approx(3 + half, rel=1e-7))
    # Two values 0 and 2 at 90%: mean 1, std sqrt(2), t_{0.95, 1} = 6.3138.
    assert mean_ci([0.0, 2.0], level=0.9).half_width == pytest.approx(6.313752 * math.sqrt(2) / math.sqrt(2))


def test_mean_ci_one_value_and_refusals():
    one = mean_ci([4.0])
    assert one.mean == 4.0 and one.n == 1
    assert math.isnan(one.low) and math.isnan(one.high) and math.isnan(one.half_width)
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, float("nan"), 3.0])
    with pytest.raises(ValueError):
        mean_ci([])


def _lr_sweep():
    """Two families x one budget, two learning rates, two seeds. For 'gpt' the validation
    metric prefers lr 1e-3 while the test metric prefers 1e-2; 'ode' has a tie in validation."""
    rows = []
    val = {("gpt", 1e-3): [1.0, 1.2], ("gpt", 1e-2): [1.5, 1.5],
           ("ode", 1e-3): [2.0, 2.2], ("ode", 1e-2): [2.1, 2.1]}
    test = {("gpt", 1e-3): [1.1, 1.3], ("gpt", 1e-2): [0.5, 0.5],
            ("ode", 1e-3): [2.5, 2.7], ("ode", 1e-2): [0.1, 0.1]}
    for (family, lr), vals in val.items():
        for seed, v in enumerate(vals):
            rows.append({"model.family": family, "model.param_budget": 100, "train.learning_rate": lr,
                         "seed": seed, "val_loss": v, "test_loss": test[family, lr][seed], "status": "ok"})
    return pd.DataFrame(rows)


def test_selection_uses_validation_not_test_and_breaks_ties_towards_smaller_value():
    out = select_by_validation(_lr_sweep(), ["model.family", "model.param_budget"])
    by_family = out.groupby("model.family")
    assert by_family["chosen_train.learning_rate"].unique().to_dict() == {"gpt": [1e-3], "ode": [1e-3]}
    assert (out["train.learning_rate"] == out["chosen_train.learning_rate"]).all()
    assert by_family.size().to_dict() == {"gpt": 2, "ode": 2}  # every seed of the chosen setting
    gpt = out[out["model.family"] == "gpt"]
    assert sorted(gpt["test_loss"]) == [1.1, 1.3]
    assert gpt["val_loss_mean"].iloc[0] == pytest.approx(1.1)


def test_selection_skips_a_setting_with_a_failed_seed():
    table = _lr_sweep()
    table.loc[(table["model.family"] == "gpt") & (table["train.learning_rate"] == 1e-3)
              & (table["seed"] == 1), "status"] = "failed: diverged"
    out = select_by_validation(table, ["model.family"])
    assert set(out.loc[out["model.family"] == "gpt", "chosen_train.learning_rate"]) == {1e-2}


def test_selection_refuses_test_metric_and_reports_groups_without_a_finished_setting():
    with pytest.raises(ValueError, match="refusing"):
        select_by_validation(_lr_sweep(), ["model.family"], metric="test_loss")
    table = _lr_sweep()
    table.loc[table["model.family"] == "ode", "status"] = "failed: out of memory"
    with pytest.raises(ValueError, match="model.family='ode'"):
        select_by_validation(table, ["model.family"])


def _paired(diffs_by_seed, budget=100):
    rows = []
    for seed, d in diffs_by_seed.items():
        base = 2.0 + 0.3 * seed  # shared per-seed offset, cancelled by pairing
        rows.append({"model.family": "gpt", "seed": seed, "model.param_budget": budget,
                     "test_loss": base, "status": "ok"})
        rows.append({"model.family": "ode", "seed": seed, "model.param_budget": budget,
                     "test_loss": base + d, "status": "ok"})
    return rows


def test_paired_differences_per_group():
    table = pd.DataFrame(_paired({0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 5.0})
                         + _paired({0: -0.5, 1: -0.5}, budget=200))
    out = paired_differences(table, group_by=["model.param_budget"]).set_index("model.param_budget")
    assert list(out.columns) == ["mean", "low", "high", "n"]
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert out.loc[100, "mean"] == pytest.approx(3.0)
    assert out.loc[100, "high"] == pytest.approx(3.0 + half, rel=1e-7)
    assert out.loc[100, "n"] == 5
    assert out.loc[200, "mean"] == pytest.approx(-0.5)
    assert out.loc[200, "low"] == pytest.approx(-0.5)  # identical differences: zero width


def test_paired_differences_missing_partner_names_the_seed():
    rows = _paired({0: 1.0, 1: 2.0, 2: 3.0})
    rows[5]["status"] = "failed: diverged"  # ode at seed 2
    with pytest.raises(ValueError, match=r"seed=2 .*'ode'"):
        paired_differences(pd.DataFrame(rows))
    rows = _paired({0: 1.0, 1: 2.0})[:-1]  # ode seed 1 never ran
    with pytest.raises(ValueError, match="seed=1"):
        paired_differences(pd.DataFrame(rows))


def test_paired_differences_refuses_several_runs_per_seed():
    table = pd.DataFrame(_paired({0: 1.0, 1: 2.0}) + _paired({0: 1.0}))
    with pytest.raises(ValueError, match="select one setting"):
        paired_differences(table)


def test_summarise_intervals_and_failed_counts():
    table = pd.DataFrame({
        "model.family": ["a"] * 6 + ["b", "b"],
        "test_loss": [1, 2, 3, 4, 5, np.nan, 7.0, np.nan],
        "params": [10] * 8,
        "status": ["ok"] * 5 + ["failed: diverged", "ok", "failed: oom"],
    })
    out = summarise(table, ["model.family"], ["test_loss", "params"]).set_index("model.family")
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert out.loc["a", "test_loss_mean"] == pytest.approx(3.0)
    assert out.loc["a", "test_loss_low"] == pytest.approx(3.0 - half, rel=1e-7)
    assert out.loc["a", "test_loss_n"] == 5 and out.loc["a", "failed"] == 1
    assert out.loc["a", "params_high"] == pytest.approx(10.0)
    assert out.loc["b", "test_loss_mean"] == 7.0 and math.isnan(out.loc["b", "test_loss_high"])
    assert out.loc["b", "failed"] == 1
    table.loc[6, "test_loss"] = np.nan  # a finished run without its metric is refused
    with pytest.raises(ValueError, match="model.family='b'"):
        summarise(table, ["model.family"], ["test_loss"])


def test_at_equal_interpolates_in_log_x_and_never_extrapolates():
    rows = []
    for family, points in {"gpt": {100: 3.0, 10_000: 1.0}, "ode": {1_000: 2.5, 100_000: 0.5}}.items():
        for x, loss in points.items():
            for seed, noise in enumerate((-0.1, 0.1)):  # seed mean is ``loss``
                rows.append({"model.family": family, "params": x, "seed": seed,
                             "test_loss": loss + noise, "status": "ok"})
    rows.append({"model.family": "gpt", "params": 1e6, "seed": 0, "test_loss": 0.0, "status": "failed"})
    out = at_equal(pd.DataFrame(rows), "params", "test_loss").set_index(["model.family", "params"])
    assert len(out) == 8  # two families x four measured params
    assert out.loc[("gpt", 100.0), "test_loss"] == pytest.approx(3.0)
    assert not out.loc[("gpt", 100.0), "interpolated"]
    assert out.loc[("gpt", 1000.0), "test_loss"] == pytest.approx(2.0)  # half-way in log
    assert out.loc[("gpt", 1000.0), "interpolated"]
    assert math.isnan(out.loc[("gpt", 100_000.0), "test_loss"])  # beyond gpt's range
    assert math.isnan(out.loc[("ode", 100.0), "test_loss"])  # below ode's range
    assert out.loc[("ode", 10_000.0), "test_loss"] == pytest.approx(1.5)
    explicit = at_equal(pd.DataFrame(rows), "params", "test_loss", at=[3162.2776601683795])
    assert explicit["test_loss"].tolist() == pytest.approx([1.5, 2.0])


def test_selection_treats_rounding_differences_as_a_tie():
    # Seed means 0.15000000000000002 (from 0.1 and 0.2) and 0.15 tie: the smaller lr wins.
    table = pd.DataFrame({"train.learning_rate": [1e-3, 1e-3, 1e-2, 1e-2], "seed": [0, 1, 0, 1],
                          "val_loss": [0.1, 0.2, 0.15, 0.15], "test_loss": [1.0] * 4})
    assert (0.1 + 0.2) / 2 != 0.15
    out = select_by_validation(table, [])
    assert set(out["chosen_train.learning_rate"]) == {1e-3} and len(out) == 2


def test_side_places_an_interval_against_a_margin():
    from odeformer.analysis.protocol import side
    assert side(MeanCI(0.3, 0.2, 0.4, 5, 0.95, 0.1), 0.1) == "above"
    assert side(MeanCI(-0.3, -0.4, -0.2, 5, 0.95, 0.1), 0.1) == "below"
    assert side(MeanCI(0.0, -0.05, 0.05, 5, 0.95, 0.05), 0.1) == "inside"
    assert side(MeanCI(0.1, 0.05, 0.15, 5, 0.95, 0.05), 0.1) == "straddles"
    assert side(MeanCI(0.5, math.nan, math.nan, 1, 0.95, math.nan), 0.1) == "straddles"  # one value


def test_format_ci_writes_mean_and_interval_or_marks_one_seed():
    from odeformer.analysis.protocol import format_ci
    assert format_ci(MeanCI(0.25, 0.2, 0.3, 5, 0.95, 0.05)) == "0.250 [0.200, 0.300]"
    assert format_ci(MeanCI(0.25, -0.2, 0.3, 5, 0.95, 0.05), 2, sign=True) == "+0.25 [-0.20, +0.30]"
    assert format_ci(MeanCI(1.5, math.nan, math.nan, 1, 0.95, math.nan)) == "1.500 (1 seed)"


def test_lowest_skips_non_finite_scores_and_breaks_ties_to_the_smaller_index():
    from odeformer.analysis.protocol import lowest

    chosen = lowest(pd.Series({1: 2.0, 2: 1.5, 4: 1.7}))
    assert chosen == 2 and type(chosen) is int
    assert lowest(pd.Series({2: 1.0 + 1e-10, 8: 1.0})) == 8  # outside 1e-12: the lower score
    assert lowest(pd.Series({8: 1.0, 2: 1.0 + 1e-13, 4: 1.2})) == 2  # within 1e-12: the shallower
    assert lowest(pd.Series({1: np.nan, 2: np.inf, 4: 3.0})) == 4
    with pytest.raises(ValueError, match="no finite validation loss of gpt to choose from"):
        lowest(pd.Series({1: np.nan}), "validation loss of gpt")
