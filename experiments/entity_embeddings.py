"""Writes results/entity_embeddings.csv from the two sweeps of configs/entity_embeddings.py and
prints the generated part of docs/results.md's embeddings section.

    python -m experiments.entity_embeddings [--runs runs] [--out results/entity_embeddings.csv]
        [--print_only]

Each row gets its counted costs (parameters, FLOPs per example with the one-hot layer counted
as a matmul and as a lookup), the task's share of rows with an unknown id, the code's commit
(``git rev-parse --short HEAD``, ``+uncommitted`` when the working tree differs from it) and the
command that made the run. ``--print_only`` prints the section from the committed table.
"""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from absl import app, flags

from configs import entity_embeddings as experiment
from odeformer.analysis.entity_embeddings import choose_learning_rates, export_table, render
from odeformer.experiment import config as run_config
from odeformer.experiment import results
from odeformer.experiment.models import ModelShape
from odeformer.experiment.tabular_costs import model_costs, unknown_rates
from odeformer.experiment.tasks import make_task

_RUNS = flags.DEFINE_string("runs", "runs", "Folder holding the sweeps' workdirs.")
_OUT = flags.DEFINE_string("out", "results/entity_embeddings.csv", "The table to write.")
_PRINT_ONLY = flags.DEFINE_bool("print_only", False, "Print the docs section from --out; write nothing.")
_COMMAND = "python -m experiments.run --config configs/entity_embeddings.py"


def _commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, check=True).stdout.strip()
    return f"{head}+uncommitted" if dirty else head


def _costs_of():
    """``(task section, model section) -> costs and unknown rates``, each task made once."""
    made = {}

    def costs_of(task: dict, model: dict) -> dict:
        keys = {k: (tuple(v) if isinstance(v, list) else v) for k, v in task.items()}
        name = repr(sorted(keys.items()))
        if name not in made:
            section = run_config.task_section(keys["name"])
            for k in section.keys():
                section[k] = keys.get(k, section[k])
            made[name] = make_task(section)
        data = made[name]
        fields = [f.name for f in dataclasses.fields(ModelShape) if f.name in model]
        shape = ModelShape(**{name: model[name] for name in fields})
        return {**model_costs(shape, data), **unknown_rates(data)}

    return costs_of


def main(argv):
    del argv
    out = Path(_OUT.value)
    if not _PRINT_ONLY.value:
        commit, costs_of, parts = _commit(), _costs_of(), []
        for phase, variant in (("validation", ":validation"), ("test", "")):
            name = f"entity_embeddings{variant.replace(':', '_')}"
            workdir = Path(_RUNS.value) / name
            runs = results.load(workdir)
            configs = {rid: json.loads((results.run_dir(workdir, rid) / "config.json").read_text())
                       for rid in runs["run_id"]}
            parts.append(export_table(runs, configs, phase, experiment.arm_of, costs_of, commit,
                                      _COMMAND + variant))
        table = pd.concat(parts).sort_values(["phase", "task", "arm", "learning_rate", "seed"], kind="stable")
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False, float_format="%.10g")
        print(f"wrote {len(table)} rows to {out}", file=sys.stderr)
    table = pd.read_csv(out)
    print(choose_learning_rates(table).to_string(index=False), file=sys.stderr)
    print(render(table))
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
