"""Forward FLOPs per example of a sequence classifier, counted from its shape.

The conventions of :mod:`odeformer.language.flops`, whose per-evaluation counts this reuses:
2 FLOPs per multiply-add of the matrix products and of attention (the full ``n x n`` score
matrix of a sequence of ``n`` tokens), while LayerNorms, softmax, GELU, bias additions, the
mean readout's mean, the position embedding's addition and the solver's vector arithmetic
are left out; the token embedding is a lookup (no FLOPs). One field evaluation
(``odeformer.TransformerBlockField``: attention and MLP read the same state) costs, per
token, ``attention_flops(width, n) + mlp_flops(width, mlp_ratio)``; a forward pass makes
``nfe`` of them on each of the ``n`` tokens, then the head's ``2 width num_classes`` once.

The weights' time dependence (``odeformer._time_dependence``):

- ``tied`` and ``piecewise`` (the discrete family: one weight set per layer, selected by
  indexing) add nothing.
- ``concat`` feeds ``t`` to every linear map as an extra input feature, counted as such:
  each map has ``in_features + 1`` inputs, ``2 out_features`` more FLOPs per token (for the
  four maps ``2 (3 + 1 + mlp_ratio + 1) width``). The implementation forms ``t W_t`` once per
  evaluation and adds it to every token, so it computes fewer multiplications than counted:
  the count is that of the function ``[x, t] W``.
- ``smooth`` combines its ``basis`` weight sets into the weights at ``t`` once per evaluation
  for the whole batch, not per example; that cost falls per example as the batch grows and
  is left out.
"""

from __future__ import annotations

from odeformer._solvers import solver_info
from odeformer.experiment.models import FAMILIES, ModelShape, SolverSpec
from odeformer.experiment.tasks import TaskData
from odeformer.language.flops import attention_flops, mlp_flops


def _check_family(shape: ModelShape) -> None:
    if shape.family not in FAMILIES:
        raise ValueError(f"model.family={shape.family!r} is not a sequence classifier's; the count covers "
                         f"{', '.join(FAMILIES)} (language models: odeformer.language.flops)")


def time_mode(shape: ModelShape) -> str:
    """The time dependence of the field's weights: ``piecewise`` for the discrete family,
    ``shape.time`` for the ode family."""
    _check_family(shape)
    return "piecewise" if shape.family == "discrete" else shape.time


def flops_per_evaluation(shape: ModelShape, seq_len: int) -> int:
    """FLOPs per token of one field evaluation over a sequence of ``seq_len`` tokens."""
    d = shape.width
    flops = attention_flops(d, seq_len) + mlp_flops(d, shape.mlp_ratio)
    if time_mode(shape) == "concat":
        # The time column of the qkv, attention-output, MLP-up and MLP-down maps.
        flops += 2 * (3 * d + d + shape.mlp_ratio * d + d)
    return flops


def forward_flops_per_example(shape: ModelShape, data: TaskData, nfe: float) -> float:
    """Forward FLOPs per example of the classifier of ``shape`` on ``data``'s sequences when
    its flow makes ``nfe`` field evaluations (:func:`nominal_nfe`, or a solve's measured
    NFE): ``seq_len * nfe * flops_per_evaluation + 2 * width * num_classes``. The ``concat``
    mode's time input counts as one more input feature of every linear map; the ``smooth``
    mode's combination of its weight sets, made once per evaluation for the whole batch, is
    left out (see the module docstring).

    Raises:
      ValueError: if ``shape.family`` is not a sequence classifier's.
    """
    n = data.seq_len
    return float(n * nfe * flops_per_evaluation(shape, n) + 2 * shape.width * data.num_classes)


def nominal_nfe(shape: ModelShape, solver: SolverSpec) -> int | None:
    """Field evaluations of one forward pass known from the structure alone: ``layers`` for
    the discrete family (one unit Euler step per layer); for the ode family a fixed-step
    ``solver``'s evaluations before the first step (FSAL methods) plus ``steps x`` its
    evaluations per step, as ``odeformer.solve`` counts ``nfe``; None when ``solver.steps``
    is None (adaptive: the count depends on the solve)."""
    _check_family(shape)
    if shape.family == "discrete":
        return shape.layers
    if solver.steps is None:
        return None
    info = solver_info(solver.name)
    return info.evals_at_init + solver.steps * info.evals_per_step
