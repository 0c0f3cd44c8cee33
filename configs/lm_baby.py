"""nanoGPT's character-level Shakespeare CPU recipe for gpt and the ODE families at equal parameters.

    python -m experiments.run --config configs/lm_baby.py

The recipe of nanoGPT's README for a CPU (block 64, batch 12, 4 layers x 4 heads x width 128,
2000 iterations, learning rate 1e-3 with 100 warmup steps and cosine decay to 1e-4, AdamW betas
(0.9, 0.99), weight decay 0.1 on matrices, clip 1.0, dropout 0) on Shakespeare's plays split by
play. ``gpt`` at that shape has 787,584 non-embedding parameters; ``ode`` (one tied block, Euler,
4 steps: as many block evaluations as the gpt's layers), ``smooth`` (Chebyshev weights, 4
coefficients) and ``rk2_gated`` (4 gated RK2 layers) resolve their width to the same budget, so
their FLOPs per token differ and are recorded. ``benchmarks/peer_nanogpt.py`` trains an
independent PyTorch implementation of the same recipe on the same data. ``:gpt`` runs the gpt
alone; ``:tiny`` a few steps on a slice of the text.
"""

import ml_collections

from configs import base, lm_quick


def _gpt(c: ml_collections.ConfigDict) -> None:
    c.sweep.model.family = ("gpt",)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "lm_baby"
    lm_quick.language_model(c, block_size=64)
    c.model.update(family="gpt", width=128, heads=4, layers=4, param_budget=787_584)
    c.solver.update(name="euler", steps=4)
    c.train.update(num_steps=2000, batch_size=12, warmup_steps=100, log_every=100, eval_batch_size=256)
    c.sweep = ml_collections.ConfigDict(dict(model=dict(family=("gpt", "ode", "smooth", "rk2_gated"))))
    return base.with_variant(c, variant, {"gpt": _gpt, "tiny": lm_quick.tiny})
