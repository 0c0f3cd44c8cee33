"""What a tabular model costs, counted from its shape, and the widths that match a cost.

Used to compare networks at equal parameters or equal FLOPs (``configs/entity_embeddings.py``):
:func:`model_costs` counts a model without allocating it, :func:`matched_width` finds the width
at which one arm's count is nearest another's, :func:`unknown_rates` says how often a task's
rows hold an id its vocabulary does not know.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from odeformer._block import count_params
from odeformer.categorical.features import TabularData
from odeformer.categorical.vocabulary import UNK_ID
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.tabular_mlp import forward_flops

COSTS = ("params", "flops_matmul", "flops_lookup")


def model_costs(shape: ModelShape, data: TabularData) -> dict[str, int]:
    """``params`` (:func:`odeformer.count_params`), ``flops_matmul`` and ``flops_lookup``
    (:func:`odeformer.experiment.tabular_mlp.forward_flops`, per example) of the ``mlp``
    model of ``shape`` for ``data``; nothing is allocated."""
    model = nnx.eval_shape(lambda: build_model(shape, SolverSpec(), data, rngs=nnx.Rngs(0)))
    return {"params": count_params(model), "flops_matmul": forward_flops(model, "matmul"),
            "flops_lookup": forward_flops(model, "lookup")}


def matched_width(shape: ModelShape, data: TabularData, measure: str, target: float,
                  tie_dim: bool = False) -> int:
    """The width of ``shape`` whose ``measure`` (one of :data:`COSTS`) is nearest ``target``
    (bisection: every measure grows with the width). ``tie_dim`` sets ``embed_dim = width``
    too (the one-hot network's whole ``W_f``)."""
    if measure not in COSTS:
        raise ValueError(f"measure={measure!r} is not one of {', '.join(COSTS)}")

    def cost(width: int) -> int:
        dims = {"embed_dim": width} if tie_dim else {}
        return model_costs(dataclasses.replace(shape, width=width, **dims), data)[measure]

    lo, hi = 1, 4096
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if cost(mid) < target else (lo, mid)
    return min((w for w in (lo - 1, lo) if w >= 1), key=lambda w: abs(cost(w) - target))


def unknown_rates(data: TabularData) -> dict[str, float]:
    """Fractions of the train and test rows with at least one categorical feature encoded as
    the unknown id (``train_unk_rows``, ``test_unk_rows``)."""
    return {f"{name}_unk_rows": float((np.asarray(split["categorical"]) == UNK_ID).any(axis=1).mean())
            for name, split in (("train", data.train), ("test", data.test))}
