"""odeformer.experiment.microbatch.accumulate: a batch's gradient chunk by chunk (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import odeformer
import odeformer.experiment.microbatch


def _loss(params, batch):
    """A mean over examples of a nonlinear per-example term."""
    pred = jnp.tanh(batch["x"] @ params["w"]) + params["b"]
    return jnp.mean((pred - batch["y"]) ** 2)


def test_mean_of_chunk_gradients_is_the_batch_gradient_and_outputs_are_stacked(x64):
    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(24, 5)), "y": rng.normal(size=(24, 3))}
    params = {"w": rng.normal(size=(5, 3)), "b": rng.normal(size=3)}
    want = jax.grad(_loss)(params, batch)
    chunked = jax.tree.map(lambda a: a.reshape(4, 6, *a.shape[1:]), batch)

    def fn(params, chunk, i):
        loss, grads = jax.value_and_grad(_loss)(params, chunk)
        return grads, {"loss": loss, "i": i}

    grads, outs = jax.jit(lambda p, c: odeformer.experiment.microbatch.accumulate(fn, p, c))(params, chunked)
    for name in params:
        np.testing.assert_allclose(grads[name], want[name], rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(outs["i"], np.arange(4))
    np.testing.assert_allclose(outs["loss"].mean(), _loss(params, batch), rtol=1e-13)
    np.testing.assert_allclose(outs["loss"][2], _loss(params, jax.tree.map(lambda a: a[12:18], batch)),
                               rtol=1e-13)


def test_chunk_axes_of_different_lengths_are_refused():
    batch = {"x": np.zeros((4, 2, 3)), "y": np.zeros((3, 2))}
    with pytest.raises(ValueError, match=r"the same leading chunk axis; got sizes \[3, 4\]"):
        odeformer.experiment.microbatch.accumulate(lambda p, c, i: (p, None), {"w": np.zeros(2)}, batch)
