"""The command line's library side: flag parsing that turns a bad flag or override into one line
on stderr (every ``experiments/*.py`` entry point), continuing a sweep from its committed table, and
the sweep command itself (:func:`sweep_command`, all of ``python -m experiments.run`` but its flags)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping

import jax
import ml_collections
from absl import flags

from odeformer._compile_options import configure_compilation_cache
from odeformer.experiment.executor import check_workers
from odeformer.experiment.grid import format_grid
from odeformer.experiment.paths import flatten
from odeformer.experiment.provenance import adopt_table
from odeformer.experiment.runner import run_sweep
from odeformer.experiment.summary import SweepInterrupted, format_summary
from odeformer.experiment.sweeps import expand, parse_shard, pin, unread_keys
from odeformer.parallel.host_memory import reuse_host_memory
from odeformer.parallel.mesh import join_processes


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parser (``app.run(main, flags_parser=parse_flags)``); every bad flag or config
    override is one line on stderr and exit code 2, instead of a traceback."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:  # a malformed value, e.g. a string for an int key
        text = str(error)
        if "Traceback" in text:  # an error raised by the config file: its last line says what
            text = f"{text.splitlines()[0].split(': Error whilst')[0]}: {text.strip().splitlines()[-1]}"
        print(f"error: {text}", file=sys.stderr)
        sys.exit(2)
    except (AttributeError, KeyError) as error:
        detail = error
        while isinstance(detail, BaseException) and detail.args:  # KeyError inside AttributeError
            detail = detail.args[0]
        detail = str(detail).replace("\n", ". ")
        print(f"error: the config has no such key: {detail}", file=sys.stderr)
        sys.exit(2)


def resume_from(table: str, config: ml_collections.ConfigDict, workdir: str, workers: int,
                dry_run: bool = False) -> str:
    """Records the committed ``table``'s rows as finished runs of ``workdir`` (``--resume_from``;
    :func:`odeformer.experiment.provenance.adopt_table`), after checking that this is a
    single-process sweep and ``workers`` is allowed; with ``dry_run`` only checks. Returns the
    line to print.

    Raises:
      ValueError: several processes, a bad ``workers``, or a table this config does not plan.
    """
    if jax.process_count() != 1:
        raise ValueError("--resume_from works in a single-process sweep; resume with one process")
    check_workers(workers, jax.process_count())  # refused before the table is adopted
    return adopt_table(table, {r.run_id: r.config for r in expand(config)}, workdir, dry_run=dry_run)


def _option(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """The flags of ``python -m experiments.run`` besides the config: each field is one flag, its
    default and help stated once here (:func:`define_sweep_flags`)."""

    workdir: str | None = _option(None, "Output folder; default runs/<config.name>.")
    resume_from: str | None = _option(
        None, "A committed results table (python -m experiments.export) whose rows count as finished runs of "
        "this sweep: a sweep goes on in a fresh checkout. Single-process sweeps only.")
    shard: str = _option("0/1", "Run every n-th run of the grid, from the i-th: i/n.")
    workers: int = _option(
        1, "Runs trained at a time, on threads of this process (odeformer.experiment.executor): one run "
        "compiles while another trains. Single-process sweeps only.")
    quiet: bool = _option(False, "No progress bars.")
    dry_run: bool = _option(
        False, "Print the resolved grid (run ids, swept values, compiled steps, parameter counts, relative "
        "cost) and exit without training or writing anything; with --resume_from, check the table too.")
    reuse_host_memory: bool = _option(
        True, "Keep freed host buffers for reuse instead of page-faulting them in at every step (glibc "
        "malloc; odeformer.parallel.reuse_host_memory). --noreuse_host_memory: system defaults.")
    compilation_cache: bool = _option(
        True, "Keep compiled steps in JAX's persistent compilation cache and read them back in later runs. "
        "--nocompilation_cache: compile everything in this process.")
    compilation_cache_dir: str | None = _option(
        None, "Folder of the compilation cache; default $JAX_COMPILATION_CACHE_DIR, else "
        "~/.cache/odeformer/jax (odeformer.default_cache_dir()).")
    coordinator: str | None = _option(None, "host:port of process 0, for multi-process runs.")
    num_processes: int = _option(1, "Processes in a multi-process run.")
    process_id: int = _option(0, "This process's index in [0, num_processes).")


def define_sweep_flags() -> None:
    """Defines one absl flag per :class:`SweepOptions` field, typed by its default."""
    for field in dataclasses.fields(SweepOptions):
        define = (flags.DEFINE_bool if isinstance(field.default, bool) else
                  flags.DEFINE_integer if isinstance(field.default, int) else flags.DEFINE_string)
        define(field.name, field.default, field.metadata["help"])


def sweep_options() -> SweepOptions:
    """The parsed flags of :func:`define_sweep_flags`."""
    return SweepOptions(**{f.name: flags.FLAGS[f.name].value for f in dataclasses.fields(SweepOptions)})


def sweep_command(config: ml_collections.ConfigDict, overrides: Mapping[str, object],
                  options: SweepOptions) -> int:
    """Runs ``python -m experiments.run``: pins the overridden sweep axes, joins the processes,
    adopts ``--resume_from``'s table, prints the grid (``dry_run``) or trains the sweep, and prints
    its summary with the notes under it. A bad config or flag is one ``error:`` line on stderr
    before anything is written; an interrupted sweep says how to resume.

    Args:
      config: the config with the overrides already applied (as ``config_flags`` hands it over);
        pinning removes the overridden axes from ``config.sweep`` in place.
      overrides: dotted key -> value of each override (``config_flags.get_override_values``).
      options: the other flags.

    Returns:
      The exit code: 0 for a dry run or a sweep whose runs all finished, 2 for a bad config or
      flag, else the summary's or the interruption's code.
    """
    pinned = pin(config, overrides)
    notes: list[str] = []
    if options.reuse_host_memory:
        reuse_host_memory()  # this process's malloc policy (see odeformer.parallel.host_memory)
    if options.compilation_cache_dir is not None and not options.compilation_cache:
        print("error: --compilation_cache_dir names a cache that --nocompilation_cache turns off",
              file=sys.stderr)
        return 2
    try:
        if options.coordinator is not None or options.num_processes != 1:
            join_processes(options.coordinator, options.num_processes, options.process_id)
        primary = jax.process_index() == 0

        def say(lines):  # each note as it comes (process 0), and again under the summary
            notes.extend(lines)
            for line in lines if primary else ():
                print(f"note: {line}")

        index, count = parse_shard(options.shard)
        say(pinned)  # before expansion, which may refuse the result
        say(unread_keys(expand(config), overrides, flatten(config.sweep)))
        workdir = options.workdir or f"runs/{config.name}"
        if options.resume_from is not None:
            adopted = resume_from(options.resume_from, config, workdir, options.workers, options.dry_run)
            print(f"note: {adopted}")
        if options.dry_run:
            print(format_grid(config, index, count))
            return 0
        # Every process reads the cache; JAX writes from process 0.
        say(configure_compilation_cache(options.compilation_cache, options.compilation_cache_dir))
        summary = run_sweep(config, workdir, shard_index=index, shard_count=count, quiet=options.quiet,
                            workers=options.workers)
    except ValueError as error:  # invalid config: raised before anything is written
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SweepInterrupted as stopped:  # Ctrl-C, or SIGTERM (how batch schedulers preempt a job)
        print(f"{stopped}; rerun the same command to resume", file=sys.stderr)
        return stopped.exit_code
    if jax.process_index() == 0:
        print("\n".join([format_summary(summary), *(f"note: {note}" for note in notes)]))
    return summary.exit_code
