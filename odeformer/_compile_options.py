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

:func:`use_compilation_cache` turns on JAX's persistent compilation cache (the CLI does by
default), so a rerun, a new seed or a second workdir reads compiled steps back from disk.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

CPU_OPTIONS: dict[str, bool] = {"xla_cpu_multi_thread_eigen": False}


def compiler_options(mesh: jax.sharding.Mesh | None = None) -> dict[str, bool] | None:
    """The options for a program that runs on ``mesh``'s devices (default: JAX's default
    device): :data:`CPU_OPTIONS` on CPU, ``None`` (XLA's defaults) elsewhere."""
    device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
    return dict(CPU_OPTIONS) if device.platform == "cpu" else None


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/odeformer/jax`` (``~/.cache/odeformer/jax`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "odeformer" / "jax"


def use_compilation_cache(path: str | os.PathLike | None = None, *,
                          min_compile_time_s: float = 0.0) -> Path:
    """Turns on JAX's persistent compilation cache in ``path`` (default
    :func:`default_cache_dir`) for this process and returns the folder.

    A program compiled once is then read back by any later process with the same jax
    version, program, compile options and devices, instead of being compiled again.
    odeformer's train and eval steps qualify because they carry no host callback
    (``odeformer.solve`` with ``throw=False``); JAX skips programs that do. Programs that
    compile faster than ``min_compile_time_s`` are not written (JAX's own default is 1 s;
    0 also keeps the small eval steps).

    Raises:
      OSError: if the folder cannot be created."""
    folder = Path(default_cache_dir() if path is None else path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)  # OSError where it cannot be made
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # JAX decides once per process whether it uses the cache, at its first compile: make it
    # decide again, so that a call after some compiles is not silently ignored.
    compilation_cache.reset_cache()
    return folder


def configure_compilation_cache(enabled: bool, path: str | os.PathLike | None = None) -> list[str]:
    """The command line's cache setting: on in ``path`` (default ``$JAX_COMPILATION_CACHE_DIR``,
    else :func:`default_cache_dir`), or off, also where ``JAX_COMPILATION_CACHE_DIR`` would turn
    JAX's own cache on. A folder that cannot be made turns the cache off; the returned notes say so."""
    if enabled:
        try:
            use_compilation_cache(path or os.environ.get("JAX_COMPILATION_CACHE_DIR"))
            return []
        except OSError as error:  # e.g. a read-only home: the run goes on, compiling everything
            notes = [f"the compilation cache is off: {error}"]
    else:
        notes = []
    jax.config.update("jax_enable_compilation_cache", False)
    return notes
