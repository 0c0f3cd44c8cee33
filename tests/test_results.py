"""Atomic writes, metrics truncation, loading several workdirs."""

import json
import re
import warnings

import pytest

from odeformer.experiment import results


def test_write_atomic_replaces_whole_file_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "a" / "f.txt"
    results.write_atomic(path, "one")
    results.write_atomic(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_truncate_metrics_drops_steps_after_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    for step in range(1, 6):
        results.append_metrics(path, {"step": step, "loss": 1.0 / step})
    results.truncate_metrics(path, 3)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [1, 2, 3]


def test_a_torn_metrics_line_is_dropped_not_fatal(tmp_path):
    path = tmp_path / "metrics.jsonl"
    results.append_metrics(path, {"step": 1, "loss": 1.0})
    with open(path, "a") as f:
        f.write('{"step": 2, "lo')  # killed mid-write
    results.truncate_metrics(path, 0)
    assert path.read_text() == ""
    results.append_metrics(path, {"step": 1, "loss": 1.0})
    results.truncate_metrics(path, 5)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [1]


def test_crashed_runs_are_retried_failed_runs_are_not(tmp_path):
    results.record(tmp_path, {"run_id": "a", "status": "failed: non-finite loss at step 3"})
    results.record(tmp_path, {"run_id": "b", "status": "failed: OSError: disk full", "crashed": True})
    assert results.is_finished(tmp_path, "a") and not results.is_finished(tmp_path, "b")


@pytest.mark.parametrize("content", [b'{"run_id": "a", "status": "o', b"", b"\xff\xfe{", b"[1, 2]",
                                     b'{"status": "ok"}'])
def test_an_unreadable_record_is_unfinished_skipped_by_load_with_a_warning_naming_it(tmp_path, content):
    """Cut short (a full disk, a crash while copying), not UTF-8, or JSON that is not an
    object with a run_id: the run counts as unfinished (the sweep reruns it), ``load``
    skips the file and names it, and ``write_table`` rebuilds the table without it."""
    results.record(tmp_path, {"run_id": "b", "status": "ok"})
    path = results.record_path(tmp_path, "a")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert results.is_unreadable(tmp_path, "a") and not results.is_finished(tmp_path, "a")
    assert not results.is_unreadable(tmp_path, "b") and not results.is_unreadable(tmp_path, "c")
    with pytest.warns(UserWarning, match=f"skipped the unreadable run record {re.escape(str(path))} "):
        assert list(results.load(tmp_path).run_id) == ["b"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(results.write_table(tmp_path).run_id) == ["b"]
    assert list(results.read_table(tmp_path / "results.csv").run_id) == ["b"]
    results.record(tmp_path, {"run_id": "a", "status": "ok"})  # the rerun's record replaces it
    assert results.is_finished(tmp_path, "a") and not results.is_unreadable(tmp_path, "a")


def test_load_merges_workdirs_and_rebuilds_the_table(tmp_path):
    for i, workdir in enumerate([tmp_path / "s0", tmp_path / "s1"]):
        results.record(workdir, {"run_id": f"r{i}", "status": "ok", "test_accuracy": 0.5 + i / 10})
        results.write_table(workdir)
    results.record(tmp_path / "s1", {"run_id": "r2", "status": "failed: x"})
    merged = results.load([tmp_path / "s0", str(tmp_path / "s1")])
    assert sorted(merged.run_id) == ["r0", "r1", "r2"]
    assert results.is_finished(tmp_path / "s1", "r2") and not results.is_finished(tmp_path / "s0", "r2")
    table = results.read_table(tmp_path / "s1" / "results.csv")
    assert list(table.run_id) == ["r1"]  # the table is rebuilt on demand, records are the truth
    assert results.load(tmp_path / "empty").empty


def test_load_adds_unswept_config_values_from_each_runs_config(tmp_path):
    import pytest
    for i, cardinality in enumerate((100, 300)):
        config = {"task": {"cardinality": cardinality, "name": "synthetic"}, "seed": i}
        results.write_atomic(results.run_dir(tmp_path, f"r{i}") / "config.json", json.dumps(config))
        results.record(tmp_path, {"run_id": f"r{i}", "status": "ok", "seed": 7})
    table = results.load(tmp_path, with_config=["task.cardinality", "seed"]).set_index("run_id")
    assert table.loc["r0", "task.cardinality"] == 100 and table.loc["r1", "task.cardinality"] == 300
    assert (table["seed"] == 7).all()  # a column the row already has is kept as recorded
    with pytest.raises(KeyError, match="run r0's config has no key 'task.width'"):
        results.load(tmp_path, with_config=["task.width"])
