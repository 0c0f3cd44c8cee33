"""Where a result came from: the code's commit and the command that made it.

Every run's row records :func:`code_commit` (``commit``); ``python -m experiments.export``
copies a sweep's rows into a committed table under ``results/`` with the command that made
them (:func:`export_rows`), so each number in the docs can be traced to code and command.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

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
    grid order; finished ones only) with ``command`` and ``planned_runs``, how many runs the
    config plans (so a table exported before the sweep finished says so).

    Raises:
      ValueError: no planned run has finished (an empty table would replace a committed one), or
        a row records no commit, or one with uncommitted changes (its code cannot be recovered:
        commit, then rerun those runs).
    """
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    rows = table[table["run_id"].isin(order)].copy() if "run_id" in table else table
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
