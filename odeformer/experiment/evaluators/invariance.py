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
``odeformer.SOLVERS``), ``"name:xK"`` (fixed, K times the run's training steps: ``"euler:x2"``
halves the training step size whatever it was, so one spec serves a sweep over step counts;
``"train:x2"`` is the run's own solver at twice its steps)
or ``"name:rtol"`` (adaptive, a float in (0, 1) such as ``1e-6``; ``atol = rtol * 1e-3``; only
solvers with an error estimate). Steps span the whole integration interval: ``[0, t1]`` for
the ``ode`` family and ``[0, layers]`` for the ``discrete`` family, which is a field piecewise
constant in time integrated by Euler in unit steps. Re-solving that field finely asks whether
the L-layer network is a discretisation of the ODE it defines (Sander et al. 2022). That field
jumps at every integer time, so Euler with a multiple of ``layers`` steps and adaptive solvers
(which shrink their steps at the jumps) converge to its ODE, while fixed-step multi-stage
solvers evaluate a stage at the jump and converge only at first order. A spec whose solve
fails (``max_steps`` reached, non-finite state) gets NaN columns.

A language model (``ode`` and ``smooth`` families) is re-solved on its validation split
(``val_loss@<spec>``, ``val_accuracy@<spec>``, ``nfe_forward@<spec>``), and its gap is one of
loss: ``invariance_gap_loss = val_loss@<last spec> - val_loss`` (nats per character; positive:
worse under the reference). With ``evaluate.chars`` only the split's first characters are
re-solved, and the training solver's loss over the same characters is ``val_loss@train``,
the gap's baseline.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

import jax.numpy as jnp
from flax import nnx

from odeformer._block import ODEBlock
from odeformer._solvers import ADAPTIVE_SOLVERS, SOLVERS

ATOL_PER_RTOL = 1e-3  # an adaptive spec's atol = rtol * ATOL_PER_RTOL
TRAINING_SOLVER = "train"  # "train:xK": the run's own solver at K times its steps


@dataclasses.dataclass(frozen=True)
class EvalSolver:
    """One test-time solver: ``steps`` (fixed) or ``rtol`` and ``atol`` (adaptive)."""

    spec: str
    name: str
    steps: int | None = None
    rtol: float | None = None
    atol: float | None = None
    factor: int | None = None  # "name:xK": K times the training steps

    def for_run(self, training_solver: str, training_steps: int | None) -> EvalSolver:
        """This solver for a run trained by ``training_solver`` in ``training_steps`` fixed
        steps: a ``"name:xK"`` spec's count becomes K times that, and the name ``train`` the
        training solver's; other specs are returned unchanged.

        Raises:
          ValueError: a relative spec for a run without a fixed step count.
        """
        if self.factor is None:
            return self
        if training_steps is None:
            raise ValueError(f"evaluate.solvers entry {self.spec!r} multiplies the training steps, and "
                             "this run's solver is adaptive: use 'name:steps' or 'name:rtol'")
        name = training_solver if self.name == TRAINING_SOLVER else self.name
        return dataclasses.replace(self, name=name, steps=self.factor * training_steps)


def parse_solver(spec, where: str = "evaluate.solvers") -> EvalSolver:
    """``"euler:64"`` -> fixed 64 steps; ``"euler:x2"`` -> twice the training steps;
    ``"dopri5:1e-6"`` -> adaptive, rtol 1e-6.

    Raises:
      ValueError: naming ``where``, what was wrong and what is allowed.
    """
    form = "'name:steps' (e.g. 'euler:64'), 'name:xK' (e.g. 'euler:x2') or 'name:rtol' (e.g. 'dopri5:1e-6')"
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"{where} entry {spec!r} must be a string {form}")
    name, value = (part.strip() for part in spec.split(":"))
    relative = re.fullmatch(r"x([0-9]+)", value)
    if name == TRAINING_SOLVER and not relative:
        raise ValueError(f"{where} entry {spec!r}: {TRAINING_SOLVER!r} names the training solver at a "
                         "multiple of its steps: 'train:xK'")
    if name not in SOLVERS and name != TRAINING_SOLVER:
        also = f" (or {TRAINING_SOLVER!r} with 'xK')"
        raise ValueError(f"{where} entry {spec!r}: solver {name!r} is not one of {', '.join(SOLVERS)}{also}")
    if relative:
        factor = int(relative.group(1))
        if factor < 1:
            raise ValueError(f"{where} entry {spec!r}: the factor of the training steps must be >= 1")
        return EvalSolver(f"{name}:x{factor}", name, factor=factor)
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


def flow_block(model: nnx.Module) -> ODEBlock:
    """The ``ODEBlock`` of a classifier (``model.block``) or of a language model of the ``ode``
    and ``smooth`` families (``model.flow``).

    Raises:
      ValueError: the model has none (``gpt``, ``rk2_gated``: stacks of layers, not a solve).
    """
    block = getattr(model, "block", None) or getattr(model, "flow", None)
    if not isinstance(block, ODEBlock):
        raise ValueError(f"{type(model).__name__} of family {getattr(model, 'family', '?')!r} has no "
                         "flow to re-solve")
    return block


def with_solver(graphdef: nnx.GraphDef, params: nnx.State, *, name: str, steps: int | None,
                rtol: float | None = None, atol: float | None = None,
                adjoint: str | None = None) -> nnx.GraphDef:
    """The graphdef of the same model whose flow (:func:`flow_block`) is solved by another solver.

    Only static attributes of the model's ``ODEBlock`` change; ``params`` is not copied
    or modified. ``rtol``/``atol`` are stored for the ``discrete`` family, whose flow
    ignores the traced ones; the ``ode`` family takes them from ``hyper`` at call time.
    ``adjoint`` (default: keep) e.g. ``"direct"`` for forward-mode derivatives.
    A fixed-step ``steps`` becomes the block's bound: a ``hyper`` with a ``"steps"`` entry
    (every runner state's) must carry this count too, as :func:`solver_report` does, or
    the flow solves with the training count.
    """
    model = nnx.merge(graphdef, params)
    block = flow_block(model)
    block.solver, block.steps, block.rtol, block.atol = name, steps, rtol, atol
    if adjoint is not None:
        block.adjoint = adjoint
    return nnx.graphdef(model)


def solver_report(solvers: Sequence[EvalSolver], graphdef: nnx.GraphDef, params: nnx.State,
                  hyper: dict, baseline: float,
                  evaluate_with: Callable[[nnx.GraphDef, dict], dict], *,
                  split: str = "test", gap: str = "accuracy") -> dict[str, float]:
    """The ``@<spec>`` columns and the invariance gap of one trained run.

    Args:
      solvers: parsed ``evaluate.solvers``; the last one is the reference. A ``"name:xK"``
        spec is resolved against the training steps (the block's ``steps``).
      graphdef, params, hyper: the trained model and its traced solver values
        (``{"rtol", "atol", "t1", "steps"}``; ``t1`` is kept, tolerances replaced for
        adaptive specs and ``steps`` for fixed-step ones).
      baseline: the metric under the training solver (``gap``'s: test accuracy, or
        validation loss).
      evaluate_with: ``(graphdef, hyper) -> {"loss", "accuracy", "nfe", "ok"}`` over the
        split (``odeformer.experiment.training.evaluate`` or ``evaluate_stream`` with an eval
        step for that graphdef).
      split: the columns' prefix, ``"test"`` (classifiers) or ``"val"`` (language models).
      gap: ``"accuracy"``: ``invariance_gap = baseline - accuracy@reference``; ``"loss"``:
        ``invariance_gap_loss = loss@reference - baseline``. Positive: worse under the reference.
    """
    row = {}
    block = flow_block(nnx.merge(graphdef, params))
    # The block's count is the bound of the runs sharing its compile; hyper holds the run's own.
    training_steps = None if block.steps is None else int(hyper.get("steps", block.steps))
    for solver in (s.for_run(block.solver, training_steps) for s in solvers):
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
        row[f"{split}_accuracy@{solver.spec}"] = result["accuracy"] if ok else math.nan
        row[f"{split}_loss@{solver.spec}"] = result["loss"] if ok else math.nan
        row[f"nfe_forward@{solver.spec}"] = result["nfe"] if ok else math.nan
    if solvers:
        reference = solvers[-1].spec
        if gap == "accuracy":
            row["invariance_gap"] = baseline - row[f"{split}_accuracy@{reference}"]
        else:
            row["invariance_gap_loss"] = row[f"{split}_loss@{reference}"] - baseline
    return row
