"""What a sweep reports when it ends or is interrupted, and its text summary."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import pandas as pd


@dataclasses.dataclass
class SweepSummary:
    """What a sweep did.

    Attributes:
      table: every recorded row of the workdir.
      ran: runs executed now.
      skipped: runs already finished before.
      failed: run ids of the runs executed now that failed, in grid order.
      replaced: record files that could not be read (cut short by a full disk or a
        crash), whose runs were executed again and their records replaced.
    """

    table: pd.DataFrame
    ran: int
    skipped: int
    failed: list[str]
    replaced: list[Path] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.ran and len(self.failed) == self.ran else 0


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a sweep (``odeformer.experiment.executor``): the rows of
    the runs that finished are recorded, the others are not; running the same sweep again
    resumes it.

    Attributes:
      signal_name: ``"SIGINT"`` (Ctrl-C) or ``"SIGTERM"``.
      finished: runs of the sweep (this shard) whose rows are recorded and that a rerun
        skips, those finished before this sweep included.
      total: runs of the sweep (this shard).
      workdir: where the rows are recorded.
    """

    def __init__(self, signal_name: str, finished: int, total: int, workdir: Path):
        super().__init__(f"sweep interrupted by {signal_name}: {finished} of {total} run(s) "
                         f"finished and recorded in {workdir}")
        self.signal_name, self.finished, self.total, self.workdir = signal_name, finished, total, workdir

    @property
    def exit_code(self) -> int:
        """128 + the signal's number (130, 143), as a shell reports a process it ended."""
        return 128 + signal.Signals[self.signal_name].value


_SUMMARY_COLUMNS = ("status", "params", "test_accuracy", "val_loss", "test_loss", "test_bpc", "nfe_forward",
                    "invariance_gap", "tokens_per_s", "train_time_s", "compile_s")


def format_summary(summary: SweepSummary) -> str:
    """A compact text table of the sweep's results, and the failures."""
    lines = [f"{summary.ran} run(s) trained, {summary.skipped} already finished, "
             f"{len(summary.failed)} failed"]
    lines += [f"replaced unreadable record {path} (rerun)" for path in summary.replaced]
    frame = summary.table
    if not frame.empty:
        swept = [c for c in frame.columns
                 if "." in c and "@" not in c and not c.startswith(("shape.", "stability."))]
        cols = ["run_id", *swept, *[c for c in _SUMMARY_COLUMNS if c in frame.columns]]
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            lines.append(frame[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    for run_id in summary.failed:
        status = frame.loc[frame.run_id == run_id, "status"].iloc[0]
        lines.append(f"FAILED {run_id}: {status}")
    return "\n".join(lines)
