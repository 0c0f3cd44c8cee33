"""Solver invariance (Ott et al. 2021): a trained model re-solved by other solvers.

A trained classifier's parameters do not depend on its solver: the solver is static
structure of the graphdef. :func:`with_solver` swaps it (the parameters are untouched), so
the same weights can be evaluated with finer fixed-step solvers or an adaptive one. If the
model learned a flow, its accuracy holds; if it learned a discrete map that only works
at its training step size, accuracy drops. The runner reports, for a run whose config
lists ``evaluate.solvers``:

- ``test_accuracy@<spec>``, ``test_loss@<spec>``, ``nfe_forward@<spec>`` for every spec;
- ``invariance_gap = test_accuracy - test_accuracy@<last spec>``: the drop in accuracy
  when the training solver is replaced by the **last** listed solver, the reference
  (list the most accurate one last, e.g. ``dopri5:1e-6``). Positive: worse under the
  reference solver.

Specs are ``"name:steps"`` (fixed steps, an integer >= 1, any solver of
``odeformer.SOLVERS``) or ``"name:rtol"`` (adaptive, a float in (0, 1) such as ``1e-6``;
``atol = rtol * 1e-3``; only solvers with an error estimate). Steps span the whole
integration interval: ``[0, t1]`` for the ``ode`` family and ``[0, layers]`` for the
``discrete`` family, which is a field piecewise constant in time integrated by Euler in
unit steps. Re-solving that field finely asks whether the L-layer network is a
discretisation of the ODE it defines (Sander et al. 2022). That field jumps at every
integer time, so Euler with a multiple of ``layers`` steps and adaptive solvers (which
shrink their steps at the jumps) converge to its ODE, while fixed-step multi-stage solvers
evaluate a stage at the jump and converge only at first order. A spec whose solve fails
(``max_steps`` reached, non-finite state) gets NaN columns.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

import jax.numpy as jnp
from flax import nnx

from odeformer._solvers import ADAPTIVE_SOLVERS, SOLVERS

ATOL_PER_RTOL = 1e-3  # an adaptive spec's atol = rtol * ATOL_PER_RTOL


@dataclasses.dataclass(frozen=True)
class EvalSolver:
    """One test-time solver: ``steps`` (fixed) or ``rtol`` and ``atol`` (adaptive)."""

    spec: str
    name: str
    steps: int | None = None
    rtol: float | None = None
    atol: float | None = None


def parse_solver(spec, where: str = "evaluate.solvers") -> EvalSolver:
    """``"euler:64"`` -> fixed 64 steps; ``"dopri5:1e-6"`` -> adaptive, rtol 1e-6.

    Raises:
      ValueError: naming ``where``, what was wrong and what is allowed.
    """
    form = "'name:steps' (e.g. 'euler:64') or 'name:rtol' (e.g. 'dopri5:1e-6')"
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"{where} entry {spec!r} must be a string {form}")
    name, value = (part.strip() for part in spec.split(":"))
    if name not in SOLVERS:
        raise ValueError(f"{where} entry {spec!r}: solver {name!r} is not one of {', '.join(SOLVERS)}")
    if re.fullmatch(r"[0-9]+", value):
        steps = int(value)
        if steps < 1:
            raise ValueError(f"{where} entry {spec!r}: steps must be an integer >= 1")
        return EvalSolver(f"{name}:{steps}", name, steps=steps)  # one spelling per solve
    try:
        rtol = float(value)
    except ValueError:
        raise ValueError(f"{where} entry {spec!r}: {value!r} is neither an integer step count nor "
                         f"a float rtol; use {form}") from None
    if not 0 < rtol < 1:
        raise ValueError(f"{where} entry {spec!r}: rtol must lie in (0, 1); an integer means steps")
    if name not in ADAPTIVE_SOLVERS:
        raise ValueError(f"{where} entry {spec!r}: {name} has no error estimate, so it cannot be "
                         f"adaptive; use 'name:steps' or one of {', '.join(ADAPTIVE_SOLVERS)}")
    return EvalSolver(f"{name}:{value}", name, rtol=rtol, atol=rtol * ATOL_PER_RTOL)


def parse_solvers(specs, where: str = "evaluate.solvers") -> tuple[EvalSolver, ...]:
    """Parses every spec of a tuple (strictly: a bare string is refused, as are repeats)."""
    if not isinstance(specs, (tuple, list)):
        raise ValueError(f"{where}={specs!r} must be a tuple of strings such as ('euler:64', 'dopri5:1e-6')")
    parsed = tuple(parse_solver(s, where) for s in specs)
    if len({p.spec for p in parsed}) != len(parsed):
        raise ValueError(f"{where}={tuple(specs)!r} lists a solver twice")
    return parsed


def with_solver(graphdef: nnx.GraphDef, params: nnx.State, *, name: str, steps: int | None,
                rtol: float | None = None, atol: float | None = None,
                adjoint: str | None = None) -> nnx.GraphDef:
    """The graphdef of the same classifier whose flow is solved by another solver.

    Only static attributes of the model's ``ODEBlock`` change; ``params`` is not copied
    or modified. ``rtol``/``atol`` are stored for the ``discrete`` family, whose flow
    ignores the traced ones; the ``ode`` family takes them from ``hyper`` at call time.
    ``adjoint`` (default: keep) e.g. ``"direct"`` for forward-mode derivatives.
    A fixed-step ``steps`` becomes the block's bound: a ``hyper`` with a ``"steps"`` entry
    (every runner state's) must carry this count too, as :func:`solver_report` does, or
    the flow solves with the training count.
    """
    model = nnx.merge(graphdef, params)
    block = model.block
    block.solver, block.steps, block.rtol, block.atol = name, steps, rtol, atol
    if adjoint is not None:
        block.adjoint = adjoint
    return nnx.graphdef(model)


def solver_report(solvers: Sequence[EvalSolver], graphdef: nnx.GraphDef, params: nnx.State,
                  hyper: dict, test_accuracy: float,
                  evaluate_with: Callable[[nnx.GraphDef, dict], dict]) -> dict[str, float]:
    """The ``@<spec>`` columns and ``invariance_gap`` of one trained run.

    Args:
      solvers: parsed ``evaluate.solvers``; the last one is the reference.
      graphdef, params, hyper: the trained model and its traced solver values
        (``{"rtol", "atol", "t1", "steps"}``; ``t1`` is kept, tolerances replaced for
        adaptive specs and ``steps`` for fixed-step ones).
      test_accuracy: the accuracy under the training solver.
      evaluate_with: ``(graphdef, hyper) -> {"loss", "accuracy", "nfe", "ok"}`` over the
        test split (``odeformer.experiment.training.evaluate`` with an eval step for that graphdef).
    """
    row = {}
    for solver in solvers:
        solved = with_solver(graphdef, params, name=solver.name, steps=solver.steps,
                             rtol=solver.rtol, atol=solver.atol)
        values = dict(hyper)
        if solver.steps is None:
            dtype = jnp.result_type(hyper["rtol"])
            values.update(rtol=jnp.asarray(solver.rtol, dtype), atol=jnp.asarray(solver.atol, dtype))
        elif "steps" in hyper:  # the spec's count, not the training run's
            values["steps"] = jnp.asarray(solver.steps, jnp.result_type(hyper["steps"]))
        result = evaluate_with(solved, values)
        ok = bool(result["ok"])
        row[f"test_accuracy@{solver.spec}"] = result["accuracy"] if ok else math.nan
        row[f"test_loss@{solver.spec}"] = result["loss"] if ok else math.nan
        row[f"nfe_forward@{solver.spec}"] = result["nfe"] if ok else math.nan
    if solvers:
        row["invariance_gap"] = test_accuracy - row[f"test_accuracy@{solvers[-1].spec}"]
    return row
