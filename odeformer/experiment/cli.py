"""What the ``experiments/*.py`` entry points share: flag parsing that turns a bad flag or
override into one line on stderr, and continuing a sweep from its committed table."""

from __future__ import annotations

import sys

import jax
import ml_collections
from absl import flags

from odeformer.experiment.executor import check_workers
from odeformer.experiment.provenance import adopt_table
from odeformer.experiment.sweeps import expand


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
