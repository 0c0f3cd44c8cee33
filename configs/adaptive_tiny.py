"""The tiny variant of configs/adaptive.py that the test suite runs (seconds per run).

    python -m experiments.run --config configs/adaptive_tiny.py

Width 8, 8 training steps of 16 examples, one arm of each kind (Euler 2 steps, Dopri5 at two
tolerances, Dopri5 with both regularisers) and 2 seeds: 8 runs, 3 compilations.
"""

import ml_collections

from configs import adaptive

ARMS = (
    ("euler", False, 2, 1e-3, 0.0, 0.0),
    ("dopri5", True, 4, 1e-1, 0.0, 0.0),
    ("dopri5", True, 4, 1e-3, 0.0, 0.0),
    ("dopri5", True, 4, 1e-3, 0.1, 0.1),
)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(adaptive.get_config().to_dict())
    c.name = "adaptive_tiny"
    c.task.update(seq_len=8, num_train=256, num_test=64)
    c.model.update(width=8, heads=2, mlp_ratio=1)
    c.train.update(num_steps=8, batch_size=16, warmup_steps=1, log_every=2, eval_batch_size=64)
    names, adaptive_, steps, tolerances, kinetic, jacobian = zip(*ARMS, strict=True)
    c.sweep = ml_collections.ConfigDict(dict(
        solver=dict(name=names, adaptive=adaptive_, steps=steps, rtol=tolerances, atol=tolerances),
        train=dict(kinetic=kinetic, jacobian=jacobian),
        seed=(0, 1)))
    c.sweep_zip = (("solver.name", "solver.adaptive", "solver.steps", "solver.rtol", "solver.atol",
                    "train.kinetic", "train.jacobian"),)
    c.lock()
    return c
