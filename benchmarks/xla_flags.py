"""python benchmarks/xla_flags.py [--solvers euler,rk4] [--batch 32] [--tokens 64] [--width 64]
    [--options NAME,...] [--repeats 15] [--quick]

The training step under XLA:CPU's own options, against the default compile.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``). Times one training
step (loss ``mean(x(1)**2)`` and its gradient in all parameters) of
``TransformerBlockField(64, 4)``, float32, x of shape (batch, 64, 64), 8 fixed steps on
[0, 1] through ``odeformer.solve`` (checkpoint adjoint), compiled once per entry of
``OPTIONS`` with ``jax.jit(...).lower(...).compile(compiler_options=...)``: the same
DebugOptions that ``XLA_FLAGS`` sets, but for one program, so a library could pass them for
its own steps without touching the process. Before timing, each variant's loss and
gradients must agree with the default's (rtol 1e-4 of each leaf's largest entry; fast math
is allowed 1e-3 and prints its difference). An option this jaxlib does not accept is
printed as refused, not timed. "program = default's" says whether the optimised HLO text
is identical to the default's (an option that changes nothing there can at most change how
the runtime executes it). Variants run interleaved (A, B, C, A, B, C, ...); the ratio is
the median of per-repeat ratios to the default.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from harness import assert_leaves_close, block_workload, interleaved_ms, start_benchmark

import odeformer

STEPS = 8
_YNN = "xla_cpu_experimental_ynn_fusion_type"
_XNN = "xla_cpu_experimental_xnn_fusion_type"
_ALL = "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,LIBRARY_FUSION_TYPE_REDUCE"

# name -> (compiler options, why it might help)
OPTIONS = {
    "default": ({}, "jaxlib's defaults (the compiled HLO runs the dots as YNNPACK fusions)"),
    "ynn fusions off": ({_YNN: ""}, "dots go to XLA's own (Eigen) kernels"),
    "ynn dot only": ({_YNN: "LIBRARY_FUSION_TYPE_DOT"}, "YNNPACK dots, nothing fused into them"),
    "ynn dot+eltwise+reduce": ({_YNN: _ALL}, "YNNPACK also takes elementwise ops and reductions"),
    "xnn dot fusions": ({_XNN: "LIBRARY_FUSION_TYPE_DOT"}, "XNNPACK's dot fusions"),
    "xnn dot+eltwise+reduce": ({_XNN: _ALL}, "XNNPACK also takes elementwise ops and reductions"),
    "xnn graph, greedy": ({"xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"},
                          "whole XNNPACK-compatible subgraphs"),
    "fast math": ({"xla_cpu_enable_fast_math": True}, "reassociation, approximate functions"),
    "512-bit vectors": ({"xla_cpu_prefer_vector_width": 512}, "the CPU has AVX-512; codegen prefers 256"),
    "concurrency scheduler": ({"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_CONCURRENCY_OPTIMIZED"},
                              "orders independent ops to run side by side"),
    "memory scheduler": ({"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"},
                         "orders ops for a smaller live set"),
    "eigen single-threaded": ({"xla_cpu_multi_thread_eigen": False},
                              "odeformer.compiler_options() on CPU; changes how the attention is fused"),
}
LOOSE = {"fast math": 1e-3}  # reassociation moves float32 gradients beyond 1e-4


def train_step(f, solver):
    def loss(state, y0):
        return jnp.mean(odeformer.solve(f, y0, args=state, solver=solver, steps=STEPS).y1 ** 2)

    return jax.jit(jax.value_and_grad(loss))


def max_rel_diff(got, want) -> float:
    return max(float(np.max(np.abs(g - w)) / np.max(np.abs(w)))
               for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True))


def compile_variants(step, state, y0, options):
    """name -> (compiled, compile s, temp MB, same optimised HLO as the default's?); refused
    options are printed and left out."""
    compiled, default_text = {}, None
    lowered = step.lower(state, y0)
    for name, (opts, _) in options.items():
        jax.clear_caches()
        start = time.perf_counter()
        try:
            program = lowered.compile(compiler_options=opts or None)
        except Exception as error:  # noqa: BLE001 -- an option this jaxlib refuses is a finding to print
            print(f"  {name}: refused ({str(error).splitlines()[0][:150]})")
            continue
        seconds = time.perf_counter() - start
        text = program.as_text()
        default_text = text if default_text is None else default_text  # "default" comes first
        compiled[name] = (program, seconds, program.memory_analysis().temp_size_in_bytes / 1e6,
                          text == default_text)
    return compiled


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--solvers", default="euler,rk4", help="comma-separated fixed-step solvers")
    parser.add_argument("--batch", type=int, default=32, help="examples per step")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs of each variant")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per example")
    parser.add_argument("--width", type=int, default=64, help="model width (4 heads)")
    parser.add_argument("--options", default=",".join(OPTIONS),
                        help="comma-separated names of OPTIONS to compare (the default always runs)")
    parser.add_argument("--quick", action="store_true", help="batch 2, 3 repeats, three options")
    args = parser.parse_args()
    batch, repeats = (2, 3) if args.quick else (args.batch, args.repeats)
    names = ["ynn fusions off", "fast math"] if args.quick else args.options.split(",")
    unknown = sorted(set(names) - set(OPTIONS))
    if unknown:
        parser.error(f"--options: unknown {unknown}; choose from {', '.join(OPTIONS)}")
    options = {k: OPTIONS[k] for k in ["default", *(n for n in names if n != "default")]}

    start_benchmark()
    print(f"workload: TransformerBlockField({args.width}, 4) float32, x {(batch, args.tokens, args.width)}, "
          f"{STEPS} fixed steps, checkpoint adjoint, {repeats} repeats\n")
    f, state, y0 = block_workload(batch, args.tokens, args.width)
    for solver in args.solvers.split(","):
        print(f"{solver}: compiling {len(options)} variants")
        compiled = compile_variants(train_step(f, solver), state, y0, options)
        want = compiled["default"][0](state, y0)
        diffs = {}
        for name, (program, *_) in compiled.items():
            got = program(state, y0)
            assert_leaves_close(got, want, LOOSE.get(name, 1e-4), f"{solver}, {name}")
            diffs[name] = max_rel_diff(got, want)
        times = interleaved_ms({name: (lambda p=p: p(state, y0)) for name, (p, *_) in compiled.items()},
                               repeats)
        base = np.asarray(times["default"])
        print(f"\n| {solver}: option | median ms | / default | compile s | temp MB | max grad diff "
              "| program = default's | why |")
        print("|---|---|---|---|---|---|---|---|")
        for name, (_, seconds, temp, same) in compiled.items():
            ms = np.asarray(times[name])
            print(f"| {name} | {np.median(ms):.1f} | {np.median(ms / base):.3f} | {seconds:.1f} | {temp:.1f} "
                  f"| {diffs[name]:.1e} | {'yes' if same else 'no'} | {options[name][1]} |")
        print()


if __name__ == "__main__":
    main()
