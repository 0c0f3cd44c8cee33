"""python benchmarks/solver_overhead.py [--steps 8] [--repeats 20] [--quick] [--compile]

Overhead of ``odeformer.solve`` (Diffrax) over a hand-fused ``lax.scan``.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``). Times one training
step (loss and parameter gradient) of ``TransformerBlockField(64, 4)``, float32, x of
shape (32, 64, 64), loss ``mean(x(1)**2)`` after N fixed Euler / RK4 steps on [0, 1], as
``solve`` (``adjoint="checkpoint"``), ``diffrax`` (``diffeqsolve`` with Diffrax's own solver
class, whose Runge--Kutta step runs its stages in a checkpointed loop: what ``solve`` did
before it wrote the stages out, see odeformer/_solvers.py), ``scan`` (same update in
``lax.scan``, storing every stage's activations) and ``scan+remat`` (``jax.checkpoint`` per
step: stores states only, recomputes steps backwards, as ``solve`` does: equal FLOPs). NFE,
loss, grads checked first.

``--compile`` also times tracing + compiling that training step for ``solve`` and ``diffrax``
(caches cleared each repeat, median of 3) and prints its temporary buffer, for Euler and
four Runge--Kutta methods: writing the stages out traces the field once per stage where
Diffrax's loop traces it once, and the backward pass keeps every stage's residuals of a
step at once where Diffrax's loop keeps one stage's.
"""

import argparse
import functools
import statistics
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from harness import interleaved_ms, start_benchmark

import odeformer
from odeformer._solvers import diffrax_solver, solver_info

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
        calls.append(args)
        return f(*args)

    jax.eval_shape(lambda s, y: STEPPERS[solver](counted, s, 0.0, 0.5, y), state, y)
    return len(calls)


def solve_loss(state, y0, *, f, solver, steps):
    sol = odeformer.solve(f, y0, args=state, solver=solver, steps=steps, adjoint="checkpoint")
    return jnp.mean(sol.y1**2), sol.stats["nfe"]


def diffrax_loss(state, y0, *, f, solver, steps):
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(f), diffrax_solver(solver), 0.0, 1.0, 1.0 / steps, y0, args=state,
        stepsize_controller=diffrax.ConstantStepSize(), max_steps=steps,
        adjoint=diffrax.RecursiveCheckpointAdjoint(checkpoints=steps))
    info = solver_info(solver)  # the same evaluations, the FSAL f(t0, y0) made in the first step
    return jnp.mean(sol.ys[-1] ** 2), info.evals_at_init + steps * info.evals_per_step


def scan_loss(state, y0, *, f, solver, steps, remat):
    h = 1.0 / steps

    def body(y, t):
        return STEPPERS[solver](f, state, t, h, y), None

    body = jax.checkpoint(body) if remat else body
    y1, _ = jax.lax.scan(body, y0, jnp.arange(steps, dtype=y0.dtype) * h)
    return jnp.mean(y1**2), steps * evals_per_step(f, solver, state, y0)


def make_steps(f, solver, steps):
    """Jitted ``(state, y0) -> ((loss, nfe), grads)`` for each variant, by name."""
    scan = functools.partial(scan_loss, f=f, solver=solver, steps=steps)
    losses = {"solve": functools.partial(solve_loss, f=f, solver=solver, steps=steps),
              "diffrax": functools.partial(diffrax_loss, f=f, solver=solver, steps=steps),
              "scan": functools.partial(scan, remat=False),
              "scan+remat": functools.partial(scan, remat=True)}
    return {name: jax.jit(jax.value_and_grad(loss, has_aux=True)) for name, loss in losses.items()}


def check_equal(solver, results):
    """Asserts each variant matches ``solve`` in NFE, loss and gradients (error per leaf
    relative to its largest entry, since an elementwise rtol fails on near-zero entries)."""
    (ref_loss, ref_nfe), ref_grads = results["solve"]
    for name, ((loss, nfe), grads) in results.items():
        assert int(nfe) == int(ref_nfe), f"{solver}: {name} makes {nfe} evaluations, not {ref_nfe}"
        np.testing.assert_allclose(loss, ref_loss, rtol=RTOL, err_msg=f"{solver}: {name} loss")
        errors = jax.tree_util.tree_map(
            lambda g, r: float(jnp.max(jnp.abs(g - r)) / jnp.max(jnp.abs(r))), grads, ref_grads)
        path, worst = max(jax.tree_util.tree_leaves_with_path(errors),
                          key=lambda leaf: np.nan_to_num(leaf[1], nan=np.inf))
        assert worst <= RTOL, (f"{solver}: {name} gradient {jax.tree_util.keystr(path)} differs "
                               f"from solve's by {worst:.1e} of its largest entry (> {RTOL})")
        print(f"{solver:6s} {name:10s} loss={float(loss):.7f} nfe={int(nfe)} grad err={worst:.1e}")


def time_interleaved(step_fns, state, y0, repeats):
    """Median wall time in ms of each step function, run A, B, C, A, B, C, ..."""
    calls = {name: functools.partial(step, state, y0) for name, step in step_fns.items()}
    return {name: statistics.median(ts) for name, ts in interleaved_ms(calls, repeats).items()}


def compile_cost(f, state, y0, steps, solvers=("euler", "rk4", "tsit5", "dopri5", "dopri8"),
                 repeats=3):
    """Per solver and variant: median seconds to trace, lower and compile the training step
    (JAX's caches cleared first, so every repeat traces again), and the compiled step's
    temporary buffer in MB (where the backward pass keeps the stages' residuals)."""
    table = {}
    for solver in solvers:
        times, temp_mb = {"solve": [], "diffrax": []}, {}
        for _ in range(repeats):
            for name, loss in (("solve", solve_loss), ("diffrax", diffrax_loss)):
                step = jax.jit(jax.value_and_grad(
                    functools.partial(loss, f=f, solver=solver, steps=steps), has_aux=True))
                jax.clear_caches()
                start = time.perf_counter()
                compiled = step.lower(state, y0).compile()
                times[name].append(time.perf_counter() - start)
                temp_mb[name] = compiled.memory_analysis().temp_size_in_bytes / 1e6
        table[solver] = {name: (statistics.median(ts), temp_mb[name]) for name, ts in times.items()}
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--steps", type=int, default=8, help="fixed steps over [0, 1]")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each variant")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 steps, 3 repeats")
    parser.add_argument("--compile", action="store_true",
                        help="also time tracing + compiling the step, solve against diffrax")
    args = parser.parse_args()
    batch, tokens, width, heads = (2, 8, 64, 4) if args.quick else (32, 64, 64, 4)
    steps, repeats = (2, 3) if args.quick else (args.steps, args.repeats)

    start_benchmark()
    print(f"workload: TransformerBlockField({width}, {heads}) float32, x {(batch, tokens, width)}, "
          f"{steps} steps, {repeats} repeats\n")

    param_key, data_key = jax.random.split(jax.random.key(0))
    field = odeformer.TransformerBlockField(width, heads, rngs=nnx.Rngs(param_key))
    f, state = odeformer.vector_field(field)
    y0 = jax.random.normal(data_key, (batch, tokens, width), jnp.float32)

    rows = []
    for solver in ("euler", "rk4"):
        step_fns = make_steps(f, solver, steps)
        start = time.perf_counter()
        results = {name: jax.block_until_ready(fn(state, y0)) for name, fn in step_fns.items()}
        print(f"{solver:6s} compile + first run, all variants: {time.perf_counter() - start:.1f}s")
        check_equal(solver, results)
        rows.append((solver, int(results["solve"][0][1]),
                     time_interleaved(step_fns, state, y0, repeats)))

    print("\nsolver  nfe  solve ms diffrax ms   scan ms  remat ms solve/diffrax solve/scan solve/remat")
    for solver, nfe, m in rows:
        print(f"{solver:6s} {nfe:4d} {m['solve']:9.2f} {m['diffrax']:10.2f} {m['scan']:9.2f} "
              f"{m['scan+remat']:9.2f} {m['solve'] / m['diffrax']:13.2f} {m['solve'] / m['scan']:10.2f} "
              f"{m['solve'] / m['scan+remat']:11.2f}")

    if args.compile:
        print(f"\ntrace + lower + compile of the training step, {steps} steps, median of 3; "
              "temporary buffer of the compiled step")
        print("solver   solve s  diffrax s  solve/diffrax  solve MB  diffrax MB")
        for solver, m in compile_cost(f, state, y0, steps).items():
            (s_solve, mb_solve), (s_diffrax, mb_diffrax) = m["solve"], m["diffrax"]
            print(f"{solver:7s} {s_solve:8.2f} {s_diffrax:10.2f} {s_solve / s_diffrax:14.2f} "
                  f"{mb_solve:9.1f} {mb_diffrax:11.1f}")

if __name__ == "__main__":
    main()
