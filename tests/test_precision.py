"""Language models' precision policy (bfloat16 compute, float32 state) and dropout."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from odeformer.experiment.config import BFLOAT16_EPS, defaults, task_section, validate_run
from odeformer.experiment.training import init_state, make_optimizer, make_train_step
from odeformer.language.models import DropoutMask, LanguageModel, layer_norm

SOLVER = ml_collections.ConfigDict(dict(rtol=1e-3, atol=1e-6, t1=1.0))
TRAIN = ml_collections.ConfigDict(dict(num_steps=40, warmup_steps=4, grad_clip=1.0, learning_rate=3e-3,
                                       weight_decay=0.1, decay="matrices", beta2=0.99, min_lr_ratio=0.1))
# A stream with structure to learn: 11 symbols.
STREAM = {"stream": jnp.asarray((np.arange(5000) * 7 + np.arange(5000) // 13) % 11, jnp.int32)}
TOKENS = STREAM["stream"][:32].reshape(2, 16)


def _model(family, dtype="float32", dropout=0.0, **kw):
    options = dict(vocab_size=11, block_size=16, family=family, width=32, heads=2, layers=2, solver="rk4",
                   steps=2)
    options.update(kw)
    return LanguageModel(dtype=dtype, dropout=dropout, rngs=nnx.Rngs(0), **options)


def _train(model, steps=40):
    graphdef, params = nnx.split(model)
    tx = make_optimizer(TRAIN)
    state = init_state(params, tx, SOLVER)
    step = make_train_step(graphdef, tx, 8, block_size=16)
    lowered = step.lower(state, STREAM, jax.random.key(0))
    losses = []
    for _ in range(steps):
        state, metrics = step(state, STREAM, jax.random.key(0))
        losses.append(float(metrics["loss"]))
    return lowered, np.array(losses), state


@pytest.mark.parametrize("family", ["gpt", "ode"])
def test_a_bfloat16_run_matches_the_float32_run_and_keeps_float32_state(family):
    """40 steps from one initialisation on one batch sequence: the losses agree within 5e-3
    at every step (measured: 4.3e-4, while the loss falls from 2.5 to about 1), and parameters,
    optimiser state and loss stay float32."""
    _, full, _ = _train(_model(family))
    lowered, half, state = _train(_model(family, "bfloat16"))
    assert full[0] - full[-1] > 1.0  # it learns: the comparison is not of two constants
    np.testing.assert_allclose(half, full, atol=5e-3)
    floats = {a.dtype for a in jax.tree.leaves((state["params"], state["opt_state"]))
              if jnp.issubdtype(a.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("family", ["gpt", "ode"])
def test_the_bfloat16_program_does_every_dot_in_bfloat16(family):
    """Forward and backward: every dot_general JAX hands to XLA takes and gives bfloat16 (on
    CPU, XLA's compiler then widens them to float32; a GPU keeps them)."""
    step_of = {dtype: _train(_model(family, dtype), steps=0)[0].as_text()
               for dtype in ("float32", "bfloat16")}
    dots = re.findall(r"stablehlo\.dot_general.*", step_of["bfloat16"])
    assert len(dots) > 10
    assert all(re.search(r"-> tensor<[0-9x]*bf16>", d) and "f32>" not in d.split(":")[-1] for d in dots)
    assert not any("bf16" in d for d in re.findall(r"stablehlo\.dot_general.*", step_of["float32"]))


def test_bfloat16_logits_are_float32_and_close_to_float32_compute():
    full, half = _model("gpt"), _model("gpt", "bfloat16")
    want, _ = full(TOKENS)
    got, _ = half(TOKENS)
    assert got.dtype == jnp.float32
    # bfloat16 keeps 8 significand bits: logits of size ~1 agree to about 1e-2.
    np.testing.assert_allclose(got, want, atol=1e-2)
    assert np.abs(np.asarray(got - want)).max() > 0  # the compute really is bfloat16


@pytest.mark.parametrize("family, form", [("gpt", "parallel"), ("rk2_gated", "parallel"), ("ode", "parallel"),
                                          ("ode", "sequential"), ("smooth", "strang")])
def test_dropout_acts_only_with_a_key_and_draws_new_masks_per_key(family, form):
    @jax.jit
    def logits(state, key=None):
        return nnx.merge(graphdef, state)(TOKENS, dropout_key=key)[0]

    graphdef, state = nnx.split(_model(family, dropout=0.3, form=form))
    plain = nnx.merge(*nnx.split(_model(family, form=form)))(TOKENS)[0]
    np.testing.assert_allclose(logits(state), plain, atol=1e-6)  # no key: no dropout (jit vs eager rounding)
    one, again, other = (logits(state, jax.random.key(k)) for k in (1, 1, 2))
    np.testing.assert_array_equal(one, again)
    assert np.abs(np.asarray(one - plain)).max() > 1e-2 and np.abs(np.asarray(one - other)).max() > 1e-2


def test_the_masks_of_a_keyed_call_are_gone_after_it():
    """A call with a key leaves nothing behind: a plain call after it drops nothing, takes another
    batch size, and the model's state holds no mask."""
    model = _model("ode", dropout=0.3)
    plain, _ = model(TOKENS)
    model(TOKENS, dropout_key=jax.random.key(0))
    np.testing.assert_array_equal(model(TOKENS)[0], plain)
    assert model(TOKENS[:1])[0].shape == (1, 16, 11)
    assert not jax.tree.leaves(nnx.state(model, DropoutMask))


def test_embedding_dropout_zeroes_that_fraction_and_rescales_the_rest():
    model = _model("gpt", dropout=0.25, block_size=512)
    tokens = jnp.arange(512) % 11
    kept = model.embed(tokens)
    dropped = model.embed(tokens, jax.random.key(0))
    zero = np.asarray(dropped == 0)
    assert abs(zero.mean() - 0.25) < 0.01
    np.testing.assert_allclose(np.asarray(dropped)[~zero], np.asarray(kept / 0.75)[~zero], rtol=1e-6)


def test_an_ode_family_keeps_one_mask_per_sub_field_across_every_evaluation(x64):
    """With a key, the ODE family integrates one fixed field: its Euler solve equals two
    hand-written Euler steps with the masks drawn once."""
    model = LanguageModel(vocab_size=11, block_size=16, family="ode", width=16, heads=2, solver="euler",
                          steps=2, dropout=0.3, rngs=nnx.Rngs(0))
    _, params = nnx.split(model)
    model = nnx.merge(*nnx.split(model))  # a fresh copy for the hand computation
    nnx.update(model, jax.tree.map(lambda a: a.astype(jnp.float64), params))
    key = jax.random.key(3)
    got, _ = model(TOKENS, dropout_key=key)
    x = model.embed(TOKENS, key)
    model._draw_masks(key, x.shape)
    field = model.flow.field
    x = x + 0.5 * field(jnp.asarray(0.0), x)
    x = x + 0.5 * field(jnp.asarray(0.5), x)
    want = layer_norm(x, model.norm_scale[...]) @ model.tokens[...].T
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_a_training_step_with_dropout_differs_from_one_without_and_is_deterministic():
    _, with_dropout, _ = _train(_model("gpt", dropout=0.2), steps=3)
    _, again, _ = _train(_model("gpt", dropout=0.2), steps=3)
    _, without, _ = _train(_model("gpt"), steps=3)
    np.testing.assert_array_equal(with_dropout, again)
    assert np.abs(with_dropout - without).max() > 1e-4


def _language_config(**model):
    c = defaults()
    c.task = task_section("text", block_size=16)
    c.model.update({"family": "gpt", **model})
    return c


@pytest.mark.parametrize("change, message", [
    (dict(model=dict(dtype="float16")), "model.dtype='float16' is not one of float32, bfloat16"),
    (dict(model=dict(dropout=1.0)), r"model.dropout=1.0 must lie in \[0, 1\)"),
    (dict(model=dict(dropout=-0.1)), "model.dropout=-0.1 must be a finite number >= 0"),
    (dict(model=dict(family="ode", dtype="bfloat16"), solver=dict(adaptive=True, name="tsit5", rtol=1e-3)),
     r"solver.rtol=0.001 is below bfloat16's epsilon \(2\^-7 = 0.0078125\)"),
])
def test_bad_precision_and_dropout_settings_are_refused(change, message):
    c = _language_config()
    for section, values in change.items():
        c[section].update(values)
    with pytest.raises(ValueError, match=message):
        validate_run(c)


def test_a_coarse_adaptive_tolerance_is_allowed_in_bfloat16_and_a_gpt_has_no_tolerance():
    c = _language_config(family="ode", dtype="bfloat16")
    c.solver.update(adaptive=True, name="tsit5", rtol=BFLOAT16_EPS)
    validate_run(c)
    c = _language_config(family="gpt", dtype="bfloat16")  # no solver: its solver keys are not read
    c.solver.update(adaptive=True, name="tsit5", rtol=1e-3)
    validate_run(c)


@pytest.mark.parametrize("key, value", [("dtype", "bfloat16"), ("dropout", 0.1)])
def test_classifiers_refuse_the_language_models_precision_and_dropout(key, value):
    c = defaults()
    c.model[key] = value
    with pytest.raises(ValueError, match=f"model.{key}={value!r} applies to language models"):
        validate_run(c)
