"""Execution backends: where the worker pool's workers run. Both run the same worker loop
(:func:`speechnas.search.drivers.pool.work`), which claims trials through the study.

- ``local``: spawned processes on this machine (``run_processes`` of the pool);
- ``ray``: Ray tasks (:func:`run_ray`), each with ``threads`` CPUs of its own, on a local Ray
  started for the search (``ray.init(num_cpus=workers × threads)``) or on a running cluster
  (``ray_address``: ``auto`` or ``HOST:PORT``). A task whose worker dies (killed, its node lost)
  has its running trial marked "interrupted" with the reason, and is started again once, so
  the slot is run again and the search finishes. Workers on other nodes need the study's
  storage (a database URL, not an SQLite file) and the output folder (checkpoints).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from speechnas.search.study import SearchStudy, release_worker

if TYPE_CHECKING:
    from speechnas.search.progress import Progress

log = logging.getLogger(__name__)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(
            "backend: ray needs Ray, which is not installed; pip install 'speechnas[ray]'"
        ) from None
    return ray


def _init(ray: Any, address: str | None, num_cpus: int) -> None:
    if address is None:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        return
    try:
        ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError) as e:
        raise ValueError(
            f"ray_address: cannot connect to a Ray cluster at {address!r}: {e}; start one with "
            "'ray start --head' or leave ray_address unset for a local Ray"
        ) from None


def _call(worker: Callable[[int], None], index: int) -> None:
    worker(index)


def run_ray(
    worker: Callable[[int], None],
    *,
    workers: int,
    cpus_per_worker: int,
    address: str | None,
    ss: SearchStudy,
    progress: Progress,
    restarts: int = 1,
) -> None:
    """Runs ``worker(k)`` for k < ``workers`` as Ray tasks of ``cpus_per_worker`` CPUs each and
    returns when all have ended; a dead task's running trials are released (see
    :func:`~speechnas.search.study.release_worker`) and the task started again up to
    ``restarts`` times. A RuntimeError names the workers that failed for good."""
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        _init(ray, address, workers * cpus_per_worker)
    try:
        task = ray.remote(_call).options(num_cpus=cpus_per_worker, max_retries=0)
        running = {task.remote(worker, k): k for k in range(workers)}
        left = dict.fromkeys(range(workers), restarts)
        failed: list[tuple[int, str]] = []
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            progress.update(ss)
            for ref in done:
                k = running.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as e:
                    why = f"worker {k} failed: {type(e).__name__}: {str(e).splitlines()[0]}"
                    numbers = release_worker(ss, k, why)
                    log.warning("%s; trials %s will run again", why, numbers)
                    if left[k] > 0:
                        left[k] -= 1
                        running[task.remote(worker, k)] = k
                    else:
                        failed.append((k, why))
        progress.update(ss)
        if failed:
            raise RuntimeError(f"search workers failed on Ray: {failed}")
    finally:
        if started:
            ray.shutdown()


__all__ = ["run_ray"]
