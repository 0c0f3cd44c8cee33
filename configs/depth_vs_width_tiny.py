"""The tiny variant of configs/depth_vs_width.py that the test suite runs (seconds per run).

    python -m experiments.run --config configs/depth_vs_width_tiny.py

Two budgets, depths/steps 1 and 2, two seeds, 6 training steps on 256 examples.
"""

import ml_collections

from configs import depth_vs_width


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(depth_vs_width.get_config().to_dict())
    c.name = "depth_vs_width_tiny"
    c.task.update(num_train=256, num_test=64)
    c.train.update(num_steps=6, batch_size=16, warmup_steps=1, log_every=3, eval_batch_size=64)
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1),
        model=dict(family=("discrete", "ode"), layers=(1, 2), param_budget=(1050, 2450)),
        solver=dict(steps=(1, 2))))
    c.lock()
    return c
