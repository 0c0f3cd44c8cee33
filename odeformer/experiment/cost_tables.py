"""What each arm of a toy-task sweep costs: its resolved width, parameters, nominal NFE and
forward FLOPs per example (:mod:`odeformer.experiment.costs`), as a multiple of a baseline
arm's; and the blocks of docs/results.md that hold these tables.

The shapes are those the runner trains (:func:`odeformer.experiment.runner.plan`: each
``model.param_budget`` resolved to a width); a table has one row per arm, the seeds of an
arm being one shape. ``python -m experiments.costs`` prints the tables.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping

import ml_collections
import numpy as np

from odeformer import _docblocks
from odeformer.experiment.costs import flops_per_evaluation, forward_flops_per_example, nominal_nfe
from odeformer.experiment.models import SolverSpec
from odeformer.experiment.runner import PlannedRun, TaskCache, plan
from odeformer.experiment.tasks import TaskData, majority_margins


@dataclasses.dataclass(frozen=True)
class ArmCost:
    """One arm of a sweep (its seeds share the shape) and its counted costs.

    Attributes:
      family, time, layers: the model (``layers`` of the discrete family only, else None).
      solver, steps, rtol: the ode family's solve (``steps`` None when adaptive, ``rtol``
        None when fixed-step); the discrete family's Euler in ``layers`` unit steps.
      regulariser: the training weights ``(kinetic, jacobian)``; (0, 0) for none.
      budget: ``model.param_budget`` (None when the width is set directly).
      width, params: the resolved width and the parameter count.
      nfe: field evaluations per forward pass (None when adaptive).
      flops_per_evaluation: FLOPs per example of one field evaluation (all tokens).
      flops: forward FLOPs per example (None when adaptive).
    """

    family: str
    time: str
    layers: int | None
    solver: str
    steps: int | None
    rtol: float | None
    regulariser: tuple[float, float]
    budget: int | None
    width: int
    params: int
    nfe: int | None
    flops_per_evaluation: int
    flops: float | None

    @property
    def label(self) -> str:
        if self.family == "discrete":
            return f"discrete, {self.layers} layer{'s' * (self.layers != 1)}"
        solve = (f"{self.solver} rtol {self.rtol:g}" if self.steps is None
                 else f"{self.solver} {self.steps} step{'s' * (self.steps != 1)}")
        kinetic, jacobian = self.regulariser
        extra = f", kinetic {kinetic:g}, Jacobian {jacobian:g}" if kinetic or jacobian else ""
        return f"ODE {self.time}, {solve}{extra}"


@dataclasses.dataclass(frozen=True)
class CostSection:
    """How a section's table reads its arms: ``baseline(arm)`` gives the fields (of
    :class:`ArmCost`) of the one arm whose FLOPs divide ``arm``'s, described by ``ratio``."""

    baseline: Callable[[ArmCost], dict]
    ratio: str


# The toy experiments of docs/results.md (configs/<name>.py) and their baselines.
SECTIONS: dict[str, CostSection] = {
    "depth_vs_width": CostSection(
        lambda a: dict(family="discrete", budget=a.budget, nfe=a.nfe),
        "the discrete model of the same budget and NFE (K layers for K Euler steps)"),
    "param_efficiency": CostSection(
        lambda a: dict(family="discrete", budget=a.budget, layers=4),
        "the 4-layer discrete model of the same budget"),
    "stability": CostSection(lambda a: dict(family="discrete"), "the 4-layer discrete model"),
    "invariance": CostSection(lambda a: dict(solver="euler", steps=1), "Euler in 1 step"),
    "adaptive": CostSection(lambda a: dict(solver="euler", steps=1),
                            "Euler in 1 step (adaptive arms: FLOPs/evaluation x their measured NFE)"),
}


def _arm(planned: PlannedRun, data: TaskData) -> ArmCost:
    c, shape = planned.run.config, planned.shape
    discrete = shape.family == "discrete"
    steps = None if c.solver.adaptive and not discrete else c.solver.steps
    nfe = nominal_nfe(shape, SolverSpec(name=c.solver.name, steps=steps))
    return ArmCost(
        family=shape.family, time=shape.time, layers=shape.layers if discrete else None,
        solver=c.solver.name, steps=steps, rtol=c.solver.rtol if steps is None else None,
        regulariser=(c.train.kinetic, c.train.jacobian),
        budget=c.model.param_budget or None, width=shape.width, params=planned.params, nfe=nfe,
        flops_per_evaluation=data.seq_len * flops_per_evaluation(shape, data.seq_len),
        flops=None if nfe is None else forward_flops_per_example(shape, data, nfe))


def arm_costs(config: ml_collections.ConfigDict) -> tuple[list[ArmCost], TaskData]:
    """The arms of ``config``'s sweep, grouped by budget in sweep order, and their task.

    Raises:
      ValueError: if the sweep's runs do not share one task, or the seeds of an arm were
        given different shapes.
    """
    tasks = TaskCache()
    planned = plan(config, tasks)
    data = {json.dumps(p.run.config.task.to_dict(), sort_keys=True) for p in planned}
    if len(data) != 1:
        raise ValueError(f"sweep {config.name!r} trains on {len(data)} tasks; a cost table reads one")
    data = tasks.get_task(planned[0].run.config.task)
    arms: dict[tuple, ArmCost] = {}
    for p in planned:
        arm = _arm(p, data)
        key = (arm.label, arm.budget)
        if arms.setdefault(key, arm) != arm:
            raise ValueError(f"the seeds of arm {arm.label!r} (budget {arm.budget}) resolve to different "
                             f"shapes: {arms[key]} and {arm}")
    return sorted(arms.values(), key=lambda a: a.budget or 0), data


def baseline_of(arm: ArmCost, arms: list[ArmCost], section: CostSection) -> ArmCost:
    """The one arm of ``arms`` that ``section`` makes ``arm``'s baseline."""
    fields = section.baseline(arm)
    found = [a for a in arms if all(getattr(a, k) == v for k, v in fields.items())]
    if len(found) != 1:
        raise ValueError(f"{len(found)} arms match the baseline {fields} of {arm.label!r}; one must")
    return found[0]


def task_line(config: ml_collections.ConfigDict, data: TaskData) -> str:
    """The task's sizes and, for ``majority``, how its test labels are decided."""
    line = (f"Task `{config.task.name}`: vocabulary {data.vocab_size}, {data.seq_len} tokens, "
            f"{data.test['label'].shape[0]:,} test sequences")
    if config.task.name != "majority":
        return line + "."
    labels = np.asarray(data.test["label"])
    margins = majority_margins(data.test["tokens"], data.vocab_size)
    line += (f"; the most common test label is {np.bincount(labels).max() / labels.size:.3f} of them; "
             f"{(margins <= 1).mean():.3f} of the test labels are decided by a margin of at most one "
             f"count ({(margins == 0).mean():.3f} by a tie)")
    if config.evaluate.stability:
        first = config.evaluate.examples
        line += f", {(margins[:first] <= 1).mean():.3f} of the first {first} (the stability measurements')"
    return line + "."


def _count(value) -> str:
    return "—" if value is None else f"{round(value):,}"


def render(config: ml_collections.ConfigDict, section: CostSection) -> str:
    """The markdown of ``config``'s cost table: a task line, the table, what the ratio divides by."""
    arms, data = arm_costs(config)
    budgets = any(a.budget is not None for a in arms)
    head = ["arm", *(["budget"] * budgets), "width", "parameters", "NFE", "FLOPs/evaluation",
            "FLOPs/example", "FLOPs ÷ baseline"]
    lines = [task_line(config, data), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm in arms:
        base = baseline_of(arm, arms, section)
        ratio = "—" if arm.flops is None else f"{arm.flops / base.flops:.2f}"
        cells = [arm.label, *([_count(arm.budget)] * budgets), str(arm.width), _count(arm.params),
                 "adaptive" if arm.nfe is None else str(arm.nfe), _count(arm.flops_per_evaluation),
                 _count(arm.flops), ratio]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Forward FLOPs per example, counted by `odeformer.experiment.costs` (2 per multiply-add "
                  f"of the matrix products and attention); baseline: {section.ratio}."]
    return "\n".join(lines)


def docs_blocks(text: str) -> dict[str, str]:
    """The cost blocks of a document: experiment name -> the text between its markers."""
    return _docblocks.blocks(text, "costs")


def replace_blocks(text: str, rendered: Mapping[str, str]) -> str:
    """``text`` with the block of each experiment in ``rendered`` replaced by its render.

    Raises:
      ValueError: naming an experiment whose markers ``text`` lacks.
    """
    for name, block in rendered.items():
        text = _docblocks.replace_block(text, "costs", name, block)
    return text
