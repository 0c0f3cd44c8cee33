"""The tiny variant of configs/clustering.py that the test suite runs (seconds).

    python -m experiments.run --config configs/clustering_tiny.py

8 tokens on the circle up to T = 10, β in {1, 4} x both normalisations x 2 seeds; equal-angle
runs with n = d = 8 tokens, β = 1, rho0 = 0, both normalisations.
"""

import ml_collections

from configs import clustering


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(clustering.get_config().to_dict())
    c.name = "clustering_tiny"
    c.clustering.update(tokens=8, horizon=10.0, times=(1.0, 5.0, 10.0), check_points=501)
    c.sweep = ml_collections.ConfigDict(clustering.zipped_runs(
        (1.0, 4.0), (0, 1), (1.0,), (0.0,), clustering.PHASE, dict(clustering.EQUAL_ANGLE, dim=8)))
    c.sweep_zip = clustering.sweep_zip()
    c.lock()
    return c
