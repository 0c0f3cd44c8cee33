"""Depth vs width at fixed parameter budgets: discrete transformers of depth 1..16 and ODE
models over Euler step counts 1..16, 3 budgets x 3 seeds (90 runs).

    python -m experiments.run --config configs/depth_vs_width.py

Task: majority (the most frequent of 16 symbols in a sequence of 24), mean readout; a task
whose accuracy grows with capacity within 400 AdamW steps. The width of every model is
resolved from ``model.param_budget`` (within 5%). The discrete family has ``layers``
independent blocks (one unit Euler step each); the ode family has one weight-tied block
integrated over [0, 1] in ``solver.steps`` Euler steps, so at equal depth/steps both
evaluate the same number of blocks per forward pass (equal compute per width).
Everything not set here is as in configs/quick.py.
"""

import ml_collections

from configs import quick


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(quick.get_config().to_dict())
    c.name = "depth_vs_width"
    c.task = ml_collections.ConfigDict(dict(
        name="majority", seed=0, vocab_size=16, seq_len=24, num_train=4096, num_test=1024))
    c.model.update(family="ode", heads=1, mlp_ratio=2, time="tied", readout="mean", param_budget=12400)
    c.solver.update(name="euler", steps=4, adaptive=False, t1=1.0, adjoint="checkpoint")
    c.train.update(num_steps=400, batch_size=64, learning_rate=1e-2, warmup_steps=40, log_every=100,
                   eval_batch_size=512)
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1, 2),
        model=dict(family=("discrete", "ode"), layers=(1, 2, 4, 8, 16), param_budget=(4200, 12400, 36000)),
        solver=dict(steps=(1, 2, 4, 8, 16))))
    c.sweep_zip = ()
    c.lock()
    return c
