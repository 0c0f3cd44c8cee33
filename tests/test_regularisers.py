"""Kinetic-energy and Jacobian regularisers: integrals against independent computations,
the Hutchinson identity, gradients against finite differences, zero weights costing
nothing, compile reuse across weights, validation messages (float64 for numerics)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.linalg
from flax import nnx
from runner_helpers import tiny_config

from odeformer import ODEBlock, TransformerBlockField
from odeformer import _regularisers as regularisers
from odeformer._block import vector_field
from odeformer.experiment import models, sweeps
from odeformer.experiment.models import ModelShape, SequenceClassifier, SolverSpec
from odeformer.experiment.runner import plan, structure_key
from odeformer.experiment.tasks import make_task
from odeformer.experiment.training import _loss_and_metrics, init_state, make_optimizer, make_train_step


class LinearField(nnx.Module):
    """dx/dt = x W on tokens x [..., d]."""

    def __init__(self, w):
        self.w = nnx.Param(jnp.asarray(w))

    def __call__(self, t, x):
        return x @ self.w[...]


def _linear_problem(seed=0, shape=(2, 3, 4)):
    rng = np.random.default_rng(seed)
    d = shape[-1]
    w = rng.normal(size=(d, d)) / np.sqrt(d)
    return w, rng.normal(size=shape)


def test_kinetic_energy_of_a_linear_field_matches_quadrature_of_the_exact_solution(x64):
    w, x0 = _linear_problem()
    t1 = 1.5
    # x(t) = x0 expm(t W); kinetic rate = mean((x(t) W)^2), integrated by adaptive quadrature.
    def rate(t):
        return np.mean((x0 @ scipy.linalg.expm(t * w) @ w) ** 2)

    want, _ = scipy.integrate.quad(rate, 0.0, t1, epsabs=1e-14, epsrel=1e-13)
    block = ODEBlock(LinearField(w), solver="dopri8", rtol=1e-12, atol=1e-12)
    sol, values = regularisers.integrate(block, jnp.asarray(x0), ("kinetic",), None, t1=t1)
    assert set(values) == {"kinetic"}
    np.testing.assert_allclose(values["kinetic"], want, rtol=1e-9)
    np.testing.assert_allclose(sol.y1, x0 @ scipy.linalg.expm(t1 * w), rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_kinetic_energy_of_an_attention_flow_matches_a_fine_trapezoid(x64):
    # Nonlinear field: reference solution on a fine grid (dopri8 dense output), then the
    # trapezoid rule of mean(f^2) along it.
    field = TransformerBlockField(8, 2, mlp_ratio=2, rngs=nnx.Rngs(0))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), nnx.state(field))
    nnx.update(field, params)
    x0 = jax.random.normal(jax.random.key(1), (2, 5, 8), jnp.float64)
    block = ODEBlock(field, solver="dopri8", rtol=1e-11, atol=1e-11)
    ts = jnp.linspace(0.0, 1.0, 2001)
    path = block.integrate(x0, ts=ts).ys
    f, state = vector_field(field)
    rates = jax.vmap(lambda t, x: jnp.mean(f(t, x, state) ** 2))(ts, path)
    want = np.trapezoid(np.asarray(rates), np.asarray(ts))
    _, values = regularisers.integrate(block, x0, ("kinetic", "jacobian"), jax.random.key(0))
    np.testing.assert_allclose(values["kinetic"], want, rtol=1e-6)


def test_jacobian_term_of_a_linear_field_is_exact_for_its_fixed_noise(x64):
    w, x0 = _linear_problem(1)
    key = jax.random.key(3)
    eps = np.asarray(regularisers.hutchinson_noise(key, x0.shape, jnp.float64))
    assert set(np.unique(eps)) == {-1.0, 1.0}
    block = ODEBlock(LinearField(w), solver="rk4", steps=3)
    _, values = regularisers.integrate(block, jnp.asarray(x0), ("jacobian",), key, t1=2.0)
    # The Jacobian of x -> x W is W^T per token, constant in time: eps^T J = eps W^T.
    np.testing.assert_allclose(values["jacobian"], 2.0 * np.mean((eps @ w.T) ** 2), rtol=1e-12)


def _jacobian_rate(f, params, x, eps):
    g = regularisers.augment(f, ("jacobian",))
    _, rates = g(0.3, (x, {"jacobian": jnp.zeros(())}), (params, eps))
    return rates["jacobian"]


@pytest.mark.parametrize("noise", regularisers.NOISES)
def test_hutchinson_estimate_averages_to_the_frobenius_norm(x64, noise):
    field = TransformerBlockField(4, 2, mlp_ratio=1, rngs=nnx.Rngs(2))
    f, params = vector_field(field)
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    x = jax.random.normal(jax.random.key(0), (2, 3, 4), jnp.float64)
    n = x.size
    jac = jax.jacfwd(lambda x: f(0.3, x, params))(x).reshape(n, n)
    exact = float(jnp.sum(jac**2)) / n  # normalised by the state's elements
    # Exact with every basis vector (scaled so that E[eps eps^T] = I over the uniform choice).
    basis = np.sqrt(n) * np.eye(n).reshape(n, *x.shape)
    by_basis = jax.vmap(lambda e: _jacobian_rate(f, params, x, e))(jnp.asarray(basis))
    np.testing.assert_allclose(float(by_basis.mean()), exact, rtol=1e-12)
    # Monte Carlo over the noise: within 4 standard errors (a fixed key: deterministic).
    keys = jax.random.split(jax.random.key(7), 2000)
    draws = jax.vmap(lambda k: _jacobian_rate(
        f, params, x, regularisers.hutchinson_noise(k, x.shape, x.dtype, noise)))(keys)
    error = abs(float(draws.mean()) - exact)
    assert error < 4 * float(draws.std()) / np.sqrt(len(draws))
    assert error < 0.05 * exact


def test_fixed_step_augmented_solve_does_the_same_arithmetic_on_the_state():
    field = TransformerBlockField(8, 2, mlp_ratio=2, rngs=nnx.Rngs(0))
    x0 = jax.random.normal(jax.random.key(1), (2, 5, 8), jnp.float32)
    block = ODEBlock(field, solver="rk4", steps=3)
    plain = block.integrate(x0)
    sol, _ = regularisers.integrate(block, x0, ("kinetic", "jacobian"), jax.random.key(0))
    np.testing.assert_array_equal(sol.y1, plain.y1)
    assert int(sol.stats["nfe"]) == int(plain.stats["nfe"]) == 12


@pytest.mark.slow
def test_regulariser_channels_do_not_change_adaptive_nfe_at_training_size():
    # The PID controller's RMS error norm counts the two scalar channels against the
    # 32 x 16 x 16 = 8,192 elements of x: the step sequence stays the plain solve's.
    field = TransformerBlockField(16, 4, mlp_ratio=2, rngs=nnx.Rngs(0))
    block = ODEBlock(field, solver="dopri5", max_steps=256)
    x0 = 2.0 * jax.random.normal(jax.random.key(0), (32, 16, 16))
    for tol in (1e-2, 1e-4, 1e-6):
        plain = block.integrate(x0, rtol=tol, atol=tol, t1=4.0)
        sol, _ = regularisers.integrate(block, x0, ("kinetic", "jacobian"), jax.random.key(1),
                                        rtol=tol, atol=tol, t1=4.0)
        assert int(sol.stats["nfe"]) == int(plain.stats["nfe"]), tol


TASK = ml_collections.ConfigDict(dict(name="majority", seed=0, vocab_size=4, seq_len=6,
                                      num_train=64, num_test=16))
RK4, DOPRI5, EULER = SolverSpec("rk4", 2), SolverSpec("dopri5", None), SolverSpec("euler", 2)


def _model(solver=RK4, seed=0):
    data = make_task(TASK)
    model = SequenceClassifier(ModelShape(width=8, heads=2, mlp_ratio=1), solver,
                               vocab_size=data.vocab_size, seq_len=data.seq_len,
                               num_classes=data.num_classes, rngs=nnx.Rngs(seed))
    return data, *nnx.split(model)


@pytest.mark.slow
def test_gradient_of_the_regularised_loss_matches_finite_differences(x64):
    data, graphdef, params = _model()
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    hyper = {"rtol": None, "atol": None, "t1": jnp.asarray(1.0, jnp.float64)}
    inputs, labels = {"tokens": data.train["tokens"][:8]}, data.train["label"][:8]
    penalty = {"kinetic": 0.3, "jacobian": 0.2}

    @jax.jit
    def loss(p):
        return _loss_and_metrics(graphdef, p, hyper, inputs, labels, penalty, jax.random.key(5))[0]

    grads = jax.jit(jax.grad(loss))(params)
    paths, tree = jax.tree_util.tree_flatten_with_path(params)
    # nnx.Embed looks its table up in float32 whatever the table's dtype: keep it fixed.
    direction = jax.tree.unflatten(tree, [
        jnp.zeros_like(a) if "embed_tokens" in jax.tree_util.keystr(path)
        else jax.random.normal(jax.random.key(i), a.shape, a.dtype) for i, (path, a) in enumerate(paths)])
    h = 1e-5
    shifted = [loss(jax.tree.map(lambda p, v, s=s: p + s * h * v, params, direction)) for s in (1, -1)]
    numeric = (shifted[0] - shifted[1]) / (2 * h)
    analytic = sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(grads), jax.tree.leaves(direction),
                                                   strict=True))
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7)
    # The regularisers contribute: the plain cross-entropy has another gradient.
    plain = jax.grad(lambda p: _loss_and_metrics(graphdef, p, hyper, inputs, labels)[0])(params)
    assert not np.allclose(jax.tree.leaves(plain)[0], jax.tree.leaves(grads)[0])


def _train(penalty, steps=3, solver=DOPRI5):
    data, graphdef, params = _model(solver)
    train = ml_collections.ConfigDict(dict(num_steps=10, warmup_steps=1, grad_clip=1.0,
                                           learning_rate=1e-2, weight_decay=0.0, decay="all",
                                           beta2=0.999, min_lr_ratio=0.0))
    tx = make_optimizer(train)
    hyper = ml_collections.ConfigDict(dict(rtol=1e-3, atol=1e-3, t1=1.0))
    state = init_state(params, tx, hyper, penalty)
    step = make_train_step(graphdef, tx, 16)
    metrics = []
    for _ in range(steps):
        state, m = step(state, data.train, jax.random.key(0))
        metrics.append(m)
    return state, metrics, step, (data, graphdef, tx, hyper)


def _reference_step(graphdef, tx, hyper, state, data, key, batch_size):
    """The train step as written before the regularisers, independently: fold_in, draw,
    cross-entropy, AdamW."""
    key = jax.random.fold_in(key, state["step"])
    index = jax.random.randint(key, (batch_size,), 0, data["label"].shape[0])

    def loss_fn(params):
        logits, _ = nnx.merge(graphdef, params)(data["tokens"][index], **hyper)
        return optax.softmax_cross_entropy_with_integer_labels(logits, data["label"][index]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state["params"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return {**state, "params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
            "step": state["step"] + 1}, loss


@pytest.mark.slow
def test_zero_weights_leave_the_train_step_unchanged_and_compile_no_regulariser(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a regulariser was traced with zero weights")

    monkeypatch.setattr(models, "integrate_regularised", refuse)
    train = ml_collections.ConfigDict(dict(kinetic=0.0, jacobian=0.0))
    assert regularisers.weights(train) == {}
    state, metrics, _, (data, graphdef, tx, hyper) = _train(regularisers.weights(train))
    assert "penalty" not in state and "kinetic" not in metrics[-1]
    # Against the independent reference step, from the same initial state, bit for bit.
    _, _, params = _model(DOPRI5)
    ref = init_state(params, tx, hyper)
    hyper_values = {k: ref["hyper"][k] for k in ("rtol", "atol", "t1")}
    reference = jax.jit(_reference_step, static_argnums=(0, 1, 6))
    for i in range(3):
        ref, loss = reference(graphdef, tx, hyper_values, ref, data.train, jax.random.key(0), 16)
        assert float(loss) == float(metrics[i]["loss"])
    for a, b in zip(jax.tree.leaves(ref["params"]), jax.tree.leaves(state["params"]), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_weights_are_traced_and_the_regularisers_report_their_integrals():
    state, metrics, step, (data, _, tx, hyper) = _train({"kinetic": 0.1, "jacobian": 0.1}, steps=2)
    m = metrics[-1]
    assert {"kinetic", "jacobian", "cross_entropy"} <= set(m)
    assert float(m["kinetic"]) > 0 and float(m["jacobian"]) > 0
    np.testing.assert_allclose(m["loss"], m["cross_entropy"] + 0.1 * (m["kinetic"] + m["jacobian"]),
                               rtol=1e-6)
    # Another weight: the same compiled step.
    other = {**state, "penalty": {k: jnp.asarray(1.0, jnp.float32) for k in state["penalty"]}}
    _, m2 = step(other, data.train, jax.random.key(0))
    assert step._cache_size() == 1
    np.testing.assert_allclose(m2["loss"], m2["cross_entropy"] + m2["kinetic"] + m2["jacobian"],
                               rtol=1e-6)


@pytest.mark.slow
def test_a_regularised_run_draws_the_same_batches_as_its_unregularised_twin():
    # From the same initial parameters the first step's cross-entropy agrees (up to the
    # augmented solve's float32 rounding) only if both steps drew the same batch (paired
    # comparisons of regulariser weights); another batch moves it by far more. The draw does
    # not depend on the solver: Euler's steps compile fastest.
    _, off, _, _ = _train({}, steps=1, solver=EULER)
    _, on, _, _ = _train({"kinetic": 0.5, "jacobian": 0.5}, steps=1, solver=EULER)
    np.testing.assert_allclose(float(on[0]["cross_entropy"]), float(off[0]["loss"]), rtol=1e-5)
    assert float(on[0]["loss"]) > float(on[0]["cross_entropy"])


@pytest.mark.slow
def test_a_strong_kinetic_penalty_lowers_the_kinetic_energy():
    _, off, _, _ = _train({"kinetic": 1e-9}, steps=40, solver=EULER)
    _, on, _, _ = _train({"kinetic": 3.0}, steps=40, solver=EULER)
    assert float(on[-1]["kinetic"]) < 0.5 * float(off[-1]["kinetic"])


def test_structure_key_follows_which_weights_are_on():
    def key(kinetic, jacobian):
        c = tiny_config(**{"train.kinetic": kinetic, "train.jacobian": jacobian})
        return structure_key(plan(c)[0])

    assert key(0.01, 0.0) == key(0.5, 0.0)  # the value is traced
    assert len({key(0.0, 0.0), key(0.01, 0.0), key(0.01, 0.01), key(0.0, 0.01)}) == 4


@pytest.mark.parametrize("overrides, message", [
    ({"train.kinetic": -0.1}, r"train.kinetic=-0.1 must be a finite number >= 0"),
    ({"train.jacobian": float("nan")}, r"train.jacobian=nan must be a finite number >= 0"),
    ({"train.jacobian": float("inf")}, r"train.jacobian=inf must be a finite number >= 0"),
    ({"train.kinetic": 0.1, "model.family": "discrete"},
     r"train.kinetic=0.1 applies to the ode and smooth families only .* use train.kinetic=0.0"),
])
def test_bad_regulariser_keys_are_refused(overrides, message):
    c = tiny_config(**overrides)
    with pytest.raises(ValueError, match=message):
        sweeps.expand(c)


def test_a_config_without_the_regulariser_keys_is_refused():
    c = tiny_config()
    c.unlock()
    del c.train["jacobian"]
    with pytest.raises(ValueError, match=r"train.jacobian is missing from the config: start from "
                                         r"configs/base.py"):
        sweeps.expand(c)


def test_unknown_penalty_and_noise_are_refused():
    with pytest.raises(ValueError, match=r"penalties=\('speed',\) must name some of kinetic, jacobian"):
        regularisers.augment(lambda t, y, a: y, ("speed",))
    with pytest.raises(ValueError, match="noise='uniform' is not one of rademacher, gaussian"):
        regularisers.hutchinson_noise(jax.random.key(0), (2,), jnp.float32, "uniform")
