"""The `odeformer.solve` contract: counts, compilation, vmap, gradients, failures, errors."""

import chex
import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odeformer

ADAPTIVE = odeformer.ADAPTIVE_SOLVERS


def _linear(t, y, a):
    return a @ y


A = np.array([[-0.5, 1.0], [-1.0, -0.5]])
Y0 = np.array([1.0, 0.0])


def _van_der_pol(t, y, mu):
    """Stiff enough at mu=5 that adaptive solvers reject steps."""
    return jnp.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


class _Counter:
    """Counts field evaluations on the host, independently of `solve`'s formula."""

    def __init__(self, field):
        self.field = field
        self.count = 0

    def _tick(self):
        self.count += 1

    def __call__(self, t, y, args):
        jax.debug.callback(self._tick)
        return self.field(t, y, args)


# --- nfe ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", odeformer.SOLVERS)
@pytest.mark.parametrize("steps", [1, 7])
def test_nfe_fixed_steps_equals_host_count(x64, name, steps):
    counter = _Counter(_linear)
    sol = odeformer.solve(counter, jnp.asarray(Y0), args=jnp.asarray(A), solver=name, steps=steps)
    jax.block_until_ready(sol.y1)
    assert int(sol.stats["num_steps"]) == steps
    assert int(sol.stats["nfe"]) == counter.count


@pytest.mark.parametrize("name", ADAPTIVE)
def test_nfe_adaptive_with_rejected_steps_equals_host_count(x64, name):
    counter = _Counter(_van_der_pol)
    sol = odeformer.solve(counter, jnp.array([2.0, 0.0]), args=5.0, t1=6.0, solver=name,
                          rtol=1e-5, atol=1e-7, max_steps=20000)
    jax.block_until_ready(sol.y1)
    assert bool(sol.ok)
    assert int(sol.stats["num_rejected_steps"]) > 0  # the FSAL-after-rejection path runs
    assert int(sol.stats["num_steps"]) == int(sol.stats["num_accepted_steps"]) + int(
        sol.stats["num_rejected_steps"])
    assert int(sol.stats["nfe"]) == counter.count


def test_diffrax_instance_is_accepted_and_counted(x64):
    counter = _Counter(_linear)
    sol = odeformer.solve(counter, jnp.asarray(Y0), args=jnp.asarray(A), solver=diffrax.Tsit5(),
                          rtol=1e-8, atol=1e-8)
    named = odeformer.solve(_linear, jnp.asarray(Y0), args=jnp.asarray(A), solver="tsit5",
                            rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(sol.y1, named.y1)
    assert int(sol.stats["nfe"]) == counter.count == int(named.stats["nfe"])


# --- accuracy, pytrees, saving -----------------------------------------------------

def _exact(t):
    return jax.scipy.linalg.expm(t * jnp.asarray(A)) @ jnp.asarray(Y0)


def test_pytree_state_and_ts(x64):
    y0 = {"a": jnp.asarray(Y0), "b": (jnp.asarray(Y0) * 2,)}

    def field(t, y, a):
        return {"a": a @ y["a"], "b": (a @ y["b"][0],)}

    ts = jnp.array([0.0, 0.25, 0.6, 1.0])
    sol = odeformer.solve(field, y0, args=jnp.asarray(A), solver="dopri8", rtol=1e-12,
                          atol=1e-12, ts=ts)
    exact = jnp.stack([_exact(t) for t in ts])
    np.testing.assert_allclose(sol.ys["a"], exact, atol=1e-9)
    np.testing.assert_allclose(sol.ys["b"][0], 2 * exact, atol=1e-9)
    np.testing.assert_allclose(sol.y1["a"], _exact(1.0), atol=1e-10)
    np.testing.assert_array_equal(sol.ts, ts)


def test_saving_at_ts_does_not_change_y1_or_nfe(x64):
    kwargs = dict(args=jnp.asarray(A), solver="tsit5", rtol=1e-6, atol=1e-6)
    plain = odeformer.solve(_linear, jnp.asarray(Y0), **kwargs)
    saved = odeformer.solve(_linear, jnp.asarray(Y0), ts=jnp.linspace(0, 1, 9), **kwargs)
    np.testing.assert_array_equal(plain.y1, saved.y1)
    assert int(plain.stats["nfe"]) == int(saved.stats["nfe"])
    assert plain.ys is None and saved.ys.shape == (9, 2)


# --- compilation and vmap ----------------------------------------------------------

def test_rtol_atol_t1_sweep_compiles_once(x64):
    @jax.jit
    @chex.assert_max_traces(n=1)  # a retrace raises
    def run(rtol, atol, t1):
        return odeformer.solve(_linear, jnp.asarray(Y0), args=jnp.asarray(A), t1=t1,
                               rtol=rtol, atol=atol)

    nfes = set()
    for rtol in [1e-2, 1e-4, 1e-6, 1e-8]:
        sol = run(jnp.asarray(rtol), jnp.asarray(rtol), jnp.asarray(1.0 + rtol))
        nfes.add(int(sol.stats["nfe"]))
    assert run._cache_size() == 1
    assert len(nfes) == 4  # the traced tolerances really changed the solve


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_traced_steps_compile_once_and_give_the_int_steps_solve_bit_for_bit(x64, dtype):
    """With t1 traced (as in training) a traced count gives each int count's y1, nfe and
    gradient exactly: dt0 is formed as XLA forms it for the int (counts 3, 5, 6, 7 are
    where a true division would differ in the last bit)."""
    a, y0 = jnp.asarray(A, dtype), jnp.asarray(Y0, dtype)
    t1 = jnp.asarray(1.3, dtype)

    def loss(a, t1, steps, max_steps):
        sol = odeformer.solve(_van_der_pol, y0, args=a[0, 0] + 5, t1=t1, solver="rk4", steps=steps,
                              max_steps=max_steps)
        return jnp.sum(sol.y1), sol

    traced = jax.jit(jax.value_and_grad(chex.assert_max_traces(lambda a, t1, n: loss(a, t1, n, 7), n=1),
                                        has_aux=True))
    for n in range(1, 8):
        (want_y, want), want_grad = jax.jit(jax.value_and_grad(
            lambda a, t1, n=n: loss(a, t1, n, 4096), has_aux=True))(a, t1)
        (got_y, got), got_grad = traced(a, t1, jnp.asarray(n))
        np.testing.assert_array_equal(got.y1, want.y1, err_msg=f"steps={n}")
        np.testing.assert_array_equal(got_grad, want_grad, err_msg=f"steps={n}")
        assert int(got.stats["nfe"]) == int(want.stats["nfe"]) == 4 * n
        assert bool(got.ok)
    assert traced._cache_size() == 1


def test_traced_steps_with_a_constant_t1_equal_the_int_steps_up_to_rounding(x64):
    run = jax.jit(lambda n: _call(solver="rk4", steps=n, max_steps=9, t1=1.3).y1)
    for n in (3, 5, 9):
        np.testing.assert_allclose(run(jnp.asarray(n)), _call(solver="rk4", steps=n, t1=1.3).y1,
                                   rtol=1e-14)


def test_traced_steps_outside_one_to_max_steps_fail_before_or_at_run_time():
    with pytest.raises(ValueError, match=r"steps=0 must lie in \[1, max_steps=9\]"):
        _call(steps=jnp.asarray(0), max_steps=9)
    with pytest.raises(ValueError, match=r"steps=10 must lie in \[1, max_steps=9\]"):
        _call(steps=jnp.asarray(10), max_steps=9)
    run = jax.jit(lambda n: _call(steps=n, max_steps=9).y1)
    with pytest.raises(Exception, match=r"steps=\(a traced value\) must lie in \[1, max_steps=9\]"):
        jax.block_until_ready(run(jnp.asarray(10)))
    with pytest.raises(ValueError, match="must be a positive Python int .* or a 0-d integer array"):
        _call(steps=jnp.asarray(2.0))
    with pytest.raises(ValueError, match="must be a positive Python int .* or a 0-d integer array"):
        _call(steps=jnp.asarray([2, 3]))


def test_vmap_over_rtol_gives_per_element_stats(x64):
    rtols = jnp.array([1e-3, 1e-6, 1e-9])

    def run(rtol):
        return odeformer.solve(_linear, jnp.asarray(Y0), args=jnp.asarray(A), rtol=rtol, atol=rtol)

    batched = jax.vmap(run)(rtols)
    for i, rtol in enumerate(rtols):
        single = run(rtol)
        np.testing.assert_allclose(batched.y1[i], single.y1, rtol=1e-12, atol=1e-14)
        for key in single.stats:
            assert int(batched.stats[key][i]) == int(single.stats[key]), key
    assert len(set(np.asarray(batched.stats["nfe"]).tolist())) == 3


# --- gradients against central finite differences ----------------------------------

def _nonlinear(t, y, p):
    w, b = p
    return jnp.tanh(w @ y + b) - 0.3 * y * jnp.cos(t)


P = (np.array([[0.4, -1.1, 0.3], [0.8, 0.2, -0.5], [-0.3, 0.9, 0.1]]), np.array([0.1, -0.2, 0.3]))
X0 = np.array([0.5, -0.4, 0.9])


def _loss(params, y0, adjoint, mode):
    kw = dict(steps=16) if mode == "fixed" else dict(rtol=1e-12, atol=1e-12)
    sol = odeformer.solve(_nonlinear, y0, args=params, t1=1.5, solver="tsit5",
                          adjoint=adjoint, **kw)
    return jnp.sum(sol.y1 * jnp.array([1.0, -2.0, 0.5]))


def _central_fd(fn, x, eps=1e-6):
    x = np.asarray(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        grad[i] = (float(fn(x + e)) - float(fn(x - e))) / (2 * eps)
    return grad


@pytest.mark.parametrize("adjoint", odeformer.ADJOINTS)
@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_gradients_match_finite_differences(x64, adjoint, mode):
    params = jax.tree_util.tree_map(jnp.asarray, P)
    y0 = jnp.asarray(X0)
    loss = jax.jit(lambda p, y: _loss(p, y, adjoint, mode))
    g_params, g_y0 = jax.grad(loss, argnums=(0, 1))(params, y0)
    fd_w = _central_fd(lambda w: loss((w, params[1]), y0), params[0])
    fd_b = _central_fd(lambda b: loss((params[0], b), y0), params[1])
    fd_y0 = _central_fd(lambda y: loss(params, y), y0)
    # checkpoint/direct differentiate the discrete solve exactly; backsolve solves the
    # continuous adjoint, exact only to the solver's error (coarse with 16 fixed steps).
    tol = 2e-4 if (adjoint == "backsolve" and mode == "fixed") else 1e-7
    for got, want in [(g_params[0], fd_w), (g_params[1], fd_b), (g_y0, fd_y0)]:
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# --- failures ----------------------------------------------------------------------

def test_max_steps_reached_marks_not_ok_and_masks(x64):
    sol = odeformer.solve(_van_der_pol, jnp.array([2.0, 0.0]), args=5.0, t1=3.0, solver="tsit5",
                          rtol=1e-8, atol=1e-8, max_steps=10, throw=False)
    assert not bool(sol.ok)
    assert int(sol.stats["num_steps"]) == 10
    assert np.all(np.isnan(sol.y1))  # never a half-integrated state posing as y(t1)


def test_max_steps_reached_raises_when_throwing(x64):
    with pytest.raises(Exception, match="max_steps reached"):
        jax.block_until_ready(
            odeformer.solve(_van_der_pol, jnp.array([2.0, 0.0]), args=5.0, t1=3.0,
                            rtol=1e-8, atol=1e-8, max_steps=10).y1)


def _blow_up(t, y, args):
    return y**2  # y(t) = 1 / (1 - t) from y0 = 1: infinite at t = 1


def test_non_finite_marks_not_ok(x64):
    sol = odeformer.solve(_blow_up, jnp.ones(1), t1=3.0, solver="euler", steps=400, throw=False)
    assert not bool(sol.ok)
    assert np.all(np.isnan(sol.y1))
    fine = odeformer.solve(_blow_up, jnp.ones(1), t1=0.5, solver="rk4", steps=50, throw=False)
    assert bool(fine.ok)
    np.testing.assert_allclose(fine.y1, [2.0], rtol=1e-6)


def test_non_finite_raises_when_throwing(x64):
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(
            odeformer.solve(_blow_up, jnp.ones(1), t1=3.0, solver="euler", steps=400).y1)


def test_ok_is_per_element_under_vmap(x64):
    sol = jax.vmap(lambda t1: odeformer.solve(_blow_up, jnp.ones(1), t1=t1, solver="euler",
                                              steps=400, throw=False))(jnp.array([0.5, 3.0]))
    np.testing.assert_array_equal(sol.ok, [True, False])
    assert np.isfinite(sol.y1[0]).all() and np.isnan(sol.y1[1]).all()


# --- bad input ---------------------------------------------------------------------

def _call(y0=None, **kwargs):
    base = dict(args=jnp.asarray(A), solver="tsit5", steps=4)
    base.update(kwargs)
    return odeformer.solve(_linear, jnp.asarray(Y0) if y0 is None else y0, **base)


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "steps=0 must be a positive"),
    (dict(steps=-3), "steps=-3 must be a positive"),
    (dict(steps=2.5), "steps=2.5 must be a positive"),
    (dict(steps=True), "steps=True must be a positive"),
    (dict(steps=None, rtol=0.0, atol=1e-6), "rtol=0.0 must be finite and > 0"),
    (dict(steps=None, rtol=1e-6, atol=-1.0), "atol=-1.0 must be finite and > 0"),
    (dict(steps=4, rtol=1e-6, atol=1e-6), "exactly one of steps"),
    (dict(steps=None), "exactly one of steps"),
    (dict(steps=None, rtol=1e-6), "exactly one of steps"),
    (dict(solver="rk99"), "solver='rk99' is not one of euler, heun"),
    (dict(solver=diffrax.Kvaerno5()), "Kvaerno5 is not supported"),
    (dict(solver="rk4", steps=None, rtol=1e-6, atol=1e-6), "'rk4' has no embedded error"),
    (dict(solver="euler", steps=None, rtol=1e-6, atol=1e-6), "'euler' has no embedded error"),
    (dict(adjoint="forward"), "adjoint='forward' is not one of checkpoint, backsolve, direct"),
    (dict(ts=jnp.array([0.0, 0.5, 0.4])), "ts must be strictly increasing"),
    (dict(ts=jnp.array([0.0, 1.5])), r"ts must lie in \[t0, t1\]"),
    (dict(ts=jnp.array([-0.1, 0.5])), r"ts must lie in \[t0, t1\]"),
    (dict(ts=jnp.zeros((2, 2))), "ts must be a non-empty 1-D array"),
    (dict(t0=1.0, t1=1.0), "t0 and t1 must be finite with t1 > t0"),
    (dict(t1=float("nan")), "t0 and t1 must be finite with t1 > t0; got t0=0.0, t1=nan"),
    (dict(t0=float("nan")), "t0 and t1 must be finite"),
    (dict(t1=float("inf")), "t0 and t1 must be finite"),
    (dict(steps=None, rtol=float("nan"), atol=1e-6), "rtol=nan must be finite and > 0"),
    (dict(max_steps=0), "max_steps=0 must be a positive"),
    (dict(throw="yes"), "throw='yes' must be True or False"),
    (dict(y0=jnp.array([1, 0])), "floating-point"),
])
def test_bad_input_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _call(**kwargs)


def test_traced_bad_tolerance_fails_at_run_time():
    run = jax.jit(lambda r: _call(steps=None, rtol=r, atol=1e-6).y1)
    with pytest.raises(Exception, match=r"rtol=\(a traced value\) must be finite and > 0"):
        jax.block_until_ready(run(jnp.asarray(-1.0)))


def _host_callbacks(fn, *args) -> int:
    return jax.jit(fn).lower(*args).as_text().count("callback")


@pytest.mark.parametrize("options", [dict(solver="rk4", steps=4),
                                     dict(solver="tsit5", steps=None, rtol=1e-4, atol=1e-6),
                                     dict(solver="euler", steps="traced")],
                         ids=["fixed", "adaptive", "traced_steps"])
def test_without_throw_the_program_has_no_host_callback_and_bad_traced_values_give_not_ok(options):
    """With traced t1, tolerances and step count, ``throw=True`` compiles run-time checks in
    (host callbacks, which JAX's persistent cache refuses); ``throw=False`` turns every one of
    them into ``ok=False``, and the program has none."""
    traced_steps = options.get("steps") == "traced"

    def run(t1, rtol, n, throw):
        kw = dict(options)
        if traced_steps:
            kw.update(steps=n, max_steps=8)
        elif "rtol" in kw:
            kw["rtol"] = rtol
        return _call(t1=t1, throw=throw, **kw)

    args = (jnp.asarray(1.0), jnp.asarray(1e-4), jnp.asarray(3))
    assert _host_callbacks(lambda *a: run(*a, True).y1, *args) > 0
    quiet = lambda *a: run(*a, False)  # noqa: E731
    assert _host_callbacks(lambda *a: quiet(*a).y1, *args) == 0
    assert _host_callbacks(jax.grad(lambda *a: quiet(*a).y1.sum()), *args) == 0
    good = jax.jit(quiet)(*args)
    assert bool(good.ok) and np.isfinite(good.y1).all()
    bad = [(jnp.asarray(-1.0), args[1], args[2])]  # t1 < t0
    bad += [(args[0], args[1], jnp.asarray(9)), (args[0], args[1], jnp.asarray(0))] if traced_steps else []
    bad += [(args[0], jnp.asarray(-1e-4), args[2])] if "rtol" in options else []
    for values in bad:
        sol = jax.jit(quiet)(*values)
        assert not bool(sol.ok), values
        assert np.isnan(sol.y1).all()
