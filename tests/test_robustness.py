"""Robustness measurements of language models against independent computations (float64): full
Jacobians by ``jax.jacfwd`` and NumPy's SVD, a linear loss's closed-form worst case, a dense search
of a disc, and every perturbed loss recomputed through the model's own ``__call__``."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from odeformer import forward_mode
from odeformer.language.models import LanguageModel
from odeformer.language.robustness import (
    attack,
    embedding_noise,
    horizon,
    jacobian_norm,
    make_robustness_step,
    step_keys,
    substitute,
    summarise_robustness,
    window_body,
)


def _norms(x):
    return np.linalg.norm(np.asarray(x).reshape(len(x), -1), axis=1)


def test_substitution_replaces_the_rate_of_positions_by_other_characters_reproducibly():
    vocab = 5
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, vocab, (64, 128)), jnp.int32)
    key = jax.random.key(3)
    for rate in (0.05, 0.3):
        changed = np.asarray(substitute(key, tokens, rate, vocab) != tokens)
        assert abs(changed.mean() - rate) < 4 * math.sqrt(rate * (1 - rate) / changed.size)
    # A chosen position is always changed: a draw from all 5 ids would keep 1 in 5 of them.
    nearly_all = substitute(key, tokens, 0.99, vocab)
    assert abs(np.mean(np.asarray(nearly_all != tokens)) - 0.99) < 0.005
    # ... to each of the other ids alike.
    zeros = np.asarray(nearly_all)[np.asarray(tokens) == 0]
    counts = np.bincount(zeros, minlength=vocab)
    assert counts[0] < 0.02 * len(zeros)
    np.testing.assert_allclose(counts[1:] / counts[1:].sum(), 0.25, atol=0.03)
    np.testing.assert_array_equal(substitute(key, tokens, 0.0, vocab), tokens)
    np.testing.assert_array_equal(substitute(key, tokens, 0.3, vocab), substitute(key, tokens, 0.3, vocab))
    assert np.any(np.asarray(substitute(jax.random.key(4), tokens, 0.3, vocab)
                             != substitute(key, tokens, 0.3, vocab)))
    # Nested: a smaller rate corrupts a subset of the positions, with the same replacements.
    low = np.asarray(substitute(key, tokens, 0.1, vocab))
    high = np.asarray(substitute(key, tokens, 0.3, vocab))
    low_changed = low != np.asarray(tokens)
    assert np.all(high[low_changed] == low[low_changed])


def test_embedding_noise_has_an_absolute_scale():
    key = jax.random.key(0)
    small, large = jnp.zeros((4, 16, 32)), jnp.full((4, 16, 32), 100.0)
    np.testing.assert_allclose(embedding_noise(key, large, 0.5) - large, embedding_noise(key, small, 0.5),
                               atol=1e-4)
    assert np.std(np.asarray(embedding_noise(key, small, 0.5))) == pytest.approx(0.5, rel=0.05)
    np.testing.assert_array_equal(embedding_noise(key, large, 0.0), large)


@pytest.mark.parametrize("call, message", [
    (lambda: substitute(jax.random.key(0), jnp.zeros((2, 3), jnp.int32), 1.0, 5), "rate=1.0 must lie in"),
    (lambda: substitute(jax.random.key(0), jnp.zeros((2, 3), jnp.int32), -0.1, 5), "rate=-0.1"),
    (lambda: substitute(jax.random.key(0), jnp.zeros((2, 3), jnp.int32), 0.1, 1), "vocab_size=1"),
    (lambda: embedding_noise(jax.random.key(0), jnp.zeros((2, 3, 4)), -1.0), "scale=-1.0 must lie in"),
    (lambda: attack(lambda x: x.sum((1, 2)), jnp.zeros((2, 3, 4)), -0.5, 3), "budget=-0.5"),
    (lambda: attack(lambda x: x.sum((1, 2)), jnp.zeros((2, 3, 4)), 0.5, 0), "steps=0 must be an integer"),
])
def test_bad_arguments_are_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_attack_on_a_linear_loss_reaches_the_closed_form_worst_case(x64):
    """loss = <a, x> per window: the worst δ in the ball is radius a / |a|, whatever the steps."""
    rng = np.random.default_rng(1)
    a, x0 = jnp.asarray(rng.normal(size=(3, 4, 5))), jnp.asarray(rng.normal(size=(3, 4, 5)))

    def loss(x):
        return jnp.sum(a * x, axis=(1, 2))

    for budget in (0.3, jnp.asarray([0.1, 0.5, 2.0])):
        radius = np.broadcast_to(np.asarray(budget) * 2.0, (3,))  # sqrt(n) = 2
        best = radius[:, None, None] * np.asarray(a) / _norms(a)[:, None, None]
        for steps in (1, 3, 7):
            delta, attacked = attack(loss, x0, budget, steps)
            np.testing.assert_allclose(delta, best, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(attacked, loss(x0) + radius * _norms(a), rtol=1e-12)


def test_attack_on_a_convex_loss_approaches_the_disc_maximum_and_grows_with_steps_and_budget(x64):
    """A cross-entropy of affine logits of a point in the plane is convex, so its maximum over a
    disc lies on the circle: found by a dense search of the circle."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(6, 3, 2)), rng.normal(size=(6, 3))
    x0 = jnp.asarray(rng.normal(size=(6, 1, 2)))  # 6 windows of one position

    def loss(x):
        z = jnp.einsum("bij,bj->bi", w, x[:, 0]) + b
        return jax.nn.logsumexp(z, -1) - z[:, 0]

    angles = np.linspace(0, 2 * np.pi, 100_001)
    circle = np.stack([np.cos(angles), np.sin(angles)], -1)
    previous = np.asarray(loss(x0))
    pgd = jax.jit(attack, static_argnums=(0, 3))  # one compile per step count
    for budget in (0.1, 0.5, 2.0):
        z = (np.asarray(x0)[:, 0, None] + budget * circle) @ w.transpose(0, 2, 1) + b[:, None]
        exact = (np.log(np.exp(z).sum(-1)) - z[..., 0]).max(1)
        by_steps = []
        for steps in (1, 5, 25):
            delta, attacked = pgd(loss, x0, budget, steps)
            assert np.all(_norms(delta) <= budget * (1 + 1e-12))
            np.testing.assert_allclose(attacked, loss(x0 + delta), rtol=1e-14)
            by_steps.append(np.asarray(attacked))
        assert np.all(np.diff(by_steps, axis=0) >= -1e-12)  # more steps never lower
        assert np.all(by_steps[-1] <= exact + 1e-12)
        assert np.all(exact - by_steps[-1] <= 1e-2 * (exact - np.asarray(loss(x0))))
        assert np.all(by_steps[-1] >= previous - 1e-12)  # a larger budget never lower
        previous = by_steps[-1]


def _tiny(family: str, scale: float = 1.0, **options):
    """A float64 model of width 8, 2 heads (2 layers unless ``options`` say otherwise); ``scale``
    multiplies every weight matrix (a map far from the identity, with well separated singular values)."""
    options = {"layers": 2, **options}
    model = LanguageModel(vocab_size=6, block_size=8, family=family, width=8, heads=2, mlp_ratio=2,
                          rngs=nnx.Rngs(0), **options)
    graphdef, params = nnx.split(model)
    params = jax.tree.map(lambda p: (p * (scale if p.ndim >= 2 else 1.0)).astype(jnp.float64), params)
    return graphdef, params


def _tokens(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 6, shape), jnp.int32)


@pytest.mark.parametrize("family, scale, options, hyper, iterations", [
    ("gpt", 1.0, {}, {}, 100),
    ("ode", 10.0, dict(solver="euler", steps=3, form="sequential"), {"t1": 0.7}, 50),
    ("ode", 10.0, dict(solver="rk4", steps=2, form="parallel"), {"t1": 0.7}, 50),
])
def test_jacobian_norm_matches_the_full_jacobians_largest_singular_value(x64, family, scale, options, hyper,
                                                                        iterations):
    graphdef, params = _tiny(family, scale, **options)
    model, forward = nnx.merge(graphdef, params), nnx.merge(forward_mode(graphdef, params), params)
    hyper = {k: jnp.asarray(v) for k, v in hyper.items()}
    x0 = model.embed(_tokens((2, 4)))
    out = jax.jit(lambda x: jacobian_norm(model, forward, hyper, x, jax.random.key(1), iterations))(x0)
    one = window_body(forward, hyper)
    jacobians = jax.jit(jax.vmap(jax.jacfwd(lambda x: one(x[None])[0])))(x0)
    exact = np.linalg.svd(np.asarray(jacobians).reshape(2, 32, 32), compute_uv=False)[:, 0]
    np.testing.assert_allclose(out["sigma"], exact, rtol=1e-6)
    assert np.all(np.asarray(out["sigma_change"]) < 1e-6)
    length = 2.0 if family == "gpt" else 0.7
    assert float(horizon(model, hyper)) == pytest.approx(length)
    np.testing.assert_allclose(out["lyapunov"], np.log(exact) / length, rtol=1e-6)


def test_horizon_is_layers_for_stacks_and_t1_for_flows(x64):
    for family in ("gpt", "rk2_gated"):
        model = nnx.merge(*_tiny(family))
        assert horizon(model, {"t1": jnp.asarray(0.5)}) == 2.0  # unit steps, whatever t1
    flow = nnx.merge(*_tiny("smooth"))
    assert horizon(flow, {}) == flow.flow.t1 and horizon(flow, {"t1": 0.5}) == 0.5


@pytest.mark.parametrize("family, options, hyper", [
    ("gpt", dict(layers=1), {}),
    ("ode", dict(solver="euler", steps=2), {"t1": 1.0, "steps": 2}),
])
def test_robustness_step_measures_the_same_perturbations_for_every_model(x64, family, options, hyper):
    graphdef, params = _tiny(family, **options)
    hyper = {k: jnp.asarray(v) for k, v in hyper.items()}
    stream = _tokens((8, 9), seed=2)
    tokens, targets = stream[:, :-1], stream[:, 1:]
    key, rates, noise, budgets = jax.random.key(5), (0.1, 0.5), 0.05, (0.05, 0.2)
    step = make_robustness_step(graphdef, forward_mode(graphdef, params), rates, noise, budgets, 4, 20)
    out = jax.device_get(step(params, hyper, tokens, targets, key))

    # Independent: every perturbed loss through the model's own classify of the whole batch (one
    # system: fixed steps solve each window as alone), from the step's keys only.
    model, keys = nnx.merge(graphdef, params), step_keys(key)

    @jax.jit
    def cross_entropy(x, y):
        logits, _ = model.classify(x, **hyper)
        return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], -1)[..., 0].mean(-1)

    x0 = model.embed(tokens)
    perturbed = [x0, *(model.embed(substitute(keys["substitution"], tokens, r, 6)) for r in rates),
                 embedding_noise(keys["noise"], x0, noise)]
    expected = np.split(np.asarray(cross_entropy(jnp.concatenate(perturbed), jnp.tile(targets, (4, 1)))), 4)
    clean = expected[0]
    names = ("clean_loss", "sub_loss@0.1", "sub_loss@0.5", "noise_loss")
    for name, losses in zip(names, expected, strict=True):
        np.testing.assert_allclose(out[name], losses, rtol=1e-10, err_msg=name)
    assert np.all(out["ok"])

    # The attack: never below the clean loss, above a random δ of the same size, growing with the budget.
    small, large = out["attack_loss@0.05"], out["attack_loss@0.2"]
    assert np.all(small >= clean) and np.all(large >= small - 1e-12) and large.mean() > small.mean()
    delta, attacked = jax.jit(lambda x: attack(lambda z: cross_entropy(z, targets), x, 0.2, 4))(x0)
    np.testing.assert_allclose(attacked, large, rtol=1e-10)
    assert np.all(_norms(delta) <= 0.2 * math.sqrt(tokens.shape[1]) * (1 + 1e-9))
    direction = jax.random.normal(jax.random.key(9), x0.shape, x0.dtype)
    random = direction * (_norms(delta) / _norms(direction))[:, None, None]
    assert np.all(large > np.asarray(cross_entropy(x0 + random, targets)))

    row = summarise_robustness(out)
    assert row["robust.windows"] == 8 and row["robust.solved_ok"] is True
    assert row["robust.clean_loss"] == pytest.approx(clean.mean(), rel=1e-10)
    assert row["robust.sub_delta@0.5"] == pytest.approx((out["sub_loss@0.5"] - clean).mean(), rel=1e-10)
    assert row["robust.noise_delta"] == pytest.approx((out["noise_loss"] - clean).mean(), rel=1e-10)
    assert row["robust.attack_delta@0.2"] == pytest.approx((large - clean).mean(), rel=1e-10)
    assert row["robust.jacobian_norm"] == pytest.approx(out["sigma"].mean())
    assert row["robust.jacobian_norm_change"] == out["sigma_change"].max()
    assert row["robust.lyapunov"] == pytest.approx(out["lyapunov"].mean())
    rms = np.sqrt(np.square(np.asarray(x0)).sum(-1).mean(-1)).mean()  # per position, then per window
    assert row["robust.embed_rms"] == pytest.approx(rms, rel=1e-10)
    assert [k for k in row if "@" in k] == ["robust.sub_delta@0.1", "robust.sub_delta@0.5",
                                            "robust.attack_delta@0.05", "robust.attack_delta@0.2"]


@pytest.mark.parametrize("arguments, message", [
    (dict(rates=(0.1, 1.0)), r"rates\[1\]=1.0 must lie in \[0, 1\)"),
    (dict(noise=-0.1), "noise=-0.1 must lie in"),
    (dict(budgets=(float("nan"),)), r"budgets\[0\]=nan"),
    (dict(attack_steps=0), "attack_steps=0 must be an integer >= 1"),
    (dict(iterations=1), "iterations=1 must be an integer >= 2"),
    (dict(rates=(0.1, 0.10)), "name two columns alike"),
])
def test_make_robustness_step_refuses_bad_arguments_before_compiling(arguments, message):
    graphdef, params = nnx.split(LanguageModel(vocab_size=6, block_size=8, width=8, heads=2, layers=1,
                                               rngs=nnx.Rngs(0)))
    defaults = dict(rates=(0.1,), noise=0.1, budgets=(0.1,), attack_steps=3, iterations=10)
    with pytest.raises(ValueError, match=message):
        make_robustness_step(graphdef, graphdef, **{**defaults, **arguments})
