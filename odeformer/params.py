"""Counting trainable parameters."""

from __future__ import annotations

import jax
from flax import nnx


def count_params(module: nnx.Module) -> int:
    """Number of scalar entries in the module's ``nnx.Param`` variables."""
    state = nnx.state(module, nnx.Param)
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(state)))
