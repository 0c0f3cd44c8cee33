"""Where a result came from: the code's commit and the command that made it.

Every run's row records :func:`code_commit` (``commit``); ``python -m experiments.export``
copies a sweep's rows into a committed table under ``results/`` with the command that made
them (:func:`export_rows`), so each number in the docs can be traced to code and command.
``python -m experiments.run --resume_from results/<name>.csv`` records a committed table's rows
as finished runs (:func:`adopt_rows`), so a long sweep goes on in a fresh checkout.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import ml_collections
import pandas as pd

from odeformer.experiment import results

UNKNOWN = "unknown"  # not a git checkout (an installed copy) or no git
UNCOMMITTED = "+uncommitted"  # tracked files differ from the commit


CODE_DIRS = ("odeformer", "configs", "experiments")  # where an untracked file is code that ran


def code_commit(root: str | Path | None = None) -> str:
    """The short commit of the checkout holding odeformer (or ``root``), with
    ``+uncommitted`` appended when its tracked files differ from it or an untracked file lies in
    one of :data:`CODE_DIRS` (a new config or module the commit cannot reproduce);
    :data:`UNKNOWN` outside a git checkout."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no") or git(
            "status", "--porcelain", "--untracked-files=all", "--", *CODE_DIRS)
    except (OSError, subprocess.CalledProcessError):
        return UNKNOWN
    return head + UNCOMMITTED if dirty else head


def export_rows(table: pd.DataFrame, run_ids: list[str], command: str) -> pd.DataFrame:
    """The committed table of a sweep: the rows of ``run_ids`` (the config's planned runs, in
    grid order; finished ones only, ok or failed, never a crashed run, which the next rerun
    retries) with ``command`` and ``planned_runs``, how many runs the config plans (so a table
    exported before the sweep finished says so).

    Raises:
      ValueError: no planned run has finished (an empty table would replace a committed one), or
        a row records no commit, or one with uncommitted changes (its code cannot be recovered:
        commit, then rerun those runs).
    """
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    rows = table[table["run_id"].isin(order)].copy() if "run_id" in table else table
    if "crashed" in rows:  # a crashed run is retried by the next rerun: not finished
        rows = rows[~rows["crashed"].fillna(False).astype(bool)]
    if rows.empty:
        raise ValueError(f"none of the {len(order)} planned runs has finished in this workdir (a change "
                         "of the config schema renames every run): nothing to export")
    commits = rows["commit"] if "commit" in rows else pd.Series(None, index=rows.index, dtype=object)
    untraced = rows.loc[commits.isna() | commits.astype(str).str.endswith(UNCOMMITTED) |
                        (commits == UNKNOWN), "run_id"].tolist()
    if untraced:
        raise ValueError(f"{len(untraced)} run(s) record no commit or uncommitted code "
                         f"({', '.join(untraced[:5])}{', ...' if len(untraced) > 5 else ''}): their code "
                         "cannot be traced; commit the code and rerun them")
    rows["command"] = command
    rows["planned_runs"] = len(order)
    rows["_order"] = rows["run_id"].map(order)
    return rows.sort_values("_order").drop(columns="_order").reset_index(drop=True)


EXPORT_COLUMNS = ("command", "planned_runs")  # what export_rows adds to a run's row


def adoptable_rows(table: pd.DataFrame, run_ids: list[str]) -> pd.DataFrame:
    """The rows of a committed table (:func:`export_rows`) that :func:`adopt_rows` records: every
    row but a crashed one (the sweep retries it), without the export's own columns.

    Raises:
      ValueError: the table has no ``run_id`` column or a row without a status, repeats a run, or
        holds runs that ``run_ids`` (the config's planned runs) does not: another config, variant,
        override or schema.
    """
    if "run_id" not in table:
        raise ValueError("the table has no run_id column: not a table of python -m experiments.export")
    repeated = sorted(set(table.loc[table["run_id"].duplicated(), "run_id"]))
    if repeated:
        raise ValueError(f"the table lists runs more than once: {', '.join(repeated[:5])}")
    planned = set(run_ids)
    stray = [run_id for run_id in table["run_id"] if run_id not in planned]
    if stray:
        raise ValueError(f"{len(stray)} of the table's {len(table)} runs are not planned by this config "
                         f"({', '.join(stray[:5])}{', ...' if len(stray) > 5 else ''}): it was made by "
                         "another config, variant, override or schema")
    if "status" not in table or table["status"].isna().any():
        raise ValueError("every row of the table needs a status (ok or failed: ...): not a table of "
                         "python -m experiments.export")
    rows = table.drop(columns=[c for c in EXPORT_COLUMNS if c in table])
    if "crashed" in rows:  # a crash is retried, never adopted as a result
        rows = rows[~rows["crashed"].fillna(False).astype(bool)]
    return rows


def adopt_rows(table: pd.DataFrame, planned: Mapping[str, ml_collections.ConfigDict], workdir: str | Path,
               dry_run: bool = False) -> tuple[int, int]:
    """Records the rows of a committed table (:func:`export_rows`) as finished runs of ``workdir``,
    so that a sweep whose workdir was lost (a fresh checkout) trains only the runs its table lacks.
    ``planned`` maps each run id the config plans to its config. Each row keeps its own
    ``commit``; a run already finished in ``workdir`` is left as it is, and a crashed row is left
    out (the sweep retries it). An adopted run has its record and its ``config.json`` (the planned
    config, which its id hashes), no parameters. Everything is checked before anything is written;
    with ``dry_run`` nothing is.

    Returns:
      (rows recorded, or that would be, rows left alone because ``workdir`` had them).

    Raises:
      ValueError: as :func:`adoptable_rows`: no ``run_id`` column, a row without a status, a run
        listed twice, or runs this config does not plan.
    """
    recorded = kept = 0
    for row in adoptable_rows(table, list(planned)).to_dict("records"):
        if results.is_finished(workdir, row["run_id"]):
            kept += 1
            continue
        if not dry_run:
            results.write_config(Path(workdir), row["run_id"], planned[row["run_id"]])
            results.record(Path(workdir), {k: _plain(v) for k, v in row.items()})
        recorded += 1
    if recorded and not dry_run:
        results.write_table(Path(workdir))
    return recorded, kept


def adopt_table(path: str | Path, planned: Mapping[str, ml_collections.ConfigDict], workdir: str | Path,
                dry_run: bool = False) -> str:
    """:func:`adopt_rows` of the table at ``path``; returns a line saying what was recorded. With
    ``dry_run`` the table is checked and nothing is written.

    Raises:
      ValueError: ``path`` is not a file, or as :func:`adopt_rows`.
    """
    if not Path(path).is_file():
        raise ValueError(f"--resume_from names {path}, which is not a file (a results/<name>.csv table)")
    recorded, kept = adopt_rows(results.read_table(path), planned, workdir, dry_run=dry_run)
    verb = "would record" if dry_run else "recorded"
    return (f"{verb} {recorded} finished run(s) of {path} in {workdir}"
            + (f"; {kept} it had already" if kept else ""))


def _plain(value):
    """A table cell as JSON writes it: NumPy scalars as Python ones, a missing value as None."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and value != value else value
