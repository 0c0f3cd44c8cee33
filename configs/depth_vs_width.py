"""Depth vs width at fixed parameter budgets: discrete transformers of depth 1..16 and ODE
models over Euler step counts 1..16, 3 budgets x 3 seeds (90 runs).

    python -m experiments.run --config configs/depth_vs_width.py

Task: majority (the most frequent of 16 symbols in a sequence of 24), mean readout; a task
whose accuracy grows with capacity within 400 AdamW steps. The width of every model is
resolved from ``model.param_budget`` (within 5%). The discrete family has ``layers``
independent blocks (one unit Euler step each); the ode family has one weight-tied block
integrated over [0, 1] in ``solver.steps`` Euler steps, so at equal depth/steps both
evaluate the same number of blocks per forward pass (equal compute per width; at equal
parameters the ODE is wider and costs 1.7-12.3x the FLOPs of the discrete model of its depth
for K >= 2, ``python -m experiments.costs --experiments depth_vs_width``). ``:tiny``:
budgets 1,050 and 2,450, depths 1 and 2, 6 steps, two seeds.
"""

import ml_collections

from configs import base


def configure(c: ml_collections.ConfigDict) -> None:
    """The task, model and training of this experiment (configs/param_efficiency.py shares them)."""
    c.task.update(name="majority", vocab_size=16, seq_len=24, num_test=1024)
    c.model.update(heads=1, readout="mean", param_budget=12400)
    c.solver.update(name="euler", steps=4)
    c.train.update(num_steps=400, warmup_steps=40, log_every=100)


def tiny(c: ml_collections.ConfigDict) -> None:
    """The ``:tiny`` data and training (configs/param_efficiency.py shares them)."""
    c.task.update(num_train=256, num_test=64)
    c.train.update(num_steps=6, batch_size=16, warmup_steps=1, log_every=3, eval_batch_size=64)


def _tiny(c: ml_collections.ConfigDict) -> None:
    tiny(c)
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1),
        model=dict(family=("discrete", "ode"), layers=(1, 2), param_budget=(1050, 2450)),
        solver=dict(steps=(1, 2))))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "depth_vs_width"
    configure(c)
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1, 2),
        model=dict(family=("discrete", "ode"), layers=(1, 2, 4, 8, 16), param_budget=(4200, 12400, 36000)),
        solver=dict(steps=(1, 2, 4, 8, 16))))
    return base.with_variant(c, variant, {"tiny": _tiny})
