"""Residual transformers vs the ODE of their weights (Sander et al. 2022), and solver orders.

    python -m experiments.run --config configs/convergence.py

An attention field (``odeformer.AttentionField``, width 8, 2 heads, 8 tokens, float64) over
depth [0, 1]. Layers part: a K-layer residual network (Euler, one step per layer) for
K = 1, 2, 4, ..., 1024 with weights sampled from a smooth path W(t) (``smooth``), drawn
independently per layer with residual step 1/K (``random``) or 1/sqrt(K) (``random_sqrt``).
Solvers part: heun, midpoint, rk4 and dopri5 with fixed steps on the smooth-in-t field (euler
is the layers part's smooth curve). Three seeds (weights and tokens). Every run reports its
distance to the next depth; smooth runs also their error against a Dopri8 reference at
rtol = atol = 1e-14. See ``odeformer/experiment/studies/convergence.py`` for the definitions;
``notebooks/convergence.ipynb`` fits the slopes. 210 runs, about 1.5 minutes of CPU time
(3.5 minutes wall clock on the shared 2-core machine). ``:tiny``: depths 16 and 32 for the
three kinds of weights and rk4 with 64 steps, one seed (7 runs).
"""

import ml_collections

from configs import base

LAYERS = tuple(2**i for i in range(11))  # 1 .. 1024
SOLVER_STEPS = {
    "heun": tuple(2**i for i in range(2, 11)),  # 4 .. 1024
    "midpoint": tuple(2**i for i in range(2, 11)),
    "rk4": tuple(2**i for i in range(1, 9)),  # 2 .. 256
    # 1 .. 256 and two points between: Dopri5 reaches its order late (its local slopes settle near 5
    # only from 64 steps on; results/convergence.csv) and its error reaches the 1e-13 fitting floor at 256.
    "dopri5": (1, 2, 4, 8, 16, 32, 64, 91, 128, 181, 256),
}


def zipped_runs(layers, solver_steps) -> dict[str, tuple]:
    """The sweep's ``(weights, solver, steps)`` points as three zipped columns."""
    runs = [(weights, "euler", k) for weights in ("smooth", "random", "random_sqrt") for k in layers]
    runs += [("smooth", solver, n) for solver, grid in solver_steps.items() for n in grid]
    weights, solvers, steps = zip(*runs, strict=True)
    return dict(weights=weights, solver=solvers, steps=steps)


def _tiny(c: ml_collections.ConfigDict) -> None:
    c.sweep = ml_collections.ConfigDict(dict(seed=(0,), convergence=zipped_runs((16, 32), {"rk4": (64,)})))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = base.get_config("convergence")
    c.name = "convergence"
    c.sweep = ml_collections.ConfigDict(dict(
        seed=(0, 1, 2), convergence=zipped_runs(LAYERS, SOLVER_STEPS)))
    c.sweep_zip = (("convergence.weights", "convergence.solver", "convergence.steps"),)
    return base.with_variant(c, variant, {"tiny": _tiny})
