"""Worker threads: values built once, rows handed back in the caller's thread, Ctrl-C."""

import threading
import time

import pytest

from odeformer.workers import BuildOnce, Stopped, check_workers, execute

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
        return {"run_id": item, "thread": threading.current_thread().name}

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
    started_slow, stop_seen, finished = threading.Event(), threading.Event(), []

    def attempt(item, stop):
        if item == "slow":  # a long training run: checks the event between steps
            started_slow.set()
            if not stop.wait(WAIT_S):
                raise AssertionError("the stop event was never set")
            stop_seen.set()
            raise Stopped(item)
        started_slow.wait(WAIT_S)
        return {"run_id": item}

    def finish(row):
        finished.append(row["run_id"])
        if len(finished) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the first row is being recorded

    with pytest.raises(KeyboardInterrupt):
        execute(["slow", "fast"], attempt, finish, workers=2)
    assert stop_seen.is_set()
    # The interrupted recording of "fast" is done again; "slow" never reports a row.
    assert finished == ["fast", "fast"]


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
