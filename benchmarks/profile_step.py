"""python benchmarks/profile_step.py [--steps 8] [--calls 20] [--top 12] [--quick]

Where the time of a training step goes, op by op, from a ``jax.profiler`` trace.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``). Profiles (a) one field
evaluation forward, (b) its forward + backward, (c) the training step of
``benchmarks/solver_overhead.py`` (Euler, ``adjoint="checkpoint"``): ``TransformerBlockField(64,
4)``, float32, x (32, 64, 64). Each compiled program runs ``--calls`` times under
``jax.profiler.trace``; XLA:CPU records one event per executed HLO op (thunk) on the thread
that ran it. Per program it prints the wall time per call, the op time summed over threads
per call (above the wall time when ops ran side by side on both cores), that time by kind of
op, and the most expensive ops with their HLO shape. Kinds: ``matmul`` (a fusion or op whose
HLO contains a dot), ``copy/transpose`` (fusions of copies and transposes only),
``elementwise/reduce`` (other fusions), ``other`` (loop bookkeeping and the rest); ``while``,
``conditional`` and ``call`` are not counted, their bodies' ops are. XLA:CPU only: on a GPU
the trace's events are kernels and host launches, which this table does not separate.
"""

import argparse
import collections
import glob
import re
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
from harness import block_workload, start_benchmark

import odeformer

# Ops whose trace event spans the ops of the computations they run: counting them too would
# count their bodies twice.
CONTAINERS = ("while", "conditional", "call")
_DEFINITION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\S+?)(?:\{[^}]*\})? (\w+(?:-\w+)*)\(")


def op_table(hlo: str) -> dict[str, tuple[str, str]]:
    """``{instruction name: (kind, shape)}`` of the ops of a compiled module's text."""
    computations, current = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%(\S+) ", line)
        if header and line.rstrip().endswith("{"):
            current = header.group(1)
            computations[current] = []
        elif current:
            computations[current].append(line)
    ops = {}
    for lines in computations.values():
        for line in lines:
            match = _DEFINITION.match(line)
            if not match:
                continue
            name, shape, opcode = match.groups()
            if opcode in CONTAINERS:
                continue
            called = re.search(r"calls=%([\w.\-]+)", line)
            body = "\n".join(computations.get(called.group(1), ())) if called else ""
            if opcode in ("dot", "convolution") or " dot(" in body:
                kind = "matmul"
            elif opcode == "fusion" and re.search(r" (copy|transpose)\(", body) and not re.search(
                    r" (add|multiply|subtract|divide|exponential|tanh|reduce)\(", body):
                kind = "copy/transpose"
            elif opcode in ("copy", "transpose"):
                kind = "copy/transpose"
            elif opcode == "fusion":
                kind = "elementwise/reduce"
            else:
                kind = "other"
            ops[name] = (kind, shape)
    return ops


def profile(fn, args, calls):
    """``(wall ms per call, {op: summed ns}, compiled ops)`` of ``fn(*args)``."""
    return profile_compiled(jax.jit(fn).lower(*args).compile(), args, calls)


def profile_compiled(compiled, args, calls):
    """:func:`profile` of a program already compiled for ``args``."""
    ops = op_table(compiled.as_text())
    for _ in range(3):
        jax.block_until_ready(compiled(*args))
    walls = []
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            for _ in range(calls):
                start = time.perf_counter()
                jax.block_until_ready(compiled(*args))
                walls.append(1e3 * (time.perf_counter() - start))
        trace = jax.profiler.ProfileData.from_file(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0])
    spent = collections.Counter()
    for plane in trace.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in ops:
                    spent[event.name] += event.duration_ns
    return statistics.median(walls), spent, ops


def report(title, fn, args, calls, top):
    wall, spent, ops = profile(fn, args, calls)
    total = sum(spent.values()) / calls / 1e6
    print(f"\n{title}: wall {wall:.2f} ms per call (median, under the profiler), op time {total:.2f} ms "
          "per call summed over threads")
    kinds = collections.Counter()
    for name, ns in spent.items():
        kinds[ops[name][0]] += ns / calls / 1e6
    print("| kind | ms per call | share |\n|---|---|---|")
    for kind, ms in kinds.most_common():
        print(f"| {kind} | {ms:.2f} | {100 * ms / total:.0f}% |")
    print("| op | kind | shape | ms per call | share |\n|---|---|---|---|---|")
    for name, ns in spent.most_common(top):
        ms = ns / calls / 1e6
        print(f"| {name} | {ops[name][0]} | {ops[name][1]} | {ms:.3f} | {100 * ms / total:.1f}% |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--steps", type=int, default=8, help="fixed Euler steps of (c)")
    parser.add_argument("--calls", type=int, default=20, help="profiled calls of (a) and (b); (c) a quarter")
    parser.add_argument("--top", type=int, default=12, help="ops listed per program")
    parser.add_argument("--quick", action="store_true", help="batch 4, 2 steps, 4 calls")
    args = parser.parse_args()
    batch, steps, calls = (4, 2, 4) if args.quick else (32, args.steps, args.calls)

    start_benchmark()
    f, state, y0 = block_workload(batch)
    print(f"workload: TransformerBlockField(64, 4) float32, x {y0.shape}")

    def train(s, y):
        return jnp.mean(odeformer.solve(f, y, args=s, solver="euler", steps=steps).y1 ** 2)

    report("(a) one field evaluation, forward", lambda s, y: f(0.0, y, s), (state, y0), calls, args.top)
    report("(b) one field evaluation, forward + backward",
           jax.grad(lambda s, y: jnp.mean(f(0.0, y, s) ** 2)), (state, y0), calls, args.top)
    report(f"(c) training step, {steps} Euler steps, checkpoint adjoint", jax.grad(train), (state, y0),
           max(2, calls // 4), args.top)


if __name__ == "__main__":
    main()
