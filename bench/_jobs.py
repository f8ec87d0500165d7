"""Shared by the benchmarks that run trainings side by side: jobs in spawned worker processes
that survive a worker's death.

``multiprocessing.Pool`` never delivers the result of a worker killed from outside (by the
kernel's out-of-memory killer, or by hand), so a benchmark waited for it forever. A
``concurrent.futures`` pool reports the broken pool instead; here the jobs not yet delivered are
then submitted to a new pool, and the run goes on.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

J = TypeVar("J")
R = TypeVar("R")

TRIES = 3  # pools in a row that may break before any job ends


def die_with_parent() -> None:
    """Ends a worker when its parent dies (Linux): a benchmark killed alone otherwise leaves its
    workers training to the end for results nobody reads."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def jobs_as_done(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int,
    *,
    one_each: bool = False,
    tries: int = TRIES,
) -> Iterator[tuple[int, R]]:
    """``(index, fn(jobs[index]))`` for every job, in the order they end, from ``workers``
    spawned processes (``one_each``: a fresh process per job, so no memory carries over).

    A worker that dies breaks its whole pool: the jobs not yet delivered are submitted again to
    a new one. After ``tries`` pools in a row broke without delivering anything, a RuntimeError
    says so. An exception a job raises is not retried: it is a bug to see, not a lost worker.
    Stopping early (Ctrl-C, an error, the caller closing the iterator) ends the workers at once
    instead of waiting for the jobs in flight.
    """
    ctx = multiprocessing.get_context("spawn")
    left = set(range(len(jobs)))
    barren = 0  # pools in a row that broke before delivering a result
    while left:
        delivered = 0
        with ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            max_tasks_per_child=1 if one_each else None,
            initializer=die_with_parent,
        ) as pool:
            futures = {pool.submit(fn, jobs[i]): i for i in sorted(left)}
            try:
                for future in as_completed(futures):
                    try:
                        result = future.result()
                    except BrokenProcessPool:
                        continue
                    left.discard(futures[future])
                    delivered += 1
                    yield futures[future], result
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                for child in multiprocessing.active_children():
                    child.terminate()
                raise
        if left:
            barren = 0 if delivered else barren + 1
            if barren >= tries:
                raise RuntimeError(
                    f"{tries} pools in a row lost a worker before any job ended; {len(left)} "
                    "jobs left undone (run one alone to see why)"
                )
            print(f"a worker died: {len(left)} jobs submitted again", file=sys.stderr, flush=True)


def map_jobs(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int,
    *,
    one_each: bool = False,
    tries: int = TRIES,
) -> list[R]:
    """``[fn(job) for job in jobs]`` in the jobs' order, computed as ``jobs_as_done`` does."""
    out: dict[int, R] = dict(jobs_as_done(fn, jobs, workers, one_each=one_each, tries=tries))
    return [out[i] for i in range(len(jobs))]


__all__ = ["die_with_parent", "jobs_as_done", "map_jobs"]
