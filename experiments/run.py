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

import dataclasses

from absl import app, flags, logging
from ml_collections import config_flags

from odeformer.experiment.cli import SweepOptions, parse_flags, sweep_command

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.")
flags.DEFINE_string("workdir", None, "Output folder; default runs/<config.name>.")
flags.DEFINE_string(
    "resume_from", None, "A committed results table (python -m experiments.export) whose rows count as "
    "finished runs of this sweep: a sweep goes on in a fresh checkout. Single-process sweeps only.")
flags.DEFINE_string("shard", "0/1", "Run every n-th run of the grid, from the i-th: i/n.")
flags.DEFINE_integer(
    "workers", 1, "Runs trained at a time, on threads of this process (odeformer.experiment.executor): one "
    "run compiles while another trains. Single-process sweeps only.")
flags.DEFINE_bool("quiet", False, "No progress bars.")
flags.DEFINE_bool(
    "dry_run", False, "Print the resolved grid (run ids, swept values, compiled steps, parameter counts, "
    "relative cost) and exit without training or writing anything; with --resume_from, check the table "
    "too.")
flags.DEFINE_bool(
    "reuse_host_memory", True, "Keep freed host buffers for reuse instead of page-faulting them in at "
    "every step (glibc malloc; odeformer.parallel.reuse_host_memory). --noreuse_host_memory: system "
    "defaults.")
flags.DEFINE_bool(
    "compilation_cache", True, "Keep compiled steps in JAX's persistent compilation cache and read them "
    "back in later runs. --nocompilation_cache: compile everything in this process.")
flags.DEFINE_string(
    "compilation_cache_dir", None, "Folder of the compilation cache; default $JAX_COMPILATION_CACHE_DIR, "
    "else ~/.cache/odeformer/jax (odeformer.default_cache_dir()).")
flags.DEFINE_string("coordinator", None, "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", 1, "Processes in a multi-process run.")
flags.DEFINE_integer("process_id", 0, "This process's index in [0, num_processes).")
flags.mark_flags_as_required(["config"])


def main(argv) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)  # keep JAX's backend probing quiet
    options = SweepOptions(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(SweepOptions)})
    return sweep_command(_CONFIG.value, config_flags.get_override_values(flags.FLAGS["config"]), options)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
