"""The tiny variant of configs/stability.py that the test suite runs (seconds per run).

    python -m experiments.run --config configs/stability_tiny.py

Discrete vs tied ODE, two seeds, 6 training steps on 256 examples, stability on 8 examples.
"""

import ml_collections

from configs import stability


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(stability.get_config().to_dict())
    c.name = "stability_tiny"
    c.task.update(num_train=256, num_test=64)
    c.model.param_budget = 2800
    c.train.update(num_steps=6, batch_size=16, warmup_steps=1, log_every=3, eval_batch_size=64)
    c.evaluate.update(solvers=("euler:8", "dopri5:1e-3"), power_iterations=4, examples=8)
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1), model=dict(family=("discrete", "ode"), time=("tied", "tied"))))
    c.lock()
    return c
