"""Runs a sweep of jit-compiled trainings and leaves a results table.

    python -m experiments.run --config configs/quick.py[:tiny] [--config.solver.name=rk4 ...]
        [--dry_run] [--workdir DIR] [--resume_from TABLE] [--shard i/n] [--workers N] [--quiet]
        [--noreuse_host_memory]
        [--compilation_cache_dir DIR | --nocompilation_cache]
        [--coordinator HOST:PORT --num_processes N --process_id I]

An override of a swept key (``--config.solver.name=rk4`` where the config sweeps
``solver.name``) replaces that sweep axis with the one value, and the output says so.
``--dry_run`` prints the resolved grid (run ids, swept values, compiles, parameters, cost)
and exits without training or writing anything (with ``--resume_from`` it checks the table too).

``--resume_from results/<name>.csv`` first records the rows of that committed table (written by
``python -m experiments.export``, ``--allow_partial`` while the sweep runs) as finished runs of
the workdir, each with its own commit, so a sweep whose workdir is gone goes on where the table
ends; a row this config does not plan is refused before anything is written.

With ``--coordinator`` the same command runs as one of N processes (one per machine, or
several on one machine): ``jax.distributed.initialize`` joins them, ``config.mesh`` then
spans every process's devices, and process 0 writes the results.

Compiled train and eval steps are kept in JAX's persistent compilation cache
(``odeformer.default_cache_dir()``, ``~/.cache/odeformer/jax``, unless
``--compilation_cache_dir`` or ``JAX_COMPILATION_CACHE_DIR`` names another folder), so a rerun,
a new seed or another workdir reads them back instead of compiling; ``--nocompilation_cache``
compiles everything afresh. Results are bit for bit the same either way.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from odeformer import configure_compilation_cache
from odeformer.experiment.cli import parse_flags, resume_from
from odeformer.experiment.grid import format_grid
from odeformer.experiment.paths import flatten
from odeformer.experiment.runner import run_sweep
from odeformer.experiment.summary import SweepInterrupted, format_summary
from odeformer.experiment.sweeps import expand, parse_shard, pin, unread_keys
from odeformer.parallel.host_memory import reuse_host_memory
from odeformer.parallel.mesh import join_processes

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder; default runs/<config.name>.")
_RESUME_FROM = flags.DEFINE_string(
    "resume_from", None, "A committed results table (python -m experiments.export) whose rows count as "
    "finished runs of this sweep: a sweep goes on in a fresh checkout. Single-process sweeps only.")
_SHARD = flags.DEFINE_string("shard", "0/1", "Run every n-th run of the grid, from the i-th: i/n.")
_WORKERS = flags.DEFINE_integer(
    "workers", 1, "Runs trained at a time, on threads of this process (odeformer.experiment.executor): one "
    "run compiles while another trains. Single-process sweeps only.")
_QUIET = flags.DEFINE_bool("quiet", False, "No progress bars.")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Print the resolved grid (run ids, swept values, compiled steps, parameter counts, "
    "relative cost) and exit without training or writing anything; with --resume_from, check the table "
    "too.")
_REUSE_HOST_MEMORY = flags.DEFINE_bool(
    "reuse_host_memory", True, "Keep freed host buffers for reuse instead of page-faulting them in at "
    "every step (glibc malloc; odeformer.parallel.reuse_host_memory). --noreuse_host_memory: system "
    "defaults.")
_CACHE = flags.DEFINE_bool(
    "compilation_cache", True, "Keep compiled steps in JAX's persistent compilation cache and read them "
    "back in later runs. --nocompilation_cache: compile everything in this process.")
_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir", None, "Folder of the compilation cache; default $JAX_COMPILATION_CACHE_DIR, "
    "else ~/.cache/odeformer/jax (odeformer.default_cache_dir()).")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 1, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "This process's index in [0, num_processes).")
flags.mark_flags_as_required(["config"])


def main(argv) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)  # keep JAX's backend probing quiet
    config = _CONFIG.value
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    notes = pin(config, overrides)
    if _REUSE_HOST_MEMORY.value:
        reuse_host_memory()  # this process's malloc policy (see odeformer.parallel.host_memory)
    if _CACHE_DIR.value is not None and not _CACHE.value:
        print("error: --compilation_cache_dir names a cache that --nocompilation_cache turns off",
              file=sys.stderr)
        return 2
    try:
        if _COORDINATOR.value is not None or _NUM_PROCESSES.value != 1:
            join_processes(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        primary = jax.process_index() == 0
        index, count = parse_shard(_SHARD.value)
        for note in notes if primary else ():  # before expansion, which may refuse the result
            print(f"note: {note}")
        unread = unread_keys(expand(config), overrides, flatten(config.sweep))
        for note in unread if primary else ():
            print(f"note: {note}")
        notes += unread
        workdir = _WORKDIR.value or f"runs/{config.name}"
        if _RESUME_FROM.value is not None:
            print(f"note: {resume_from(_RESUME_FROM.value, config, workdir, _WORKERS.value, _DRY_RUN.value)}")
        if _DRY_RUN.value:
            print(format_grid(config, index, count))
            return 0
        # Every process reads the cache; JAX writes from process 0.
        cache_notes = configure_compilation_cache(_CACHE.value, _CACHE_DIR.value)
        for note in cache_notes if primary else ():
            print(f"note: {note}")
        notes += cache_notes
        summary = run_sweep(config, workdir, shard_index=index,
                            shard_count=count, quiet=_QUIET.value, workers=_WORKERS.value)
    except ValueError as error:  # invalid config: raised before anything is written
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SweepInterrupted as stopped:  # Ctrl-C, or SIGTERM (how batch schedulers preempt a job)
        print(f"{stopped}; rerun the same command to resume", file=sys.stderr)
        return stopped.exit_code
    if jax.process_index() == 0:
        print("\n".join([format_summary(summary), *(f"note: {note}" for note in notes)]))
    return summary.exit_code


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
