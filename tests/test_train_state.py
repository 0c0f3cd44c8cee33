"""Train states created on their mesh (``odeformer.parallel.init_sharded``) on 8 simulated CPU
devices (see conftest.py): the same values as building on one device and placing, and each
device computes and holds only its eighth of a table and of the table's AdamW moments.
"""

from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from odeformer import parallel as sh
from odeformer.categorical.embeddings import FeatureEmbedding
from odeformer.categorical.features import CategoricalFeature, TabularData
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.train_state import train_state_init
from odeformer.experiment.training import make_optimizer
from odeformer.parallel.mesh import lower_init_sharded

CPUS = jax.devices("cpu")
pytestmark = pytest.mark.skipif(len(CPUS) < 8, reason="needs 8 simulated CPU devices (conftest.py)")

# Cardinalities that do not divide by 8: the tables carry padding rows.
FEATURES = (CategoricalFeature("a", 100), CategoricalFeature("b", 37), CategoricalFeature("c", 5))
TRAIN = ml_collections.ConfigDict(dict(num_steps=10, warmup_steps=1, grad_clip=1.0, learning_rate=1e-2,
                                       weight_decay=1e-4, decay="all", beta2=0.999, min_lr_ratio=0.0))
SOLVER = ml_collections.ConfigDict(dict(rtol=1e-3, atol=1e-6, t1=1.0, steps=2))


def _data(n=16):
    rng = np.random.default_rng(0)
    cat = np.stack([rng.integers(0, f.cardinality, n) for f in FEATURES], 1).astype(np.int32)
    split = {"categorical": cat, "numeric": rng.normal(size=(n, 2)).astype(np.float32),
             "label": rng.integers(0, 2, n).astype(np.int32)}
    return TabularData(split, split, FEATURES, ("x", "y"), num_classes=2)


def _tabular_init(kind, shards):
    """The runner's ``key -> (graphdef, state)`` for a small tabular model."""
    shape = ModelShape(width=16, heads=2, mlp_ratio=2, embedding=kind, compression=4)
    build = partial(build_model, shape, SolverSpec(name="rk4", steps=2), _data(), shards=shards)
    return train_state_init(build, make_optimizer(TRAIN), SOLVER, {"kinetic": 0.5})


def _leaves(tree):
    return jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]


def _rows(tree):
    return [x for _, x in _leaves(tree) if isinstance(x, sh.EmbeddingRows)]


@pytest.mark.parametrize("kind, mesh_shape", [
    ("table", (1, 8)), pytest.param("qr", (2, 4), marks=pytest.mark.slow),
    pytest.param("onehot", (1, 8), marks=pytest.mark.slow),
    pytest.param("hashed", (1, 8), marks=pytest.mark.slow)])
def test_created_state_equals_building_on_one_device_then_placing(kind, mesh_shape):
    mesh = sh.make_mesh(*mesh_shape, devices=CPUS[:8])
    init, key = _tabular_init(kind, mesh_shape[1]), jax.random.key(3)
    want_graphdef, want = jax.jit(init)(key)  # one program on one device
    want = sh.place(want, sh.state_shardings(want, mesh))
    graphdef, got = sh.init_sharded(init, key, mesh)
    _, eager = init(key)  # op by op, as models are built outside jit

    assert graphdef == want_graphdef
    got_leaves, want_leaves = _leaves(got), _leaves(want)
    assert [p for p, _ in got_leaves] == [p for p, _ in want_leaves]
    for (path, g), (_, w) in zip(got_leaves, want_leaves, strict=True):
        assert type(g) is type(w), jax.tree_util.keystr(path)
        g, w = (g[...], w[...]) if isinstance(g, nnx.Variable) else (g, w)
        assert g.sharding == w.sharding and jax.typeof(g) == jax.typeof(w), jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w), err_msg=jax.tree_util.keystr(path))
    for (path, g), (_, e) in zip(got_leaves, _leaves(eager), strict=True):
        g, e = (np.asarray(x[...] if isinstance(x, nnx.Variable) else x) for x in (g, e))
        if np.issubdtype(g.dtype, np.floating):  # one rounding of the folded scalings, not two
            np.testing.assert_array_max_ulp(g, e, maxulp=2)
        else:
            np.testing.assert_array_equal(g, e, err_msg=jax.tree_util.keystr(path))
    rows = _rows(got)  # the tables, and AdamW's mu and nu of each
    assert len(rows) == 3 * len(_rows(got["params"])) > 0
    for leaf in rows:
        assert leaf[...].sharding.spec == P(sh.MODEL, None)


def test_prng_keys_and_static_parts_pass_through():
    mesh = sh.make_mesh(1, 8, devices=CPUS[:8])

    def init(key):
        rows = sh.EmbeddingRows(jax.random.normal(key, (64, 4)))
        return {"rows": rows, "keys": (jax.random.fold_in(key, 1), jax.random.key(7, impl="rbg")),
                "graphdef": nnx.graphdef(nnx.Dict())}

    key = jax.random.key(0)
    got, want = sh.init_sharded(init, key, mesh), jax.jit(init)(key)
    assert got["graphdef"] == want["graphdef"]
    for got_key, want_key in zip(got["keys"], want["keys"], strict=True):
        assert jax.random.key_impl(got_key) == jax.random.key_impl(want_key)
        np.testing.assert_array_equal(jax.random.key_data(got_key), jax.random.key_data(want_key))
        assert got_key.sharding == sh.replicated(mesh)
    np.testing.assert_array_equal(got["rows"][...], want["rows"][...])
    assert got["rows"][...].sharding.spec == P(sh.MODEL, None)


ROWS, DIM = 1_000_000, 32


def test_each_device_computes_only_its_eighth_of_a_large_table():
    """A 1e6 x 32 float32 table ``T`` (128 MB) and its AdamW moments, the rest of the state
    a few scalars. Created on a (data=1, model=8) mesh, a device keeps ``3T/8`` and needs as
    much again while creating it: the random draw's uint32 working arrays, each the size of its
    own rows (XLA's buffers, ``memory_analysis``). Built on one device, the state alone is
    ``3T``; traced under Explicit axes, each device's working arrays would be whole tables."""
    mesh = sh.make_mesh(1, 8, devices=CPUS[:8])
    init = train_state_init(partial(FeatureEmbedding, ROWS, DIM, shards=8), make_optimizer(TRAIN), SOLVER)
    key = jax.random.key(0)
    table = ROWS * DIM * 4
    slack = 64 * 1024  # the state's scalars and the key

    def per_device(stats):
        return stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes

    sharded = lower_init_sharded(init, key, mesh).compile().memory_analysis()
    whole = jax.jit(init).lower(key).compile().memory_analysis()  # the state on one device
    assert sharded.output_size_in_bytes <= 3 * table / 8 + slack
    assert per_device(sharded) <= 2 * 3 * table / 8 + slack
    assert whole.output_size_in_bytes >= 3 * table  # the bound above fails 4 times over
    assert per_device(sharded) <= per_device(whole) / 8 + slack

    _, state = sh.init_sharded(init, key, mesh)
    rows = _rows(state)
    assert len(rows) == 3  # the table, mu, nu
    for leaf in rows:
        shards = leaf[...].addressable_shards
        assert len({s.device for s in shards}) == 8
        assert all(s.data.nbytes == table // 8 for s in shards)
    assert float(jnp.std(state["params"]["rows"][...])) == pytest.approx(DIM ** -0.5, rel=1e-2)


def test_checkpoint_restores_into_the_created_state(tmp_path):
    mesh = sh.make_mesh(2, 4, devices=CPUS[:8])
    init = _tabular_init("table", 4)
    _, saved = sh.init_sharded(init, jax.random.key(1), mesh)
    _, target = sh.init_sharded(init, jax.random.key(2), mesh)
    manager = ocp.CheckpointManager(tmp_path, options=ocp.CheckpointManagerOptions(
        enable_async_checkpointing=False))
    manager.save(4, args=ocp.args.StandardSave(saved))
    restored = manager.restore(4, args=ocp.args.StandardRestore(target))
    for (path, got), (_, want), (_, like) in zip(_leaves(restored), _leaves(saved), _leaves(target),
                                                 strict=True):
        got, want, like = (x[...] if isinstance(x, nnx.Variable) else x for x in (got, want, like))
        assert got.sharding == like.sharding, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=jax.tree_util.keystr(path))
