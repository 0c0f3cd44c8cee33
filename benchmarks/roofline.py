"""python benchmarks/roofline.py [--steps 8] [--repeats 20] [--quick]

How close the solver_overhead training step comes to this machine's float32 matmul ceiling.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``). (a) Ceiling: median
GFLOP/s (2 n^3 / t) of a jitted ``jnp.dot`` of two n x n float32 matrices over a few n; the
best n is then timed again interleaved with the training steps, and that same-load figure
is the ceiling the fractions use. (b) The training step of ``benchmarks/solver_overhead.py``:
``TransformerBlockField(64, 4)``, float32, x (32, 64, 64), ``mean(x(1)**2)`` after N fixed Euler / RK4 steps
(``adjoint="checkpoint"``), value and gradient in the field state. Its FLOPs are counted
several ways: XLA's ``cost_analysis()`` of the whole compiled step, XLA's count of one
loop-free field evaluation (forward + VJP) times NFE, and analytic counts of the matmuls:
4 forwards per evaluation (forward, recomputed forward, backward), the matmuls executed (less
the recomputed products that nothing reads) and the model's 3 forwards (the MFU convention).
Compilation is excluded from every timing; timings are medians, solvers interleaved.
"""

import argparse
import functools
import re
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx
from harness import interleaved_ms, start_benchmark

import odeformer
from odeformer._solvers import solver_info


def flops_of(compiled):
    """XLA's flop estimate of a compiled function (jax 0.10.2 returns a dict; older
    versions a list with one dict per device program)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def dot_instructions(compiled) -> int:
    """The ``dot`` instructions in a compiled program's optimised HLO (a loop body counts once)."""
    return len(re.findall(r"= f32\[[^\]]*\][^=]*? dot\(", compiled.as_text()))


def median_ms(fn, *args, repeats):
    jax.block_until_ready(fn(*args))  # warm-up run, not timed
    return statistics.median(interleaved_ms({"fn": lambda: fn(*args)}, repeats)["fn"])


def square_operands(n):
    """Two random n x n float32 matrices (the ceiling's matmul operands)."""
    return tuple(jax.random.normal(k, (n, n), jnp.float32) for k in jax.random.split(jax.random.key(n)))


def matmul_ceiling(sizes, repeats):
    """Rows ``(n, median ms, GFLOP/s)`` of a jitted float32 ``jnp.dot``."""
    dot = jax.jit(jnp.dot)
    rows = []
    for n in sizes:
        ms = median_ms(dot, *square_operands(n), repeats=repeats)
        rows.append((n, ms, 2 * n**3 / (ms * 1e-3) / 1e9))
    return rows


def analytic_forward(batch, tokens, width, heads, mlp_ratio):
    """Matmul FLOPs (2 per multiply-add) of one forward field evaluation, by matmul."""
    b, n, d = batch, tokens, width
    return {"qkv": 2 * b * n * d * 3 * d,
            "scores": 2 * b * heads * n * n * (d // heads),
            "mix": 2 * b * heads * n * n * (d // heads),
            "out": 2 * b * n * d * d,
            "mlp up": 2 * b * n * d * mlp_ratio * d,
            "mlp down": 2 * b * n * mlp_ratio * d * d}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--steps", type=int, default=8, help="fixed steps over [0, 1]")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each step")
    parser.add_argument("--quick", action="store_true",
                        help="batch 8, matmuls up to 1024, 5 repeats")
    args = parser.parse_args()
    batch, tokens, width, heads, mlp_ratio = (8 if args.quick else 32), 64, 64, 4, 4
    sizes = (256, 512, 1024) if args.quick else (512, 1024, 1536, 2048)
    repeats = 5 if args.quick else args.repeats

    start_benchmark()
    print(f"workload: TransformerBlockField({width}, {heads}) float32, x {(batch, tokens, width)}, "
          f"{args.steps} steps, {repeats} repeats\n")

    print("(a) float32 matmul ceiling, jit(jnp.dot) of n x n matrices")
    print("     n   median ms   GFLOP/s")
    ceiling_rows = matmul_ceiling(sizes, repeats)
    for n, ms, gflops in ceiling_rows:
        print(f"{n:6d} {ms:11.3f} {gflops:9.1f}")
    print(f"ceiling (best): {max(row[2] for row in ceiling_rows):.1f} GFLOP/s\n")

    param_key, data_key = jax.random.split(jax.random.key(0))
    field = odeformer.TransformerBlockField(width, heads, mlp_ratio=mlp_ratio,
                                            rngs=nnx.Rngs(param_key))
    f, state = odeformer.vector_field(field)
    y0 = jax.random.normal(data_key, (batch, tokens, width), jnp.float32)

    # One field evaluation without any loop: forward, and forward + VJP (what each step
    # of the checkpoint adjoint's backward pass runs). Train cost per eval = both.
    fwd = jax.jit(lambda s, y: f(0.0, y, s)).lower(state, y0).compile()
    vjp = jax.jit(lambda s, y, ct: jax.vjp(lambda s, y: f(0.0, y, s), s, y)[1](ct))
    vjp = vjp.lower(state, y0, y0).compile()
    xla_eval = flops_of(fwd) + flops_of(vjp)
    per_matmul = analytic_forward(batch, tokens, width, heads, mlp_ratio)
    analytic_fwd = sum(per_matmul.values())
    print("(b) analytic matmul FLOPs of one forward field evaluation (MFLOP)")
    print("  " + "  ".join(f"{name} {v / 1e6:.1f}" for name, v in per_matmul.items()))
    print(f"  total {analytic_fwd / 1e6:.1f}; XLA's count of the same forward, all ops: "
          f"{flops_of(fwd) / 1e6:.1f}")
    print("  train cost per evaluation = forward x1 + recomputed forward x1 (checkpoint "
          "adjoint) + backward x2 = 4 x forward")
    print(f"  analytic {4 * analytic_fwd / 1e6:.1f} MFLOP; XLA, loop-free fwd + vjp: "
          f"{xla_eval / 1e6:.1f} MFLOP")
    # The recompute's primal output is unused where nothing but the step's result reads it:
    # the last stage's out and mlp-down products (every evaluation's for Euler).
    unused = per_matmul["out"] + per_matmul["mlp down"]
    print(f"  (XLA's vjp drops the recomputed out and mlp down forward: 4 x forward - "
          f"{unused / 1e6:.1f} = {(4 * analytic_fwd - unused) / 1e6:.1f} MFLOP of matmuls)\n")

    steps_fns, rows = {}, []
    for solver in ("euler", "rk4"):
        def loss(s, y, solver=solver):
            sol = odeformer.solve(f, y, args=s, solver=solver, steps=args.steps)
            return jnp.mean(sol.y1**2), sol.stats["nfe"]

        start = time.perf_counter()
        compiled = jax.jit(jax.value_and_grad(loss, has_aux=True),
                           compiler_options=odeformer.compiler_options()).lower(state, y0).compile()
        (_, nfe), _ = jax.block_until_ready(compiled(state, y0))
        print(f"{solver:6s} compile + first run: {time.perf_counter() - start:.1f}s")
        stages = solver_info(solver).evals_per_step
        # Per step, if the recompute drops exactly its last stage's out and mlp-down products:
        # m matmuls per stage forward, m s - 2 recomputed, 2 m per stage backward.
        fwd, bwd = len(per_matmul) * stages, 2 * len(per_matmul) * stages
        print(f"       dot instructions in the compiled step: {dot_instructions(compiled)} "
              f"(forward {fwd} + recomputed {fwd - 2} + backward {bwd} = {2 * fwd - 2 + bwd} "
              "if the recompute drops one out and one mlp down)")
        steps_fns[solver] = compiled
        rows.append((solver, int(nfe), flops_of(compiled), stages))

    # The ceiling's matmul runs interleaved with the steps too (euler, rk4, matmul, euler, ...),
    # so that the fraction compares times taken under the same load.
    best_n = max(ceiling_rows, key=lambda row: row[2])[0]
    a, b = square_operands(best_n)
    dot = jax.jit(jnp.dot).lower(a, b).compile()
    jax.block_until_ready(dot(a, b))
    calls = {solver: functools.partial(step, state, y0) for solver, step in steps_fns.items()}
    times = interleaved_ms({**calls, "matmul": functools.partial(dot, a, b)}, repeats)
    ceiling = 2 * best_n**3 / (statistics.median(times["matmul"]) * 1e-3) / 1e9
    print(f"\nceiling measured interleaved with the steps (n = {best_n}): {ceiling:.1f} GFLOP/s")

    print("GFLOP per training step, counts: XLA whole = cost_analysis() of the compiled step;\n"
          "XLA/eval = loop-free XLA fwd+vjp (all ops) x nfe; matmul 4x = analytic 4 x forward "
          "matmuls x nfe;\nexecuted = matmul 4x less the recomputed products nothing reads (the "
          "last stage's out and\nmlp down per step); model = 3 x forward matmuls x nfe (forward + "
          "backward, no recompute:\nthe MFU convention). % of ceiling: each matmul count / time "
          "/ ceiling (the ceiling is a matmul).")
    print("solver  nfe  XLA whole  XLA/eval  matmul 4x  executed   model  median ms  "
          "% ceiling: 4x  executed  model  XLA/eval")
    for solver, nfe, xla_whole, stages in rows:
        ms = statistics.median(times[solver])
        counts = (4 * analytic_fwd * nfe, (4 * analytic_fwd - unused / stages) * nfe, 3 * analytic_fwd * nfe,
                  xla_eval * nfe)
        shares = [100 * c / (ms * 1e-3) / 1e9 / ceiling for c in counts]
        print(f"{solver:6s} {nfe:4d} {xla_whole / 1e9:10.3f} {counts[3] / 1e9:9.3f} {counts[0] / 1e9:10.3f} "
              f"{counts[1] / 1e9:9.3f} {counts[2] / 1e9:7.3f} {ms:10.2f} {shares[0]:15.1f} {shares[1]:9.1f} "
              f"{shares[2]:6.1f} {shares[3]:9.1f}")
    if any(xla_whole < 0.5 * xla_eval * nfe for _, nfe, xla_whole, _ in rows):
        print("\nnote: XLA whole is far below XLA/eval: XLA's cost analysis counts a while-loop "
              "body once,\nnot once per iteration (the same count for any --steps), so it is "
              "not the step's FLOPs.")


if __name__ == "__main__":
    main()
