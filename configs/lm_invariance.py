"""Solver invariance on language modelling (Ott et al. 2021): character-level ODE transformers
trained with coarse fixed steps, re-solved with finer ones.

    python -m experiments.run --config configs/lm_invariance.py --workers 2
    python -m experiments.export --config configs/lm_invariance.py

One weight-tied block (``ode`` family, width 64, 4 heads, MLP ratio 4: 49,920 non-embedding
parameters in every arm) on Shakespeare (block 64), integrated over [0, 1] and trained with
Euler in 1, 2, 4, 8, 16 and 32 steps and with RK4 in 1, 2 and 4 steps (9 arms x 5 seeds),
600 AdamW steps of 16 windows at nanoGPT's settings (``configs/lm_quick.py``). After training
each model's first 32,768 validation characters are re-solved by Euler in 1 to 64 steps, by
its own solver at twice its steps (``train:x2``), by RK4 in 16 steps and by Dopri5 at rtol 1e-4, the
reference: ``invariance_gap_loss = val_loss@dopri5:1e-4 - val_loss@train`` (nats per
character). A model that learned a flow keeps its loss under the reference; one that learned a
discrete map of its step size loses it. The critical step size is the largest training step
from which every finer Euler arm's gap lies within ±0.01 nats, bracketed by a coarser arm whose
gap lies above it (``odeformer.analysis.lm_invariance``).

``:tiny``: width 16, 4 steps on a slice of the text, Euler 1 and 2 and RK4 1, two seeds, the
same test-time solvers on 512 characters.
"""

import ml_collections

from configs import base, lm_quick

EULER_STEPS = (1, 2, 4, 8, 16, 32)
RK4_STEPS = (1, 2, 4)
SOLVERS = ("euler:1", "euler:2", "euler:4", "euler:8", "euler:16", "euler:32", "euler:64", "train:x2",
           "rk4:16", "dopri5:1e-4")


def _arms(euler: tuple[int, ...], rk4: tuple[int, ...]) -> dict:
    return dict(name=("euler",) * len(euler) + ("rk4",) * len(rk4), steps=euler + rk4)


def _tiny(c: ml_collections.ConfigDict) -> None:
    lm_quick.tiny(c)
    c.evaluate.chars = 512
    c.sweep = ml_collections.ConfigDict(dict(seed=(0, 1), solver=_arms((1, 2), (1,))))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "lm_invariance"
    lm_quick.language_model(c)
    c.model.update(family="ode", width=64, heads=4, param_budget=0)
    c.solver.update(name="euler", steps=4)
    c.train.update(num_steps=600, batch_size=16, warmup_steps=60, log_every=50, eval_batch_size=256)
    c.evaluate.update(solvers=SOLVERS, chars=32_768)
    c.sweep = ml_collections.ConfigDict(dict(seed=(0, 1, 2, 3, 4), solver=_arms(EULER_STEPS, RK4_STEPS)))
    c.sweep_zip = (("solver.name", "solver.steps"),)
    return base.with_variant(c, variant, {"tiny": _tiny})
