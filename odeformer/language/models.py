"""Causal language models whose body is a transformer stack or an attention flow over depth.

All families share one block definition, :class:`Block`: a pre-LayerNorm causal attention
sub-field ``F_A(t, x) = Attn_t(LN_t(x))`` and a GELU MLP sub-field ``F_M(t, x) = MLP_t(LN_t(x))``
(no biases, as nanoGPT's ``bias=False``), weights tied, piecewise or smooth in depth ``t``.
Around the body: token and learned position embeddings (N(0, 0.02)), a final LayerNorm and
logits from the token table (input and output embeddings tied).

Families (``model.family``):

- ``gpt``: nanoGPT's GPT, ``layers`` independent blocks applied sequentially
  (``x += F_A(x)`` then ``x += F_M(x)``); residual output projections drawn with std
  ``0.02 / sqrt(2 layers)``.
- ``ode``: one block integrated over ``[0, t1]`` by any solver, fixed or adaptive; the
  weights' depth dependence is ``time`` (tied by default).
- ``smooth``: as ``ode`` with weights smooth in depth (Chebyshev, ``basis`` coefficients).
- ``rk2_gated``: the ODE Transformer's RK2 block (Li et al., ACL 2022): per layer,
  ``F1 = F(x)``, ``F2 = F(x + F1)`` with the same weights, where ``F`` is the GPT block's
  increment, and ``x += g F1 + (1 - g) F2`` with a learned per-token gate
  ``g = sigmoid([F1, F2] w + b)``.

The ODE families' ``form`` (fixed steps of size ``h`` for the split forms):

- ``parallel``: ``dx/dt = F_A(x) + F_M(x)``, integrated as one field (one evaluation of
  each sub-field per solver stage).
- ``sequential``: Lie–Trotter splitting, per step one solver step of ``F_A`` over
  ``[t, t + h]`` then one of ``F_M``; Euler with unit steps and piecewise weights is the GPT
  block exactly.
- ``strang``: Strang splitting (Macaron): ``F_M`` over ``[t, t + h/2]``, ``F_A`` over
  ``[t, t + h]``, ``F_M`` over ``[t + h/2, t + h]``.

The ODE families' residual projections are drawn with std ``0.02 / sqrt(2)``: the flow over
unit depth adds one block's worth of update, as one layer does.

Precision (``dtype``): ``"float32"`` computes in the parameters' dtype. ``"bfloat16"`` keeps the
parameters, the optimiser state, the loss and the residual stream (the solver's state, its time
and its error control) in float32 and casts each sub-field's input and weights to bfloat16 for
its matmuls and its GELU; LayerNorm statistics and the attention softmax are float32, and each
sub-field's output is cast back to the stream's float32. An adaptive solve then controls an
error estimate built from bfloat16 evaluations, whose relative rounding is about 2^-8:
tolerances below bfloat16's epsilon (2^-7) cannot be met by smaller steps, so configs refuse
them (``odeformer.experiment.config``).

Dropout (``dropout``, training only, given a ``dropout_key``): on the embeddings and on each
sub-field's output (nanoGPT's residual dropout); not on the attention probabilities, so that
attention can stay a fused kernel. The masks are drawn once per forward pass: one per layer and
sub-field for ``gpt`` and ``rk2_gated`` (both RK2 stages of a layer share its masks), one per
sub-field for the ODE families, so their field stays one deterministic function of ``(t, x)``
that the solver can integrate.

NFE counts evaluations of the attention sub-field (each is paired with one evaluation of
``F_M``, two for ``strang``): ``layers`` for ``gpt``, ``2 layers`` for ``rk2_gated``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from odeformer._block import ODEBlock, count_params
from odeformer._fields import attend
from odeformer._integrate import solve
from odeformer._regularisers import integrate as integrate_regularised
from odeformer._time_dependence import TIED, TimeLinear, TimeParam, TimeSpec
from odeformer.categorical.sharded_lookup import lookup

FAMILIES = ("gpt", "ode", "smooth", "rk2_gated")
FORMS = ("parallel", "sequential", "strang")
DTYPES = ("float32", "bfloat16")
INIT_STD = 0.02
LN_EPSILON = 1e-5  # PyTorch's LayerNorm default, as nanoGPT

# Sub-steps of one split step: (sub-field, start, end) as fractions of the step.
_SPLITS = {"sequential": (("attention", 0.0, 1.0), ("mlp", 0.0, 1.0)),
           "strang": (("mlp", 0.0, 0.5), ("attention", 0.0, 1.0), ("mlp", 0.5, 1.0))}


def layer_norm(x: jax.Array, scale: jax.Array) -> jax.Array:
    """LayerNorm over the last axis with a scale and no bias."""
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + LN_EPSILON) * scale


def compute_dtype(dtype: str):
    """``model.dtype`` -> the dtype sub-fields compute in (``None``: the parameters')."""
    if dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    return None if dtype == "float32" else jnp.dtype(dtype)


class DropoutMask(nnx.Variable):
    """A sub-field's residual-dropout mask for one forward pass (set by
    :meth:`LanguageModel.body`, never a parameter)."""


def keep_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """Which entries inverted dropout at ``rate`` keeps (each with probability ``1 - rate``)."""
    return jax.random.bernoulli(key, 1.0 - rate, shape)


def apply_mask(x: jax.Array, keep: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout with a drawn mask: kept entries scaled by ``1 / (1 - rate)``, the rest 0."""
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def dropout(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
    """Inverted dropout of ``x`` at ``rate`` with a mask drawn from ``key``."""
    return apply_mask(x, keep_mask(key, rate, x.shape), rate)


class _SubField(nnx.Module):
    """What both sub-fields share: an optional dropout mask on the output, and the output cast
    back to the residual stream's dtype."""

    rate: float = 0.0
    mask: DropoutMask | None = None

    def finish(self, out: jax.Array, x: jax.Array) -> jax.Array:
        if self.mask is not None:
            out = apply_mask(out, self.mask[...], self.rate)
        return out.astype(x.dtype)


class Attention(_SubField):
    """``F_A(t, x) = Attn_t(LN_t(x))``: causal multi-head self-attention, no biases."""

    def __init__(self, width: int, heads: int, time: TimeSpec, out_std: float, *, dtype=None,
                 rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"model.width={width} must be divisible by model.heads={heads}")
        self.heads = heads
        self.scale = TimeParam((width,), nnx.initializers.ones, time, rngs=rngs)
        self.qkv = TimeLinear(width, 3 * width, time, use_bias=False, dtype=dtype,
                              kernel_init=nnx.initializers.normal(INIT_STD), rngs=rngs)
        self.out = TimeLinear(width, width, time, use_bias=False, dtype=dtype,
                              kernel_init=nnx.initializers.normal(out_std), rngs=rngs)

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        *batch, n, d = x.shape
        h = layer_norm(x, self.scale(t))
        qkv = self.qkv(t, h).reshape(*batch, n, 3, self.heads, d // self.heads)
        q, k, v = (qkv[..., i, :, :] for i in range(3))
        return self.finish(self.out(t, attend(q, k, v, causal=True).reshape(*batch, n, d)), x)


class FeedForward(_SubField):
    """``F_M(t, x) = W2_t gelu(W1_t LN_t(x))`` (exact GELU, no biases)."""

    def __init__(self, width: int, hidden: int, time: TimeSpec, out_std: float, *, dtype=None,
                 rngs: nnx.Rngs):
        self.scale = TimeParam((width,), nnx.initializers.ones, time, rngs=rngs)
        self.up = TimeLinear(width, hidden, time, use_bias=False, dtype=dtype,
                             kernel_init=nnx.initializers.normal(INIT_STD), rngs=rngs)
        self.down = TimeLinear(hidden, width, time, use_bias=False, dtype=dtype,
                               kernel_init=nnx.initializers.normal(out_std), rngs=rngs)

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        hidden = jax.nn.gelu(self.up(t, layer_norm(x, self.scale(t))), approximate=False)
        return self.finish(self.down(t, hidden), x)


class Block(nnx.Module):
    """The two sub-fields of every family; called as a field it is the parallel form."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, time: TimeSpec, out_std: float, *,
                 dtype=None, rngs: nnx.Rngs):
        self.attention = Attention(width, heads, time, out_std, dtype=dtype, rngs=rngs)
        self.mlp = FeedForward(width, mlp_ratio * width, time, out_std, dtype=dtype, rngs=rngs)

    def drop(self, rate: float, key: jax.Array, shape: tuple[int, ...]) -> None:
        """Draws this forward pass's residual-dropout masks of both sub-fields."""
        for i, sub in enumerate((self.attention, self.mlp)):
            sub.rate = rate
            sub.mask = DropoutMask(keep_mask(jax.random.fold_in(key, i), rate, shape))

    def __call__(self, t: jax.Array, x: jax.Array) -> jax.Array:
        return self.attention(t, x) + self.mlp(t, x)

    def step(self, t: jax.Array, x: jax.Array) -> jax.Array:
        """One GPT block: ``x + F_A(x)``, then ``+ F_M`` of the result."""
        x = x + self.attention(t, x)
        return x + self.mlp(t, x)


class LanguageModel(nnx.Module):
    """Token ids ``[..., n]`` (``n <= block_size``) -> next-token logits ``[..., n, vocab]``.

    Args:
      vocab_size: ids lie in ``[0, vocab_size)``.
      block_size: the most positions a sequence may have.
      family: ``gpt``, ``ode``, ``smooth`` or ``rk2_gated`` (the module docstring).
      width: token width.
      heads: attention heads (dividing ``width``).
      layers: depth of ``gpt`` and ``rk2_gated``.
      mlp_ratio: MLP hidden width over ``width``.
      form: the ODE families' ``parallel``, ``sequential`` or ``strang`` form.
      time: depth dependence of the ``ode`` family's weights (``odeformer.TIME_MODES``).
      pieces: weight sets of a ``piecewise`` ``time``.
      basis: Chebyshev coefficients of ``smooth`` weights.
      solver: the ODE families' solver (``odeformer.SOLVERS``).
      steps: fixed steps over ``[0, t1]``; ``None``: adaptive (``parallel`` form only).
      adjoint: as in :func:`odeformer.solve`.
      max_steps: most steps of an adaptive solve.
      dtype: ``"float32"`` or ``"bfloat16"`` compute (the module docstring's precision).
      dropout: residual and embedding dropout rate in ``[0, 1)``, applied when a call passes a
        ``dropout_key``.
      rngs: initialisation keys.
    """

    def __init__(self, *, vocab_size: int, block_size: int, family: str = "gpt", width: int = 128,
                 heads: int = 4, layers: int = 4, mlp_ratio: int = 4, form: str = "parallel",
                 time: str = "tied", pieces: int = 4, basis: int = 4, solver: str = "rk4",
                 steps: int | None = 4, adjoint: str = "checkpoint", max_steps: int = 4096,
                 dtype: str = "float32", dropout: float = 0.0, rngs: nnx.Rngs):
        if family not in FAMILIES:
            raise ValueError(f"model.family={family!r} is not one of {', '.join(FAMILIES)} "
                             "(language models)")
        if form not in FORMS:
            raise ValueError(f"model.form={form!r} is not one of {', '.join(FORMS)}")
        if form != "parallel" and steps is None:
            raise ValueError(f"model.form={form!r} splits each fixed step; an adaptive solve needs "
                             "model.form='parallel'")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout={dropout!r} must lie in [0, 1)")
        compute = compute_dtype(dtype)
        self.dtype, self.dropout = compute, float(dropout)
        self.family, self.form, self.layers = family, form, layers
        self.vocab_size, self.block_size, self.width = vocab_size, block_size, width
        self.mlp_ratio = mlp_ratio
        normal = nnx.initializers.normal(INIT_STD)
        self.tokens = nnx.Param(normal(rngs.params(), (vocab_size, width)))
        self.positions = nnx.Param(normal(rngs.params(), (block_size, width)))
        if family in ("gpt", "rk2_gated"):
            out_std = INIT_STD / math.sqrt(2 * layers)
            self.blocks = nnx.List([Block(width, heads, mlp_ratio, TIED, out_std, dtype=compute, rngs=rngs)
                                    for _ in range(layers)])
            self.gates = nnx.List([TimeLinear(2 * width, 1, TIED, kernel_init=normal, dtype=compute,
                                              rngs=rngs)
                                   for _ in range(layers)]) if family == "rk2_gated" else None
        else:
            spec = (TimeSpec("smooth", basis=basis) if family == "smooth"
                    else TimeSpec(time, pieces=pieces, basis=basis))
            field = Block(width, heads, mlp_ratio, spec, INIT_STD / math.sqrt(2), dtype=compute, rngs=rngs)
            self.flow = ODEBlock(field, solver=solver, steps=steps, adjoint=adjoint,
                                 max_steps=max_steps, throw=False)
        self.norm_scale = nnx.Param(jnp.ones((width,)))

    def embed(self, tokens: jax.Array, dropout_key: jax.Array | None = None) -> jax.Array:
        """int ids ``[..., n]`` -> the body's initial state ``[..., n, width]`` (in the parameters'
        dtype; with ``dropout_key``, dropped out at ``self.dropout``)."""
        n = tokens.shape[-1]
        if n > self.block_size:
            raise ValueError(f"{n} tokens exceed the model's block_size={self.block_size}")
        x = lookup(self.tokens[...], tokens) + self.positions[:n]
        if dropout_key is not None and self.dropout > 0:
            x = dropout(x, self.dropout, jax.random.fold_in(dropout_key, 0))
        return x

    def _blocks(self) -> list[Block]:
        return list(self.blocks) if self.family in ("gpt", "rk2_gated") else [self.flow.field]

    def _draw_masks(self, key: jax.Array, shape: tuple[int, ...]) -> None:
        for i, block in enumerate(self._blocks()):
            block.drop(self.dropout, jax.random.fold_in(key, 1 + i), shape)

    def body(self, x, *, rtol=None, atol=None, t1=None, steps=None, penalties=(), key=None,
             dropout_key=None):
        """The depth map ``x -> x(T)`` and its stats (``nfe``, ``num_steps``, ``ok`` and each
        regulariser's integral). Solver values (ODE families; ``steps`` at most the model's
        own) may be traced; the other families ignore them. ``dropout_key`` draws the residual
        dropout masks of this pass (none without it, or at ``dropout=0``); they are gone after it."""
        if penalties and (self.family in ("gpt", "rk2_gated") or self.form != "parallel"):
            raise ValueError(f"penalties {tuple(penalties)} apply to the ode and smooth families in "
                             "the parallel form only")
        if dropout_key is None or self.dropout == 0:
            return self._body(x, rtol, atol, t1, steps, penalties, key)
        self._draw_masks(dropout_key, x.shape)
        try:
            return self._body(x, rtol, atol, t1, steps, penalties, key)
        finally:  # the masks belong to this pass only
            for block in self._blocks():
                block.attention.mask = block.mlp.mask = None

    def _body(self, x, rtol, atol, t1, steps, penalties, key):
        zero = jnp.zeros((), jnp.float32)
        if self.family == "gpt":
            for block in self.blocks:
                x = block.step(zero, x)
            return x, self._discrete_stats(self.layers)
        if self.family == "rk2_gated":
            for block, gate in zip(self.blocks, self.gates, strict=True):
                f1 = block.step(zero, x) - x
                f2 = block.step(zero, x + f1) - (x + f1)
                g = jax.nn.sigmoid(gate(zero, jnp.concatenate([f1, f2], -1)).astype(x.dtype))
                x = x + g * f1 + (1 - g) * f2
            return x, self._discrete_stats(2 * self.layers)
        adaptive = self.flow.steps is None
        if self.form != "parallel":
            return self._split(x, t1, steps)
        options = dict(rtol=rtol if adaptive else None, atol=atol if adaptive else None, t1=t1,
                       steps=None if adaptive else steps)
        values = {}
        if penalties:
            sol, values = integrate_regularised(self.flow, x, tuple(penalties), key, **options)
        else:
            sol = self.flow.integrate(x, **options)
        return sol.y1, {**sol.stats, "ok": sol.ok, **values}

    @staticmethod
    def _discrete_stats(nfe: int) -> dict:
        count = jnp.asarray(nfe, jnp.int32)
        return {"nfe": count, "num_steps": count, "ok": jnp.asarray(True)}

    def _split(self, x, t1, steps):
        """Lie–Trotter / Strang splitting: a scan over the step bound; steps past ``steps``
        (traced, at most the bound) pass the state through unchanged."""
        bound = self.flow.steps
        steps = jnp.asarray(bound if steps is None else steps, jnp.int32)
        h = jnp.asarray(self.flow.t1 if t1 is None else t1, x.dtype) / steps.astype(x.dtype)
        graphdef, state = nnx.split(self.flow.field)

        def sub_field(name):
            return lambda t, y, state: getattr(nnx.merge(graphdef, state), name)(t, y)

        fields = {name: sub_field(name) for name in ("attention", "mlp")}

        def advance(k, x):
            nfe, ok = jnp.zeros((), jnp.int32), jnp.asarray(True)
            for name, start, end in _SPLITS[self.form]:
                t0 = (k.astype(x.dtype) + start) * h
                sol = solve(fields[name], x, args=state, t0=t0, t1=t0 + (end - start) * h,
                            solver=self.flow.solver, steps=1, adjoint=self.flow.adjoint, throw=False)
                x, ok = sol.y1, ok & sol.ok
                if name == "attention":
                    nfe = nfe + sol.stats["nfe"].astype(jnp.int32)
            return x, nfe, ok

        def cell(carry, k):
            x, nfe, ok = carry
            x, n, good = jax.lax.cond(k < steps, advance,
                                      lambda k, x: (x, jnp.zeros((), jnp.int32), jnp.asarray(True)),
                                      k, x)
            return (x, nfe + n, ok & good), None

        start = (x, jnp.zeros((), jnp.int32), jnp.asarray(True))
        (x, nfe, ok), _ = jax.lax.scan(cell, start, jnp.arange(bound))
        return x, {"nfe": nfe, "num_steps": steps, "ok": ok}

    def classify(self, x, *, rtol=None, atol=None, t1=None, steps=None, penalties=(), key=None,
                 dropout_key=None):
        """Embedded tokens -> ``(logits, stats)``: body, final LayerNorm, tied output head (its
        matmul in the compute dtype; the logits in the stream's dtype, for a float32 loss)."""
        h, stats = self.body(x, rtol=rtol, atol=atol, t1=t1, steps=steps, penalties=penalties,
                             key=key, dropout_key=dropout_key)
        h, table = layer_norm(h, self.norm_scale[...]), self.tokens[...]
        if self.dtype is not None:
            return (h.astype(self.dtype) @ table.astype(self.dtype).T).astype(x.dtype), stats
        return h @ table.T, stats

    def __call__(self, tokens: jax.Array, dropout_key: jax.Array | None = None, **solver_values):
        """``(logits, stats)`` of token ids; solver values as in :meth:`body`; ``dropout_key``
        (training) turns dropout on."""
        return self.classify(self.embed(tokens, dropout_key), dropout_key=dropout_key, **solver_values)

    def embedding_params(self) -> int:
        """Entries of the token and position tables."""
        return (self.vocab_size + self.block_size) * self.width


def non_embedding_params(model: LanguageModel) -> int:
    """Trainable parameters outside the token and position tables (the count budgets use)."""
    return count_params(model) - model.embedding_params()
