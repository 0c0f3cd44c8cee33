"""Forward FLOPs per token of a language model, counted from its shapes.

The count is of matrix products and attention, 2 FLOPs per multiply-add (the convention of
Kaplan et al. and nanoGPT's MFU estimate); LayerNorms, softmax, GELU and the solver's vector
arithmetic are left out. With width ``d``, context ``T`` (the causal score matrix is computed
in full, ``T x T``, and counted so), MLP ratio ``r`` and vocabulary ``V``:

- one attention evaluation: ``2 (3 d^2 + d^2)`` projections + ``2 (2 T d)`` scores and values;
- one MLP evaluation: ``2 (2 r d^2)``;
- the output head (tied embedding): ``2 d V``; the rk2_gated gate: ``2 (2 d)`` per layer.

A forward pass evaluates attention ``nfe`` times (``odeformer.language.models``: NFE counts
attention evaluations) and the MLP once per attention evaluation, twice in the ``strang``
form. Training FLOPs are taken as 3x the forward's (the backward pass costs about twice the
forward), the usual convention; a checkpointed solve recomputes more than that.
"""

from __future__ import annotations

from odeformer._solvers import solver_info
from odeformer.language.models import LanguageModel


def attention_flops(width: int, context: int) -> int:
    """FLOPs per token of one attention evaluation."""
    return 2 * 4 * width * width + 2 * 2 * context * width


def mlp_flops(width: int, mlp_ratio: int) -> int:
    """FLOPs per token of one MLP evaluation."""
    return 2 * 2 * mlp_ratio * width * width


def forward_flops_per_token(model: LanguageModel, nfe: float, context: int | None = None) -> float:
    """Forward FLOPs per token of ``model`` when its body evaluates attention ``nfe`` times
    (a solve's measured NFE; for ``gpt`` ``layers``, for ``rk2_gated`` ``2 layers``) over a
    ``context`` of tokens (default: the model's ``block_size``)."""
    d, context = model.width, model.block_size if context is None else context
    mlps = 2 if model.family in ("ode", "smooth") and model.form == "strang" else 1
    per_evaluation = attention_flops(d, context) + mlps * mlp_flops(d, model.mlp_ratio)
    gates = 2 * 2 * d * model.layers if model.family == "rk2_gated" else 0
    return float(nfe * per_evaluation + gates + 2 * d * model.vocab_size)


def nominal_nfe(model: LanguageModel) -> int | None:
    """Attention evaluations of one forward pass known from the structure alone: layers,
    twice that for ``rk2_gated``, steps x stages of a fixed-step solve; None when adaptive."""
    if model.family == "gpt":
        return model.layers
    if model.family == "rk2_gated":
        return 2 * model.layers
    if model.flow.steps is None:
        return None
    return model.flow.steps * solver_info(model.flow.solver).evals_per_step
