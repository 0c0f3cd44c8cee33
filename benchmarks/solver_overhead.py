"""python benchmarks/solver_overhead.py [--steps 8] [--repeats 20] [--quick]

Overhead of ``odeformer.solve`` (Diffrax) over a hand-fused ``lax.scan``.

Needs ``import odeformer`` to work: ``pip install -e .`` or ``PYTHONPATH=.``.
Workload: one training step (loss and gradient w.r.t. the parameters) of
``TransformerBlockField(64, 4)`` in float32 on x of shape (32, 64, 64), loss
``mean(x(1)**2)`` after fixed-step integration over [0, 1]. Three step functions:

- ``solve``: ``odeformer.solve(..., steps=N, adjoint="checkpoint")``.
- ``scan``: the same Euler / RK4 update in a ``lax.scan``, reverse-mode through it
  (every stage's activations stored).
- ``scan+remat``: the same scan with ``jax.checkpoint`` on each step, which stores
  only the state per step and recomputes the step in the backward pass, as Diffrax's
  ``RecursiveCheckpointAdjoint`` does: this is the equal-FLOPs baseline.

All three are first checked to give the same loss and gradients (rtol 1e-4) and the
same number of field evaluations. Timings interleave the variants in one process
and report medians.
"""

import argparse
import functools
import os
import platform
import shlex
import statistics
import sys
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import odeformer

RTOL = 1e-4


def euler_step(f, state, t, h, y):
    return y + h * f(t, y, state)


def rk4_step(f, state, t, h, y):
    k1 = f(t, y, state)
    k2 = f(t + h / 2, y + (h / 2) * k1, state)
    k3 = f(t + h / 2, y + (h / 2) * k2, state)
    k4 = f(t + h, y + h * k3, state)
    return y + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)


STEPPERS = {"euler": euler_step, "rk4": rk4_step}


def evals_per_step(f, solver, state, y):
    """Counts the field calls in one traced scan step (no computation is run)."""
    calls = []

    def counted(*args):
        calls.append(None)
        return f(*args)

    jax.eval_shape(lambda s, y: STEPPERS[solver](counted, s, 0.0, 0.5, y), state, y)
    return len(calls)


def solve_loss(state, y0, *, f, solver, steps):
    sol = odeformer.solve(f, y0, args=state, solver=solver, steps=steps, adjoint="checkpoint")
    return jnp.mean(sol.y1**2), sol.stats["nfe"]


def scan_loss(state, y0, *, f, solver, steps, remat):
    h = 1.0 / steps

    def body(y, t):
        return STEPPERS[solver](f, state, t, h, y), None

    body = jax.checkpoint(body) if remat else body
    y1, _ = jax.lax.scan(body, y0, jnp.arange(steps, dtype=y0.dtype) * h)
    return jnp.mean(y1**2), steps * evals_per_step(f, solver, state, y0)


def make_steps(f, solver, steps):
    """Jitted ``(state, y0) -> ((loss, nfe), grads)`` for each variant, by name."""
    losses = {
        "solve": functools.partial(solve_loss, f=f, solver=solver, steps=steps),
        "scan": functools.partial(scan_loss, f=f, solver=solver, steps=steps, remat=False),
        "scan+remat": functools.partial(scan_loss, f=f, solver=solver, steps=steps, remat=True),
    }
    return {name: jax.jit(jax.value_and_grad(loss, has_aux=True)) for name, loss in losses.items()}


def check_equal(solver, results):
    """Asserts every variant matches ``solve`` in loss, gradients and NFE."""
    (ref_loss, ref_nfe), ref_grads = results["solve"]
    for name, ((loss, nfe), grads) in results.items():
        assert int(nfe) == int(ref_nfe), f"{solver}: {name} makes {nfe} evaluations, solve {ref_nfe}"
        np.testing.assert_allclose(loss, ref_loss, rtol=RTOL,
                                   err_msg=f"{solver}: loss of {name} differs from solve")
        for path, g, g_ref in zip(jax.tree_util.tree_leaves_with_path(grads),
                                  jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
            # Relative to the leaf's scale: elementwise rtol fails on near-zero entries.
            error = float(jnp.max(jnp.abs(g - g_ref)) / jnp.max(jnp.abs(g_ref)))
            assert error <= RTOL, (f"{solver}: gradient {jax.tree_util.keystr(path[0])} of {name} "
                                   f"differs from solve by {error:.2e} (relative to its max) > {RTOL}")
        print(f"{solver:6s} {name:11s} loss={float(loss):.7f}  nfe={int(nfe)}  (matches solve)")


def time_interleaved(step_fns, state, y0, repeats):
    """Median wall time in ms of each step function, run A, B, C, A, B, C, ..."""
    times = {name: [] for name in step_fns}
    for _ in range(repeats):
        for name, step in step_fns.items():
            start = time.perf_counter()
            jax.block_until_ready(step(state, y0))
            times[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--steps", type=int, default=8, help="fixed steps over [0, 1]")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 steps, 3 repeats")
    args = parser.parse_args()
    batch, tokens, width, heads = (2, 8, 64, 4) if args.quick else (32, 64, 64, 4)
    steps, repeats = (2, 3) if args.quick else (args.steps, args.repeats)

    print("command:", shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"devices {jax.devices()}")
    print(f"jax {jax.__version__}, diffrax {diffrax.__version__}, python {platform.python_version()}")
    print(f"workload: TransformerBlockField({width}, {heads}) float32, x {(batch, tokens, width)}, "
          f"{steps} steps, {repeats} repeats\n")

    param_key, data_key = jax.random.split(jax.random.key(args.seed))
    f, state = odeformer.vector_field(
        odeformer.TransformerBlockField(width, heads, rngs=nnx.Rngs(param_key)))
    y0 = jax.random.normal(data_key, (batch, tokens, width), jnp.float32)

    rows = []
    for solver in ("euler", "rk4"):
        step_fns = make_steps(f, solver, steps)
        start = time.perf_counter()
        results = {name: jax.block_until_ready(step(state, y0)) for name, step in step_fns.items()}
        print(f"{solver:6s} compile + first run of all variants: {time.perf_counter() - start:.1f} s")
        check_equal(solver, results)
        medians = time_interleaved(step_fns, state, y0, repeats)
        rows.append((solver, int(results["solve"][0][1]), medians))

    print(f"\n{'solver':6s} {'nfe':>4s} {'solve ms':>9s} {'scan ms':>9s} {'remat ms':>9s} "
          f"{'solve/scan':>10s} {'solve/remat':>11s}")
    for solver, nfe, m in rows:
        print(f"{solver:6s} {nfe:4d} {m['solve']:9.2f} {m['scan']:9.2f} {m['scan+remat']:9.2f} "
              f"{m['solve'] / m['scan']:10.2f} {m['solve'] / m['scan+remat']:11.2f}")


if __name__ == "__main__":
    main()
