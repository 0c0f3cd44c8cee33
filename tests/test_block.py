"""ODEBlock inside Flax models and the module -> vector-field split."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import odeformer


class _Model(nnx.Module):
    """Embedding -> ODEBlock -> readout: the block used inside a larger model."""

    def __init__(self, rngs, **solver):
        self.embed = nnx.Linear(3, 8, rngs=rngs)
        self.block = odeformer.ODEBlock(odeformer.TransformerBlockField(8, 2, rngs=rngs), **solver)
        self.head = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.head(self.block(self.embed(x))).mean()


def _f64(module):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), module)


def test_block_equals_solve_on_the_split_field(x64):
    field = _f64(odeformer.AttentionField(8, 2, rngs=nnx.Rngs(0)))
    block = odeformer.ODEBlock(field, solver="rk4", steps=6, t1=0.5)
    x = jax.random.normal(jax.random.key(0), (5, 8), jnp.float64)
    f, state = odeformer.vector_field(field)
    direct = odeformer.solve(f, x, args=state, solver="rk4", steps=6, t1=0.5)
    np.testing.assert_array_equal(block(x), direct.y1)
    assert int(block.integrate(x).stats["nfe"]) == 24


def test_tolerances_on_a_fixed_step_block_are_refused():
    block = odeformer.ODEBlock(odeformer.AttentionField(8, 2, rngs=nnx.Rngs(0)), solver="rk4", steps=2)
    with pytest.raises(ValueError, match="steps=2: rtol/atol do not apply"):
        block.integrate(jnp.zeros((3, 8)), rtol=1e-3)


def test_block_gradient_matches_finite_differences(x64):
    model = _f64(_Model(nnx.Rngs(0), solver="tsit5", rtol=1e-10, atol=1e-10))
    x = jax.random.normal(jax.random.key(1), (4, 3), jnp.float64)
    graphdef, state = nnx.split(model)
    loss = jax.jit(lambda s: nnx.merge(graphdef, s)(x))
    grads = jax.grad(loss)(state)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    grad_leaves = jax.tree_util.tree_leaves(grads)
    rng = np.random.default_rng(0)
    checked = 0
    for i, leaf in enumerate(leaves):
        index = tuple(rng.integers(0, n) for n in leaf.shape)
        eps = 1e-6

        def shifted(delta, i=i, leaf=leaf, index=index):
            moved = list(leaves)
            moved[i] = leaf.at[index].add(delta)
            return float(loss(jax.tree_util.tree_unflatten(treedef, moved)))

        fd = (shifted(eps) - shifted(-eps)) / (2 * eps)
        np.testing.assert_allclose(grad_leaves[i][index], fd, rtol=1e-5, atol=1e-8)
        checked += 1
    assert checked == len(leaves) > 10  # every parameter array, field and outer layers


def test_block_tolerance_override_is_traced_and_compiles_once(x64):
    field = _f64(odeformer.AttentionField(8, 2, rngs=nnx.Rngs(0)))
    block = odeformer.ODEBlock(field, solver="dopri5", rtol=1e-3, atol=1e-3)
    graphdef, state = nnx.split(block)
    x = jax.random.normal(jax.random.key(0), (5, 8), jnp.float64)

    @jax.jit
    @chex.assert_max_traces(n=1)  # a retrace raises
    def nfe(state, rtol):
        return nnx.merge(graphdef, state).integrate(x, rtol=rtol, atol=rtol).stats["nfe"]

    counts = [int(nfe(state, jnp.asarray(r))) for r in (1e-3, 1e-6, 1e-9)]
    assert counts[0] < counts[1] < counts[2]


def test_block_step_count_override_is_traced_bounded_by_its_steps_and_compiles_once(x64):
    field = _f64(odeformer.AttentionField(8, 2, rngs=nnx.Rngs(0)))
    block = odeformer.ODEBlock(field, solver="rk4", steps=5)
    graphdef, state = nnx.split(block)
    x = jax.random.normal(jax.random.key(0), (5, 8), jnp.float64)

    @jax.jit
    @chex.assert_max_traces(n=1)  # a retrace raises
    def run(state, steps, t1):
        return nnx.merge(graphdef, state).integrate(x, steps=steps, t1=t1)

    t1 = jnp.asarray(0.7)
    for n in (1, 3, 5):
        own = odeformer.ODEBlock(field, solver="rk4", steps=n)
        want = jax.jit(lambda t1, own=own: own.integrate(x, t1=t1))(t1)
        got = run(state, jnp.asarray(n), t1)
        np.testing.assert_array_equal(got.y1, want.y1)
        assert int(got.stats["nfe"]) == 4 * n
    with pytest.raises(Exception, match=r"steps=\(a traced value\) must lie in \[1, max_steps=5\]"):
        jax.block_until_ready(run(state, jnp.asarray(6), t1).y1)
    with pytest.raises(ValueError, match=r"steps=6 must lie in \[1, 5\]: this ODEBlock's steps=5"):
        block.integrate(x, steps=6)
    adaptive = odeformer.ODEBlock(field, solver="dopri5", rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="adaptive .*: a step count does not apply"):
        adaptive.integrate(x, steps=3)


def test_model_with_block_trains_a_step():
    """Smoke test (float32): one optax step lowers the loss of a model with an ODEBlock."""
    import optax

    model = _Model(nnx.Rngs(0), solver="euler", steps=4)
    x = jax.random.normal(jax.random.key(1), (4, 3))
    optimizer = nnx.Optimizer(model, optax.sgd(1e-2), wrt=nnx.Param)
    before = model(x)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: m(x))(model)
        optimizer.update(model, grads)
        return loss

    step(model, optimizer)
    assert float(model(x)) < float(before)


def test_forward_mode_makes_every_block_differentiable_forward_and_leaves_the_model_alone(x64):
    class TwoBlocks(nnx.Module):
        def __init__(self, rngs):
            self.first = odeformer.ODEBlock(odeformer.TransformerBlockField(8, 2, rngs=rngs), solver="rk4",
                                            steps=3)
            self.second = odeformer.ODEBlock(odeformer.AttentionField(8, 2, rngs=rngs), solver="euler",
                                             steps=2)

        def __call__(self, x):
            return self.second(self.first(x))

    graphdef, params = nnx.split(_f64(TwoBlocks(nnx.Rngs(0))))
    forward = odeformer.forward_mode(graphdef, params)
    keys = jax.random.split(jax.random.key(1), 3)
    y, v, u = (jax.random.normal(k, (4, 8), jnp.float64) for k in keys)

    def depth_map(g):
        return lambda x: nnx.merge(g, params)(x)

    with pytest.raises(TypeError):  # the checkpointed solves of training are reverse-mode only
        jax.jvp(depth_map(graphdef), (y,), (v,))
    switched = nnx.merge(forward, params)
    assert (switched.first.adjoint, switched.second.adjoint) == ("direct", "direct")
    out, tangent = jax.jvp(depth_map(forward), (y,), (v,))
    same, pullback = jax.vjp(depth_map(graphdef), y)
    np.testing.assert_allclose(out, same, rtol=1e-12)
    # <u, J v> = <Jᵀ u, v>: the forward-mode Jacobian is the reverse-mode one.
    np.testing.assert_allclose(jnp.vdot(u, tangent), jnp.vdot(pullback(u)[0], v), rtol=1e-10)
    original = nnx.merge(graphdef, params)
    assert (original.first.adjoint, original.second.adjoint) == ("checkpoint", "checkpoint")
    plain = nnx.split(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
    assert odeformer.forward_mode(*plain) == plain[0]  # no ODE block: unchanged
