"""python benchmarks/scaling.py [--batch 8] [--width 64] [--tokens 64] [--steps 8] [--repeats 5] [--quick]

How the cost of one training step through ``odeformer.solve`` scales.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``). The step is that of
``benchmarks/solver_overhead.py``: ``TransformerBlockField(width, 4)``, float32, x of shape
(batch, tokens, width), loss ``mean(x(1)**2)`` after fixed Euler steps on [0, 1], value and
gradient in the field state. Median wall time (compilation excluded, configurations of a
table interleaved) against (a) the number of steps, (b) tokens, (c) width; (d) the
compiled step's temporary memory (``memory_analysis().temp_size_in_bytes``, compile only)
against steps for each adjoint in ``odeformer.ADJOINTS``.
"""

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from harness import interleaved_ms, start_benchmark

import odeformer

HEADS, MLP_RATIO = 4, 4


def compile_step(batch, tokens, width, steps, adjoint="checkpoint"):
    """The compiled ``(state, y0) -> (loss, grads)`` and its arguments."""
    param_key, data_key = jax.random.split(jax.random.key(0))
    field = odeformer.TransformerBlockField(width, HEADS, mlp_ratio=MLP_RATIO,
                                            rngs=nnx.Rngs(param_key))
    f, state = odeformer.vector_field(field)
    y0 = jax.random.normal(data_key, (batch, tokens, width), jnp.float32)

    def loss(s, y):
        sol = odeformer.solve(f, y, args=s, solver="euler", steps=steps, adjoint=adjoint)
        return jnp.mean(sol.y1**2)

    return jax.jit(jax.value_and_grad(loss)).lower(state, y0).compile(), (state, y0)


def matmul_gflop(batch, tokens, width, steps):
    """Analytic matmul GFLOP of the step: 4 x forward per evaluation (forward, recomputed
    forward, backward x2), as in benchmarks/roofline.py."""
    forward = 2 * batch * tokens * width**2 * (3 + 1 + 2 * MLP_RATIO) + 4 * batch * tokens**2 * width
    return 4 * forward * steps / 1e9


def slope(xs, ys):
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def time_table(title, name, values, configs, repeats):
    """Compiles every configuration ``(batch, tokens, width, steps)``, times them
    interleaved (A, B, C, A, B, C, ...), prints one row each and log-log slopes."""
    print(f"\n{title}")
    steps_fns = []
    for config in configs:
        start = time.perf_counter()
        compiled, step_args = compile_step(*config)
        jax.block_until_ready(compiled(*step_args))  # first run, not timed
        steps_fns.append((compiled, step_args, time.perf_counter() - start))
    calls = {i: functools.partial(compiled, *step_args)
             for i, (compiled, step_args, _) in enumerate(steps_fns)}
    medians = [statistics.median(row) for row in interleaved_ms(calls, repeats).values()]
    print(f"{name:>8s}  compile+1st s  median ms  ms/step  GFLOP  GFLOP/s (analytic matmuls)")
    for value, config, ms, (*_, compile_s) in zip(values, configs, medians, steps_fns, strict=True):
        gflop = matmul_gflop(*config)
        print(f"{value:8d} {compile_s:14.1f} {ms:10.2f} {ms / config[3]:8.3f} {gflop:6.2f} "
              f"{gflop / (ms * 1e-3):8.1f}")
    fit = f"log(time) vs log({name}): slope {slope(values, medians):.2f} over all points"
    if len(values) > 3:
        fit += f", {slope(values[-3:], medians[-3:]):.2f} over the largest 3"
    print(fit)


def memory_table(batch, tokens, width, step_counts):
    print(f"\n(d) temporary memory of the compiled step (MB, temp_size_in_bytes), euler, "
          f"x {(batch, tokens, width)}")
    print("   steps " + "".join(f"{adjoint:>12s}" for adjoint in odeformer.ADJOINTS)
          + "   compile s (all adjoints)")
    temps = {adjoint: [] for adjoint in odeformer.ADJOINTS}
    for steps in step_counts:
        start = time.perf_counter()
        for adjoint in odeformer.ADJOINTS:
            compiled, _ = compile_step(batch, tokens, width, steps, adjoint)
            temps[adjoint].append(compiled.memory_analysis().temp_size_in_bytes)
        print(f"{steps:8d} " + "".join(f"{temps[a][-1] / 1e6:12.2f}" for a in odeformer.ADJOINTS)
              + f"   {time.perf_counter() - start:.1f}")
    state_kb = batch * tokens * width * 4 / 1e3
    print(f"growth, KB per step, least squares (one state is {state_kb:.1f} KB):")
    print("  adjoint     all steps  steps >= 4")
    late = [i for i, steps in enumerate(step_counts) if steps >= 4]
    for adjoint, temp in temps.items():
        fits = [np.polyfit(np.take(step_counts, idx), np.take(temp, idx), 1)[0] / 1e3
                for idx in (range(len(step_counts)), late)]
        print(f"  {adjoint:10s} " + "".join(f"{round(fit, 1) + 0.0:11.1f}" for fit in fits))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width", type=int, default=64, help="width in (a), (b), (d)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens in (a), (c), (d)")
    parser.add_argument("--steps", type=int, default=8, help="fixed Euler steps in (b), (c)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each config")
    parser.add_argument("--quick", action="store_true", help="short axes, 3 repeats")
    args = parser.parse_args()
    q = args.quick
    step_axis = (1, 4, 16) if q else (1, 4, 16, 64, 256, 1024)
    token_axis = (16, 64) if q else (16, 64, 256, 1024)
    width_axis = (32, 64) if q else (32, 64, 128, 256)
    memory_axis = (1, 4, 16) if q else (1, 4, 16, 64, 256)
    repeats = 3 if q else args.repeats
    b, n, d, s = args.batch, args.tokens, args.width, args.steps

    start_benchmark()
    print(f"workload: TransformerBlockField(width, {HEADS}, mlp_ratio={MLP_RATIO}) float32, "
          f"euler, adjoint checkpoint unless stated, batch {b}, {repeats} repeats")

    time_table(f"(a) time vs fixed Euler steps, x {(b, n, d)}", "steps", step_axis,
               [(b, n, d, steps) for steps in step_axis], repeats)
    time_table(f"(b) time vs tokens, {s} steps, batch {b}, width {d}", "tokens", token_axis,
               [(b, tokens, d, s) for tokens in token_axis], repeats)
    time_table(f"(c) time vs width, {s} steps, batch {b}, tokens {n}", "width", width_axis,
               [(b, n, width, s) for width in width_axis], repeats)
    memory_table(b, n, d, memory_axis)


if __name__ == "__main__":
    main()
