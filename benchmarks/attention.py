"""python benchmarks/attention.py [--repeats 50]

``odeformer._fields.attend`` with ``implementation="xla"`` (``jax.nn.dot_product_attention``)
against ``implementation="einsum"``, forward and forward + backward (the gradient of ``sum(out^2)`` with
respect to q, k, v), float32, at the classifier's shape (batch 32, 64 tokens, 4 heads of 16)
and the language model's (batch 12, 64 tokens, 4 heads of 32, causal). All programs jitted and
interleaved in one process; it prints median ms and the ratio xla / einsum. The ratio of the
forward + backward pass is what sets ``attend``'s default on CPU.
Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``).
"""

import argparse
import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from harness import interleaved_ms, start_benchmark

from odeformer._fields import attend

SHAPES = {"classifier (32, 64, 4, 16)": ((32, 64, 4, 16), False),
          "language model (12, 64, 4, 32), causal": ((12, 64, 4, 32), True)}
PATHS = {"einsum": functools.partial(attend, implementation="einsum"),
         "dot_product_attention": functools.partial(attend, implementation="xla")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--repeats", type=int, default=50, help="interleaved timed calls per program")
    args = parser.parse_args()

    start_benchmark()
    calls = {}
    for shape_name, (shape, causal) in SHAPES.items():
        keys = jax.random.split(jax.random.key(0), 3)
        q, k, v = (jax.random.normal(key, shape, jnp.float32) for key in keys)
        for path, fn in PATHS.items():
            def forward(q, k, v, fn=fn, causal=causal):
                return fn(q, k, v, causal=causal)

            def backward(q, k, v, forward=forward):
                return jax.grad(lambda *x: jnp.sum(forward(*x) ** 2), argnums=(0, 1, 2))(q, k, v)

            for pass_name, program in (("forward", forward), ("forward + backward", backward)):
                compiled = jax.jit(program).lower(q, k, v).compile()
                calls[shape_name, pass_name, path] = lambda c=compiled, x=(q, k, v): c(*x)
        np.testing.assert_allclose(*(calls[shape_name, "forward", p]() for p in PATHS), rtol=1e-5, atol=1e-6)
    interleaved_ms(calls, 3)
    times = {key: statistics.median(ms) for key, ms in interleaved_ms(calls, args.repeats).items()}
    print(f"\nfloat32, median of {args.repeats} interleaved calls\n"
          "| shape (batch, tokens, heads, head_dim) | pass | einsum ms | dot_product_attention ms | ratio |\n"
          "|---|---|---|---|---|")
    for shape_name in SHAPES:
        for pass_name in ("forward", "forward + backward"):
            einsum, fused = (times[shape_name, pass_name, p] for p in PATHS)
            print(f"| {shape_name} | {pass_name} | {einsum:.3f} | {fused:.3f} | {fused / einsum:.2f} |")


if __name__ == "__main__":
    main()
