"""`odeformer.solve`: one functional entry point over Diffrax.

Structural arguments (a new trace and compile for each distinct value): ``field``
(its identity), the structure/shape/dtype of ``y0``, ``solver``, ``steps`` when it is a
Python int, ``adjoint``, ``max_steps``, ``throw``, and whether ``ts``/``rtol`` are given
(and the length of ``ts``). Traced arguments (any value, same compile): ``rtol``,
``atol``, ``t0``, ``t1``, ``steps`` when it is an integer array (``max_steps`` bounds it),
the values of ``ts``, ``y0`` and ``args``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from odeformer._solvers import ADAPTIVE_SOLVERS, solver_info

ADJOINTS: tuple[str, ...] = ("checkpoint", "backsolve", "direct")

# Index order of the messages raised when throw=True.
_FAILURES = (
    "odeformer.solve: the solver stopped before t1 (max_steps reached, or the step "
    "size collapsed); pass a larger max_steps, looser rtol/atol, or throw=False",
    "odeformer.solve: the solution contains non-finite values (NaN or inf); pass "
    "throw=False to get ok=False instead of an error",
)

# Adaptive solves start from dt0 = (t1 - t0) * _INITIAL_STEP_FRACTION. Diffrax's own
# initial step selection is skipped for wrapped terms (it returns dt0 = 0.01 in
# absolute time, whatever the interval); an explicit, scale-aware dt0 costs no
# evaluation and keeps `nfe` a closed formula.
_INITIAL_STEP_FRACTION = 0.01


class _FirstStep(diffrax.AbstractStepSizeController):
    """``inner`` with its first step size carried along, so that ``diffeqsolve`` is called
    with ``dt0=None``: Diffrax then compiles in no run-time check of dt0's sign (a host
    callback when t0 or t1 is traced, which JAX's persistent compilation cache refuses).
    ``solve`` checks ``t1 > t0`` itself. The step is positive in Diffrax's normalised time,
    for the forward solve and for backsolve's backward one alike."""

    inner: diffrax.AbstractStepSizeController
    dt0: jax.Array

    def wrap(self, direction):
        return _FirstStep(self.inner.wrap(direction), self.dt0)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        del dt0
        # abs: with t1 < t0 (an invalid traced value, reported as ok=False) no adaptive solve runs on
        # to max_steps backwards.
        first = jnp.abs(jnp.asarray(self.dt0, jnp.result_type(t0)))
        return self.inner.init(terms, t0, t1, y0, first, args, func, error_order)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        return self.inner.adapt_step_size(t0, t1, y0, y1_candidate, args, y_error, error_order,
                                          controller_state)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Solution:
    """Result of :func:`solve`.

    Attributes:
      y1: the state at ``t1`` (same structure as ``y0``); NaN where ``ok`` is False.
      stats: dict of int32 arrays: ``num_steps`` (attempted), ``num_accepted_steps``,
        ``num_rejected_steps`` and ``nfe``, the exact number of forward vector-field
        evaluations of this solve (rejected steps and FSAL reuse accounted for; the
        backward pass of an adjoint is not counted). Under ``vmap`` each element
        reports its own solve's count; the batched program may execute more, since
        finished elements idle through the others' steps.
      ok: bool array, False where the solve stopped early or produced non-finite values.
      ts: the save times, only when ``ts`` was given.
      ys: states at ``ts`` with a leading time axis, only when ``ts`` was given.
    """

    y1: Any
    stats: dict[str, jax.Array]
    ok: jax.Array
    ts: jax.Array | None = None
    ys: Any = None


def _concrete(x) -> np.ndarray | None:
    """The value of ``x`` if it is known at trace time, else None."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _show(x) -> str:
    """A value for an error message: itself if known at trace time."""
    value = _concrete(x)
    return "(a traced value)" if value is None else str(value)


def _check(message: str, is_bad: Callable, x, *others, throw: bool = True):
    """``(x, bad)``. Raises ValueError now if ``is_bad(x, *others)`` and every value is known
    at trace time (``bad`` is then False). Otherwise ``bad`` is the traced verdict: with
    ``throw`` the same check is also attached to run time (a host callback, which JAX's
    persistent compilation cache refuses); without it the caller folds ``bad`` into ``ok``."""
    values = [_concrete(v) for v in (x, *others)]
    if all(v is not None for v in values):
        if np.any(is_bad(*values)):
            raise ValueError(message)
        return x, jnp.asarray(False)
    bad = jnp.any(is_bad(x, *others))
    return (eqx.error_if(x, bad, message) if throw else x), bad


def _is_positive_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _is_int_array(value) -> bool:
    """A 0-d integer array (NumPy or JAX, concrete or traced): a traced step count."""
    return (isinstance(value, (jax.Array, np.ndarray)) and value.shape == ()
            and jnp.issubdtype(value.dtype, jnp.integer))


def _validate_static(solver, steps, rtol, atol, adjoint, max_steps, throw, adaptive_ok):
    if adjoint not in ADJOINTS:
        raise ValueError(f"adjoint={adjoint!r} is not one of {', '.join(ADJOINTS)}")
    tolerances = (rtol is not None, atol is not None)
    if steps is not None and any(tolerances):
        raise ValueError(
            "pass exactly one of steps (fixed step count) or rtol+atol (adaptive); "
            f"got steps={steps!r} and rtol/atol"
        )
    if steps is None and not all(tolerances):
        raise ValueError(
            "pass exactly one of steps (fixed step count) or both rtol and atol "
            f"(adaptive); got steps=None, rtol={rtol!r}, atol={atol!r}"
        )
    if steps is not None and not (_is_positive_int(steps) or _is_int_array(steps)):
        raise ValueError(f"steps={steps!r} must be a positive Python int (structural) or a 0-d "
                         "integer array (traced, at most max_steps)")
    if not _is_positive_int(max_steps):
        raise ValueError(f"max_steps={max_steps!r} must be a positive Python int")
    if not isinstance(throw, bool):
        raise ValueError(f"throw={throw!r} must be True or False")
    if steps is None and not adaptive_ok:
        name = solver if isinstance(solver, str) else type(solver).__name__
        raise ValueError(
            f"solver={name!r} has no embedded error estimate, so rtol/atol cannot be used "
            f"with it: pass steps, or one of {', '.join(ADAPTIVE_SOLVERS)}"
        )


def _validate_y0(y0) -> None:
    leaves = jax.tree_util.tree_leaves(y0)
    if not leaves:
        raise ValueError("y0 must contain at least one array; got an empty pytree")
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"y0 leaves must be floating-point arrays; got dtype {jnp.result_type(leaf)}")


def _make_adjoint(adjoint: str, steps: int | None) -> diffrax.AbstractAdjoint:
    if adjoint == "backsolve":
        return diffrax.BacksolveAdjoint()
    if adjoint == "direct":
        return diffrax.DirectAdjoint()
    # Fixed steps: a checkpoint at every step, so each step is recomputed once in the
    # backward pass and never more. Adaptive: Diffrax's binomial checkpointing.
    return diffrax.RecursiveCheckpointAdjoint(checkpoints=steps)


def solve(
    field: Callable,
    y0,
    *,
    args=None,
    t0=0.0,
    t1=1.0,
    solver: str | diffrax.AbstractSolver = "tsit5",
    steps: int | None = None,
    rtol=None,
    atol=None,
    adjoint: str = "checkpoint",
    ts=None,
    max_steps: int = 4096,
    throw: bool = True,
) -> Solution:
    """Integrates ``dy/dt = field(t, y, args)`` from ``t0`` to ``t1``.

    Works under ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

    Args:
      field: ``field(t, y, args) -> dy/dt`` with the structure of ``y``. Parameters
        belong in ``args`` (backsolve differentiates through ``args`` only).
      y0: initial state, any pytree of floating-point arrays.
      args: pytree passed to ``field``; gradients flow through it.
      t0: start of the integration interval. Traced.
      t1: end of the integration interval, ``t1 > t0``. Traced.
      solver: a name in ``odeformer.SOLVERS`` or a Diffrax Euler / explicit
        Runge--Kutta instance. Structural. Runge--Kutta steps run their stages as
        straight-line code (``odeformer._solvers``); an instance with an explicit
        ``scan_kind`` keeps Diffrax's own stage loop (less memory in the backward pass,
        one more forward per stage in the gradient).
      steps: fixed number of equal steps, ``dt = (t1 - t0) / steps``. A Python int is
        structural. A 0-d integer array is traced: one compile serves every count from 1
        to ``max_steps`` (checked at run time), with the int's results (bit for bit when
        ``t0`` or ``t1`` is traced too, else up to rounding); the checkpoint adjoint then
        keeps ``max_steps`` state slots, so keep that bound tight.
      rtol: relative tolerance for adaptive stepping (PID controller; the first step
        starts at ``(t1 - t0) / 100``). Give both ``rtol`` and ``atol``, and not
        ``steps``. Traced.
      atol: absolute tolerance for adaptive stepping. Traced.
      adjoint: how reverse-mode gradients are computed. Structural.
        ``"checkpoint"``: discretise-then-optimise, exact gradient of the numerical
        solution. With ``steps`` it stores the state after every step (memory grows
        linearly with ``steps``, with ``max_steps`` when ``steps`` is traced) and the
        backward pass re-runs each step's stages once: the fastest choice when steps
        are few and known (measured faster than a scan that stores every stage, see
        benchmarks/). Adaptive solves use
        binomial checkpointing over ``max_steps`` with Equinox's default number of
        stored states, about sqrt(2 max_steps) (90 for 4096); a step is recomputed
        more than once only in solves longer than that (counted in tests/test_solvers.py).
        ``"backsolve"``: optimise-then-discretise, integrates the adjoint ODE
        backwards; memory independent of the number of steps, gradient accurate only
        to the solver's error.
        ``"direct"``: differentiates straight through the loop; memory grows with
        ``max_steps`` (or ``steps``); supports forward-mode too. On CPU its large
        activation buffer is page-faulted in at every call unless
        :func:`odeformer.parallel.reuse_host_memory` was called (measured 1.5-1.8x faster with it).
      ts: optional increasing 1-D times in ``[t0, t1]`` at which to also save the
        state (dense interpolation, no extra evaluations). Traced values; length
        is structural.
      max_steps: attempted-step limit of adaptive solves, and the bound of a traced
        ``steps``. Fixed-step solves take exactly ``steps``. Structural.
      throw: if True, a solve that stops before ``t1`` or produces non-finite
        values raises at run time, as do invalid traced arguments (below). If False all of
        these return ``ok=False`` and NaN states instead, and without ``ts`` the compiled
        program has no host callback, so JAX's persistent compilation cache can store it.
        Traced ``ts`` are also checked by Diffrax itself, which raises at run time whatever
        ``throw`` says (a host callback too).

    Returns:
      A :class:`Solution`.

    Raises:
      ValueError: for invalid arguments, before anything is computed. Traced values
        (rtol, atol, t0, t1, ts, steps) are checked when the program runs instead: an
        error there with ``throw=True``, ``ok=False`` with ``throw=False``.
    """
    if not callable(field):
        raise ValueError(f"field must be callable as field(t, y, args); got {type(field).__name__}")
    info = solver_info(solver)
    _validate_static(solver, steps, rtol, atol, adjoint, max_steps, throw, info.adaptive_ok)
    _validate_y0(y0)
    t0 = jnp.asarray(t0)
    t1 = jnp.asarray(t1)
    # Written as "not good" so that NaN fails too.
    invalid = []  # traced verdicts on traced arguments; without throw they become ok=False
    t1, bad = _check(f"t0 and t1 must be finite with t1 > t0; got t0={_show(t0)}, t1={_show(t1)}",
                     lambda b, a: ~((b > a) & (abs(a) < np.inf) & (abs(b) < np.inf)), t1, t0,
                     throw=throw)
    invalid.append(bad)
    if steps is None:
        rtol, bad_rtol = _check(f"rtol={_show(rtol)} must be finite and > 0",
                                lambda r: ~((r > 0) & (r < np.inf)), jnp.asarray(rtol), throw=throw)
        atol, bad_atol = _check(f"atol={_show(atol)} must be finite and > 0",
                                lambda a: ~((a > 0) & (a < np.inf)), jnp.asarray(atol), throw=throw)
        invalid += [bad_rtol, bad_atol]
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        dt0 = (t1 - t0) * _INITIAL_STEP_FRACTION
        limit = max_steps
    else:
        controller = diffrax.ConstantStepSize()
        limit = steps
        if _is_int_array(steps):
            steps, bad = _check(f"steps={_show(steps)} must lie in [1, max_steps={max_steps}]",
                                lambda n: (n < 1) | (n > max_steps), jnp.asarray(steps), throw=throw)
            invalid.append(bad)
            limit = max_steps
            # XLA compiles a traced span divided by a constant int steps as a product with
            # its rounded reciprocal: the same product here gives the int's solve bit for bit
            # when t0 or t1 is traced (as in training), and up to rounding otherwise.
            span = t1 - t0
            dt0 = span * (1 / steps.astype(span.dtype))
        else:
            dt0 = (t1 - t0) / steps
    if ts is None:
        saveat = diffrax.SaveAt(t1=True)
    else:
        ts, bad = _checked_ts(ts, t0, t1, throw)
        invalid.append(bad)
        saveat = diffrax.SaveAt(ts=ts, t1=True)

    def integrate(y0, args, t0, t1, dt0, controller, saveat, invalid):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            info.solver,
            t0=t0,
            t1=t1,
            dt0=None,
            y0=y0,
            args=args,
            saveat=saveat,
            stepsize_controller=_FirstStep(controller, dt0),
            adjoint=_make_adjoint(adjoint, None if steps is None else limit),
            max_steps=limit,
            throw=False,
        )
        return _finish(sol, ts, info, throw=throw, invalid=invalid)

    operands = (y0, args, t0, t1, dt0, controller, saveat, invalid)
    if _explicit_mesh():
        # Diffrax is not written for sharding-in-types: run it with the mesh's axes Auto
        # (GSPMD propagates the shardings) and hand back y in y0's own sharding.
        arrays, static = eqx.partition(operands, eqx.is_array)
        run = jax.sharding.auto_axes(lambda arrays: integrate(*eqx.combine(arrays, static)),
                                     out_sharding=_solution_specs(y0, ts))
        return run(arrays)
    return integrate(*operands)


def _explicit_mesh() -> bool:
    mesh = jax.sharding.get_abstract_mesh()
    return not mesh.empty and jax.sharding.AxisType.Explicit in mesh.axis_types


def _solution_specs(y0, ts) -> Solution:
    """PartitionSpecs of ``solve``'s output: y like y0, saved ys with a leading time axis."""
    y_specs = jax.tree_util.tree_map(lambda leaf: jax.typeof(leaf).sharding.spec, y0)
    stats = {k: P() for k in ("num_steps", "num_accepted_steps", "num_rejected_steps", "nfe")}
    if ts is None:
        return Solution(y1=y_specs, stats=stats, ok=P())
    ys = jax.tree_util.tree_map(lambda spec: P(None, *spec), y_specs,
                                is_leaf=lambda x: isinstance(x, P))
    return Solution(y1=y_specs, stats=stats, ok=P(), ts=P(), ys=ys)


def _checked_ts(ts, t0, t1, throw: bool) -> tuple[jax.Array, jax.Array]:
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(f"ts must be a non-empty 1-D array of times; got shape {ts.shape}")
    ts, unsorted = _check("ts must be strictly increasing", lambda s: s[1:] <= s[:-1], ts, throw=throw)
    ts, outside = _check(
        f"ts must lie in [t0, t1] = [{_show(t0)}, {_show(t1)}]",
        lambda s, a, b: (s[0] < a) | (s[-1] > b),
        ts, t0, t1, throw=throw,
    )
    return ts, unsorted | outside


def _finish(sol, ts, info, *, throw: bool, invalid: list) -> Solution:
    ys_all = sol.ys
    finite = jnp.all(
        jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(ys_all)])
    )
    reached = sol.result == diffrax.RESULTS.successful
    # With throw, invalid traced arguments have raised already (their own messages).
    ok = reached & finite & ~jnp.any(jnp.stack(invalid))
    if throw:
        index = jnp.where(reached, 1, 0)
        ys_all = eqx.branched_error_if(ys_all, ~ok, index, _FAILURES)
    ys_all = jax.tree_util.tree_map(lambda leaf: jnp.where(ok, leaf, jnp.nan), ys_all)

    num_steps = jnp.asarray(sol.stats["num_steps"], jnp.int32)
    nfe = info.evals_at_init + info.evals_per_step * num_steps
    stats = {
        "num_steps": num_steps,
        "num_accepted_steps": jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32),
        "num_rejected_steps": jnp.asarray(sol.stats["num_rejected_steps"], jnp.int32),
        "nfe": jnp.asarray(nfe, jnp.int32),
    }
    y1 = jax.tree_util.tree_map(lambda leaf: leaf[-1], ys_all)
    if ts is None:
        return Solution(y1=y1, stats=stats, ok=ok)
    ys = jax.tree_util.tree_map(lambda leaf: leaf[:-1], ys_all)
    return Solution(y1=y1, stats=stats, ok=ok, ts=ts, ys=ys)
