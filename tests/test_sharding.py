"""Row-sharded embedding tables on 8 simulated CPU devices (see conftest.py).

Sharded and unsharded models compute the same numbers; each device holds its share of each
table; gradients and optimiser state stay sharded; no table is ever all-gathered.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from odeformer import parallel as sh
from odeformer.categorical import lookup, onehot_lookup
from odeformer.categorical.features import CategoricalFeature, TabularData
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.training import init_state, make_optimizer, make_train_step

CPUS = jax.devices("cpu")
pytestmark = pytest.mark.skipif(len(CPUS) < 8, reason="needs 8 simulated CPU devices (conftest.py)")

FEATURES = (CategoricalFeature("a", 100), CategoricalFeature("b", 37), CategoricalFeature("c", 5))


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    cat = np.stack([rng.integers(0, f.cardinality, n) for f in FEATURES], 1).astype(np.int32)
    cat[0] = [f.cardinality - 1 for f in FEATURES]  # the last row of every table
    split = {"categorical": cat, "numeric": rng.normal(size=(n, 2)).astype(np.float32),
             "label": rng.integers(0, 2, n).astype(np.int32)}
    return TabularData(split, split, FEATURES, ("x", "y"), num_classes=2)


RK4 = SolverSpec(name="rk4", steps=2)


def _model(kind, shards, solver=RK4):
    shape = ModelShape(width=16, heads=2, mlp_ratio=2, embedding=kind, compression=4)
    return build_model(shape, solver, _data(), shards=shards, rngs=nnx.Rngs(0))


def _rows(tree):
    return [x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, sh.EmbeddingRows))
            if isinstance(x, sh.EmbeddingRows)]


def _loss_and_grad(graphdef, params, split, rtol=None, atol=None):
    def loss(params):
        logits, _ = nnx.merge(graphdef, params)(categorical=split["categorical"],
                                                numeric=split["numeric"], rtol=rtol, atol=atol)
        return optax.softmax_cross_entropy_with_integer_labels(logits, split["label"]).mean()
    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("kind, mesh_shape", [
    pytest.param("table", (2, 4), marks=pytest.mark.slow),
    pytest.param("onehot", (2, 4), marks=pytest.mark.slow),
    pytest.param("hashed", (2, 4), marks=pytest.mark.slow),
    pytest.param("qr", (2, 4), marks=pytest.mark.slow),
    ("table", (1, 8)), pytest.param("table", (8, 1), marks=pytest.mark.slow)])
def test_sharded_equals_unsharded(x64, kind, mesh_shape):
    graphdef, params = nnx.split(_model(kind, shards=mesh_shape[1]))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    split = {**_data().train, "numeric": _data().train["numeric"].astype(np.float64)}
    want_loss, want_grad = _loss_and_grad(graphdef, params, split)

    mesh = sh.make_mesh(*mesh_shape, devices=CPUS[:8])
    with jax.set_mesh(mesh):
        sharded = sh.place(params, sh.state_shardings(params, mesh))
        got_loss, got_grad = _loss_and_grad(graphdef, sharded, sh.place(split, sh.batch_sharding(mesh)))
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-13)
    for got, want in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    for rows in _rows(got_grad):  # the gradient of a table is sharded like the table
        assert rows[...].sharding.spec == P(sh.MODEL, None)


@pytest.mark.slow
def test_adaptive_solver_under_a_mesh_matches(x64):
    solver = SolverSpec(name="dopri5", steps=None)
    graphdef, params = nnx.split(_model("table", shards=4, solver=solver))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    split = {**_data().train, "numeric": _data().train["numeric"].astype(np.float64)}
    want_loss, _ = _loss_and_grad(graphdef, params, split, rtol=1e-6, atol=1e-9)
    mesh = sh.make_mesh(2, 4, devices=CPUS[:8])
    with jax.set_mesh(mesh):
        sharded = sh.place(params, sh.state_shardings(params, mesh))
        got_loss, _ = _loss_and_grad(graphdef, sharded, sh.place(split, sh.batch_sharding(mesh)),
                                     rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got_loss, want_loss, rtol=1e-12)


@pytest.mark.parametrize("kind", ["table", "qr"])
def test_each_device_holds_one_eighth_of_each_table(kind):
    mesh = sh.make_mesh(1, 8, devices=CPUS[:8])
    _, params = nnx.split(_model(kind, shards=8))
    placed = sh.place(params, sh.state_shardings(params, mesh))
    for host, rows in zip(_rows(params), _rows(placed), strict=True):
        full = np.asarray(host[...])
        assert full.shape[0] % 8 == 0
        shards = sorted(rows[...].addressable_shards, key=lambda s: s.index[0].start)
        assert len({s.device for s in shards}) == 8
        for i, shard in enumerate(shards):
            block = full.shape[0] // 8
            assert shard.data.nbytes == full.nbytes // 8
            np.testing.assert_array_equal(shard.data, full[i * block:(i + 1) * block])


@pytest.mark.slow
@pytest.mark.parametrize("microbatch", [0, 8])
def test_train_step_gathers_no_table_and_keeps_state_sharded(microbatch):
    data = _data(n=64)
    model = _model("table", shards=4)
    graphdef, params = nnx.split(model)
    train = ml_collections.ConfigDict(dict(num_steps=10, warmup_steps=1, grad_clip=1.0,
                                           learning_rate=1e-2, weight_decay=1e-4, decay="all",
                                           beta2=0.999, min_lr_ratio=0.0))
    solver = ml_collections.ConfigDict(dict(rtol=1e-3, atol=1e-6, t1=1.0))
    tx = make_optimizer(train)
    key = jax.random.key(0)

    fresh = init_state(jax.tree.map(jnp.copy, params), tx, solver)  # the step donates it
    want_state, want = make_train_step(graphdef, tx, 16, microbatch=microbatch)(fresh, data.train, key)

    mesh = sh.make_mesh(2, 4, devices=CPUS[:8])
    state = init_state(params, tx, solver)
    state = sh.place(state, sh.state_shardings(state, mesh))
    split = sh.place(data.train, sh.replicated(mesh))
    with jax.set_mesh(mesh):
        step = make_train_step(graphdef, tx, 16, mesh, microbatch)
        hlo = step.lower(state, split, key).compile().as_text()
        state, got = step(state, split, key)
    assert "all-gather" not in hlo
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    rows = _rows(state)  # params, and AdamW's mu and nu
    assert len(rows) == 3 * len(FEATURES)
    for leaf in rows:
        assert leaf[...].sharding.spec == P(sh.MODEL, None)
    for got_rows, want_rows in zip(rows, _rows(want_state), strict=True):
        np.testing.assert_allclose(got_rows[...], want_rows[...], rtol=1e-4, atol=1e-6)


def test_lookup_at_shard_boundaries_and_of_a_replicated_table():
    mesh = sh.make_mesh(2, 4, devices=CPUS[:8])
    table = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)  # 10 rows per shard
    ids = np.array([0, 9, 10, 19, 20, 29, 30, 39], np.int32)
    with jax.set_mesh(mesh):
        split_rows = sh.place(table, jax.sharding.NamedSharding(mesh, P(sh.MODEL, None)))
        whole_rows = sh.place(table, sh.replicated(mesh))
        ids_on_data = sh.place(ids, sh.batch_sharding(mesh))
        for rows in (split_rows, whole_rows):
            np.testing.assert_array_equal(lookup(rows, ids_on_data), table[ids])
            np.testing.assert_array_equal(onehot_lookup(rows, ids_on_data), table[ids])


def test_mesh_errors():
    with pytest.raises(ValueError, match="mesh data=3 x model=4 must be positive and multiply to the "
                                         "number of devices given, 8"):
        sh.make_mesh(3, 4, devices=CPUS[:8])
    with pytest.raises(ValueError, match="--coordinator='localhost' must be host:port"):
        sh.join_processes("localhost", 2, 0)
    with pytest.raises(ValueError, match=r"--process_id=2 must lie in \[0, --num_processes=2\)"):
        sh.join_processes("localhost:1234", 2, 2)


def test_to_host_returns_whole_arrays_and_keeps_keys_and_other_leaves():
    mesh = sh.make_mesh(2, 4, devices=CPUS[:8])
    rows = jax.device_put(jnp.arange(32.0).reshape(8, 4), jax.sharding.NamedSharding(mesh, P(sh.MODEL)))
    key = jax.random.key(3)
    out = sh.to_host({"rows": rows, "key": key, "steps": 4, "none": None})
    assert isinstance(out["rows"], np.ndarray)
    np.testing.assert_array_equal(out["rows"], np.arange(32.0).reshape(8, 4))
    assert jnp.issubdtype(out["key"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(out["key"]), jax.random.key_data(key))
    assert out["steps"] == 4 and out["none"] is None
