"""Sweep expansion, run ids, validation messages, shards."""

import ml_collections
import pytest
from runner_helpers import tiny_config

from odeformer.experiment import config as run_config
from odeformer.experiment import sweeps
from odeformer.experiment.keys import Key


def test_grid_product_and_zipped_axes():
    c = tiny_config(**{"solver.adaptive": True, "solver.name": "tsit5"})
    c.unlock()
    c.sweep = ml_collections.ConfigDict(
        {"solver": {"rtol": (1e-2, 1e-4, 1e-6), "atol": (1e-3, 1e-5, 1e-7)}, "seed": (0, 1)})
    c.sweep_zip = (("solver.rtol", "solver.atol"),)
    runs = sweeps.expand(c)
    assert len(runs) == 6  # 3 zipped tolerance pairs x 2 seeds
    pairs = {(r.swept["solver.rtol"], r.swept["solver.atol"]) for r in runs}
    assert pairs == {(1e-2, 1e-3), (1e-4, 1e-5), (1e-6, 1e-7)}
    assert len({r.run_id for r in runs}) == 6


def test_irrelevant_keys_collapse_runs():
    # Tolerances do not affect a fixed-step solve; the discrete family ignores the solver.
    c = tiny_config()
    c.unlock()
    c.sweep = ml_collections.ConfigDict(
        {"model": {"family": ("ode", "discrete")}, "solver": {"rtol": (1e-2, 1e-4), "steps": (1, 2)}})
    runs = sweeps.expand(c)
    assert len(runs) == 3  # ode x steps {1, 2}, and one discrete run
    discrete = [r for r in runs if r.config.model.family == "discrete"]
    assert len(discrete) == 1
    assert discrete[0].config.solver.name == "euler"
    assert discrete[0].config.solver.steps == c.model.layers


def test_model_keys_a_run_does_not_use_collapse_too():
    c = tiny_config()
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"model": {"layers": (2, 3), "pieces": (2, 5), "basis": (2, 3)}})
    assert len(sweeps.expand(c)) == 1  # tied ode model: none of them matter
    c.model.time = "piecewise"
    assert len(sweeps.expand(c)) == 2  # only pieces matters
    c.model.family, c.model.time = "discrete", "tied"
    assert len(sweeps.expand(c)) == 2  # only layers matters


def test_budget_runs_may_sweep_heads_freely():
    c = tiny_config(**{"model.param_budget": 8000})
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"model": {"heads": (2, 3)}})
    assert len(sweeps.expand(c)) == 2


def test_run_id_is_stable_and_ignores_name():
    a, b = tiny_config(), tiny_config(name="other")
    assert sweeps.run_id(a) == sweeps.run_id(b)
    assert sweeps.run_id(a) != sweeps.run_id(tiny_config(seed=1))
    assert len(sweeps.run_id(a)) == 12


def test_a_key_added_at_its_default_keeps_every_run_id(monkeypatch):
    """A key marked ``added`` (what earlier runs did, at its default) leaves committed ids as they
    were, so a committed table still resumes; any other value, or an unmarked key, is a new run."""
    before = sweeps.run_id(tiny_config())
    for added in (True, False):
        monkeypatch.setitem(run_config.TRAIN, "train.new_knob", Key(0.0, "a new knob", "traced", added=added))
        c = tiny_config()
        c.train.new_knob = 0.0
        assert (sweeps.run_id(c) == before) is added
        c.train.new_knob = 0.5
        assert sweeps.run_id(c) != before
    pair = Key((1, 2), "a new pair", "structural", added=True)
    monkeypatch.setitem(run_config.TRAIN, "train.new_knob", pair)
    c = tiny_config()
    c.train.new_knob = [1, 2]  # as a round trip through JSON gives it back
    assert sweeps.run_id(c) == before


ADAPTIVE = {"solver.adaptive": True, "solver.name": "tsit5"}


@pytest.mark.parametrize("overrides, sweep, message", [
    ({"solver.name": "rk99"}, None, "solver.name='rk99' is not one of euler"),
    ({"solver.adjoint": "adjoint"}, None, "solver.adjoint='adjoint' is not one of checkpoint"),
    ({"task.name": "mnist"}, None,
     "task.name='mnist' is not one of associative_recall, flights, majority, synthetic_categorical"),
    ({"model.family": "rnn"}, None, "model.family='rnn' is not one of ode, discrete"),
    ({"model.time": "linear"}, None, "model.time='linear' is not one of tied"),
    ({}, {"solver": {"steps": (2, 0)}}, "solver.steps=0 must be an integer >= 1"),
    ({**ADAPTIVE, "solver.rtol": 0.0}, {}, "solver.rtol=0.0 must be a finite number > 0"),
    ({**ADAPTIVE, "solver.atol": -1.0}, {}, "solver.atol=-1.0 must be a finite number > 0"),
    ({"solver.adaptive": True, "solver.name": "rk4"}, {}, "'rk4' has no error estimate"),
    ({"train.learning_rate": 0.0}, None, "train.learning_rate=0.0 must be a finite number > 0"),
    ({"train.warmup_steps": 99}, None, "train.warmup_steps=99 must be < train.num_steps=4"),
    ({"train.warmup_steps": 4}, None, "train.warmup_steps=4 must be < train.num_steps=4"),
    ({"model.time": "smooth", "solver.t1": 2.0}, None, "model.time='smooth' defines the weights on"),
    ({"task.seq_len": 0}, None, "task.seq_len=0 must be an integer >= 1"),
    ({"model.width": 9}, None, "model.width=9 must be a multiple of model.heads=2"),
    ({}, {"solver": {"steps": ()}}, r"sweep.solver.steps=\(\) must be a non-empty tuple"),
    ({}, {"solver": {"stepz": (1, 2)}}, "sweep.solver.stepz is not a config key"),
    ({}, {"solver": {"steps": ("4",)}}, "sweep.solver.steps value '4' has type str, but solver.steps is int"),
    ({}, {"solver": {"adaptive": (1,)}}, "sweep.solver.adaptive value 1 must be bool"),
])
def test_validation_messages(overrides, sweep, message):
    """Each invalid value is named with what is allowed."""
    c = tiny_config(**overrides)
    if sweep is not None:
        c.unlock()
        c.sweep = ml_collections.ConfigDict(sweep)
    with pytest.raises(ValueError, match=message):
        sweeps.expand(c)


def test_zip_groups_must_match():
    c = tiny_config()
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"solver": {"rtol": (1e-2, 1e-3), "atol": (1e-3,)}})
    c.sweep_zip = (("solver.rtol", "solver.atol"),)
    with pytest.raises(ValueError, match="axes of different lengths"):
        sweeps.expand(c)
    c.sweep_zip = (("solver.rtol", "seed"),)
    with pytest.raises(ValueError, match="sweep_zip names 'seed', which is not a sweep axis"):
        sweeps.expand(c)


def test_shards_partition_the_grid():
    c = tiny_config()
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"solver": {"steps": (1, 2, 3)}, "seed": (0, 1)})
    runs = sweeps.expand(c)
    parts = [sweeps.shard(runs, i, 4) for i in range(4)]
    ids = [r.run_id for part in parts for r in part]
    assert sorted(ids) == sorted(r.run_id for r in runs) and len(ids) == len(set(ids)) == 6


@pytest.mark.parametrize("text, message", [("2/2", "needs 0 <= i < n"), ("a/b", "must look like i/n")])
def test_bad_shard(text, message):
    with pytest.raises(ValueError, match=message):
        sweeps.parse_shard(text)
