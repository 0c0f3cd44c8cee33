"""Clustering of self-attention dynamics on the sphere (Geshkovski et al. 2023).

    python -m experiments.run --config configs/clustering.py

Tokens on the unit sphere move by self-attention with Q = K = V = I, with the softmax
normalisation (Z_i = sum_j e^{β<x_i,x_j>}) and the unnormalised one (``mean``: Z_i = n);
float64, adaptive solves. Phase part: d = 2, n = 32 tokens uniform on the circle, 12 values
of β in [0.1, 9] x 2 normalisations x 5 seeds, T = 30, Dopri5 at rtol = atol = 1e-8; columns
``clustered@t=<t>`` (fraction of pairs with <x_i, x_j> > 0.999) and ``clusters@t=<t>`` at 13
times. Equal-angle part: n = d = 32 tokens with equal pairwise inner products rho0 in
{0, 0.5}, β in {1, 4, 9}, both normalisations, Dopri8 at rtol = atol = 1e-12, against the
scalar ODE for rho(t). See ``odeformer/experiment/studies/clustering.py`` for the definitions and
``notebooks/clustering.ipynb`` for the figure. 132 runs, about 1 minute of CPU time (2 minutes
wall clock on the shared 2-core machine). ``:tiny``: 8 tokens to T = 10, two β and two seeds,
one equal-angle point per normalisation.
"""

import itertools

import ml_collections

from configs import base

BETAS = (0.1, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
SEEDS = (0, 1, 2, 3, 4)
EQUAL_ANGLE_BETAS = (1.0, 4.0, 9.0)
EQUAL_ANGLE_RHO0 = (0.0, 0.5)
PHASE = dict(dim=2, solver="dopri5", rtol=1e-8, atol=1e-8)
EQUAL_ANGLE = dict(dim=32, solver="dopri8", rtol=1e-12, atol=1e-12)
ZIPPED = ("part", "normalisation", "beta", "rho0", "dim", "solver", "rtol", "atol")


def zipped_runs(betas, seeds, equal_angle_betas, equal_angle_rho0, phase, equal_angle) -> dict:
    """The sweep's points as zipped columns: ``seed`` and the ``clustering`` keys of ZIPPED."""
    runs = [dict(part="phase", normalisation=z, beta=b, rho0=0.0, seed=s, **phase)
            for z, b, s in itertools.product(("softmax", "mean"), betas, seeds)]
    runs += [dict(part="equal_angle", normalisation=z, beta=b, rho0=r, seed=0, **equal_angle)
             for z, b, r in itertools.product(("softmax", "mean"), equal_angle_betas, equal_angle_rho0)]
    return dict(seed=tuple(r["seed"] for r in runs),
                clustering={key: tuple(r[key] for r in runs) for key in ZIPPED})


def sweep_zip() -> tuple:
    return (("seed", *(f"clustering.{key}" for key in ZIPPED)),)


def _tiny(c: ml_collections.ConfigDict) -> None:
    c.clustering.update(tokens=8, horizon=10.0, times=(1.0, 5.0, 10.0), check_points=501)
    c.sweep = ml_collections.ConfigDict(zipped_runs(
        (1.0, 4.0), (0, 1), (1.0,), (0.0,), PHASE, dict(EQUAL_ANGLE, dim=8)))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config("clustering")
    c.name = "clustering"
    c.sweep = ml_collections.ConfigDict(zipped_runs(
        BETAS, SEEDS, EQUAL_ANGLE_BETAS, EQUAL_ANGLE_RHO0, PHASE, EQUAL_ANGLE))
    c.sweep_zip = sweep_zip()
    return base.with_variant(c, variant, {"tiny": _tiny})
