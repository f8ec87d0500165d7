"""The benchmarks' job runner (bench/_jobs.py): a worker killed from outside costs a retry,
never a run that waits forever for its result."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _jobs import jobs_as_done, map_jobs

# Jobs live in a module of their own under tmp_path: spawned workers import it by name.
HELPER = """
import os
import signal
from pathlib import Path


def square_dying_once(job):
    # Kills its own worker the first time it sees a marked job, as the OOM killer would.
    x, marker = job
    if x == 2 and not Path(marker).exists():
        Path(marker).write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def always_dying(job):
    os.kill(os.getpid(), signal.SIGKILL)


def failing(job):
    raise ValueError(f"bad job {job}")
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "jobs_helper.py").write_text(textwrap.dedent(HELPER))
    monkeypatch.syspath_prepend(str(tmp_path))
    import jobs_helper

    yield jobs_helper
    sys.modules.pop("jobs_helper", None)


def test_a_killed_worker_costs_a_retry_and_every_result_comes_back(helper, tmp_path: Path):
    marker = str(tmp_path / "died")
    jobs = [(x, marker) for x in range(5)]
    assert map_jobs(helper.square_dying_once, jobs, 2, one_each=True) == [0, 1, 4, 9, 16]
    assert Path(marker).read_text() == "died once"  # the job's worker was killed, once


def test_results_come_with_their_job_index(helper, tmp_path: Path):
    marker = str(tmp_path / "died")
    got = dict(jobs_as_done(helper.square_dying_once, [(3, marker), (4, marker)], 2))
    assert got == {0: 9, 1: 16}


def test_a_job_that_always_kills_its_worker_ends_the_run_with_a_clear_error(helper):
    with pytest.raises(RuntimeError, match="3 pools in a row lost a worker"):
        map_jobs(helper.always_dying, [1, 2], 2, tries=3)


def test_a_job_raising_is_not_retried_and_its_error_reaches_the_caller(helper):
    with pytest.raises(ValueError, match="bad job 7"):
        map_jobs(helper.failing, [7], 1)
