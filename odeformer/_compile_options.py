"""XLA options odeformer compiles its own jitted steps with (``compiler_options`` of ``jax.jit``).

On CPU: ``xla_cpu_multi_thread_eigen=False``. With jaxlib 0.10.2 it does not make the
matmuls single-threaded (a 4.3 GFLOP Eigen dot runs at the same two-core speed with it, and
so do YNNPACK dots); it changes how XLA:CPU fuses the attention: the forward's
``dot -> softmax -> dot`` is no longer one YNNPACK fusion, and the separate fusions it gets
instead are cheaper. The training step of ``benchmarks/xla_flags.py`` took 0.88-0.92x the
default's time with it (Euler and RK4, at the benchmark's and at the quick sweep's shapes;
benchmarks/README.md, "XLA:CPU's own options"); the quick sweep as a whole is compile-bound
and did not measurably change. Results agree with the default compile up to float rounding.
On other platforms nothing is passed.

Users who jit their own steps around ``odeformer.solve`` can pass the same options:
``jax.jit(step, compiler_options=odeformer.compiler_options())``.
"""

from __future__ import annotations

import jax

CPU_OPTIONS: dict[str, bool] = {"xla_cpu_multi_thread_eigen": False}


def compiler_options(mesh: jax.sharding.Mesh | None = None) -> dict[str, bool] | None:
    """The options for a program that runs on ``mesh``'s devices (default: JAX's default
    device): :data:`CPU_OPTIONS` on CPU, ``None`` (XLA's defaults) elsewhere."""
    device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
    return dict(CPU_OPTIONS) if device.platform == "cpu" else None
