"""The convergence study: depth limits of residual transformers and solver orders (float64).

One instance, the full config's (attention field, width 8, 2 heads, 8 tokens), so that the
tiny config run here reuses these tests' compiled solves.
"""

import jax
import ml_collections
import numpy as np
import pytest
from runner_helpers import with_overrides

from configs import convergence as convergence_config
from odeformer._solvers import solver_order
from odeformer.analysis import convergence as fits
from odeformer.experiment import sweeps
from odeformer.experiment.runner import run_sweep
from odeformer.experiment.studies import convergence as cv


def _config(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(convergence_config.get_config().to_dict())
    return with_overrides(c, {f"convergence.{k}" if k != "seed" else k: v for k, v in overrides.items()})


def _reference(c):
    v = c.convergence
    return cv._reference(c.seed, v.width, v.heads, v.tokens, v.cycles, v.reference_solver, v.reference_rtol,
                         v.reference_atol, v.reference_max_steps)[0]


def _error(c, steps):
    return np.max(np.abs(cv.output(c, steps)[0] - _reference(c)))


def test_weight_path_has_the_moments_of_one_draw(x64):
    u = np.asarray(cv.weight_path(np.linspace(0, 1, 101), 1.7))
    np.testing.assert_allclose(u.sum(-1), 1, atol=1e-14)
    np.testing.assert_allclose((u**2).sum(-1), 1, atol=1e-14)
    assert np.ptp(u[:, 0]) > 1  # it moves


def test_fit_slope_uses_the_asymptotic_range_above_the_floor():
    steps = np.array([1, 2, 4, 8, 16, 32, 64])
    values = np.array([1.0, 0.9, 0.4, 8 ** -2.0, 16 ** -2.0, 32 ** -2.0, 1e-16])  # pre-asymptotic, floor
    assert fits.fit_slope(steps, values, points=3, floor=1e-13) == pytest.approx(-2.0)
    # Two seeds per step count: all fitted; a step count is dropped if any seed is at the floor.
    assert fits.fit_slope(np.repeat(steps, 2), np.repeat(values, 2), points=3) == pytest.approx(-2.0)
    assert np.isnan(fits.fit_slope(steps[:2], values[:2], points=3, floor=1.0))


def test_network_of_smooth_samples_is_euler_on_the_smooth_field(x64):
    c = _config(steps=16)
    network, nfe = cv.output(c, 16)  # piecewise field, 16 pieces W(k/16), Euler in 16 steps
    x0, anchors, _ = cv._problem(c.seed, 8, 2, 8)
    euler, _ = cv._smooth_solve(8, 2, "euler", 16, 1)(anchors, x0, 1.0, None, None)
    np.testing.assert_allclose(network, euler, rtol=0, atol=1e-12)
    assert nfe == 16


def test_smooth_weights_converge_at_rate_one_over_depth(x64):
    c = _config(weights="smooth")
    depths = [16, 32, 64]
    errors = [_error(c, k) for k in depths]
    assert fits.fit_slope(depths, errors) == pytest.approx(-1.0, abs=0.15), errors


def test_random_weights_do_not_converge_to_an_ode(x64):
    depths = [16, 32, 64]
    slopes, last = {}, {}
    for weights in ("random", "random_sqrt"):
        steps, distances, from_input = [], [], []
        for seed in range(4):
            c = _config(weights=weights, seed=seed)
            x0 = np.asarray(cv._problem(seed, 8, 2, 8)[0])
            outs = [cv.output(c, k)[0] for k in depths]
            steps += list(depths[:-1])
            distances += [np.max(np.abs(a - b)) for a, b in zip(outs, outs[1:], strict=False)]
            from_input.append([np.max(np.abs(o - x0)) for o in outs])
        slopes[weights] = fits.fit_slope(steps, distances)
        last[weights] = np.asarray(distances[1::2])
        if weights == "random":
            # Step 1/K: the network tends to the identity (the mean residual branch is 0)...
            assert np.all(np.mean(from_input, 0)[-1] < 0.5 * np.mean(from_input, 0)[0])
    # ... at the random-walk rate K^-1/2 of a sum of independent layers, not the 1/K of an ODE;
    assert -0.8 < slopes["random"] < -0.25, slopes
    # step 1/sqrt(K): successive depths stay O(1) apart, no limit.
    assert slopes["random_sqrt"] > -0.25 and np.all(last["random_sqrt"] > 0.5), (slopes, last)


# One solver per order (the full config also runs midpoint); the steps are in the asymptotic
# range of this field (dopri5 approaches order 5 from above: local slope 5.8 at 32-64).
@pytest.mark.parametrize("solver, steps", [("heun", (64, 128)), ("rk4", (64, 128)), ("dopri5", (64, 128))])
def test_solver_orders_on_the_time_dependent_attention_field(x64, solver, steps):
    c = _config(solver=solver)
    errors = np.array([_error(c, n) for n in steps])
    assert np.all(errors > fits.ROUNDOFF_FLOOR), errors
    assert fits.fit_slope(steps, errors) == pytest.approx(-solver_order(solver), abs=0.3), errors


def test_tiny_config_runs_every_point(tmp_path):
    config = convergence_config.get_config("tiny")
    summary = run_sweep(config, tmp_path, quiet=True)
    assert not jax.config.jax_enable_x64  # measure switches float64 on for itself only
    table = summary.table.sort_values(["convergence.weights", "convergence.solver", "convergence.steps"])
    assert summary.ran == 7 and not summary.failed
    assert list(zip(table["convergence.weights"], table["convergence.solver"], table["convergence.steps"],
                    strict=True)) == [("random", "euler", 16), ("random", "euler", 32),
                                      ("random_sqrt", "euler", 16), ("random_sqrt", "euler", 32),
                                      ("smooth", "euler", 16), ("smooth", "euler", 32), ("smooth", "rk4", 64)]
    assert list(table.nfe) == [16, 32, 16, 32, 16, 32, 256]
    smooth = table[table["convergence.weights"] == "smooth"]
    assert smooth.error.notna().all() and table[table["convergence.weights"] != "smooth"].error.isna().all()
    assert (smooth.reference_nfe > 0).all()
    # The study's rows agree with the library: Euler's error halves with the depth.
    errors = smooth[smooth["convergence.solver"] == "euler"].error.to_numpy()
    assert errors[1] == pytest.approx(errors[0] / 2, rel=0.1)
    fitted = fits.slopes(summary.table, points=2)
    assert set(fitted.metric) == {"error", "successive_distance"}
    assert run_sweep(config, tmp_path, quiet=True).skipped == 7


@pytest.mark.parametrize("key, value, message", [
    ("weights", "noisy", "convergence.weights='noisy' is not one of smooth, random, random_sqrt"),
    ("solver", "rk45", "convergence.solver='rk45' is not one of euler"),
    ("steps", 0, "convergence.steps=0 must be an int >= 1"),
    ("heads", 3, "convergence.width=8 must be a multiple of convergence.heads=3"),
    ("cycles", 0.0, "convergence.cycles=0.0 must be > 0"),
    ("reference_solver", "rk4", "convergence.reference_solver='rk4' is not one of heun"),
    ("reference_rtol", -1.0, "convergence.reference_rtol=-1.0 must be > 0"),
])
def test_validation_messages(key, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cv.validate(_config(**{key: value}))


def test_random_weights_need_euler_and_the_sweep_says_so():
    with pytest.raises(ValueError, match="convergence.solver='rk4' with convergence.weights='random'"):
        cv.validate(_config(weights="random", solver="rk4"))
    config = convergence_config.get_config()
    runs = sweeps.expand(config)
    assert len(runs) == 3 * (3 * 11 + 9 + 9 + 8 + 11)
    bad = ml_collections.ConfigDict(config.to_dict())
    solvers = list(bad.sweep.convergence.solver)
    solvers[bad.sweep.convergence.weights.index("random")] = "rk4"
    bad.sweep.convergence.solver = tuple(solvers)
    with pytest.raises(ValueError, match="use solver='euler'"):
        sweeps.expand(bad)


def test_unknown_key_is_named():
    c = ml_collections.ConfigDict(_config().to_dict())
    c.convergence.depth = 3
    with pytest.raises(ValueError, match="expected exactly"):
        cv.validate(c)
