"""The tiny variant of configs/param_efficiency.py that the test suite runs.

    python -m experiments.run --config configs/param_efficiency_tiny.py

Two budgets (the fewest a budget curve can be read from), the four families, two seeds,
6 training steps on 256 examples.
"""

import ml_collections

from configs import param_efficiency


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(param_efficiency.get_config().to_dict())
    c.name = "param_efficiency_tiny"
    c.task.update(num_train=256, num_test=64)
    c.train.update(num_steps=6, batch_size=16, warmup_steps=1, log_every=3, eval_batch_size=64)
    c.analysis.update(targets=(0.1, 0.2), resamples=50)
    c.sweep.seed = (0, 1)
    c.sweep.model.param_budget = (900, 1820)
    c.lock()
    return c
