"""Per-example norms and the spectral norm of a batched Jacobian, shared by the stability
measurements of classifiers (``odeformer.experiment.evaluators.stability``) and of language
models (``odeformer.language.robustness``).

Every function takes arrays ``[B, ...]`` whose first axis indexes independent examples; norms
are Frobenius norms over all the other axes.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

_TINY = 1e-30  # guards 0 / 0 when a Jacobian-vector product vanishes


def _norm(x: jax.Array) -> jax.Array:
    """Per-example Frobenius norm: over every axis but the first."""
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim))))


def _per_example(scale: jax.Array, x: jax.Array) -> jax.Array:
    return scale.reshape(scale.shape + (1,) * (x.ndim - 1)) * x


def scaled_like(direction: jax.Array, x0: jax.Array, epsilon) -> jax.Array:
    """``direction`` rescaled per example to norm ``epsilon * ||x0||``."""
    return _per_example(epsilon * _norm(x0) / jnp.maximum(_norm(direction), _TINY), direction)


def spectral_norm(jvp: Callable, vjp: Callable, v0: jax.Array,
                  iterations: int) -> tuple[jax.Array, jax.Array]:
    """Largest singular value of each example's Jacobian ``J`` by power iteration on ``JᵀJ``.

    Args:
      jvp: ``v -> J v`` and ``vjp``: ``u -> Jᵀ u``, batched, each example independent.
      v0: start vectors ``[B, ...]`` (random: a start orthogonal to the top singular
        vector would never find it).
      iterations: products with ``JᵀJ`` (static), >= 2.

    Returns:
      ``(sigma, change)`` per example: ``sigma = ||J v||`` for the last unit iterate ``v``
      (never above ``σ_max``, and converging to it at the rate ``(σ_2/σ_max)^2``) and its
      relative change over the last iteration (a convergence check).
    """
    def step(v, _):
        u = jvp(v)
        w = vjp(u)
        return _per_example(1 / jnp.maximum(_norm(w), _TINY), w), _norm(u)

    v = _per_example(1 / _norm(v0), v0)
    _, sigmas = jax.lax.scan(step, v, None, length=iterations)
    change = jnp.abs(sigmas[-1] - sigmas[-2]) / jnp.maximum(sigmas[-1], _TINY)
    return sigmas[-1], change


def lyapunov_exponent(sigma: jax.Array, horizon) -> jax.Array:
    """Largest finite-time Lyapunov exponent ``log(σ_max) / T`` (per unit time)."""
    return jnp.log(sigma) / horizon
