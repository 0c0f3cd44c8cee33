"""A run's model and train state, created on its mesh without ever being whole on one device.

``init_sharded(train_state_init(build, tx, solver, penalty), key, mesh)``
(:func:`odeformer.parallel.init_sharded`) returns ``(graphdef, state)``: the model is built
inside one jitted program whose outputs are already row-sharded (embedding tables and their
AdamW moments) or replicated, so a table larger than one device's memory can be trained; the
values equal those of the same program on one device bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx

from odeformer.experiment.training import init_state


def train_state_init(build: Callable[[nnx.Rngs], nnx.Module], tx: optax.GradientTransformation, solver,
                     penalty: dict[str, float] | None = None, sparse=None
                     ) -> Callable[[jax.Array], tuple[nnx.GraphDef, dict[str, Any]]]:
    """The function ``key -> (graphdef, train state)`` for :func:`odeformer.parallel.init_sharded`.

    Args:
      build: called as ``build(rngs=...)`` for the model, whose parameters are drawn from
        ``rngs.params()`` (e.g. ``build_model`` with every other argument bound).
      tx: the optimiser (``make_optimizer``).
      solver: a config's solver section, as for :func:`~odeformer.experiment.training.init_state`.
      penalty: regulariser weights, as for :func:`~odeformer.experiment.training.init_state`.
      sparse: ``(SparseTables, {"learning_rate", "weight_decay"})`` of row-sparse embedding
        tables (``odeformer.experiment.sparse_training.sparse_tables``), or None; their
        per-row state is row-sharded like the tables.

    Returns:
      A pure function of the parameters' key; the graphdef is a static part of its output.
    """
    def init(key: jax.Array) -> tuple[nnx.GraphDef, dict[str, Any]]:
        graphdef, params = nnx.split(build(rngs=nnx.Rngs(params=key)))
        extra = None if sparse is None else sparse[0].init(graphdef, params, **sparse[1])
        return graphdef, init_state(params, tx, solver, penalty, sparse=extra)

    return init
