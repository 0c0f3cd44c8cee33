"""Parameter efficiency: the smallest budget at which each family reaches a target test
accuracy, for a discrete 4-layer transformer, a weight-tied ODE, a time-conditioned ODE
and a discrete 1-layer transformer (6 budgets x 4 families x 3 seeds, 72 runs).

    python -m experiments.run --config configs/param_efficiency.py

Same task and training as configs/depth_vs_width.py (majority of 16 symbols over 24
positions, 400 AdamW steps). All three families evaluate 4 blocks per forward pass
(4 layers; 4 Euler steps), so at equal width they cost the same; at equal parameters
the weight-tied ODE is about twice as wide and costs 2.3-3.7x the 4-layer model's FLOPs. The
1-layer discrete model is the baseline at equal parameters and 0.57-0.91x the 4-layer model's
FLOPs (on this task the best depth, see configs/depth_vs_width.py); ``python -m
experiments.costs --experiments param_efficiency`` prints every arm's count.
``model.time``: "tied" (one weight set for all t) or "concat" (t fed to every linear map
as an extra input feature). The targets at which budget ratios are read
(``analysis.targets``) are fixed here, before the runs; they do not define runs (changing
them retrains nothing).
Everything not set here is as in configs/depth_vs_width.py. ``:tiny``: budgets 900 and 1,820, 6 steps,
two seeds.
"""

import ml_collections

from configs import base, depth_vs_width


def _tiny(c: ml_collections.ConfigDict) -> None:
    depth_vs_width.tiny(c)
    c.analysis.update(targets=(0.1, 0.2), resamples=50)
    c.sweep.seed = (0, 1)
    c.sweep.model.param_budget = (900, 1820)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "param_efficiency"
    depth_vs_width.configure(c)
    c.analysis.update(targets=(0.6, 0.7, 0.8), resamples=2000)
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1, 2),
        model=dict(family=("discrete", "ode", "ode", "discrete"), time=("tied", "tied", "concat", "tied"),
                   layers=(4, 4, 4, 1), param_budget=(900, 1820, 3600, 7100, 14400, 28800))))
    c.sweep_zip = (("model.family", "model.time", "model.layers"),)
    return base.with_variant(c, variant, {"tiny": _tiny})
