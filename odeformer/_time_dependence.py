"""Time dependence of a field's weights: tied, concat, piecewise or smooth in t.

A field on ``[0, horizon]`` holds each weight as a stack of ``num_sets`` arrays and
reads the weight at time ``t`` from it:

- ``tied``: one set, ``W(t) = W``.
- ``concat``: one set; linear layers also take ``t`` as an extra input feature.
- ``piecewise``: ``K = pieces`` independent sets, ``W(t) = W_k`` with
  ``k = floor(t / horizon * K)``. Euler with ``K`` steps over ``[0, horizon]`` is then
  exactly a K-layer residual network with step ``horizon / K``. A time within a few
  rounding errors of a piece boundary (``32 * eps(dtype) * K`` piece units, at least
  1e-6) counts as the later piece, so grid times that land on a boundary up to
  rounding select the right layer, in float32 as in float64.
  The field is discontinuous in ``t``: solvers of order > 1 keep their order only
  when their steps align with the pieces.
- ``smooth``: ``B = basis`` coefficient sets, ``W(t) = sum_k T_k(2 t / horizon - 1) W_k``
  with Chebyshev polynomials ``T_k`` (as in Neural ODE Transformers, ICLR 2025, where
  weights are smooth functions of depth). Higher coefficients start at zero, so at
  initialisation ``W(t)`` is constant and training learns its variation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

TIME_MODES: tuple[str, ...] = ("tied", "concat", "piecewise", "smooth")
_MIN_SNAP = 1e-6


@dataclasses.dataclass(frozen=True)
class TimeSpec:
    """How a field's weights depend on time.

    Attributes:
      mode: one of ``TIME_MODES``.
      pieces: number of weight sets K for ``piecewise`` (= layers).
      basis: number of Chebyshev coefficients B for ``smooth``.
      horizon: the field is defined on ``[0, horizon]``.
    """

    mode: str = "tied"
    pieces: int = 1
    basis: int = 4
    horizon: float = 1.0

    def __post_init__(self):
        if self.mode not in TIME_MODES:
            raise ValueError(f"time mode={self.mode!r} is not one of {', '.join(TIME_MODES)}")
        for name in ("pieces", "basis"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"time {name}={value!r} must be an int >= 1")
        if not self.horizon > 0:
            raise ValueError(f"time horizon={self.horizon!r} must be > 0")

    @property
    def num_sets(self) -> int:
        """How many stacked copies of each weight this mode stores."""
        return {"piecewise": self.pieces, "smooth": self.basis}.get(self.mode, 1)

    def piece_index(self, t: jax.Array) -> jax.Array:
        """Index of the piece that time ``t`` falls in (piecewise mode)."""
        t = jnp.asarray(t)
        dtype = t.dtype if jnp.issubdtype(t.dtype, jnp.floating) else jnp.float32
        snap = max(_MIN_SNAP, 32 * float(jnp.finfo(dtype).eps) * self.pieces)
        k = jnp.floor(t / self.horizon * self.pieces + snap).astype(jnp.int32)
        return jnp.clip(k, 0, self.pieces - 1)

    def basis_values(self, t: jax.Array) -> jax.Array:
        """Chebyshev polynomials T_0..T_{B-1} at ``2 t / horizon - 1``."""
        s = 2.0 * t / self.horizon - 1.0
        values = [jnp.ones_like(s), s]
        for _ in range(2, self.basis):
            values.append(2.0 * s * values[-1] - values[-2])
        return jnp.stack(values[: self.basis])


TIED = TimeSpec()  # the default: constant weights


class TimeParam(nnx.Module):
    """A parameter of shape ``shape`` whose value depends on time per a TimeSpec."""

    def __init__(self, shape: tuple[int, ...], init, time: TimeSpec, *, rngs: nnx.Rngs):
        self.time = time
        if time.mode == "smooth":
            first = init(rngs.params(), shape)
            rest = jnp.zeros((time.basis - 1, *shape), first.dtype)
            stack = jnp.concatenate([first[None], rest])
        else:
            keys = jax.random.split(rngs.params(), time.num_sets)
            stack = jnp.stack([init(key, shape) for key in keys])
        self.value = nnx.Param(stack)

    def __call__(self, t: jax.Array) -> jax.Array:
        stack = self.value[...]
        if self.time.mode == "piecewise":
            return stack[self.time.piece_index(t)]
        if self.time.mode == "smooth":
            return jnp.tensordot(self.time.basis_values(t).astype(stack.dtype), stack, axes=1)
        return stack[0]


class TimeLinear(nnx.Module):
    """``y = x W(t) + b(t)``; in ``concat`` mode ``y = [x, t] W + b``.

    ``kernel_init`` draws ``W`` (default: LeCun truncated normal, variance 1/fan-in).
    ``dtype``: the dtype the product is computed in (``x``, ``W(t)`` and ``b(t)`` are cast to it;
    the parameters keep theirs, as Flax's ``dtype`` / ``param_dtype``); ``None``: the usual
    promotion of ``x`` and the parameters.
    """

    def __init__(self, in_features: int, out_features: int, time: TimeSpec, *,
                 use_bias: bool = True, kernel_init=None, dtype=None, rngs: nnx.Rngs):
        self.dtype = None if dtype is None else jnp.dtype(dtype)
        self.concat = time.mode == "concat"
        rows = in_features + 1 if self.concat else in_features
        init = kernel_init or nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
        self.kernel = TimeParam((rows, out_features), init, time, rngs=rngs)
        self.bias = (
            TimeParam((out_features,), nnx.initializers.zeros, time, rngs=rngs)
            if use_bias else None
        )

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        kernel = self.kernel(t)
        bias = self.bias(t) if self.bias is not None else None
        # concat: the time column's term in the parameters' dtype (t is never rounded to dtype).
        weight, time_term = (kernel[:-1], t * kernel[-1]) if self.concat else (kernel, None)
        if self.dtype is not None:
            x, weight = x.astype(self.dtype), weight.astype(self.dtype)
            time_term, bias = (None if a is None else a.astype(self.dtype) for a in (time_term, bias))
        y = x @ weight
        if time_term is not None:
            y = y + time_term
        if bias is not None:
            y = y + bias
        return y


class TimeLayerNorm(nnx.Module):
    """LayerNorm over the last axis with time-dependent scale and bias."""

    def __init__(self, features: int, time: TimeSpec, *, epsilon: float = 1e-6, rngs: nnx.Rngs):
        self.epsilon = epsilon
        self.scale = TimeParam((features,), nnx.initializers.ones, time, rngs=rngs)
        self.bias = TimeParam((features,), nnx.initializers.zeros, time, rngs=rngs)

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * self.scale(t) + self.bias(t)
