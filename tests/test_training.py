"""The pure train step: determinism, traced learning rate, learning (float32)."""

import jax
import ml_collections
import numpy as np
from flax import nnx

from odeformer.models import ModelShape, SequenceClassifier, SolverSpec
from odeformer.tasks import make_task
from odeformer.training import init_state, make_optimizer, make_train_step

TASK = ml_collections.ConfigDict(dict(name="majority", seed=0, vocab_size=4, seq_len=8,
                                      num_train=512, num_test=64))
SOLVER = ml_collections.ConfigDict(dict(rtol=1e-3, atol=1e-6, t1=1.0))


def _setup(learning_rate=1e-2, num_steps=60):
    train = ml_collections.ConfigDict(dict(num_steps=num_steps, warmup_steps=5, grad_clip=1.0,
                                           learning_rate=learning_rate, weight_decay=0.0))
    data = make_task(TASK)
    model = SequenceClassifier(ModelShape(width=16, heads=2, mlp_ratio=2), SolverSpec("rk4", 2),
                               vocab_size=data.vocab_size, seq_len=data.seq_len,
                               num_classes=data.num_classes, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = make_optimizer(train)
    return data, graphdef, tx, init_state(params, tx, SOLVER)


def _copy(tree):
    return jax.tree_util.tree_map(lambda a: a.copy(), tree)


def test_step_is_pure_and_deterministic():
    data, graphdef, tx, state = _setup()
    step = make_train_step(graphdef, tx, 32)
    key = jax.random.key(1)
    a, ma = step(_copy(state), data.train, key)
    b, mb = step(_copy(state), data.train, key)
    assert float(ma["loss"]) == float(mb["loss"])
    for x, y in zip(jax.tree_util.tree_leaves(a["params"]), jax.tree_util.tree_leaves(b["params"]),
                    strict=True):
        np.testing.assert_array_equal(x, y)
    _, mc = step(_copy(state), data.train, jax.random.key(2))
    assert float(mc["loss"]) != float(ma["loss"])  # another key draws another batch
    assert int(a["step"]) == 1 and int(ma["nfe"]) == 8


def test_learning_rate_is_traced_one_compile():
    data, graphdef, tx, state = _setup(1e-2)
    _, _, tx_small, state_small = _setup(1e-4)
    step = make_train_step(graphdef, tx, 32)
    key = jax.random.key(0)
    big, small = _copy(state), _copy(state_small)
    for _ in range(3):  # the warmup schedule starts at 0: step 0 moves nothing
        big, _ = step(big, data.train, key)
        small, _ = step(small, data.train, key)
    assert step._cache_size() == 1

    def moved(new):
        return max(float(np.abs(np.asarray(n) - np.asarray(o)).max()) for n, o in zip(
            jax.tree_util.tree_leaves(new["params"]), jax.tree_util.tree_leaves(state["params"]),
            strict=True))

    assert moved(big) > 10 * moved(small) > 0


def test_training_lowers_the_loss():
    data, graphdef, tx, state = _setup(1e-2, num_steps=60)
    step = make_train_step(graphdef, tx, 64)
    key = jax.random.key(0)
    losses = []
    for _ in range(60):
        state, metrics = step(state, data.train, key)
        losses.append(float(metrics["loss"]))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])


def test_evaluate_counts_every_example_once_with_a_partial_last_chunk():
    import jax.numpy as jnp
    import optax

    from odeformer.training import evaluate, make_eval_step

    data, graphdef, _, state = _setup()
    split = {k: v[:50] for k, v in data.test.items()}  # 50 = 3 chunks of 16 + 2
    got = evaluate(make_eval_step(graphdef), state["params"], state["hyper"], split, chunk=16,
                   num_classes=data.num_classes)
    logits, _ = nnx.merge(graphdef, state["params"])(split["tokens"], **state["hyper"])
    want_loss = optax.softmax_cross_entropy_with_integer_labels(logits, split["label"]).mean()
    want_acc = jnp.mean(jnp.argmax(logits, -1) == split["label"])
    np.testing.assert_allclose(got["loss"], want_loss, rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"], want_acc, rtol=1e-6)


def test_train_and_test_splits_of_different_sizes_share_one_eval_compile():
    from odeformer.training import evaluate, make_eval_step

    data, graphdef, _, state = _setup()
    eval_step = make_eval_step(graphdef)
    for size in (50, 30):
        split = {k: v[:size] for k, v in data.test.items()}
        evaluate(eval_step, state["params"], state["hyper"], split, chunk=16, num_classes=data.num_classes)
    assert eval_step._cache_size() == 1
