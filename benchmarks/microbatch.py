"""python benchmarks/microbatch.py [--batch 32] [--tokens 64] [--width 64] [--steps 8] [--repeats N] [--quick]

A training step's gradient computed in chunks of the batch
(``odeformer.experiment.microbatch.accumulate``, which
``train.microbatch`` uses) against the whole batch at once.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``). The step is the peer
benchmark's: loss ``mean(x(1)**2)`` of ``TransformerBlockField(width, 4)``, float32, x (batch,
tokens, width), N fixed steps of Euler and of RK4 on [0, 1], ``adjoint="checkpoint"``, and its
gradient in every parameter. Each chunk size m (a divisor of the batch, at least 2) splits the
batch into batch / m chunks that are differentiated one after another in a ``lax.scan``; the
mean of their gradients is the whole batch's (checked to rtol 1e-4 before timing). All chunk
sizes of one solver are timed interleaved in one process; the table gives the median ms and
the median of per-repeat ratios to the whole batch (< 1: chunking is faster), plus the
compiled program's temporary buffer.
"""

import argparse
import statistics

import jax
import jax.numpy as jnp
from harness import assert_leaves_close, block_workload, interleaved_ms, start_benchmark

import odeformer
import odeformer.experiment.microbatch

RTOL = 1e-4


def gradient(f, solver, steps, chunks):
    """Jitted ``(params, y0) -> (loss, grads)``, the batch in ``chunks`` chunks (1: at once)."""
    def loss_and_grad(params, y):
        return jax.value_and_grad(
            lambda p: jnp.mean(odeformer.solve(f, y, args=p, solver=solver, steps=steps).y1 ** 2))(params)

    def step(params, y0):
        if chunks == 1:
            return loss_and_grad(params, y0)
        chunked = y0.reshape(chunks, y0.shape[0] // chunks, *y0.shape[1:])
        def chunk_gradient(params, y, i):
            loss, grads = loss_and_grad(params, y)
            return grads, loss

        grads, losses = odeformer.experiment.microbatch.accumulate(chunk_gradient, params, chunked)
        return losses.mean(), grads

    return jax.jit(step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--batch", type=int, default=32, help="batch size")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per example")
    parser.add_argument("--width", type=int, default=64, help="model width (4 heads)")
    parser.add_argument("--steps", type=int, default=8, help="fixed steps on [0, 1]")
    parser.add_argument("--repeats", type=int, default=15, help="interleaved timed calls per variant")
    parser.add_argument("--quick", action="store_true", help="batch 4, 8 tokens, 2 steps, 3 repeats")
    args = parser.parse_args()
    batch, tokens, steps, repeats = ((4, 8, 2, 3) if args.quick
                                     else (args.batch, args.tokens, args.steps, args.repeats))
    start_benchmark()
    print(f"workload: TransformerBlockField({args.width}, 4) float32, x {(batch, tokens, args.width)}, "
          f"{steps} fixed steps, adjoint='checkpoint', {repeats} repeats\n")
    f, params, y0 = block_workload(batch, tokens=tokens, width=args.width)
    sizes = [m for m in range(batch, 1, -1) if batch % m == 0]

    print("| solver | chunk size | chunks | ms | / whole batch | temp MB |\n|---|---|---|---|---|---|")
    for solver in ("euler", "rk4"):
        calls, temp = {}, {}
        for size in sizes:
            step = gradient(f, solver, steps, batch // size)
            compiled = step.lower(params, y0).compile()
            temp[size] = compiled.memory_analysis().temp_size_in_bytes / 1e6
            result = jax.block_until_ready(step(params, y0))
            if size == batch:
                want = result
            assert_leaves_close(result, want, RTOL, f"{solver}, chunks of {size}")
            calls[size] = lambda step=step: step(params, y0)
        ms = interleaved_ms(calls, repeats)
        for size in sizes:
            ratio = statistics.median(a / b for a, b in zip(ms[size], ms[batch], strict=True))
            print(f"| {solver} | {size} | {batch // size} | {statistics.median(ms[size]):.1f} | {ratio:.2f} "
                  f"| {temp[size]:.0f} |")
    print("\n/ whole batch: median over interleaved repeats of ms / the whole batch's ms (< 1: faster)")


if __name__ == "__main__":
    main()
