"""Resolving a parameter budget to a concrete model shape.

A language model's budget counts its non-embedding parameters (the token and position tables
are left out, as in Kaplan et al.'s scaling laws); a classifier's counts every parameter.
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from odeformer._block import count_params
from odeformer.categorical.features import TabularData
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.tasks import LanguageData, TaskData
from odeformer.language.models import non_embedding_params

BUDGET_TOLERANCE = 0.05  # realised count within ±5% of the target
_MAX_WIDTH = 8192


# (shape, the task's sizes, shards) -> parameter count. A count traces the model's
# construction (tens of milliseconds); a sweep's runs share shapes (seeds, tolerances,
# solvers) and budget searches over one architecture share their first widths, so each
# is made once.
_COUNTS: dict[tuple, int] = {}


def _sizes(data: TaskData | TabularData | LanguageData) -> tuple:
    """What of ``data`` a model's parameter count depends on."""
    if isinstance(data, LanguageData):
        return ("language", data.vocab_size, data.block_size)
    if isinstance(data, TabularData):
        return ("tabular", tuple(data.categorical), tuple(data.bags), len(data.numeric), data.num_classes)
    return ("sequence", data.vocab_size, data.seq_len, data.num_classes)


def model_params(shape: ModelShape, data: TaskData | TabularData | LanguageData, shards: int = 1) -> int:
    """Trainable parameters of the model of this shape for ``data``'s task, non-embedding
    ones for a language model (no arrays are allocated; each distinct count is made once per
    process). ``shards`` pads embedding rows as the mesh's ``model`` axis does."""
    key = (shape, _sizes(data), shards)
    count = _COUNTS.get(key)
    if count is None:
        model = nnx.eval_shape(lambda: build_model(shape, SolverSpec(), data, shards=shards,
                                                   rngs=nnx.Rngs(0)))
        count = non_embedding_params(model) if isinstance(data, LanguageData) else count_params(model)
        _COUNTS[key] = count
    return count


def resolve_budget(shape: ModelShape, budget: int, data: TaskData | TabularData | LanguageData,
                   shards: int = 1, by: str = "width") -> tuple[ModelShape, int]:
    """Chooses the width (or, ``by="layers"``, the depth) whose parameter count is closest
    to ``budget``.

    Widths divisible by ``shape.heads`` are preferred. The count does not depend on
    the number of heads, so when none of those is within tolerance any width is
    allowed and ``heads`` becomes its largest divisor not above ``shape.heads``
    (recorded in the resolved shape). Every other field of ``shape`` is kept.
    A depth is resolved for the language families with one block per layer (``gpt``,
    ``rk2_gated``) at the shape's width: the count nearest the budget, which moves in
    steps of one layer, so it lies within half a layer of it.

    Args:
      shape: the architecture; its ``width`` (or ``layers``) is replaced.
      budget: target number of trainable parameters (a language model's non-embedding ones).
      data: the task (its sizes enter the count).
      shards: the mesh's ``model`` size.
      by: ``"width"`` or ``"layers"``.

    Returns:
      ``(shape, params)``; by width, ``|params - budget| <= 5% of budget``.

    Raises:
      ValueError: if no width reaches the budget within 5%, or the family has no layers.
    """
    if by == "layers":
        return _resolve_layers(shape, budget, data, shards)

    def count(width):
        return model_params(dataclasses.replace(shape, width=width, heads=1), data, shards)

    lo, hi = 1, _MAX_WIDTH  # the count grows with width: bisect
    while lo < hi:
        mid = (lo + hi) // 2
        if count(mid) < budget:
            lo = mid + 1
        else:
            hi = mid
    # Prefer widths divisible by the configured heads; fall back to any width (with
    # fewer heads) only when no such width is within tolerance.
    below = max(1, (lo - 1) // shape.heads) * shape.heads
    aligned = [w for w in (below, below + shape.heads) if w >= 1]
    width = min(aligned, key=lambda w: abs(count(w) - budget))
    if abs(count(width) - budget) > BUDGET_TOLERANCE * budget:
        width = min((w for w in (lo - 1, lo) if w >= 1), key=lambda w: abs(count(w) - budget))
    params = count(width)
    heads = max(h for h in range(1, shape.heads + 1) if width % h == 0)
    if abs(params - budget) > BUDGET_TOLERANCE * budget:
        raise ValueError(
            f"model.param_budget={budget} cannot be met within 5% by changing the width "
            f"(nearest: width={width} with {params} parameters); change the "
            "budget, heads, layers/pieces or mlp_ratio")
    return dataclasses.replace(shape, width=width, heads=heads), params


def _resolve_layers(shape: ModelShape, budget: int, data, shards: int) -> tuple[ModelShape, int]:
    if shape.family not in ("gpt", "rk2_gated"):
        raise ValueError(f"model.resolve='layers' resolves the depth of the gpt and rk2_gated families; "
                         f"model.family={shape.family!r} has no layers to resolve")

    def count(layers):
        return model_params(dataclasses.replace(shape, layers=layers), data, shards)

    per_layer = count(2) - count(1)
    guess = max(1, round((budget - (count(1) - per_layer)) / per_layer))
    layers = min((n for n in (guess - 1, guess, guess + 1) if n >= 1), key=lambda n: abs(count(n) - budget))
    return dataclasses.replace(shape, layers=layers), count(layers)
