"""Solver registry: names, orders, classic RK4, and exact evaluation counts.

Every named solver is a Diffrax explicit Runge--Kutta method (Euler aside). Diffrax
reports steps but not vector-field evaluations, and an FSAL solver evaluates its first
stage lazily on the first *accepted-or-not* step, so the count depends on how many
steps were rejected before the first acceptance. To make the count a closed formula we
evaluate ``f(t0, y0)`` once in ``init`` instead (the same value, computed earlier): then
every step of an FSAL method costs ``stages - 1`` evaluations, accepted or rejected.

Each step's stages run as straight-line code rather than in Diffrax's checkpointed stage
loop: under the checkpoint adjoint a gradient then evaluates the field ``2 nfe - init``
times instead of ``3 nfe`` (tests/test_solvers.py counts them), which made an RK4 training
step 0.8-0.85x as long, for a longer compile (benchmarks/README.md, "Solver overhead").
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import diffrax
import equinox.internal as eqxi
import jax
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


def diffrax_solver(name: str) -> diffrax.AbstractSolver:
    """Diffrax's own solver behind a name, as Diffrax runs it (stages in its checkpointed
    loop, FSAL first stage evaluated lazily): the baseline for comparisons. ``solve`` uses
    :func:`solver_info`'s prepared version of it instead."""
    _check_name(name)
    return _REGISTRY[name][0]()


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


def _weighted_sum(base, coefficients, ks):
    """``base + sum_j coefficients[j] * ks[j]`` leafwise, skipping zero coefficients (Python
    floats, so that they take the state's dtype); ``base=None`` starts from zero. The
    increment is summed before it is added to ``base``, as Diffrax does, so that the small
    terms are not rounded against the state one by one."""
    terms = [(float(a), k) for a, k in zip(coefficients, ks, strict=True) if a != 0]
    if not terms:
        return base if base is not None else jax.tree_util.tree_map(jnp.zeros_like, ks[0])

    def increment(*k_leaves):
        total = None
        for (a, _), k in zip(terms, k_leaves, strict=True):
            total = a * k if total is None else total + a * k
        return total

    summed = jax.tree_util.tree_map(increment, *(k for _, k in terms))
    return summed if base is None else jax.tree_util.tree_map(jnp.add, base, summed)


def _straight_line_step(self, terms, t0, t1, y0, args, solver_state, made_jump):
    """One step of an explicit Runge--Kutta tableau, its stages written out one after
    another (replaces ``diffrax.AbstractRungeKutta.step`` for :func:`solver_info`).

    Diffrax runs the stages in a checkpointed loop of its own, so under the checkpoint
    adjoint each stage's forward is computed three times (forward pass, the step's
    recomputation, the stage loop's recomputation); written out, the step's
    recomputation keeps its stages' residuals and each is computed twice, as in a
    hand-written step. Same stages, same ``y_error`` and dense output (``k`` stacked).
    """
    tableau = self.tableau
    control = terms.contr(t0, t1)
    dt = t1 - t0

    def stage(c, y):
        t = t1 if c == 1 else t0 + float(c) * dt
        return terms.vf(t, y, args)

    if tableau.fsal:
        _, f0 = solver_state  # f(t0, y0), evaluated in init or by the previous step
        if not (isinstance(made_jump, bool) and not made_jump):  # after a jump it is stale
            f0 = jax.lax.cond(eqxi.unvmap_any(made_jump), lambda: stage(0.0, y0), lambda: f0)
    else:
        f0 = stage(tableau.c1 or 0.0, y0)
    fs = [f0]
    ks = [terms.prod(f0, control)]
    y_stage = y0
    for c, a in zip(tableau.c, tableau.a_lower, strict=True):
        y_stage = _weighted_sum(y0, a, ks)
        fs.append(stage(c, y_stage))
        ks.append(terms.prod(fs[-1], control))
    # SSAL tableaus (b_sol = the last row of a): y1 is the last stage's state.
    y1 = y_stage if tableau.ssal else _weighted_sum(y0, tableau.b_sol, ks)
    y_error = (_weighted_sum(None, tableau.b_error, ks) if np.any(tableau.b_error != 0)
               else None)
    dense_info = dict(y0=y0, y1=y1, k=jax.tree_util.tree_map(lambda *k: jnp.stack(k), *ks))
    new_state = (jnp.array(False), fs[-1]) if tableau.fsal else None
    return y1, y_error, dense_info, new_state, diffrax.RESULTS.successful


def _eager_fsal_init(self, terms, t0, t1, y0, args):
    # Diffrax's FSAL state is (first_step, f0): evaluate f0 now and mark it valid,
    # so that no step ever re-evaluates the first stage.
    return jnp.array(False), self.func(terms, t0, y0, args)


@functools.cache
def _prepared_class(cls: type) -> type:
    """Subclass of an explicit Runge--Kutta class that evaluates ``f(t0, y0)`` in init
    if it is FSAL, and, unless the class defines its own ``step``, runs each step's
    stages as straight-line code (:func:`_straight_line_step`)."""
    methods = {}
    if cls.tableau.fsal:
        methods["init"] = _eager_fsal_init
    if cls.step is diffrax.AbstractRungeKutta.step:
        methods["step"] = _straight_line_step
    return type(f"Prepared{cls.__name__}", (cls,), methods) if methods else cls


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
    kwargs = {f.name: getattr(solver, f.name) for f in dataclasses.fields(solver) if f.init}
    prepared = _prepared_class(type(solver))(**kwargs)
    if _is_fsal(solver):
        return SolverInfo(prepared, stages - 1, 1, adaptive_ok)
    return SolverInfo(prepared, stages, 0, adaptive_ok)
