"""Fields against independent NumPy implementations, and their structural properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import odeformer

# --- independent NumPy reference (float64, loops over heads) -------------------------


def np_layer_norm(x, scale, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def np_gelu(x):  # tanh approximation, as jax.nn.gelu's default
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def np_softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_attention(x, w_qkv, b_qkv, w_out, b_out, heads, causal):
    n, d = x.shape[-2:]
    c = d // heads
    qkv = x @ w_qkv + b_qkv
    q, k, v = qkv[..., :d], qkv[..., d:2 * d], qkv[..., 2 * d:]
    outs = []
    for h in range(heads):
        sl = slice(h * c, (h + 1) * c)
        s = q[..., sl] @ np.swapaxes(k[..., sl], -1, -2) / np.sqrt(c)
        if causal:
            s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
        outs.append(np_softmax(s) @ v[..., sl])
    return np.concatenate(outs, -1) @ w_out + b_out


def np_block(x, p, heads, causal):
    """Parallel pre-LN transformer layer update F(x) = MHA(LN1 x) + MLP(LN2 x)."""
    a = np_attention(np_layer_norm(x, p["ln1_s"], p["ln1_b"]), p["qkv_w"], p["qkv_b"],
                     p["out_w"], p["out_b"], heads, causal)
    h = np_layer_norm(x, p["ln2_s"], p["ln2_b"])
    m = np_gelu(h @ p["up_w"] + p["up_b"]) @ p["down_w"] + p["down_b"]
    return a + m


def layer_params(field, k):
    """Weights of piece/layer k, read from the module as plain NumPy arrays."""
    def at(param):
        return np.asarray(param.value[...][k], np.float64)

    att = field.attention
    return {
        "ln1_s": at(att.norm.scale), "ln1_b": at(att.norm.bias),
        "qkv_w": at(att.attention.qkv.kernel), "qkv_b": at(att.attention.qkv.bias),
        "out_w": at(att.attention.out.kernel), "out_b": at(att.attention.out.bias),
        "ln2_s": at(field.mlp_norm.scale), "ln2_b": at(field.mlp_norm.bias),
        "up_w": at(field.mlp.up.kernel), "up_b": at(field.mlp.up.bias),
        "down_w": at(field.mlp.down.kernel), "down_b": at(field.mlp.down.bias),
    }


def _f64(module):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), module)


# --- piecewise field == discrete K-layer transformer --------------------------------

@pytest.mark.parametrize("layers", [1, 4, 5])
@pytest.mark.parametrize("causal", [False, True])
def test_piecewise_euler_is_a_k_layer_transformer(x64, layers, causal):
    time = odeformer.TimeSpec(mode="piecewise", pieces=layers, horizon=1.0)
    field = _f64(odeformer.TransformerBlockField(16, 4, mlp_ratio=2, causal=causal, time=time,
                                                 rngs=nnx.Rngs(3)))
    # Random biases and norms, so every parameter matters in the comparison.
    graphdef, state = nnx.split(field)
    keys = iter(jax.random.split(jax.random.key(4), 64))
    state = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(next(keys), a.shape, a.dtype), state)
    field = nnx.merge(graphdef, state)
    x0 = np.asarray(jax.random.normal(jax.random.key(5), (2, 6, 16), jnp.float64))

    f, state = odeformer.vector_field(field)
    ode = odeformer.solve(f, jnp.asarray(x0), args=state, solver="euler", steps=layers)

    x, h = x0, 1.0 / layers
    for k in range(layers):
        x = x + h * np_block(x, layer_params(field, k), heads=4, causal=causal)
    np.testing.assert_allclose(np.asarray(ode.y1), x, rtol=1e-12, atol=1e-12)


def test_piecewise_pieces_are_distinct_layers(x64):
    """Guard for the test above: using one piece for every layer gives another answer."""
    time = odeformer.TimeSpec(mode="piecewise", pieces=4)
    field = _f64(odeformer.TransformerBlockField(16, 4, time=time, rngs=nnx.Rngs(3)))
    x0 = np.asarray(jax.random.normal(jax.random.key(5), (6, 16), jnp.float64))
    f, state = odeformer.vector_field(field)
    ode = odeformer.solve(f, jnp.asarray(x0), args=state, solver="euler", steps=4)
    x = x0
    for _ in range(4):
        x = x + 0.25 * np_block(x, layer_params(field, 0), heads=4, causal=False)
    assert np.abs(np.asarray(ode.y1) - x).max() > 1e-3


# --- single fields against the reference --------------------------------------------

def test_attention_field_matches_reference(x64):
    field = _f64(odeformer.AttentionField(12, 3, causal=True, rngs=nnx.Rngs(0)))
    x = np.asarray(jax.random.normal(jax.random.key(1), (3, 5, 12), jnp.float64))
    p = layer_params_attention(field)
    want = np_attention(np_layer_norm(x, p["s"], p["b"]), *p["mha"], heads=3, causal=True)
    np.testing.assert_allclose(field(jnp.zeros(()), jnp.asarray(x)), want, rtol=1e-12, atol=1e-12)


def layer_params_attention(field):
    def at(param):
        return np.asarray(param.value[...][0])
    mha = field.attention
    return {"s": at(field.norm.scale), "b": at(field.norm.bias),
            "mha": (at(mha.qkv.kernel), at(mha.qkv.bias), at(mha.out.kernel), at(mha.out.bias))}


def test_causal_attention_ignores_the_future(x64):
    field = _f64(odeformer.TransformerBlockField(8, 2, causal=True, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (6, 8), jnp.float64)
    moved = x.at[4:].set(jax.random.normal(jax.random.key(2), (2, 8), jnp.float64))
    out, out_moved = field(0.0, x), field(0.0, moved)
    np.testing.assert_allclose(out[:4], out_moved[:4], rtol=1e-13, atol=1e-13)
    assert np.abs(out[4:] - out_moved[4:]).max() > 1e-2


@pytest.mark.parametrize("sigma", list(odeformer.SIGMAS))
def test_seed_field_is_the_written_equation(x64, sigma):
    field = _f64(odeformer.SeedAttentionField(6, sigma=sigma, rngs=nnx.Rngs(0)))
    x = np.asarray(jax.random.normal(jax.random.key(2), (2, 5, 6), jnp.float64))
    wq, wk, wv = (np.asarray(lin.kernel.value[...][0]) for lin in (field.query, field.key, field.value))
    q, k, v = x @ wq, x @ wk, x @ wv
    kt = np.swapaxes(k, -1, -2)
    if sigma == "softmax":
        want = np_softmax(q @ kt) @ v - x
    else:
        act = {"identity": lambda u: u, "tanh": np.tanh, "relu": lambda u: np.maximum(u, 0),
               "sigmoid": lambda u: 1 / (1 + np.exp(-u))}[sigma]
        want = act(q) @ kt @ act(v) - x
    np.testing.assert_allclose(field(0.0, jnp.asarray(x)), want, rtol=1e-12, atol=1e-12)


def test_unknown_sigma_and_bad_heads_raise():
    with pytest.raises(ValueError, match="sigma='gelu' is not one of softmax, identity"):
        odeformer.SeedAttentionField(4, sigma="gelu", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="features=10 must be divisible by heads=4"):
        odeformer.AttentionField(10, 4, rngs=nnx.Rngs(0))


# --- attend: einsums, or jax.nn.dot_product_attention (XLA's or cuDNN's) ------------------

def qkv_inputs(lead, dtype=jnp.float32, n=7, heads=2, head_dim=8, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(key, (*lead, n, heads, head_dim), dtype) for key in keys)


LEADS = [(), (3,), (2, 3)]
attend = odeformer._fields.attend


@pytest.mark.parametrize("lead", LEADS)
@pytest.mark.parametrize("causal", [False, True])
def test_attend_xla_matches_einsum_path(lead, causal):
    q, k, v = qkv_inputs(lead)
    got = attend(q, k, v, causal=causal, implementation="xla")
    assert got.shape == q.shape and got.dtype == jnp.float32
    # Measured on XLA:CPU: forward bit-equal, gradients within 2e-6 of entries up to ~10.
    np.testing.assert_allclose(got, attend(q, k, v, causal=causal, implementation="einsum"),
                               rtol=1e-5, atol=1e-6)

    def loss(implementation):
        return lambda *qkv: jnp.sum(jnp.sin(attend(*qkv, causal=causal, implementation=implementation)))

    grads = jax.grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(loss("einsum"), argnums=(0, 1, 2))(q, k, v)
    for g, w in zip(grads, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_attend_float64_takes_the_einsum_path_and_refuses_the_float32_ones(x64, causal):
    q, k, v = qkv_inputs((2,), jnp.float64)
    got = attend(q, k, v, causal=causal)
    assert got.dtype == jnp.float64
    np.testing.assert_array_equal(got, odeformer._fields._attend_einsum(q, k, v, causal=causal))
    # Why: dot_product_attention's float32 softmax would cost float64 its accuracy.
    fused = jax.nn.dot_product_attention(q, k, v, is_causal=causal)
    assert np.abs(np.asarray(fused - got)).max() > 1e-10
    for implementation in ("xla", "cudnn"):
        with pytest.raises(ValueError, match="float64 inputs need implementation='einsum'"):
            attend(q, k, v, implementation=implementation)


@pytest.mark.parametrize("backend, dtype, chosen", [
    ("cpu", jnp.float32, "einsum"), ("cpu", jnp.bfloat16, "einsum"), ("cpu", jnp.float64, "einsum"),
    ("gpu", jnp.float32, "xla"), ("gpu", jnp.bfloat16, "cudnn"), ("gpu", jnp.float16, "cudnn"),
    ("gpu", jnp.float64, "einsum"), ("tpu", jnp.bfloat16, "xla")])
def test_attend_chooses_its_implementation_by_platform_and_dtype(x64, monkeypatch, backend, dtype, chosen):
    """The platform branch with a faked backend: what reaches dot_product_attention is recorded,
    not run (cuDNN needs a GPU). A head dimension cuDNN does not take (12, 192) gets XLA's."""
    calls = []
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    monkeypatch.setattr(jax.nn, "dot_product_attention",
                        lambda q, *a, implementation=None, **kw: calls.append(implementation) or q)
    attend(*qkv_inputs((), dtype))
    assert calls == ([] if chosen == "einsum" else [chosen])
    calls.clear()
    for head_dim in (12, 192):
        attend(*qkv_inputs((), dtype, head_dim=head_dim))
    assert calls == ([] if chosen == "einsum" else 2 * ["xla" if chosen == "cudnn" else chosen])


def test_attend_takes_xla_on_a_gpu_without_cudnn(monkeypatch):
    """ROCm's GPUs have no cuDNN: bfloat16 gets XLA's implementation there."""
    calls = []
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(odeformer._fields, "_nvidia", lambda: False)
    monkeypatch.setattr(jax.nn, "dot_product_attention",
                        lambda q, *a, implementation=None, **kw: calls.append(implementation) or q)
    attend(*qkv_inputs((), jnp.bfloat16))
    assert calls == ["xla"]


def test_attend_refuses_an_unknown_implementation_and_mixed_dtypes():
    q, k, v = qkv_inputs(())
    with pytest.raises(ValueError, match="implementation='flash' is not one of einsum, xla, cudnn"):
        attend(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match="one dtype, got float32, bfloat16, float32"):
        attend(q, k.astype(jnp.bfloat16), v)


@pytest.mark.parametrize("implementation", ["einsum", "xla"])
@pytest.mark.parametrize("causal", [False, True])
def test_attend_bfloat16_is_close_to_float32(implementation, causal):
    q, k, v = qkv_inputs((3,))
    want = attend(q, k, v, causal=causal, implementation="einsum")
    got = attend(*(x.astype(jnp.bfloat16) for x in (q, k, v)), causal=causal, implementation=implementation)
    assert got.dtype == jnp.bfloat16
    # Measured: within 9e-3 (xla) and 1.3e-2 (einsum) of float32 for unit-normal inputs.
    np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("implementation", ["einsum", "xla"])
@pytest.mark.parametrize("lead", LEADS)
def test_attend_causal_ignores_later_keys_and_values(lead, implementation):
    q, k, v = qkv_inputs(lead)
    _, k2, v2 = qkv_inputs(lead, seed=1)
    i = 3
    later = (..., slice(i + 1, None), slice(None), slice(None))
    out = attend(q, k, v, causal=True, implementation=implementation)
    moved = attend(q, k.at[later].set(k2[later]), v.at[later].set(v2[later]), causal=True,
                   implementation=implementation)
    np.testing.assert_allclose(out[..., :i + 1, :, :], moved[..., :i + 1, :, :], rtol=1e-6, atol=1e-7)
    assert np.abs(np.asarray(out[..., i + 1:, :, :] - moved[..., i + 1:, :, :])).max() > 1e-2


# --- parameter counts ----------------------------------------------------------------

@pytest.mark.parametrize("mode, sets", [("tied", 1), ("piecewise", 3), ("smooth", 5), ("concat", 1)])
def test_count_params_of_transformer_block(mode, sets):
    d, r = 8, 2
    time = odeformer.TimeSpec(mode=mode, pieces=3, basis=5)
    field = odeformer.TransformerBlockField(d, 2, mlp_ratio=r, time=time, rngs=nnx.Rngs(0))
    linears = [(d, 3 * d), (d, d), (d, r * d), (r * d, d)]  # qkv, out, up, down
    per_set = sum(i * o + o for i, o in linears) + 2 * 2 * d  # + two LayerNorms
    extra = sum(o for _, o in linears) if mode == "concat" else 0  # the t input row
    assert odeformer.count_params(field) == sets * per_set + extra
