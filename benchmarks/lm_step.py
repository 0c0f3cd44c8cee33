"""python benchmarks/lm_step.py [--repeats 15]

Where the time of a language-model training step goes on XLA:CPU, at nanoGPT's CPU recipe
(batch 12 x 64 characters, 4 layers x 4 heads x width 128, vocabulary 75, float32).

Times, interleaved and as ratios to the forward pass of odeformer's ``gpt``:

- ``gpt forward`` / ``gpt gradient``: the loss, and the loss with its gradient, of
  ``odeformer.language.LanguageModel(family="gpt")``;
- ``plain-JAX gradient``: the same network written directly in ``jax.numpy`` (no Flax, no
  odeformer), to tell the library's overhead from the compiler's;
- ``gpt gradient, bfloat16``: the same with ``dtype="bfloat16"`` (bfloat16 matmuls, float32
  parameters and residual stream), what the precision setting does on a CPU;
- ``gpt gradient, attention "xla"``: with ``jax.nn.dot_product_attention``'s XLA implementation
  in place of the einsums ``attend`` uses on CPU;
- ``MLP gradient``, for the four MLPs of the stack alone (input to loss ``mean(x^2)``) with the
  exact GELU, the tanh GELU and no activation: what the activation's derivative costs.
"""

import argparse
import functools
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from harness import interleaved_ms, start_benchmark

from odeformer import attend
from odeformer.language import LanguageModel, models

B, T, D, L, V, HEADS = 12, 64, 128, 4, 75, 4


def _plain_loss(p, ids):
    def norm(x):
        mean = x.mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-5)

    x = p["tokens"][ids] + p["positions"]
    mask = jnp.tril(jnp.ones((T, T), bool))
    for b in p["blocks"]:
        q, k, v = (a.reshape(B, T, HEADS, D // HEADS) for a in jnp.split(norm(x) @ b["qkv"], 3, -1))
        scores = jnp.einsum("bqhc,bkhc->bhqk", q, k) / np.sqrt(D // HEADS)
        weights = jax.nn.softmax(jnp.where(mask, scores, -1e30), -1)
        x = x + jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(B, T, D) @ b["out"]
        x = x + jax.nn.gelu(norm(x) @ b["up"], approximate=False) @ b["down"]
    return optax.softmax_cross_entropy_with_integer_labels(norm(x) @ p["tokens"].T, ids).mean()


def _mlp_loss(activation):
    def loss(w, x):
        for _ in range(L):
            x = x + activation(x @ w["up"]) @ w["down"]
        return (x ** 2).mean()
    return loss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    start_benchmark()
    def gpt(dtype="float32"):
        return nnx.split(LanguageModel(vocab_size=V, block_size=T, family="gpt", width=D, heads=HEADS,
                                       layers=L, dtype=dtype, rngs=nnx.Rngs(0)))

    graphdef, params = gpt()
    half_graphdef, _ = gpt("bfloat16")
    ids = jnp.asarray(np.random.default_rng(0).integers(0, V, (B, T)), jnp.int32)

    def loss(p, ids, graphdef=graphdef):
        logits, _ = nnx.merge(graphdef, p)(ids)
        return optax.softmax_cross_entropy_with_integer_labels(logits, ids).mean()

    def xla_attention_loss(p, ids):
        with mock.patch.object(models, "attend", functools.partial(attend, implementation="xla")):
            return loss(p, ids)

    keys = iter(jax.random.split(jax.random.key(1), 32))

    def normal(*shape):
        return 0.02 * jax.random.normal(next(keys), shape)

    plain = {"tokens": normal(V, D), "positions": normal(T, D),
             "blocks": [{"qkv": normal(D, 3 * D), "out": normal(D, D), "up": normal(D, 4 * D),
                         "down": normal(4 * D, D)} for _ in range(L)]}
    weights = {"up": normal(D, 4 * D), "down": normal(4 * D, D)}
    x = jax.random.normal(next(keys), (B, T, D))
    steps = {
        "gpt forward": (jax.jit(loss), params, ids),
        "gpt gradient": (jax.jit(jax.value_and_grad(loss)), params, ids),
        "gpt gradient, bfloat16": (jax.jit(jax.value_and_grad(functools.partial(
            loss, graphdef=half_graphdef))), params, ids),
        'gpt gradient, attention "xla"': (jax.jit(jax.value_and_grad(xla_attention_loss)), params, ids),
        "plain-JAX gradient": (jax.jit(jax.value_and_grad(_plain_loss)), plain, ids),
        "MLP gradient, exact GELU": (jax.jit(jax.grad(_mlp_loss(
            lambda u: jax.nn.gelu(u, approximate=False)))), weights, x),
        "MLP gradient, tanh GELU": (jax.jit(jax.grad(_mlp_loss(jax.nn.gelu))), weights, x),
        "MLP gradient, no activation": (jax.jit(jax.grad(_mlp_loss(lambda u: u))), weights, x),
    }
    calls = {name: (lambda f=f, a=a, b=b: f(a, b)) for name, (f, a, b) in steps.items()}
    for call in calls.values():
        jax.block_until_ready(call())
    times = interleaved_ms(calls, args.repeats)
    base = float(np.median(times["gpt forward"]))
    print(f"{'':30s} {'median ms':>10s} {'x gpt forward':>14s}")
    for name, ms in times.items():
        print(f"{name:30s} {np.median(ms):10.2f} {np.median(ms) / base:14.2f}")


if __name__ == "__main__":
    main()
