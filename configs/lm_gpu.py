"""nanoGPT's character-level Shakespeare GPU recipe for gpt and the ODE families at equal FLOPs.

    python -m experiments.run --config configs/lm_gpu.py          # on a GPU
    python -m experiments.run --config configs/lm_gpu.py:gpt      # the gpt alone

The recipe of nanoGPT's shakespeare_char config (block 256, batch 64, 6 layers x 6 heads x
width 384, dropout 0.2, 5000 iterations, learning rate 1e-3 with 100 warmup steps and cosine
decay to 1e-4, AdamW betas (0.9, 0.99), weight decay 0.1 on matrices, clip 1.0), computed in
bfloat16 with float32 parameters (``model.dtype``). Every family keeps width 384 and 6 block
evaluations per token: ``gpt`` 6 layers, ``ode`` one tied block over 6 Euler steps, ``smooth``
Chebyshev weights (4 coefficients) over 6 Euler steps, ``rk2_gated`` 3 layers of two
evaluations. So FLOPs per token are equal (up to the gate) and parameters are not (recorded
per run). ``benchmarks/peer_nanogpt.py --recipe gpu`` trains an independent PyTorch
implementation beside it; ``benchmarks/device.sh`` runs both on a GPU. On a CPU, ``:tiny``
checks the config in seconds.
"""

import ml_collections

from configs import base, lm_quick

FAMILY_LAYERS = {"gpt": 6, "ode": 6, "smooth": 6, "rk2_gated": 3}


def _only(family: str):
    def variant(c: ml_collections.ConfigDict) -> None:
        c.sweep.model.update(family=(family,), layers=(FAMILY_LAYERS[family],))
    return variant


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "lm_gpu"
    lm_quick.language_model(c, block_size=256)
    c.model.update(family="gpt", width=384, heads=6, layers=6, dtype="bfloat16", dropout=0.2)
    c.solver.update(name="euler", steps=6)
    c.train.update(num_steps=5000, batch_size=64, warmup_steps=100, log_every=250, eval_batch_size=128)
    c.sweep = ml_collections.ConfigDict(dict(model=dict(family=tuple(FAMILY_LAYERS),
                                                        layers=tuple(FAMILY_LAYERS.values()))))
    c.sweep_zip = (("model.family", "model.layers"),)
    variants = {family: _only(family) for family in FAMILY_LAYERS}
    return base.with_variant(c, variant, {**variants, "tiny": lm_quick.tiny})
