"""Running a sweep: plan (validate, resolve budgets), train each run, record results.

Runs that share every structural setting reuse one compiled train step (see
``odeformer.training`` for which settings are structural); ``compile_s`` is 0 for them
and ``compile_reused`` True.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
import pandas as pd
from flax import nnx
from tqdm.auto import tqdm

from odeformer import results
from odeformer.budgets import model_params, resolve_budget
from odeformer.models import ModelShape, SequenceClassifier, SolverSpec
from odeformer.sweeps import Run, expand, shard
from odeformer.tasks import TaskData, make_task
from odeformer.training import (
    FAILURE_SOLVER,
    evaluate,
    init_state,
    make_eval_step,
    make_optimizer,
    make_train_step,
)

_SHAPE_KEYS = tuple(f.name for f in dataclasses.fields(ModelShape))


class RunFailed(RuntimeError):
    """A run that could not finish; its message becomes ``status = "failed: ..."``."""


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    run: Run
    shape: ModelShape
    params: int


def _json(config) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


class _TaskCache(dict):
    def get_task(self, config) -> TaskData:
        key = _json(config)
        if key not in self:
            self[key] = make_task(config)
        return self[key]


def plan(config: ml_collections.ConfigDict, tasks: _TaskCache | None = None) -> list[PlannedRun]:
    """Expands and validates every run and resolves its shape; writes nothing.

    Raises:
      ValueError: naming the first invalid key.
    """
    tasks = _TaskCache() if tasks is None else tasks
    planned = []
    for run in expand(config):
        data = tasks.get_task(run.config.task)
        sizes = dict(vocab_size=data.vocab_size, seq_len=data.seq_len, num_classes=data.num_classes)
        shape = ModelShape(**{k: run.config.model[k] for k in _SHAPE_KEYS})
        if run.config.model.param_budget > 0:
            shape, params = resolve_budget(shape, run.config.model.param_budget, **sizes)
        else:
            params = model_params(shape, **sizes)
        planned.append(PlannedRun(run, shape, params))
    return planned


def _structure_key(planned: PlannedRun) -> str:
    c = planned.run.config
    solver = {k: c.solver[k] for k in ("name", "adaptive", "adjoint", "max_steps")}
    if not c.solver.adaptive:
        solver["steps"] = c.solver.steps
    task = {k: v for k, v in c.task.to_dict().items() if k != "seed"}
    train = {k: c.train[k] for k in ("batch_size", "num_steps", "warmup_steps", "grad_clip",
                                      "eval_batch_size")}
    return json.dumps([task, dataclasses.asdict(planned.shape), solver, train], sort_keys=True)


def _solver_spec(c) -> SolverSpec:
    return SolverSpec(name=c.solver.name, steps=None if c.solver.adaptive else c.solver.steps,
                      adjoint=c.solver.adjoint, max_steps=c.solver.max_steps)


def _step_bytes(compiled) -> int | None:
    try:
        stats = compiled.memory_analysis()
        return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes
                   + stats.output_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


def train_run(planned: PlannedRun, workdir: Path, tasks: _TaskCache, compiled: dict,
              progress: bool) -> dict[str, Any]:
    """Trains one run (resuming from its last checkpoint) and returns its metrics."""
    c = planned.run.config
    data = tasks.get_task(c.task)
    init_key, train_key = jax.random.split(jax.random.key(c.seed))
    model = SequenceClassifier(planned.shape, _solver_spec(c), vocab_size=data.vocab_size,
                               seq_len=data.seq_len, num_classes=data.num_classes,
                               rngs=nnx.Rngs(params=init_key))
    graphdef, params = nnx.split(model)
    tx = make_optimizer(c.train)
    state = init_state(params, tx, c.solver)
    rdir = results.run_dir(workdir, planned.run.run_id)
    results.write_atomic(rdir / "config.json", json.dumps(c.to_dict(), indent=1, sort_keys=True))
    metrics_path = rdir / "metrics.jsonl"

    start = 0
    manager = None
    if c.train.checkpoint_every > 0:
        manager = ocp.CheckpointManager(
            (rdir / "checkpoints").absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False))
        latest = manager.latest_step()
        if latest is not None:
            state = manager.restore(latest, args=ocp.args.StandardRestore(state))
            start = latest
    results.truncate_metrics(metrics_path, start)

    key = _structure_key(planned)
    reused = key in compiled
    compile_s = 0.0
    if not reused:
        t = time.perf_counter()
        step_fn = make_train_step(graphdef, tx, c.train.batch_size)
        compiled[key] = (step_fn.lower(state, data.train, train_key).compile(), make_eval_step(graphdef))
        compile_s = time.perf_counter() - t
    train_step, eval_step = compiled[key]

    bar = tqdm(total=c.train.num_steps, initial=start, desc=planned.run.run_id, leave=False,
               disable=not progress)
    t = time.perf_counter()
    last = {}
    for step in range(start + 1, c.train.num_steps + 1):
        state, metrics = train_step(state, data.train, train_key)
        log = step % c.train.log_every == 0 or step == c.train.num_steps
        checkpoint = manager is not None and step % c.train.checkpoint_every == 0
        if log:
            last = {k: v.item() for k, v in jax.device_get(metrics).items()}
            results.append_metrics(metrics_path, {"step": step, **last})
            bar.update(step - bar.n)
        # The state remembers the first failing step; never checkpoint or evaluate past it.
        if (log or checkpoint) and int(state["failed_at"]) >= 0:
            raise RunFailed(_failure_reason(int(state["failed_at"]), int(state["failure"])))
        if checkpoint:
            manager.save(step, args=ocp.args.StandardSave(state))
    bar.close()
    train_time = time.perf_counter() - t

    chunk = c.train.eval_batch_size
    train_eval = evaluate(eval_step, state["params"], state["hyper"], data.train, chunk)
    test_eval = evaluate(eval_step, state["params"], state["hyper"], data.test, chunk)
    if not (train_eval["ok"] and test_eval["ok"]):
        raise RunFailed("solver failed during evaluation")
    done = c.train.num_steps - start
    return {
        "train_loss": train_eval["loss"], "train_accuracy": train_eval["accuracy"],
        "test_loss": test_eval["loss"], "test_accuracy": test_eval["accuracy"],
        "nfe_forward": test_eval["nfe"], "solver_steps": last.get("solver_steps"),
        "train_time_s": train_time, "steps_per_s": done / train_time if done else None,
        "compile_s": compile_s, "compile_reused": reused, "step_bytes": _step_bytes(train_step),
        "resumed_from_step": start,
    }


def _failure_reason(step: int, kind: int) -> str:
    if kind == FAILURE_SOLVER:
        return f"solver failed at step {step} (max_steps reached or non-finite state)"
    return f"non-finite loss at step {step}"


def _row(planned: PlannedRun) -> dict[str, Any]:
    return {"run_id": planned.run.run_id, **planned.run.swept,
            **{f"shape.{k}": v for k, v in dataclasses.asdict(planned.shape).items()},
            "params": planned.params}


@dataclasses.dataclass
class SweepSummary:
    table: pd.DataFrame
    ran: int
    skipped: int
    failed: list[str]

    @property
    def exit_code(self) -> int:
        return 1 if self.ran and len(self.failed) == self.ran else 0


def run_sweep(config: ml_collections.ConfigDict, workdir: str | Path, *, shard_index: int = 0,
              shard_count: int = 1, quiet: bool = False) -> SweepSummary:
    """Runs this shard's part of the sweep into ``workdir``; finished runs are skipped.

    Every run is validated (and its shape resolved) before anything is compiled or
    written. A run that fails is recorded as ``status = "failed: <reason>"``.
    """
    tasks = _TaskCache()
    planned = shard(plan(config, tasks), shard_index, shard_count)
    workdir = Path(workdir)
    progress = not quiet and sys.stderr.isatty()
    compiled: dict = {}
    ran, skipped, failed = 0, 0, []
    for item in tqdm(planned, desc="runs", disable=not progress):
        if results.is_finished(workdir, item.run.run_id):
            skipped += 1
            continue
        row = _row(item)
        try:
            row.update(train_run(item, workdir, tasks, compiled, progress), status="ok")
        except RunFailed as error:  # the run diverged or its solver failed: final
            row["status"] = f"failed: {error}"
            failed.append(item.run.run_id)
        except Exception as error:  # recorded, retried by the next rerun, the sweep goes on
            detail = str(error).splitlines()[0][:300] if str(error) else ""
            row.update(status=f"failed: {type(error).__name__}: {detail}", crashed=True)
            failed.append(item.run.run_id)
        results.record(workdir, row)
        results.write_table(workdir)
        ran += 1
    table = results.write_table(workdir) if workdir.exists() else pd.DataFrame()
    return SweepSummary(table, ran, skipped, failed)


_SUMMARY_COLUMNS = ("status", "params", "test_accuracy", "test_loss", "nfe_forward",
                    "train_time_s", "compile_s")


def format_summary(summary: SweepSummary) -> str:
    """A compact text table of the sweep's results, and the failures."""
    lines = [f"{summary.ran} run(s) trained, {summary.skipped} already finished, "
             f"{len(summary.failed)} failed"]
    frame = summary.table
    if not frame.empty:
        swept = [c for c in frame.columns if "." in c and not c.startswith("shape.")]
        cols = ["run_id", *swept, *[c for c in _SUMMARY_COLUMNS if c in frame.columns]]
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            lines.append(frame[cols].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    for run_id in summary.failed:
        status = frame.loc[frame.run_id == run_id, "status"].iloc[0]
        lines.append(f"FAILED {run_id}: {status}")
    return "\n".join(lines)
