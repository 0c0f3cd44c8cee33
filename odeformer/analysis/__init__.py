"""Reading results tables: successful rows, means over seeds, budgets to reach a target."""

from odeformer.analysis.tables import Ratio, budget_ratio, budget_to_reach, ok_rows, seed_summary

__all__ = ["Ratio", "budget_ratio", "budget_to_reach", "ok_rows", "seed_summary"]
