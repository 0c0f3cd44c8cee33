"""Stability of trained models: discrete transformer vs ODE transformers at equal parameters
and equal compute, 3 seeds each (9 runs).

    python -m experiments.run --config configs/stability.py

Task: majority (the most frequent of 8 symbols in a sequence of 16), mean readout, which
both families learn within 300 AdamW steps. Every model's width is resolved from
``model.param_budget`` (within 5%): a 4-layer discrete transformer (4 independent
blocks, unit Euler steps on [0, 4]), an ODE whose block is tied in time, and an ODE whose
weights are smooth in time (Chebyshev basis of 4, as many weights as the 4 layers). The
ODEs are integrated on [0, 1] by Euler in 4 steps: the same 4 block evaluations per
forward pass as the discrete model. After training, ``odeformer.experiment.evaluators.stability`` measures on
the first 64 test examples the flow map's random-perturbation gain, its Jacobian's
spectral norm (20 power iterations) and largest finite-time Lyapunov exponent, and a
gradient (worst-case) perturbation of the initial tokens, both of norm 0.05 ||x0||; the
test set is also re-solved with Euler in 16 steps and Dopri5 (rtol 1e-5) to show which
models are flows (``invariance_gap``).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "stability"
    c.experiment = "train"
    c.seed = 0
    c.task = ml_collections.ConfigDict(dict(
        name="majority", seed=0, vocab_size=8, seq_len=16, num_train=4096, num_test=512))
    c.model = ml_collections.ConfigDict(dict(
        family="ode", width=32, heads=4, mlp_ratio=2, time="tied", pieces=4, basis=4, layers=4,
        readout="mean", param_budget=20000, embedding="table", embed_dim=0, compression=8))
    c.solver = ml_collections.ConfigDict(dict(
        name="euler", steps=4, adaptive=False, rtol=1e-3, atol=1e-6, t1=1.0, adjoint="checkpoint",
        max_steps=4096))
    c.train = ml_collections.ConfigDict(dict(
        num_steps=300, batch_size=64, learning_rate=1e-2, weight_decay=1e-2, warmup_steps=30,
        grad_clip=1.0, log_every=50, eval_batch_size=512, checkpoint_every=0, microbatch=0,
        kinetic=0.0, jacobian=0.0))
    c.mesh = ml_collections.ConfigDict(dict(data=1, model=1))
    c.evaluate = ml_collections.ConfigDict(dict(
        solvers=("euler:16", "dopri5:1e-5"), stability=True, epsilon=0.05, power_iterations=20,
        examples=64))
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1, 2), model=dict(family=("discrete", "ode", "ode"), time=("tied", "tied", "smooth"))))
    c.sweep_zip = (("model.family", "model.time"),)
    c.lock()
    return c
