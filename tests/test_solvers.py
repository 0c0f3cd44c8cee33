"""The solvers `solve` hands to Diffrax: equal to Diffrax's own, stages evaluated once per pass."""

from typing import ClassVar

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_solve import _Counter  # the host-callback counter of the nfe tests

import odeformer
from odeformer._solvers import RK4, _Prepared, diffrax_solver, solver_info

# Diffrax's own class behind each name, written out independently of the registry.
STOCK = {"euler": diffrax.Euler, "heun": diffrax.Heun, "midpoint": diffrax.Midpoint,
         "ralston": diffrax.Ralston, "rk4": RK4, "bosh3": diffrax.Bosh3, "tsit5": diffrax.Tsit5,
         "dopri5": diffrax.Dopri5, "dopri8": diffrax.Dopri8}
RK_SOLVERS = tuple(name for name in odeformer.SOLVERS if name != "euler")
FSAL_SOLVERS = tuple(name for name in RK_SOLVERS if STOCK[name].tableau.fsal)

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


def _compare_steps(name, terms, t0, t1, y0, a, made_jump=False, rtol=1e-13, atol=1e-14):
    """One step of `solve`'s solver against Diffrax's own step: y1, the error estimate,
    the dense output's stages and the FSAL state, with their dtypes."""
    prepared, stock = solver_info(name).solver, STOCK[name]()
    assert isinstance(prepared, _Prepared) and prepared.write_out
    state = prepared.init(terms, t0, t1, y0, a)
    if made_jump:  # a jump makes the carried f0 stale: it must be re-evaluated
        state = (state[0], jax.tree_util.tree_map(jnp.zeros_like, state[1]))
    mine = prepared.step(terms, t0, t1, y0, a, state, jnp.array(made_jump))
    theirs = stock.step(terms, t0, t1, y0, a, stock.init(terms, t0, t1, y0, a), jnp.array(made_jump))
    y1, error, dense, new_state, result = mine
    _assert_trees_close(y1, theirs[0], rtol, atol)
    if np.any(stock.tableau.b_error != 0):
        _assert_trees_close(error, theirs[1], rtol, atol)
    else:  # classic RK4: no estimate (Diffrax's zeros), and `solve` refuses adaptive stepping
        assert error is None
    _assert_trees_close(dense, theirs[2], rtol, atol)
    for leaf, ref in zip(jax.tree_util.tree_leaves((y1, dense)),
                         jax.tree_util.tree_leaves((theirs[0], theirs[2])), strict=True):
        assert leaf.dtype == ref.dtype
    assert result == diffrax.RESULTS.successful
    return y1, new_state, theirs[3]


@pytest.mark.parametrize("name,made_jump", [(n, False) for n in RK_SOLVERS]
                         + [(n, True) for n in FSAL_SOLVERS])
def test_one_step_equals_diffrax_step(x64, name, made_jump):
    """Equal to Diffrax's own step (its stage loop) to float64 rounding, and the FSAL state
    is f(t1, y1), carried to the next step."""
    a = jnp.asarray(A)
    y1, state, stock_state = _compare_steps(name, diffrax.ODETerm(_field), 0.2, 0.45, _y0(), a,
                                            made_jump)
    if name in FSAL_SOLVERS:
        assert not bool(state[0])
        _assert_trees_close(state[1], stock_state[1])
        _assert_trees_close(state[1], _field(0.45, y1, a))
    else:
        assert state is None


@pytest.mark.parametrize("name", RK_SOLVERS)
def test_one_step_float32_equals_diffrax_step_with_dtypes(name):
    y0 = jax.tree_util.tree_map(lambda leaf: leaf.astype(jnp.float32), _y0())
    a = jnp.asarray(A, jnp.float32)
    y1, state, _ = _compare_steps(name, diffrax.ODETerm(_field), 0.2, 0.45, y0, a,
                                  rtol=2e-6, atol=1e-7)
    carried = None if state is None else state[1]  # f(t1, y1) of an FSAL solver
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves((y1, carried)))


@pytest.mark.parametrize("name", RK_SOLVERS)
def test_last_stage_is_evaluated_at_t1_exactly(x64, name):
    """A stage at c = 1 is evaluated at t1 itself, as Diffrax does, not at t0 + (t1 - t0),
    which rounds below t1 here; the field jumps at t1 to tell them apart."""
    t0, t1 = 0.2, 0.87
    assert t0 + (t1 - t0) < t1

    def jumps_at_t1(t, y, a):
        return jax.tree_util.tree_map(lambda v: jnp.where(t >= t1, 2.0, 1.0) * v, _field(t, y, a))

    _compare_steps(name, diffrax.ODETerm(jumps_at_t1), t0, t1, _y0(), jnp.asarray(A))


class _ExpensiveTerm(diffrax.ODETerm):
    """A term whose vf is declared costlier than two vf_prods: Diffrax then drops FSAL."""

    def is_vf_expensive(self, t0, t1, y, args):
        return True


@pytest.mark.parametrize("name", FSAL_SOLVERS)
def test_expensive_vector_field_drops_fsal_as_diffrax_does(x64, name):
    terms = _ExpensiveTerm(_field)
    assert solver_info(name).solver.init(terms, 0.2, 0.45, _y0(), jnp.asarray(A)) is None
    _, state, stock_state = _compare_steps(name, terms, 0.2, 0.45, _y0(), jnp.asarray(A))
    assert state is None and stock_state is None


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


# The step tests above cover every tableau; here one of each kind of step (no stage loop,
# plain, FSAL + SSAL with its own interpolation) through the whole solve and its gradient.
@pytest.mark.parametrize("name", ["euler", "rk4", pytest.param("tsit5", marks=pytest.mark.slow),
                                  pytest.param("dopri5", marks=pytest.mark.slow)])
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


def _gradient_evaluations(solver, **steps_or_tolerances):
    """(executed field evaluations of a checkpoint-adjoint gradient, the solve's stats)."""
    counter = _Counter(_field)  # counts forward and backward evaluations alike (remat replays it)
    options = steps_or_tolerances or {"steps": 4}

    def loss(a):
        sol = odeformer.solve(counter, _y0(), args=a, solver=solver, **options)
        return jnp.sum(sol.y1["u"]), sol.stats

    (_, stats), _ = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(A))
    jax.effects_barrier()
    return counter.count, {name: int(value) for name, value in stats.items()}


@pytest.mark.parametrize("name", odeformer.SOLVERS)
def test_checkpoint_gradient_evaluates_each_stage_twice(x64, name):
    """The checkpoint adjoint's gradient runs the forward pass (nfe evaluations), then
    re-runs each step's stages once (the carried FSAL f0 is not re-evaluated): 2 nfe minus
    the evaluations made at init."""
    count, stats = _gradient_evaluations(name)
    assert count == 2 * stats["nfe"] - solver_info(name).evals_at_init


@pytest.mark.slow
def test_adaptive_checkpoint_gradient_recomputes_no_step_twice_at_tens_of_steps(x64):
    """Adaptive solves checkpoint binomially over ``max_steps`` = 4096 attempted steps with
    Equinox's default number of checkpoints (about sqrt(2 max_steps)); up to tens of steps,
    rejected ones included, each step is still recomputed once: 2 nfe - init, as with a
    checkpoint at every fixed step."""
    seen, init = set(), solver_info("dopri5").evals_at_init
    for rtol in (1e-5, 1e-9):
        count, stats = _gradient_evaluations("dopri5", rtol=rtol, atol=rtol)
        assert count == 2 * stats["nfe"] - init
        assert stats["num_rejected_steps"] > 0  # their stages are recomputed too
        seen.add(stats["num_steps"])
    assert len(seen) == 2 and max(seen) >= 20, seen


@pytest.mark.parametrize("name", RK_SOLVERS)
def test_explicit_scan_kind_keeps_diffrax_stage_loop_and_its_third_pass(x64, name):
    """An explicit ``scan_kind`` asks for Diffrax's own step (less memory: one stage's
    residuals at a time), which re-runs its stage loop inside the step's recomputation:
    3 nfe evaluations per gradient, less the FSAL f(t0, y0) made once at init, the cost
    the straight-line step removes."""
    solver = STOCK[name](scan_kind="checkpointed")
    info = solver_info(solver)
    if name in FSAL_SOLVERS:  # wrapped for its eager f(t0, y0) only
        assert isinstance(info.solver, _Prepared) and info.solver.solver is solver
        assert not info.solver.write_out
    else:
        assert info.solver is solver
    count, stats = _gradient_evaluations(solver)
    assert stats["nfe"] == info.evals_at_init + 4 * info.evals_per_step
    assert count == 3 * stats["nfe"] - 2 * info.evals_at_init


def test_custom_tableau_is_written_out_and_a_custom_step_or_init_is_kept(x64):
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

    class OwnInit(RK38):  # an __init__ whose arguments are not its fields
        flag: bool

        def __init__(self, on: str):
            self.flag = on == "yes"

    terms, y0, a = diffrax.ODETerm(_field), _y0(), jnp.asarray(A)
    written_out = solver_info(RK38()).solver
    assert isinstance(written_out, _Prepared) and written_out.write_out
    mine = written_out.step(terms, 0.0, 0.3, y0, a, None, False)
    theirs = RK38().step(terms, 0.0, 0.3, y0, a, None, False)
    _assert_trees_close(mine[0], theirs[0])
    _assert_trees_close(mine[2], theirs[2])
    own_step = OwnStep()
    assert solver_info(own_step).solver is own_step
    prepared = solver_info(OwnInit("yes")).solver
    assert prepared.write_out and type(prepared.solver) is OwnInit and prepared.solver.flag is True
    sol = odeformer.solve(_field, y0, args=a, solver=OwnInit("yes"), steps=3)
    ref = odeformer.solve(_field, y0, args=a, solver=RK38(), steps=3)
    _assert_trees_close(sol.y1, ref.y1)


def test_prepared_solver_is_a_public_diffrax_wrapper_that_diffrax_adjoints_can_adjust():
    """``solve``'s solvers wrap Diffrax's (diffrax.AbstractWrappedSolver, public API) rather
    than subclass them: Diffrax forwards isinstance checks to the wrapped solver, and
    DirectAdjoint and ForwardMode, which set a Runge--Kutta solver's scan_kind with
    eqx.tree_at, reach the wrapped solver's field. If a Diffrax or Equinox release changes
    either, this fails first."""
    import equinox as eqx

    versions = f"diffrax {diffrax.__version__}, equinox {eqx.__version__}"
    prepared = solver_info("dopri5").solver
    assert type(prepared) is _Prepared and type(prepared.solver) is diffrax.Dopri5, versions
    assert isinstance(prepared, (diffrax.Dopri5, diffrax.AbstractRungeKutta,
                                 diffrax.AbstractAdaptiveSolver)), (
        f"{versions}: isinstance is no longer forwarded to a wrapped solver")
    bounded = eqx.tree_at(lambda s: s.scan_kind, prepared, "bounded", is_leaf=lambda x: x is None)
    assert (bounded.solver.scan_kind, bounded.write_out) == ("bounded", True), versions
    assert solver_info(prepared).solver == prepared  # preparing twice wraps once
    assert prepared.interpolation_cls is diffrax.Dopri5.interpolation_cls
    assert prepared.order(diffrax.ODETerm(_field)) == 5
