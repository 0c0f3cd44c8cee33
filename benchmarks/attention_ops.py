"""python benchmarks/attention_ops.py [--batch 32] [--repeats 50]

What the attention of ``TransformerBlockField(64, 4)`` costs, op by op, and whether it uses
both cores.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``). The attention core of
``odeformer._fields.MultiHeadAttention``, ``odeformer._fields.attend`` (64 tokens, 4 heads of
16, float32): its three steps (the score matmul ``q k^T``, the softmax over keys, the
``weights v`` matmul) each jitted alone, checked to compose to ``attend``, then ``attend``
itself (XLA fuses the three) forward and forward + backward, and, for scale, a
single 2-D matmul with the same FLOPs as one attention matmul and one shaped like the MLP's
first layer (4x the FLOPs). All interleaved in one
process; it prints median ms and GFLOP/s. Run it again under ``taskset -c 0`` to see what
the second core buys: an op whose time does not drop with two cores runs on one.
"""

import argparse
import os
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from harness import interleaved_ms, start_benchmark

from odeformer._fields import attend

TOKENS, HEADS, HEAD_DIM = 64, 4, 16


# attend's three steps, to time one at a time; main checks that they compose to attend.
def scores(q, k):
    return jnp.einsum("...qhc,...khc->...hqk", q, k) / jnp.sqrt(HEAD_DIM).astype(q.dtype)


def softmax(s):
    return jax.nn.softmax(s, axis=-1)


def mix(w, v):
    return jnp.einsum("...hqk,...khc->...qhc", w, v)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--batch", type=int, default=32, help="batch size")
    parser.add_argument("--repeats", type=int, default=50, help="interleaved timed calls per op")
    args = parser.parse_args()

    start_benchmark()
    print(f"cores this process may use: {len(os.sched_getaffinity(0))}")
    keys = jax.random.split(jax.random.key(0), 4)
    shape = (args.batch, TOKENS, HEADS, HEAD_DIM)
    q, k, v = (jax.random.normal(key, shape, jnp.float32) for key in keys[:3])
    s = jax.random.normal(keys[3], (args.batch, HEADS, TOKENS, TOKENS), jnp.float32)
    matmul_flops = 2 * args.batch * HEADS * TOKENS * TOKENS * HEAD_DIM
    rows = args.batch * TOKENS  # a 2-D matmul [rows, 64] @ [64, cols] with matmul_flops
    cols = matmul_flops // (2 * rows * HEADS * HEAD_DIM)
    a, b = jnp.ones((rows, HEADS * HEAD_DIM)), jnp.ones((HEADS * HEAD_DIM, cols))
    up = jnp.ones((HEADS * HEAD_DIM, 4 * HEADS * HEAD_DIM))  # the block's MLP, mlp_ratio 4

    np.testing.assert_allclose(mix(softmax(scores(q, k)), v), attend(q, k, v), rtol=1e-5, atol=1e-6)

    def grad_attention(q, k, v):
        return jax.grad(lambda *x: jnp.sum(attend(*x) ** 2), argnums=(0, 1, 2))(q, k, v)

    programs = {  # name: (function, arguments, matmul FLOPs)
        "scores q k^T": (scores, (q, k), matmul_flops),
        "softmax": (softmax, (s,), 0),
        "weights v": (mix, (s, v), matmul_flops),
        "attention, forward (fused)": (attend, (q, k, v), 2 * matmul_flops),
        "attention, forward + backward": (grad_attention, (q, k, v), 6 * matmul_flops),
        f"2-D matmul [{rows},64] @ [64,{cols}]": (lambda a, b: a @ b, (a, b), matmul_flops),
        f"MLP-shaped matmul [{rows},64] @ [64,256]": (lambda a, b: a @ b, (a, up), 4 * matmul_flops),
    }
    compiled = {name: jax.jit(fn).lower(*xs).compile() for name, (fn, xs, _) in programs.items()}
    calls = {name: (lambda c=c, xs=programs[name][1]: c(*xs)) for name, c in compiled.items()}
    interleaved_ms(calls, 3)
    times = interleaved_ms(calls, args.repeats)
    print(f"\nbatch {args.batch}, {TOKENS} tokens, {HEADS} heads of {HEAD_DIM}; {args.repeats} interleaved "
          "repeats\n| op | median ms | matmul GFLOP/s |\n|---|---|---|")
    for name, (_, _, flops) in programs.items():
        ms = statistics.median(times[name])
        rate = f"{flops / ms / 1e6:.1f}" if flops else ""
        print(f"| {name} | {ms:.3f} | {rate} |")


if __name__ == "__main__":
    main()
