"""Time dependence: piece selection, Chebyshev basis, initial values, validation."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import odeformer


def test_piece_index_on_a_grid_that_lands_on_boundaries_up_to_rounding():
    spec = odeformer.TimeSpec(mode="piecewise", pieces=7, horizon=3.0)
    # Diffrax's grid times t0 + (t1 - t0) * (k / N) are off the exact boundary by ulps.
    grid = 3.0 * (jnp.arange(7, dtype=jnp.float32) / 7.0)
    np.testing.assert_array_equal(spec.piece_index(grid), np.arange(7))
    mids = grid + 1.5 / 7
    np.testing.assert_array_equal(spec.piece_index(mids), np.arange(7))
    np.testing.assert_array_equal(spec.piece_index(jnp.array([-1.0, 3.0, 99.0])), [0, 6, 6])


@pytest.mark.parametrize("horizon_is_layers", [False, True])
def test_every_layer_is_used_once_on_the_float32_euler_grid(horizon_is_layers):
    # Diffrax's fixed-step grid: t_k = t0 + (t1 - t0) * (k / N), in float32.
    # One array shape for every K (padded), so eager ops are compiled once.
    k = np.arange(256, dtype=np.float32)
    for pieces in range(1, 257):
        horizon = float(pieces) if horizon_is_layers else 1.0
        spec = odeformer.TimeSpec(mode="piecewise", pieces=pieces, horizon=horizon)
        grid = np.float32(0.0) + np.float32(horizon) * (k / np.float32(pieces))
        index = np.asarray(spec.piece_index(jnp.asarray(grid)))[:pieces]
        np.testing.assert_array_equal(index, np.arange(pieces), err_msg=str(pieces))


def test_chebyshev_basis_matches_numpy(x64):
    spec = odeformer.TimeSpec(mode="smooth", basis=6, horizon=2.0)
    t = jnp.linspace(0.0, 2.0, 11)
    got = spec.basis_values(t)
    s = np.asarray(t) - 1.0
    for k in range(6):
        coef = np.zeros(k + 1)
        coef[k] = 1
        np.testing.assert_allclose(got[k], np.polynomial.chebyshev.chebval(s, coef), atol=1e-13)


def test_smooth_weights_start_constant_and_follow_the_basis(x64):
    spec = odeformer.TimeSpec(mode="smooth", basis=3)
    lin = odeformer.TimeLinear(4, 2, spec, rngs=nnx.Rngs(0))
    x = jnp.ones((4,), jnp.float32)
    np.testing.assert_allclose(lin(0.0, x), lin(0.7, x), rtol=1e-6)
    stack = lin.kernel.value[...]
    lin.kernel.value[...] = stack.at[2].set(1.0)  # W(t) += T_2(2t - 1) * ones
    s = 2 * 0.7 - 1
    np.testing.assert_allclose(lin.kernel(0.7), stack[0] + (2 * s * s - 1), rtol=1e-5)


def test_concat_feeds_time_as_an_input_feature():
    lin = odeformer.TimeLinear(3, 2, odeformer.TimeSpec(mode="concat"), rngs=nnx.Rngs(0))
    kernel = lin.kernel.value[...][0]
    x = jnp.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(lin(0.3, x), x @ kernel[:3] + 0.3 * kernel[3], rtol=1e-6)


def test_tied_ignores_time():
    lin = odeformer.TimeLinear(3, 2, odeformer.TimeSpec(), rngs=nnx.Rngs(0))
    x = jnp.array([0.5, -1.0, 2.0])
    np.testing.assert_array_equal(lin(0.0, x), lin(0.9, x))


def test_piecewise_pieces_are_independently_initialised():
    lin = odeformer.TimeLinear(4, 4, odeformer.TimeSpec(mode="piecewise", pieces=3), rngs=nnx.Rngs(0))
    stack = lin.kernel.value[...]
    assert stack.shape == (3, 4, 4)
    assert not np.allclose(stack[0], stack[1]) and not np.allclose(stack[1], stack[2])


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="linear"), "time mode='linear' is not one of tied, concat, piecewise, smooth"),
    (dict(mode="piecewise", pieces=0), "time pieces=0 must be an int >= 1"),
    (dict(mode="smooth", basis=2.5), "time basis=2.5 must be an int >= 1"),
    (dict(horizon=0.0), "time horizon=0.0 must be > 0"),
])
def test_time_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        odeformer.TimeSpec(**kwargs)


def test_time_param_gradient_reaches_only_the_active_piece():
    spec = odeformer.TimeSpec(mode="piecewise", pieces=4)
    lin = odeformer.TimeLinear(2, 2, spec, rngs=nnx.Rngs(0))
    grads = nnx.grad(lambda m: jnp.sum(m(0.6, jnp.ones(2))))(lin)
    g = np.asarray(grads.kernel.value[...])
    assert np.abs(g[2]).sum() > 0 and np.abs(g[[0, 1, 3]]).sum() == 0
