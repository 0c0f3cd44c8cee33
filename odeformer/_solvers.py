"""Solver registry: names, orders, classic RK4, and exact evaluation counts.

Every named solver is a Diffrax explicit Runge--Kutta method (Euler aside). Diffrax
reports steps but not vector-field evaluations, and an FSAL solver evaluates its first
stage lazily on the first *accepted-or-not* step, so the count depends on how many
steps were rejected before the first acceptance. To make the count a closed formula we
evaluate ``f(t0, y0)`` once in ``init`` instead (the same value, computed earlier): then
every step of an FSAL method costs ``stages - 1`` evaluations, accepted or rejected.

Each step's stages run as straight-line code rather than in Diffrax's checkpointed stage
loop: under the checkpoint adjoint a gradient then evaluates the field ``2 nfe - init``
times instead of ``3 nfe - 2 init`` (tests/test_solvers.py counts both), which made an RK4
training step 0.76-0.82x as long. The backward pass then keeps every stage's residuals of
a step at once, and the stages are traced one by one (a larger buffer and a longer compile
for many-stage methods; benchmarks/README.md, "Solver overhead"). A solver instance with
an explicit ``scan_kind`` keeps Diffrax's own step and its stage loop.

Both changes wrap the solver (:class:`_Prepared`, a ``diffrax.AbstractWrappedSolver``, the
public way to wrap one: Diffrax forwards its ``isinstance`` checks to the wrapped solver)
rather than subclass it, so that no private Diffrax or Equinox API is needed.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import diffrax
import equinox as eqx
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


def _fsal(solver, terms, t0, t1, y0, args) -> bool:
    """Whether steps carry ``f(t1, y1)`` to the next step: FSAL tableaus, unless the terms
    say a vector field costs more than two products with the control (as Diffrax decides)."""
    return solver.tableau.fsal and not terms.is_vf_expensive(t0, t1, y0, args)


def _straight_line_step(solver, terms, t0, t1, y0, args, solver_state, made_jump):
    """One step of an explicit Runge--Kutta tableau, its stages written out one after
    another: ``solver.step`` (``diffrax.AbstractRungeKutta.step``) as :class:`_Prepared`
    runs it.

    Diffrax runs the stages in a checkpointed loop of its own, so under the checkpoint
    adjoint each stage's forward is computed three times (forward pass, the step's
    recomputation, the stage loop's recomputation); written out, the step's
    recomputation keeps its stages' residuals and each is computed twice, as in a
    hand-written step. Same stages, ``y_error`` and dense output (``k`` stacked) as
    Diffrax's step, up to rounding; like Diffrax, FSAL stages evaluate ``vf`` (its value
    is carried), other stages ``vf_prod``.
    """
    tableau = solver.tableau
    control = terms.contr(t0, t1)
    dt = t1 - t0
    fsal = _fsal(solver, terms, t0, t1, y0, args)

    def stage(c, y):
        """(f, k) at stage time t0 + c dt (exactly t1 for c = 1); f is None unless FSAL."""
        t = t1 if c == 1 else t0 + float(c) * dt
        if not fsal:
            return None, terms.vf_prod(t, y, args, control)
        f = terms.vf(t, y, args)
        return f, terms.prod(f, control)

    if fsal:
        # (first_step, f0) from _Prepared.init or the previous step: first_step is always
        # False there, f0 = f(t0, y0). After a jump (never in `solve`: no jump times,
        # made_jump is then a static False) f0 is stale.
        _, f0 = solver_state
        if not (isinstance(made_jump, bool) and not made_jump):
            # Diffrax un-batches this predicate with equinox.internal.unvmap_any; a public
            # cond under vmap becomes a select (both branches run), same values.
            f0 = jax.lax.cond(jnp.any(made_jump), lambda: stage(0.0, y0)[0], lambda: f0)
        f_last, ks = f0, [terms.prod(f0, control)]
    else:
        f_last, k0 = stage(tableau.c1 or 0.0, y0)
        ks = [k0]
    y_stage = y0
    for c, a in zip(tableau.c, tableau.a_lower, strict=True):
        y_stage = _weighted_sum(y0, a, ks)
        f_last, k = stage(c, y_stage)
        ks.append(k)
    # SSAL tableaus (b_sol = the last row of a): y1 is the last stage's state.
    y1 = y_stage if tableau.ssal else _weighted_sum(y0, tableau.b_sol, ks)
    # No embedded pair (classic RK4): no estimate, so an adaptive controller refuses it
    # (Diffrax's step returns zeros, which would accept every step).
    y_error = (_weighted_sum(None, tableau.b_error, ks) if np.any(tableau.b_error != 0)
               else None)
    dense_info = dict(y0=y0, y1=y1, k=jax.tree_util.tree_map(lambda *k: jnp.stack(k), *ks))
    new_state = (jnp.array(False), f_last) if fsal else None
    return y1, y_error, dense_info, new_state, diffrax.RESULTS.successful


class _Prepared(diffrax.AbstractWrappedSolver):
    """An explicit Runge--Kutta solver as ``solve`` runs it: ``f(t0, y0)`` evaluated in
    ``init`` if it is FSAL, and each step's stages as straight-line code if ``write_out``
    (:func:`_straight_line_step`); everything else is the wrapped solver's.

    Attributes:
      solver: the wrapped solver, unchanged.
      write_out: replace ``solver.step``; False keeps it (a class with its own ``step``,
        or an explicit ``scan_kind``, which asks for Diffrax's stage loop).
    """

    solver: diffrax.AbstractERK
    write_out: bool = eqx.field(static=True)

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    @property
    def scan_kind(self):
        # DirectAdjoint and ForwardMode give a Runge--Kutta solver (isinstance is
        # forwarded) a scan_kind with eqx.tree_at(lambda s: s.scan_kind, ...): this lets
        # them set the wrapped solver's field. A written-out step has no loop to scan.
        return self.solver.scan_kind

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)

    def init(self, terms, t0, t1, y0, args):
        if not _fsal(self.solver, terms, t0, t1, y0, args):
            return self.solver.init(terms, t0, t1, y0, args)
        # Diffrax's FSAL state is (first_step, f0): evaluate f0 now and mark it valid,
        # so that no step ever re-evaluates the first stage.
        return jnp.array(False), self.solver.func(terms, t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        if self.write_out:
            return _straight_line_step(self.solver, terms, t0, t1, y0, args, solver_state, made_jump)
        return self.solver.step(terms, t0, t1, y0, args, solver_state, made_jump)


def _prepared(solver: diffrax.AbstractERK) -> diffrax.AbstractSolver:
    """``solver`` wrapped in :class:`_Prepared`, or itself if that would change nothing
    (not FSAL, and its class's own ``step`` or an explicit ``scan_kind`` kept)."""
    write_out = solver.scan_kind is None and type(solver).step is diffrax.AbstractRungeKutta.step
    if not (write_out or solver.tableau.fsal):
        return solver
    return _Prepared(solver, write_out)


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
    if isinstance(solver, _Prepared):  # prepared already: prepare what it wraps
        solver = solver.solver
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
        return SolverInfo(_prepared(solver), stages - 1, 1, adaptive_ok)
    return SolverInfo(_prepared(solver), stages, 0, adaptive_ok)
