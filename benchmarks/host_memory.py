"""python benchmarks/host_memory.py [--pairs 5] [--repeats 4] [--quick]

System malloc against ``odeformer.parallel.reuse_host_memory()``, in alternating fresh processes.

Needs ``import odeformer`` (``pip install -e .`` or ``PYTHONPATH=.``). The setting is
process-wide and cannot be undone, so it cannot be switched inside one process: each pair
runs this script twice as a child (``--child system`` / ``--child reuse``, order alternating
between pairs). A child times training steps (loss ``mean(x(1)**2)`` and its gradient in the
field state) of ``TransformerBlockField(64, 4)``, float32, and counts the minor page faults
and kernel CPU time per call with ``getrusage``. ``temp MB`` is the compiled step's
temporary buffer (``memory_analysis``). The ratio is the median over pairs of reuse ms /
system ms (below 1: reuse faster); the peak resident memory of each child (``ru_maxrss``) is
the price of keeping freed blocks.
"""

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time

# (name, x shape, solver, solve options)
CASES = (("euler 8, checkpoint", (32, 64, 64), "euler", {"steps": 8}),
         ("rk4 8, checkpoint", (32, 64, 64), "rk4", {"steps": 8}),
         ("dopri5 1e-5, checkpoint", (32, 64, 64), "dopri5", {"rtol": 1e-5, "atol": 1e-5}),
         ("euler 8, direct", (32, 64, 64), "euler", {"steps": 8, "adjoint": "direct"}),
         ("euler 8, 256 tokens", (8, 256, 64), "euler", {"steps": 8}),
         ("euler 8, 512 tokens", (8, 512, 64), "euler", {"steps": 8}))
QUICK = ("euler 8, checkpoint", "euler 8, direct")


def child(mode, names, repeats):
    """Times every case in this process; prints one JSON line."""
    from harness import start_benchmark  # imports jax and odeformer; starts no computation

    start_benchmark(reuse_host_memory=mode == "reuse")
    import jax
    import jax.numpy as jnp
    from flax import nnx

    import odeformer
    import odeformer.parallel

    param_key, data_key = jax.random.split(jax.random.key(0))
    f, state = odeformer.vector_field(odeformer.TransformerBlockField(64, 4, rngs=nnx.Rngs(param_key)))
    out = {}
    for name, shape, solver, options in CASES:
        if name not in names:
            continue
        y0 = jax.random.normal(data_key, shape, jnp.float32)

        def loss(s, y, solver=solver, options=options):
            return jnp.mean(odeformer.solve(f, y, args=s, solver=solver, **options).y1 ** 2)

        step = jax.jit(jax.grad(loss)).lower(state, y0).compile()
        jax.block_until_ready(step(state, y0))  # first run, not timed
        times, before = [], resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(step(state, y0))
            times.append(1e3 * (time.perf_counter() - start))
        after = resource.getrusage(resource.RUSAGE_SELF)
        out[name] = {"ms": statistics.median(times),
                     "faults": (after.ru_minflt - before.ru_minflt) / repeats,
                     "sys_ms": 1e3 * (after.ru_stime - before.ru_stime) / repeats,
                     "temp_mb": step.memory_analysis().temp_size_in_bytes / 1e6}
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def run_child(mode, names, repeats):
    command = [sys.executable, __file__, "--child", mode, "--repeats", str(repeats), "--cases", *names]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"child {mode} failed:\n{done.stderr}")
    header = [line for line in done.stdout.splitlines() if line.startswith(("machine", "host memory"))]
    result = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return header, json.loads(result.removeprefix("RESULT "))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--pairs", type=int, default=5, help="system/reuse process pairs")
    parser.add_argument("--repeats", type=int, default=4, help="timed calls per case per process")
    parser.add_argument("--quick", action="store_true", help=f"2 pairs, 2 repeats, cases {QUICK}")
    parser.add_argument("--child", choices=("system", "reuse"), help=argparse.SUPPRESS)
    parser.add_argument("--cases", nargs="+", default=[c[0] for c in CASES], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.cases, args.repeats)
        return
    names = list(QUICK) if args.quick else args.cases
    pairs, repeats = (2, 2) if args.quick else (args.pairs, args.repeats)
    print("command:", shlex.join(getattr(sys, "orig_argv", sys.argv)))
    runs = {"system": [], "reuse": []}
    for i in range(pairs):
        for mode in (("system", "reuse") if i % 2 == 0 else ("reuse", "system")):
            header, result = run_child(mode, names, repeats)
            runs[mode].append(result)
            if i == 0:
                print(f"[{mode} child] " + "; ".join(header))
    print(f"\n{pairs} pairs of processes, {repeats} timed calls per case each\n")
    print("| case | temp MB | system ms | reuse ms | reuse / system | faults per call system / reuse "
          "| kernel ms per call system / reuse |\n|---|---|---|---|---|---|---|")
    for name in names:
        s, r = ([run[name] for run in runs[mode]] for mode in ("system", "reuse"))

        def med(rows, key):
            return statistics.median(row[key] for row in rows)

        ratio = statistics.median(b["ms"] / a["ms"] for a, b in zip(s, r, strict=True))
        print(f"| {name} | {s[0]['temp_mb']:.0f} | {med(s, 'ms'):.1f} | {med(r, 'ms'):.1f} | {ratio:.2f} "
              f"| {med(s, 'faults'):.0f} / {med(r, 'faults'):.0f} | {med(s, 'sys_ms'):.1f} / "
              f"{med(r, 'sys_ms'):.1f} |")
    rss = {mode: statistics.median(run["peak_rss_mib"] for run in runs[mode]) for mode in runs}
    print(f"\npeak resident memory of a child process (all cases, ru_maxrss): "
          f"system {rss['system']:.0f} MiB, reuse {rss['reuse']:.0f} MiB")


if __name__ == "__main__":
    main()
