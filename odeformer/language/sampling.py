"""Sampling text from a trained language model, reproducible from a PRNG key."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from odeformer.language.models import LanguageModel


def _check(prompt: np.ndarray, length: int, temperature: float, top_k: int | None, vocab: int) -> None:
    if prompt.ndim != 1 or prompt.size == 0:
        raise ValueError(f"prompt must be a non-empty 1-D array of token ids, got shape {prompt.shape}")
    if prompt.min() < 0 or prompt.max() >= vocab:
        raise ValueError(f"prompt ids must lie in [0, {vocab}), got {prompt.min()}..{prompt.max()}")
    if not (isinstance(length, int) and length >= 1):
        raise ValueError(f"length={length!r} must be an integer >= 1")
    if not temperature >= 0:
        raise ValueError(f"temperature={temperature!r} must be >= 0 (0 = greedy)")
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= vocab):
        raise ValueError(f"top_k={top_k!r} must be None or an integer in [1, {vocab}]")


def generate(model: LanguageModel, prompt, key: jax.Array, *, length: int, temperature: float = 1.0,
             top_k: int | None = None, **solver_values) -> np.ndarray:
    """Continues ``prompt`` (token ids) by ``length`` tokens; returns prompt + continuation.

    Each new token is drawn from the softmax of the last position's logits divided by
    ``temperature`` (0: the most likely token), restricted to the ``top_k`` most likely
    tokens when given; the model sees the last ``block_size`` tokens. Token ``i`` uses
    ``fold_in(key, i)``, so a key fixes the text. ``solver_values`` (``rtol``, ``atol``,
    ``t1``, ``steps``) are passed to the model. One compiled loop generates all tokens.
    """
    prompt = np.asarray(prompt, np.int32)
    _check(prompt, length, temperature, top_k, model.vocab_size)
    graphdef, state = nnx.split(model)
    total = max(prompt.size + length, model.block_size)
    buffer = np.zeros(total, np.int32)
    buffer[:prompt.size] = prompt
    out = _generate(graphdef, state, jnp.asarray(buffer), key, prompt.size, length,
                    float(temperature), top_k, tuple(sorted(solver_values.items())))
    return np.asarray(out)[:prompt.size + length]


@partial(jax.jit, static_argnums=(0, 4, 5, 6, 7, 8))
def _generate(graphdef, state, buffer, key, start, length, temperature, top_k, solver_values):
    model = nnx.merge(graphdef, state)
    block, total = model.block_size, buffer.shape[0]

    def next_token(i, buffer):
        position = start + i  # index of the token drawn now
        first = jnp.clip(position - block, 0, total - block)
        window = jax.lax.dynamic_slice(buffer, (first,), (block,))
        logits, _ = model(window[None], **dict(solver_values))
        logits = logits[0, position - 1 - first].astype(jnp.float32)
        if top_k is not None:
            cutoff = jax.lax.top_k(logits, top_k)[0][-1]
            logits = jnp.where(logits < cutoff, -jnp.inf, logits)
        if temperature == 0:
            token = jnp.argmax(logits)
        else:
            token = jax.random.categorical(jax.random.fold_in(key, i), logits / temperature)
        return buffer.at[position].set(token.astype(buffer.dtype))

    return jax.lax.fori_loop(0, length, next_token, buffer)
