"""The pure train step: determinism, traced learning rate, learning (float32)."""

import re
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from odeformer._compile_options import CPU_OPTIONS, compiler_options
from odeformer.experiment.models import ModelShape, SequenceClassifier, SolverSpec
from odeformer.experiment.tasks import make_task
from odeformer.experiment.training import init_state, make_eval_step, make_optimizer, make_train_step
from odeformer.language.models import LanguageModel

TASK = ml_collections.ConfigDict(dict(name="majority", seed=0, vocab_size=4, seq_len=8,
                                      num_train=512, num_test=64))
SOLVER = ml_collections.ConfigDict(dict(rtol=1e-3, atol=1e-6, t1=1.0))


RK4 = SolverSpec("rk4", 2)


def _setup(learning_rate=1e-2, num_steps=60, solver=RK4, float64=False):
    """``float64=True`` (under the x64 fixture): the whole model and state in float64."""
    train = ml_collections.ConfigDict(dict(num_steps=num_steps, warmup_steps=5, grad_clip=1.0,
                                           learning_rate=learning_rate, weight_decay=0.0, decay="all",
                                           beta2=0.999, min_lr_ratio=0.0))
    data = make_task(TASK)
    model = SequenceClassifier(ModelShape(width=16, heads=2, mlp_ratio=2), solver,
                               vocab_size=data.vocab_size, seq_len=data.seq_len,
                               num_classes=data.num_classes, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    tx = make_optimizer(train)
    state = init_state(params, tx, SOLVER)
    return data, graphdef, tx, _float64(state) if float64 else state


def _copy(tree):
    return jax.tree_util.tree_map(lambda a: a.copy(), tree)


def _float64(tree):
    """A copy of ``tree`` with every floating array in float64 (under the x64 fixture)."""
    return jax.tree_util.tree_map(
        lambda a: jnp.array(a, np.float64 if np.issubdtype(a.dtype, np.floating) else a.dtype), tree)


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


@pytest.mark.slow
@pytest.mark.parametrize("penalty", [None, "kinetic"])
def test_microbatched_step_equals_the_whole_batch_step(x64, penalty):
    data, graphdef, tx, state = _setup(float64=True)
    if penalty:
        state = {**state, "penalty": {penalty: np.float64(0.1)}}
    key = jax.random.key(3)
    want, want_metrics = _float64(state), []  # a copy: the step donates its state
    for _ in range(3):  # from step 5 the warmup has moved the parameters
        want, m = make_train_step(graphdef, tx, 32)(want, data.train, key)
        want_metrics.append(jax.device_get(m))  # the next step donates arrays it shares
    step = make_train_step(graphdef, tx, 32, microbatch=8)  # 4 chunks
    got = _float64(state)
    for m_want in want_metrics:
        got, m = step(got, data.train, key)
        m = jax.device_get(m)
        assert set(m) == set(m_want)
        for name in m:
            np.testing.assert_allclose(m[name], m_want[name], rtol=1e-12, err_msg=name)
    assert int(m["nfe"]) == 8 and m["loss"].dtype == np.float64
    # (Parameters are not compared: a gradient entry that is 0 in exact arithmetic, like the
    # key bias's under softmax, is rounding noise whose sign AdamW's first steps amplify to
    # +-learning rate. The gradients themselves are compared below.)


@pytest.mark.slow
@pytest.mark.parametrize("penalty", [None, "kinetic"])
def test_chunked_gradient_equals_the_whole_batch_gradient(x64, penalty):
    from odeformer.experiment.training import batch_gradient

    data, graphdef, _, state = _setup(float64=True)
    batch = {k: v[:32] for k, v in data.train.items()}
    weights = {penalty: np.float64(0.1)} if penalty else None
    want, want_metrics = batch_gradient(graphdef, state["params"], state["hyper"], batch, weights)
    chunked = jax.tree_util.tree_map(lambda a: a.reshape(4, 8, *a.shape[1:]), batch)
    got, metrics = batch_gradient(graphdef, state["params"], state["hyper"], chunked, weights,
                                  chunks=4)
    for name in want_metrics:
        np.testing.assert_allclose(metrics[name], want_metrics[name], rtol=1e-13, err_msg=name)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-14 * np.abs(w).max())


@pytest.mark.slow
def test_microbatched_adaptive_step_solves_each_chunk_on_its_own(x64):
    """With an adaptive solver every chunk gets its own steps: the step reports the chunk
    that took most, and its loss is the mean of the chunks' own losses."""
    import optax

    data, graphdef, tx, state = _setup(solver=SolverSpec("dopri5", None), float64=True)
    # tight enough that the chunks' step counts differ (163 to 181 evaluations)
    state["hyper"].update(rtol=np.float64(1e-8), atol=np.float64(1e-10))
    key = jax.random.key(0)
    _, metrics = make_train_step(graphdef, tx, 32, microbatch=8)(_float64(state), data.train, key)
    # the batch the step draws (see make_train_step)
    index = jax.random.randint(jax.random.fold_in(key, 0), (32,), 0, data.train["label"].shape[0])
    model = nnx.merge(graphdef, state["params"])
    losses, nfes = [], []
    for chunk in np.asarray(index).reshape(4, 8):
        logits, stats = model(data.train["tokens"][chunk], **state["hyper"])
        losses.append(optax.softmax_cross_entropy_with_integer_labels(
            logits, data.train["label"][chunk]).mean())
        nfes.append(int(stats["nfe"]))
    assert len(set(nfes)) > 1  # otherwise this test could not tell max from any chunk's count
    assert int(metrics["nfe"]) == max(nfes)
    np.testing.assert_allclose(metrics["loss"], jnp.mean(jnp.array(losses)), rtol=1e-12)


@pytest.mark.slow
def test_jacobian_noise_is_drawn_per_chunk_and_the_cross_entropy_is_unchanged(x64):
    data, graphdef, tx, state = _setup(float64=True)
    state = {**state, "penalty": {"jacobian": np.float64(0.1)}}
    key = jax.random.key(0)
    _, whole = make_train_step(graphdef, tx, 32)(_float64(state), data.train, key)
    _, chunked = make_train_step(graphdef, tx, 32, microbatch=8)(_float64(state), data.train, key)
    np.testing.assert_allclose(chunked["cross_entropy"], whole["cross_entropy"], rtol=1e-12)
    assert np.isfinite(chunked["jacobian"]) and chunked["jacobian"] != whole["jacobian"]


@pytest.mark.parametrize("microbatch, batch, shards, message", [
    (3, 32, 1, "train.microbatch=3 must divide train.batch_size=32"),
    (6, 12, 4, "train.microbatch=6 must divide train.batch_size=12 and be a multiple of mesh.data=4"),
    (-1, 32, 1, "train.microbatch=-1 must be an integer >= 0"),
    (True, 32, 1, "train.microbatch=True must be an integer >= 0"),
    (8.0, 32, 1, "train.microbatch=8.0 must be an integer >= 0"),
])
def test_bad_microbatch_is_refused_with_its_key(microbatch, batch, shards, message):
    from odeformer.experiment.training import check_microbatch

    with pytest.raises(ValueError, match=re.escape(message)):
        check_microbatch(microbatch, batch, shards)
    if shards == 1:  # the step checks with its mesh's data axis (tests/test_sharding.py)
        _, graphdef, tx, _ = _setup()
        with pytest.raises(ValueError, match=re.escape(message)):
            make_train_step(graphdef, tx, batch, microbatch=microbatch)


def test_the_state_carries_a_traced_step_count_and_refuses_a_bad_one():
    data, graphdef, tx, state = _setup()  # an RK4 model with SolverSpec steps=2
    step = make_train_step(graphdef, tx, 32)
    counts = []
    for steps in (1, 2):
        with_steps = ml_collections.ConfigDict({**SOLVER.to_dict(), "steps": steps})
        fresh = init_state(_copy(state["params"]), tx, with_steps)  # the step donates it
        assert int(fresh["hyper"]["steps"]) == steps
        counts.append(int(step(fresh, data.train, jax.random.key(0))[1]["nfe"]))
    assert counts == [4, 8] and step._cache_size() == 1
    for bad in (0, 2.5, True, None):
        with pytest.raises(ValueError, match=f"solver.steps={bad!r} must be an integer >= 1"):
            init_state(state["params"], tx, ml_collections.ConfigDict({**SOLVER.to_dict(), "steps": bad}))


def test_evaluate_counts_every_example_once_with_a_partial_last_chunk():
    import jax.numpy as jnp
    import optax

    from odeformer.experiment.training import evaluate, make_eval_step

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
    from odeformer.experiment.training import evaluate, make_eval_step

    data, graphdef, _, state = _setup()
    eval_step = make_eval_step(graphdef)
    for size in (50, 30):
        split = {k: v[:size] for k, v in data.test.items()}
        evaluate(eval_step, state["params"], state["hyper"], split, chunk=16, num_classes=data.num_classes)
    assert eval_step._cache_size() == 1


@pytest.mark.slow
def test_steps_compile_with_the_cpu_options_and_agree_with_the_default_compile():
    """The train and eval steps pass ``compiler_options`` (on CPU: ``CPU_OPTIONS``): their
    programs are those an explicit compile with the options gives, not XLA's default ones,
    and a train step agrees with the default-compiled step up to float rounding."""
    assert compiler_options() == CPU_OPTIONS == {"xla_cpu_multi_thread_eigen": False}
    gpu_mesh = types.SimpleNamespace(devices=np.array([types.SimpleNamespace(platform="gpu")]))
    assert compiler_options(gpu_mesh) is None
    data, graphdef, tx, state = _setup()
    key = jax.random.key(0)
    eval_args = (state["params"], state["hyper"], jax.tree.map(lambda a: a[:16], data.test), jnp.ones(16))
    for step, args, donate in [(make_train_step(graphdef, tx, 32), (state, data.train, key), 0),
                               (make_eval_step(graphdef), eval_args, ())]:
        ours = step.lower(*args).compile()
        default = jax.jit(step.__wrapped__, donate_argnums=donate).lower(*args).compile()
        explicit = jax.jit(step.__wrapped__, donate_argnums=donate).lower(*args).compile(
            compiler_options=CPU_OPTIONS)
        assert ours.as_text() == explicit.as_text() != default.as_text()
    ours = make_train_step(graphdef, tx, 32)
    default = jax.jit(ours.__wrapped__)
    got, metrics = ours(_copy(state), data.train, key)
    want, expected = default(_copy(state), data.train, key)
    np.testing.assert_allclose(metrics["loss"], expected["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got["params"]), jax.tree.leaves(want["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _no_callbacks(compiled_text: str) -> bool:
    return "callback" not in compiled_text


@pytest.mark.parametrize("family", ["ode_fixed", "ode_adaptive", "language_ode", "language_gpt"])
def test_train_and_eval_steps_carry_no_host_callback(family):
    """JAX's persistent compilation cache stores only programs without host callbacks: the
    default train and eval steps have none (their solver checks become ``ok``/``failure``)."""
    key = jax.random.key(0)
    if family.startswith("language"):
        model = LanguageModel(vocab_size=8, block_size=16, family=family.split("_")[1], width=16,
                              heads=2, layers=2, solver="rk4", steps=2, rngs=nnx.Rngs(0))
        graphdef, params = nnx.split(model)
        tx = make_optimizer(ml_collections.ConfigDict(dict(
            num_steps=10, warmup_steps=1, grad_clip=1.0, learning_rate=1e-3, weight_decay=0.0,
            decay="all", beta2=0.99, min_lr_ratio=0.1)))
        state = init_state(params, tx, SOLVER)
        stream = {"stream": jnp.arange(200, dtype=jnp.int32) % 8}
        train = make_train_step(graphdef, tx, 4, block_size=16).lower(state, stream, key)
        window = {"tokens": jnp.zeros((4, 16), jnp.int32), "label": jnp.zeros((4, 16), jnp.int32)}
        evaluation = make_eval_step(graphdef).lower(state["params"], state["hyper"], window,
                                                    jnp.ones((4, 16)))
    else:
        solver = RK4 if family == "ode_fixed" else SolverSpec("tsit5", None)
        data, graphdef, tx, state = _setup(solver=solver)
        train = make_train_step(graphdef, tx, 32).lower(state, data.train, key)
        chunk = jax.tree.map(lambda a: a[:16], data.test)
        evaluation = make_eval_step(graphdef).lower(state["params"], state["hyper"], chunk, jnp.ones(16))
    assert _no_callbacks(train.as_text()) and _no_callbacks(evaluation.as_text())
