"""Convergence order of every fixed-step solver, fitted on the asymptotic range.

For each solver the step counts are chosen so that the errors lie in the asymptotic
range: the finest points before float64 round-off (errors >= 1e-13, checked) where
the local slope has settled. The slope is the least-squares fit of log(error)
against log(steps) over those points.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import odeformer

# Step counts per solver, in the asymptotic range of both test problems, except
# where a problem overrides them. Tsit5 approaches order 5 from above and slowly (its
# fifth-order error constants are minimised, so sixth-order terms linger).
GRIDS = {
    "euler": (256, 512, 1024, 2048),
    "heun": (64, 128, 256, 512),
    "midpoint": (64, 128, 256, 512),
    "ralston": (64, 128, 256, 512),
    "rk4": (32, 64, 128, 256),
    "bosh3": (64, 128, 256, 512),
    "tsit5": (128, 181, 256),
    "dopri5": (64, 128, 256),
    "dopri8": (8, 11, 16, 23),
}
ATTENTION_GRIDS = {**GRIDS, "tsit5": (64, 91, 128), "dopri5": (32, 45, 64, 91),
                   "dopri8": (6, 8, 11, 16)}
ROUNDOFF_FLOOR = 1e-13


def _slope(field, y0, args, t1, exact, name, steps):
    run = jax.jit(
        lambda y, a, n: odeformer.solve(field, y, args=a, t1=t1, solver=name, steps=n).y1,
        static_argnums=2,
    )
    errors = np.array([float(jnp.max(jnp.abs(run(y0, args, n) - exact))) for n in steps])
    assert np.all(errors > ROUNDOFF_FLOOR), f"{name}: errors {errors} reach round-off"
    assert np.all(np.diff(errors) < 0), f"{name}: errors {errors} do not decrease"
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


def _rotating_linear_problem():
    """y' = (W + Q(t) B Q(t)^T) y, Q(t) = expm(t W): exact y(t) = Q(t) expm(t B) y0.

    Time-dependent and non-commuting, so every order condition is exercised (an
    autonomous linear problem would only test the stability polynomial: Dopri8's
    matches exp(z) to 0.13% at z^9 and shows a slope of 9 there).
    """
    w = jnp.array([[0.0, 2.0, 0.0, 0.0], [-2.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 3.0],
                   [0.0, -1.0, -3.0, 0.0]])
    b = jnp.array([[-0.3, 1.0, 0.2, 0.0], [-1.0, -0.2, 0.0, 0.5], [0.1, 0.0, -0.5, 1.5],
                   [0.0, -0.4, -1.5, -0.1]])

    def field(t, y, args):
        w, b = args
        q = jax.scipy.linalg.expm(t * w)
        return w @ y + q @ (b @ (q.T @ y))

    y0 = jnp.array([1.0, 0.5, -0.3, 0.2])
    t1 = 2.0
    exact = jax.scipy.linalg.expm(t1 * w) @ jax.scipy.linalg.expm(t1 * b) @ y0
    return field, y0, (w, b), t1, exact


@pytest.mark.parametrize("name", odeformer.SOLVERS)
def test_order_on_linear_ode_with_exact_solution(x64, name):
    field, y0, args, t1, exact = _rotating_linear_problem()
    slope = _slope(field, y0, args, t1, exact, name, GRIDS[name])
    assert abs(slope - odeformer.solver_order(name)) < 0.3, slope


@pytest.fixture(scope="module")
def attention_problem():
    with jax.enable_x64(True):
        field = odeformer.AttentionField(8, 2, rngs=nnx.Rngs(0))
        field = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), field)
        f, state = odeformer.vector_field(field)
        x0 = jax.random.normal(jax.random.key(1), (4, 8), jnp.float64)
        reference = odeformer.solve(f, x0, args=state, t1=2.0, solver="dopri8",
                                    rtol=1e-14, atol=1e-14)
        assert bool(reference.ok)
        return f, x0, state, reference.y1


@pytest.mark.slow
@pytest.mark.parametrize("name", odeformer.SOLVERS)
def test_order_on_attention_field_against_dopri8_reference(x64, attention_problem, name):
    f, x0, state, reference = attention_problem
    slope = _slope(f, x0, state, 2.0, reference, name, ATTENTION_GRIDS[name])
    assert abs(slope - odeformer.solver_order(name)) < 0.3, slope
