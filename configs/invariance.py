"""Solver invariance (Ott et al. 2021): ODE transformers trained with a coarse fixed-step solver,
evaluated with finer solvers and adaptive Dopri5; 7 training solvers x 3 seeds (21 runs).

    python -m experiments.run --config configs/invariance.py

Task: majority (the most frequent of 8 symbols in a sequence of 16), mean readout, learned
within 300 AdamW steps. One weight-tied transformer block (width 32, 4 heads) integrated on
[0, 1], trained with Euler in 1, 2, 4, 8, 16 steps and with RK4 in 1 and 2 steps (all with
the same parameters; the forward cost is the step count times 1 or 4 evaluations). After
training, every model's test set is re-solved by Euler in 1 to 64 steps, RK4 in 8 steps and
Dopri5 at rtol 1e-6 (atol 1e-9), the last being the reference of
``invariance_gap = test_accuracy - test_accuracy@dopri5:1e-6``: a model that learned a flow
keeps its accuracy under the reference solver, one that learned a discrete map of its
training step size loses it. ``:tiny``: width 8, 6 steps, Euler 1 and 2 and RK4 1, two seeds.
"""

import ml_collections

from configs import base

EULER_STEPS = (1, 2, 4, 8, 16)
RK4_STEPS = (1, 2)


def _tiny(c: ml_collections.ConfigDict) -> None:
    c.task.update(num_train=256, num_test=64)
    c.model.update(width=8, heads=2)
    c.train.update(num_steps=6, batch_size=16, warmup_steps=1, log_every=3, eval_batch_size=64)
    c.evaluate.solvers = ("euler:1", "euler:2", "euler:8", "dopri5:1e-3")
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1), solver=dict(name=("euler", "euler", "rk4"), steps=(1, 2, 1))))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "invariance"
    c.task.update(name="majority", seq_len=16)
    c.model.readout = "mean"
    c.solver.update(name="euler", steps=4)
    c.evaluate.solvers = ("euler:1", "euler:2", "euler:4", "euler:8", "euler:16", "euler:32", "euler:64",
                          "rk4:8", "dopri5:1e-6")
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1, 2),
        solver=dict(name=("euler",) * len(EULER_STEPS) + ("rk4",) * len(RK4_STEPS),
                    steps=EULER_STEPS + RK4_STEPS)))
    c.sweep_zip = (("solver.name", "solver.steps"),)
    return base.with_variant(c, variant, {"tiny": _tiny})
