"""Depth vs width on language modelling: gpt against tied and smooth ODE transformers at depths
1, 2, 4, 8 and three non-embedding budgets, at equal parameters and at equal FLOPs.

    python -m experiments.run --config configs/lm_depth_vs_width.py --workers 2        # the pilot
    python -m experiments.export --config configs/lm_depth_vs_width.py
    python -m experiments.run --config configs/lm_depth_vs_width.py:test --workers 2   # the test runs
    python -m experiments.export --config configs/lm_depth_vs_width.py:test

Character-level Shakespeare (block 64), 800 AdamW steps of 16 windows at nanoGPT's settings
(``configs/lm_quick.py``). Every body is the sequential (GPT) form, so the families differ only
in how weights depend on depth: ``gpt`` has K independent layers; ``ode`` one block tied over
depth, solved by K Lie–Trotter Euler steps (at K = 1 the 1-layer gpt); ``smooth`` weights smooth
in depth (Chebyshev, ``min(K, 4)`` coefficients; K = 1 would be the tied ODE and is left out).

- *Equal parameters*: each arm's width is resolved from ``model.param_budget`` in 25,000, 75,000
  and 200,000 non-embedding parameters (within 5%; heads 4, fewer where the width is not a
  multiple of 4). At equal parameters a deeper gpt costs a little more per token (its attention
  scores grow with depth x width; the results block lists each arm's FLOPs), while a tied ODE is
  as wide as the 1-layer gpt and costs about K times as much.
- *Equal FLOPs*: ``ode`` at K = 2, 4, 8 and ``smooth`` at K = 8 at the width (and heads) of the
  gpt of the same budget and depth (:data:`GPT_WIDTHS`, pinned to the budget resolution by a
  test): the same FLOPs per token as that gpt, fewer parameters. ``smooth`` at K <= 4 has that
  width at equal parameters already.
- *Closeness to a flow*: every run records ``layer_change`` (relative change of adjacent
  layers' weights) and ``update_change`` (that of the updates training made, times K;
  ``odeformer.language.closeness``); the ODE families also their validation
  loss re-solved at twice and eight times their steps (``train:x2``, ``train:x8``, first 32,768
  validation characters).

The default variant, the pilot, chooses the learning rate of each arm (family, depth, equal
parameters or equal FLOPs) on validation loss: one seed (100), the two smaller budgets, learning
rates 1e-3, 3e-3, 1e-2, 3e-2, and 1e-1 for the arms whose choice lay on that grid's edge
(:data:`EXTENDED_RATES`); the largest budget
takes the rate chosen at the smaller two. ``:test`` trains every arm at its chosen rate
(:data:`LEARNING_RATES`) over seeds 0-4. ``:tiny``: a few steps on a slice of the text.
"""

import ml_collections

from configs import base, lm_quick

DEPTHS = (1, 2, 4, 8)
BUDGETS = (25_000, 75_000, 200_000)
PILOT_BUDGETS = (25_000, 75_000)
PILOT_RATES = (1e-3, 3e-3, 1e-2, 3e-2)
# Arms whose choice lay on the grid's top edge, and the rates added for them (pilot only).
EXTENDED_RATES = {("gpt", 8, "params"): (1e-1,), ("ode", 4, "flops"): (1e-1,), ("ode", 8, "flops"): (1e-1,)}
PILOT_SEED = 100
SEEDS = (0, 1, 2, 3, 4)
# (budget, depth) -> (width, heads) of the gpt resolved from that budget (tests/test_lm_depth_vs_width.py).
GPT_WIDTHS = {
    (25_000, 1): (46, 2), (25_000, 2): (32, 4), (25_000, 4): (23, 1), (25_000, 8): (16, 4),
    (75_000, 1): (80, 4), (75_000, 2): (56, 4), (75_000, 4): (40, 4), (75_000, 8): (28, 4),
    (200_000, 1): (128, 4), (200_000, 2): (92, 4), (200_000, 4): (64, 4), (200_000, 8): (46, 2),
}
# (family, depth, kind) -> the learning rate the pilot chose (odeformer.analysis.lm_depth_vs_width);
# kind "params" (width from the budget) or "flops" (at a gpt's width).
LEARNING_RATES: dict[tuple[str, int, str], float] = {
    ("gpt", 1, "params"): 0.01, ("gpt", 2, "params"): 0.01, ("gpt", 4, "params"): 0.01,
    ("gpt", 8, "params"): 0.03, ("ode", 1, "params"): 0.01, ("ode", 2, "params"): 0.01,
    ("ode", 4, "params"): 0.01, ("ode", 8, "params"): 0.01, ("smooth", 2, "params"): 0.003,
    ("smooth", 4, "params"): 0.01, ("smooth", 8, "params"): 0.01, ("ode", 2, "flops"): 0.01,
    ("ode", 4, "flops"): 0.03, ("ode", 8, "flops"): 0.03, ("smooth", 8, "flops"): 0.01,
}
_ZIPPED = ("model.family", "model.layers", "solver.steps", "model.basis", "model.param_budget", "model.width",
           "model.heads", "train.learning_rate")


def families() -> list[tuple[str, int]]:
    """(family, depth) of every arm."""
    return [(f, k) for f in ("gpt", "ode", "smooth") for k in DEPTHS if (f, k) != ("smooth", 1)]


def _arm(family: str, depth: int, rate: float, budget: int = 0,
         gpt_width: tuple[int, int] = (32, 4)) -> tuple:
    """One zipped arm: width from ``budget``, or (``budget = 0``) the given width and heads."""
    width, heads = gpt_width
    return (family, depth, depth, min(depth, 4), budget, width, heads if budget == 0 else 4, rate)


def equal_flops_arms() -> list[tuple[str, int]]:
    """(family, depth) of the arms at a gpt's width (smooth at depth <= 4 has it at equal parameters)."""
    return [("ode", k) for k in DEPTHS[1:]] + [("smooth", 8)]


def _sweep(arms: list[tuple], seeds: tuple[int, ...]) -> ml_collections.ConfigDict:
    return base.zipped_sweep(_ZIPPED, arms, seeds)


def arm_keys() -> list[tuple[str, int, str]]:
    """(family, depth, kind) of every arm: each has its own learning rate."""
    return [(f, k, "params") for f, k in families()] + [(f, k, "flops") for f, k in equal_flops_arms()]


def _arms(budgets: tuple[int, ...], rate) -> list[tuple]:
    """Every arm at each budget; ``rate(key)`` its learning rate."""
    return ([_arm(f, k, rate((f, k, "params")), budget) for budget in budgets for f, k in families()]
            + [_arm(f, k, rate((f, k, "flops")), 0, GPT_WIDTHS[budget, k])
               for budget in budgets for f, k in equal_flops_arms()])


def _pilot(c: ml_collections.ConfigDict) -> None:
    arms = [arm for rate in PILOT_RATES for arm in _arms(PILOT_BUDGETS, lambda key, rate=rate: rate)]
    for (family, depth, kind), rates in EXTENDED_RATES.items():
        arms += [_arm(family, depth, rate, budget) if kind == "params"
                 else _arm(family, depth, rate, 0, GPT_WIDTHS[budget, depth])
                 for rate in rates for budget in PILOT_BUDGETS]
    c.sweep = _sweep(arms, (PILOT_SEED,))


def _tiny(c: ml_collections.ConfigDict) -> None:
    lm_quick.tiny(c)
    c.evaluate.chars = 256
    arms = [_arm("gpt", 2, 1e-3, 3_000), _arm("ode", 2, 1e-3, 3_000), _arm("smooth", 2, 1e-3, 3_000),
            _arm("ode", 2, 1e-3, 0, (8, 2))]
    c.sweep = _sweep(arms, (0, 1))


def _test(c: ml_collections.ConfigDict) -> None:
    missing = [key for key in arm_keys() if key not in LEARNING_RATES]
    if missing:
        raise ValueError(f"configs/lm_depth_vs_width.py has no learning rate chosen for {missing}: run its "
                         "default variant (the pilot) and set LEARNING_RATES from python -m "
                         "experiments.export --config configs/lm_depth_vs_width.py")
    c.sweep = _sweep(_arms(BUDGETS, LEARNING_RATES.__getitem__), SEEDS)


def training(c: ml_collections.ConfigDict) -> None:
    """The model form and training of this experiment, shared by configs/lm_param_efficiency.py."""
    lm_quick.language_model(c)
    c.model.update(family="gpt", heads=4, form="sequential", param_budget=25_000)
    c.solver.update(name="euler", steps=4)
    c.train.update(num_steps=800, batch_size=16, warmup_steps=80, log_every=100, eval_batch_size=256)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "lm_depth_vs_width"
    training(c)
    c.evaluate.update(solvers=("train:x2", "train:x8"), chars=32_768)
    c.sweep_zip = (_ZIPPED,)
    _pilot(c)
    return base.with_variant(c, variant, {"test": _test, "tiny": _tiny})
