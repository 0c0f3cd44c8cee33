"""Parameter efficiency on language modelling: is an ODE transformer "30% more parameter-efficient
at equal performance"? The non-embedding budget each family needs to reach fixed validation-loss
targets, as a ratio to gpt's, at equal parameters and at equal FLOPs.

    python -m experiments.run --config configs/lm_param_efficiency.py --workers 2        # the pilot
    python -m experiments.export --config configs/lm_param_efficiency.py
    python -m experiments.run --config configs/lm_param_efficiency.py:test --workers 2   # the test runs
    python -m experiments.export --config configs/lm_param_efficiency.py:test

Training as in ``configs/lm_depth_vs_width.py`` (Shakespeare, block 64, 800 AdamW steps of 16
windows, the sequential form), each arm at the learning rate that experiment's pilot chose for it
(:data:`configs.lm_depth_vs_width.LEARNING_RATES`); budgets of 12,500 to 400,000 non-embedding
parameters, doubling.

The default variant, the pilot (seed 100), trains gpt and the tied ODE at depths 1, 2, 4, 8 and
the smooth ODE at 2, 4, 8 at every budget. From it, fixed before any test run
(``odeformer.analysis.lm_param_efficiency``): each family's depth at each budget (lowest validation
loss over its pilot depths: gpt's 1, 2, 4, 8, the ODE families' of at least 2, since at depth 1 the
tied ODE is the 1-layer gpt; :data:`DEPTHS`), so every family is tuned on validation loss; and the targets
(``odeformer.analysis.lm_param_efficiency.TARGETS``), gpt's best validation loss at the budgets
25,000, 50,000 and 100,000, rounded up to 0.01 nats. ``:test`` trains each family at its depth at
every budget over seeds 0-4.
``:tiny``: a few steps on a slice of the text.
"""

import ml_collections

from configs import base, lm_depth_vs_width, lm_quick
from odeformer.analysis import lm_param_efficiency as analysis

BUDGETS = (12_500, 25_000, 50_000, 100_000, 200_000, 400_000)
PILOT_DEPTHS = {"gpt": (1, 2, 4, 8), "ode": (1, 2, 4, 8), "smooth": (2, 4, 8)}
PILOT_SEED = 100
# No width meets these budgets within 5% at that depth (tests/test_lm_param_efficiency.py): not piloted.
UNMET = {("gpt", 8, 12_500)}
SEEDS = (0, 1, 2, 3, 4)
# (family, budget) -> the depth the pilot chose (odeformer.analysis.lm_param_efficiency.choose_depths),
# one per entry of BUDGETS.
_CHOSEN = {"gpt": (1, 1, 2, 1, 1, 1), "ode": (4, 2, 4, 2, 2, 2), "smooth": (4, 2, 4, 2, 2, 2)}
DEPTHS: dict[tuple[str, int], int] = {(f, b): k for f, depths in _CHOSEN.items()
                                      for b, k in zip(BUDGETS, depths, strict=True)}
_ZIPPED = ("model.family", "model.layers", "solver.steps", "model.basis", "model.param_budget",
           "train.learning_rate")


def _arm(family: str, depth: int, budget: int) -> tuple:
    rate = lm_depth_vs_width.LEARNING_RATES.get((family, depth, "params"))
    if rate is None:
        raise ValueError(f"configs/lm_depth_vs_width.py has no learning rate for ({family!r}, {depth}, "
                         "'params'): run its pilot and fill its LEARNING_RATES first")
    return (family, depth, depth, min(depth, 4), budget, rate)


def _sweep(arms: list[tuple], seeds: tuple[int, ...]) -> ml_collections.ConfigDict:
    return base.zipped_sweep(_ZIPPED, arms, seeds)


def _pilot(c: ml_collections.ConfigDict) -> None:
    arms = [_arm(f, k, b) for f, depths in PILOT_DEPTHS.items() for k in depths for b in BUDGETS
            if (f, k, b) not in UNMET]
    c.sweep = _sweep(arms, (PILOT_SEED,))


def _test(c: ml_collections.ConfigDict) -> None:
    missing = [(f, b) for f in PILOT_DEPTHS for b in BUDGETS if (f, b) not in DEPTHS]
    if missing or not analysis.TARGETS:
        raise ValueError(f"configs/lm_param_efficiency.py has no depth chosen for {missing}, or "
                         "odeformer.analysis.lm_param_efficiency no TARGETS: run the pilot (the default "
                         "variant), export it, and set both from its table")
    c.sweep = _sweep([_arm(f, DEPTHS[f, b], b) for f in PILOT_DEPTHS for b in BUDGETS], SEEDS)


def _tiny(c: ml_collections.ConfigDict) -> None:
    lm_quick.tiny(c)
    arms = [("gpt", 1, 1, 1, 2_000, 1e-3), ("gpt", 1, 1, 1, 4_000, 1e-3), ("ode", 2, 2, 2, 2_000, 1e-3),
            ("ode", 2, 2, 2, 4_000, 1e-3)]
    c.sweep = _sweep(arms, (0, 1))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "lm_param_efficiency"
    lm_depth_vs_width.training(c)
    c.sweep_zip = (_ZIPPED,)
    if variant != "tiny":  # the tiny arms need no chosen learning rate
        _pilot(c)
    return base.with_variant(c, variant, {"test": _test, "tiny": _tiny})
