"""From a field module to Diffrax's ``f(t, y, args)``, `ODEBlock`, and counting parameters."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from odeformer._integrate import Solution, _concrete, solve


def vector_field(module: nnx.Module) -> tuple[Callable, nnx.State]:
    """Splits a field module ``module(t, x)`` into ``(f, state)``.

    ``f(t, y, state)`` merges the module from ``state`` and evaluates it, so the
    parameters travel in Diffrax's ``args`` (as backsolve and vmap need) and
    ``solve(f, y0, args=state)`` is differentiable in ``state``.
    """
    graphdef, state = nnx.split(module)

    def f(t, y, state):
        return nnx.merge(graphdef, state)(t, y)

    return f, state


class ODEBlock(nnx.Module):
    """Integrates ``dx/dt = field(t, x)`` over ``[0, t1]`` inside a Flax model.

    Args:
      field: an ``nnx.Module`` called as ``field(t, x)``.
      solver: as in :func:`odeformer.solve`.
      steps: as in :func:`odeformer.solve` (``None`` for an adaptive block).
      rtol: as in :func:`odeformer.solve`.
      atol: as in :func:`odeformer.solve`.
      adjoint: as in :func:`odeformer.solve`.
      t1: integration horizon.
      max_steps: as in :func:`odeformer.solve`.
      throw: as in :func:`odeformer.solve`.

    ``rtol``, ``atol`` and ``t1`` stored here are compile-time constants of the
    module; to sweep them without recompiling, pass them to :meth:`integrate`. So is a
    fixed-step block's ``steps``; it is also the most steps a traced ``steps`` passed to
    :meth:`integrate` may ask for, so that one compile serves every count up to it.
    """

    def __init__(self, field: nnx.Module, *, solver="tsit5", steps: int | None = None,
                 rtol: float | None = None, atol: float | None = None,
                 adjoint: str = "checkpoint", t1: float = 1.0, max_steps: int = 4096,
                 throw: bool = True):
        self.field = field
        self.solver = solver
        self.steps = steps
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.t1 = t1
        self.max_steps = max_steps
        self.throw = throw

    def solve_options(self, *, rtol=None, atol=None, t1=None, steps=None) -> dict:
        """The keyword arguments of :func:`odeformer.solve` (all but ``args``, ``t0`` and
        ``ts``) this block integrates with; ``rtol``, ``atol``, ``t1`` override the stored
        values and may be traced. ``steps`` (a fixed-step block only) is a traced integer
        from 1 to the stored ``steps``, which becomes ``max_steps``.

        Raises:
          ValueError: if tolerances are passed to a fixed-step block or ``steps`` to an
            adaptive one.
        """
        adaptive = self.steps is None
        if not adaptive and (rtol is not None or atol is not None):
            raise ValueError(f"this ODEBlock uses steps={self.steps}: rtol/atol do not apply")
        if adaptive and steps is not None:
            raise ValueError("this ODEBlock is adaptive (steps=None): a step count does not apply")
        fixed = dict(steps=self.steps, max_steps=self.max_steps)
        if steps is not None:
            # A traced count is checked by solve at run time, against max_steps = self.steps.
            known = _concrete(steps)
            if known is not None and known.shape == () and not 1 <= known <= self.steps:
                raise ValueError(f"steps={known} must lie in [1, {self.steps}]: this ODEBlock's "
                                 f"steps={self.steps} is the most a call may ask for")
            fixed = dict(steps=jnp.asarray(steps), max_steps=self.steps)
        return dict(
            t1=self.t1 if t1 is None else t1, solver=self.solver,
            rtol=(self.rtol if rtol is None else rtol) if adaptive else None,
            atol=(self.atol if atol is None else atol) if adaptive else None,
            adjoint=self.adjoint, throw=self.throw, **fixed,
        )

    def integrate(self, x: jax.Array, *, rtol=None, atol=None, t1=None, steps=None,
                  ts=None) -> Solution:
        """Solves from ``x`` at t=0 and returns the full :class:`Solution`.

        ``rtol``, ``atol``, ``t1`` override the stored values and may be traced; so may
        ``steps`` (see :meth:`solve_options`).

        Raises:
          ValueError: if tolerances are passed to a fixed-step block or ``steps`` to an
            adaptive one.
        """
        options = self.solve_options(rtol=rtol, atol=atol, t1=t1, steps=steps)
        f, state = vector_field(self.field)
        return solve(f, x, args=state, t0=jnp.zeros((), jnp.result_type(x)), ts=ts, **options)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.integrate(x).y1


def count_params(module: nnx.Module) -> int:
    """Number of scalar entries in the module's ``nnx.Param`` variables."""
    state = nnx.state(module, nnx.Param)
    return int(sum(leaf.size for leaf in jax.tree_util.tree_leaves(state)))


def forward_mode(graphdef: nnx.GraphDef, params: nnx.State) -> nnx.GraphDef:
    """The same model with every :class:`ODEBlock` solved by Diffrax's ``DirectAdjoint``, so it
    can be differentiated in forward mode (``jvp``): the checkpointed solves of training support
    only reverse mode. A model without an ODE block is returned as it is."""
    model = nnx.merge(graphdef, params)
    for _, module in nnx.iter_modules(model):
        if isinstance(module, ODEBlock):
            module.adjoint = "direct"
    return nnx.graphdef(model)
