"""Stability of trained models: discrete transformer vs ODE transformers at equal parameters,
3 seeds each (9 runs).

    python -m experiments.run --config configs/stability.py

Task: majority (the most frequent of 8 symbols in a sequence of 16), mean readout, which
both families learn within 300 AdamW steps. Every model's width is resolved from
``model.param_budget`` (within 5%): a 4-layer discrete transformer (4 independent
blocks, unit Euler steps on [0, 4]), an ODE whose block is tied in time, and an ODE whose
weights are smooth in time (Chebyshev basis of 4, as many weights as the 4 layers). The
ODEs are integrated on [0, 1] by Euler in 4 steps: the same 4 block evaluations per
forward pass as the discrete model, which cost the same FLOPs only at the same width (the
smooth ODE; the tied ODE is twice as wide: 3.7x, ``python -m experiments.costs --experiments
stability``). After training, ``odeformer.experiment.evaluators.stability`` measures on
the first 64 test examples the flow map's random-perturbation gain, its Jacobian's
spectral norm (20 power iterations) and largest finite-time Lyapunov exponent, and a
gradient (worst-case) perturbation of the initial tokens, both of norm 0.05 ||x0||; the
test set is also re-solved with Euler in 16 steps and Dopri5 (rtol 1e-5) to show which
models are flows (``invariance_gap``). ``:tiny``: budget 2,800, 6 steps, discrete vs tied
ODE, two seeds.
"""

import ml_collections

from configs import base


def _tiny(c: ml_collections.ConfigDict) -> None:
    c.task.update(num_train=256, num_test=64)
    c.model.param_budget = 2800
    c.train.update(num_steps=6, batch_size=16, warmup_steps=1, log_every=3, eval_batch_size=64)
    c.evaluate.update(solvers=("euler:8", "dopri5:1e-3"), power_iterations=4, examples=8)
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1), model=dict(family=("discrete", "ode"), time=("tied", "tied"))))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "stability"
    c.task.update(name="majority", seq_len=16)
    c.model.update(readout="mean", param_budget=20000)
    c.solver.update(name="euler", steps=4)
    c.evaluate.update(solvers=("euler:16", "dopri5:1e-5"), stability=True, epsilon=0.05)
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1, 2), model=dict(family=("discrete", "ode", "ode"), time=("tied", "tied", "smooth"))))
    c.sweep_zip = (("model.family", "model.time"),)
    return base.with_variant(c, variant, {"tiny": _tiny})
