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
training step size loses it.
"""

import ml_collections

EULER_STEPS = (1, 2, 4, 8, 16)
RK4_STEPS = (1, 2)


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "invariance"
    c.experiment = "train"
    c.seed = 0
    c.task = ml_collections.ConfigDict(dict(
        name="majority", seed=0, vocab_size=8, seq_len=16, num_train=4096, num_test=512))
    c.model = ml_collections.ConfigDict(dict(
        family="ode", width=32, heads=4, mlp_ratio=2, time="tied", pieces=4, basis=4, layers=4,
        readout="mean", param_budget=0, embedding="table", embed_dim=0, compression=8))
    c.solver = ml_collections.ConfigDict(dict(
        name="euler", steps=4, adaptive=False, rtol=1e-3, atol=1e-6, t1=1.0, adjoint="checkpoint",
        max_steps=4096))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=300, batch_size=64, learning_rate=1e-2, weight_decay=1e-2, warmup_steps=30,
        grad_clip=1.0, log_every=50, eval_batch_size=512, checkpoint_every=0, microbatch=0,
        kinetic=0.0, jacobian=0.0))
    c.mesh = ml_collections.ConfigDict(dict(data=1, model=1))
    c.evaluate = ml_collections.ConfigDict(dict(
        solvers=("euler:1", "euler:2", "euler:4", "euler:8", "euler:16", "euler:32", "euler:64",
                 "rk4:8", "dopri5:1e-6"),
        stability=False, epsilon=1e-2, power_iterations=20, examples=64))
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1, 2),
        solver=dict(name=("euler",) * len(EULER_STEPS) + ("rk4",) * len(RK4_STEPS),
                    steps=EULER_STEPS + RK4_STEPS)))
    c.sweep_zip = (("solver.name", "solver.steps"),)
    c.lock()
    return c
