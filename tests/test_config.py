"""The run definition (odeformer.experiment.config): schema, configs on the base, overrides,
normalisation and what shares a compile."""

import importlib.util
from pathlib import Path

import ml_collections
import pytest

from configs import base, quick
from odeformer.experiment import config as run_config
from odeformer.experiment import paths, sweeps
from odeformer.experiment.grid import grid

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "__init__")


def _load(name: str, variant: str = "") -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location(f"configs.{name}", REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def _variants(name: str) -> tuple[str, ...]:
    return ("",) if name == "base" else ("", "tiny")


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_and_variant_holds_exactly_the_schema_keys(name):
    for variant in _variants(name):
        config = _load(name, variant)
        run_config.check_keys(config)
        run_config.check_values(config)
        assert config.is_locked or name == "base"


@pytest.mark.parametrize("name", [n for n in CONFIG_FILES if n != "base"])
def test_every_experiment_config_expands_into_valid_runs(name):
    """Each tiny variant expands (the full grids too, without building any data)."""
    for variant in ("", "tiny"):
        runs = sweeps.expand(_load(name, variant))
        assert runs and len({r.run_id for r in runs}) == len(runs)


def test_an_unknown_variant_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match=r"configs/quick.py has no variant 'huge'; variants: tiny"):
        quick.get_config("huge")


def test_base_config_holds_every_key_at_its_default():
    flat = paths.flatten(base.get_config())
    assert set(flat) | {"sweep"} == set(run_config.schema_of_run(base.get_config()))
    assert (flat["task.name"], flat["model.width"], flat["solver.name"], flat["solver.steps"],
            flat["train.num_steps"], flat["evaluate.solvers"]) == (
                "associative_recall", 32, "rk4", 4, 300, ())
    study = paths.flatten(base.get_config("convergence"))
    assert study["experiment"] == "convergence" and study["convergence.reference_solver"] == "dopri8"
    assert "model.width" not in study


def test_an_unknown_key_is_refused_naming_it():
    config = base.get_config()
    config.model.depth = 3
    with pytest.raises(ValueError, match=r"model.depth is not a config key of experiment='train'; "
                                         r"known here: .*model.width"):
        run_config.check_keys(config)


def test_a_missing_key_is_refused_naming_it_and_the_base():
    config = ml_collections.ConfigDict(base.get_config().to_dict())
    del config.train["microbatch"]
    with pytest.raises(ValueError, match=r"train.microbatch is missing from the config: start from "
                                         r"configs/base.py"):
        run_config.check_keys(config)


def test_a_task_key_no_task_reads_is_refused_and_other_tasks_keys_are_allowed():
    config = base.get_config()
    config.task = run_config.task_section("associative_recall", "flights")
    run_config.check_keys(config)
    config.task.colour = "red"
    with pytest.raises(ValueError, match="task.colour is not a config key"):
        run_config.check_keys(config)


def test_every_key_has_a_meaning_and_a_kind_and_the_reference_page_is_current():
    for experiment in run_config.experiments():
        for path, key in run_config.schema(experiment).items():
            assert key.doc.strip() and key.kind in run_config.KINDS, path
    page = (REPO / "docs" / "config_reference.md").read_text()
    assert page == run_config.reference(), (
        "docs/config_reference.md is stale: rewrite it from odeformer.experiment.config.reference()")
    for experiment in run_config.experiments():
        for path in run_config.schema(experiment):
            assert f"`{path.split('.', 1)[1] if path.startswith(experiment + '.') else path}`" in page \
                or f"`{path}`" in page, path


@pytest.mark.parametrize("path, value, message", [
    ("solver.name", "rk99", "solver.name='rk99' is not one of euler, heun"),
    ("solver.steps", 0, "solver.steps=0 must be an integer >= 1"),
    ("model.family", "lstm", "model.family='lstm' is not one of ode, discrete"),
    ("train.weight_decay", -1.0, r"train.weight_decay=-1.0 must be a finite number >= 0"),
    ("task.name", "sudoku", "task.name='sudoku' is not one of associative_recall, flights"),
    ("evaluate.power_iterations", 1, "evaluate.power_iterations=1 must be an integer >= 2"),
])
def test_a_bad_base_value_is_refused_even_when_a_sweep_replaces_it(path, value, message):
    config = ml_collections.ConfigDict(quick.get_config("tiny").to_dict())
    config.sweep = ml_collections.ConfigDict({path.split(".")[0]: {path.split(".")[1]: (
        paths.get_path(config, path),)}})
    paths.set_path(config, path, value)
    with pytest.raises(ValueError, match=message):
        sweeps.expand(config)


def test_pin_replaces_a_swept_axis_and_says_so():
    config = quick.get_config()
    config.solver.name = "rk4"  # as --config.solver.name=rk4 leaves it
    notes = sweeps.pin(config, {"solver.name": "rk4", "train.num_steps": 300})
    assert notes == ["--config.solver.name='rk4' replaces the sweep axis solver.name=('euler', 'rk4')"]
    assert "name" not in config.sweep.solver and config.sweep.solver.steps == (2, 4)
    runs = sweeps.expand(config)
    assert {r.config.solver.name for r in runs if r.config.model.family == "ode"} == {"rk4"}
    assert len(runs) == 3


def test_pin_takes_a_zipped_key_out_of_its_group_and_drops_emptied_sections():
    config = ml_collections.ConfigDict(_load("invariance", "tiny").to_dict())
    config.solver.name = "euler"
    notes = sweeps.pin(config, {"solver.name": "euler"})
    assert notes == ["--config.solver.name='euler' replaces the sweep axis solver.name=('euler', "
                     "'euler', 'rk4'), taken out of the zipped group ('solver.name', 'solver.steps') "
                     "(its other keys still vary together)"]
    assert config.sweep_zip == () and "name" not in config.sweep.solver
    sweeps.pin(config, {"solver.steps": 4})
    assert "solver" not in config.sweep and config.sweep.seed == (0, 1)


def test_an_override_or_an_axis_no_run_reads_is_named():
    config = ml_collections.ConfigDict(quick.get_config("tiny").to_dict())
    config.sweep.solver.rtol = (1e-3, 1e-5)  # every solve has fixed steps
    runs = sweeps.expand(config)
    assert len(runs) == 5
    axes = paths.flatten(config.sweep)
    assert sweeps.unread_keys(runs, ["solver.atol", "solver.steps", "train.num_steps"], axes) == [
        "--config.solver.atol is read by no run of this sweep (each run resets or drops it)",
        "sweep axis solver.rtol is read by no run of this sweep (each run resets or drops it): its "
        "values give the same runs"]


def test_a_run_keeps_only_its_tasks_keys():
    config = ml_collections.ConfigDict(_load("embeddings").to_dict())
    runs = sweeps.expand(config)
    flights = next(r for r in runs if r.config.task.name == "flights")
    synthetic = next(r for r in runs if r.config.task.name == "synthetic_categorical")
    assert "cardinality" not in flights.config.task and "task.cardinality" in flights.unread
    assert synthetic.config.task.cardinality > 0


def _groups(config) -> int:
    return grid(config)["compile"].nunique()


@pytest.mark.parametrize("path, values", [
    ("seed", (0, 1)), ("task.seed", (0, 1)), ("train.learning_rate", (1e-2, 1e-3)),
    ("train.weight_decay", (0.0, 0.1)), ("solver.t1", (1.0, 2.0)), ("solver.steps", (1, 2, 3)),
])
def test_runs_that_differ_in_a_traced_key_share_one_compile(path, values):
    assert run_config.schema()[path].kind == "traced"
    config = ml_collections.ConfigDict(quick.get_config("tiny").to_dict())
    section, _, key = path.rpartition(".")
    config.sweep = ml_collections.ConfigDict({section: {key: values}} if section else {key: values})
    assert len(grid(config)) == len(values) and _groups(config) == 1


@pytest.mark.parametrize("path, values", [
    ("train.batch_size", (8, 16)), ("train.num_steps", (4, 5)), ("solver.name", ("euler", "rk4")),
    ("model.width", (8, 16)), ("task.seq_len", (5, 7)), ("train.microbatch", (0, 4)),
])
def test_runs_that_differ_in_a_structural_key_compile_apart(path, values):
    assert run_config.schema()[path].kind == "structural"
    config = ml_collections.ConfigDict(quick.get_config("tiny").to_dict())
    section, key = path.split(".")
    config.sweep = ml_collections.ConfigDict({section: {key: values}})
    assert _groups(config) == len(values)


def test_a_regulariser_weight_is_a_switch():
    config = ml_collections.ConfigDict(quick.get_config("tiny").to_dict())
    config.sweep = ml_collections.ConfigDict({"train": {"kinetic": (0.0, 0.1, 1.0)},
                                              "model": {"family": ("ode",)}})
    frame = grid(config)
    assert frame.groupby("train.kinetic")["compile"].first().tolist() == [0, 1, 1]


def test_the_combiner_and_bag_keys_are_reset_for_runs_without_multi_valued_features():
    config = base.get_config()
    config.task = run_config.task_section("synthetic_categorical", "flights")
    config.sweep = ml_collections.ConfigDict(dict(
        task=dict(name=("synthetic_categorical", "flights"), bag_features=(0, 2), bag_weighted=(False, True),
                  bag_max_values=(3, 5)),
        model=dict(combiner=("sum", "mean", "sqrtn"))))
    runs = sweeps.expand(config)
    with_bags = [r for r in runs if r.config.task.get("bag_features", 0) > 0]
    without = [r for r in runs if r not in with_bags]
    # Bags: 3 combiners x 2 weightings x 2 lengths; flights and bag_features=0: one run each.
    assert len(with_bags) == 12 and len(without) == 2 and len({r.run_id for r in runs}) == 14
    assert {r.config.model.combiner for r in with_bags} == {"sum", "mean", "sqrtn"}
    for run in without:
        assert run.config.model.combiner == "sum" and "model.combiner" in run.unread, run.config.task.name
    synthetic = next(r for r in without if r.config.task.name == "synthetic_categorical")
    assert (synthetic.config.task.bag_weighted, synthetic.config.task.bag_max_values) == (False, 4)
    assert {"task.bag_weighted", "task.bag_max_values"} <= synthetic.unread
    assert all("model.combiner" not in r.unread and "task.bag_weighted" not in r.unread for r in with_bags)
    # Set explicitly where no run has bags, it is named as read by no run (as model.compression is).
    config = ml_collections.ConfigDict(_load("embeddings", "tiny").to_dict())
    config.model.combiner = "mean"
    runs = sweeps.expand(config)
    assert len(runs) == 4  # the four embedding kinds, whatever the combiner
    assert sweeps.unread_keys(runs, ["model.combiner"]) == [
        "--config.model.combiner is read by no run of this sweep (each run resets or drops it)"]
