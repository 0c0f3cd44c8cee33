"""Multi-valued categorical features ("bags": the genres of a film, the items of a basket):
each example holds up to ``L`` ids of one feature, pooled into one vector by a combiner.

A bag is stored padded: ids ``[..., L]`` and weights ``[..., L]``, padding marked by weight 0
(its id is never read for the result; use ``PAD_ID``). Weights default to 1 per present id;
per-id weights (a rating, a count) are the weights themselves. Combiners, as TorchRec's
EmbeddingBag and keras-rs name them, for vectors ``e_j`` and weights ``w_j``:

=======  ============================================  =====================
sum      ``sum_j w_j e_j``                              0 for an empty bag
mean     ``sum_j w_j e_j / sum_j w_j``                  0 for an empty bag
sqrtn    ``sum_j w_j e_j / sqrt(sum_j w_j ** 2)``       0 for an empty bag
=======  ============================================  =====================
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

COMBINERS = ("sum", "mean", "sqrtn")


def check_combiner(combiner: str) -> None:
    """Raises ValueError unless ``combiner`` is one of :data:`COMBINERS`."""
    if combiner not in COMBINERS:
        raise ValueError(f"combiner={combiner!r} is not one of {', '.join(COMBINERS)}")


def pool(vectors: jax.Array, weights: jax.Array, combiner: str) -> jax.Array:
    """``vectors`` [..., L, d] (one per id of a bag), ``weights`` [..., L] -> [..., d]."""
    check_combiner(combiner)
    weights = weights.astype(vectors.dtype)
    total = jnp.einsum("...l,...ld->...d", weights, vectors)
    if combiner == "sum":
        return total
    norm = weights.sum(-1) if combiner == "mean" else jnp.sqrt(jnp.square(weights).sum(-1))
    # An empty bag pools to zeros, not NaN: divide by 1 where the norm is 0 (the sum is 0 there).
    return total / jnp.where(norm > 0, norm, 1)[..., None]
