"""Gradient accumulation: a batch's gradient computed chunk by chunk in one ``lax.scan``.

Only one chunk's backward pass is live at a time, so peak memory is a chunk's, and on CPU
a chunk's activations can stay in cache where the whole batch's do not (measured in
``benchmarks/microbatch.py``). ``make_train_step(..., microbatch=m)`` uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def accumulate(fn: Callable, params, chunked_batch) -> tuple[Any, Any]:
    """``(mean gradient, outputs)`` of ``fn`` over the chunks of ``chunked_batch``.

    Args:
      fn: ``fn(params, chunk, i) -> (grads, out)``: the gradient (a pytree like ``params``)
        and any outputs of chunk ``i`` (an int32 scalar, e.g. to fold into a key).
      params: passed to every call of ``fn``.
      chunked_batch: pytree of arrays with a leading chunk axis ``[chunks, chunk_size, ...]``
        (reshape a batch ``[batch, ...]`` yourself, so that under a mesh you choose which
        axis is sharded).

    Returns:
      The mean of the chunks' gradients, computed one chunk after another, and each
      output stacked along a leading chunk axis. When ``fn``'s loss is a mean over a
      chunk's examples and the chunks are equal in size, the mean gradient is the whole
      batch's (up to float rounding).
    """
    sizes = {leaf.shape[0] for leaf in jax.tree_util.tree_leaves(chunked_batch)}
    if len(sizes) != 1:
        raise ValueError(f"every array of chunked_batch needs the same leading chunk axis; got sizes "
                         f"{sorted(sizes)}")
    chunks = sizes.pop()

    def step(total, xs):
        chunk, i = xs
        grads, out = fn(params, chunk, i)
        return jax.tree.map(jnp.add, total, grads), out

    zeros = jax.tree.map(jnp.zeros_like, params)
    total, outs = jax.lax.scan(step, zeros, (chunked_batch, jnp.arange(chunks, dtype=jnp.int32)))
    return jax.tree.map(lambda g: g / chunks, total), outs
