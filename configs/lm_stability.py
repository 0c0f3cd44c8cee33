"""Stability on language modelling: are ODE transformers more robust than gpt at matched validation
loss, and does their stability *explain* it?

    python -m experiments.run --config configs/lm_stability.py --workers 2
    python -m experiments.export --config configs/lm_stability.py

Training as in ``configs/lm_depth_vs_width.py`` (Shakespeare, block 64, 800 AdamW steps), each arm at
the learning rate that experiment's pilot chose for it. Every run measures robustness
(``evaluate.stability``, ``odeformer.experiment.language.robustness_row``) on the first 64 windows
of the test split: the loss change under character substitution at 1, 2, 5 and 10% of the context,
under embedding noise of RMS :data:`EPSILON` per position (absolute: one scale for every model),
and under a 10-step gradient attack at budgets 1, 2, 4, 8 times :data:`EPSILON`; and the depth map's
Jacobian norm and Lyapunov exponent.

- *Families at matched loss*: gpt, the tied ODE and the smooth ODE, all at depth 4 (so every family
  has a depth map of 4 steps to be stable or not), at 25,000, 75,000 and 200,000 non-embedding
  parameters, seeds 0-4; robustness is compared at equal validation loss by interpolating each
  family's curve (``odeformer.analysis.lm_stability``).
- *Stability varied within a family*: the tied ODE in the parallel form (the form the Jacobian
  regulariser integrates), 4 Euler steps, 75,000 parameters, Jacobian-regulariser weights
  :data:`JACOBIAN_WEIGHTS`, seeds 0-4: 25 models whose Jacobian norms differ by design.

``:tiny``: a few steps on a slice of the text.
"""

import ml_collections

from configs import base, lm_depth_vs_width, lm_quick

DEPTH = 4
BUDGETS = (25_000, 75_000, 200_000)
SEEDS = (0, 1, 2, 3, 4)
EPSILON = 0.1  # RMS per position of the embedding noise, and the attack budgets' unit
JACOBIAN_WEIGHTS = (0.0, 0.01, 0.1, 1.0, 10.0)
VARIED_BUDGET = 75_000
_ZIPPED = ("model.family", "model.layers", "solver.steps", "model.basis", "model.form", "model.param_budget",
           "train.jacobian", "train.learning_rate")


def _arm(family: str, budget: int, form: str = "sequential", jacobian: float = 0.0) -> tuple:
    rate = lm_depth_vs_width.LEARNING_RATES[family, DEPTH, "params"]
    return (family, DEPTH, DEPTH, DEPTH, form, budget, jacobian, rate)


def arms() -> list[tuple]:
    """The families at every budget, then the tied ODE at every regulariser weight."""
    return ([_arm(f, b) for f in ("gpt", "ode", "smooth") for b in BUDGETS]
            + [_arm("ode", VARIED_BUDGET, "parallel", w) for w in JACOBIAN_WEIGHTS])


def _tiny(c: ml_collections.ConfigDict) -> None:
    lm_quick.tiny(c)
    c.evaluate.update(examples=3, power_iterations=3)
    tiny = [("gpt", 2, 2, 2, "sequential", 3_000, 0.0, 1e-3),
            ("ode", 2, 2, 2, "sequential", 3_000, 0.0, 1e-3), ("ode", 2, 2, 2, "parallel", 3_000, 0.0, 1e-3),
            ("ode", 2, 2, 2, "parallel", 3_000, 1.0, 1e-3)]
    c.sweep = base.zipped_sweep(_ZIPPED, tiny, (0, 1))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "lm_stability"
    lm_depth_vs_width.training(c)
    c.evaluate.update(stability=True, examples=64, power_iterations=50, epsilon=EPSILON)
    c.sweep_zip = (_ZIPPED,)
    c.sweep = base.zipped_sweep(_ZIPPED, arms(), SEEDS)
    return base.with_variant(c, variant, {"tiny": _tiny})
