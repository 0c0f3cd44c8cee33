"""Executing a sweep's runs one at a time or on several worker threads of one process.

Small models keep a CPU core busy with per-op dispatch while the other cores idle, and
XLA compiles on one core; with ``workers > 1`` one run compiles while another trains.
JAX releases the GIL while it compiles and while a computation runs, and its context
managers (``jax.set_mesh``) are per thread. Rows are handed back to the caller's thread
as runs finish, so only that thread writes results.

Ctrl-C (KeyboardInterrupt in the caller's thread) sets a stop event that each running run
checks between training steps; the rows of runs that finished before it are still handed
back, and then the interrupt is raised again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from typing import Any, TypeVar

T = TypeVar("T")


class Stopped(BaseException):
    """Raised inside a run that saw the stop event; like KeyboardInterrupt, it is not an
    ``Exception``, so it is never recorded as the run's failure."""


class BuildOnce:
    """Values built once per key, also when several threads ask for the same key at
    the same time (the later ones wait for the first one's build)."""

    def __init__(self):
        self._values: dict[Any, Any] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key, build: Callable[[], T]) -> tuple[T, bool]:
        """``(value, built)``: ``built`` is True in the one call that ran ``build``."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._values:
                return self._values[key], False
            value = build()
            self._values[key] = value
            return value, True


def check_workers(workers: int, processes: int) -> None:
    """Raises ValueError unless ``workers`` is an int >= 1, and 1 when several processes
    run the sweep together (their collectives must run in the same order everywhere)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an integer >= 1")
    if workers > 1 and processes > 1:
        raise ValueError(f"workers={workers} needs a single process; this sweep runs on "
                         f"{processes} processes, so use workers=1")


def execute(items: Iterable[T], attempt: Callable[[T, threading.Event], dict],
            finish: Callable[[dict], None], workers: int) -> None:
    """Calls ``attempt(item, stop)`` for every item, on ``workers`` threads, and
    ``finish(row)`` in this thread with each returned row as soon as it is known (in
    item order with one worker, in order of completion with several).

    ``attempt`` must return a row for any ``Exception`` of its own; anything else it
    raises (KeyboardInterrupt, :class:`Stopped`) ends the sweep.
    """
    stop = threading.Event()
    if workers == 1:
        for item in items:
            finish(attempt(item, stop))
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="odeformer-run") as pool:
        futures = [pool.submit(attempt, item, stop) for item in items]
        unhandled = set(futures)
        try:
            for future in as_completed(futures):
                finish(future.result())
                unhandled.discard(future)
        except BaseException:
            stop.set()
            for future in unhandled:
                future.cancel()
            wait(unhandled)
            for future in unhandled:  # finished after the interrupt: keep their rows
                if not future.cancelled() and future.exception() is None:
                    finish(future.result())
            raise
