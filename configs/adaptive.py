"""Adaptive integration: the NFE-accuracy front of fixed steps vs tolerances, and the
kinetic + Jacobian regulariser's effect on NFE (Finlay et al. 2020).

    python -m experiments.run --config configs/adaptive.py

``python -m experiments.export --config configs/adaptive.py`` writes results/adaptive.csv, from which
notebooks/adaptive.ipynb draws docs/figures/adaptive.png (per-step NFE from runs/adaptive).

Task: majority (the most frequent of 16 symbols from a vocabulary of 8) read from the last
token, so the flow itself must gather the counts by attention (read from the token mean,
every solver probed reached 0.987-0.995 test accuracy in 300 steps: a flat front). The model
is one tied-weight transformer-block field (width 16, 4 heads): every arm has the same
parameters, and Euler with K steps is a K-layer weight-tied residual network, the discrete
baseline at equal parameters and equal compute.

Arms (zipped; each trained and tested with its own solver), times 3 seeds:
- fixed steps: Euler 1, 2, 4, 8 and RK4 1, 2, 4 steps;
- adaptive Dopri5 with rtol = atol in 1e-1, 1e-2, 1e-3, 1e-4 (traced: one compile);
- Dopri5 at rtol = atol = 1e-4 trained with kinetic = jacobian = 0.01 (Finlay et al.'s
  weight) and 1.0 (means over state elements, see odeformer/_regularisers.py); the
  unregularised arm at 1e-4 is their baseline (same initialisation per seed).
Columns: test_accuracy, nfe_forward (test-time evaluations per solve), train_nfe (mean
over the last quarter of training), train_kinetic / train_jacobian, step_ms; the per-step
``nfe`` is in runs/<run_id>/metrics.jsonl. 39 runs.
``:tiny``: width 8, 8 steps, four arms, two seeds.
"""

import ml_collections

from configs import base

# (solver, adaptive, steps, rtol = atol, kinetic, jacobian); keys a run does not use
# (steps of an adaptive solve, tolerances of a fixed one) are reset by the sweep.
ARMS = (
    *[("euler", False, steps, 1e-3, 0.0, 0.0) for steps in (1, 2, 4, 8)],
    *[("rk4", False, steps, 1e-3, 0.0, 0.0) for steps in (1, 2, 4)],
    *[("dopri5", True, 4, tol, 0.0, 0.0) for tol in (1e-1, 1e-2, 1e-3, 1e-4)],
    *[("dopri5", True, 4, 1e-4, weight, weight) for weight in (0.01, 1.0)],
)


TINY_ARMS = (
    ("euler", False, 2, 1e-3, 0.0, 0.0),
    ("dopri5", True, 4, 1e-1, 0.0, 0.0),
    ("dopri5", True, 4, 1e-3, 0.0, 0.0),
    ("dopri5", True, 4, 1e-3, 0.1, 0.1),
)


def _sweep(arms, seeds) -> ml_collections.ConfigDict:
    names, adaptive, steps, tolerances, kinetic, jacobian = zip(*arms, strict=True)
    return ml_collections.ConfigDict(dict(
        solver=dict(name=names, adaptive=adaptive, steps=steps, rtol=tolerances, atol=tolerances),
        train=dict(kinetic=kinetic, jacobian=jacobian),
        seed=seeds))


def _tiny(c: ml_collections.ConfigDict) -> None:
    c.task.update(seq_len=8, num_train=256, num_test=64)
    c.model.update(width=8, heads=2, mlp_ratio=1)
    c.train.update(num_steps=8, batch_size=16, warmup_steps=1, log_every=2, eval_batch_size=64)
    c.sweep = _sweep(TINY_ARMS, (0, 1))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "adaptive"
    c.task.update(name="majority", seq_len=16, num_test=1024)
    c.model.width = 16
    c.solver.update(name="dopri5", adaptive=True, atol=1e-3, max_steps=64)
    c.train.update(batch_size=32, log_every=10, eval_batch_size=1024)
    c.sweep = _sweep(ARMS, (0, 1, 2))
    c.sweep_zip = (("solver.name", "solver.adaptive", "solver.steps", "solver.rtol", "solver.atol",
                    "train.kinetic", "train.jacobian"),)
    return base.with_variant(c, variant, {"tiny": _tiny})
