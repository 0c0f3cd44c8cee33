"""Categorical features as vectors: embedding tables, the one-hot baseline, hashed and
quotient-remainder tables, and the FT-Transformer-style tokenizer of a tabular row.

Every variant maps the ids of one feature (``[0, cardinality)``, validated where data
enters) to ``dim``-vectors and stores its rows as :class:`odeformer.parallel.mesh.EmbeddingRows`,
so under a mesh with a ``model`` axis every variant is row-sharded the same way (rows padded
to a multiple of the shard count with zero rows). The layers do not check ids: that happens
where data enters (``odeformer.experiment.tasks.check_ids``), so padded rows are never looked up.

=========  ====================================================  ==========================
kind       vector of id ``i``                                     rows stored
=========  ====================================================  ==========================
table      ``E[i]``                                               ``V``
onehot     ``one_hot(i, V) @ W`` (dense ``[batch, V]`` operand)   ``V``
hashed     ``E[h(i) mod B]``, ``h`` = murmur3's 32-bit finaliser   ``B = ceil(V / c) + c``
qr         ``E_q[i // m] * E_r[i mod m]``, ``m = ceil(V / c)``     ``ceil(V/m) + m <= c + m``
=========  ====================================================  ==========================

``c`` is ``compression``; ``qr`` is Shi et al. 2020's quotient-remainder trick (multiplicative
combination). ``hashed`` stores at least as many rows as ``qr`` (equal when ``m`` divides
``V`` into ``c`` parts), so the comparison never favours ``qr`` on memory; ``qr`` gives every
id a distinct vector, ``hashed`` lets ids collide.
``table`` and ``onehot`` compute the same function of their weights (pinned by a test); they
differ in cost (``onehot`` multiplies a ``[batch, V]`` matrix) and in initialisation: the
table is initialised like ``nnx.Embed`` (std ``1/sqrt(dim)``), the one-hot kernel like the
dense layer a one-hot input feeds (``nnx.Linear``'s LeCun normal, std ``1/sqrt(V)``).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from odeformer.categorical.bags import check_combiner, pool
from odeformer.categorical.features import CategoricalFeature, TabularData
from odeformer.categorical.sharded_lookup import lookup, onehot_lookup, padded_rows
from odeformer.parallel.mesh import MODEL, EmbeddingRows, replicated

EMBEDDINGS = ("table", "onehot", "hashed", "qr")


@dataclasses.dataclass(frozen=True)
class EmbeddingSpec:
    """How categorical features become vectors (all structural).

    Attributes:
      kind: one of :data:`EMBEDDINGS`.
      dim: vector size of every feature; ``0`` applies :func:`embedding_dim`'s rule.
      compression: ``c`` of the ``hashed`` and ``qr`` kinds (about ``V / c`` rows).
      init: one of :data:`INITS`: ``"kind"``, each kind's own scale (the module docstring);
        ``"onehot"``, the one-hot kernel's std ``1/sqrt(V)`` for a ``table`` too (kinds
        ``table`` and ``onehot`` only).
      combiner: how a multi-valued feature's vectors are pooled
        (:data:`odeformer.categorical.bags.COMBINERS`).
    """

    kind: str = "table"
    dim: int = 0
    compression: int = 8
    init: str = "kind"
    combiner: str = "sum"


INITS = ("kind", "onehot")


def embedding_dim(cardinality: int, width: int, dim: int = 0) -> int:
    """``dim`` if positive, else ``min(width, max(4, ceil(6 * V ** 0.25)))``.

    The fourth-root rule of thumb (Google's feature-column guide) gives 12 for 16 values,
    48 for 4,096 and 190 for a million; a feature is projected to the model width when its
    dimension is smaller.
    """
    if dim > 0:
        return dim
    return min(width, max(4, math.ceil(6 * cardinality ** 0.25)))


def _hash(ids: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijection of uint32 that mixes every input bit."""
    h = ids.astype(jnp.uint32)
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _rows(rngs, rows: int, dim: int, std: float, shards: int, dtype) -> EmbeddingRows:
    """``rows`` random rows, then zero rows up to a multiple of ``shards``."""
    value = std * jax.random.normal(rngs.params(), (rows, dim), dtype)
    return EmbeddingRows(jnp.pad(value, ((0, padded_rows(rows, shards) - rows), (0, 0))))


class FeatureEmbedding(nnx.Module):
    """Vectors of one categorical feature's ids (see the module docstring for the kinds).

    A lookup is two halves, so that a training step can differentiate the looked-up rows
    instead of whole tables (``odeformer.categorical.sparse``): :meth:`row_ids` maps ids to
    the rows of each stored table, :meth:`combine` makes the vectors from those rows.

    Args:
      cardinality: ids lie in ``[0, cardinality)``.
      dim: vector size.
      kind: as in :class:`EmbeddingSpec`.
      compression: as in :class:`EmbeddingSpec`.
      init: as in :class:`EmbeddingSpec`.
      shards: the mesh's ``model`` size; rows are padded to a multiple of it.
    """

    def __init__(self, cardinality: int, dim: int, *, kind: str = "table", compression: int = 8,
                 init: str = "kind", shards: int = 1, dtype=jnp.float32, rngs: nnx.Rngs):
        if kind not in EMBEDDINGS:
            raise ValueError(f"embedding kind={kind!r} is not one of {', '.join(EMBEDDINGS)}")
        if init not in INITS or (init == "onehot" and kind not in ("table", "onehot")):
            raise ValueError(f"embedding init={init!r} is not one of {', '.join(INITS)} ('onehot' "
                             f"applies to kinds table and onehot, not {kind!r})")
        if cardinality < 1 or dim < 1 or compression < 1 or shards < 1:
            raise ValueError(f"cardinality={cardinality}, dim={dim}, compression={compression} and "
                             f"shards={shards} must all be >= 1")
        self.kind, self.cardinality, self.dim = kind, cardinality, dim
        if kind in ("table", "onehot"):
            std = cardinality ** -0.5 if kind == "onehot" or init == "onehot" else dim ** -0.5
            self.rows = _rows(rngs, cardinality, dim, std, shards, dtype)
        elif kind == "hashed":
            self.buckets = math.ceil(cardinality / compression) + compression
            self.rows = _rows(rngs, self.buckets, dim, dim ** -0.5, shards, dtype)
        else:  # qr: the product of two vectors of std dim**-0.25 has std dim**-0.5
            self.remainders = math.ceil(cardinality / compression)
            self.quotients = math.ceil(cardinality / self.remainders)
            self.rows = _rows(rngs, self.quotients, dim, dim ** -0.25, shards, dtype)
            self.remainder_rows = _rows(rngs, self.remainders, dim, dim ** -0.25, shards, dtype)

    def tables(self) -> tuple[EmbeddingRows, ...]:
        """The row arrays (two for ``qr``), padding included."""
        return (self.rows, self.remainder_rows) if self.kind == "qr" else (self.rows,)

    @property
    def stored_rows(self) -> int:
        """Rows the kind needs, before padding to the shard count."""
        if self.kind == "hashed":
            return self.buckets
        if self.kind == "qr":
            return self.quotients + self.remainders
        return self.cardinality

    def param_bytes(self) -> int:
        """Bytes of the rows the kind needs (padding for sharding excluded)."""
        return self.stored_rows * self.dim * self.rows.dtype.itemsize

    def row_ids(self, ids: jax.Array) -> tuple[jax.Array, ...]:
        """The row of each of :meth:`tables` that each id reads (each shaped like ``ids``)."""
        if self.kind == "hashed":
            return ((_hash(ids) % jnp.uint32(self.buckets)).astype(jnp.int32),)
        if self.kind == "qr":
            return ids // self.remainders, ids % self.remainders
        return (ids,)

    def gather(self, row_ids: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        """The rows :meth:`row_ids` named, one array ``ids.shape + (dim,)`` per table (a
        ``[batch, V]`` one-hot product for the ``onehot`` kind)."""
        take = onehot_lookup if self.kind == "onehot" else lookup
        return tuple(take(rows[...], ids) for rows, ids in zip(self.tables(), row_ids, strict=True))

    def combine(self, rows: tuple[jax.Array, ...]) -> jax.Array:
        """The vectors from the rows of :meth:`gather` (the product of the two for ``qr``)."""
        return rows[0] * rows[1] if self.kind == "qr" else rows[0]

    def __call__(self, ids: jax.Array) -> jax.Array:
        """``ids`` (int, any shape) -> vectors of shape ``ids.shape + (dim,)``."""
        return self.combine(self.gather(self.row_ids(ids)))


class FeatureTokenizer(nnx.Module):
    """A tabular row -> tokens ``[CLS, one per categorical, one per bag, one per numeric feature]``.

    Categorical feature ``f``: ``P_f e_f(id) + b_f`` (``P_f`` projects to ``width`` when
    ``e_f``'s dimension is smaller); multi-valued feature (bag) ``m``: ``P_m pool(e_m(ids),
    weights) + b_m`` with ``spec.combiner`` (``odeformer.categorical.bags``); numeric feature
    ``j``: ``x_j w_j + b_j``; ``[CLS]`` is a learned vector (Gorishniy et al. 2021,
    FT-Transformer).

    The embedding tables (:meth:`tables`) are read only through :meth:`row_ids` and
    :meth:`from_rows`, so a train step may look the rows up itself and differentiate them
    instead of the tables (``odeformer.categorical.sparse``).
    """

    def __init__(self, categorical: tuple[CategoricalFeature, ...], num_numeric: int, width: int,
                 spec: EmbeddingSpec = EmbeddingSpec(), *, bags: tuple[CategoricalFeature, ...] = (),
                 shards: int = 1, rngs: nnx.Rngs):
        check_combiner(spec.combiner)
        self.names = tuple(f.name for f in (*categorical, *bags))
        self.num_categorical, self.num_bags, self.combiner = len(categorical), len(bags), spec.combiner
        self.embeddings = nnx.List()
        self.projections = nnx.List()
        for feature in (*categorical, *bags):
            dim = embedding_dim(feature.cardinality, width, spec.dim)
            self.embeddings.append(FeatureEmbedding(
                feature.cardinality, dim, kind=spec.kind, compression=spec.compression, init=spec.init,
                shards=shards, rngs=rngs))
            self.projections.append(
                nnx.Linear(dim, width, use_bias=False, rngs=rngs) if dim != width else None)
        self.categorical_bias = nnx.Param(jnp.zeros((len(categorical) + len(bags), width)))
        scale = width ** -0.5
        self.num_numeric = num_numeric
        if num_numeric:  # no zero-size parameters: checkpointing refuses them
            self.numeric_weight = nnx.Param(
                scale * jax.random.normal(rngs.params(), (num_numeric, width)))
            self.numeric_bias = nnx.Param(jnp.zeros((num_numeric, width)))
        self.cls = nnx.Param(scale * jax.random.normal(rngs.params(), (1, width)))

    def param_bytes(self) -> dict[str, int]:
        """Feature name -> bytes of its embedding rows and projection."""
        out = {}
        for name, embed, proj in zip(self.names, self.embeddings, self.projections, strict=True):
            extra = 0 if proj is None else proj.kernel[...].nbytes
            out[name] = embed.param_bytes() + extra
        return out

    def tables(self) -> tuple[EmbeddingRows, ...]:
        """Every embedding table, features in order (two tables for a ``qr`` feature)."""
        return tuple(rows for embed in self.embeddings for rows in embed.tables())

    def _id_columns(self, categorical: jax.Array, bag_ids: jax.Array | None) -> list[jax.Array]:
        if self.num_bags and bag_ids is None:
            raise ValueError(f"the tokenizer has {self.num_bags} multi-valued features: pass bag_ids "
                             "and bag_weights")
        return ([categorical[:, f] for f in range(self.num_categorical)]
                + [bag_ids[:, m] for m in range(self.num_bags)])

    def row_ids(self, categorical: jax.Array, bag_ids: jax.Array | None = None) -> tuple[jax.Array, ...]:
        """The rows each table of :meth:`tables` reads: ``categorical`` int [B, F] and
        ``bag_ids`` int [B, M, L] -> per table ``[B]`` (a feature) or ``[B, L]`` (a bag)."""
        columns = self._id_columns(categorical, bag_ids)
        pairs = zip(self.embeddings, columns, strict=True)
        return tuple(r for embed, ids in pairs for r in embed.row_ids(ids))

    def read(self, row_ids: tuple[jax.Array, ...], bag_weights: jax.Array | None = None
             ) -> tuple[jax.Array, ...]:
        """Whether each entry of :meth:`row_ids` affects the tokens: always for a single-valued
        feature, where the weight is not 0 for a bag (padding is looked up, never used)."""
        out, start = [], 0
        for i, embed in enumerate(self.embeddings):
            count = len(embed.tables())
            for ids in row_ids[start:start + count]:
                out.append(jnp.ones(ids.shape, bool) if i < self.num_categorical
                           else bag_weights[:, i - self.num_categorical] != 0)
            start += count
        return tuple(out)

    def gather(self, row_ids: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
        """The rows :meth:`row_ids` named, one array ``ids.shape + (dim,)`` per table."""
        out, start = [], 0
        for embed in self.embeddings:
            count = len(embed.tables())
            out.extend(embed.gather(row_ids[start:start + count]))
            start += count
        return tuple(out)

    def from_rows(self, rows: tuple[jax.Array, ...], numeric: jax.Array,
                  bag_weights: jax.Array | None = None) -> jax.Array:
        """Tokens [B, 1 + F + M + G, width] from the looked-up rows of every table (as
        :meth:`gather` returns them), the numeric features [B, G] and the bags' weights [B, M, L]."""
        columns, start = [], 0
        for i, (embed, proj) in enumerate(zip(self.embeddings, self.projections, strict=True)):
            count = len(embed.tables())
            vectors = embed.combine(rows[start:start + count])
            start += count
            if i >= self.num_categorical:
                vectors = pool(vectors, bag_weights[:, i - self.num_categorical], self.combiner)
            columns.append(vectors if proj is None else proj(vectors))
        cat = jnp.stack(columns, axis=1) + self.categorical_bias[...]
        # Broadcast against a batch-shaped operand so [CLS] takes the batch's sharding.
        cls = jnp.zeros_like(cat[:, :1, :]) + self.cls[...]
        if not self.num_numeric:
            return jnp.concatenate([cls, cat], axis=1)
        num = numeric[..., None] * self.numeric_weight[...] + self.numeric_bias[...]
        return jnp.concatenate([cls.astype(num.dtype), cat.astype(num.dtype), num], axis=1)

    def __call__(self, categorical: jax.Array, numeric: jax.Array, bag_ids: jax.Array | None = None,
                 bag_weights: jax.Array | None = None) -> jax.Array:
        """``categorical`` int [B, F], ``numeric`` float [B, G] (and a bag's ``bag_ids`` int
        [B, M, L] with ``bag_weights`` [B, M, L]) -> tokens [B, 1 + F + M + G, width]."""
        return self.from_rows(self.gather(self.row_ids(categorical, bag_ids)), numeric, bag_weights)


NEIGHBOURS_K = 10  # precision@k of learned vectors
NEIGHBOURS_MIN_COUNT = 10  # ids seen fewer times in training are not scored
NEIGHBOURS_MAX_IDS = 2000  # the most frequent ids scored per feature


def neighbour_precision(vectors: np.ndarray, clusters: np.ndarray, k: int = NEIGHBOURS_K
                        ) -> tuple[float, float]:
    """Mean fraction of each vector's ``k`` nearest neighbours (cosine, itself excluded)
    that share its hidden cluster, and the same fraction for random neighbours (chance).
    """
    if len(vectors) <= k:
        return float("nan"), float("nan")
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    nearest = np.argpartition(-similarity, k, axis=1)[:, :k]
    precision = float((clusters[nearest] == clusters[:, None]).mean())
    _, sizes = np.unique(clusters, return_counts=True)
    n = len(clusters)
    chance = float(((sizes * (sizes - 1)).sum()) / (n * (n - 1)))
    return precision, chance


def tabular_report(tokenizer: FeatureTokenizer, data: TabularData, mesh) -> dict[str, float]:
    """Per-feature parameter bytes (total, and held by one device under ``mesh``) and, for
    features with hidden clusters, precision@k of the learned vectors of frequent ids."""
    shards = mesh.shape.get(MODEL, 1)
    row = {f"bytes.{name}": n for name, n in tokenizer.param_bytes().items()}
    row["embedding_bytes"] = sum(embed.param_bytes() for embed in tokenizer.embeddings)
    row["embedding_bytes_per_device"] = sum(rows[...].nbytes // shards for embed in tokenizer.embeddings
                                            for rows in embed.tables())
    for name, embed in zip(tokenizer.names, tokenizer.embeddings, strict=True):
        if name not in data.clusters:
            continue
        counts = data.train_counts[name]
        frequent = np.argsort(-counts, kind="stable")[:NEIGHBOURS_MAX_IDS]
        frequent = frequent[(counts[frequent] >= NEIGHBOURS_MIN_COUNT)
                            & (data.clusters[name][frequent] >= 0)]
        with jax.set_mesh(mesh):
            vectors = np.asarray(embed(jax.device_put(jnp.asarray(frequent, jnp.int32),
                                                      replicated(mesh))), np.float64)
        precision, chance = neighbour_precision(vectors, data.clusters[name][frequent])
        row[f"p@{NEIGHBOURS_K}.{name}"] = precision
        row[f"p@{NEIGHBOURS_K}_chance.{name}"] = chance
        row[f"scored_ids.{name}"] = len(frequent)
    return row
