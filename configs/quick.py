"""Quick sweep: an ODE transformer under 2 solvers x 2 step counts, and a discrete baseline.

    python -m experiments.run --config configs/quick.py --workers 2

Associative recall (4 key-value pairs, vocabulary 8), width 32, 300 AdamW steps per run: the
base config's values. The discrete family ignores the solver keys, so the grid's discrete
points collapse into one run: 5 runs in all. ``--workers 2`` trains two at a time (the runs
are tiny, so one compiles while the other trains); the results are the same with one worker.
``:tiny`` shrinks data, model and training to seconds per run.
"""

import ml_collections

from configs import base


def _tiny(c: ml_collections.ConfigDict) -> None:
    c.task.update(num_train=64, num_test=16)
    c.model.update(width=8, heads=2, mlp_ratio=1)
    c.train.update(num_steps=4, batch_size=8, warmup_steps=1, log_every=2, eval_batch_size=16)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "quick"
    c.sweep = ml_collections.ConfigDict(dict(
        model=dict(family=("ode", "discrete")),
        solver=dict(name=("euler", "rk4"), steps=(2, 4))))
    return base.with_variant(c, variant, {"tiny": _tiny})
