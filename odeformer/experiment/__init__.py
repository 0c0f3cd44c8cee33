"""The experiment framework: tasks, models, training, sweeps, the runner and results.

A run is defined in :mod:`odeformer.experiment.config`; ``python -m experiments.run`` is
the command line on top. Importing this package registers the tabular tasks
(:mod:`~odeformer.experiment.datasets`) and the numerical studies
(:mod:`~odeformer.experiment.studies`).
"""

from odeformer.experiment import datasets  # noqa: F401  (registers the tabular tasks)
from odeformer.experiment.results import load
from odeformer.experiment.runner import plan, run_sweep
from odeformer.experiment.studies import STUDIES, clustering, convergence, register_study  # noqa: F401  (registers the studies)
from odeformer.experiment.summary import SweepInterrupted, SweepSummary, format_summary
from odeformer.experiment.sweeps import Run, expand
from odeformer.experiment.tasks import TASKS, TaskData, make_task, register_task

__all__ = [
    "STUDIES", "TASKS", "Run", "SweepInterrupted", "SweepSummary", "TaskData", "expand", "format_summary",
    "load", "make_task", "plan", "register_study", "register_task", "run_sweep",
]
