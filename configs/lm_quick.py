"""Quick language-model sweep: the four families on Shakespeare at equal parameters.

    python -m experiments.run --config configs/lm_quick.py --workers 2

Character-level next-token prediction (``task.name = "text"``: Shakespeare's plays split by
play, block 64). ``gpt`` (2 layers, width 64, 4 heads) sets the non-embedding budget of about
99k parameters; the other families resolve their width to it: ``ode`` (one block tied over
depth, Euler, 2 steps), ``smooth`` (weights smooth in depth) and ``rk2_gated`` (2 gated RK2
layers). 300 AdamW steps of 16 windows each, nanoGPT's optimiser settings; validation and test
loss over the whole splits. ``notebooks/language.ipynb`` plots loss against tokens and FLOPs
and samples from each run. ``:tiny`` trains 4 steps on a slice of the text.
"""

import ml_collections

from configs import base
from odeformer.experiment import config as run_config


def tiny(c: ml_collections.ConfigDict) -> None:
    """The ``:tiny`` variant of the language-model configs: a few steps on a slice of the text."""
    c.task.update(max_chars=4000, block_size=16)
    c.model.update(param_budget=0, width=16, heads=2, layers=1)
    c.solver.steps = 1
    c.train.update(num_steps=4, batch_size=4, warmup_steps=1, log_every=2, eval_batch_size=32)


def language_model(c: ml_collections.ConfigDict, *, block_size: int = 64) -> None:
    """The settings every language-model config shares: the text task and nanoGPT's
    optimiser (AdamW betas (0.9, 0.99), weight decay 0.1 on matrices, clip 1.0, warmup then
    cosine to a tenth of the peak)."""
    c.task = run_config.task_section("text", block_size=block_size)
    c.model.update(mlp_ratio=4)
    c.train.update(learning_rate=1e-3, weight_decay=0.1, decay="matrices", beta2=0.99,
                   min_lr_ratio=0.1, grad_clip=1.0)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "lm_quick"
    language_model(c)
    c.model.update(family="gpt", width=64, heads=4, layers=2, param_budget=99_000)
    c.solver.update(name="euler", steps=2)
    c.train.update(num_steps=300, batch_size=16, warmup_steps=30, log_every=25, eval_batch_size=256)
    c.sweep = ml_collections.ConfigDict(dict(model=dict(family=("gpt", "ode", "smooth", "rk2_gated"))))
    return base.with_variant(c, variant, {"tiny": tiny})
