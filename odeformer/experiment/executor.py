"""Executing a sweep's runs one at a time or on several worker threads of one process.

Small models keep a CPU core busy with per-op dispatch while the other cores idle, and
XLA compiles on one core; with ``workers > 1`` one run compiles while another trains.
JAX releases the GIL while it compiles and while a computation runs, and its context
managers (``jax.set_mesh``) are per thread. Each run writes its own folder; rows are
handed back to the caller's thread as runs finish, so only that thread records rows
(``result.json``, ``results.csv``).

Ctrl-C (KeyboardInterrupt in the caller's thread) sets a stop event that each running run
checks between training steps and before its evaluation (a compile in progress finishes
first); the rows of runs that finished anyway are still recorded, and then the interrupt
is raised again. Within :func:`sigterm_as_interrupt`, SIGTERM (how batch schedulers
preempt a job) does the same.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from typing import Any, TypeVar

T = TypeVar("T")


class RunFailed(RuntimeError):
    """A run that could not finish (it diverged, or its solver failed); final, unlike a crash:
    its message becomes the row's ``status = "failed: ..."``."""


class Stopped(BaseException):
    """Raised inside a run that saw the stop event; like KeyboardInterrupt, it is not an
    ``Exception``, so it is never recorded as the run's failure."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by :func:`sigterm_as_interrupt`; a
    KeyboardInterrupt, so that it stops a sweep as Ctrl-C does."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """Within this context SIGTERM raises :class:`Terminated` in the main thread instead of
    ending the process at once; the previous handler is restored on exit.

    Python runs signal handlers in the main thread only, and only the main thread may set
    them: called from another thread this does nothing (SIGTERM keeps its handler).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:  # None: a handler set outside Python, which Python can only reset to the default
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


class BuildOnce:
    """Values built once per key, also when several threads ask for the same key at
    the same time: the later ones wait for the first one's build.

    A build must not call ``get`` on the same instance (the key's lock is held while it
    runs). A build that raises stores nothing, so each waiting request tries it again.
    """

    def __init__(self):
        self._values: dict[Any, Any] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key, build: Callable[[], T]) -> tuple[T, bool]:
        """The value stored under ``key``, built by ``build()`` if there is none yet.

        Returns:
          ``(value, built)``: ``built`` is True in the one call that ran ``build``.
        """
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


def start_order(items: Sequence[T], structure: Callable[[T], Hashable], cost: Callable[[T], float],
                workers: int) -> list[T]:
    """The order in which ``execute`` should start ``items`` on ``workers`` threads.

    Items of one ``structure`` share a compile (``BuildOnce``): one started beside the
    item that compiles its structure waits for that compile with its core idle. So the
    costliest item goes first (longest-processing-time first: a long item left for last
    would run alone at the end), except that an item is passed over, for now, while its
    structure's first item is among the ``workers - 1`` items started just before it; if
    every remaining item is passed over, the costliest is taken anyway. With one worker,
    or for items of equal cost and distinct structures, the order is unchanged (the sort
    is stable). ``cost`` is an estimate; it only orders the items.
    """
    if workers == 1:
        return list(items)
    keys = [structure(item) for item in items]
    remaining = sorted(range(len(items)), key=lambda i: cost(items[i]), reverse=True)
    started, first = [], {}  # first[key]: the start position of the run that compiles key
    while remaining:
        compiling = {key for key, j in first.items() if j >= len(started) - (workers - 1)}
        pick = remaining.pop(next((n for n, i in enumerate(remaining) if keys[i] not in compiling), 0))
        first.setdefault(keys[pick], len(started))
        started.append(pick)
    return [items[i] for i in started]


def execute(items: Iterable[T], run_item: Callable[[T, threading.Event], dict],
            finish: Callable[[dict], None], workers: int) -> None:
    """Runs every item and hands each row to ``finish`` in this thread as soon as it is known.

    Args:
      items: what to run.
      run_item: ``run_item(item, stop) -> row``; it returns a row for any ``Exception`` of
        its own. Anything else it raises (KeyboardInterrupt, :class:`Stopped`) ends the
        sweep. ``stop`` is set once the sweep is interrupted.
      finish: called with each row, in item order with one worker and in order of
        completion with several. If it raises, the sweep ends with that error after the
        rows of runs that had already finished are handed over.
      workers: threads; 1 runs the items in this thread.
    """
    stop = threading.Event()
    if workers == 1:
        for item in items:
            finish(run_item(item, stop))
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="odeformer-run") as pool:
        unhandled = set()
        try:
            for item in items:
                unhandled.add(pool.submit(run_item, item, stop))
            for future in as_completed(list(unhandled)):
                unhandled.discard(future)
                finish(future.result())
        except BaseException:
            for future in unhandled:  # first, so no queued item starts once runs stop
                future.cancel()
            stop.set()
            wait(unhandled)
            for future in unhandled:  # finished after the interrupt or error: keep their rows
                if not future.cancelled() and future.exception() is None:
                    try:
                        finish(future.result())
                    except Exception:  # the original error is the one to report
                        pass
            raise
