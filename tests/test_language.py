"""Language models: causality, gpt against an independent NumPy implementation, the split forms,
the FLOP counter against XLA's count, whole-split evaluation, bits per character, sampling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from odeformer._time_dependence import TimeParam
from odeformer.experiment.training import (
    decay_mask,
    draw_batch,
    evaluate_stream,
    make_eval_step,
    stream_windows,
)
from odeformer.language.closeness import adjacent_change, layer_weights
from odeformer.language.flops import forward_flops_per_token, nominal_nfe
from odeformer.language.models import LanguageModel, non_embedding_params
from odeformer.language.sampling import generate

VOCAB, BLOCK = 11, 12


def _model(family="gpt", form="parallel", solver="rk4", steps=2, **kw):
    kw = dict(width=16, heads=4, layers=2, mlp_ratio=4) | kw
    return LanguageModel(vocab_size=VOCAB, block_size=BLOCK, family=family, form=form, solver=solver,
                         steps=steps, rngs=nnx.Rngs(0), **kw)


CASES = [("gpt", "parallel", "rk4", 2), ("rk2_gated", "parallel", "rk4", 2), ("ode", "parallel", "rk4", 2),
         ("ode", "sequential", "midpoint", 2), ("smooth", "strang", "euler", 3),
         ("ode", "parallel", "dopri5", None)]


@pytest.mark.parametrize("family, form, solver, steps", CASES)
def test_changing_a_later_token_never_changes_an_earlier_logit(family, form, solver, steps):
    model = _model(family, form, solver, steps)
    values = dict(rtol=1e-4, atol=1e-6) if steps is None else {}
    ids = jax.random.randint(jax.random.key(1), (2, BLOCK), 0, VOCAB)
    changed = ids.at[:, 7].set((ids[:, 7] + 3) % VOCAB)
    before, stats = model(ids, **values)
    after, _ = model(changed, **values)
    assert before.shape == (2, BLOCK, VOCAB)
    np.testing.assert_array_equal(np.asarray(before[:, :7]), np.asarray(after[:, :7]))
    assert np.abs(np.asarray(before[:, 7:] - after[:, 7:])).max() > 1e-4  # the change is seen
    assert bool(stats["ok"])


# --- independent NumPy reference of nanoGPT's forward pass (float64) ----------------------------

def _ln(x, scale):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * scale


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _numpy_gpt(p, ids, heads):
    n = ids.shape[-1]
    x = p["tokens"][ids] + p["positions"][:n]
    d = x.shape[-1]
    hd = d // heads
    mask = np.tril(np.ones((n, n), bool))
    for blk in p["blocks"]:
        h = _ln(x, blk["ln1"])
        qkv = h @ blk["qkv"]
        out = np.zeros_like(x)
        for head in range(heads):
            q, k, v = (qkv[..., j * d + head * hd: j * d + (head + 1) * hd] for j in range(3))
            scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(hd)
            scores = np.where(mask, scores, -np.inf)
            w = np.exp(scores - scores.max(-1, keepdims=True))
            w /= w.sum(-1, keepdims=True)
            out[..., head * hd:(head + 1) * hd] = w @ v
        x = x + out @ blk["out"]
        x = x + _gelu(_ln(x, blk["ln2"]) @ blk["up"]) @ blk["down"]
    return _ln(x, p["final"]) @ p["tokens"].T


def _arrays(model):
    def a(param):
        return np.asarray(param.value[...][0], np.float64)

    blocks = [dict(ln1=a(b.attention.scale), qkv=a(b.attention.qkv.kernel), out=a(b.attention.out.kernel),
                   ln2=a(b.mlp.scale), up=a(b.mlp.up.kernel), down=a(b.mlp.down.kernel))
              for b in model.blocks]
    return dict(tokens=np.asarray(model.tokens[...], np.float64),
                positions=np.asarray(model.positions[...], np.float64),
                final=np.asarray(model.norm_scale[...], np.float64), blocks=blocks)


def test_gpt_equals_an_independent_numpy_implementation(x64):
    model = _model("gpt", layers=3)
    # Train-like weights: LayerNorm scales away from 1, so a missing scale would show.
    graphdef, state = nnx.split(model)
    state = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(3), v.shape, v.dtype), state)
    model = nnx.merge(graphdef, state)
    ids = np.asarray(jax.random.randint(jax.random.key(2), (2, BLOCK), 0, VOCAB))
    logits, stats = model(jnp.asarray(ids))
    np.testing.assert_allclose(np.asarray(logits), _numpy_gpt(_arrays(model), ids, heads=4),
                               rtol=1e-10, atol=1e-12)
    assert int(stats["nfe"]) == 3


def test_gpt_initialisation_follows_nanogpt():
    model = _model("gpt", width=64, layers=4)
    assert np.std(np.asarray(model.tokens[...])) == pytest.approx(0.02, rel=0.1)
    down = np.asarray(model.blocks[0].mlp.down.kernel.value[...])
    assert np.std(down) == pytest.approx(0.02 / math.sqrt(8), rel=0.1)
    np.testing.assert_array_equal(np.asarray(model.blocks[0].attention.scale.value[...]), 1.0)


def test_sequential_form_with_piecewise_euler_steps_is_the_gpt_stack(x64):
    """The GPT block is the Lie–Trotter splitting of the parallel field: with one weight set
    per step, Euler in L steps over [0, 1] is the L-layer GPT whose output projections are
    the field's divided by L (the step size)."""
    layers = 4  # a power of two: scaling by L and by 1/L is exact
    flow = LanguageModel(vocab_size=VOCAB, block_size=BLOCK, family="ode", form="sequential", width=16,
                         heads=4, time="piecewise", pieces=layers, solver="euler", steps=layers,
                         rngs=nnx.Rngs(0))
    gpt = _model("gpt", layers=layers)
    field = flow.flow.field
    for path, scale in (("attention.scale", 1), ("attention.qkv.kernel", 1), ("attention.out.kernel", layers),
                        ("mlp.scale", 1), ("mlp.up.kernel", 1), ("mlp.down.kernel", layers)):
        src = field
        for part in path.split("."):
            src = getattr(src, part)
        for k, blk in enumerate(gpt.blocks):
            dst = blk
            for part in path.split("."):
                dst = getattr(dst, part)
            src.value[...] = src.value[...].at[k].set(dst.value[...][0] * scale)
    flow.tokens[...] = gpt.tokens[...]
    flow.positions[...] = gpt.positions[...]
    ids = jax.random.randint(jax.random.key(4), (2, BLOCK), 0, VOCAB)
    expected, _ = gpt(ids)
    got, stats = flow(ids)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-10, atol=1e-12)
    assert int(stats["nfe"]) == layers
    parallel = LanguageModel(vocab_size=VOCAB, block_size=BLOCK, family="ode", width=16, heads=4,
                             time="piecewise", pieces=layers, solver="euler", steps=layers, rngs=nnx.Rngs(0))
    nnx.update(parallel, nnx.state(flow))
    assert np.abs(np.asarray(parallel(ids)[0] - expected)).max() > 1e-6  # the form matters


def test_strang_form_converges_at_second_order(x64):
    """Strang splitting with RK4 sub-steps: halving the step cuts the error about 4x (the
    splitting's order, 2), against a fine reference; Lie–Trotter only about 2x."""
    def solver(form):
        model = LanguageModel(vocab_size=VOCAB, block_size=BLOCK, family="ode", form=form, width=16,
                              heads=4, solver="rk4", steps=64, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        # Larger weights make the flow far from the identity, so the error is visible.
        state = jax.tree.map(lambda v: v * 8 if v.ndim == 3 else v, state)
        x0 = model.embed(jax.random.randint(jax.random.key(6), (1, BLOCK), 0, VOCAB)) * 20
        body = jax.jit(lambda state, steps: nnx.merge(graphdef, state).body(x0, steps=steps)[0])
        return lambda steps: np.asarray(body(state, steps))

    reference = solver("parallel")(64)
    for form, order in (("strang", 2), ("sequential", 1)):
        solve = solver(form)
        errors = [np.abs(solve(s) - reference).max() for s in (4, 8, 16)]
        rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
        assert np.all(np.abs(rates - order) < 0.35), (form, errors, rates)


# --- counted compute ----------------------------------------------------------------------------

@pytest.mark.parametrize("family, layers", [("gpt", 3), ("rk2_gated", 2)])
def test_flop_counter_matches_xla_cost_analysis(family, layers):
    """The analytic count leaves out LayerNorm, softmax and GELU: within 10% of XLA's count of
    the whole compiled forward at width 128 (matmuls dominate)."""
    model = LanguageModel(vocab_size=65, block_size=64, family=family, width=128, heads=4, layers=layers,
                          rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    ids = jnp.zeros((2, 64), jnp.int32)
    compiled = jax.jit(lambda s, i: nnx.merge(graphdef, s)(i)[0]).lower(state, ids).compile()
    cost = compiled.cost_analysis()
    xla = (cost[0] if isinstance(cost, list) else cost)["flops"] / ids.size
    counted = forward_flops_per_token(model, nominal_nfe(model))
    assert counted == pytest.approx(xla, rel=0.1)
    assert counted <= xla  # what is left out only adds


def test_flop_counter_of_a_flow_is_its_evaluations_times_one_block():
    """An ODE family's count is NFE x one block's: checked against XLA's count of one field
    evaluation (the solver loop is not unrolled, so XLA cannot count the whole solve)."""
    model = LanguageModel(vocab_size=65, block_size=64, family="ode", width=128, heads=4, solver="rk4",
                          steps=3, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model.flow.field)
    x = jnp.zeros((2, 64, 128))
    cost = jax.jit(lambda s, x: nnx.merge(graphdef, s)(0.0, x)).lower(state, x).compile().cost_analysis()
    per_evaluation = (cost[0] if isinstance(cost, list) else cost)["flops"] / (2 * 64)
    head = 2 * 128 * 65
    counted = forward_flops_per_token(model, nominal_nfe(model))
    assert nominal_nfe(model) == 12
    assert (counted - head) / 12 == pytest.approx(per_evaluation, rel=0.1)
    assert (counted - head) / 12 <= per_evaluation
    strang = LanguageModel(vocab_size=65, block_size=64, family="ode", form="strang", width=128, heads=4,
                           solver="euler", steps=3, rngs=nnx.Rngs(0))
    mlp = 2 * 2 * 4 * 128 * 128
    assert forward_flops_per_token(strang, 3) == pytest.approx(counted - 9 * (counted - head) / 12 + 3 * mlp)


def test_non_embedding_parameters_leave_out_the_tables():
    model = _model("gpt", width=16, layers=2)
    per_layer = 12 * 16 * 16 + 2 * 16  # attention 4 d^2, MLP 8 d^2, two LayerNorm scales
    assert non_embedding_params(model) == 2 * per_layer + 16


# --- data, evaluation, optimiser ------------------------------------------------------------------

@pytest.mark.parametrize("length, block", [(2, 4), (13, 4), (12, 4), (100, 7), (5, 64)])
def test_whole_split_windows_predict_every_character_but_the_first_once(length, block):
    index, weight = stream_windows(length, block)
    targets = (index + 1)[weight > 0]
    assert sorted(targets.tolist()) == list(range(1, length))
    assert weight.shape == index.shape and index.shape[1] == block


def test_bits_per_character_equal_a_hand_computation():
    model = _model("gpt")
    graphdef, state = nnx.split(model)
    stream = np.asarray(jax.random.randint(jax.random.key(8), (50,), 0, VOCAB), np.int32)
    out = evaluate_stream(make_eval_step(graphdef), state, {}, stream, BLOCK, chunk=2)
    total, count = 0.0, 0
    for start in range(0, 49, BLOCK):  # windows of at most BLOCK inputs, each predicting the next
        inputs = stream[start:min(start + BLOCK, 49)]
        logits = np.asarray(model(jnp.asarray(inputs[None]))[0][0], np.float64)
        top = logits.max(-1, keepdims=True)
        logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
        targets = stream[start + 1:start + 1 + inputs.size]
        total -= logp[np.arange(inputs.size), targets].sum()
        count += inputs.size
    assert out["predicted"] == count == 49
    assert out["loss"] == pytest.approx(total / count, rel=1e-5)
    assert out["loss"] / math.log(2) == pytest.approx(total / count / math.log(2), rel=1e-5)


def test_training_windows_are_the_next_characters():
    stream = jnp.arange(100, dtype=jnp.int32)
    batch = draw_batch({"stream": stream}, jax.random.key(0), 6, 10)
    tokens, labels = np.asarray(batch["tokens"]), np.asarray(batch["label"])
    np.testing.assert_array_equal(labels, tokens + 1)
    np.testing.assert_array_equal(np.diff(tokens, axis=1), 1)
    assert tokens.max() <= 99 - 1 and labels.max() <= 99


def test_weight_decay_applies_to_matrices_only():
    mask = decay_mask(nnx.state(_model("gpt"), nnx.Param))
    flat = {"/".join(map(str, path)): value for path, value in jax.tree_util.tree_leaves_with_path(mask)}
    decayed = {k for k, v in flat.items() if v}
    assert any("tokens" in k for k in decayed) and any("qkv" in k for k in decayed)
    assert not any("scale" in k for k in decayed), decayed
    assert len(decayed) == 2 + 2 * 4  # tables, and four kernels per layer


# --- sampling -------------------------------------------------------------------------------------

def test_sampling_is_reproducible_from_a_key_and_greedy_at_temperature_zero():
    model = _model("gpt")
    prompt = np.array([1, 2, 3])
    a = generate(model, prompt, jax.random.key(0), length=20, temperature=1.0)
    b = generate(model, prompt, jax.random.key(0), length=20, temperature=1.0)
    c = generate(model, prompt, jax.random.key(1), length=20, temperature=1.0)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (23,) and (a[:3] == prompt).all() and not np.array_equal(a, c)
    greedy = generate(model, prompt, jax.random.key(0), length=20, temperature=0.0)
    np.testing.assert_array_equal(generate(model, prompt, jax.random.key(5), length=20, top_k=1), greedy)
    # Greedy by hand, with the context cropped to the last BLOCK tokens.
    ids = list(prompt)
    forward = jax.jit(lambda ids: model(ids)[0])
    for _ in range(20):
        context = np.array(ids[-BLOCK:])
        ids.append(int(np.argmax(np.asarray(forward(jnp.asarray(context[None]))[0, -1]))))
    np.testing.assert_array_equal(greedy, ids)


@pytest.mark.parametrize("kwargs, message", [
    (dict(length=0), "length=0 must be an integer >= 1"),
    (dict(length=3, temperature=-1.0), "temperature=-1.0 must be >= 0"),
    (dict(length=3, top_k=0), r"top_k=0 must be None or an integer in \[1, 11\]"),
])
def test_sampling_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(_model("gpt"), np.array([1]), jax.random.key(0), **kwargs)
    with pytest.raises(ValueError, match=r"prompt ids must lie in \[0, 11\)"):
        generate(_model("gpt"), np.array([11]), jax.random.key(0), length=2)


def test_runs_with_one_seed_draw_the_same_windows_whatever_their_model(monkeypatch):
    """Paired comparisons: the training windows depend on the run's key only."""
    import ml_collections

    from odeformer.experiment import training

    seen = []
    draw = training.draw_batch

    def spy(data, key, batch_size, block_size=None):
        batch = draw(data, key, batch_size, block_size)
        jax.debug.callback(lambda tokens: seen.append(np.asarray(tokens)), batch["tokens"])
        return batch

    monkeypatch.setattr(training, "draw_batch", spy)
    train = ml_collections.ConfigDict(dict(num_steps=10, warmup_steps=1, grad_clip=1.0, learning_rate=1e-3,
                                           weight_decay=0.1, decay="matrices", beta2=0.99, min_lr_ratio=0.1))
    solver = ml_collections.ConfigDict(dict(rtol=1e-3, atol=1e-6, t1=1.0))
    data = {"stream": jnp.arange(200, dtype=jnp.int32) % VOCAB}
    for model in (_model("gpt"), _model("ode", solver="euler", steps=2)):
        graphdef, params = nnx.split(model)
        tx = training.make_optimizer(train)
        step = training.make_train_step(graphdef, tx, 4, block_size=BLOCK)
        state = training.init_state(params, tx, solver)
        for _ in range(2):
            state, _ = step(state, data, jax.random.key(7))
    jax.effects_barrier()
    assert len(seen) == 4
    np.testing.assert_array_equal(seen[0], seen[2])
    np.testing.assert_array_equal(seen[1], seen[3])
    assert not np.array_equal(seen[0], seen[1])  # each step draws anew


# --- closeness to a flow, from the weights --------------------------------------------------------

def _matrix_params(module):
    return [node for _, node in nnx.iter_graph(module)
            if isinstance(node, TimeParam) and node.value.ndim == 3]


def test_adjacent_change_is_the_mean_relative_change_between_consecutive_layers():
    gpt = LanguageModel(vocab_size=5, block_size=4, family="gpt", width=8, heads=2, layers=3, mlp_ratio=1,
                        rngs=nnx.Rngs(0))
    layers = [_matrix_params(block) for block in gpt.blocks]
    for k, layer in enumerate(layers):  # layer k = (1 + k) x layer 0: changes 1 and 1/2, mean 0.75
        for param, base in zip(layer, layers[0], strict=True):
            param.value[...] = (1.0 + k) * base.value[...]
    assert len(layer_weights(gpt, 3)) == 3 and len(layer_weights(gpt, 3)[0]) == len(layers[0]) == 4
    assert adjacent_change(gpt, 3) == pytest.approx(0.75, rel=1e-6)
    # Measured on updates: from a random start, update k = (1 + k) D: changes 1 and 1/2, times K = 3.
    start = LanguageModel(vocab_size=5, block_size=4, family="gpt", width=8, heads=2, layers=3, mlp_ratio=1,
                          rngs=nnx.Rngs(1))
    starts = [_matrix_params(block) for block in start.blocks]
    for k, layer in enumerate(layers):
        for param, initial, base in zip(layer, starts[k], starts[0], strict=True):
            param.value[...] = initial.value[...] + (1.0 + k) * base.value[...]
    assert adjacent_change(gpt, 3, start) == pytest.approx(3 * 0.75, rel=1e-5)
    assert adjacent_change(gpt, 3) != pytest.approx(0.75)  # the weights themselves now differ at random
    with pytest.raises(ValueError, match="a gpt model has 3 layers, not 2"):
        adjacent_change(gpt, 2)
    ode = LanguageModel(vocab_size=5, block_size=4, family="ode", width=8, heads=2, mlp_ratio=1, steps=4,
                        rngs=nnx.Rngs(0))
    assert adjacent_change(ode, 4) == 0.0 and np.isnan(adjacent_change(ode, 1))
    moved = LanguageModel(vocab_size=5, block_size=4, family="ode", width=8, heads=2, mlp_ratio=1, steps=4,
                          rngs=nnx.Rngs(0))
    for param in _matrix_params(moved.flow.field):
        param.value[...] = param.value[...] + 0.1
    assert adjacent_change(moved, 4, ode) == 0.0  # a tied block's update is the same at every step
    # Smooth weights W(t) = A + (2t - 1) B at the Euler times t = 0 and 1/2: change |B| / |A - B|.
    smooth = LanguageModel(vocab_size=5, block_size=4, family="smooth", width=8, heads=2, mlp_ratio=1,
                           steps=2, basis=2, rngs=nnx.Rngs(0))
    rng, expected = np.random.default_rng(0), []
    for param in _matrix_params(smooth.flow.field):
        a = np.asarray(param.value[0])
        b = rng.normal(size=a.shape).astype(np.float32)
        param.value[...] = jnp.stack([a, b])
        expected.append(np.linalg.norm(b) / np.linalg.norm(a - b))
    assert adjacent_change(smooth, 2) == pytest.approx(float(np.mean(expected)), rel=1e-5)
