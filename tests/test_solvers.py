"""The solvers `solve` hands to Diffrax: equal to Diffrax's own, stages evaluated once per pass."""

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odeformer
from odeformer.solvers import RK4, diffrax_solver, solver_info

# Diffrax's own class behind each name, written out independently of the registry.
STOCK = {"euler": diffrax.Euler, "heun": diffrax.Heun, "midpoint": diffrax.Midpoint,
         "ralston": diffrax.Ralston, "rk4": RK4, "bosh3": diffrax.Bosh3, "tsit5": diffrax.Tsit5,
         "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}
RK_SOLVERS = tuple(name for name in odeformer.SOLVERS if name != "euler")

A = np.array([[-0.5, 1.0, 0.2], [-1.0, -0.5, 0.3], [0.1, -0.2, -0.3]])


def _field(t, y, a):
    """Nonlinear, time-dependent, a two-leaf pytree state."""
    return {"u": jnp.tanh(a @ y["u"]) * (1 + t), "v": jnp.sin(y["u"][:2]) - t * y["v"]}


def _y0():
    return {"u": jnp.array([1.0, -0.5, 0.25]), "v": jnp.array([0.3, -0.7])}


def _assert_trees_close(actual, expected, rtol=1e-13, atol=1e-14):
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected),
                    strict=True):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def test_registry_names_map_to_diffrax_classes():
    assert set(STOCK) == set(odeformer.SOLVERS)
    for name, cls in STOCK.items():
        assert isinstance(solver_info(name).solver, cls), name
        assert type(diffrax_solver(name)) is cls, name  # the baseline, as Diffrax runs it
    with pytest.raises(ValueError, match="solver='rk5' is not one of euler, heun"):
        diffrax_solver("rk5")


@pytest.mark.parametrize("name", RK_SOLVERS)
@pytest.mark.parametrize("made_jump", [False, True])
def test_one_step_equals_diffrax_step(x64, name, made_jump):
    """y1, the error estimate, the dense output's stages and the FSAL state of one step
    equal Diffrax's own step (its stage loop), to float64 rounding."""
    prepared, stock = solver_info(name).solver, STOCK[name]()
    terms, y0, a = diffrax.ODETerm(_field), _y0(), jnp.asarray(A)
    t0, t1 = 0.2, 0.45
    state = prepared.init(terms, t0, t1, y0, a)
    if made_jump and state is not None:  # a jump makes the carried f0 stale: it must be re-evaluated
        state = (state[0], jax.tree_util.tree_map(jnp.zeros_like, state[1]))
    mine = prepared.step(terms, t0, t1, y0, a, state, jnp.array(made_jump))
    theirs = stock.step(terms, t0, t1, y0, a, stock.init(terms, t0, t1, y0, a), jnp.array(made_jump))
    y1, error, dense, new_state, result = mine
    _assert_trees_close(y1, theirs[0])
    if np.any(stock.tableau.b_error != 0):
        _assert_trees_close(error, theirs[1])
    else:  # classic RK4: no estimate (Diffrax's zeros), and `solve` refuses adaptive stepping
        assert error is None
    _assert_trees_close(dense, theirs[2])
    if stock.tableau.fsal:
        assert not bool(new_state[0])
        _assert_trees_close(new_state[1], theirs[3][1])
        _assert_trees_close(new_state[1], _field(t1, y1, a))  # f(t1, y1), carried to the next step
    assert result == diffrax.RESULTS.successful


def _diffrax_solve(name, y0, a, *, steps=None, rtol=None, ts=None):
    """The same solve as `odeformer.solve`, through `diffeqsolve` with Diffrax's own class."""
    if steps is None:
        controller, dt0, max_steps = diffrax.PIDController(rtol=rtol, atol=rtol), 0.01, 4096
    else:
        controller, dt0, max_steps = diffrax.ConstantStepSize(), 1 / steps, steps
    saveat = diffrax.SaveAt(t1=True) if ts is None else diffrax.SaveAt(ts=ts, t1=True)
    return diffrax.diffeqsolve(
        diffrax.ODETerm(_field), STOCK[name](), 0.0, 1.0, dt0, y0, args=a, saveat=saveat,
        stepsize_controller=controller, max_steps=max_steps,
        adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=steps))


@pytest.mark.parametrize("name", odeformer.SOLVERS)
def test_fixed_step_solve_and_gradient_equal_diffrax(x64, name):
    ts = jnp.array([0.1, 0.55, 0.8])

    def ours(a):
        sol = odeformer.solve(_field, _y0(), args=a, solver=name, steps=5, ts=ts)
        return sum(jnp.sum(leaf ** 2) for leaf in jax.tree_util.tree_leaves(sol.y1)), sol

    def theirs(a):
        sol = _diffrax_solve(name, _y0(), a, steps=5, ts=ts)
        y1 = jax.tree_util.tree_map(lambda leaf: leaf[-1], sol.ys)
        return sum(jnp.sum(leaf ** 2) for leaf in jax.tree_util.tree_leaves(y1)), sol

    (loss, sol), grad = jax.value_and_grad(ours, has_aux=True)(jnp.asarray(A))
    (ref_loss, ref), ref_grad = jax.value_and_grad(theirs, has_aux=True)(jnp.asarray(A))
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    _assert_trees_close(sol.ys, jax.tree_util.tree_map(lambda leaf: leaf[:-1], ref.ys))
    _assert_trees_close(grad, ref_grad, rtol=1e-12)


@pytest.mark.parametrize("name", odeformer.ADAPTIVE_SOLVERS)
def test_adaptive_solve_equals_diffrax(x64, name):
    sol = odeformer.solve(_field, _y0(), args=jnp.asarray(A), solver=name, rtol=1e-7, atol=1e-7)
    ref = _diffrax_solve(name, _y0(), jnp.asarray(A), rtol=1e-7)
    _assert_trees_close(sol.y1, jax.tree_util.tree_map(lambda leaf: leaf[-1], ref.ys), rtol=1e-12)
    assert int(sol.stats["num_steps"]) == int(ref.stats["num_steps"])
    assert int(sol.stats["num_rejected_steps"]) == int(ref.stats["num_rejected_steps"])


class _Counter:
    """Counts executed field evaluations on the host, forward and backward passes alike
    (a remat's recomputation replays the callback)."""

    def __init__(self):
        self.count = 0

    def _tick(self):
        self.count += 1

    def __call__(self, t, y, a):
        jax.debug.callback(self._tick)
        return _field(t, y, a)


@pytest.mark.parametrize("name", odeformer.SOLVERS)
def test_checkpoint_gradient_evaluates_each_stage_twice(x64, name):
    """The checkpoint adjoint's gradient runs the forward pass (nfe evaluations), then
    re-runs each step's stages once (the carried FSAL f0 is not re-evaluated): 2 nfe minus
    the evaluations made at init. Diffrax's own Runge--Kutta step re-runs its stage loop a
    second time inside that recomputation (3 nfe)."""
    counter = _Counter()

    def loss(a):
        sol = odeformer.solve(counter, _y0(), args=a, solver=name, steps=4)
        return jnp.sum(sol.y1["u"]), sol.stats["nfe"]

    (_, nfe), _ = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(A))
    jax.effects_barrier()
    assert counter.count == 2 * int(nfe) - solver_info(name).evals_at_init


def test_custom_tableau_is_written_out_and_a_custom_step_is_kept(x64):
    class RK38(diffrax.AbstractERK):  # Kutta's 3/8 rule, a tableau the registry lacks
        tableau: ClassVar = diffrax.ButcherTableau(
            c=np.array([1 / 3, 2 / 3, 1.0]), b_sol=np.array([1 / 8, 3 / 8, 3 / 8, 1 / 8]),
            b_error=np.zeros(4), a_lower=(np.array([1 / 3]), np.array([-1 / 3, 1.0]),
                                          np.array([1.0, -1.0, 1.0])))
        interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

        def order(self, terms):
            return 4

    class OwnStep(RK38):
        def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
            return super().step(terms, t0, t1, y0, args, solver_state, made_jump)

    terms, y0, a = diffrax.ODETerm(_field), _y0(), jnp.asarray(A)
    written_out = solver_info(RK38()).solver
    assert type(written_out).step is not diffrax.AbstractRungeKutta.step
    _assert_trees_close(written_out.step(terms, 0.0, 0.3, y0, a, None, False)[0],
                        RK38().step(terms, 0.0, 0.3, y0, a, None, False)[0])
    assert type(solver_info(OwnStep()).solver).step is OwnStep.step
