"""Worker threads: values built once, rows handed back in the caller's thread, Ctrl-C."""

import os
import signal
import threading
import time

import pytest

from odeformer.experiment.executor import (
    BuildOnce,
    Stopped,
    Terminated,
    check_workers,
    execute,
    sigterm_as_interrupt,
    start_order,
)

WAIT_S = 30  # a generous bound on waits that take milliseconds when the code is right


def test_concurrent_requests_for_one_key_build_it_once():
    cache, calls, barrier = BuildOnce(), [], threading.Barrier(4)

    def build():
        calls.append(1)
        time.sleep(0.05)  # the other threads arrive while this build runs
        return object()

    def request(out, i):
        barrier.wait(WAIT_S)
        out[i] = cache.get("step", build)

    out = [None] * 4
    threads = [threading.Thread(target=request, args=(out, i)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert len(calls) == 1
    assert len({id(value) for value, _ in out}) == 1
    assert sorted(built for _, built in out) == [False, False, False, True]
    value, built = cache.get("other", lambda: 7)
    assert (value, built) == (7, True) and len(calls) == 1


def test_a_failed_build_is_retried_by_the_next_request():
    cache = BuildOnce()
    with pytest.raises(RuntimeError, match="no compiler"):
        cache.get("k", lambda: (_ for _ in ()).throw(RuntimeError("no compiler")))
    assert cache.get("k", lambda: 3) == (3, True)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_every_row_reaches_finish_in_the_callers_thread(workers):
    caller, seen = threading.current_thread(), []
    release_first = threading.Event()

    def attempt(item, stop):
        assert not stop.is_set()
        if item == 0 and workers > 1:  # item 0 finishes last: rows arrive as runs end
            release_first.wait(WAIT_S)
        return {"run_id": item}

    def finish(row):
        assert threading.current_thread() is caller
        seen.append(row["run_id"])
        if len(seen) == 4:
            release_first.set()

    execute(range(5), attempt, finish, workers)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    if workers == 1:
        assert seen == [0, 1, 2, 3, 4]
    else:
        assert seen[-1] == 0


def test_interrupt_stops_running_items_and_keeps_rows_that_finished():
    started = threading.Barrier(3)
    stop_seen, finished = threading.Event(), []

    def run_item(item, stop):
        started.wait(WAIT_S)  # all three are running before anything finishes
        if item == "fast":
            return {"run_id": item}
        if not stop.wait(WAIT_S):
            raise AssertionError("the stop event was never set")
        if item == "training":  # a training run: checks the event between steps
            stop_seen.set()
            raise Stopped(item)
        return {"run_id": item}  # e.g. a study's measurement, which finishes anyway

    def finish(row):
        finished.append(row["run_id"])
        if row["run_id"] == "fast":
            raise KeyboardInterrupt  # Ctrl-C while the first row is being recorded

    with pytest.raises(KeyboardInterrupt):
        execute(["fast", "training", "study"], run_item, finish, workers=3)
    assert stop_seen.is_set()
    assert finished == ["fast", "study"]  # each row once; the stopped run has none


def test_an_error_while_recording_ends_the_sweep_and_keeps_the_other_finished_rows():
    started = threading.Barrier(2)
    finished = []

    def run_item(item, stop):
        started.wait(WAIT_S)  # both are running, so neither can be cancelled
        return {"run_id": item}

    def finish(row):
        finished.append(row["run_id"])
        if len(finished) == 1:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        execute(["a", "b"], run_item, finish, workers=2)
    assert sorted(finished) == ["a", "b"]  # the failing row is not handed over twice


def test_sigterm_raises_a_keyboard_interrupt_in_the_main_thread_only_within_the_context():
    def previous(signum, frame):
        raise AssertionError("the handler set before the context ran")

    saved = signal.signal(signal.SIGTERM, previous)
    try:
        with pytest.raises(Terminated, match="SIGTERM"), sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(WAIT_S)  # the handler runs at the next bytecode; never sleeps this long
        assert issubclass(Terminated, KeyboardInterrupt)
        assert signal.getsignal(signal.SIGTERM) is previous
        failures = []

        def off_the_main_thread():  # Python sets handlers from the main thread only
            try:
                with sigterm_as_interrupt():
                    failures.append(signal.getsignal(signal.SIGTERM) is not previous)
            except Exception as error:
                failures.append(error)

        thread = threading.Thread(target=off_the_main_thread)
        thread.start()
        thread.join(WAIT_S)
        assert failures == [False]
    finally:
        signal.signal(signal.SIGTERM, saved)


def test_items_still_queued_when_interrupted_never_run():
    ran = []

    def run_item(item, stop):
        ran.append(item)
        if item == 0:
            return {"run_id": item}
        if not stop.wait(WAIT_S):  # items 1 and (perhaps) 2 hold both threads until then
            raise AssertionError("the stop event was never set")
        return {"run_id": item}

    def finish(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(range(10), run_item, finish, workers=2)
    assert {0, 1} <= set(ran) <= {0, 1, 2}


@pytest.mark.parametrize("workers, processes, message", [
    (0, 1, "workers=0 must be an integer >= 1"),
    (-2, 1, "workers=-2 must be an integer >= 1"),
    (1.5, 1, "workers=1.5 must be an integer >= 1"),
    (True, 1, "workers=True must be an integer >= 1"),
    (2, 4, "workers=2 needs a single process; this sweep runs on 4 processes"),
])
def test_bad_worker_counts_are_refused(workers, processes, message):
    with pytest.raises(ValueError, match=message):
        check_workers(workers, processes)
    check_workers(1, processes)


def _order(items, workers):
    """start_order over (name, structure, cost) triples, returning the names."""
    return [name for name, _, _ in start_order(items, lambda i: i[1], lambda i: i[2], workers)]


def test_start_order_is_grid_order_for_one_worker():
    items = [("a", "S", 1.0), ("b", "S", 9.0), ("c", "T", 5.0)]
    assert _order(items, 1) == ["a", "b", "c"]


def test_start_order_starts_the_costliest_first_and_keeps_ties_in_grid_order():
    items = [("small", "A", 1.0), ("big", "B", 9.0), ("mid1", "C", 5.0), ("mid2", "D", 5.0)]
    assert _order(items, 2) == ["big", "mid1", "mid2", "small"]


def test_start_order_keeps_a_run_from_starting_beside_the_compile_of_its_structure():
    # a2 would wait, its core idle, for a1's compile: b1 starts beside a1 instead.
    items = [("a1", "A", 10.0), ("a2", "A", 9.0), ("b1", "B", 1.0)]
    assert _order(items, 2) == ["a1", "b1", "a2"]
    # Once the compile is two starts back, a run of that structure may start (2 workers).
    items = [("a1", "A", 10.0), ("a2", "A", 9.0), ("b1", "B", 2.0), ("c1", "C", 1.0)]
    assert _order(items, 2) == ["a1", "b1", "a2", "c1"]
    # With 3 workers the compile stays in the window of the last 2 starts.
    assert _order(items, 3) == ["a1", "b1", "c1", "a2"]


def test_start_order_takes_the_costliest_when_every_remaining_run_would_wait():
    items = [("a1", "A", 3.0), ("a2", "A", 2.0), ("a3", "A", 1.0)]
    assert _order(items, 2) == ["a1", "a2", "a3"]
    # Only a structure's first run compiles: a2 after a1 does not hold back a3.
    items = [("a1", "A", 4.0), ("b1", "B", 3.0), ("a2", "A", 2.0), ("a3", "A", 1.0)]
    assert _order(items, 2) == ["a1", "b1", "a2", "a3"]
