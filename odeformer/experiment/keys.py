"""The config keys of a run: each key's default, meaning and kind, and the kinds themselves.

``odeformer.experiment.config`` builds the schema, validation and normalisation on these
tables; the task keys come from each task's registration (``odeformer.experiment.tasks``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from odeformer._integrate import ADJOINTS
from odeformer._solvers import SOLVERS
from odeformer._time_dependence import TIME_MODES
from odeformer.categorical.bags import COMBINERS
from odeformer.categorical.embeddings import EMBEDDINGS, INITS
from odeformer.categorical.sparse import EMBEDDING_OPTIMIZERS
from odeformer.experiment.models import ALL_FAMILIES, READOUTS
from odeformer.experiment.studies import STUDIES
from odeformer.experiment.tasks import TASKS
from odeformer.experiment.training import DECAY
from odeformer.language.models import DTYPES as LANGUAGE_DTYPES
from odeformer.language.models import FORMS

KIND_DOCS: dict[str, str] = {
    "structural": "part of the compiled train step; runs that differ in it compile anew.",
    "traced": "a value fed to the compiled step; runs that differ only in it share one compile.",
    "switch": "whether it is > 0 is structural; its value is traced.",
    "evaluation": "read after training only (other solvers, stability).",
    "host": "read by the Python loop only (logging, checkpoints).",
    "meta": "labels, the sweep, settings of the analysis; not part of a run's identity.",
    "study": "a numerical study's setting.",
}
KINDS = tuple(KIND_DOCS)


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key.

    Attributes:
      default: the base config's value.
      doc: what it means, with units.
      kind: one of :data:`KINDS`.
      choices: a function returning the allowed values (registries fill up at import), or None.
      minimum: ``(bound, strict)``: values must be > bound (strict) or >= bound; or None.
      added: a key added after runs were committed: at its default it is left out of the run
        id (``odeformer.experiment.sweeps.run_id``), so every earlier run keeps its id and a
        committed table still resumes. Its default must be what earlier runs did. (Task and
        study keys are declared as tuples, without this flag.)
    """

    default: Any
    doc: str
    kind: str
    choices: Callable[[], tuple] | None = None
    minimum: tuple[float, bool] | None = None
    added: bool = False


def _positive(default, doc, kind="structural", **kw) -> Key:
    return Key(default, doc, kind, minimum=(0, True), **kw)


def _non_negative(default, doc, kind="structural", **kw) -> Key:
    return Key(default, doc, kind, minimum=(0, False), **kw)


def _tasks() -> tuple:
    return tuple(sorted(TASKS))


def experiments() -> tuple[str, ...]:
    """Allowed values of ``config.experiment``: training, or a registered study."""
    return ("train", *sorted(STUDIES))


TOP: dict[str, Key] = {
    "name": Key("base", "Label of the sweep; the default workdir is runs/<name>.", "meta"),
    "experiment": Key("train", "What a run does: 'train' or the name of a numerical study.", "meta",
                      choices=experiments),
    "seed": Key(0, "Root PRNG seed of a run: model initialisation and batch order (split by "
                "purpose, folded in per step).", "traced"),
    "sweep": Key({}, "Axes: a nested section of tuples whose dotted paths name the keys swept; "
                 "the runs are their product.", "meta"),
    "sweep_zip": Key((), "Tuples of swept keys that vary together (zipped) instead of as a product.",
                     "meta"),
}

ANALYSIS: dict[str, Key] = {
    "analysis.targets": Key((0.6, 0.7, 0.8), "Test accuracies at which a notebook compares the "
                            "parameters each family needs (fixed before the runs).", "meta"),
    "analysis.resamples": Key(2000, "Bootstrap resamples of a notebook's confidence intervals.", "meta"),
}

TRAIN: dict[str, Key] = {
    "task.name": Key("associative_recall", "Task of odeformer.experiment.tasks.TASKS.", "structural",
                     choices=_tasks),
    "task.seed": Key(0, "Seed of the task's data.", "traced"),
    "model.family": Key("ode", "Classifiers: 'ode' (one block integrated over depth) or 'discrete' "
                        "(a stack of independent blocks, one unit Euler step each); tabular tasks also "
                        "'mlp' (a ReLU network on the summed feature tokens, "
                        "odeformer.experiment.tabular_mlp). Language models: "
                        "'gpt', 'ode', 'smooth' or 'rk2_gated' (odeformer.language.models).", "structural",
                        choices=lambda: ALL_FAMILIES),
    "model.width": _positive(32, "Token width d; resolved from model.param_budget when that is > 0."),
    "model.heads": _positive(4, "Attention heads; must divide the width."),
    "model.mlp_ratio": _positive(2, "MLP hidden width as a multiple of the width."),
    "model.time": Key("tied", "How the ode family's weights depend on depth t: "
                      + ", ".join(TIME_MODES) + ".", "structural", choices=lambda: TIME_MODES),
    "model.pieces": _positive(4, "Pieces of a 'piecewise' field (weights constant on each)."),
    "model.basis": _positive(4, "Chebyshev basis size of a 'smooth' field."),
    "model.layers": _positive(4, "Blocks of the discrete, gpt and rk2_gated families (the discrete "
                              "family's depth t1 = layers); dense layers of the mlp family."),
    "model.form": Key("parallel", "Language models' ode and smooth families: the block as one field "
                      "('parallel') or split per fixed step ('sequential': attention then MLP; "
                      "'strang': half MLP, attention, half MLP).", "structural", choices=lambda: FORMS),
    "model.dtype": Key("float32", "Language models: the dtype matmuls compute in; 'bfloat16' keeps "
                       "float32 parameters, optimiser state, loss and residual stream (the solver's "
                       "state).", "structural", choices=lambda: LANGUAGE_DTYPES),
    "model.dropout": _non_negative(0.0, "Language models: dropout rate of the embeddings and of each "
                                   "sub-field's output, in training (< 1)."),
    "model.readout": Key("last", "Classifier input: the 'last' token or the 'mean' of tokens.",
                         "structural", choices=lambda: READOUTS),
    "model.param_budget": _non_negative(0, "Trainable parameters to match (within 5%) by choosing "
                                        "the width (language models: non-embedding parameters); 0 "
                                        "keeps model.width."),
    "model.resolve": Key("width", "What model.param_budget resolves: the 'width', or the 'layers' of the "
                         "gpt and rk2_gated families at model.width.", "structural",
                         choices=lambda: ("width", "layers")),
    "model.embedding": Key("table", "Tabular tasks: how categorical ids become vectors.", "structural",
                           choices=lambda: EMBEDDINGS),
    "model.embed_dim": _non_negative(0, "Tabular tasks: embedding size per feature; 0 = a rule of "
                                     "thumb from the cardinality."),
    "model.compression": _positive(8, "Tabular tasks, 'hashed'/'qr' embeddings: rows saved by that "
                                   "factor."),
    "model.embed_init": Key("kind", "Tabular tasks: initial scale of the tables, 'kind' (each kind's "
                            "own: std 1/sqrt(dim) for a table) or 'onehot' (std 1/sqrt(cardinality), the "
                            "one-hot arm's; kinds table and onehot).", "structural", choices=lambda: INITS),
    "model.combiner": Key("sum", "Tabular tasks with multi-valued features: how a bag's vectors are "
                          "pooled.", "structural", choices=lambda: COMBINERS),
    "solver.name": Key("rk4", "Solver of odeformer.SOLVERS.", "structural", choices=lambda: SOLVERS),
    "solver.steps": _positive(4, "Fixed steps over [0, t1] (fixed-step solves); traced up to the "
                              "largest count of the runs sharing a compile.", "traced"),
    "solver.adaptive": Key(False, "Adaptive step size (needs a solver with an error estimate).",
                           "structural"),
    "solver.rtol": _positive(1e-3, "Relative tolerance (adaptive solves).", "traced"),
    "solver.atol": _positive(1e-6, "Absolute tolerance (adaptive solves).", "traced"),
    "solver.t1": _positive(1.0, "End of the depth interval [0, t1].", "traced"),
    "solver.adjoint": Key("checkpoint", "How gradients flow through the solve: "
                          + ", ".join(ADJOINTS) + ".", "structural", choices=lambda: ADJOINTS),
    "solver.max_steps": _positive(4096, "Most steps an adaptive solve may take.", "structural"),
    "train.num_steps": _positive(300, "Optimiser steps (the schedule's length)."),
    "train.batch_size": _positive(64, "Examples per step."),
    "train.learning_rate": _positive(1e-2, "Peak AdamW learning rate.", "traced"),
    "train.weight_decay": _non_negative(1e-2, "AdamW weight decay.", "traced"),
    "train.decay": Key("all", "Which parameters weight decay applies to: 'all', or 'matrices' (linear "
                       "kernels and embedding tables; not LayerNorm scales or biases).", "structural",
                       choices=lambda: DECAY),
    "train.embedding_optimizer": Key("dense", "Tabular tasks: how embedding tables are updated: "
                                     "'dense' (AdamW on every row, as the rest), 'lazy_adam' (AdamW on "
                                     "the rows a batch touched) or 'rowwise_adagrad' (one accumulator "
                                     "per row, no weight decay).", "structural",
                                     choices=lambda: EMBEDDING_OPTIMIZERS),
    "train.embedding_learning_rate": _non_negative(0.0, "Peak learning rate of a row-sparse embedding "
                                                   "optimizer; 0 = train.learning_rate.", "traced"),
    "train.beta2": Key(0.999, "AdamW's second-moment decay.", "structural", minimum=(0, True)),
    "train.min_lr_ratio": _non_negative(0.0, "End of the cosine decay as a fraction of the peak "
                                        "learning rate."),
    "train.warmup_steps": _non_negative(30, "Linear warmup steps before the cosine decay."),
    "train.grad_clip": _positive(1.0, "Global gradient-norm clip."),
    "train.log_every": _positive(50, "Steps between logged metrics lines.", "host"),
    "train.eval_batch_size": _positive(512, "Examples per evaluation chunk."),
    "train.checkpoint_every": _non_negative(0, "Steps between orbax checkpoints; 0 = none.", "host"),
    "train.microbatch": _non_negative(0, "Examples per gradient chunk (accumulated); 0 = the whole "
                                      "batch at once."),
    "train.kinetic": _non_negative(0.0, "Weight of the kinetic-energy regulariser (ode family); "
                                   "0 = off.", "switch"),
    "train.jacobian": _non_negative(0.0, "Weight of the Jacobian Frobenius-norm regulariser (ode "
                                    "family); 0 = off.", "switch"),
    "mesh.data": _positive(1, "Devices the batch is split over."),
    "mesh.model": _positive(1, "Devices embedding tables are split over by rows."),
    "evaluate.solvers": Key((), "After training: test accuracy (language models: validation loss) under "
                            "other solvers, 'name:steps', 'name:xK' (K times the training steps) or "
                            "'name:rtol'; the last is the reference of the invariance gap.", "evaluation"),
    "evaluate.chars": _non_negative(0, "Language models: the first characters of the validation split "
                                    "that evaluate.solvers re-solves; 0 = the whole split.", "evaluation"),
    "evaluate.stability": Key(False, "After training: measure the flow map's stability (language models: "
                              "robustness, odeformer.experiment.language.robustness_row).", "evaluation"),
    "evaluate.epsilon": _positive(1e-2, "Stability: perturbation norm relative to the input's (language "
                                  "models: absolute, per position: the embedding noise's, and the unit of "
                                  "the attack budgets).", "evaluation"),
    "evaluate.power_iterations": Key(20, "Stability: power iterations for the Jacobian's spectral "
                                     "norm (>= 2).", "evaluation", minimum=(2, False)),
    "evaluate.examples": _positive(64, "Stability: the first test examples (language models: windows) "
                                   "measured.", "evaluation"),
}
