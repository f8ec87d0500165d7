"""The worker pool on a real local Ray (``ray.init`` with 2 CPUs): the same trials as local
processes, and a worker killed with ``kill -9`` in the middle of a trial has its trial marked
interrupted and run again, without a ``--resume``."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from rich.console import Console
from search_helpers import search_config, search_process, write_search_yaml

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.config import SearchConfig
from speechnas.search.runner import run_search
from speechnas.search.study import INTERRUPTED

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'speechnas[ray]'")

SLOTS = 4
FIDELITY = {"rungs": [{"minutes": 5, "steps": 2}], "candidates": SLOTS}


def _trials(folder: Path) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{folder / 'study.db'}", engine_kwargs={"connect_args": {"timeout": 60}}
    )
    return optuna.load_study(study_name="search", storage=storage).get_trials()


def test_search_runs_as_ray_tasks(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    cfg = search_config(tiny_corpus, tmp_path, workers=2, backend="ray")
    console = Console(file=io.StringIO(), width=200)
    trials = run_search(cfg, console=console).study.trials()
    assert "2 worker(s) on Ray" in console.file.getvalue()  # type: ignore[attr-defined]
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(t.user_attrs["slot"] for t in trials) == ["0/0/0", "0/0/1", "0/0/2", "0/1/0"]
    pids = {int(t.user_attrs["worker"].split(":")[1]) for t in trials}
    assert os.getpid() not in pids  # trained in Ray's worker processes
    assert not ray.is_initialized()  # the Ray the search started is shut down


def test_ray_backend_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"backend: 'dask' is not one of \['local', 'ray'\]"):
        SearchConfig(backend="dask")
    with pytest.raises(ValueError, match="ray_address: 'auto' is given but backend is 'local'"):
        SearchConfig(ray_address="auto")


def test_killed_ray_worker_has_its_trial_run_again(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    config = write_search_yaml(
        tiny_corpus, tmp_path, n_trials=SLOTS, fidelity=FIDELITY, workers=2, backend="ray"
    )
    folder = tmp_path / "search"
    proc = search_process(config)
    victim: int | None = None
    killed: list[int] = []
    while proc.poll() is None and victim is None:  # kill -9 a worker in the middle of a trial
        no_study = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.OptunaError, KeyError)
        with contextlib.suppress(*no_study):
            trials = _trials(folder) if (folder / "study.db").is_file() else []
            # any trial that has reached its worker: waiting for one to complete first left
            # no window at all when load kept two trials from overlapping
            running = [t for t in trials if t.state.name == "RUNNING" and "worker" in t.user_attrs]
            if running:
                victim = int(running[0].user_attrs["worker"].split(":")[1])
                mine = [t.number for t in running if f":{victim}:" in t.user_attrs["worker"]]
                os.kill(victim, signal.SIGKILL)
                # a tiny trial may have completed between the read and the kill: then the kill
                # hit the worker between trials, and another victim is needed
                time.sleep(0.5)
                now = {t.number: t.state.name for t in _trials(folder)}
                killed = [n for n in mine if now.get(n) != "COMPLETE"]
                if not killed:
                    victim = None
        time.sleep(0.2)
    assert victim is not None, "the search ended before a worker could be killed"
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output  # finished without a resume
    after = _trials(folder)
    interrupted = [t for t in after if t.user_attrs.get("status") == INTERRUPTED]
    assert [t.number for t in interrupted] == killed
    for t in interrupted:
        assert t.state.name == "FAIL" and "worker" in t.user_attrs["interrupted_by"]
    done = [t for t in after if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["slot"] for t in done) == [f"0/0/{i}" for i in range(SLOTS)]
    assert len(after) == SLOTS + len(interrupted)
