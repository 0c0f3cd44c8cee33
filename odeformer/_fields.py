"""Attention vector fields ``F(t, x)`` on token sets ``x`` of shape ``(..., n, d)``.

Each field is an ``nnx.Module`` called as ``field(t, x)``; ``odeformer.vector_field``
turns it into Diffrax's ``f(t, y, args)`` with the parameters in ``args``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from odeformer._time_dependence import TIED, TimeLayerNorm, TimeLinear, TimeSpec

SIGMAS = {
    "softmax": None,  # applied to the score matrix, over keys
    "identity": lambda u: u,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
}


class SeedAttentionField(nnx.Module):
    """The seeds' equation: ``dx/dt = sigma(x W_Q) (x W_K)^T sigma(x W_V) - x``.

    ``sigma`` elementwise (``identity``, ``tanh``, ``relu``, ``sigmoid``) is taken
    literally as written: ``S = sigma(Q) K^T`` (n x n, unnormalised) then
    ``S sigma(V)``. ``sigma="softmax"`` is the only reading in which softmax makes
    sense: ``softmax_keys(Q K^T) V - x`` (single head, no 1/sqrt(d) scaling).

    Honest regularity notes. ``identity`` makes the field a cubic polynomial in ``x``:
    locally but not globally Lipschitz, and solutions can blow up in finite time from
    large initial states (the ``-x`` decay only wins near the origin). ``relu`` is
    also cubic in growth. ``tanh``/``sigmoid`` bound ``sigma(Q)`` and ``sigma(V)``, so
    the field grows at most linearly in ``x`` and solutions exist for all time.
    ``softmax``: dot-product attention is not globally Lipschitz (Kim et al., ICML
    2021) but its output is a convex combination of the values, so it grows linearly.
    """

    def __init__(self, features: int, *, sigma: str = "softmax", time: TimeSpec = TIED,
                 rngs: nnx.Rngs):
        if sigma not in SIGMAS:
            raise ValueError(f"sigma={sigma!r} is not one of {', '.join(SIGMAS)}")
        self.sigma = sigma
        self.query = TimeLinear(features, features, time, use_bias=False, rngs=rngs)
        self.key = TimeLinear(features, features, time, use_bias=False, rngs=rngs)
        self.value = TimeLinear(features, features, time, use_bias=False, rngs=rngs)

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        q, k, v = self.query(t, x), self.key(t, x), self.value(t, x)
        if self.sigma == "softmax":
            scores = jax.nn.softmax(q @ jnp.swapaxes(k, -1, -2), axis=-1)
            return scores @ v - x
        sigma = SIGMAS[self.sigma]
        return (sigma(q) @ jnp.swapaxes(k, -1, -2)) @ sigma(v) - x


class MultiHeadAttention(nnx.Module):
    """Scaled dot-product multi-head attention with time-dependent projections."""

    def __init__(self, features: int, heads: int, *, causal: bool = False,
                 time: TimeSpec = TIED, rngs: nnx.Rngs):
        if features % heads:
            raise ValueError(f"features={features} must be divisible by heads={heads}")
        self.heads = heads
        self.causal = causal
        self.qkv = TimeLinear(features, 3 * features, time, rngs=rngs)
        self.out = TimeLinear(features, features, time, rngs=rngs)

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        *batch, n, d = x.shape
        qkv = self.qkv(t, x).reshape(*batch, n, 3, self.heads, d // self.heads)
        q, k, v = (qkv[..., i, :, :] for i in range(3))
        return self.out(t, attend(q, k, v, causal=self.causal).reshape(*batch, n, d))


ATTENTION_IMPLEMENTATIONS = ("einsum", "xla", "cudnn")


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = False,
           implementation: str | None = None) -> jax.Array:
    """Scaled dot-product attention of ``q, k, v`` shaped ``(..., n, heads, head_dim)``:
    ``softmax_keys(q k^T / sqrt(head_dim)) v`` per head, same shape as ``q``; with
    ``causal`` a query sees only keys at or before its position. ``q``, ``k`` and ``v`` must
    share one dtype.

    ``implementation``:

    - ``"einsum"``: two einsums in the inputs' dtype and a softmax in float32 at least.
    - ``"xla"``: ``jax.nn.dot_product_attention``'s XLA implementation (leading batch
      dimensions, any number or none, flattened to its one and restored). It computes the
      scores and softmax in float32 also for bfloat16 and float16 inputs, and for float64 ones
      too, which would cut float64 attention to float32 accuracy: float64 is refused.
    - ``"cudnn"``: cuDNN's fused (flash) attention on NVIDIA GPUs, bfloat16 or float16 only.
    - ``None`` (default): float64 (and any dtype but float32, bfloat16 and float16) takes
      ``"einsum"``. Otherwise on a GPU, ``"cudnn"`` for bfloat16 and float16 (head dimension
      a multiple of 8, at most 128, as cuDNN's kernel needs) and ``"xla"`` for the rest; on
      CPU, ``"einsum"``, the faster of the two for a training step there (``python
      benchmarks/attention.py``: the gradient through ``"xla"`` took 1.2-1.4x).
    """
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"attend needs q, k, v of one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if implementation is None:
        implementation = _default_implementation(q.dtype, q.shape[-1])
    if implementation not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r} is not one of "
                         f"{', '.join(ATTENTION_IMPLEMENTATIONS)} (or None: chosen by dtype and platform)")
    if implementation == "einsum":
        return _attend_einsum(q, k, v, causal=causal)
    if q.dtype not in _FUSED_DTYPES:
        raise ValueError(f"implementation={implementation!r} computes in float32 at most; {q.dtype} "
                         "inputs need implementation='einsum'")
    batch = math.prod(q.shape[:-3])
    q4, k4, v4 = (x.reshape(batch, *x.shape[-3:]) for x in (q, k, v))
    out = jax.nn.dot_product_attention(q4, k4, v4, is_causal=causal, implementation=implementation)
    return out.reshape(q.shape)


_FUSED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
_HALF_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def _default_implementation(dtype, head_dim: int) -> str:
    if dtype not in _FUSED_DTYPES or jax.default_backend() == "cpu":
        return "einsum"
    # cuDNN's kernel takes head dimensions that are multiples of 8, up to 128; NVIDIA GPUs only.
    if (jax.default_backend() == "gpu" and dtype in _HALF_DTYPES and head_dim % 8 == 0 and head_dim <= 128
            and _nvidia()):
        return "cudnn"
    return "xla"


def _nvidia() -> bool:
    """Whether JAX's GPU backend is CUDA's (not ROCm's, where cuDNN does not exist)."""
    version = getattr(jax.devices()[0].client, "platform_version", "")
    return "rocm" not in version.lower()


def _attend_einsum(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = False) -> jax.Array:
    """``attend`` written out with einsums in the inputs' dtype; the softmax in float32 at
    least (bfloat16 and float16 scores are cast up for it, as ``dot_product_attention`` does)."""
    n, head_dim = q.shape[-3], q.shape[-1]
    scores = jnp.einsum("...qhc,...khc->...hqk", q, k) / jnp.sqrt(head_dim).astype(q.dtype)
    scores = scores.astype(jnp.promote_types(scores.dtype, jnp.float32))
    if causal:
        mask = jnp.tril(jnp.ones((n, n), bool))
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    return jnp.einsum("...hqk,...khc->...qhc", weights, v)


class AttentionField(nnx.Module):
    """``F(t, x) = MHA_t(LN_t(x))`` (pre-LayerNorm optional)."""

    def __init__(self, features: int, heads: int, *, causal: bool = False, pre_norm: bool = True,
                 time: TimeSpec = TIED, rngs: nnx.Rngs):
        self.norm = TimeLayerNorm(features, time, rngs=rngs) if pre_norm else None
        self.attention = MultiHeadAttention(features, heads, causal=causal, time=time, rngs=rngs)

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        h = self.norm(t, x) if self.norm is not None else x
        return self.attention(t, h)


class MLP(nnx.Module):
    """Two-layer GELU MLP with time-dependent weights."""

    def __init__(self, features: int, hidden: int, *, time: TimeSpec = TIED, rngs: nnx.Rngs):
        self.up = TimeLinear(features, hidden, time, rngs=rngs)
        self.down = TimeLinear(hidden, features, time, rngs=rngs)

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        return self.down(t, jax.nn.gelu(self.up(t, x)))


class TransformerBlockField(nnx.Module):
    """A pre-LN transformer block as a field: ``F = MHA(LN1 x) + MLP(LN2 x)``.

    The two branches read the same state (the parallel form of GPT-J/PaLM): an Euler
    step ``x + h F(x)`` is one parallel-residual transformer layer. The sequential
    form ``x + attn`` then ``+ mlp`` is a splitting of this same ODE.
    """

    def __init__(self, features: int, heads: int, *, mlp_ratio: int = 4, causal: bool = False,
                 time: TimeSpec = TIED, rngs: nnx.Rngs):
        self.attention = AttentionField(features, heads, causal=causal, time=time, rngs=rngs)
        self.mlp_norm = TimeLayerNorm(features, time, rngs=rngs)
        self.mlp = MLP(features, mlp_ratio * features, time=time, rngs=rngs)

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        return self.attention(t, x) + self.mlp(t, self.mlp_norm(t, x))
