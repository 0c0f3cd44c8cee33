"""python benchmarks/store_vs_recompute.py [--batch 32] [--steps 8] [--repeats 15] [--quick]

Why a training step that stores every activation is usually slower in XLA than one that recomputes.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``). PyTorch's backprop keeps
every activation (3 matmul passes per evaluation); ``solve``'s checkpoint adjoint stores
states only and recomputes each step's forward (4 passes). Storing should then take 3/4 of
the time; in XLA it usually takes more (benchmarks/README.md). This script times one
training step of ``TransformerBlockField(64, 4)``, float32, x (batch, 64, 64), N fixed Euler
steps, six ways, interleaved in one process:

- ``checkpoint``: ``odeformer.solve(..., adjoint="checkpoint")``, the baseline;
- ``direct``: ``odeformer.solve(..., adjoint="direct")`` (Diffrax's ``DirectAdjoint``);
- ``scan``: the Euler update in ``lax.scan``, no remat: residuals stacked in the loop;
- ``unrolled``: a Python loop (no loop in the program), no remat: each residual its own buffer;
- ``unrolled+fence``: as ``unrolled``, with the state and its cotangent passed through a
  one-trip ``while`` loop whose trip count is a runtime argument, so that XLA must
  materialise them (an experiment, not a proposal: it exists to show what fusion costs);
- ``unrolled+barrier``: as ``unrolled``, with ``lax.optimization_barrier`` instead.

Per variant it prints the median ms, the median of per-repeat ratios to ``checkpoint``, the
compiled program's temporary buffer (where stored residuals live), the operand count of its
largest fusion (a fusion that recomputes a chain of steps has many) and how many
``opt-barrier`` ops survive compilation. Then it profiles ``scan`` and sums the time of the
ops whose output is a stacked ``[N, batch, ...]`` or ``[N, batch * 64, ...]`` buffer (the ops
that write the stored residuals, which may also compute them). Gradients of all variants
are checked against ``checkpoint`` before anything is timed. Run it under ``taskset -c 0``
to take XLA's concurrent scheduling of independent ops out of the picture.
"""

import argparse
import re
import statistics

import jax
import jax.numpy as jnp
from harness import assert_leaves_close, block_workload, interleaved_ms, start_benchmark
from profile_step import profile_compiled

import odeformer

RTOL = 1e-4


def _fence(x, one):
    """``x`` after a ``while`` loop of ``one`` trips that leaves it unchanged; ``one`` is a
    runtime value, so XLA can neither remove the loop nor fuse across it."""
    return jax.lax.fori_loop(0, one, lambda i, v: jnp.where(i < 0, -v, v), x)


@jax.custom_vjp
def fence(x, one):
    return _fence(x, one)


fence.defvjp(lambda x, one: (_fence(x, one), one), lambda one, g: (_fence(g, one), None))


@jax.custom_vjp
def barrier(x):
    return jax.lax.optimization_barrier(x)


barrier.defvjp(lambda x: (jax.lax.optimization_barrier(x), None),
               lambda _, g: (jax.lax.optimization_barrier(g),))


def losses(f, steps):
    """``{name: loss(state, y0, one)}``: the step's loss, computed each way."""
    h = 1.0 / steps

    def solved(adjoint):
        return lambda s, y, one: jnp.mean(
            odeformer.solve(f, y, args=s, solver="euler", steps=steps, adjoint=adjoint).y1 ** 2)

    def scan(s, y, one):
        y, _ = jax.lax.scan(lambda y, t: (y + h * f(t, y, s), None), y, h * jnp.arange(steps))
        return jnp.mean(y**2)

    def unrolled(cut):
        def loss(s, y, one):
            for i in range(steps):
                y = cut(y, one)
                y = y + h * f(i * h, y, s)
            return jnp.mean(y**2)
        return loss

    return {"checkpoint": solved("checkpoint"), "direct": solved("direct"), "scan": scan,
            "unrolled": unrolled(lambda y, one: y), "unrolled+fence": unrolled(fence),
            "unrolled+barrier": unrolled(lambda y, one: barrier(y))}


def largest_fusion(hlo: str) -> int:
    """The most operands of any fusion in a compiled module's text."""
    return max((line.split(" fusion(", 1)[1].split(" kind=")[0].count("%")
                for line in hlo.splitlines() if " fusion(" in line), default=0)


def check_gradients(compiled, args):
    """Raises unless every variant's gradient matches ``checkpoint``'s."""
    reference = compiled["checkpoint"](*args)
    for name, c in compiled.items():
        assert_leaves_close(c(*args), reference, RTOL, name)
    print(f"gradients of every variant agree with checkpoint's (rtol {RTOL}, atol {RTOL} x the leaf's "
          "largest magnitude)")


def print_table(compiled, args, repeats):
    calls = {name: (lambda c=c: c(*args)) for name, c in compiled.items()}
    interleaved_ms(calls, 2)
    times = interleaved_ms(calls, repeats)
    print(f"\n{repeats} interleaved repeats\n"
          "| variant | median ms | / checkpoint | temp MB | largest fusion (operands) | opt-barrier ops |\n"
          "|---|---|---|---|---|---|")
    for name, c in compiled.items():
        hlo = c.as_text()
        ratio = statistics.median(t / b for t, b in zip(times[name], times["checkpoint"], strict=True))
        temp_mb = c.memory_analysis().temp_size_in_bytes / 2**20
        print(f"| {name} | {statistics.median(times[name]):.1f} | {ratio:.2f} | {temp_mb:.0f} | "
              f"{largest_fusion(hlo)} | {hlo.count(' opt-barrier(')} |")


def print_stacking(compiled, args, steps, batch, calls):
    """Profiles ``compiled`` and prints the share of op time in ops that write stacked buffers."""
    wall, spent, ops = profile_compiled(compiled, args, calls)
    stacked = re.compile(rf"^f32\[{steps},({batch}|{batch * 64})[,\]]")
    stack_ms = sum(ns for op, ns in spent.items() if stacked.match(ops[op][1])) / calls / 1e6
    total_ms = sum(spent.values()) / calls / 1e6
    print(f"\nscan under the profiler: wall {wall:.1f} ms, op time {total_ms:.1f} ms summed over threads, "
          f"of which {stack_ms:.1f} ms ({100 * stack_ms / total_ms:.0f}%) in ops whose output is a stacked "
          f"f32[{steps}, {batch} or {batch * 64}, ...] buffer")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--batch", type=int, default=32, help="batch size (64 tokens, width 64)")
    parser.add_argument("--steps", type=int, default=8, help="fixed Euler steps")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timed calls per variant")
    parser.add_argument("--quick", action="store_true", help="batch 4, 2 steps, 3 repeats")
    args = parser.parse_args()
    batch, steps, repeats = (4, 2, 3) if args.quick else (args.batch, args.steps, args.repeats)

    start_benchmark()
    f, state, y0 = block_workload(batch)
    inputs = (state, y0, jnp.int32(1))
    print(f"workload: TransformerBlockField(64, 4) float32, x {(batch, 64, 64)}, {steps} Euler steps, "
          "loss mean(x(1)^2), gradient with respect to the parameters")

    compiled = {name: jax.jit(jax.grad(loss)).lower(*inputs).compile()
                for name, loss in losses(f, steps).items()}
    check_gradients(compiled, inputs)
    print_table(compiled, inputs, repeats)
    print_stacking(compiled["scan"], inputs, steps, batch, max(2, repeats // 3))


if __name__ == "__main__":
    main()
