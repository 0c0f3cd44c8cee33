"""Running a sweep: plan (validate, resolve budgets), train each run, record results.

Runs that share every structural setting reuse one compiled train step (see
``odeformer.experiment.config`` for which settings are structural); ``compile_s`` is 0 for them
and ``compile_reused`` True.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pandas as pd
from flax import nnx
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from odeformer import forward_mode
from odeformer._regularisers import PENALTIES
from odeformer._regularisers import weights as penalty_weights
from odeformer._solvers import solver_info
from odeformer.categorical.embeddings import tabular_report
from odeformer.categorical.features import TabularData
from odeformer.experiment import config as run_config
from odeformer.experiment import results
from odeformer.experiment.budgets import model_params, resolve_budget
from odeformer.experiment.evaluators.invariance import parse_solvers, solver_report
from odeformer.experiment.evaluators.stability import make_stability_step, summarise
from odeformer.experiment.executor import (
    BuildOnce,
    RunFailed,
    Stopped,
    Terminated,
    check_workers,
    execute,
    sigterm_as_interrupt,
    start_order,
)
from odeformer.experiment.language import language_row, resolve_language, robustness_row, save_params
from odeformer.experiment.models import ModelShape, SolverSpec, build_model
from odeformer.experiment.provenance import code_commit
from odeformer.experiment.sparse_training import sparse_tables
from odeformer.experiment.studies import STUDIES
from odeformer.experiment.summary import SweepInterrupted, SweepSummary, format_summary  # noqa: F401 (re-exported)
from odeformer.experiment.sweeps import Run, expand, shard
from odeformer.experiment.tasks import LanguageData, TaskData, make_task
from odeformer.experiment.train_state import train_state_init
from odeformer.experiment.training import (
    FAILURE_SOLVER,
    evaluate,
    make_eval_step,
    make_optimizer,
    make_train_step,
)
from odeformer.parallel.mesh import init_sharded, make_mesh, place, replicated

_SHAPE_KEYS = tuple(f.name for f in dataclasses.fields(ModelShape))


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    run: Run
    shape: ModelShape
    params: int
    tables: tuple[int, ...] = ()  # a tabular task's table sizes (they depend on its data)
    # Fixed-step solvers: the most steps of the runs that share this one's compiled step
    # (they differ only in solver.steps; each passes its own count traced).
    step_bound: int | None = None


def _json(config) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


class TaskCache:
    """Each distinct task config's data, made once per sweep (also from worker threads)."""

    def __init__(self):
        self._made = BuildOnce()

    def get_task(self, config) -> TaskData:
        return self._made.get(_json(config), lambda: make_task(config))[0]


def plan(config: ml_collections.ConfigDict, tasks: TaskCache | None = None) -> list[PlannedRun]:
    """Expands and validates every run and resolves its shape; writes nothing.

    Raises:
      ValueError: naming the first invalid key.
    """
    tasks = TaskCache() if tasks is None else tasks
    planned = []
    for run in expand(config):
        data = tasks.get_task(run.config.task)
        shape = ModelShape(**{k: run.config.model[k] for k in _SHAPE_KEYS})
        shards = run.config.mesh.model
        if run.config.model.param_budget > 0:
            shape, params = resolve_budget(shape, run.config.model.param_budget, data, shards,
                                           by=run.config.model.resolve)
        else:
            params = model_params(shape, data, shards)
        tables = (tuple(f.cardinality for f in (*data.categorical, *data.bags))
                  if isinstance(data, TabularData) else ())
        planned.append(PlannedRun(run, shape, params, tables))
    return _bound_steps(planned)


def _bound_steps(planned: list[PlannedRun]) -> list[PlannedRun]:
    """Gives every fixed-step run the largest ``solver.steps`` among the runs whose
    structure differs from its own only in that count, so that one compiled step serves
    them all (``odeformer.solve`` with a traced ``steps``; same results as a compile per
    count)."""
    keys = [None if p.run.config.solver.adaptive else structure_key(p, steps=False)
            for p in planned]
    bounds = {}
    for p, key in zip(planned, keys, strict=True):
        if key is not None:
            bounds[key] = max(bounds.get(key, 0), p.run.config.solver.steps)
    return [p if key is None else dataclasses.replace(p, step_bound=bounds[key])
            for p, key in zip(planned, keys, strict=True)]


def structure_key(planned: PlannedRun, *, steps: bool = True) -> str:
    """What a run's compiled steps depend on (``odeformer.experiment.config.structure_key``);
    ``steps=False`` leaves out the step bound."""
    bound = _solver_spec(planned).steps if steps else None
    return run_config.structure_key(planned.run.config, dataclasses.asdict(planned.shape), bound,
                                    planned.tables)


def _solver_spec(planned: PlannedRun) -> SolverSpec:
    c = planned.run.config
    bound = c.solver.steps if planned.step_bound is None else planned.step_bound
    return SolverSpec(name=c.solver.name, steps=None if c.solver.adaptive else bound,
                      adjoint=c.solver.adjoint, max_steps=c.solver.max_steps)


_ADAPTIVE_STEPS_GUESS = 8  # an adaptive run's steps are unknown before it runs


def estimated_cost(planned: PlannedRun) -> float:
    """A training run's cost up to a constant, to order a sweep's runs only: training steps
    x batch x field evaluations per forward pass x width^2."""
    c, shape = planned.run.config, planned.shape
    if shape.family in ("discrete", "gpt"):
        evals = shape.layers
    elif shape.family == "rk2_gated":
        evals = 2 * shape.layers
    else:
        steps = _ADAPTIVE_STEPS_GUESS if c.solver.adaptive else c.solver.steps
        evals = solver_info(c.solver.name).evals_per_step * steps
    return float(c.train.num_steps * c.train.batch_size * evals * shape.width ** 2)


def _step_bytes(compiled) -> int | None:
    try:
        stats = compiled.memory_analysis()
        return int(stats.temp_size_in_bytes + stats.argument_size_in_bytes
                   + stats.output_size_in_bytes)
    except Exception:  # not every backend reports it
        return None


def train_run(planned: PlannedRun, workdir: Path, tasks: TaskCache, compiled: BuildOnce,
              progress: bool, stop: threading.Event | None = None) -> dict[str, Any]:
    """Trains one run (resuming from its last checkpoint) and returns its metrics.

    ``compiled`` holds the jitted steps of every structure (``structure_key``) met so far
    in the sweep. ``stop`` (``odeformer.experiment.executor``) is checked before every training step
    and before the evaluation; once it is set the run raises ``Stopped``.

    The run's mesh (``config.mesh``) holds the train state and data for the whole run:
    embedding tables row-sharded on ``model`` from their creation (``init_sharded``), batches
    split on ``data``. With several processes (``jax.distributed.initialize``) every process
    runs this same code; only process 0 writes files.
    """
    c = planned.run.config
    data = tasks.get_task(c.task)
    mesh = make_mesh(c.mesh.data, c.mesh.model)
    primary = jax.process_index() == 0
    init_key, train_key = jax.random.split(jax.random.key(c.seed))
    tx = make_optimizer(c.train)
    build = partial(build_model, planned.shape, _solver_spec(planned), data, shards=c.mesh.model)
    sparse = sparse_tables(c.train)  # normalise resets it to dense for other tasks
    graphdef, state = init_sharded(train_state_init(build, tx, c.solver, penalty_weights(c.train), sparse),
                                   init_key, mesh)
    language = isinstance(data, LanguageData)
    # The parameters at initialisation (before any checkpoint is restored), copied on device (the
    # train step donates the state's buffers): a language run measures what training changed.
    initial = jax.tree.map(jnp.copy, state["params"]) if language else None
    train_split = place(data.train, replicated(mesh))
    test_split = None if language else place(data.test, replicated(mesh))
    train_key = place(train_key, replicated(mesh))
    rdir = results.run_dir(workdir, planned.run.run_id)
    if primary:
        results.write_config(workdir, planned.run.run_id, c)
        for name, text in data.artifacts.items():
            results.write_atomic(rdir / name, text)
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
    earlier = []
    if primary:
        earlier = results.truncate_metrics(metrics_path, start)  # logged before a resume

    def build():
        t = time.perf_counter()
        step_fn = make_train_step(graphdef, tx, c.train.batch_size, mesh, c.train.microbatch,
                                  data.block_size if language else None, sparse and sparse[0])
        return (step_fn.lower(state, train_split, train_key).compile(),
                make_eval_step(graphdef, mesh), time.perf_counter() - t)

    with jax.set_mesh(mesh):
        (train_step, eval_step, seconds), built = compiled.get(structure_key(planned), build)
        compile_s, reused = (seconds, False) if built else (0.0, True)

        bar = tqdm(total=c.train.num_steps, initial=start, desc=planned.run.run_id, leave=False,
                   disable=not progress)
        t = time.perf_counter()
        last, logged = {}, list(earlier)
        for step in range(start + 1, c.train.num_steps + 1):
            if stop is not None and stop.is_set():
                raise Stopped(planned.run.run_id)
            state, metrics = train_step(state, train_split, train_key)
            log = step % c.train.log_every == 0 or step == c.train.num_steps
            checkpoint = manager is not None and step % c.train.checkpoint_every == 0
            if log:
                last = {k: v.item() for k, v in jax.device_get(metrics).items()}
                logged.append({"step": step, **last})
                if primary:
                    results.append_metrics(metrics_path, {"step": step, **last})
                bar.update(step - bar.n)
            # The state remembers the first failing step; never checkpoint or evaluate past it.
            if (log or checkpoint) and int(state["failed_at"]) >= 0:
                raise RunFailed(_failure_reason(int(state["failed_at"]), int(state["failure"])))
            if checkpoint:
                manager.save(step, args=ocp.args.StandardSave(state))
        bar.close()
        train_time = time.perf_counter() - t
        if stop is not None and stop.is_set():
            raise Stopped(planned.run.run_id)

        chunk = c.train.eval_batch_size
        if language:
            done = c.train.num_steps - start
            late = _late_means(logged, c.train.num_steps, ("loss", "nfe"))
            row = language_row(eval_step, state, data, nnx.merge(graphdef, state["params"]), chunk, late,
                               done * c.train.batch_size * data.block_size, train_time,
                               nnx.merge(graphdef, initial))
            row.update(resolve_language(c, graphdef, state, data, mesh, compiled, row["val_loss"]))
    if language:
        if not row.pop("solved_ok"):
            raise RunFailed("solver failed during evaluation")
        if primary:
            save_params(rdir, state["params"])
        row.update(robustness_row(c, graphdef, state, data, compiled))  # off the mesh: a few windows
        return {**row, "train_time_s": train_time, "step_ms": 1000 * train_time / done if done else None,
                "compile_s": compile_s, "compile_reused": reused, "step_bytes": _step_bytes(train_step),
                "resumed_from_step": start, "devices": mesh.size,
                **_late_training_means(logged, c.train.num_steps)}
    with jax.set_mesh(mesh):
        train_eval = evaluate(eval_step, state["params"], state["hyper"], train_split, chunk,
                              data.num_classes)
        test_eval = evaluate(eval_step, state["params"], state["hyper"], test_split, chunk,
                             data.num_classes)
    if not (train_eval["ok"] and test_eval["ok"]):
        raise RunFailed("solver failed during evaluation")
    done = c.train.num_steps - start
    row = {
        "train_loss": train_eval["loss"], "train_accuracy": train_eval["accuracy"],
        "test_loss": test_eval["loss"], "test_accuracy": test_eval["accuracy"],
        "nfe_forward": test_eval["nfe"], "solver_steps": last.get("solver_steps"),
        "train_time_s": train_time, "steps_per_s": done / train_time if done else None,
        "step_ms": 1000 * train_time / done if done else None,
        "compile_s": compile_s, "compile_reused": reused, "step_bytes": _step_bytes(train_step),
        "resumed_from_step": start, "devices": mesh.size,
        **_late_training_means(logged, c.train.num_steps),
    }
    if "auc" in test_eval:
        row.update(train_auc=train_eval["auc"], test_auc=test_eval["auc"])
    if isinstance(data, TabularData):
        row.update(tabular_report(nnx.merge(graphdef, state["params"]).tokenizer, data, mesh))
    row.update(_evaluate_trained(c, graphdef, state, test_split, data, mesh, compiled,
                                 row["test_accuracy"]))
    return row


def _evaluate_trained(c, graphdef, state, test_split, data, mesh, compiled: BuildOnce,
                      test_accuracy: float) -> dict[str, Any]:
    """The ``evaluate`` section's measurements of a trained run:
    test accuracy under other solvers (``odeformer.experiment.evaluators.invariance``) and
    stability (``odeformer.experiment.evaluators.stability``). Their jitted steps are cached
    in ``compiled`` by graphdef:
    the extra solvers' eval steps are shared by runs of one shape whatever their training
    solver; the stability step is one per training graphdef."""
    if not (c.evaluate.solvers or c.evaluate.stability):
        return {}
    e, params, hyper = c.evaluate, state["params"], state["hyper"]
    t = time.perf_counter()
    with jax.set_mesh(mesh):
        def evaluate_with(solved, values):
            step, _ = compiled.get(("eval", solved, mesh), lambda: make_eval_step(solved, mesh))
            return evaluate(step, params, values, test_split, c.train.eval_batch_size,
                            data.num_classes)

        row = solver_report(parse_solvers(e.solvers), graphdef, params, hyper, test_accuracy,
                            evaluate_with)
        if e.stability:
            step, _ = compiled.get(("stability", graphdef, e.power_iterations),
                                   lambda: make_stability_step(graphdef, forward_mode(graphdef, params),
                                                               e.power_iterations))
            subset = jax.tree.map(lambda a: a[:e.examples], test_split)  # the first examples
            labels = subset.pop("label")
            key = jax.random.fold_in(jax.random.key(c.seed), 1)  # not training's split of the key
            row.update(summarise(step(params, hyper, subset, labels, key, e.epsilon)))
    row["evaluate_s"] = time.perf_counter() - t
    return row


def _late_means(logged: list[dict], num_steps: int, names) -> dict[str, float | None]:
    """Means of the logged values ``names`` over the last quarter of training (None where
    none was logged)."""
    late = [line for line in logged if line["step"] > 0.75 * num_steps]
    values = {name: [line[name] for line in late if name in line] for name in names}
    return {name: float(np.mean(v)) if v else None for name, v in values.items()}


def _late_training_means(logged: list[dict], num_steps: int) -> dict[str, float | None]:
    """``train_nfe`` (and ``train_<penalty>`` for each regulariser that is on): means of the
    values logged over the last quarter of training (steps > 0.75 num_steps), before and
    after a resume; ``train_nfe`` is None if none was logged."""
    means = _late_means(logged, num_steps, ("nfe", *PENALTIES))
    return {"train_nfe": means["nfe"],
            **{f"train_{name}": means[name] for name in PENALTIES if means[name] is not None}}


def _finished(workdir: Path, run_id: str) -> bool:
    """Process 0's answer, shared so that every process trains the same runs."""
    finished = results.is_finished(workdir, run_id)
    if jax.process_count() == 1:
        return finished
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(finished)))


def _failure_reason(step: int, kind: int) -> str:
    if kind == FAILURE_SOLVER:
        return f"solver failed at step {step} (max_steps reached or non-finite state)"
    return f"non-finite loss at step {step}"


def _row(planned: PlannedRun) -> dict[str, Any]:
    return {"run_id": planned.run.run_id, **planned.run.swept,
            **{f"shape.{k}": v for k, v in dataclasses.asdict(planned.shape).items()},
            "params": planned.params}


def run_sweep(config: ml_collections.ConfigDict, workdir: str | Path, *, shard_index: int = 0,
              shard_count: int = 1, quiet: bool = False, workers: int = 1) -> SweepSummary:
    """Runs this shard's part of the sweep into ``workdir``; finished runs are skipped.

    ``config.experiment`` is ``"train"`` (every run trains a model) or the name of a
    numerical study (``odeformer.experiment.studies``; every run calls its ``measure``). Every run
    is validated (and a training run's shape resolved) before anything is computed or
    written. A run that fails is recorded as ``status = "failed: <reason>"``.

    ``workers`` runs that many runs at a time on threads of this process
    (``odeformer.experiment.executor``; single-process sweeps only). Results do not depend on it;
    the timings in each row (``train_time_s``, ``step_ms``, ``compile_s``) are then
    measured while other runs share the machine, and the row's ``workers`` says so.
    Several workers start a sweep's training runs costliest first, keeping runs that
    share a compiled step from starting side by side (``odeformer.experiment.executor.start_order``).

    Raises:
      SweepInterrupted: on Ctrl-C or SIGTERM while runs execute (SIGTERM when called from
        the main thread); the finished runs' rows are recorded and a rerun resumes the sweep.
    """
    check_workers(workers, jax.process_count())
    workdir = Path(workdir)
    progress = not quiet and sys.stderr.isatty()
    if config.experiment == "train":
        tasks, compiled = TaskCache(), BuildOnce()
        items = shard(plan(config, tasks), shard_index, shard_count)
        run_progress = progress and workers == 1  # one bar per run only when runs take turns

        def train(item, stop):
            return train_run(item, workdir, tasks, compiled, run_progress, stop)

        def schedule(todo):
            return start_order(todo, structure_key, estimated_cost, workers)

        return _sweep(items, workdir, lambda item: item.run, _row, train, progress, workers, schedule)
    items = shard(expand(config), shard_index, shard_count)  # checks config.experiment first
    study = STUDIES[config.experiment]

    def measure(run, stop):
        del stop  # a study's run is short; an interrupt waits for it
        if jax.process_index() == 0:
            results.write_config(workdir, run.run_id, run.config)
        return study.measure(run.config)

    return _sweep(items, workdir, lambda run: run, lambda run: {"run_id": run.run_id, **run.swept},
                  measure, progress, workers)


def _sweep(items, workdir: Path, run_of, base_row, run_item, progress: bool,
           workers: int, schedule=None) -> SweepSummary:
    """Executes every unfinished item, recording each row as soon as it is known.

    Args:
      items: planned runs (training) or runs (studies), in grid order.
      run_of: ``item -> Run``.
      base_row: ``item -> dict``, the row's columns known before running.
      run_item: ``run_item(item, stop) -> dict``, the measured columns; raises
        ``RunFailed`` for a final failure.
      progress: show a bar over runs.
      workers: worker threads (``odeformer.experiment.executor.execute``).
      schedule: ``todo -> todo`` reordered, the order in which runs start (training:
        ``odeformer.experiment.executor.start_order``); None keeps grid order. Rows, failures and the
        table do not depend on it.
    """
    primary = jax.process_index() == 0
    commit = code_commit()
    todo = [item for item in items if not _finished(workdir, run_of(item).run_id)]
    replaced = [results.record_path(workdir, run_of(item).run_id) for item in todo
                if primary and results.is_unreadable(workdir, run_of(item).run_id)]
    order = {run_of(item).run_id: i for i, item in enumerate(todo)}
    if schedule is not None:
        todo = schedule(todo)
    failed = []

    def row_of(item, stop):
        row = {**base_row(item), "workers": workers, "commit": commit}
        try:
            row.update(run_item(item, stop), status="ok")
        except RunFailed as error:  # the run diverged or its solver failed: final
            row["status"] = f"failed: {error}"
        except Exception as error:  # recorded, retried by the next rerun, the sweep goes on
            detail = str(error).splitlines()[0][:300] if str(error) else ""
            row.update(status=f"failed: {type(error).__name__}: {detail}", crashed=True)
        return row

    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc="runs", disable=not progress)

    def finish(row):
        if row["status"] != "ok":
            failed.append(row["run_id"])
        if primary:
            results.record(workdir, row)
            results.write_table(workdir)
        bar.update()

    try:
        with sigterm_as_interrupt():
            execute(todo, row_of, finish, workers)
    except KeyboardInterrupt as interrupt:
        # The interrupt may have come between a record and the table's rebuild.
        if primary and workdir.exists():
            results.write_table(workdir)
        finished = sum(results.is_finished(workdir, run_of(item).run_id) for item in items)
        raise SweepInterrupted("SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT",
                               finished, len(items), workdir) from interrupt
    finally:
        bar.close()
    table = results.write_table(workdir) if primary and workdir.exists() else (
        results.load(workdir) if workdir.exists() else pd.DataFrame())
    return SweepSummary(table, len(todo), len(items) - len(todo), sorted(failed, key=order.get),
                        replaced)
