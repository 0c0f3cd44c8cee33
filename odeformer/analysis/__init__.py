"""Reading results tables: successful rows, means over seeds, budgets to reach a target, and the
statistics of a comparison (t intervals, selection on validation, paired differences, equal cost)."""

from odeformer.analysis.protocol import (
    MeanCI,
    at_equal,
    lowest,
    mean_ci,
    paired_differences,
    select_by_validation,
    summarise,
    t_quantile,
)
from odeformer.analysis.tables import Ratio, budget_ratio, budget_to_reach, ok_rows, seed_summary

__all__ = ["MeanCI", "Ratio", "at_equal", "budget_ratio", "budget_to_reach", "lowest", "mean_ci", "ok_rows",
           "paired_differences", "seed_summary", "select_by_validation", "summarise", "t_quantile"]
