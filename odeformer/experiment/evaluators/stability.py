"""Stability of a trained classifier: how its flow map and its logits respond to perturbations.

The flow map ``Φ: x0 -> x(T)`` takes the initial tokens (after the embedding) to the end of
the flow; ``T`` is the horizon (``t1`` for the ``ode`` family, ``layers`` for the discrete
one, whose steps have unit length). Every example is solved as its own system (``vmap``), so
an adaptive solver picks its own steps and each Jacobian belongs to one example. Norms are
Frobenius norms over an example's tokens x features; a perturbation of relative size ``ε``
has norm ``ε ||x0||``. Measured per example:

- random gain ``||Φ(x0 + δ) - Φ(x0)|| / ||δ||``, ``δ`` in a uniformly random direction;
- ``σ_max(∂Φ/∂x0)`` by power iteration on ``JᵀJ`` (``jvp`` through a forward-mode copy of
  the solve, ``vjp`` through the trained one) and the largest finite-time Lyapunov exponent
  ``λ = log(σ_max) / T``;
- the growth ``||Φ(x0)|| / ||x0||`` and the relative condition number ``σ_max / growth``
  (relative output change per relative input change, at worst): the classifier normalises
  the flow's output (LayerNorm), so a flow that merely scales the tokens up has a large
  ``σ_max`` but no larger relative sensitivity;
- a worst-case perturbation: ``δ`` along the gradient of the loss with respect to ``x0``
  (one normalised gradient step), and the accuracy and logit change it causes, against
  the same-size random ``δ``.

The generic functions take batched maps that act on each example independently; the
runner calls :func:`make_stability_step` on a trained model.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from odeformer._stability import _norm, lyapunov_exponent, scaled_like, spectral_norm


def random_perturbation(key: jax.Array, x0: jax.Array, epsilon) -> jax.Array:
    """Per example, a uniformly random direction of norm ``epsilon * ||x0||``."""
    return scaled_like(jax.random.normal(key, x0.shape, x0.dtype), x0, epsilon)


def perturbation_gain(f: Callable, x0: jax.Array, delta: jax.Array) -> jax.Array:
    """``||f(x0 + δ) - f(x0)|| / ||δ||`` per example."""
    return _norm(f(x0 + delta) - f(x0)) / _norm(delta)


def example_flow(model: nnx.Module, hyper: dict) -> Callable:
    """A classifier's flow map as a batched map of initial tokens ``[B, n, d]`` that solves
    every example as its own system."""
    return jax.vmap(lambda x: model.flow(x[None], **hyper)[0][0])


def make_stability_step(graphdef: nnx.GraphDef, forward: nnx.GraphDef, iterations: int) -> Callable:
    """``step(params, hyper, inputs, labels, key, epsilon) -> per-example measurements``.

    ``forward`` is :func:`odeformer.forward_mode` of ``graphdef``; ``inputs`` are the model's
    keyword inputs (``tokens=`` or ``categorical=, numeric=``) of a few examples. The
    worst-case perturbation follows the gradient of each example's cross-entropy with
    respect to ``x0`` (the first-order worst case), of norm ``epsilon * ||x0||`` like the
    random one. Jitted; ``iterations`` (power iterations) is structural, ``epsilon`` and
    ``key`` are traced.
    """
    def step(params, hyper, inputs, labels, key, epsilon):
        model = nnx.merge(graphdef, params)
        flow = example_flow(model, hyper)
        flow_fwd = example_flow(nnx.merge(forward, params), hyper)

        def logits(h):  # the classifier after its flow
            return model.head(model.read(model.norm(h)))

        def losses(h):
            return optax.softmax_cross_entropy_with_integer_labels(logits(h), labels)

        x0 = model.embed(**inputs)
        random_key, start_key = jax.random.split(key)
        y0, vjp = jax.vjp(flow, x0)
        # d(sum of losses)/dx0 = Jᵀ d/dy: each example's own gradient (examples independent)
        gradient = vjp(jax.grad(lambda h: losses(h).sum())(y0))[0]
        sigma, change = spectral_norm(lambda v: jax.jvp(flow_fwd, (x0,), (v,))[1],
                                      lambda u: vjp(u)[0],
                                      jax.random.normal(start_key, x0.shape, x0.dtype), iterations)
        horizon = model.horizon(hyper["t1"])
        growth = _norm(y0) / _norm(x0)
        out = {"sigma": sigma, "sigma_change": change, "lyapunov": lyapunov_exponent(sigma, horizon),
               "growth": growth, "condition": sigma / growth,
               "horizon": jnp.asarray(horizon, x0.dtype), "clean_correct": logits(y0).argmax(-1) == labels,
               "clean_loss": losses(y0)}
        deltas = {"random": random_perturbation(random_key, x0, epsilon),
                  "adv": scaled_like(gradient, x0, epsilon)}
        ys = jnp.split(flow(jnp.concatenate([x0 + deltas["random"], x0 + deltas["adv"]])), 2)
        for (name, delta), y in zip(deltas.items(), ys, strict=True):
            out[f"flow_gain_{name}"] = _norm(y - y0) / _norm(delta)
            out[f"logit_gain_{name}"] = _norm(logits(y) - logits(y0)) / _norm(delta)
            out[f"{name}_correct"] = logits(y).argmax(-1) == labels
            out[f"{name}_loss"] = losses(y)
        return out

    return jax.jit(step)


def summarise(measured: dict) -> dict[str, float]:
    """Per-example measurements -> the ``stability.*`` columns (means, and maxima of gains)."""
    m = {k: np.asarray(v, np.float64) for k, v in jax.device_get(measured).items()}
    row = {"stability.examples": int(m["sigma"].shape[0]), "stability.horizon": float(m["horizon"]),
           "stability.jacobian_norm": m["sigma"].mean(), "stability.jacobian_norm_max": m["sigma"].max(),
           "stability.jacobian_norm_change": m["sigma_change"].max(),
           "stability.lyapunov": m["lyapunov"].mean(), "stability.lyapunov_max": m["lyapunov"].max(),
           "stability.flow_growth": m["growth"].mean(), "stability.jacobian_condition": m["condition"].mean(),
           "stability.clean_accuracy": m["clean_correct"].mean(),
           "stability.random_accuracy": m["random_correct"].mean(),
           "stability.adv_accuracy": m["adv_correct"].mean(),
           "stability.clean_loss": m["clean_loss"].mean(), "stability.random_loss": m["random_loss"].mean(),
           "stability.adv_loss": m["adv_loss"].mean()}
    for name in ("flow_gain_random", "flow_gain_adv", "logit_gain_random", "logit_gain_adv"):
        row[f"stability.{name}"] = m[name].mean()
        row[f"stability.{name}_max"] = m[name].max()
    return {k: float(v) if not isinstance(v, int) else v for k, v in row.items()}
