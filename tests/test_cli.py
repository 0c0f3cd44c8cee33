"""The command line: overrides of swept keys, refused values, variants and the dry run."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from odeformer.experiment import results

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, workdir=None, env=None):
    flags = list(args) + ([f"--workdir={workdir}"] if workdir is not None else [])
    return subprocess.run([sys.executable, "-m", "experiments.run", "--quiet", *flags],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env=None if env is None else {**os.environ, **env})


@pytest.mark.parametrize("override, message", [
    ("--config.solver.name=rk99", "error: solver.name='rk99' is not one of euler, heun"),
    ("--config.solver.steps=0", "error: solver.steps=0 must be an integer >= 1"),
    ("--config.model.family=lstm", "error: model.family='lstm' is not one of ode, discrete"),
    ("--config.train.warmup_steps=-1", "error: train.warmup_steps=-1 must be an integer >= 0"),
])
def test_an_invalid_value_is_refused_whether_or_not_its_key_is_swept(override, message, tmp_path):
    """solver.name, solver.steps and model.family are swept by configs/quick.py; warmup is not."""
    result = _cli("--config=configs/quick.py:tiny", override, workdir=tmp_path / "runs")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_an_unknown_variant_is_refused_naming_the_variants():
    result = _cli("--config=configs/quick.py:huge", "--dry_run")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("configs/quick.py has no variant 'huge'; variants: tiny")


def test_dry_run_prints_the_grid_and_writes_nothing(tmp_path):
    result = _cli("--config=configs/quick.py:tiny", "--dry_run", workdir=tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("quick_tiny: 5 run(s), 3 compiled train step(s), total cost 17 x")
    assert lines[1].split() == ["run_id", "model.family", "solver.name", "solver.steps", "compile",
                                "params", "cost"]
    assert len(lines) == 7
    assert not (tmp_path / "runs").exists()


def test_an_override_of_a_swept_key_replaces_the_axis_in_a_real_run(tmp_path):
    """``--config.solver.name=rk4`` on a sweep over euler and rk4 trains rk4 only, and the
    output says so; an override no run reads is named too."""
    result = _cli("--config=configs/quick.py:tiny", "--config.solver.name=rk4",
                  "--config.model.family=ode", "--config.solver.rtol=1e-9", workdir=tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    for line in ("note: --config.solver.name='rk4' replaces the sweep axis solver.name=('euler', 'rk4')",
                 "note: --config.model.family='ode' replaces the sweep axis model.family=('ode', "
                 "'discrete')",
                 "note: --config.solver.rtol is read by no run of this sweep (each run resets or drops it)"):
        assert line in result.stdout
    table = results.read_table(tmp_path / "runs" / "results.csv")
    assert sorted(table["solver.steps"]) == [2, 4] and set(table["status"]) == {"ok"}
    assert "solver.name" not in table
    assert table["nfe_forward"].tolist() == [4 * s for s in table["solver.steps"]]


def _cache_entries(folder: Path) -> dict[str, int]:
    """Each entry's name and modification time (an entry read back and rejected would be
    compiled and written again under its name)."""
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.exists() else {}


def test_a_second_process_reads_the_compiled_steps_back_with_the_same_results(tmp_path):
    """The first run writes its train and eval steps to the cache folder; a run into a fresh
    workdir writes nothing (every program it needs is read back: with no minimum compile time,
    a miss would be written) and its results are bit for bit the first run's. A dry run does
    not touch the cache."""
    cache = tmp_path / "cache"
    config = ("--config=configs/quick.py:tiny", "--config.sweep.model.family=('ode',)",
              "--config.sweep.solver.name=('rk4',)", f"--compilation_cache_dir={cache}")
    first = _cli(*config, workdir=tmp_path / "a")
    assert first.returncode == 0, first.stderr
    written = _cache_entries(cache)
    assert any(name.startswith("jit_train_step-") for name in written)
    assert any(name.startswith("jit_eval_step-") for name in written)
    second = _cli(*config, workdir=tmp_path / "b")
    assert second.returncode == 0, second.stderr
    assert _cache_entries(cache) == written
    fresh = tmp_path / "untouched"
    assert _cli(*config[:-1], f"--compilation_cache_dir={fresh}", "--dry_run").returncode == 0
    assert not fresh.exists()
    a, b = (results.read_table(tmp_path / w / "results.csv") for w in ("a", "b"))
    for column in ("run_id", "train_loss", "test_loss", "test_accuracy", "nfe_forward"):
        pd.testing.assert_series_equal(a[column], b[column])


def test_no_compilation_cache_writes_nothing_and_refuses_a_cache_folder(tmp_path):
    """Not even where JAX_COMPILATION_CACHE_DIR, which JAX reads by itself, names a folder."""
    cache = tmp_path / "cache"
    off = _cli("--config=configs/quick.py:tiny", "--config.sweep.model.family=('ode',)",
               "--config.sweep.solver.name=('euler',)", "--nocompilation_cache", workdir=tmp_path / "a",
               env={"JAX_COMPILATION_CACHE_DIR": str(cache)})
    assert off.returncode == 0, off.stderr
    assert not _cache_entries(cache)
    both = _cli("--config=configs/quick.py:tiny", "--nocompilation_cache", f"--compilation_cache_dir={cache}",
                workdir=tmp_path / "b")
    assert both.returncode == 2
    assert "--compilation_cache_dir names a cache that --nocompilation_cache turns off" in both.stderr
    assert not (tmp_path / "b").exists() and not cache.exists()


def test_a_cache_folder_that_cannot_be_made_is_a_note_and_the_sweep_runs(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _cli("--config=configs/quick.py:tiny", "--config.sweep.model.family=('ode',)",
                  "--config.sweep.solver.name=('euler',)", f"--compilation_cache_dir={blocker / 'cache'}",
                  workdir=tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    assert "note: the compilation cache is off: " in result.stdout
    assert (tmp_path / "runs" / "results.csv").exists()


def test_the_sweep_command_is_library_code_a_notebook_can_call(tmp_path, capsys):
    """``sweep_command`` is all of ``experiments.run`` but its flags: a pinned axis is a note and the
    dry run prints the grid without it, writing nothing."""
    from configs import quick
    from odeformer.experiment.cli import SweepOptions, sweep_command

    config = quick.get_config("tiny")
    overrides = {"solver.name": "rk4"}
    config.solver.name = "rk4"
    options = SweepOptions(workdir=str(tmp_path / "runs"), dry_run=True, reuse_host_memory=False)
    assert sweep_command(config, overrides, options) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "note: --config.solver.name='rk4' replaces the sweep axis solver.name=('euler', 'rk4')"
    assert out[1].startswith("quick_tiny: 3 run(s)")  # of 5: the euler runs are gone
    assert "solver.name" not in out[2] and len(out) == 6
    assert not (tmp_path / "runs").exists()
