"""The clustering study: sphere attention dynamics, the equal-angle reduction (float64).

The instances are the tiny config's (8 tokens), so that its run here reuses these tests'
compiled solves.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from runner_helpers import with_overrides

from configs import clustering as clustering_configs
from odeformer.analysis import clustering as summaries
from odeformer.experiment import sweeps
from odeformer.experiment.runner import run_sweep
from odeformer.experiment.studies import clustering as cl


def _config(**overrides) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(clustering_configs.get_config("tiny").to_dict())
    return with_overrides(c, {k if k == "seed" else f"clustering.{k}": v for k, v in overrides.items()})


def _equal_angle(**overrides):
    return _config(part="equal_angle", dim=8, solver="dopri8", rtol=1e-12, atol=1e-12, **overrides)


@pytest.mark.parametrize("normalisation", ["softmax", "mean"])
def test_scalar_ode_is_the_particle_field_at_equal_angles(x64, normalisation):
    """d/dt <x_i, x_j> = <x_i', x_j> + <x_i, x_j'> from the particle field, at t = 0."""
    n, d = 6, 9
    field = jax.jit(cl.attention_field)
    for rho0 in (-1 / (n - 1), -0.1, 0.0, 0.5, 0.95):
        for beta in (0.3, 4.0):
            x = cl.equal_angle_tokens(n, d, rho0, jax.random.key(3))
            gram = np.asarray(x @ x.T)
            np.testing.assert_allclose(np.diag(gram), 1, atol=1e-13)
            np.testing.assert_allclose(gram[np.triu_indices(n, 1)], rho0, atol=1e-13)
            v = field(0.0, x, (jnp.float64(beta), jnp.asarray(normalisation == "softmax")))
            rate = np.asarray(v @ x.T + x @ v.T)[np.triu_indices(n, 1)]
            expected = float(cl.equal_angle_rate(rho0, beta, n, normalisation))
            np.testing.assert_allclose(rate, expected, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("normalisation, beta", [("softmax", 1.0), ("mean", 1.0)])
def test_equal_angle_particles_match_the_scalar_ode(normalisation, beta):
    row = cl.measure(_equal_angle(normalisation=normalisation, beta=beta))
    assert row["max_inner_product_deviation"] < 1e-6, row
    assert row["max_norm_deviation"] < 1e-8, row
    assert row["rho_final"] > 1 - 1e-6
    predicted = 2.0 if normalisation == "softmax" else 2 * np.exp(beta)
    assert row["decay_rate_predicted"] == pytest.approx(predicted)
    assert row["decay_rate_scalar"] == pytest.approx(predicted, rel=1e-3), row
    assert row["decay_rate_particles"] == pytest.approx(predicted, rel=1e-2), row


def test_tokens_stay_on_the_sphere_within_solver_tolerance():
    deviations = {}
    for rtol in (1e-5, 1e-8):
        row = cl.measure(_config(normalisation="mean", beta=4.0, rtol=rtol, atol=rtol))
        deviations[rtol] = row["max_norm_deviation"]
        assert deviations[rtol] < 100 * rtol, (rtol, row)
    assert deviations[1e-8] < deviations[1e-5] / 10  # the drift is solver error


def test_clustered_fraction_grows_with_time():
    row = cl.measure(_config(normalisation="softmax", beta=1.0, seed=0))
    fractions = [row[f"clustered@t={t:g}"] for t in (1, 5, 10)]
    counts = [row[f"clusters@t={t:g}"] for t in (1, 5, 10)]
    assert fractions[0] < 0.5 and fractions[-1] == 1.0, fractions
    assert np.all(np.diff(fractions) >= 0) and np.all(np.diff(counts) <= 0), (fractions, counts)
    assert counts[-1] == 1 and row["nfe"] > 0


def test_clusters_are_connected_components():
    gram = np.eye(5)
    gram[0, 1] = gram[1, 0] = gram[1, 2] = gram[2, 1] = 1.0  # 0-1-2 chained, 3 and 4 alone
    assert cl.clusters(gram, 0.999) == 3
    assert cl.clusters(np.ones((4, 4)), 0.999) == 1


def test_tiny_config_runs_every_point(tmp_path):
    summary = run_sweep(clustering_configs.get_config("tiny"), tmp_path, quiet=True)
    table = summary.table
    assert summary.ran == 10 and not summary.failed
    assert not jax.config.jax_enable_x64  # measure switches float64 on for itself only
    phase = table[table["clustering.part"] == "phase"]
    equal = table[table["clustering.part"] == "equal_angle"]
    assert len(phase) == 8 and len(equal) == 2
    assert [t for t, _ in summaries.clustered_columns(table)] == [1.0, 5.0, 10.0]
    assert phase["clustered@t=10"].notna().all() and equal["clustered@t=10"].isna().all()
    assert (equal.max_inner_product_deviation < 1e-6).all()
    assert (phase.max_norm_deviation < 1e-6).all()


@pytest.mark.parametrize("overrides, message", [
    (dict(part="phases"), "clustering.part='phases' is not one of phase, equal_angle"),
    (dict(normalisation="none"), "clustering.normalisation='none' is not one of softmax, mean"),
    (dict(solver="rk4"), "clustering.solver='rk4' is not one of heun"),
    (dict(tokens=1), "clustering.tokens=1 must be an int >= 2"),
    (dict(beta=-1.0), "clustering.beta=-1.0 must be >= 0"),
    (dict(beta=float("inf")), "clustering.beta=inf must be a finite number"),
    (dict(rtol=float("nan")), "clustering.rtol=nan must be a finite number"),
    (dict(times=(1.0, "5")), r"clustering.times=\(1.0, '5'\) must be a finite number \(each element\)"),
    (dict(times=(5.0, 1.0)), "clustering.times=.* must be a non-empty increasing tuple"),
    (dict(times=(1.0, 20.0)), r"in \(0, horizon=10.0\]"),
    (dict(threshold=1.0), "clustering.threshold=1.0 must lie in"),
    (dict(rate_window=(1e-3, 1e-10)), "clustering.rate_window=.* must be \\(low, high\\)"),
    (dict(part="equal_angle", dim=4), "clustering.dim=4 must be >= clustering.tokens=8"),
    (dict(part="equal_angle", dim=8, rho0=-0.5), r"clustering.rho0=-0.5 must lie in \[-1/\(tokens-1\), 1\)"),
])
def test_validation_messages(overrides, message):
    with pytest.raises(ValueError, match=message):
        cl.validate(_config(**overrides))


def test_unknown_key_and_bad_sweep_are_named():
    c = ml_collections.ConfigDict(_config().to_dict())
    c.clustering.gamma = 1.0
    with pytest.raises(ValueError, match="expected exactly"):
        cl.validate(c)
    bad = ml_collections.ConfigDict(clustering_configs.get_config("tiny").to_dict())
    bad.sweep.clustering.dim = (2,) * len(bad.sweep.clustering.dim)  # equal-angle runs too
    with pytest.raises(ValueError, match="clustering.dim=2 must be >= clustering.tokens=8"):
        sweeps.expand(bad)
