"""Row-sparse embedding updates: row gradients, row-wise Adagrad and lazy Adam against dense
references, untouched rows bit for bit unchanged, and the tabular train step's sparse path
against the dense gradient, unsharded and row-sharded on 8 simulated devices (conftest.py).
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from configs import base
from odeformer import parallel as sh
from odeformer.categorical.features import CategoricalFeature, TabularData
from odeformer.categorical.sparse import SparseOptimizer, row_gradient
from odeformer.experiment import config as run_config
from odeformer.experiment import sweeps
from odeformer.experiment.keys import TRAIN as KEYS
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.sparse_training import SparseTables
from odeformer.experiment.training import (
    _loss_and_metrics,
    draw_batch,
    init_state,
    lr_shape,
    make_optimizer,
    make_train_step,
)

CPUS = jax.devices("cpu")


def _lookup_loss(w):
    def loss(rows):
        return jnp.sum(jnp.sin(rows @ w))
    return loss


def test_row_gradient_sums_duplicates_and_equals_the_dense_gradient(x64):
    table = jax.random.normal(jax.random.key(0), (30, 4))
    w = jax.random.normal(jax.random.key(1), (4, 3))
    ids = jnp.array([[7, 3, 7], [29, 0, 7]], jnp.int32)
    dense = jax.grad(lambda t: _lookup_loss(w)(t[ids]))(table)
    per_lookup = jax.grad(_lookup_loss(w))(table[ids])
    grad = row_gradient(ids, per_lookup, fill=30)
    assert grad.ids.shape == (6,) and grad.rows.shape == (6, 4)
    np.testing.assert_array_equal(grad.ids, [0, 3, 7, 29, 30, 30])  # distinct ids, then the fill
    np.testing.assert_array_equal(grad.rows[4:], 0)
    np.testing.assert_allclose(grad.rows[2], per_lookup[0, 0] + per_lookup[0, 2] + per_lookup[1, 2],
                               rtol=1e-14)
    np.testing.assert_allclose(grad.dense(30), dense, rtol=1e-13, atol=1e-15)


def _numpy_rowwise_adagrad(table, acc, grad, lr, eps):
    """The dense reference: every row, zero gradient where the batch read nothing."""
    acc = acc + np.mean(grad ** 2, axis=1)
    return table - lr * grad / (np.sqrt(acc)[:, None] + eps), acc


def _numpy_lazy_adam(table, mu, nu, grad, touched, lr, wd, count, b1=0.9, b2=0.999, eps=1e-8):
    """Dense LazyAdam: Adam with decoupled decay, moments and rows moved where ``touched``."""
    new_mu = np.where(touched[:, None], b1 * mu + (1 - b1) * grad, mu)
    new_nu = np.where(touched[:, None], b2 * nu + (1 - b2) * grad ** 2, nu)
    step = lr * (new_mu / (1 - b1 ** count) / (np.sqrt(new_nu / (1 - b2 ** count)) + eps) + wd * table)
    return np.where(touched[:, None], table - step, table), new_mu, new_nu


@pytest.mark.parametrize("name", ["rowwise_adagrad", "lazy_adam"])
def test_sparse_optimizers_against_dense_references(x64, name):
    num_rows, dim, lr, wd = 40, 5, 0.05, 0.1
    table = jax.random.normal(jax.random.key(0), (num_rows, dim))
    w = jax.random.normal(jax.random.key(1), (dim, 3))
    opt = SparseOptimizer(name)
    state = opt.init((table,))[0]
    ref = np.asarray(table)
    ref_state = ([np.zeros(num_rows)] if name == "rowwise_adagrad"
                 else [np.zeros((num_rows, dim)), np.zeros((num_rows, dim))])
    ever = np.zeros(num_rows, bool)
    rng = np.random.default_rng(0)
    update = jax.jit(opt.update)
    for count in range(1, 6):
        ids = jnp.asarray(rng.integers(0, num_rows // 2, 12), jnp.int32)  # rows >= 20 never read
        dense = np.asarray(jax.grad(lambda t, ids=ids: _lookup_loss(w)(t[ids]))(jnp.asarray(ref)))
        grad = row_gradient(ids, jax.grad(_lookup_loss(w))(table[ids]), fill=num_rows)
        table, state = update(table, state, grad, lr, wd, count)
        touched = np.zeros(num_rows, bool)
        touched[np.asarray(ids)] = True
        ever |= touched
        if name == "rowwise_adagrad":
            ref, acc = _numpy_rowwise_adagrad(ref, ref_state[0], dense, lr, 1e-8)
            ref_state = [acc]
        else:
            ref, *ref_state = _numpy_lazy_adam(ref, *ref_state, dense, touched, lr, wd, count)
        np.testing.assert_allclose(table, ref, rtol=1e-12, atol=1e-14)
    first = np.asarray(jax.random.normal(jax.random.key(0), (num_rows, dim)))
    np.testing.assert_array_equal(np.asarray(table)[~ever], first[~ever])  # bit for bit
    assert not np.any(np.asarray(table)[ever] == first[ever])
    for value in state.values():
        np.testing.assert_array_equal(np.asarray(value[...])[~ever], 0)


def test_lazy_adam_is_optax_adamw_when_every_row_is_read(x64):
    num_rows, dim = 12, 3
    table = jax.random.normal(jax.random.key(2), (num_rows, dim))
    w = jax.random.normal(jax.random.key(3), (dim, dim))
    ids = jnp.concatenate([jnp.arange(num_rows), jnp.array([4, 4, 9])]).astype(jnp.int32)
    opt, tx = SparseOptimizer("lazy_adam"), optax.adamw(0.03, weight_decay=0.2)
    state, opt_state, want = opt.init((table,))[0], tx.init(table), table
    for count in range(1, 5):
        grads = jax.grad(lambda t: _lookup_loss(w)(t[ids]))(want)
        updates, opt_state = tx.update(grads, opt_state, want)
        want = optax.apply_updates(want, updates)
        grad = row_gradient(ids, jax.grad(_lookup_loss(w))(table[ids]), fill=num_rows)
        table, state = opt.update(table, state, grad, 0.03, 0.2, count)
        np.testing.assert_allclose(table, want, rtol=1e-13, atol=1e-15)


def test_sparse_optimizer_errors():
    with pytest.raises(ValueError, match="sparse optimizer 'adam' is not one of lazy_adam, rowwise_adagrad"):
        SparseOptimizer("adam")


FEATURES = (CategoricalFeature("a", 100), CategoricalFeature("b", 37))
BAGS = (CategoricalFeature("tags", 50),)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(0, f.cardinality, n) for f in FEATURES], 1)
    split = {"categorical": ids.astype(np.int32),
             "numeric": rng.normal(size=(n, 1)).astype(np.float32),
             # Padding slots (weight 0) hold ids 20..49, never a weighted slot's.
             "bag_weights": (rng.random((n, 1, 3)) < 0.7).astype(np.float32),
             "label": rng.integers(0, 2, n).astype(np.int32)}
    split["bag_ids"] = np.where(split["bag_weights"] > 0, rng.integers(0, 20, (n, 1, 3)),
                                rng.integers(20, 50, (n, 1, 3))).astype(np.int32)
    return TabularData(split, split, FEATURES, ("x",), num_classes=2, bags=BAGS)


TRAIN = ml_collections.ConfigDict(dict(num_steps=10, warmup_steps=2, grad_clip=0.5, learning_rate=1e-2,
                                       weight_decay=1e-3, decay="all", beta2=0.999, min_lr_ratio=0.0))
SOLVER = ml_collections.ConfigDict(dict(rtol=1e-3, atol=1e-6, t1=1.0))


def _model(kind="table", shards=1):
    shape = ModelShape(width=8, heads=2, mlp_ratio=1, embedding=kind, compression=4, combiner="mean")
    return build_model(shape, SolverSpec(name="euler", steps=1), _data(), shards=shards, rngs=nnx.Rngs(0))


def _sparse(name="lazy_adam"):
    return SparseTables(SparseOptimizer(name), lr_shape(TRAIN), TRAIN.grad_clip)


@pytest.mark.parametrize("kind", ["table", "qr"])
def test_sparse_gradient_equals_the_dense_gradient(x64, kind):
    graphdef, params = nnx.split(_model(kind))
    batch = jax.tree.map(jnp.asarray, _data().train)
    inputs = {k: v for k, v in batch.items() if k != "label"}
    hyper = {"t1": 1.0}
    dense = jax.grad(lambda p: _loss_and_metrics(graphdef, p, hyper, inputs, batch["label"])[0])(params)

    (_, _), rest, rows = _sparse().gradient(lambda model, tokens: _tokens_loss(model, tokens, batch),
                                            graphdef, params, inputs)
    want_tables, want_rest = nnx.split_state(dense, sh.EmbeddingRows, ...)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14), rest, want_rest)
    tables = nnx.merge(graphdef, params).tokenizer.tables()
    want = nnx.merge(graphdef, dense).tokenizer.tables()
    assert len(rows) == len(tables) == (2 if kind == "table" else 4) + (1 if kind == "table" else 2)
    for grad, table, want_grad in zip(rows, tables, want, strict=True):
        np.testing.assert_allclose(grad.dense(table.shape[0]), want_grad[...], rtol=1e-10, atol=1e-14)
    if kind == "table":  # a bag's padding slots name no row: only the ids of weighted slots are read
        bag_ids, weights = np.asarray(batch["bag_ids"]), np.asarray(batch["bag_weights"])
        read = set(np.asarray(rows[-1].ids)) - {tables[-1].shape[0]}
        assert read == set(bag_ids[weights != 0]) != set(bag_ids.ravel())


def _tokens_loss(model, tokens, batch):
    logits, stats = model.classify(tokens, t1=1.0)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), stats


BIG = (CategoricalFeature("a", 4096), CategoricalFeature("b", 37))


def _big_data(n=32):
    rng = np.random.default_rng(1)
    split = {"categorical": np.stack([rng.integers(0, f.cardinality, n) for f in BIG], 1).astype(np.int32),
             "numeric": rng.normal(size=(n, 1)).astype(np.float32),
             "label": rng.integers(0, 2, n).astype(np.int32)}
    split["categorical"][:4, 0] = 7  # duplicate ids in one batch
    return TabularData(split, split, BIG, ("x",), num_classes=2)


def _step_setup(name, shards=1, weight_decay=0.0, warmup=0):
    train = ml_collections.ConfigDict({**TRAIN.to_dict(), "weight_decay": weight_decay,
                                       "warmup_steps": warmup})
    shape = ModelShape(width=8, heads=2, mlp_ratio=1, embedding="table", embed_dim=8)
    model = build_model(shape, SolverSpec(name="euler", steps=1), _big_data(), shards=shards,
                        rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = make_optimizer(train)
    sparse = None
    if name != "dense":
        sparse = SparseTables(SparseOptimizer(name), lr_shape(train), train.grad_clip)
    extra = None if sparse is None else sparse.init(graphdef, params, 1e-2, weight_decay)
    return graphdef, tx, sparse, init_state(params, tx, SOLVER, sparse=extra)


def _tables(graphdef, state):
    return [np.asarray(t[...]) for t in nnx.merge(graphdef, state["params"]).tokenizer.tables()]


def test_lazy_adam_step_equals_the_dense_step_on_its_first_update():
    """With no weight decay and zero moments, AdamW leaves unread rows where they are, so the
    first update of both paths must agree everywhere; unread rows stay bit for bit."""
    data, key = _big_data(), jax.random.key(3)
    results = {}
    for name in ("dense", "lazy_adam"):
        graphdef, tx, sparse, state = _step_setup(name)
        before = _tables(graphdef, state)
        step = make_train_step(graphdef, tx, 32, sparse=sparse)
        state, metrics = step(state, data.train, key)
        results[name] = (state, metrics, before, graphdef)
    (dense, dm, before, graphdef), (lazy, lm, _, _) = results["dense"], results["lazy_adam"]
    np.testing.assert_allclose(lm["loss"], dm["loss"], rtol=1e-6)
    np.testing.assert_allclose(lm["grad_norm"], dm["grad_norm"], rtol=1e-5)
    assert dm["grad_norm"] > TRAIN.grad_clip  # the clip is active: both parts are scaled
    _, dense_rest = nnx.split_state(dense["params"], sh.EmbeddingRows, ...)
    _, lazy_rest = nnx.split_state(lazy["params"], sh.EmbeddingRows, ...)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7), lazy_rest, dense_rest)
    # The rows of the batch the step draws (draw_batch with the step's key).
    ids = np.asarray(draw_batch(data.train, jax.random.fold_in(key, 0), 32)["categorical"])
    for f, (got, want, first) in enumerate(zip(_tables(graphdef, lazy), _tables(graphdef, dense), before,
                                               strict=True)):
        read = np.zeros(first.shape[0], bool)
        read[ids[:, f]] = True
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-7)
        np.testing.assert_array_equal(got[~read], first[~read])
        assert np.all(np.any(got[read] != first[read], axis=1))


def _collective_bytes(hlo: str) -> dict[str, int]:
    """The largest result (summed over a tuple's elements) of each kind of collective in a
    compiled program's HLO text."""
    sizes = {"f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "pred": 1}
    out = {}
    for line in hlo.splitlines():
        match = re.search(r"= (.*?) (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
                          r"(-start)?\(", line)
        if match:
            total = sum(sizes.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
                        for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1)))
            out[match.group(2)] = max(out.get(match.group(2), 0), total)
    return out


@pytest.mark.skipif(len(CPUS) < 8, reason="needs 8 simulated CPU devices (conftest.py)")
@pytest.mark.parametrize("name, mesh_shape", [("lazy_adam", (2, 4)), ("rowwise_adagrad", (1, 8)),
                                              ("dense", (2, 4))])
def test_sparse_step_row_sharded_equals_unsharded_and_moves_no_table(name, mesh_shape):
    """Each device updates its own rows: what crosses devices is batch-sized. The dense step
    on two data replicas all-reduces each device's share of the table gradient (the check's
    counter-example)."""
    data, key = _big_data(), jax.random.key(5)
    graphdef, tx, sparse, state = _step_setup(name, weight_decay=1e-2)
    want, want_metrics = make_train_step(graphdef, tx, 32, sparse=sparse)(state, data.train, key)

    mesh = sh.make_mesh(*mesh_shape, devices=CPUS[:8])
    graphdef, tx, sparse, state = _step_setup(name, shards=mesh_shape[1], weight_decay=1e-2)
    state = sh.place(state, sh.state_shardings(state, mesh))
    split = sh.place(data.train, sh.replicated(mesh))
    with jax.set_mesh(mesh):
        step = make_train_step(graphdef, tx, 32, mesh, sparse=sparse)
        hlo = step.lower(state, split, key).compile().as_text()
        state, metrics = step(state, split, key)
    np.testing.assert_allclose(metrics["loss"], want_metrics["loss"], rtol=1e-5)
    for got, expect in zip(_tables(graphdef, state), _tables(graphdef, want), strict=True):
        np.testing.assert_allclose(got[:expect.shape[0]], expect, rtol=1e-5, atol=1e-7)
    rows = [leaf for leaf in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, sh.EmbeddingRows))
            if isinstance(leaf, sh.EmbeddingRows)]
    assert len(rows) == 2 * {"lazy_adam": 3, "rowwise_adagrad": 2, "dense": 3}[name]  # tables, their state
    for leaf in rows:
        assert leaf[...].sharding.spec[0] == sh.MODEL
    shard_bytes = 4096 * 8 * 4 // mesh_shape[1]  # one device's share of the large table
    moved = _collective_bytes(hlo)
    assert "all-reduce" in moved, "expected the lookup's psum at least"
    if name == "dense":
        assert moved["all-reduce"] >= shard_bytes, moved
    else:
        assert max(moved.values()) < shard_bytes / 4, moved


def _tabular_config(**train):
    c = base.get_config()
    c.task = run_config.task_section("synthetic_categorical")
    c.train.update(train)
    return c


@pytest.mark.parametrize("train, model, message", [
    (dict(embedding_learning_rate=0.1), {}, "train.embedding_learning_rate=0.1 applies to a row-sparse"),
    (dict(embedding_optimizer="lazy_adam"), dict(embedding="onehot"),
     "model.embedding='onehot' multiplies every row"),
    (dict(embedding_optimizer="rowwise_adagrad", microbatch=16, batch_size=64), {},
     "takes the whole batch in one pass: train.microbatch=16 must be 0"),
    (dict(embedding_optimizer="sgd"), {}, "train.embedding_optimizer='sgd' is not one of dense, lazy_adam"),
])
def test_sparse_config_refusals(train, model, message):
    c = _tabular_config(**train)
    c.model.update(model)
    with pytest.raises(ValueError, match=re.escape(message)):
        run_config.validate_run(c)


def test_sparse_keys_are_structural_and_traced_and_reset_for_sequence_tasks():
    assert KEYS["train.embedding_optimizer"].kind == "structural"
    assert KEYS["train.embedding_learning_rate"].kind == "traced"
    c = _tabular_config()
    c.task = run_config.task_section("synthetic_categorical", "majority")
    c.sweep = ml_collections.ConfigDict(dict(task=dict(name=("synthetic_categorical", "majority")),
                                             train=dict(embedding_optimizer=("dense", "lazy_adam"))))
    runs = sweeps.expand(c)
    # Two tabular runs differ; the sequence task's two collapse into one (the key is reset there).
    assert len(runs) == 3
    sequence = [r for r in runs if r.config.task.name == "majority"]
    assert len(sequence) == 1 and "train.embedding_optimizer" in sequence[0].unread


def _tiny_sparse_sweep(**overrides):
    from configs import embeddings

    c = ml_collections.ConfigDict(embeddings.get_config("tiny").to_dict())
    c.unlock()
    c.sweep = ml_collections.ConfigDict(dict(
        model=dict(embedding=("table",)),
        train=dict(embedding_optimizer=("dense", "lazy_adam", "rowwise_adagrad"))))
    for path, value in overrides.items():
        section, key = path.split(".")
        c[section][key] = value
    return c


@pytest.mark.slow
@pytest.mark.skipif(len(CPUS) < 8, reason="needs 8 simulated CPU devices (conftest.py)")
def test_sparse_runs_train_resume_and_match_on_a_mesh(tmp_path, monkeypatch):
    from odeformer.experiment import results
    from odeformer.experiment.runner import run_sweep

    c = _tiny_sparse_sweep(**{"train.checkpoint_every": 3, "train.embedding_learning_rate": 0.0})
    single = run_sweep(c, tmp_path / "one", quiet=True).table.set_index("train.embedding_optimizer")
    assert set(single.status) == {"ok"} and not single.compile_reused.any()  # one compile each
    # The three updates train different models from the same start and batches.
    assert single.train_loss.nunique() == 3
    mesh = _tiny_sparse_sweep(**{"train.checkpoint_every": 3, "mesh.data": 2, "mesh.model": 4})
    real_append = results.append_metrics

    def crash_at_the_last_log(path, line):  # logged at steps 3 and 6, checkpointed at 3
        real_append(path, line)
        if line["step"] == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(results, "append_metrics", crash_at_the_last_log)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(mesh, tmp_path / "mesh", quiet=True)
    monkeypatch.setattr(results, "append_metrics", real_append)
    sharded = run_sweep(mesh, tmp_path / "mesh", quiet=True).table.set_index("train.embedding_optimizer")
    assert set(sharded.status) == {"ok"} and (sharded.devices == 8).all()
    assert sharded.resumed_from_step.max() == 3  # the first run resumed from its checkpoint
    for column in ("train_loss", "test_loss", "test_auc"):
        np.testing.assert_allclose(sharded[column], single.loc[sharded.index, column], rtol=5e-4, atol=1e-6)


def test_sparse_tables_from_a_config_use_the_runs_adam_and_learning_rates():
    from odeformer.experiment.sparse_training import sparse_tables

    c = _tabular_config(beta2=0.99, learning_rate=3e-3, weight_decay=0.05)
    assert sparse_tables(c.train) is None  # dense by default
    c.train.embedding_optimizer = "lazy_adam"
    tables, values = sparse_tables(c.train)
    assert tables.optimizer == SparseOptimizer("lazy_adam", b2=0.99)
    assert values == {"learning_rate": 3e-3, "weight_decay": 0.05}
    c.train.update(embedding_optimizer="rowwise_adagrad", embedding_learning_rate=0.1)
    tables, values = sparse_tables(c.train)
    assert tables.optimizer.name == "rowwise_adagrad" and values["learning_rate"] == 0.1
    assert [float(tables.schedule(s)) for s in (0, c.train.warmup_steps)] == [0.0, 1.0]


def test_decay_of_matrices_covers_the_tabular_tables_as_lazy_adam_does():
    """``train.decay = "matrices"`` decays embedding tables, so a dense AdamW and ``lazy_adam``
    (which decays the rows it updates) treat the tables alike under either setting."""
    from odeformer.experiment.training import decay_mask

    _, params = nnx.split(_model("qr"))
    leaves = jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]
    names = [({str(getattr(k, "key", getattr(k, "name", k))) for k in path}, value) for path, value in leaves]
    tables = [value for keys, value in names if keys & {"rows", "remainder_rows"}]
    assert len(tables) == 6 and all(tables)  # two qr tables per feature and per bag
    assert not any(value for keys, value in names if keys & {"bias", "scale", "categorical_bias"})
