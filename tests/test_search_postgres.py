"""The study on a real PostgreSQL server: three worker processes share it, one is killed with
``kill -9`` in the middle of a trial, and ``--resume`` finishes the search with no completed
trial lost or run twice. Claims go through the database's advisory lock, not the folder."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from search_helpers import search_process, write_search_yaml

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.study import CLAIM_LOCK_KEY, INTERRUPTED, claim_lock, open_study

SLOTS = 6
# Trials of a second or two, so that a worker killed while its trial runs dies mid-trial.
FIDELITY = {"rungs": [{"minutes": 5, "steps": 25}], "candidates": SLOTS}


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name="search", storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def _worker_pid(t: optuna.trial.FrozenTrial) -> int:
    return int(t.user_attrs["worker"].split(":")[1])  # HOST:PID:INDEX


def test_unreachable_postgres_url_says_what_to_check() -> None:
    url = "postgresql+psycopg2://someone:secret@127.0.0.1:1/nowhere"
    with pytest.raises(ValueError, match="cannot connect to the study storage") as e:
        open_study(url, "search", 2)
    assert "secret" not in str(e.value) and "127.0.0.1:1" in str(e.value)


def test_claims_on_postgres_take_the_database_lock(postgres_url: str, tmp_path: Path) -> None:
    ss = open_study(postgres_url, "search", 1)
    engine = ss.storage.engine  # type: ignore[attr-defined]
    probe = sqlalchemy.text("SELECT pg_try_advisory_lock(:k, :s)")
    args = {"k": CLAIM_LOCK_KEY, "s": ss.study_id}
    with claim_lock(ss, tmp_path / "out"), engine.connect() as other:
        assert other.execute(probe, args).scalar() is False  # held by the claim
    assert not (tmp_path / "out").exists()  # no file lock, no folder needed
    with engine.connect() as other:
        assert other.execute(probe, args).scalar() is True  # released after it


def test_three_workers_on_postgres_survive_kill_9(
    tiny_corpus: CorpusInfo, postgres_url: str, tmp_path: Path
) -> None:
    config = write_search_yaml(
        tiny_corpus, tmp_path, n_trials=SLOTS, fidelity=FIDELITY, workers=3, storage=postgres_url
    )
    proc = search_process(config)
    victim: int | None = None
    while proc.poll() is None and victim is None:  # kill -9 a worker in the middle of a trial
        no_study = (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.OptunaError)
        with contextlib.suppress(*no_study):
            trials = _trials(postgres_url)
            done = [t for t in trials if t.state.name == "COMPLETE"]
            running = [t for t in trials if t.state.name == "RUNNING"]
            if done and running:
                victim = _worker_pid(running[0])
                os.kill(victim, signal.SIGKILL)
        time.sleep(0.2)
    assert victim is not None, "the search ended before a worker could be killed"
    output, _ = proc.communicate(timeout=600)
    # the dead worker is replaced and its slot run again: no --resume needed
    assert proc.returncode == 0, output
    assert f"(pid {victim}) died with exit code -9" in output
    after = _trials(postgres_url)
    assert len({t.user_attrs["worker"] for t in after}) >= 3  # three workers and the new one
    interrupted = [t for t in after if t.user_attrs.get("status") == INTERRUPTED]
    assert interrupted and all(_worker_pid(t) == victim for t in interrupted)
    assert all(t.state.name == "FAIL" for t in interrupted)
    done = [t for t in after if t.state.name == "COMPLETE"]
    slots = sorted(t.user_attrs["slot"] for t in done)  # each slot completed exactly once
    assert slots == [f"0/0/{i}" for i in range(SLOTS)]
    assert len(after) == SLOTS + len(interrupted)
