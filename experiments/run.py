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

from absl import app, flags, logging
from ml_collections import config_flags

from odeformer.experiment.cli import define_sweep_flags, parse_flags, sweep_command, sweep_options

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.")
define_sweep_flags()  # --workdir, --resume_from, --workers, ...: odeformer.experiment.cli.SweepOptions
flags.mark_flags_as_required(["config"])


def main(argv) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)  # keep JAX's backend probing quiet
    overrides = config_flags.get_override_values(flags.FLAGS["config"])
    return sweep_command(_CONFIG.value, overrides, sweep_options())


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
