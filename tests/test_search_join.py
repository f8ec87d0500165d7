"""Workers joined to a running search (``speechnas search --join``): they claim free slots of the
same study, the search that started it waits for their trials (heartbeats) before selecting, and
a joined worker that dies is noticed by its silence and its slot run again."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from search_helpers import search_config, search_process, study_trials, write_search_yaml

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.runner import run_search
from speechnas.search.study import (
    HEARTBEAT,
    INTERRUPTED,
    add_trial,
    beating,
    claim_lock,
    mark_stale,
    open_study,
    stale_running,
)

# Trials long enough (about two seconds each) that a second process can join in time.
SIX = {"rungs": [{"minutes": 5, "steps": 25}], "candidates": 6}


def _reader(storage: str) -> Callable[..., list[optuna.trial.FrozenTrial]]:
    """The study's trials in ``storage`` (SQLite: read only while the search makes the file)."""
    if storage.startswith("sqlite:///"):
        db = Path(storage.removeprefix("sqlite:///"))
        return lambda poll=False: study_trials(db, poll=poll)

    def read(poll: bool = False) -> list[optuna.trial.FrozenTrial]:
        rdb = optuna.storages.RDBStorage(storage)
        try:
            return optuna.load_study(study_name="search", storage=rdb).get_trials()
        finally:
            rdb.engine.dispose()

    return read


def _wait_for(read: Callable[..., list[Any]], ready: Callable[[list[Any]], bool], proc: Any,
              timeout: float = 120) -> list[Any]:  # fmt: skip
    """Polls the study until ``ready(trials)`` holds (the search may still be making it)."""
    no_study = (KeyError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.OptunaError)
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        with contextlib.suppress(*no_study):
            trials = read(poll=True)
            if ready(trials):
                return trials
        time.sleep(0.1)
    if proc.poll() is None:
        raise AssertionError(f"the condition did not hold within {timeout} s")
    output, _ = proc.communicate()
    raise AssertionError(
        f"the search ended ({proc.returncode}) before the condition held:\n{output}"
    )


def _open_and_report(url: str, answers: Any) -> None:
    try:
        open_study(url, "search", 2)
        answers.put("ok")
    except Exception as e:  # the test reports whatever a process met
        answers.put(f"{type(e).__name__}: {e}")


def test_processes_opening_one_new_database_at_once_all_get_it(tmp_path: Path) -> None:
    """A search and a worker joining it (or a reader of its progress) may create the same new
    database at the same moment; each must get the study, not a collision on its tables."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # quick to start: optuna is already imported
    answers = ctx.Queue()
    for round_ in range(10):
        url = f"sqlite:///{tmp_path / f'{round_}.db'}"
        procs = [ctx.Process(target=_open_and_report, args=(url, answers)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        got = [answers.get(timeout=10) for _ in procs]
        assert got == ["ok"] * 3, (round_, got)
        assert len(study_trials(tmp_path / f"{round_}.db")) == 0  # one study, no trials


def test_heartbeats_tell_live_trials_from_dead_workers(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    ss = open_study(f"sqlite:///{tmp_path / 's.db'}", "s", 1)
    live = add_trial(ss, state=TrialState.RUNNING, user_attrs={"slot": "0/0/0"})
    dead = add_trial(ss, state=TrialState.RUNNING, user_attrs={"slot": "0/0/1"})
    with beating(ss, live, every=0.05):
        first = ss.study.trials[live].user_attrs[HEARTBEAT]
        time.sleep(0.4)
        assert ss.trials()[live].user_attrs[HEARTBEAT] > first  # it keeps beating
        assert stale_running(ss, grace=0.2) == [dead]  # silent since its claim
        assert mark_stale(ss, grace=0.2) == [dead]
    gone = ss.trials()[dead]
    assert gone.state == TrialState.FAIL and gone.user_attrs["status"] == INTERRUPTED
    assert "no heartbeat" in gone.user_attrs["interrupted_by"]
    time.sleep(0.3)
    assert stale_running(ss, grace=0.2) == [live]  # the block ended: no more beats


def test_searches_on_one_sqlite_database_take_turns_whatever_their_output(
    tmp_path: Path,
) -> None:
    import fcntl

    (tmp_path / "db").mkdir()
    ss = open_study(f"sqlite:///{tmp_path / 'db' / 's.db'}", "s", 1)
    lock = tmp_path / "db" / "s.db.claim.lock"
    # another process, with its own output folder, tries the lock its claim would take
    with (
        claim_lock(ss, tmp_path / "starter"),
        open(lock, "a+") as f,
        pytest.raises(BlockingIOError),
    ):
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the claim
    assert not (tmp_path / "starter" / ".claim.lock").exists()


def test_join_needs_a_running_search_with_the_same_config(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = search_config(tiny_corpus, tmp_path, fidelity=SIX, n_trials=6)
    with pytest.raises(ValueError, match=r"--join: study 'search' .* has no search to join"):
        run_search(cfg, join=True)
    with pytest.raises(ValueError, match=r"--join and --resume"):
        run_search(cfg, join=True, resume=True)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_joined_machine_shares_the_slots_and_the_starter_selects(
    kind: str, tiny_corpus: CorpusInfo, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "postgres":
        storage = request.getfixturevalue("postgres_url")  # skipped where PostgreSQL is missing
    else:
        storage = f"sqlite:///{tmp_path / 'study.db'}"
    read = _reader(storage)
    config = write_search_yaml(
        tiny_corpus, tmp_path, fidelity=SIX, n_trials=6, storage=storage, heartbeat_seconds=0.5
    )
    main = search_process(config)
    try:
        _wait_for(read, lambda ts: len(ts) >= 1, main)  # the study and its config exist
        joined = search_process(config, "--join", "--output-dir", str(tmp_path / "joined"))
        out_joined, _ = joined.communicate(timeout=300)
        out_main, _ = main.communicate(timeout=300)
    finally:
        if main.poll() is None:
            main.kill()
    assert joined.returncode == 0, out_joined
    assert main.returncode == 0, out_main
    assert "joined search 'search'" in out_joined
    trials = read()
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["slot"] for t in done) == [f"0/0/{i}" for i in range(6)]
    assert len(trials) == 6  # none lost, none run twice
    pids = {t.user_attrs["worker"].split(":")[1] for t in done}
    assert pids == {str(main.pid), str(joined.pid)}  # both machines' workers trained some
    assert (tmp_path / "joined" / "trials").is_dir()
    assert (tmp_path / "search" / "pareto.json").is_file()  # the starter selected
    assert not (tmp_path / "joined" / "pareto.json").exists()


def test_a_killed_joined_worker_is_noticed_by_its_silence(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    read = _reader(storage)
    config = write_search_yaml(
        tiny_corpus, tmp_path, fidelity=SIX, n_trials=6, storage=storage, heartbeat_seconds=0.5
    )
    main = search_process(config)
    joined = None
    try:
        _wait_for(read, lambda ts: len(ts) >= 1, main)
        joined = search_process(config, "--join", "--output-dir", str(tmp_path / "joined"))
        pid = str(joined.pid)  # one worker: it trains in the search process itself

        def joined_running(ts: list[optuna.trial.FrozenTrial]) -> bool:
            return any(
                t.state.name == "RUNNING"
                and t.user_attrs.get("worker", "").split(":")[1:2] == [pid]
                for t in ts
            )

        _wait_for(read, joined_running, main)
        os.kill(joined.pid, signal.SIGKILL)  # the joined machine is lost mid-trial
        joined.wait()
        out_main, _ = main.communicate(timeout=300)
    finally:
        for p in (main, joined):
            if p is not None and p.poll() is None:
                p.kill()
    assert main.returncode == 0, out_main
    assert "fell silent" in out_main
    trials = read()
    lost = [t for t in trials if t.user_attrs.get("status") == INTERRUPTED]
    assert lost and all("no heartbeat" in t.user_attrs["interrupted_by"] for t in lost)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["slot"] for t in done) == [f"0/0/{i}" for i in range(6)]
