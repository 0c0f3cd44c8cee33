"""The tiny variant of configs/convergence.py that the test suite runs (seconds).

    python -m experiments.run --config configs/convergence_tiny.py

The full config's field and reference, one seed: depths 16 and 32 for the three kinds of
weights, and rk4 with 64 steps (7 runs).
"""

import ml_collections

from configs import convergence


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(convergence.get_config().to_dict())
    c.name = "convergence_tiny"
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0,), convergence=convergence.zipped_runs((16, 32), {"rk4": (64,)})))
    c.lock()
    return c
