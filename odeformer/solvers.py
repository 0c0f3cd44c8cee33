"""Solver registry: names, orders, classic RK4, and exact evaluation counts.

Every named solver is a Diffrax explicit Runge--Kutta method (Euler aside). Diffrax
reports steps but not vector-field evaluations, and an FSAL solver evaluates its first
stage lazily on the first *accepted-or-not* step, so the count depends on how many
steps were rejected before the first acceptance. To make the count a closed formula we
evaluate ``f(t0, y0)`` once in ``init`` instead (the same value, computed earlier): then
every step of an FSAL method costs ``stages - 1`` evaluations, accepted or rejected.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import diffrax
import jax.numpy as jnp
import numpy as np

_RK4_TABLEAU = diffrax.ButcherTableau(
    c=np.array([0.5, 0.5, 1.0]),
    b_sol=np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6]),
    # Classic RK4 has no embedded pair: a zero error estimate, so `solve` refuses
    # adaptive stepping with it rather than silently accepting every step.
    b_error=np.zeros(4),
    a_lower=(np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0])),
)


class RK4(diffrax.AbstractERK):
    """The classic fourth-order Runge--Kutta method (4 stages, no error estimate)."""

    tableau: ClassVar[diffrax.ButcherTableau] = _RK4_TABLEAU
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return 4


# name -> (class, order, has an embedded error estimate)
_REGISTRY: dict[str, tuple[type, int, bool]] = {
    "euler": (diffrax.Euler, 1, False),
    "heun": (diffrax.Heun, 2, True),
    "midpoint": (diffrax.Midpoint, 2, True),
    "ralston": (diffrax.Ralston, 2, True),
    "rk4": (RK4, 4, False),
    "bosh3": (diffrax.Bosh3, 3, True),
    "tsit5": (diffrax.Tsit5, 5, True),
    "dopri5": (diffrax.Dopri5, 5, True),
    "dopri8": (diffrax.Dopri8, 8, True),
}

SOLVERS: tuple[str, ...] = tuple(_REGISTRY)
ADAPTIVE_SOLVERS: tuple[str, ...] = tuple(n for n, (_, _, ok) in _REGISTRY.items() if ok)


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise ValueError(f"solver={name!r} is not one of {', '.join(SOLVERS)}")


def solver_order(name: str) -> int:
    """Nominal order of convergence of the named solver (global error ~ dt**order)."""
    _check_name(name)
    return _REGISTRY[name][1]


@dataclasses.dataclass(frozen=True)
class SolverInfo:
    """Static facts about a solver that the solve needs.

    Attributes:
      solver: the Diffrax solver to hand to ``diffeqsolve``.
      evals_per_step: vector-field evaluations per attempted step.
      evals_at_init: evaluations made before the first step (FSAL ``f(t0, y0)``).
      adaptive_ok: whether the method has an embedded error estimate.
    """

    solver: diffrax.AbstractSolver
    evals_per_step: int
    evals_at_init: int
    adaptive_ok: bool


@functools.cache
def _eager_fsal_class(cls: type) -> type:
    """Subclass of an FSAL Runge--Kutta class that evaluates ``f(t0, y0)`` in init."""

    def init(self, terms, t0, t1, y0, args):
        # Diffrax's FSAL state is (first_step, f0): evaluate f0 now and mark it valid,
        # so that no step ever re-evaluates the first stage.
        return jnp.array(False), self.func(terms, t0, y0, args)

    return type(f"EagerFSAL{cls.__name__}", (cls,), {"init": init})


def _is_fsal(solver: diffrax.AbstractSolver) -> bool:
    return isinstance(solver, diffrax.AbstractRungeKutta) and solver.tableau.fsal


def solver_info(solver: str | diffrax.AbstractSolver) -> SolverInfo:
    """Resolves a solver name or instance to a :class:`SolverInfo`.

    Args:
      solver: a name in :data:`SOLVERS`, or an instance of ``diffrax.Euler`` or of an
        explicit Runge--Kutta class (``diffrax.AbstractERK``, single tableau). Other
        Diffrax solvers (implicit, SDE) evaluate the field a data-dependent number of
        times and are refused, since ``nfe`` could not be exact.

    Returns:
      The solver prepared for ``diffeqsolve`` with its evaluation counts.
    """
    if isinstance(solver, str):
        _check_name(solver)
        cls, _, adaptive_ok = _REGISTRY[solver]
        solver = cls()
    elif isinstance(solver, diffrax.Euler):
        adaptive_ok = False
    elif isinstance(solver, diffrax.AbstractERK) and isinstance(
        solver.tableau, diffrax.ButcherTableau
    ):
        adaptive_ok = bool(np.any(solver.tableau.b_error != 0))
    else:
        raise ValueError(
            f"solver={type(solver).__name__} is not supported: pass one of "
            f"{', '.join(SOLVERS)} or an instance of diffrax.Euler or of an explicit "
            "Runge-Kutta solver (diffrax.AbstractERK); their evaluations can be counted "
            "exactly"
        )
    if isinstance(solver, diffrax.Euler):
        return SolverInfo(solver, 1, 0, adaptive_ok)
    stages = solver.tableau.num_stages
    if _is_fsal(solver):
        kwargs = {f.name: getattr(solver, f.name) for f in dataclasses.fields(solver) if f.init}
        eager = _eager_fsal_class(type(solver))(**kwargs)
        return SolverInfo(eager, stages - 1, 1, adaptive_ok)
    return SolverInfo(solver, stages, 0, adaptive_ok)
