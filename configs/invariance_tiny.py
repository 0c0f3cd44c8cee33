"""The tiny variant of configs/invariance.py that the test suite runs (seconds per run).

    python -m experiments.run --config configs/invariance_tiny.py

Euler in 1 and 2 steps and RK4 in 1 step, two seeds, 6 training steps on 256 examples,
width 8, re-solved by Euler in 1, 2 and 8 steps and Dopri5 at rtol 1e-3.
"""

import ml_collections

from configs import invariance


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(invariance.get_config().to_dict())
    c.name = "invariance_tiny"
    c.task.update(num_train=256, num_test=64)
    c.model.update(width=8, heads=2)
    c.train.update(num_steps=6, batch_size=16, warmup_steps=1, log_every=3, eval_batch_size=64)
    c.evaluate.solvers = ("euler:1", "euler:2", "euler:8", "dopri5:1e-3")
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1), solver=dict(name=("euler", "euler", "rk4"), steps=(1, 2, 1))))
    c.lock()
    return c
