"""Copies a sweep's finished runs into its committed results table, with the code's commit and
the command of each row, and prints (or writes) the docs block rendered from that table.

    python -m experiments.export --config configs/lm_invariance.py [--workdir DIR] [--out FILE]
        [--allow_partial] [--print_only | --update_docs]

The table is ``results/<config.name>.csv``: the config's planned runs, in grid order, with the
number planned (``odeformer.experiment.provenance.export_rows``); a sweep still running is
exported only with ``--allow_partial`` (its docs block waits for the last run; the table is what
``python -m experiments.run --resume_from`` goes on from). When ``odeformer.analysis.sections``
renders that experiment, its block between ``<!-- results:<name>:begin -->`` and
``<!-- results:<name>:end -->`` is printed; ``--update_docs`` writes it into docs/results.md,
and a test fails while the docs and the table disagree. ``--print_only`` reads the committed
table and writes nothing.
"""

import shlex
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from odeformer.analysis import sections
from odeformer.experiment import results
from odeformer.experiment.cli import parse_flags
from odeformer.experiment.provenance import export_rows
from odeformer.experiment.runner import plan
from odeformer.experiment.sweeps import expand

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's folder; default runs/<config.name>.")
_OUT = flags.DEFINE_string("out", None, "The table to write; default results/<config.name>.csv.")
_PRINT_ONLY = flags.DEFINE_bool("print_only", False, "Render from the committed table; write nothing.")
_UPDATE_DOCS = flags.DEFINE_bool("update_docs", False, "Write the rendered block into docs/results.md.")
_ALLOW_PARTIAL = flags.DEFINE_bool(
    "allow_partial", False, "Export while planned runs are unfinished (a long sweep's table, committed as "
    "it grows; the table and its block say how many runs are planned).")
flags.mark_flag_as_required("config")


def _run_command() -> str:
    """The ``experiments.run`` command of this config: its file (with the variant) and overrides."""
    flag = flags.FLAGS["config"]
    overrides = config_flags.get_override_values(flag)
    typed = [f"--config.{key}={shlex.quote(str(value))}" for key, value in sorted(overrides.items())]
    return " ".join(["python -m experiments.run --config", config_flags.get_config_filename(flag), *typed])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep JAX's backend probing quiet
    try:
        return _export(_CONFIG.value)
    except ValueError as error:  # an invalid config, nothing to export, or rows that cannot be traced
        print(f"error: {error}", file=sys.stderr)
        return 2


def _export(config) -> int:
    out = Path(_OUT.value or f"results/{config.name}.csv")
    if not _PRINT_ONLY.value:
        # a study trains nothing: its runs are the expanded grid (expand validates them)
        planned = [p.run for p in plan(config)] if config.experiment == "train" else expand(config)
        table = results.load(_WORKDIR.value or f"runs/{config.name}")
        rows = export_rows(table, [run.run_id for run in planned], _run_command())
        if len(rows) < len(planned) and not _ALLOW_PARTIAL.value:
            raise ValueError(f"{len(planned) - len(rows)} of the {len(planned)} planned runs have not "
                             "finished; finish the sweep, or export what there is with --allow_partial")
        out.parent.mkdir(parents=True, exist_ok=True)
        results.write_atomic(out, rows.to_csv(index=False, float_format="%.10g"))
        print(f"wrote {len(rows)} of {len(planned)} planned runs to {out}", file=sys.stderr)
    elif not out.is_file():
        raise ValueError(f"--print_only reads {out}, which is not a file: export the sweep first")
    name = out.stem
    if name not in sections.RENDERERS:
        return 0
    table = results.read_table(out)
    if len(table) < int(table["planned_runs"].iloc[0]):
        print(f"{name} is partial ({len(table)} of {table['planned_runs'].iloc[0]} planned runs): its block "
              "is rendered once every run has finished", file=sys.stderr)
        return 0
    block = sections.render(name, table)
    if _UPDATE_DOCS.value:
        page = Path("docs/results.md")
        results.write_atomic(page, sections.replace_block(page.read_text(), name, block))
    print(block)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)
