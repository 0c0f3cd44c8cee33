"""What every benchmark script shares: process setup with the run header, interleaved timing, and
model FLOPs utilisation against a GPU's peak."""

import importlib.util
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

import odeformer
import odeformer.parallel

REPO = Path(__file__).resolve().parents[1]


def load_config(path: str) -> ml_collections.ConfigDict:
    """``get_config()`` of a config file, ``path`` relative to the repository root
    (``configs/quick.py``), as ``python -m experiments.run --config`` reads it."""
    spec = importlib.util.spec_from_file_location("benchmark_config", REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows: the
    development VM has run on different hosts (AMD EPYC, Intel Xeon) between sessions, and
    absolute times only compare on the same one."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({platform.machine()})"
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Dense (no sparsity) bfloat16 tensor-core peak in FLOP/s, from NVIDIA's datasheets, keyed by a
# fragment of the device name as CUDA reports it (torch.cuda.get_device_name(), JAX's device_kind:
# "NVIDIA H100 80GB HBM3" is the SXM part). The first fragment found in the name wins, so more
# specific ones come first. Devices not listed (CPUs, H100 NVL, consumer cards) have no entry.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 SXM", 989e12),
    ("H100 80GB HBM3", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
)


def peak_flops(device: str) -> float:
    """The dense bfloat16 peak FLOP/s of the device named ``device`` (``PEAK_BF16_FLOPS``,
    matched case-insensitively); NaN for a device not in the table (``"cpu"`` included)."""
    name = device.lower()
    return next((peak for fragment, peak in PEAK_BF16_FLOPS if fragment.lower() in name), math.nan)


def mfu(flops_per_s: float, device: str) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the device's dense bfloat16 peak
    (:func:`peak_flops`); NaN where the peak is unknown."""
    return flops_per_s / peak_flops(device)


def start_benchmark(*, reuse_host_memory: bool = True, **versions: str) -> None:
    """Sets this process up as ``python -m experiments.run`` does and prints the run header.

    Call it before any timed work. Unless ``reuse_host_memory`` is False it applies
    ``odeformer.parallel.reuse_host_memory()`` (a process-wide malloc policy); then it prints the
    exact command, which malloc policy holds, the machine and the library versions
    (``versions``: extra name=version pairs).
    """
    applied = reuse_host_memory and odeformer.parallel.reuse_host_memory()
    print("command:", shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])))
    print("host memory:",
          "odeformer.parallel.reuse_host_memory() applied" if applied else "system malloc defaults")
    extra = "".join(f", {name} {version}" for name, version in versions.items())
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"devices {jax.devices()}; jax {jax.__version__}, diffrax {diffrax.__version__}{extra}")


def block_workload(batch: int, tokens: int = 64, width: int = 64, heads: int = 4):
    """``(f, state, y0)``: the benchmarks' field ``TransformerBlockField(width, heads)`` as
    Diffrax's ``f(t, y, state)`` with its parameters, and a float32 input
    ``(batch, tokens, width)``, both drawn from fixed keys."""
    param_key, data_key = jax.random.split(jax.random.key(0))
    f, state = odeformer.vector_field(odeformer.TransformerBlockField(width, heads, rngs=nnx.Rngs(param_key)))
    return f, state, jax.random.normal(data_key, (batch, tokens, width), jnp.float32)


def assert_leaves_close(got, want, rtol: float, what: str) -> None:
    """Raises unless every leaf of ``got`` is within ``rtol`` of ``want``'s, the error measured
    against the leaf's largest magnitude (an elementwise rtol fails on entries that cancel to ~0)."""
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * float(np.max(np.abs(w))), err_msg=what)


def interleaved_ms(calls: dict[str, Callable[[], Any]], repeats: int,
                   block: int = 1) -> dict[str, list[float]]:
    """Wall time in ms of each zero-argument call, ``repeats`` times, run A, B, C, A, B, C,
    ... so that the machine's drift hits every call alike. Results are waited for with
    ``jax.block_until_ready``; compile and warm up before calling this.

    ``block > 1``: each turn runs one untimed call and then ``block`` timed ones (A x block,
    B x block, ...; ``repeats * block`` times per call, in turn order). For calls into
    different runtimes: each one's idle worker threads spin for a while after a call, and
    would otherwise share the cores with the next call of the other (benchmarks/README.md,
    "Against PyTorch")."""
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            if block > 1:
                jax.block_until_ready(call())
            for _ in range(block):
                start = time.perf_counter()
                jax.block_until_ready(call())
                times[name].append(1e3 * (time.perf_counter() - start))
    return times
