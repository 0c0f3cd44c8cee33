"""Stability measurements against independent computations (float64): full Jacobians by
``jax.jacfwd`` and NumPy's SVD, the exact ``expm(TA)`` of a linear flow, per-example
gradients and logits recomputed through the model's own ``classify``."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.linalg
from flax import nnx

from odeformer import forward_mode, solve
from odeformer.experiment.evaluators.stability import (
    example_flow,
    lyapunov_exponent,
    make_stability_step,
    perturbation_gain,
    random_perturbation,
    scaled_like,
    spectral_norm,
    summarise,
)
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.tasks import make_task


def _norms(x):
    return np.linalg.norm(np.asarray(x).reshape(len(x), -1), axis=1)


def test_power_iteration_finds_each_examples_largest_singular_value(x64):
    rng = np.random.default_rng(0)
    mats = rng.normal(size=(5, 7, 6))  # 5 examples, J: R^6 -> R^7
    sigma, change = spectral_norm(lambda v: jnp.einsum("bij,bj->bi", mats, v),
                                  lambda u: jnp.einsum("bij,bi->bj", mats, u),
                                  jnp.asarray(rng.normal(size=(5, 6))), 300)
    exact = np.linalg.norm(mats, ord=2, axis=(1, 2))
    np.testing.assert_allclose(sigma, exact, rtol=1e-10)
    assert np.all(np.asarray(change) < 1e-10)
    # a lower bound at every iteration count (||J v|| for a unit v)
    few, _ = spectral_norm(lambda v: jnp.einsum("bij,bj->bi", mats, v),
                           lambda u: jnp.einsum("bij,bi->bj", mats, u),
                           jnp.asarray(rng.normal(size=(5, 6))), 2)
    assert np.all(np.asarray(few) <= exact * (1 + 1e-12))


def test_linear_flow_spectral_norm_and_lyapunov_exponent_match_expm(x64):
    """dx/dt = A x: the flow map is expm(T A); A non-normal, so ||expm(TA)|| differs from
    exp(T max Re λ(A)) and the eigenvalues alone would give the wrong answer."""
    a = np.array([[-0.5, 3.0, 0.0], [0.0, -0.4, 1.0], [0.2, 0.0, -0.3]])
    horizon = 2.0

    def one(x):
        return solve(lambda t, y, args: args @ y, x, args=jnp.asarray(a), t1=horizon, solver="rk4",
                     steps=200, adjoint="direct").y1

    flow = jax.vmap(one)
    x0 = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3)))
    _, vjp = jax.vjp(flow, x0)
    sigma, _ = spectral_norm(lambda v: jax.jvp(flow, (x0,), (v,))[1], lambda u: vjp(u)[0],
                             jnp.ones_like(x0) + x0, 200)
    exact = np.linalg.norm(scipy.linalg.expm(horizon * a), 2)
    np.testing.assert_allclose(sigma, [exact, exact], rtol=1e-9)
    lam = lyapunov_exponent(sigma, horizon)
    np.testing.assert_allclose(lam, np.log(exact) / horizon, rtol=1e-9)
    assert abs(np.log(exact) / horizon - np.linalg.eigvals(a).real.max()) > 0.1
    # random gain of a linear map: ||A δ|| / ||δ|| for the same δ, whatever its size
    delta = random_perturbation(jax.random.key(0), x0, 0.3)
    np.testing.assert_allclose(_norms(delta), 0.3 * _norms(x0), rtol=1e-12)
    expm = scipy.linalg.expm(horizon * a)
    np.testing.assert_allclose(perturbation_gain(flow, x0, delta),
                               _norms(np.asarray(delta) @ expm.T) / _norms(delta), rtol=1e-9)


def _tiny_model(family: str, solver: SolverSpec):
    task = make_task(ml_collections.ConfigDict(dict(
        name="majority", seed=0, vocab_size=4, seq_len=3, num_train=8, num_test=6)))
    shape = ModelShape(family=family, width=4, heads=2, mlp_ratio=1, layers=3, readout="mean")
    model = build_model(shape, solver, task, rngs=nnx.Rngs(3))
    graphdef, params = nnx.split(model)
    params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
    return graphdef, params, task.test


@pytest.mark.parametrize("family, solver", [
    ("ode", SolverSpec("rk4", 3)),
    pytest.param("ode", SolverSpec("dopri5", None, max_steps=64), marks=pytest.mark.slow),
    ("discrete", SolverSpec()),
])
@pytest.mark.slow
def test_stability_step_matches_full_jacobians_gradients_and_logits(x64, family, solver):
    graphdef, params, test = _tiny_model(family, solver)
    hyper = {"rtol": jnp.asarray(1e-8), "atol": jnp.asarray(1e-10), "t1": jnp.asarray(1.0)}
    tokens, labels = test["tokens"], test["label"]
    key, epsilon = jax.random.key(7), 1e-3
    step = make_stability_step(graphdef, forward_mode(graphdef, params), 400)
    out = jax.device_get(step(params, hyper, {"tokens": tokens}, labels, key, epsilon))

    model = nnx.merge(graphdef, params)
    x0 = model.embed(tokens)
    # Independent: each example's full Jacobian (forward mode), NumPy's SVD.
    one = example_flow(nnx.merge(forward_mode(graphdef, params), params), hyper)
    size = x0[0].size
    jacobians = jax.jit(jax.vmap(jax.jacfwd(lambda x: one(x[None])[0])))(x0)
    exact = np.linalg.svd(np.asarray(jacobians).reshape(len(x0), size, size), compute_uv=False)[:, 0]
    np.testing.assert_allclose(out["sigma"], exact, rtol=1e-7)
    horizon = 3.0 if family == "discrete" else 1.0
    np.testing.assert_allclose(out["lyapunov"], np.log(exact) / horizon, rtol=1e-7)
    growth = _norms(one(x0)) / _norms(x0)
    np.testing.assert_allclose(out["growth"], growth, rtol=1e-9)
    np.testing.assert_allclose(out["condition"], exact / growth, rtol=1e-7)

    # Independent: per-example logits and gradients through the model's own classify.
    classify = jax.jit(jax.vmap(lambda x: model.classify(x[None], **hyper)[0][0]))

    @jax.jit
    def losses(x):
        return -jnp.take_along_axis(jax.nn.log_softmax(classify(x)), labels[:, None], 1)[:, 0]

    clean = classify(x0)
    deltas = {"random": random_perturbation(jax.random.split(key)[0], x0, epsilon),
              "adv": scaled_like(jax.grad(lambda x: losses(x).sum())(x0), x0, epsilon)}
    np.testing.assert_allclose(_norms(deltas["adv"]), epsilon * _norms(x0), rtol=1e-10)
    for name, delta in deltas.items():
        logits = classify(x0 + delta)
        np.testing.assert_allclose(out[f"logit_gain_{name}"], _norms(logits - clean) / _norms(delta),
                                   rtol=1e-6)
        np.testing.assert_array_equal(out[f"{name}_correct"], logits.argmax(-1) == labels)
        np.testing.assert_allclose(out[f"{name}_loss"], losses(x0 + delta), rtol=1e-9)
        # a gain of the flow map never exceeds its largest singular value by more than
        # the second-order term of an epsilon = 1e-3 perturbation
        assert np.all(out[f"flow_gain_{name}"] <= exact * (1 + 1e-2))
    # the gradient direction is the first-order worst case: never a smaller loss increase
    assert np.all(out["adv_loss"] - out["clean_loss"] >= out["random_loss"] - out["clean_loss"])
    assert np.all(out["adv_loss"] > out["clean_loss"])

    row = summarise(out)
    assert row["stability.examples"] == len(x0) and row["stability.horizon"] == horizon
    assert row["stability.jacobian_norm"] == pytest.approx(exact.mean(), rel=1e-7)
    assert row["stability.lyapunov_max"] == pytest.approx(np.log(exact.max()) / horizon, rel=1e-7)
