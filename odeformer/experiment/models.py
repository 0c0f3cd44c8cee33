"""The models a run trains: sequence and tabular classifiers whose body is an ODE flow or a
discrete L-layer transformer, and the language models of ``odeformer.language.models``.

The classifiers' two families share one implementation: the discrete family is a ``piecewise`` field
with ``layers`` pieces integrated by Euler in ``layers`` unit steps, which is exactly an
L-layer (parallel-block, pre-LN) residual transformer (pinned in tests/test_fields.py).
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from odeformer._block import ODEBlock
from odeformer._fields import TransformerBlockField
from odeformer._regularisers import integrate as integrate_regularised
from odeformer._time_dependence import TimeSpec
from odeformer.categorical.embeddings import EmbeddingSpec, FeatureTokenizer
from odeformer.categorical.features import TabularData
from odeformer.categorical.sharded_lookup import lookup
from odeformer.experiment.tabular_mlp import TabularMLP
from odeformer.experiment.tasks import LanguageData, TaskData
from odeformer.language.models import FAMILIES as LANGUAGE_FAMILIES
from odeformer.language.models import LanguageModel

FAMILIES = ("ode", "discrete")  # classifiers
TABULAR_FAMILIES = ("mlp",)  # classifiers of tabular tasks only (odeformer.experiment.tabular_mlp)
ALL_FAMILIES = (*FAMILIES, *TABULAR_FAMILIES, *(f for f in LANGUAGE_FAMILIES if f not in FAMILIES))
READOUTS = ("last", "mean")


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """Architecture of a :class:`SequenceClassifier` (all structural).

    Attributes:
      family: ``"ode"`` (field integrated by the configured solver) or ``"discrete"``; for
        tabular tasks also ``"mlp"`` (:class:`odeformer.experiment.tabular_mlp.TabularMLP`).
      width, heads, mlp_ratio: transformer-block field sizes.
      time: time mode of the ``ode`` family's weights (``odeformer.TIME_MODES``).
      pieces, basis: for the ``piecewise`` and ``smooth`` time modes.
      layers: depth of the ``discrete`` family; dense layers of the ``mlp`` family.
      readout: ``"last"`` token or ``"mean"`` over tokens (sequence tasks; a tabular
        model reads its ``[CLS]`` token).
      embedding, embed_dim, compression, embed_init, combiner: the tabular tokenizer's
        :class:`odeformer.categorical.embeddings.EmbeddingSpec` (``kind``, ``dim``,
        ``compression``, ``init``, ``combiner``).
      form: language models' ODE families: ``parallel``, ``sequential`` or ``strang``.
      dtype, dropout: language models' compute dtype and dropout rate
        (:class:`odeformer.language.models.LanguageModel`).
    """

    family: str = "ode"
    width: int = 32
    heads: int = 4
    mlp_ratio: int = 2
    time: str = "tied"
    pieces: int = 4
    basis: int = 4
    layers: int = 4
    readout: str = "last"
    embedding: str = "table"
    embed_dim: int = 0
    compression: int = 8
    embed_init: str = "kind"
    combiner: str = "sum"
    form: str = "parallel"
    dtype: str = "float32"
    dropout: float = 0.0


@dataclasses.dataclass(frozen=True)
class SolverSpec:
    """Structural solver settings of the ``ode`` family (see ``odeformer.solve``)."""

    name: str = "tsit5"
    steps: int | None = 4
    adjoint: str = "checkpoint"
    max_steps: int = 4096


class _FlowClassifier(nnx.Module):
    """Tokens -> flow -> LayerNorm -> readout -> linear head; subclasses make the tokens."""

    def _build_flow(self, shape: ModelShape, solver: SolverSpec, num_classes: int, rngs: nnx.Rngs):
        if shape.family not in FAMILIES:
            raise ValueError(f"model.family={shape.family!r} is not one of {', '.join(FAMILIES)}")
        self.family = shape.family
        if shape.family == "discrete":
            time = TimeSpec(mode="piecewise", pieces=shape.layers, horizon=float(shape.layers))
            # Unit steps over [0, layers]: x_{l+1} = x_l + F_l(x_l).
            block_solver = dict(solver="euler", steps=shape.layers, t1=float(shape.layers))
        else:
            time = TimeSpec(mode=shape.time, pieces=shape.pieces, basis=shape.basis)
            # Adaptive tolerances are not stored: they are passed (traced) at each call.
            block_solver = dict(solver=solver.name, steps=solver.steps, adjoint=solver.adjoint,
                                max_steps=solver.max_steps)
        field = TransformerBlockField(shape.width, shape.heads, mlp_ratio=shape.mlp_ratio,
                                      time=time, rngs=rngs)
        self.block = ODEBlock(field, throw=False, **block_solver)
        self.norm = nnx.LayerNorm(shape.width, rngs=rngs)
        self.head = nnx.Linear(shape.width, num_classes, rngs=rngs)

    def flow(self, x, *, rtol=None, atol=None, t1=None, steps=None, penalties=(), key=None):
        """The flow map: integrates the tokens ``x``; returns ``(x(T), stats with 'ok')``.

        ``rtol``, ``atol`` (required by the adaptive ``ode`` family), ``t1`` and ``steps``
        (``ode`` only) may be traced. ``steps`` counts a fixed-step solver's steps, at most
        the ``SolverSpec``'s (default: that many); an adaptive solver ignores it, as a fixed-step
        one ignores the tolerances. The ``discrete`` family ignores them all. The whole batch is
        one ODE system: an adaptive solver picks one step sequence for all examples
        (as torchdiffeq does), so an example's result depends slightly on its batch.

        ``penalties`` (names of ``odeformer._regularisers.PENALTIES``, ``ode`` family only)
        integrates those regularisers alongside (``key`` draws the Jacobian term's noise);
        their integrals are added to ``stats`` under their names.
        """
        if penalties and self.family == "discrete":
            raise ValueError(f"penalties {penalties} apply to the ode family only")
        adaptive = self.block.steps is None
        tolerances = dict(rtol=rtol if adaptive else None, atol=atol if adaptive else None, t1=t1,
                          steps=None if adaptive else steps)
        values = {}
        if self.family == "discrete":
            sol = self.block.integrate(x)
        elif penalties:
            sol, values = integrate_regularised(self.block, x, tuple(penalties), key, **tolerances)
        else:
            sol = self.block.integrate(x, **tolerances)
        return sol.y1, {**sol.stats, "ok": sol.ok, **values}

    def horizon(self, t1=None):
        """Length T of the flow's time interval: ``layers`` for the discrete family
        (unit steps), ``t1`` (or the block's stored one) for the ode family."""
        if self.family == "discrete":
            return float(self.block.t1)
        return self.block.t1 if t1 is None else t1

    def classify(self, x, *, rtol=None, atol=None, t1=None, steps=None, penalties=(), key=None):
        """Tokens (after :meth:`embed`) -> ``(logits, stats)``: flow, LayerNorm, readout, head.

        Solver values, ``penalties`` and ``key``: see :meth:`flow`."""
        h, stats = self.flow(x, rtol=rtol, atol=atol, t1=t1, steps=steps, penalties=penalties,
                             key=key)
        return self.head(self.read(self.norm(h))), stats


class SequenceClassifier(_FlowClassifier):
    """Token + position embedding -> flow -> LayerNorm -> readout -> linear head."""

    def __init__(self, shape: ModelShape, solver: SolverSpec, *, vocab_size: int, seq_len: int,
                 num_classes: int, rngs: nnx.Rngs):
        if shape.readout not in READOUTS:
            raise ValueError(f"model.readout={shape.readout!r} is not one of {', '.join(READOUTS)}")
        self.readout = shape.readout
        self.embed_tokens = nnx.Embed(vocab_size, shape.width, rngs=rngs)
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq_len, shape.width)))
        self._build_flow(shape, solver, num_classes, rngs)

    def embed(self, tokens: jax.Array) -> jax.Array:
        """int ids [..., seq_len] -> the flow's initial tokens [..., seq_len, width]."""
        # The sharding-aware lookup: under a mesh with a data axis, nnx.Embed's plain take
        # cannot infer the output sharding of batch-split ids (ShardingTypeError).
        return lookup(self.embed_tokens.embedding[...], tokens) + self.position[...]

    def read(self, h: jax.Array) -> jax.Array:
        return h[..., -1, :] if self.readout == "last" else h.mean(-2)

    def __call__(self, tokens: jax.Array, *, rtol=None, atol=None, t1=None, steps=None):
        """Returns ``(logits, solution stats with 'ok')``; see :meth:`flow` for the solver values."""
        return self.classify(self.embed(tokens), rtol=rtol, atol=atol, t1=t1, steps=steps)


class TabularClassifier(_FlowClassifier):
    """FT-Transformer-style: every feature a token plus ``[CLS]`` -> flow -> ``[CLS]`` -> head.

    ``shards`` is the mesh's ``model`` size: embedding rows are padded to a multiple of it.
    """

    def __init__(self, shape: ModelShape, solver: SolverSpec, *, data: TabularData, shards: int = 1,
                 rngs: nnx.Rngs):
        spec = EmbeddingSpec(kind=shape.embedding, dim=shape.embed_dim, compression=shape.compression,
                             init=shape.embed_init, combiner=shape.combiner)
        self.tokenizer = FeatureTokenizer(data.categorical, len(data.numeric), shape.width, spec,
                                          bags=data.bags, shards=shards, rngs=rngs)
        self._build_flow(shape, solver, data.num_classes, rngs)

    def embed(self, categorical: jax.Array, numeric: jax.Array, bag_ids: jax.Array | None = None,
              bag_weights: jax.Array | None = None) -> jax.Array:
        """``categorical`` int [B, F], ``numeric`` float [B, G] (multi-valued features: ``bag_ids``
        int [B, M, L], ``bag_weights`` [B, M, L]) -> tokens [B, 1 + F + M + G, width]."""
        return self.tokenizer(categorical, numeric, bag_ids, bag_weights)

    def read(self, h: jax.Array) -> jax.Array:
        return h[..., 0, :]  # the [CLS] token

    def __call__(self, categorical: jax.Array, numeric: jax.Array, bag_ids: jax.Array | None = None,
                 bag_weights: jax.Array | None = None, *, rtol=None, atol=None, t1=None, steps=None):
        """Inputs as in :meth:`embed` -> ``(logits, stats)``."""
        return self.classify(self.embed(categorical, numeric, bag_ids, bag_weights), rtol=rtol,
                             atol=atol, t1=t1, steps=steps)


def build_model(shape: ModelShape, solver: SolverSpec, data: TaskData | TabularData | LanguageData, *,
                shards: int = 1, rngs: nnx.Rngs) -> _FlowClassifier | TabularMLP | LanguageModel:
    """The model for ``data``'s kind of task; called with the split's inputs as keywords
    (``tokens=`` for sequence and language tasks, ``categorical=, numeric=`` for tabular ones)."""
    if isinstance(data, LanguageData):
        if shape.family not in LANGUAGE_FAMILIES:
            raise ValueError(f"model.family={shape.family!r} is not a language model; the text task "
                             f"trains {', '.join(LANGUAGE_FAMILIES)}")
        return LanguageModel(vocab_size=data.vocab_size, block_size=data.block_size,
                             family=shape.family, width=shape.width, heads=shape.heads,
                             layers=shape.layers, mlp_ratio=shape.mlp_ratio, form=shape.form,
                             time=shape.time, pieces=shape.pieces, basis=shape.basis,
                             solver=solver.name, steps=solver.steps, adjoint=solver.adjoint,
                             max_steps=solver.max_steps, dtype=shape.dtype, dropout=shape.dropout,
                             rngs=rngs)
    if isinstance(data, TabularData):
        if shape.family in TABULAR_FAMILIES:
            spec = EmbeddingSpec(kind=shape.embedding, dim=shape.embed_dim, compression=shape.compression,
                                 init=shape.embed_init, combiner=shape.combiner)
            return TabularMLP(shape.width, shape.layers, spec, data=data, shards=shards, rngs=rngs)
        return TabularClassifier(shape, solver, data=data, shards=shards, rngs=rngs)
    return SequenceClassifier(shape, solver, vocab_size=data.vocab_size, seq_len=data.seq_len,
                              num_classes=data.num_classes, rngs=rngs)
