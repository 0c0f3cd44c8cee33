"""Results on disk: atomic writes, the per-run record, the results table, loading.

Layout of a workdir::

    results.csv (and results.parquet when pyarrow is installed): one row per run
    runs/<run_id>/config.json   the run's full config
    runs/<run_id>/metrics.jsonl one line per logged training step
    runs/<run_id>/result.json   the run's row; written last, atomically: its presence
                                means the run is finished (ok or failed)
    runs/<run_id>/checkpoints/  orbax checkpoints while training

``result.json`` files are the source of truth; ``results.csv`` is rebuilt from them
after every run, so a sweep killed at any moment loses no finished row. A record that
cannot be read (cut short by a full disk or a crash while copying a workdir) counts as
unfinished: the next run of the sweep reruns that run and replaces it.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from odeformer.experiment.paths import get_path

RESULT_FILE = "result.json"
_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, content: str | bytes) -> None:
    """Writes ``content`` to ``path`` so that readers see the old or the new file, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; respect the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_dir(workdir: Path, run_id: str) -> Path:
    return Path(workdir) / "runs" / run_id


def write_config(workdir: Path, run_id: str, config) -> None:
    """Saves a run's full config (``config.json``; an ``ml_collections.ConfigDict``)."""
    text = json.dumps(config.to_dict(), indent=1, sort_keys=True)
    write_atomic(run_dir(workdir, run_id) / "config.json", text)


def record_path(workdir: Path, run_id: str) -> Path:
    """Where a run's record (``result.json``) is."""
    return run_dir(workdir, run_id) / RESULT_FILE


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or None if it cannot be read as one: not UTF-8 JSON, or
    not an object with a ``run_id`` (e.g. cut short by a full disk).

    Raises:
      FileNotFoundError: if there is no file at ``path``.
    """
    try:
        row = json.loads(Path(path).read_bytes())
    except ValueError:  # json.JSONDecodeError or UnicodeDecodeError
        return None
    return row if isinstance(row, dict) and "run_id" in row else None


def is_unreadable(workdir: Path, run_id: str) -> bool:
    """True if the run has a record file that :func:`read_record` cannot read."""
    try:
        return read_record(record_path(workdir, run_id)) is None
    except FileNotFoundError:
        return False


def is_finished(workdir: Path, run_id: str) -> bool:
    """True once a run has a record, unless that record says it crashed (an exception
    rather than a diverged or failed solve: OOM, disk full, a bug) or cannot be read;
    such runs are retried."""
    try:
        row = read_record(record_path(workdir, run_id))
    except FileNotFoundError:
        return False
    return row is not None and not row.get("crashed", False)


def record(workdir: Path, row: dict[str, Any]) -> None:
    """Saves one run's row; after this the run counts as finished."""
    write_atomic(record_path(workdir, row["run_id"]), json.dumps(row, sort_keys=True))


def append_metrics(path: Path, line: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The logged lines of a ``metrics.jsonl`` (none if it does not exist); a line torn by
    a kill mid-write is skipped."""
    if not Path(path).exists():
        return []
    lines = []
    for line in Path(path).read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "step" in entry:
            lines.append(entry)
    return lines


def truncate_metrics(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Drops logged lines after ``last_step`` (a run resumed from a checkpoint); returns
    the lines kept."""
    keep = [entry for entry in read_metrics(path) if entry["step"] <= last_step]
    if Path(path).exists():
        write_atomic(path, "".join(json.dumps(entry) + "\n" for entry in keep))
    return keep


def _rows(workdirs: Iterable[Path]) -> tuple[list[dict[str, Any]], list[Path]]:
    """The records of ``workdirs``, and the paths of record files that cannot be read."""
    rows, unreadable = [], []
    for workdir in workdirs:
        for path in sorted(Path(workdir).glob(f"runs/*/{RESULT_FILE}")):
            try:
                row = read_record(path)
            except FileNotFoundError:  # removed since the glob
                continue
            if row is None:
                unreadable.append(path)
            else:
                rows.append(row)
    return rows, unreadable


def load(workdirs: str | Path | Iterable[str | Path], *, with_config: Iterable[str] = ()) -> pd.DataFrame:
    """All finished runs of one or several workdirs (e.g. the shards of a sweep) as one
    DataFrame, one row per run_id. A record that cannot be read is left out, with a
    warning naming its file (rerunning the sweep replaces it).

    Args:
      workdirs: one workdir or several.
      with_config: dotted config keys (e.g. ``"task.cardinality"``) added as columns
        from each run's ``config.json``, for values the sweep did not vary (the table
        holds only swept keys). A column that already exists is left as it is.

    Raises:
      KeyError: naming a ``with_config`` key that a run's config does not have.
    """
    frame, unreadable = _table(workdirs, with_config)
    for path in unreadable:
        warnings.warn(f"skipped the unreadable run record {path} (not a JSON object with a "
                      "run_id); rerunning its sweep reruns that run and replaces it", stacklevel=2)
    return frame


def _table(workdirs, with_config: Iterable[str] = ()) -> tuple[pd.DataFrame, list[Path]]:
    """:func:`load`'s table, and the paths of the records it left out as unreadable."""
    if isinstance(workdirs, (str, Path)):
        workdirs = [workdirs]
    workdirs = [Path(w) for w in workdirs]
    rows, unreadable = _rows(workdirs)
    keys = list(with_config)
    if keys:
        configs = {}
        for workdir in workdirs:
            for path in workdir.glob("runs/*/config.json"):
                configs[path.parent.name] = json.loads(path.read_text())
        for row in rows:
            for key in keys:
                if key in row:
                    continue
                try:
                    row[key] = get_path(configs[row["run_id"]], key)
                except KeyError:
                    raise KeyError(f"run {row['run_id']}'s config has no key {key!r}") from None
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame, unreadable
    return frame.drop_duplicates("run_id", keep="last").reset_index(drop=True), unreadable


TEXT_COLUMNS = {"run_id": str, "commit": str, "status": str}


def read_table(path: str | Path) -> pd.DataFrame:
    """A results table from CSV, its ids, commits and statuses as text (a short commit hash of
    digits only would otherwise be read as a number)."""
    return pd.read_csv(path, dtype=TEXT_COLUMNS)


def write_table(workdir: Path) -> pd.DataFrame:
    """Rebuilds ``results.csv`` (and ``.parquet`` if possible) from the run records; a
    record that cannot be read is left out quietly (the sweep reports it when it reruns
    that run)."""
    frame, _ = _table(workdir)
    write_atomic(Path(workdir) / "results.csv", frame.to_csv(index=False))
    try:
        import pyarrow  # noqa: F401  (optional)
    except ImportError:
        return frame
    write_atomic(Path(workdir) / "results.parquet", frame.to_parquet(index=False))
    return frame
