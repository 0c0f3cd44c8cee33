"""Test-time solvers: parsing, swapping a trained model's solver, the invariance gap."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from odeformer.experiment.evaluators.invariance import (
    EvalSolver,
    parse_solver,
    parse_solvers,
    solver_report,
    with_solver,
)
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.tasks import make_task


def test_specs_parse_into_fixed_and_adaptive_solvers():
    assert parse_solver("euler:64") == EvalSolver("euler:64", "euler", steps=64)
    assert parse_solver("dopri5:1e-6") == EvalSolver("dopri5:1e-6", "dopri5", rtol=1e-6, atol=1e-9)
    assert parse_solver("tsit5:0.01").atol == pytest.approx(1e-5)
    assert parse_solver("dopri5:8").steps == 8  # an integer is a step count, for any solver
    assert parse_solvers(()) == ()
    relative = parse_solver("euler:x2")
    assert relative == EvalSolver("euler:x2", "euler", factor=2)
    assert relative.for_run("rk4", 3) == EvalSolver("euler:x2", "euler", steps=6, factor=2)
    assert parse_solver("train:x4").for_run("rk4", 3) == EvalSolver("train:x4", "rk4", steps=12, factor=4)
    assert parse_solver("dopri5:1e-6").for_run("euler", 3) == parse_solver("dopri5:1e-6")
    with pytest.raises(ValueError, match="'train:x2' multiplies the training steps, and this run's solver is "
                                         "adaptive"):
        parse_solver("train:x2").for_run("dopri5", None)


@pytest.mark.parametrize("specs, message", [
    ("euler:64", "evaluate.solvers='euler:64' must be a tuple of strings"),
    (("euler",), "evaluate.solvers entry 'euler' must be a string 'name:steps'"),
    ((64,), "evaluate.solvers entry 64 must be a string"),
    (("rk5:4",), "evaluate.solvers entry 'rk5:4': solver 'rk5' is not one of euler, heun"),
    (("euler:0",), "evaluate.solvers entry 'euler:0': steps must be an integer >= 1"),
    (("euler:four",), "'four' is neither an integer step count nor a float rtol"),
    (("dopri5:2.0",), "rtol must lie in (0, 1); an integer means steps"),
    (("dopri5:-1e-3",), "rtol must lie in (0, 1)"),
    (("rk4:1e-6",), "rk4 has no error estimate, so it cannot be adaptive; use 'name:steps' or one of"),
    (("euler:4", "euler:4"), "lists a solver twice"),
    (("euler:x0",), "'euler:x0': the factor of the training steps must be >= 1"),
    (("train:8",), "'train:8': 'train' names the training solver at a multiple of its steps: 'train:xK'"),
    (("rk5:x2",), "solver 'rk5' is not one of euler, heun"),
])
def test_bad_specs_are_refused_with_what_is_allowed(specs, message):
    with pytest.raises(ValueError) as error:
        parse_solvers(specs)
    assert message in str(error.value)


def _model(family):
    task = make_task(ml_collections.ConfigDict(dict(
        name="majority", seed=0, vocab_size=4, seq_len=5, num_train=8, num_test=8)))
    shape = ModelShape(family=family, width=8, heads=2, mlp_ratio=1, layers=2)
    return build_model(shape, SolverSpec("euler", 2), task, rngs=nnx.Rngs(0)), task


def _logits(graphdef, params, tokens, **hyper):
    return np.asarray(nnx.merge(graphdef, params)(tokens, **hyper)[0])


@pytest.mark.slow
def test_swapped_solver_keeps_the_parameters_and_solves_as_a_model_built_with_it():
    model, task = _model("ode")
    graphdef, params = nnx.split(model)
    rk4 = with_solver(graphdef, params, name="rk4", steps=3)
    built = build_model(ModelShape(width=8, heads=2, mlp_ratio=1), SolverSpec("rk4", 3), task,
                        rngs=nnx.Rngs(1))
    assert rk4 == nnx.graphdef(built)  # the same structure, whatever the weights
    tokens = task.test["tokens"]
    np.testing.assert_array_equal(_logits(rk4, params, tokens),
                                  _logits(nnx.graphdef(built), params, tokens))
    assert not np.allclose(_logits(rk4, params, tokens), _logits(graphdef, params, tokens))
    # the original model is untouched
    assert nnx.merge(graphdef, params).block.solver == "euler"
    adaptive = with_solver(graphdef, params, name="dopri5", steps=None)
    hyper = dict(rtol=jnp.asarray(1e-7), atol=jnp.asarray(1e-10), t1=jnp.asarray(1.0))
    np.testing.assert_allclose(_logits(adaptive, params, tokens, **hyper),
                               _logits(with_solver(graphdef, params, name="rk4", steps=64), params, tokens),
                               atol=1e-4)


@pytest.mark.slow
def test_discrete_family_resolved_at_its_own_steps_is_itself_and_finer_steps_differ():
    model, task = _model("discrete")
    graphdef, params = nnx.split(model)
    tokens = task.test["tokens"]
    same = with_solver(graphdef, params, name="euler", steps=2)  # 2 layers: 2 unit steps
    np.testing.assert_array_equal(_logits(same, params, tokens), _logits(graphdef, params, tokens))
    finer = _logits(with_solver(graphdef, params, name="euler", steps=8), params, tokens)
    assert not np.allclose(finer, _logits(graphdef, params, tokens))
    # an adaptive re-solve of the discrete family uses the stored tolerances (its flow
    # ignores the traced ones): the error against a tight solve falls as they tighten.
    # Which steps straddle the field's jumps at integer times depends on float32 rounding,
    # so an error can change several-fold with the summation order of a stage (1e-4:
    # 2.7e-4 under Diffrax's stage loop, 1.9e-3 written out; logits up to 2.2).
    adaptive = {rtol: _logits(with_solver(graphdef, params, name="dopri5", steps=None, rtol=rtol,
                                          atol=rtol * 1e-3), params, tokens)
                for rtol in (1e-1, 1e-4, 1e-6, 1e-8)}
    errors = [np.abs(adaptive[rtol] - adaptive[1e-8]).max() for rtol in (1e-1, 1e-4, 1e-6)]
    assert errors[0] > 10 * errors[1] and errors[1] > errors[2], errors
    assert errors[1] < 1e-2, errors


def test_report_gap_is_the_accuracy_drop_under_the_last_solver_and_failures_are_nan():
    model, _ = _model("ode")
    graphdef, params = nnx.split(model)
    hyper = {"rtol": jnp.asarray(1e-3, jnp.float32), "atol": jnp.asarray(1e-6, jnp.float32),
             "t1": jnp.asarray(1.0, jnp.float32)}
    seen = []

    def evaluate_with(solved, values):
        block = nnx.merge(solved, params).block
        seen.append((block.solver, block.steps, float(values["rtol"]), float(values["t1"])))
        accuracy = {"euler": 0.5, "rk4": 0.25, "dopri5": 0.125}[block.solver]
        return {"loss": 1.0, "accuracy": accuracy, "nfe": 7, "ok": block.solver != "rk4"}

    specs = parse_solvers(("euler:8", "rk4:4", "dopri5:1e-5"))
    row = solver_report(specs, graphdef, params, hyper, 0.75, evaluate_with)
    assert seen == [("euler", 8, pytest.approx(1e-3), 1.0), ("rk4", 4, pytest.approx(1e-3), 1.0),
                    ("dopri5", None, pytest.approx(1e-5), 1.0)]
    assert row["test_accuracy@euler:8"] == 0.5 and row["nfe_forward@euler:8"] == 7
    assert math.isnan(row["test_accuracy@rk4:4"]) and math.isnan(row["test_loss@rk4:4"])
    assert row["invariance_gap"] == 0.75 - 0.125
    assert solver_report((), graphdef, params, hyper, 0.75, evaluate_with) == {}
    # Relative specs read the run's own count from hyper (the block holds the sweep's bound: 2).
    seen.clear()
    row = solver_report(parse_solvers(("train:x2", "euler:x3")), graphdef, params,
                        {**hyper, "steps": jnp.asarray(1, jnp.int32)}, 1.5, evaluate_with,
                        split="val", gap="loss")
    assert [(solver, steps) for solver, steps, *_ in seen] == [("euler", 2), ("euler", 3)]
    assert row["val_accuracy@train:x2"] == 0.5 and row["invariance_gap_loss"] == 1.0 - 1.5
    assert "invariance_gap" not in row
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), params, nnx.split(model)[1]))
