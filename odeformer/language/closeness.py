"""How close a trained language model's depth map is to a flow, read from its weights.

Sander, Ablin and Peyré (2022) show a residual network converges to an ODE as depth grows only
when adjacent layers' weights differ by O(1/K). :func:`adjacent_change` measures that
difference in a trained model: the relative Frobenius change between the weight matrices of
consecutive layers, averaged over layers and matrices. The layers are the blocks of ``gpt`` and
``rk2_gated``, and for ``ode`` and ``smooth`` the field's weights at the times ``t_k = k t1 / K``
of a ``K``-step solve (every change of a tied ``ode`` is 0). Measured on the updates training
made (``initial``), it asks whether what was learned varies smoothly with depth.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from odeformer._time_dependence import TimeParam
from odeformer.language.models import LanguageModel


def _matrices(module: nnx.Module, t: float) -> list[jax.Array]:
    """The module's weight matrices at time ``t`` (time-dependent 2-D parameters), in graph order."""
    return [node(jnp.asarray(t, jnp.float32)) for _, node in nnx.iter_graph(module)
            if isinstance(node, TimeParam) and node.value.ndim == 3]


def layer_weights(model: LanguageModel, layers: int) -> list[list[jax.Array]]:
    """Each layer's weight matrices: ``layers`` lists, one matrix per linear map.

    ``layers`` is the depth a forward pass steps through: ``model.layers`` for ``gpt`` and
    ``rk2_gated`` (other values are refused), the solve's fixed step count for ``ode`` and
    ``smooth``.
    """
    if model.family in ("gpt", "rk2_gated"):
        if layers != model.layers:
            raise ValueError(f"a {model.family} model has {model.layers} layers, not {layers}")
        return [_matrices(block, 0.0) for block in model.blocks]
    t1 = float(model.flow.t1)
    return [_matrices(model.flow.field, k * t1 / layers) for k in range(layers)]


def adjacent_change(model: LanguageModel, layers: int, initial: LanguageModel | None = None) -> float:
    """Mean over adjacent layers ``k, k+1`` and matrices of ``|W_{k+1} - W_k|_F / |W_k|_F``
    (:func:`layer_weights`); NaN for a single layer.

    With ``initial`` (the same model at initialisation) the weights are the updates training
    made, ``W_k - W_k(0)``, and the mean is multiplied by ``layers``: independent random layers
    differ by about sqrt(2) whatever their depth, which says nothing about what was learned, and
    updates that are a smooth function of depth differ by O(1/K), so ``K`` times their change
    compares depths on one scale.
    """
    weights = layer_weights(model, layers)
    if len(weights) < 2:
        return math.nan
    if initial is not None:
        start = layer_weights(initial, layers)
        weights = [[w - w0 for w, w0 in zip(layer, first, strict=True)]
                   for layer, first in zip(weights, start, strict=True)]
    ratios = [jnp.linalg.norm(b - a) / jnp.linalg.norm(a)
              for lower, upper in zip(weights[:-1], weights[1:], strict=True)
              for a, b in zip(lower, upper, strict=True)]
    return float(jnp.mean(jnp.stack(ratios))) * (layers if initial is not None else 1)
