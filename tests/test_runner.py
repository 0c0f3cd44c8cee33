"""End-to-end sweeps: results, resume, failures, shards, compile reuse, the CLI."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import ml_collections
import numpy as np
import pandas as pd
import pytest
from runner_helpers import tiny_config, with_overrides

from odeformer.experiment import results, runner
from odeformer.experiment.executor import BuildOnce, Stopped
from odeformer.experiment.runner import run_sweep

REPO = Path(__file__).resolve().parents[1]


def test_end_to_end_sweep_writes_one_row_per_run(tmp_path):
    c = tiny_config()
    summary = run_sweep(c, tmp_path, quiet=True)
    assert summary.ran == 2 and not summary.failed and summary.exit_code == 0
    table = results.read_table(tmp_path / "results.csv")
    assert sorted(table.run_id) == sorted(r.run.run_id for r in runner.plan(c))
    assert set(table.status) == {"ok"}
    for column in ("solver.steps", "shape.width", "params", "train_loss", "test_accuracy",
                   "nfe_forward", "solver_steps", "train_time_s", "compile_s"):
        assert column in table.columns, column
    # rk4 with 1 and 2 steps: 4 and 8 evaluations per forward
    assert dict(zip(table["solver.steps"], table.nfe_forward, strict=True)) == {1: 4, 2: 8}
    for run_id in table.run_id:
        rdir = tmp_path / "runs" / run_id
        assert json.loads((rdir / "config.json").read_text())["solver"]["name"] == "rk4"
        steps = [json.loads(ln)["step"] for ln in (rdir / "metrics.jsonl").read_text().splitlines()]
        assert steps == [2, 4]
    pd.testing.assert_frame_equal(results.load(tmp_path).sort_values("run_id").reset_index(drop=True),
                                  table.sort_values("run_id").reset_index(drop=True), check_dtype=False)


@pytest.mark.slow
def test_runs_on_two_workers_match_one_worker_bit_for_bit_and_share_one_compile(tmp_path):
    # One structure (the seed is traced), so both threads want the same compile at once;
    # checkpoints on, so orbax saves from both threads.
    c = tiny_config(**{"train.checkpoint_every": 2, "sweep.solver.steps": (2,)})
    c.unlock()
    c.sweep.seed = (0, 1, 2, 3)
    c.lock()
    tables = {w: run_sweep(c, tmp_path / str(w), quiet=True, workers=w).table.set_index("run_id")
              for w in (1, 2)}
    one, two = tables[1], tables[2]
    assert len(two) == 4 and set(two.status) == {"ok"} and set(two.workers) == {2}
    assert set(one.workers) == {1}
    assert two.compile_reused.sum() == 3  # the second thread waited for the first's compile
    assert len(list((tmp_path / "2").glob("runs/*/checkpoints/4"))) == 4
    for column in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "train_nfe",
                   "nfe_forward", "solver_steps"):
        pd.testing.assert_series_equal(two[column], one.loc[two.index, column], check_exact=True)


def test_several_workers_start_the_costliest_run_first_and_apart_from_its_compile(tmp_path, monkeypatch):
    """run_sweep hands ``execute`` its runs in ``start_order``: rk4 x 2 (8 evaluations per
    forward) first, then euler x 2 rather than rk4 x 1, which would wait for rk4's compile;
    one worker keeps grid order."""
    c = tiny_config(**{"sweep.solver": {"name": ("euler", "rk4"), "steps": (1, 2)}})
    started = {}

    def record(items, run_item, finish, workers):
        started[workers] = [(p.run.config.solver.name, p.run.config.solver.steps) for p in items]

    monkeypatch.setattr(runner, "execute", record)
    for workers in (1, 2):
        run_sweep(c, tmp_path / str(workers), quiet=True, workers=workers)
    assert sorted(started[1]) == started[1]  # grid order: euler before rk4, 1 before 2
    assert started[2] == [("rk4", 2), ("euler", 2), ("rk4", 1), ("euler", 1)]


def test_a_run_stops_at_the_next_step_once_the_stop_event_is_set(tmp_path):
    planned = runner.plan(tiny_config())[0]
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped, match=planned.run.run_id):
        runner.train_run(planned, tmp_path, runner.TaskCache(), BuildOnce(), False, stop)
    assert not (results.run_dir(tmp_path, planned.run.run_id) / "metrics.jsonl").exists()


@pytest.mark.slow
def test_rerun_skips_finished_runs(tmp_path):
    c = tiny_config()
    run_sweep(c, tmp_path, quiet=True)
    before = (tmp_path / "results.csv").read_text()
    summary = run_sweep(c, tmp_path, quiet=True)
    assert summary.ran == 0 and summary.skipped == 2
    assert (tmp_path / "results.csv").read_text() == before


def test_a_cut_short_record_is_rerun_replaced_and_named_in_the_summary(tmp_path):
    """A result.json truncated by a full disk: the rerun trains that run again (the same
    row), replaces the file and names it, instead of dying on a JSON error."""
    c = tiny_config()
    first = run_sweep(c, tmp_path, quiet=True).table.set_index("run_id")
    run_id = sorted(first.index)[0]
    path = results.record_path(tmp_path, run_id)
    path.write_text(path.read_text()[:40])
    summary = run_sweep(c, tmp_path, quiet=True)
    assert (summary.ran, summary.skipped, summary.failed, summary.replaced) == (1, 1, [], [path])
    assert f"replaced unreadable record {path} (rerun)" in runner.format_summary(summary).splitlines()
    assert json.loads(path.read_text())["run_id"] == run_id
    again = results.load(tmp_path).set_index("run_id")
    assert sorted(again.index) == sorted(first.index) and set(again.status) == {"ok"}
    for column in ("train_loss", "test_loss", "test_accuracy", "nfe_forward"):
        assert again.loc[run_id, column] == first.loc[run_id, column], column
    assert run_sweep(c, tmp_path, quiet=True).replaced == []


def test_sigterm_mid_sweep_raises_sweep_interrupted_counting_the_recorded_rows(tmp_path, monkeypatch):
    """SIGTERM after the first of two runs is recorded stops the sweep as Ctrl-C does,
    with the counts the CLI reports; the handler before the sweep is back afterwards."""
    def first_row_then_sigterm(items, run_item, finish, workers):
        finish(run_item(items[0], threading.Event()))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)  # the handler raises at the next bytecode

    monkeypatch.setattr(runner, "execute", first_row_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(runner.SweepInterrupted) as stopped:
        run_sweep(tiny_config(), tmp_path, quiet=True)
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert (stopped.value.signal_name, stopped.value.finished, stopped.value.total,
            stopped.value.exit_code) == ("SIGTERM", 1, 2, 143)
    assert str(stopped.value) == ("sweep interrupted by SIGTERM: 1 of 2 run(s) finished and "
                                  f"recorded in {tmp_path}")
    assert len(results.load(tmp_path)) == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_tolerance_axis_reuses_one_compiled_step(tmp_path):
    c = tiny_config(**{"solver.adaptive": True, "solver.name": "bosh3"})
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"solver": {"rtol": (1e-1, 1e-3, 1e-5)},
                                         "train": {"learning_rate": (1e-2, 1e-3)}})
    run_sweep(c, tmp_path, quiet=True)
    table = results.load(tmp_path)
    assert len(table) == 6 and set(table.status) == {"ok"}
    assert table.compile_reused.sum() == 5
    assert (table.compile_s == 0).sum() == 5 and (table.compile_s > 0).sum() == 1
    # the traced tolerance really changed the solves
    nfe = table.groupby("solver.rtol").nfe_forward.max().sort_index()
    assert nfe.iloc[0] > nfe.iloc[-1]  # tightest rtol -> most evaluations


@pytest.mark.slow
def test_step_count_axis_compiles_once_and_equals_each_count_trained_alone(tmp_path):
    """Fixed-step runs that differ only in solver.steps share one compiled step, bounded
    by the largest count, and train exactly as each count compiled for itself does."""
    c = tiny_config(**{"solver.name": "rk4"})
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"solver": {"steps": (3, 1, 2)}})
    planned = runner.plan(c)
    assert [p.step_bound for p in planned] == [3, 3, 3]
    unbounded = dataclasses.replace(planned[1], step_bound=None)  # not made by plan: its own count
    assert runner._solver_spec(unbounded).steps == 1
    run_sweep(c, tmp_path / "swept", quiet=True)
    swept = results.load(tmp_path / "swept").set_index("solver.steps")
    assert set(swept.status) == {"ok"} and swept.compile_reused.sum() == 2
    assert list(swept.nfe_forward.sort_index()) == [4, 8, 12]
    for steps in (1, 2):  # each count alone: its own compile, bound = its own count
        alone = tiny_config(**{"solver.name": "rk4", "solver.steps": steps})
        alone.unlock()
        alone.sweep = ml_collections.ConfigDict({})
        assert runner.plan(alone)[0].step_bound == steps
        run_sweep(alone, tmp_path / f"alone{steps}", quiet=True)
        row = results.load(tmp_path / f"alone{steps}").iloc[0]
        for column in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "nfe_forward"):
            assert swept[column][steps] == row[column], (steps, column)


@pytest.mark.slow
def test_microbatched_run_trains_the_same_model_with_its_own_compile(tmp_path):
    c = tiny_config(**{"solver.name": "euler"})
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"train": {"microbatch": (0, 4, 2)}})
    run_sweep(c, tmp_path, quiet=True)
    table = results.load(tmp_path).set_index("train.microbatch")
    assert len(table) == 3 and set(table.status) == {"ok"} and not table.compile_reused.any()
    for chunk in (4, 2):  # float32: the chunks' sums round differently
        for column in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            np.testing.assert_allclose(table[column][chunk], table[column][0], rtol=1e-4, err_msg=column)


def test_a_train_section_without_microbatch_is_refused_before_writing(tmp_path):
    c = ml_collections.ConfigDict(tiny_config().to_dict())
    del c.train["microbatch"]
    with pytest.raises(ValueError, match="train.microbatch is missing from the config: start from "
                                         "configs/base.py"):
        run_sweep(c, tmp_path / "w", quiet=True)
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_failed_run_is_recorded_and_sweep_goes_on(tmp_path):
    c = tiny_config(**{"solver.adaptive": True, "solver.name": "tsit5", "solver.rtol": 1e-1})
    c.unlock()
    # max_steps=1 cannot reach t1 from the first step of (t1 - t0) / 100
    c.sweep = ml_collections.ConfigDict({"solver": {"max_steps": (256, 1)}, "seed": (0, 1)})
    summary = run_sweep(c, tmp_path, quiet=True)
    table = results.load(tmp_path)
    short = table[table["solver.max_steps"] == 1]
    assert len(short) == 2
    assert all(s.startswith("failed: solver failed at step 1 ") for s in short.status)
    assert set(table[table["solver.max_steps"] == 256].status) == {"ok"}
    assert sorted(summary.failed) == sorted(short.run_id)
    assert summary.exit_code == 0  # not every run failed
    assert "FAILED" in runner.format_summary(summary)


def test_every_run_failing_gives_exit_code_1(tmp_path):
    c = tiny_config(**{"train.learning_rate": 1e30, "train.grad_clip": 1e30})
    c.unlock()
    c.sweep = ml_collections.ConfigDict({})
    summary = run_sweep(c, tmp_path, quiet=True)
    assert summary.exit_code == 1
    assert results.load(tmp_path).status.iloc[0].startswith("failed: ")


@pytest.mark.slow
def test_checkpoint_resume_continues_the_same_run(tmp_path, monkeypatch):
    c = tiny_config(**{"train.num_steps": 6, "train.checkpoint_every": 2, "train.log_every": 1})
    c.unlock()
    c.sweep = ml_collections.ConfigDict({})
    straight = tmp_path / "straight"
    run_sweep(c, straight, quiet=True)

    crashed = tmp_path / "crashed"
    real_append = results.append_metrics

    def crash_after_step_5(path, line):
        real_append(path, line)
        if line["step"] == 5:
            raise KeyboardInterrupt  # like a kill: not caught, nothing recorded

    monkeypatch.setattr(results, "append_metrics", crash_after_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(c, crashed, quiet=True)
    assert results.load(crashed).empty
    monkeypatch.setattr(results, "append_metrics", real_append)
    run_sweep(c, crashed, quiet=True)

    a, b = results.load(straight).iloc[0], results.load(crashed).iloc[0]
    assert b.resumed_from_step == 4  # last checkpoint before the crash
    np.testing.assert_allclose(b.test_loss, a.test_loss, rtol=1e-6)
    np.testing.assert_allclose(b.train_loss, a.train_loss, rtol=1e-6)
    lines = (results.run_dir(crashed, b.run_id) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4, 5, 6]


def test_param_budget_is_met_within_5_percent(tmp_path):
    c = tiny_config(**{"model.param_budget": 8000})
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"model": {"family": ("ode", "discrete")}})
    planned = runner.plan(c)
    for item in planned:
        assert abs(item.params - 8000) <= 400
    assert {p.shape.width for p in planned} != {c.model.width}
    with pytest.raises(ValueError, match="param_budget=10 cannot be met within 5%"):
        runner.plan(tiny_config(**{"model.param_budget": 10}))


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=REPO,
                          capture_output=True, text=True, **kwargs)


TINY_FLAGS = ("--config=configs/quick.py", "--config.task.num_train=64", "--config.task.num_test=16",
              "--config.model.width=8", "--config.model.heads=2", "--config.train.num_steps=3",
              "--config.train.batch_size=8", "--config.train.warmup_steps=1",
              "--config.train.eval_batch_size=16", "--quiet")


@pytest.mark.slow
@pytest.mark.parametrize("flag, message", [
    ("--config.solver.adjoint=foo", "solver.adjoint='foo' is not one of"),
    ("--config.solver.stepz=3", 'Did you mean "steps" instead of "stepz"?'),
    ("--config.solver.steps=three", "invalid literal for int() with base 10: 'three'"),
    ("--config.sweep.solver.steps=()", "must be a non-empty tuple"),
    ("--shard=3/2", "needs 0 <= i < n"),
    ("--workers=0", "workers=0 must be an integer >= 1"),
    ("--config.train.microbatch=3", "train.microbatch=3 must divide train.batch_size=8"),
])
def test_cli_rejects_bad_config_before_writing(tmp_path, flag, message):
    out = _cli(*TINY_FLAGS, f"--workdir={tmp_path / 'w'}", flag)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_cli_shards_merge_into_one_table(tmp_path):
    for i in range(2):  # the second shard runs with system malloc settings
        out = _cli(*TINY_FLAGS, "--config.sweep.solver.name=('rk4',)", *["--noreuse_host_memory"] * i,
                   f"--workdir={tmp_path / f's{i}'}", f"--shard={i}/2")
        assert out.returncode == 0, out.stderr
    merged = results.load([tmp_path / "s0", tmp_path / "s1"])
    config = _quick_with_cli_overrides()
    config.sweep.solver.name = ("rk4",)
    expected = {r.run.run_id for r in runner.plan(config)}
    assert set(merged.run_id) == expected and len(merged) == len(expected) == 3
    assert not set(results.load(tmp_path / "s0").run_id) & set(results.load(tmp_path / "s1").run_id)


def _quick_with_cli_overrides():
    from configs import quick
    c = ml_collections.ConfigDict(quick.get_config().to_dict())
    c.task.num_train, c.task.num_test, c.model.width, c.model.heads = 64, 16, 8, 2
    c.train.num_steps, c.train.batch_size, c.train.warmup_steps, c.train.eval_batch_size = 3, 8, 1, 16
    return c


@pytest.mark.slow
def test_cli_killed_mid_sweep_resumes_without_loss_or_duplicates(tmp_path):
    workdir = tmp_path / "w"
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *TINY_FLAGS,
                             f"--workdir={workdir}"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(workdir.glob("runs/*/result.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name for p in workdir.glob("runs/*/result.json")}
    assert 2 <= len(finished) < 5
    results.read_table(workdir / "results.csv")  # never corrupt
    out = _cli(*TINY_FLAGS, f"--workdir={workdir}")
    assert out.returncode == 0, out.stderr
    table = results.read_table(workdir / "results.csv")
    assert len(table) == 5 and table.run_id.is_unique and set(table.status) == {"ok"}
    assert finished <= set(table.run_id)
    assert f"{5 - len(finished)} run(s) trained, {len(finished)} already finished" in out.stdout


@pytest.mark.slow
def test_cli_interrupted_on_two_workers_stops_both_runs_and_records_neither(tmp_path):
    """SIGINT (Ctrl-C) while two runs train on worker threads: both stop at their next step,
    the process exits with 130 and a message, no traceback, and neither run is recorded
    (a rerun trains them again)."""
    workdir = tmp_path / "w"
    long_runs = (*TINY_FLAGS, "--config.train.num_steps=1000000", "--config.train.log_every=1")
    # Python turns SIGINT into KeyboardInterrupt only if SIGINT is not ignored, and a shell
    # running this suite in the background may ignore it: reset it, then exec the CLI.
    launch = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
              "os.execv(sys.executable, [sys.executable, '-m', 'experiments.run', *sys.argv[1:]])")
    proc = subprocess.Popen([sys.executable, "-c", launch, *long_runs, f"--workdir={workdir}",
                             "--workers=2"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(workdir.glob("runs/*/metrics.jsonl"))) < 2:
        time.sleep(0.05)
    assert len(list(workdir.glob("runs/*/metrics.jsonl"))) == 2, "two runs never trained at once"
    stderr = _stop(proc, signal.SIGINT, timeout=60)
    assert proc.returncode == 130, stderr  # 128 + SIGINT, as a shell reports Ctrl-C
    assert (f"sweep interrupted by SIGINT: 0 of 5 run(s) finished and recorded in {workdir}; "
            "rerun the same command to resume") in stderr
    assert "Traceback" not in stderr
    assert not list(workdir.glob("runs/*/result.json"))


def _stop(proc: subprocess.Popen, signum: int, timeout: float) -> str:
    """Sends ``signum`` and returns the process's stderr once it has exited."""
    proc.send_signal(signum)
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the sweep did not stop within {timeout} s of "
                             f"{signal.Signals(signum).name}") from None


@pytest.mark.slow
def test_cli_stops_on_sigterm_like_ctrl_c_and_a_rerun_resumes(tmp_path):
    """SIGTERM (a batch scheduler's preemption) once the first run is recorded: the CLI
    keeps the finished rows, says how many and how to resume, and exits with 143
    (128 + SIGTERM) and no traceback; rerunning the command trains only the rest."""
    workdir = tmp_path / "w"
    flags = (*TINY_FLAGS, "--config.train.num_steps=200", f"--workdir={workdir}")
    proc = subprocess.Popen([sys.executable, "-m", "experiments.run", *flags], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not list(workdir.glob("runs/*/result.json")):
        time.sleep(0.02)
    stderr = _stop(proc, signal.SIGTERM, timeout=120)
    finished = {p.parent.name for p in workdir.glob("runs/*/result.json")}
    assert proc.returncode == 143, stderr
    assert 1 <= len(finished) < 5, finished
    assert (f"sweep interrupted by SIGTERM: {len(finished)} of 5 run(s) finished and recorded in "
            f"{workdir}; rerun the same command to resume") in stderr
    assert "Traceback" not in stderr
    assert set(results.read_table(workdir / "results.csv").run_id) == finished
    out = _cli(*flags)
    assert out.returncode == 0, out.stderr
    assert f"{5 - len(finished)} run(s) trained, {len(finished)} already finished" in out.stdout
    table = results.read_table(workdir / "results.csv")
    assert len(table) == 5 and table.run_id.is_unique and set(table.status) == {"ok"}


def _tiny_tabular(**overrides) -> ml_collections.ConfigDict:
    from configs import embeddings
    return with_overrides(ml_collections.ConfigDict(embeddings.get_config("tiny").to_dict()), overrides)


@pytest.mark.slow
def test_tabular_sweep_reports_auc_bytes_neighbours_and_saves_vocabularies(tmp_path):
    from odeformer.categorical.vocabulary import vocabularies_from_json
    summary = run_sweep(_tiny_tabular(), tmp_path, quiet=True)
    table = summary.table.set_index("model.embedding")
    assert summary.ran == 4 and set(table.status) == {"ok"}
    assert ((table.test_auc > 0) & (table.test_auc < 1)).all()
    data = runner.TaskCache().get_task(_tiny_tabular().task)
    vocab = data.categorical[0].cardinality
    # float32 rows x dim (the fourth-root rule gives 8 = width here), padding excluded
    assert table.loc["table", "bytes.c0"] == table.loc["onehot", "bytes.c0"] == vocab * 8 * 4
    m = -(-vocab // 8)
    assert table.loc["qr", "bytes.c0"] == (-(-vocab // m) + m) * 8 * 4
    assert table.loc["hashed", "bytes.c0"] == (m + 8) * 8 * 4
    for kind in table.index:
        assert 0 <= table.loc[kind, "p@10.c0"] <= 1 and 0 < table.loc[kind, "p@10_chance.c0"] < 0.2
        saved = vocabularies_from_json((tmp_path / "runs" / table.loc[kind, "run_id"] / "vocab.json")
                                       .read_text())
        assert saved["c0"].size == vocab


@pytest.mark.slow
def test_mesh_runs_match_the_single_device_run(tmp_path):
    import jax
    if jax.device_count() < 8:
        pytest.skip("needs 8 simulated CPU devices (conftest.py)")
    rows = []
    for data, model in ((1, 1), (2, 4)):
        c = _tiny_tabular(**{"mesh.data": data, "mesh.model": model,
                             "sweep.model.embedding": ("qr",)})
        summary = run_sweep(c, tmp_path / f"{data}x{model}", quiet=True)
        assert set(summary.table.status) == {"ok"}
        rows.append(summary.table.iloc[0])
    assert rows[1].devices == 8 and rows[0].devices == 1
    for column in ("train_loss", "test_loss", "test_auc", "p@10.c0"):
        np.testing.assert_allclose(rows[1][column], rows[0][column], rtol=2e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("microbatch", [0, 4])
def test_sequence_task_on_a_data_mesh_matches_the_single_device_run(tmp_path, microbatch):
    import jax
    if jax.device_count() < 2:
        pytest.skip("needs 2 simulated CPU devices (conftest.py)")
    rows = []
    for data in (1, 2):  # the token lookup of batch-split ids once raised ShardingTypeError
        c = tiny_config(**{"mesh.data": data, "train.microbatch": microbatch,
                           "sweep.solver.steps": (2,)})
        summary = run_sweep(c, tmp_path / str(data), quiet=True)
        assert set(summary.table.status) == {"ok"}, summary.table.status.tolist()
        rows.append(summary.table.iloc[0])
    assert rows[1].devices == 2
    for column in ("train_loss", "test_loss", "test_accuracy"):
        np.testing.assert_allclose(rows[1][column], rows[0][column], rtol=1e-5, err_msg=column)


def test_mesh_needing_more_devices_is_refused(tmp_path):
    import jax
    with pytest.raises(ValueError, match=f"mesh.data=64 x mesh.model=1 needs more devices than the "
                                         f"{jax.device_count()} available"):
        run_sweep(_tiny_tabular(**{"mesh.data": 64}), tmp_path, quiet=True)
    assert not tmp_path.joinpath("results.csv").exists()


@pytest.mark.slow
def test_two_processes_train_the_same_run_as_one(tmp_path):
    """jax.distributed on localhost: 2 processes x 2 CPU devices, mesh 2 x 2, Gloo collectives."""
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    flags = ("--config=configs/embeddings.py:tiny", "--config.mesh.data=2", "--config.mesh.model=2",
             "--config.sweep.model.embedding=('table',)", "--quiet")
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "experiments.run", *flags, f"--workdir={tmp_path / 'multi'}",
         f"--coordinator=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-2000:]
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    single = subprocess.run([sys.executable, "-m", "experiments.run", *flags,
                             f"--workdir={tmp_path / 'single'}"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    multi, one = results.load(tmp_path / "multi"), results.load(tmp_path / "single")
    assert len(multi) == len(one) == 1 and multi.devices[0] == one.devices[0] == 4
    assert multi.run_id[0] == one.run_id[0]
    for column in ("train_loss", "test_loss", "test_auc"):
        np.testing.assert_allclose(multi[column][0], one[column][0], rtol=1e-5)
    # only process 0 reports (Gloo itself prints connection lines from both)
    assert "run(s) trained" in outs[0][0] and "run(s) trained" not in outs[1][0]


@pytest.mark.slow
def test_tabular_runs_checkpoint_and_seeds_with_other_table_sizes_compile_apart(tmp_path):
    c = _tiny_tabular(**{"train.checkpoint_every": 3, "sweep.model.embedding": ("qr",),
                         "sweep.task": ml_collections.ConfigDict({"seed": (0, 1)})})
    planned = runner.plan(c)
    assert planned[0].tables != planned[1].tables  # the vocabularies differ with the seed
    summary = run_sweep(c, tmp_path, quiet=True)
    assert set(summary.table.status) == {"ok"} and not summary.table.compile_reused.any()


def test_batch_must_split_evenly_over_the_data_axis(tmp_path):
    import jax
    if jax.device_count() < 4:
        pytest.skip("needs 4 devices")
    with pytest.raises(ValueError, match="train.batch_size=30 must be a multiple of mesh.data=4"):
        run_sweep(_tiny_tabular(**{"mesh.data": 4, "train.batch_size": 30}), tmp_path, quiet=True)


@pytest.mark.slow
def test_evaluate_section_reports_solver_invariance_and_stability(tmp_path):
    specs = ("euler:2", "rk4:4", "dopri5:1e-4")  # the first is the training solver itself
    c = tiny_config(**{"solver.name": "euler", "evaluate.solvers": specs, "evaluate.stability": True,
                       "evaluate.examples": 8})
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"solver": {"steps": (2,)}, "seed": (0, 1)})
    c.lock()
    summary = run_sweep(c, tmp_path, quiet=True)
    table = results.load(tmp_path)
    assert summary.ran == 2 and set(table.status) == {"ok"}
    assert table.test_loss.nunique() == 2  # two different models...
    for _, row in table.iterrows():  # ...each evaluated with its own parameters
        np.testing.assert_allclose(row["test_accuracy@euler:2"], row.test_accuracy, rtol=1e-6)
        np.testing.assert_allclose(row["test_loss@euler:2"], row.test_loss, rtol=1e-6)
        assert row.invariance_gap == row.test_accuracy - row["test_accuracy@dopri5:1e-4"]
        assert row["nfe_forward@euler:2"] == 2 and row["nfe_forward@rk4:4"] == 16
        assert row["nfe_forward@dopri5:1e-4"] >= 7  # at least one Dopri5 step
        stability = row[[k for k in row.index if k.startswith("stability.")]]
        assert len(stability) >= 20 and np.isfinite(stability.astype(float)).all()
        assert row["stability.examples"] == 8 and row["stability.horizon"] == 1.0
        assert row["stability.lyapunov_max"] == pytest.approx(np.log(row["stability.jacobian_norm_max"]))
        assert row["stability.flow_gain_random_max"] <= 1.05 * row["stability.jacobian_norm_max"]
        assert row["stability.adv_loss"] > row["stability.random_loss"]
        assert 0 <= row["stability.adv_accuracy"] <= row["stability.clean_accuracy"] + 1 / 8
        assert row.evaluate_s > 0


@pytest.mark.parametrize("key, value, message", [
    ("evaluate.solvers", ("rk4:1e-6",), "evaluate.solvers entry 'rk4:1e-6': rk4 has no error estimate"),
    ("evaluate.solvers", ("euler:64", "heun"), "evaluate.solvers entry 'heun' must be a string 'name:steps'"),
    ("evaluate.epsilon", 0.0, "evaluate.epsilon=0.0 must be a finite number > 0"),
    ("evaluate.power_iterations", 1, "evaluate.power_iterations=1 must be an integer >= 2"),
])
def test_bad_evaluate_settings_are_refused_before_anything_is_written(tmp_path, key, value, message):
    with pytest.raises(ValueError) as error:
        run_sweep(tiny_config(**{key: value}), tmp_path / "w", quiet=True)
    assert message in str(error.value)
    assert not (tmp_path / "w").exists()


def test_cli_refuses_a_bad_evaluate_solver_before_writing(tmp_path):
    out = _cli(*TINY_FLAGS, f"--workdir={tmp_path / 'w'}", "--config.evaluate.solvers=('euler:0',)")
    assert out.returncode == 2
    assert "evaluate.solvers entry 'euler:0': steps must be an integer >= 1" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "w").exists()


def test_stability_settings_do_not_split_runs_that_measure_no_stability():
    c = tiny_config()
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"evaluate": {"epsilon": (1e-2, 1e-1)}})
    assert len(runner.plan(c)) == 1
    c.evaluate.stability = True
    assert len(runner.plan(c)) == 2


@pytest.mark.slow
def test_regularised_runs_report_their_integrals_and_share_one_compile_across_weights(tmp_path):
    c = tiny_config(**{"solver.adaptive": True, "solver.name": "bosh3"})
    c.unlock()
    c.sweep = ml_collections.ConfigDict({"train": {"kinetic": (0.0, 0.1, 1.0), "jacobian": (0.0, 0.1, 1.0)}})
    c.sweep_zip = (("train.kinetic", "train.jacobian"),)
    run_sweep(c, tmp_path, quiet=True)
    table = results.load(tmp_path).sort_values("train.kinetic").reset_index(drop=True)
    assert len(table) == 3 and set(table.status) == {"ok"}
    off, on = table.iloc[0], table.iloc[1:]
    assert np.isnan(off.train_kinetic) and np.isnan(off.train_jacobian)
    assert (on.train_kinetic > 0).all() and (on.train_jacobian > 0).all() and (table.train_nfe > 0).all()
    # Whether the regularisers are on is structural, their weights traced: 2 compiles, 3 runs.
    assert (table.compile_s > 0).sum() == 2 and on.compile_reused.sum() == 1
    logged = (tmp_path / "runs" / on.iloc[0].run_id / "metrics.jsonl").read_text().splitlines()
    assert {"kinetic", "jacobian", "cross_entropy", "nfe"} <= set(json.loads(logged[-1]))


def test_unknown_experiment_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="experiment='convergance' is not one of train, clustering, "
                                         "convergence"):
        run_sweep(tiny_config(experiment="convergance"), tmp_path, quiet=True)
    assert not any(tmp_path.iterdir())


def _bag_only(**overrides) -> ml_collections.ConfigDict:
    """The tiny tabular sweep on a task whose only feature is a bag: its values' mean cluster
    effect (2 clusters, 40 equally frequent values, up to 3 per row) sets the label, noiselessly."""
    return _tiny_tabular(**{"task.num_features": 0, "task.bag_features": 1, "task.bag_max_values": 3,
                            "task.cardinality": 40, "task.clusters": 2, "task.zipf": 0.0, "task.noise": 0.0,
                            "train.num_steps": 40, "train.batch_size": 64, "train.learning_rate": 0.02,
                            "train.warmup_steps": 5, "train.log_every": 20,
                            "sweep.model.embedding": ("table",), **overrides})


@pytest.mark.slow
def test_bag_features_train_with_each_combiner_and_report_their_neighbours(tmp_path):
    c = _tiny_tabular(**{"task.bag_features": 2, "sweep.model.embedding": ("table",),
                         "sweep.model.combiner": ("sum", "mean", "sqrtn")})
    summary = run_sweep(c, tmp_path, quiet=True)
    table = summary.table.set_index("model.combiner")
    assert summary.ran == 3 and set(table.status) == {"ok"} and len(set(table.run_id)) == 3
    assert np.isfinite(table[["train_loss", "test_loss", "test_auc"]].to_numpy()).all()
    data = runner.TaskCache().get_task(c.task)
    for name in ("c0", "c1", "b0", "b1"):  # the bags' vectors are scored like single features'
        assert (table[f"bytes.{name}"] > 0).all() and table[f"p@10.{name}"].between(0, 1).all(), name
    assert (table["bytes.b0"] == data.bags[0].cardinality * 8 * 4).all()  # rows x dim 8 x float32


def test_a_model_learns_a_label_only_a_weighted_bag_carries(tmp_path):
    summary = run_sweep(_bag_only(**{"task.bag_weighted": True, "model.combiner": "mean"}), tmp_path,
                        quiet=True)
    row = summary.table.iloc[0]
    assert row.status == "ok"
    assert row.test_accuracy > 0.8 and row.test_auc > 0.9  # chance: 0.5
    assert row["p@10.b0"] > row["p@10_chance.b0"] + 0.1  # values of one cluster end up close
