"""Sequence classifiers whose body is an ODE flow or a discrete L-layer transformer.

Both families share one implementation: the discrete family is a ``piecewise`` field
with ``layers`` pieces integrated by Euler in ``layers`` unit steps, which is exactly an
L-layer (parallel-block, pre-LN) residual transformer (pinned in tests/test_fields.py).
"""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from odeformer.block import ODEBlock
from odeformer.fields import TransformerBlockField
from odeformer.time import TimeSpec

FAMILIES = ("ode", "discrete")
READOUTS = ("last", "mean")


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """Architecture of a :class:`SequenceClassifier` (all structural).

    Attributes:
      family: ``"ode"`` (field integrated by the configured solver) or ``"discrete"``.
      width, heads, mlp_ratio: transformer-block field sizes.
      time: time mode of the ``ode`` family's weights (``odeformer.TIME_MODES``).
      pieces, basis: for the ``piecewise`` and ``smooth`` time modes.
      layers: depth of the ``discrete`` family.
      readout: ``"last"`` token or ``"mean"`` over tokens.
    """

    family: str = "ode"
    width: int = 32
    heads: int = 4
    mlp_ratio: int = 2
    time: str = "tied"
    pieces: int = 4
    basis: int = 4
    layers: int = 4
    readout: str = "last"


@dataclasses.dataclass(frozen=True)
class SolverSpec:
    """Structural solver settings of the ``ode`` family (see ``odeformer.solve``)."""

    name: str = "tsit5"
    steps: int | None = 4
    adjoint: str = "checkpoint"
    max_steps: int = 4096


class SequenceClassifier(nnx.Module):
    """Token + position embedding -> flow -> LayerNorm -> readout -> linear head."""

    def __init__(self, shape: ModelShape, solver: SolverSpec, *, vocab_size: int, seq_len: int,
                 num_classes: int, rngs: nnx.Rngs):
        if shape.family not in FAMILIES:
            raise ValueError(f"model.family={shape.family!r} is not one of {', '.join(FAMILIES)}")
        if shape.readout not in READOUTS:
            raise ValueError(f"model.readout={shape.readout!r} is not one of {', '.join(READOUTS)}")
        self.readout = shape.readout
        self.family = shape.family
        self.embed = nnx.Embed(vocab_size, shape.width, rngs=rngs)
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq_len, shape.width)))
        if shape.family == "discrete":
            time = TimeSpec(mode="piecewise", pieces=shape.layers, horizon=float(shape.layers))
            # Unit steps over [0, layers]: x_{l+1} = x_l + F_l(x_l).
            block_solver = dict(solver="euler", steps=shape.layers, t1=float(shape.layers))
        else:
            time = TimeSpec(mode=shape.time, pieces=shape.pieces, basis=shape.basis)
            # Adaptive tolerances are not stored: they are passed (traced) at each call.
            block_solver = dict(solver=solver.name, steps=solver.steps, adjoint=solver.adjoint,
                                max_steps=solver.max_steps)
        field = TransformerBlockField(shape.width, shape.heads, mlp_ratio=shape.mlp_ratio,
                                      time=time, rngs=rngs)
        self.block = ODEBlock(field, throw=False, **block_solver)
        self.norm = nnx.LayerNorm(shape.width, rngs=rngs)
        self.head = nnx.Linear(shape.width, num_classes, rngs=rngs)

    def __call__(self, tokens: jax.Array, *, rtol=None, atol=None, t1=None):
        """Returns ``(logits, solution stats with 'ok')``.

        ``rtol``, ``atol`` (required by the adaptive ``ode`` family) and ``t1`` (``ode``
        only) may be traced. The ``discrete`` family ignores them. The whole batch is
        one ODE system: an adaptive solver picks one step sequence for all examples
        (as torchdiffeq does), so an example's result depends slightly on its batch.
        """
        x = self.embed(tokens) + self.position[...]
        if self.family == "discrete":
            sol = self.block.integrate(x)
        else:
            adaptive = self.block.steps is None
            sol = self.block.integrate(x, rtol=rtol if adaptive else None,
                                       atol=atol if adaptive else None, t1=t1)
        h = self.norm(sol.y1)
        h = h[..., -1, :] if self.readout == "last" else h.mean(-2)
        return self.head(h), {**sol.stats, "ok": sol.ok}

