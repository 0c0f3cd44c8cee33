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
    """

    kind: str = "table"
    dim: int = 0
    compression: int = 8


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

    Args:
      cardinality: ids lie in ``[0, cardinality)``.
      dim: vector size.
      kind: as in :class:`EmbeddingSpec`.
      compression: as in :class:`EmbeddingSpec`.
      shards: the mesh's ``model`` size; rows are padded to a multiple of it.
    """

    def __init__(self, cardinality: int, dim: int, *, kind: str = "table", compression: int = 8,
                 shards: int = 1, dtype=jnp.float32, rngs: nnx.Rngs):
        if kind not in EMBEDDINGS:
            raise ValueError(f"embedding kind={kind!r} is not one of {', '.join(EMBEDDINGS)}")
        if cardinality < 1 or dim < 1 or compression < 1 or shards < 1:
            raise ValueError(f"cardinality={cardinality}, dim={dim}, compression={compression} and "
                             f"shards={shards} must all be >= 1")
        self.kind, self.cardinality, self.dim = kind, cardinality, dim
        if kind == "table":
            self.rows = _rows(rngs, cardinality, dim, dim ** -0.5, shards, dtype)
        elif kind == "onehot":
            self.rows = _rows(rngs, cardinality, dim, cardinality ** -0.5, shards, dtype)
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

    def __call__(self, ids: jax.Array) -> jax.Array:
        """``ids`` (int, any shape) -> vectors of shape ``ids.shape + (dim,)``."""
        if self.kind == "table":
            return lookup(self.rows[...], ids)
        if self.kind == "onehot":
            return onehot_lookup(self.rows[...], ids)
        if self.kind == "hashed":
            bucket = (_hash(ids) % jnp.uint32(self.buckets)).astype(jnp.int32)
            return lookup(self.rows[...], bucket)
        return (lookup(self.rows[...], ids // self.remainders)
                * lookup(self.remainder_rows[...], ids % self.remainders))


class FeatureTokenizer(nnx.Module):
    """A tabular row -> tokens ``[CLS, one per categorical, one per numeric feature]``.

    Categorical feature ``f``: ``P_f e_f(id) + b_f`` (``P_f`` projects to ``width`` when
    ``e_f``'s dimension is smaller); numeric feature ``j``: ``x_j w_j + b_j``; ``[CLS]`` is a
    learned vector (Gorishniy et al. 2021, FT-Transformer).
    """

    def __init__(self, categorical: tuple[CategoricalFeature, ...], num_numeric: int, width: int,
                 spec: EmbeddingSpec = EmbeddingSpec(), *, shards: int = 1, rngs: nnx.Rngs):
        self.names = tuple(f.name for f in categorical)
        self.embeddings = nnx.List()
        self.projections = nnx.List()
        for feature in categorical:
            dim = embedding_dim(feature.cardinality, width, spec.dim)
            self.embeddings.append(FeatureEmbedding(
                feature.cardinality, dim, kind=spec.kind, compression=spec.compression,
                shards=shards, rngs=rngs))
            self.projections.append(
                nnx.Linear(dim, width, use_bias=False, rngs=rngs) if dim != width else None)
        self.categorical_bias = nnx.Param(jnp.zeros((len(categorical), width)))
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

    def __call__(self, categorical: jax.Array, numeric: jax.Array) -> jax.Array:
        """``categorical`` int [B, F], ``numeric`` float [B, G] -> tokens [B, 1 + F + G, width]."""
        columns = []
        for f, (embed, proj) in enumerate(zip(self.embeddings, self.projections, strict=True)):
            vectors = embed(categorical[:, f])
            columns.append(vectors if proj is None else proj(vectors))
        cat = jnp.stack(columns, axis=1) + self.categorical_bias[...]
        # Broadcast against a batch-shaped operand so [CLS] takes the batch's sharding.
        cls = jnp.zeros_like(cat[:, :1, :]) + self.cls[...]
        if not self.num_numeric:
            return jnp.concatenate([cls, cat], axis=1)
        num = numeric[..., None] * self.numeric_weight[...] + self.numeric_bias[...]
        return jnp.concatenate([cls.astype(num.dtype), cat.astype(num.dtype), num], axis=1)


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
