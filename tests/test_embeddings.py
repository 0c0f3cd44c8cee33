"""Categorical embeddings on one device: the dimension rule, each kind against an independent
NumPy implementation, stored bytes, the tokenizer's tokens by hand, neighbour precision and
ROC AUC against brute force."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from odeformer.categorical.embeddings import (
    EmbeddingSpec,
    FeatureEmbedding,
    FeatureTokenizer,
    embedding_dim,
    neighbour_precision,
)
from odeformer.categorical.features import CategoricalFeature
from odeformer.experiment.training import roc_auc


def _apply(layer, *inputs):
    """The layer's output under jit (a pure function of its state)."""
    graphdef, state = nnx.split(layer)
    return np.asarray(jax.jit(lambda s, *x: nnx.merge(graphdef, s)(*x))(state, *inputs))


def _fmix32(ids: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finaliser, written independently in NumPy uint32 arithmetic."""
    h = np.asarray(ids).astype(np.uint32)
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        h = h ^ (h >> np.uint32(16))
    return h


# --- embedding_dim ---------------------------------------------------------------------------

@pytest.mark.parametrize("cardinality, width, dim, expected", [
    (16, 512, 0, 12),          # 6 * 16 ** 0.25 = 12 exactly
    (4096, 512, 0, 48),        # 6 * 8
    (17, 512, 0, 13),          # 6 * 17 ** 0.25 = 12.2 -> rounded up
    (10 ** 6, 512, 0, 190),    # 6 * 31.62 = 189.7 -> 190
    (10 ** 6, 128, 0, 128),    # capped at the width
    (1, 512, 0, 6),            # the smallest cardinality already gives 6 > the floor of 4
    (0, 512, 0, 4),            # the floor of 4 binds only below V = 1
    (10 ** 6, 3, 0, 3),        # the width cap wins over the floor
    (16, 512, 7, 7),           # an explicit dim wins ...
    (10 ** 6, 128, 300, 300),  # ... even over the width
])
def test_embedding_dim_rule(cardinality, width, dim, expected):
    assert embedding_dim(cardinality, width, dim) == expected


def test_embedding_dim_is_the_fourth_root_rule_everywhere():
    for v in range(1, 5000):
        assert embedding_dim(v, 10 ** 6) == max(4, math.ceil(6 * v ** 0.25 - 1e-12))


# --- table and onehot ------------------------------------------------------------------------

def test_table_is_a_gather_of_its_rows(x64):
    layer = FeatureEmbedding(37, 5, kind="table", dtype=jnp.float64, rngs=nnx.Rngs(0))
    ids = np.random.default_rng(0).integers(0, 37, size=(4, 9)).astype(np.int32)
    out = _apply(layer, jnp.asarray(ids))
    rows = np.asarray(layer.rows[...])
    assert out.shape == (4, 9, 5) and out.dtype == np.float64
    np.testing.assert_array_equal(out, rows[ids])
    # Initialised like nnx.Embed: std 1/sqrt(dim) (37*5 draws: within 25% of 0.447).
    assert abs(rows.std() - 5 ** -0.5) < 0.25 * 5 ** -0.5


def test_onehot_with_the_same_rows_is_the_same_function(x64):
    v, dim = 23, 6
    table = FeatureEmbedding(v, dim, kind="table", dtype=jnp.float64, rngs=nnx.Rngs(1))
    onehot = FeatureEmbedding(v, dim, kind="onehot", dtype=jnp.float64, rngs=nnx.Rngs(2))
    assert not np.allclose(onehot.rows[...], table.rows[...])  # different init before the copy
    onehot.rows.set_value(table.rows.get_value())
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(0, v, size=50), jnp.int32)  # repeats: scatter-add matters
    np.testing.assert_allclose(_apply(onehot, ids), _apply(table, ids), rtol=0, atol=1e-12)

    target = jnp.asarray(rng.normal(size=(50, dim)))

    def rows_grad(layer):
        graphdef, state = nnx.split(layer)

        def loss(s):
            return jnp.sum(jnp.sin(nnx.merge(graphdef, s)(ids)) * target)

        return np.asarray(jax.jit(jax.grad(loss))(state)["rows"][...])

    g_table, g_onehot = rows_grad(table), rows_grad(onehot)
    np.testing.assert_allclose(g_onehot, g_table, rtol=0, atol=1e-12)
    # Independent: d/dE[r] = sum over positions with id r of cos(E[id]) * target.
    expected = np.zeros((v, dim))
    rows = np.asarray(table.rows[...])
    np.add.at(expected, np.asarray(ids), np.cos(rows[np.asarray(ids)]) * np.asarray(target))
    np.testing.assert_allclose(g_table, expected, rtol=0, atol=1e-12)
    assert np.abs(expected).max() > 0.1


def test_onehot_initialised_like_a_dense_layer_of_the_one_hot_input(x64):
    layer = FeatureEmbedding(400, 8, kind="onehot", dtype=jnp.float64, rngs=nnx.Rngs(3))
    # std 1/sqrt(V) = 0.05, not the table's 1/sqrt(dim) = 0.35 (3200 draws).
    assert abs(np.asarray(layer.rows[...]).std() - 0.05) < 0.005


# --- hashed ----------------------------------------------------------------------------------

def test_fmix32_reference_known_values():
    # Pins the independent NumPy finaliser itself: 0 is a fixed point, and fmix32(1)
    # is the widely quoted 0x514E28B7.
    np.testing.assert_array_equal(_fmix32(np.array([0, 1])), np.array([0, 0x514E28B7], np.uint32))


@pytest.mark.parametrize("cardinality, compression", [(1000, 8), (37, 4), (5, 8)])
def test_hashed_buckets_are_murmur3_fmix32_mod_buckets(x64, cardinality, compression):
    layer = FeatureEmbedding(cardinality, 4, kind="hashed", compression=compression,
                             dtype=jnp.float64, rngs=nnx.Rngs(0))
    buckets = math.ceil(cardinality / compression) + compression
    assert layer.buckets == buckets and layer.stored_rows == buckets
    ids = np.arange(cardinality, dtype=np.int32)
    bucket = (_fmix32(ids) % np.uint32(buckets)).astype(np.int64)
    rows = np.asarray(layer.rows[...])
    np.testing.assert_array_equal(_apply(layer, jnp.asarray(ids)), rows[bucket])


def test_hashed_collides_and_qr_does_not_at_equal_rows(x64):
    v, c = 1000, 8
    hashed = FeatureEmbedding(v, 4, kind="hashed", compression=c, dtype=jnp.float64,
                              rngs=nnx.Rngs(0))
    qr = FeatureEmbedding(v, 4, kind="qr", compression=c, dtype=jnp.float64, rngs=nnx.Rngs(0))
    assert hashed.stored_rows == qr.stored_rows == 133  # 125 + 8 either way
    ids = jnp.arange(v, dtype=jnp.int32)
    hashed_vectors, qr_vectors = _apply(hashed, ids), _apply(qr, ids)
    bucket = _fmix32(np.arange(v)) % np.uint32(hashed.buckets)
    # Pigeonhole: 1000 ids in 133 buckets; equal vectors exactly where buckets are equal.
    assert len(np.unique(bucket)) <= 133
    assert len(np.unique(hashed_vectors, axis=0)) == len(np.unique(bucket)) < v
    assert len(np.unique(qr_vectors, axis=0)) == v


# --- qr --------------------------------------------------------------------------------------

@pytest.mark.parametrize("cardinality, compression", [(1000, 8), (10, 6), (97, 5), (3, 8)])
def test_qr_is_product_of_quotient_and_remainder_rows(x64, cardinality, compression):
    layer = FeatureEmbedding(cardinality, 3, kind="qr", compression=compression,
                             dtype=jnp.float64, rngs=nnx.Rngs(4))
    m = math.ceil(cardinality / compression)
    quotients = math.ceil(cardinality / m)
    assert layer.remainders == m
    assert layer.stored_rows == quotients + m
    assert layer.rows[...].shape == (quotients, 3)
    assert layer.remainder_rows[...].shape == (m, 3)
    ids = np.arange(cardinality)
    eq, er = np.asarray(layer.rows[...]), np.asarray(layer.remainder_rows[...])
    out = _apply(layer, jnp.asarray(ids, jnp.int32))
    np.testing.assert_allclose(out, eq[ids // m] * er[ids % m], rtol=0, atol=1e-15)
    assert len(np.unique(out, axis=0)) == cardinality


# --- stored rows, bytes and padding ----------------------------------------------------------

@pytest.mark.parametrize("kind, stored", [
    ("table", 1000), ("onehot", 1000), ("hashed", 125 + 8), ("qr", 8 + 125)])
def test_param_bytes_and_stored_rows(kind, stored):
    # Shapes only (no arrays are drawn): bytes are arithmetic on shapes and dtypes.
    layer = nnx.eval_shape(lambda: FeatureEmbedding(1000, 12, kind=kind, compression=8,
                                                    rngs=nnx.Rngs(0)))
    assert layer.stored_rows == stored
    assert layer.param_bytes() == stored * 12 * 4


@pytest.mark.parametrize("kind, stored", [
    ("table", 10), ("onehot", 10), ("hashed", 4 + 3), ("qr", 3 + 4)])
def test_rows_padded_to_shards_but_bytes_exclude_padding(kind, stored):
    # V=10, c=3: hashed B = ceil(10/3) + 3 = 7; qr m = 4 remainders, ceil(10/4) = 3 quotients.
    plain = FeatureEmbedding(10, 5, kind=kind, compression=3, shards=1, rngs=nnx.Rngs(0))
    padded = FeatureEmbedding(10, 5, kind=kind, compression=3, shards=8, rngs=nnx.Rngs(0))
    for layer in (plain, padded):
        assert layer.stored_rows == stored
        assert layer.param_bytes() == stored * 5 * 4
    assert padded.rows[...].shape[0] == 8 * math.ceil(plain.rows[...].shape[0] / 8)
    assert padded.rows[...].shape[0] % 8 == 0 and padded.rows[...].shape[0] > plain.rows[...].shape[0]
    if kind == "qr":
        assert padded.remainder_rows[...].shape[0] == 8
        assert plain.remainder_rows[...].shape[0] == 4
    # Padded rows are never looked up: the vectors are those of the unpadded layout.
    ids = jnp.arange(10, dtype=jnp.int32)
    out = _apply(padded, ids)
    rows = np.asarray(padded.rows[...])
    if kind in ("table", "onehot"):
        np.testing.assert_allclose(out, rows[:10], rtol=1e-6, atol=1e-7)
    elif kind == "hashed":
        np.testing.assert_array_equal(out, rows[(_fmix32(np.arange(10)) % np.uint32(7)).astype(int)])
    else:
        rem = np.asarray(padded.remainder_rows[...])
        np.testing.assert_array_equal(out, rows[np.arange(10) // 4] * rem[np.arange(10) % 4])


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="embed"), "embedding kind='embed' is not one of table, onehot, hashed, qr"),
    (dict(cardinality=0), "cardinality=0, dim=4, compression=8 and shards=1 must all be >= 1"),
    (dict(dim=0), "cardinality=10, dim=0, compression=8 and shards=1 must all be >= 1"),
    (dict(compression=0, kind="qr"),
     "cardinality=10, dim=4, compression=0 and shards=1 must all be >= 1"),
    (dict(shards=0), "cardinality=10, dim=4, compression=8 and shards=0 must all be >= 1"),
])
def test_bad_arguments_raise(kwargs, message):
    args = dict(cardinality=10, dim=4) | kwargs
    with pytest.raises(ValueError, match=re.escape(message)):
        FeatureEmbedding(args.pop("cardinality"), args.pop("dim"), rngs=nnx.Rngs(0), **args)


# --- FeatureTokenizer ------------------------------------------------------------------------

FEATURES = (CategoricalFeature("airline", 16), CategoricalFeature("origin", 4096),
            CategoricalFeature("tail", 20_000))


def _as_float64(module):
    state = nnx.state(module)
    nnx.update(module, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state))


def test_tokenizer_tokens_by_hand(x64):
    width, batch, num_numeric = 32, 7, 3
    # dims: airline 12 (projected), origin 48 -> capped at 32 (no projection), tail 32.
    tok = FeatureTokenizer(FEATURES, num_numeric, width, EmbeddingSpec("table"), rngs=nnx.Rngs(0))
    assert [e.dim for e in tok.embeddings] == [12, 32, 32]
    assert tok.projections[0] is not None and tok.projections[1] is None
    _as_float64(tok)
    rng = np.random.default_rng(0)
    # Nonzero biases, so a wrong bias index shows.
    tok.categorical_bias.set_value(jnp.asarray(rng.normal(size=(3, width))))
    tok.numeric_bias.set_value(jnp.asarray(rng.normal(size=(num_numeric, width))))
    ids = np.stack([rng.integers(0, f.cardinality, batch) for f in FEATURES], 1).astype(np.int32)
    numeric = rng.normal(size=(batch, num_numeric))
    out = _apply(tok, jnp.asarray(ids), jnp.asarray(numeric))
    assert out.shape == (batch, 1 + 3 + num_numeric, width) and out.dtype == np.float64

    cls = np.asarray(tok.cls[...])
    np.testing.assert_array_equal(out[:, 0], np.broadcast_to(cls, (batch, width)))
    bias = np.asarray(tok.categorical_bias[...])
    for f, (embed, proj) in enumerate(zip(tok.embeddings, tok.projections, strict=True)):
        vectors = np.asarray(embed.rows[...])[ids[:, f]]
        if proj is not None:
            vectors = vectors @ np.asarray(proj.kernel[...])
        np.testing.assert_allclose(out[:, 1 + f], vectors + bias[f], rtol=0, atol=1e-12)
    w, b = np.asarray(tok.numeric_weight[...]), np.asarray(tok.numeric_bias[...])
    for j in range(num_numeric):
        np.testing.assert_allclose(out[:, 4 + j], numeric[:, j:j + 1] * w[j] + b[j],
                                   rtol=0, atol=1e-12)


def test_tokenizer_param_bytes_include_projection():
    width = 32
    tok = FeatureTokenizer(FEATURES, 3, width, EmbeddingSpec("table"), rngs=nnx.Rngs(0))
    assert tok.param_bytes() == {
        # 16 ids -> dim 12 < 32: 16 rows of 12 float32 plus a 12 x 32 projection kernel.
        "airline": 16 * 12 * 4 + 12 * width * 4,
        # dims capped at the width: no projection.
        "origin": 4096 * width * 4,
        "tail": 20_000 * width * 4,
    }
    explicit = FeatureTokenizer(FEATURES[:1], 0, width, EmbeddingSpec("table", dim=5),
                                rngs=nnx.Rngs(0))
    assert explicit.param_bytes() == {"airline": 16 * 5 * 4 + 5 * width * 4}


# --- neighbour_precision ---------------------------------------------------------------------

def test_neighbour_precision_of_tight_clusters_is_one():
    rng = np.random.default_rng(0)
    sizes = np.array([11, 20, 15, 30, 24])  # every cluster has >= k + 1 members
    centres = rng.normal(size=(len(sizes), 32))
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    vectors = centres[clusters] + 1e-3 * rng.normal(size=(len(clusters), 32))
    order = rng.permutation(len(clusters))
    precision, chance = neighbour_precision(vectors[order], clusters[order], k=10)
    assert precision == 1.0
    n = sizes.sum()
    assert chance == pytest.approx((sizes * (sizes - 1)).sum() / (n * (n - 1)), rel=1e-15)


def test_neighbour_precision_of_random_vectors_is_chance():
    rng = np.random.default_rng(1)
    n, k = 600, 10
    clusters = rng.choice(4, size=n, p=[0.4, 0.3, 0.2, 0.1])
    vectors = rng.normal(size=(n, 16))
    precision, chance = neighbour_precision(vectors, clusters, k=k)
    # Chance by brute force over ordered pairs i != j.
    same = clusters[:, None] == clusters[None, :]
    assert chance == pytest.approx((same.sum() - n) / (n * (n - 1)), rel=1e-12)
    standard_error = math.sqrt(chance * (1 - chance) / (n * k))
    assert abs(precision - chance) < 4 * standard_error


def test_neighbour_precision_needs_more_than_k_vectors():
    precision, chance = neighbour_precision(np.eye(10), np.zeros(10, int), k=10)
    assert math.isnan(precision) and math.isnan(chance)


# --- roc_auc ---------------------------------------------------------------------------------

def test_roc_auc_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=301)
    scores = np.round(rng.normal(size=301) + 0.7 * labels, 1)  # many ties
    assert len(np.unique(scores)) < 150
    pos, neg = scores[labels == 1], scores[labels == 0]
    diff = pos[:, None] - neg[None, :]
    expected = (diff > 0).mean() + 0.5 * (diff == 0).mean()
    assert roc_auc(labels, scores) == pytest.approx(expected, rel=1e-12)
    assert 0.6 < expected < 0.9


def test_roc_auc_limits():
    labels = np.array([0, 1, 1, 0, 1, 0, 0])
    scores = np.array([0.1, 0.9, 0.8, 0.3, 0.7, 0.2, 0.5])
    assert roc_auc(labels, scores) == 1.0
    assert roc_auc(labels, -scores) == 0.0
    assert roc_auc(labels, np.zeros(7)) == 0.5
    assert math.isnan(roc_auc(np.ones(5, int), np.arange(5.0)))
    assert math.isnan(roc_auc(np.zeros(5, int), np.arange(5.0)))
