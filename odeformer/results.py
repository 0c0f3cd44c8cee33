"""Results on disk: atomic writes, the per-run record, the results table, loading.

Layout of a workdir::

    results.csv (and results.parquet when pyarrow is installed): one row per run
    runs/<run_id>/config.json   the run's full config
    runs/<run_id>/metrics.jsonl one line per logged training step
    runs/<run_id>/result.json   the run's row; written last, atomically: its presence
                                means the run is finished (ok or failed)
    runs/<run_id>/checkpoints/  orbax checkpoints while training

``result.json`` files are the source of truth; ``results.csv`` is rebuilt from them
after every run, so a sweep killed at any moment loses no finished row.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

RESULT_FILE = "result.json"


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` so that readers see the old or the new file, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_dir(workdir: Path, run_id: str) -> Path:
    return Path(workdir) / "runs" / run_id


def is_finished(workdir: Path, run_id: str) -> bool:
    return (run_dir(workdir, run_id) / RESULT_FILE).exists()


def record(workdir: Path, row: dict[str, Any]) -> None:
    """Saves one run's row; after this the run counts as finished."""
    write_atomic(run_dir(workdir, row["run_id"]) / RESULT_FILE, json.dumps(row, sort_keys=True))


def append_metrics(path: Path, line: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drops logged lines after ``last_step`` (a run resumed from a checkpoint)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    keep = [ln for ln in lines if json.loads(ln)["step"] <= last_step]
    write_atomic(path, "".join(ln + "\n" for ln in keep))


def _rows(workdirs: Iterable[Path]) -> list[dict[str, Any]]:
    rows = []
    for workdir in workdirs:
        for path in sorted(Path(workdir).glob(f"runs/*/{RESULT_FILE}")):
            rows.append(json.loads(path.read_text()))
    return rows


def load(workdirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """All finished runs of one or several workdirs (e.g. the shards of a sweep) as one
    DataFrame, one row per run_id."""
    if isinstance(workdirs, (str, Path)):
        workdirs = [workdirs]
    frame = pd.DataFrame(_rows(Path(w) for w in workdirs))
    if frame.empty:
        return frame
    return frame.drop_duplicates("run_id", keep="last").reset_index(drop=True)


def write_table(workdir: Path) -> pd.DataFrame:
    """Rebuilds ``results.csv`` (and ``.parquet`` if possible) from the run records."""
    frame = load(workdir)
    write_atomic(Path(workdir) / "results.csv", frame.to_csv(index=False))
    try:
        import pyarrow  # noqa: F401  (optional)
    except ImportError:
        return frame
    fd, tmp = tempfile.mkstemp(dir=workdir, prefix=".results.parquet.", suffix=".tmp")
    os.close(fd)
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, Path(workdir) / "results.parquet")
    return frame
