"""Multi-valued features (bags): the combiners, and a tokenizer's bag tokens and their
gradients, against hand computations in float64 NumPy; row-sharded on 8 simulated CPU devices
(see conftest.py) the same tokens and gradients as unsharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from odeformer import parallel as sh
from odeformer.categorical.bags import COMBINERS, check_combiner, pool
from odeformer.categorical.embeddings import EmbeddingSpec, FeatureTokenizer
from odeformer.categorical.features import CategoricalFeature

CPUS = jax.devices("cpu")
_pool = jax.jit(pool, static_argnums=2)


def _bag(vectors: np.ndarray, weights: np.ndarray, combiner: str) -> np.ndarray:
    """One bag pooled by the formula, value by value: ``vectors`` [L, d], ``weights`` [L]."""
    total, norm = np.zeros(vectors.shape[-1]), 0.0
    for vector, weight in zip(vectors, weights, strict=True):
        if weight == 0:  # padding
            continue
        total += weight * vector
        norm += {"sum": 0.0, "mean": weight, "sqrtn": weight ** 2}[combiner]
    if combiner == "sum" or norm == 0:
        return total
    return total / (norm if combiner == "mean" else np.sqrt(norm))


def _weights(rng, shape, weighted: bool) -> np.ndarray:
    """Random bag weights [..., L]: row 0 of the batch empty, row 1 full, others a random count."""
    *batch, length = shape
    count = rng.integers(0, length + 1, batch)
    count.reshape(-1)[:2] = (0, length)
    drawn = rng.uniform(0.1, 2.0, shape) if weighted else np.ones(shape)
    return np.where(np.arange(length) < count[..., None], drawn, 0.0)


# --- pool ------------------------------------------------------------------------------------

@pytest.mark.parametrize("combiner", COMBINERS)
@pytest.mark.parametrize("weighted", [False, True])
def test_pool_matches_each_bag_by_hand(x64, combiner, weighted):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3, 5, 6, 4))  # two batch axes, L = 6, d = 4
    weights = _weights(rng, (3, 5, 6), weighted)
    out = np.asarray(_pool(jnp.asarray(vectors), jnp.asarray(weights), combiner))
    assert out.shape == (3, 5, 4) and out.dtype == np.float64
    for i in np.ndindex(3, 5):
        np.testing.assert_allclose(out[i], _bag(vectors[i], weights[i], combiner), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(out[0, 0], 0.0)  # an empty bag pools to zeros, not NaN


def test_pool_values_that_are_known_in_closed_form(x64):
    e = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [5.0, 5.0]])  # the last is padding
    w = np.array([1.0, 1.0, 1.0, 0.0])  # a value twice: it counts twice
    got = {c: np.asarray(_pool(jnp.asarray(e), jnp.asarray(w), c)) for c in COMBINERS}
    np.testing.assert_allclose(got["sum"], [2.0, 2.0])
    np.testing.assert_allclose(got["mean"], [2 / 3, 2 / 3])
    np.testing.assert_allclose(got["sqrtn"], [2 / np.sqrt(3), 2 / np.sqrt(3)])
    w = np.array([3.0, 0.0, 0.0, 0.0])  # one value with weight 3
    got = {c: np.asarray(_pool(jnp.asarray(e), jnp.asarray(w), c)) for c in COMBINERS}
    np.testing.assert_allclose(got["sum"], [3.0, 0.0])
    np.testing.assert_allclose(got["mean"], [1.0, 0.0])  # mean and sqrtn undo one value's weight
    np.testing.assert_allclose(got["sqrtn"], [1.0, 0.0])


@pytest.mark.parametrize("combiner", COMBINERS)
def test_padding_neither_changes_the_result_nor_receives_a_gradient(x64, combiner):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(4, 5, 3))
    weights = _weights(rng, (4, 5), weighted=True)
    other = np.where(weights[..., None] > 0, vectors, rng.normal(size=vectors.shape))
    step = jax.jit(jax.value_and_grad(lambda v: jnp.sum(jnp.sin(pool(v, jnp.asarray(weights), combiner)))))
    value, grad = step(jnp.asarray(vectors))
    other_value, _ = step(jnp.asarray(other))
    assert float(value) == float(other_value)
    np.testing.assert_array_equal(np.asarray(grad)[weights == 0], 0.0)  # empty bags too: no NaN
    assert np.isfinite(np.asarray(grad)).all()


def test_an_unknown_combiner_is_refused():
    with pytest.raises(ValueError, match="combiner='max' is not one of sum, mean, sqrtn"):
        check_combiner("max")
    with pytest.raises(ValueError, match="combiner='max' is not one of sum, mean, sqrtn"):
        FeatureTokenizer((), 0, 8, EmbeddingSpec(combiner="max"), bags=(CategoricalFeature("g", 5),),
                         rngs=nnx.Rngs(0))


# --- the tokenizer's bag tokens --------------------------------------------------------------

SINGLE = (CategoricalFeature("airline", 16),)
BAGS = (CategoricalFeature("genres", 40), CategoricalFeature("items", 5000))  # dims 16 (projected), 32
WIDTH, NUMERIC, LENGTH = 32, 2, 6


def _tokenizer(combiner: str, kind: str = "table", shards: int = 1) -> FeatureTokenizer:
    tok = FeatureTokenizer(SINGLE, NUMERIC, WIDTH, EmbeddingSpec(kind, compression=4, combiner=combiner),
                           bags=BAGS, shards=shards, rngs=nnx.Rngs(0))
    state = nnx.state(tok)
    nnx.update(tok, jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), state))
    # Nonzero biases, so a bias added to the wrong token shows.
    bias = np.random.default_rng(7).normal(size=(len(SINGLE) + len(BAGS), WIDTH))
    tok.categorical_bias.set_value(jnp.asarray(bias))
    return tok


def _inputs(batch: int = 9, seed: int = 2):
    rng = np.random.default_rng(seed)
    categorical = rng.integers(0, SINGLE[0].cardinality, (batch, 1)).astype(np.int32)
    weights = np.stack([_weights(rng, (batch, LENGTH), weighted=True) for _ in BAGS], axis=1)
    # Few distinct ids, so bags repeat ids and bags share them; in the full bag of row 1 a
    # repeat for sure and the last row of each table.
    ids = np.stack([rng.integers(0, 4, (batch, LENGTH)) * (f.cardinality // 4) for f in BAGS], axis=1)
    ids[1, :, 1] = ids[1, :, 0]
    ids[1, :, 2] = [f.cardinality - 1 for f in BAGS]
    ids = np.where(weights > 0, ids, 0).astype(np.int32)  # padding reads PAD_ID's row
    numeric = rng.normal(size=(batch, NUMERIC))
    return categorical, numeric, ids, weights


def _vectors(tok, m: int, ids: np.ndarray) -> np.ndarray:
    """Bag feature ``m``'s vectors of ``ids`` from its stored rows, by the kind's formula (``m = -1``:
    the single-valued feature)."""
    embed = tok.embeddings[len(SINGLE) + m]
    rows = np.asarray(embed.rows[...])
    if embed.kind == "qr":
        return rows[ids // embed.remainders] * np.asarray(embed.remainder_rows[...])[ids % embed.remainders]
    return rows[ids]


def _bag_tokens(tok, ids, weights, combiner) -> np.ndarray:
    """[B, M, width]: ``P_m pool(e_m(ids), weights) + b_m`` bag by bag."""
    bias = np.asarray(tok.categorical_bias[...])
    out = np.empty((ids.shape[0], len(BAGS), WIDTH))
    for m in range(len(BAGS)):
        proj = tok.projections[len(SINGLE) + m]
        for b in range(ids.shape[0]):
            pooled = _bag(_vectors(tok, m, ids[b, m]), weights[b, m], combiner)
            projected = pooled if proj is None else pooled @ np.asarray(proj.kernel[...])
            out[b, m] = projected + bias[len(SINGLE) + m]
    return out


def _tokens(tok, *inputs):
    graphdef, state = nnx.split(tok)
    return np.asarray(jax.jit(lambda s, *x: nnx.merge(graphdef, s)(*x))(state, *map(jnp.asarray, inputs)))


@pytest.mark.parametrize("combiner", COMBINERS)
@pytest.mark.parametrize("kind", ["table", "qr"])
def test_bag_tokens_by_hand(x64, combiner, kind):
    tok = _tokenizer(combiner, kind)
    assert [e.dim for e in tok.embeddings[1:]] == [16, 32] and tok.projections[1] is not None
    categorical, numeric, ids, weights = _inputs()
    out = _tokens(tok, categorical, numeric, ids, weights)
    assert out.shape == (9, 1 + 1 + 2 + NUMERIC, WIDTH) and out.dtype == np.float64
    np.testing.assert_allclose(out[:, 2:4], _bag_tokens(tok, ids, weights, combiner), rtol=1e-12, atol=1e-13)
    # Around the bags: [CLS], the single-valued feature (dim 12, projected), numeric.
    np.testing.assert_array_equal(out[:, 0], np.broadcast_to(np.asarray(tok.cls[...]), (9, WIDTH)))
    single = _vectors(tok, -1, categorical[:, 0]) @ np.asarray(tok.projections[0].kernel[...])
    np.testing.assert_allclose(out[:, 1], single + np.asarray(tok.categorical_bias[...])[0], rtol=1e-12)
    w, b = np.asarray(tok.numeric_weight[...]), np.asarray(tok.numeric_bias[...])
    np.testing.assert_allclose(out[:, 4:], numeric[..., None] * w + b, rtol=1e-15)
    # The empty bag of row 0 is its bias alone.
    np.testing.assert_allclose(out[0, 2:4], np.asarray(tok.categorical_bias[...])[1:], rtol=1e-15)


def test_bag_ids_are_required_when_the_tokenizer_has_bags():
    tok = FeatureTokenizer(SINGLE, 0, 8, bags=BAGS[:1], rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="the tokenizer has 1 multi-valued features: pass bag_ids"):
        tok(jnp.zeros((2, 1), jnp.int32), jnp.zeros((2, 0)))


@pytest.mark.parametrize("combiner", COMBINERS)
def test_table_gradient_by_hand_accumulates_repeated_ids(x64, combiner):
    """``d/dE_m[i] sum(C * token_m) = sum over the bags' occurrences of i of (w / norm) C P_m^T``."""
    tok = _tokenizer(combiner)
    categorical, numeric, ids, weights = _inputs()
    cotangent = np.random.default_rng(3).normal(size=(9, len(BAGS), WIDTH))
    graphdef, state = nnx.split(tok)

    def loss(state):
        tokens = nnx.merge(graphdef, state)(*map(jnp.asarray, (categorical, numeric, ids, weights)))
        return jnp.sum(tokens[:, 2:4] * cotangent)

    grad = jax.jit(jax.grad(loss))(state)
    for m, feature in enumerate(BAGS):
        f = len(SINGLE) + m
        proj = tok.projections[f]
        back = cotangent[:, m] if proj is None else cotangent[:, m] @ np.asarray(proj.kernel[...]).T
        want = np.zeros_like(np.asarray(tok.embeddings[f].rows[...]))
        for b in range(9):
            w = weights[b, m]
            norm = {"sum": 1.0, "mean": w.sum(), "sqrtn": np.sqrt((w ** 2).sum())}[combiner]
            for j in range(LENGTH):
                if w[j] > 0:
                    want[ids[b, m, j]] += w[j] / norm * back[b]
        np.testing.assert_allclose(np.asarray(grad["embeddings"][f]["rows"][...]), want, rtol=1e-12,
                                   atol=1e-14, err_msg=feature.name)


# --- sharded ---------------------------------------------------------------------------------

@pytest.mark.skipif(len(CPUS) < 8, reason="needs 8 simulated CPU devices (conftest.py)")
@pytest.mark.parametrize("combiner, kind, mesh_shape", [
    ("sum", "table", (2, 4)), pytest.param("mean", "table", (1, 8), marks=pytest.mark.slow),
    pytest.param("sqrtn", "table", (8, 1), marks=pytest.mark.slow),
    pytest.param("mean", "qr", (2, 4), marks=pytest.mark.slow), ("sqrtn", "onehot", (2, 4))])
def test_sharded_bag_tokens_and_gradients_equal_unsharded(x64, combiner, kind, mesh_shape):
    categorical, numeric, ids, weights = _inputs(batch=16)
    cotangent = jnp.asarray(np.random.default_rng(4).normal(size=(16, 1 + 1 + 2 + NUMERIC, WIDTH)))
    batch = {"categorical": categorical, "numeric": numeric, "bag_ids": ids, "bag_weights": weights}

    def run(tok, batch):
        graphdef, state = nnx.split(tok)

        def loss(state, batch):
            tokens = nnx.merge(graphdef, state)(**batch)
            return jnp.sum(jnp.sin(tokens) * cotangent), tokens

        if mesh is not None:
            state = sh.place(state, sh.state_shardings(state, mesh))
            batch = sh.place(batch, sh.batch_sharding(mesh))
        (_, tokens), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(state, batch)
        return tokens, grad

    mesh = None
    want_tokens, want_grad = run(_tokenizer(combiner, kind, shards=mesh_shape[1]), batch)
    mesh = sh.make_mesh(*mesh_shape, devices=CPUS[:8])
    with jax.set_mesh(mesh):
        got_tokens, got_grad = run(_tokenizer(combiner, kind, shards=mesh_shape[1]), batch)
    np.testing.assert_allclose(got_tokens, want_tokens, rtol=1e-13, atol=1e-14)
    for got, want in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    rows = [x for x in jax.tree.leaves(got_grad, is_leaf=lambda x: isinstance(x, sh.EmbeddingRows))
            if isinstance(x, sh.EmbeddingRows)]
    assert len(rows) == (6 if kind == "qr" else 3)  # qr: two tables per feature
    for leaf in rows:  # a table's gradient is sharded like the table
        assert leaf[...].sharding.spec == P(sh.MODEL, None)
