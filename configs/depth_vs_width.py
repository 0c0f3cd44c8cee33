"""Depth vs width at fixed parameter budgets: discrete transformers of depth 1..16 and ODE
models over Euler step counts 1..16, 3 budgets x 3 seeds (90 runs).

    python -m experiments.run --config configs/depth_vs_width.py

Task: majority (the most frequent of 16 symbols in a sequence of 24), mean readout; a task
whose accuracy grows with capacity within 400 AdamW steps. The width of every model is
resolved from ``model.param_budget`` (within 5%). The discrete family has ``layers``
independent blocks (one unit Euler step each); the ode family has one weight-tied block
integrated over [0, 1] in ``solver.steps`` Euler steps, so at equal depth/steps both
evaluate the same number of blocks per forward pass (equal compute per width).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "depth_vs_width"
    c.experiment = "train"
    c.seed = 0
    c.task = ml_collections.ConfigDict(dict(
        name="majority", seed=0, vocab_size=16, seq_len=24, num_train=4096, num_test=1024))
    c.model = ml_collections.ConfigDict(dict(
        family="ode", width=32, heads=1, mlp_ratio=2, time="tied", pieces=4, basis=4, layers=4,
        readout="mean", param_budget=12400, embedding="table", embed_dim=0, compression=8))
    c.solver = ml_collections.ConfigDict(dict(
        name="euler", steps=4, adaptive=False, rtol=1e-3, atol=1e-6, t1=1.0, adjoint="checkpoint",
        max_steps=4096))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=400, batch_size=64, learning_rate=1e-2, weight_decay=1e-2, warmup_steps=40,
        grad_clip=1.0, log_every=100, eval_batch_size=512, checkpoint_every=0, microbatch=0,
        kinetic=0.0, jacobian=0.0))
    c.mesh = ml_collections.ConfigDict(dict(data=1, model=1))
    c.evaluate = ml_collections.ConfigDict(dict(
        solvers=(), stability=False, epsilon=1e-2, power_iterations=20, examples=64))
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1, 2),
        model=dict(family=("discrete", "ode"), layers=(1, 2, 4, 8, 16), param_budget=(4200, 12400, 36000)),
        solver=dict(steps=(1, 2, 4, 8, 16))))
    c.sweep_zip = ()
    c.lock()
    return c
