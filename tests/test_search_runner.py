"""The search runner on the tiny corpus: failures recorded and survived, two worker processes on
one SQLite study, and ``kill -9`` followed by ``--resume``."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from rich.console import Console
from search_helpers import search_config, search_process, study_trials, write_search_yaml

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.runner import run_search
from speechnas.search.study import INTERRUPTED

ONE_RUNG = {"rungs": [{"minutes": 5, "steps": 2}], "candidates": 2}


_search = search_process


def _trials(folder: Path, *, poll: bool = False) -> list[optuna.trial.FrozenTrial]:
    """The study's trials; ``poll``: read only, without creating the database or its tables."""
    return study_trials(folder / "study.db", poll=poll)


def test_crashing_and_diverging_trials_fail_with_their_reason(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = search_config(tiny_corpus, tmp_path / "crash", fidelity=ONE_RUNG, n_trials=2)
    broken = tmp_path / "missing.jsonl"  # the test set of every trial
    cfg = cfg.replace(
        train={**cfg.train, "data": {**cfg.train["data"], "test": {"test": str(broken)}}}
    )
    trials = run_search(cfg).study.trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    status = trials[0].user_attrs["status"]
    assert status.startswith("crashed: ") and "missing.jsonl" in status
    assert "Traceback" in trials[0].user_attrs["traceback"]

    cfg = search_config(tiny_corpus, tmp_path / "nan", fidelity=ONE_RUNG, n_trials=2)
    cfg = cfg.replace(train={**cfg.train, "optim": {**cfg.train["optim"], "lr": 1e6}})
    outcome = run_search(cfg)
    trials = outcome.study.trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    for t in trials:
        status = t.user_attrs["status"]
        assert status.startswith("diverged: loss is ") and " at step " in status
    assert outcome.front == [] and (Path(cfg.output_dir) / "pareto.json").is_file()


def test_two_workers_share_one_sqlite_study(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    cfg = search_config(tiny_corpus, tmp_path, n_trials=6, workers=2)
    console = Console(file=io.StringIO(), width=200)
    run_search(cfg, console=console)  # two spawned processes, one SQLite file
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "database is locked" not in output
    trials = _trials(tmp_path / "search")
    assert len(trials) == 6 and all(t.state.name == "COMPLETE" for t in trials), output
    slots = sorted(t.user_attrs["slot"] for t in trials)  # brackets of (3, 1) and (2,)
    assert slots == ["0/0/0", "0/0/1", "0/0/2", "0/1/0", "1/0/0", "1/0/1"]
    proposals = sorted(t.user_attrs["proposal"] for t in trials if "proposal" in t.user_attrs)
    assert proposals == list(range(5))
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    logs = "".join(p.read_text() for p in (tmp_path / "search" / "logs").glob("*.log"))
    assert "database is locked" not in logs


def test_kill_then_resume_keeps_finished_trials(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    fidelity = ONE_RUNG | {"candidates": 4}
    config = write_search_yaml(tiny_corpus, tmp_path, n_trials=4, fidelity=fidelity)
    folder = tmp_path / "search"
    proc = _search(config)
    before: list[optuna.trial.FrozenTrial] = []
    while proc.poll() is None and not before:  # kill -9 once a trial has finished
        # No study yet: no file, no tables or schema stamp yet (the read-only reader cannot
        # add them; Optuna reports that as a commit error), or the tables half made.
        no_study = (
            KeyError,
            sqlalchemy.exc.SQLAlchemyError,
            optuna.exceptions.StorageInternalError,
        )
        with contextlib.suppress(*no_study):
            before = [t for t in _trials(folder, poll=True) if t.state.name == "COMPLETE"]
        time.sleep(0.2)
    if proc.poll() is not None:
        output, _ = proc.communicate()
        raise AssertionError(
            f"the search ended ({proc.returncode}) before it could be killed:\n{output}"
        )
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = _trials(folder)
    assert len(killed) < 4 or any(t.state.name == "RUNNING" for t in killed)
    cfg = search_config(tiny_corpus, tmp_path, n_trials=4, fidelity=fidelity)
    with pytest.raises(ValueError, match=r"already has \d+ trials; resume it"):
        run_search(cfg)  # no silent restart over an existing study

    proc = _search(config, "--resume")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    after = _trials(folder)
    by_number = {t.number: t for t in after}
    for t in before:
        assert by_number[t.number].values == t.values
        assert by_number[t.number].user_attrs["arch_key"] == t.user_attrs["arch_key"]
    running = [t.number for t in killed if t.state.name == "RUNNING"]
    interrupted = [t for t in after if t.user_attrs.get("status") == INTERRUPTED]
    assert [t.number for t in interrupted] == running
    assert all(t.state.name == "FAIL" for t in interrupted)
    done = [t for t in after if t.state.name == "COMPLETE"]
    assert len(done) == 4 and len(after) == 4 + len(interrupted)
    assert sorted(t.user_attrs["slot"] for t in done) == [f"0/0/{i}" for i in range(4)]


def _children(pid: int) -> list[int]:
    """The worker processes whose parent is ``pid`` (Linux /proc; not the resource tracker)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != pid:
                continue
            if b"spawn_main" in (stat.parent / "cmdline").read_bytes():
                out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_stops_the_workers_too(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    """``kill PID`` of a search (SIGTERM) ends its worker processes with it, in the middle of
    their trials, instead of leaving them training unseen; ``--resume`` picks up from there."""
    long_rung = {"rungs": [{"minutes": 5, "steps": 100_000}], "candidates": 2}
    config = write_search_yaml(tiny_corpus, tmp_path, n_trials=2, fidelity=long_rung, workers=2)
    proc = _search(config)
    workers: list[int] = []
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(KeyError, sqlalchemy.exc.SQLAlchemyError,
                                 optuna.exceptions.StorageInternalError):  # fmt: skip
            running = [t for t in _trials(tmp_path / "search", poll=True)
                       if t.state.name == "RUNNING"]  # fmt: skip
            if len(running) == 2:  # both workers are training
                workers = _children(proc.pid)
                break
        time.sleep(0.2)
    assert workers, "the workers never started their trials"
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    deadline = time.monotonic() + 30
    while (alive := [w for w in workers if _alive(w)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"workers still running after the search was killed: {alive}"
    assert [t.state.name for t in _trials(tmp_path / "search")] == ["RUNNING", "RUNNING"]


def test_a_dead_worker_is_replaced_and_its_slot_run_again(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    """A worker process killed mid-trial (as the kernel does for memory): its trial is marked
    interrupted, a new worker takes its place and the search finishes every slot without a
    ``--resume``."""
    rung = {"rungs": [{"minutes": 5, "steps": 25}], "candidates": 4}
    config = write_search_yaml(tiny_corpus, tmp_path, n_trials=4, fidelity=rung, workers=2)
    proc = _search(config)
    victim: optuna.trial.FrozenTrial | None = None
    deadline = time.monotonic() + 120
    while proc.poll() is None and victim is None and time.monotonic() < deadline:
        with contextlib.suppress(KeyError, sqlalchemy.exc.SQLAlchemyError,
                                 optuna.exceptions.StorageInternalError):  # fmt: skip
            running = [t for t in _trials(tmp_path / "search", poll=True)
                       if t.state.name == "RUNNING" and "worker" in t.user_attrs]  # fmt: skip
            victim = running[0] if running else None
        time.sleep(0.1)
    assert victim is not None, "no trial started"
    pid = int(victim.user_attrs["worker"].split(":")[1])
    assert pid in _children(proc.pid)  # a worker process of this search, not the search itself
    os.kill(pid, signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    trials = _trials(tmp_path / "search")
    killed = next(t for t in trials if t.number == victim.number)
    assert killed.state.name == "FAIL" and killed.user_attrs["status"] == INTERRUPTED
    assert f"(pid {pid}) died with exit code -9" in killed.user_attrs["interrupted_by"]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["slot"] for t in done) == [f"0/0/{i}" for i in range(4)]
    assert len(trials) == 5  # the killed one, run again


def _user_corpus(tiny_corpus: CorpusInfo, folder: Path) -> dict[str, Path]:
    """A user's own manifests made from the tiny corpus: training audio at 8 kHz stereo WAV, dev
    at 16 kHz mono FLAC, test at 44.1 kHz stereo WAV."""
    import numpy as np
    import soundfile as sf
    import soxr

    from speechnas.data.manifest import load_manifest, write_manifest
    from speechnas.data.utterance import Utterance

    out = {}
    for split, rate, channels in [("train", 8000, 2), ("dev", 16000, 1), ("test", 44100, 2)]:
        (folder / split).mkdir(parents=True)
        utts = []
        for u in load_manifest(tiny_corpus.manifests[split]).utterances:
            x, sr = sf.read(str(u.audio_path), dtype="float32")
            y = soxr.resample(x, sr, rate).astype(np.float32)
            path = folder / split / f"{u.id}.{'flac' if channels == 1 else 'wav'}"
            sf.write(str(path), np.stack([y] * channels, axis=1) if channels > 1 else y, rate)
            utts.append(Utterance(id=u.id, audio_path=path, text=u.text, duration=len(y) / rate))
        write_manifest(folder / f"{split}.jsonl", utts)
        out[split] = folder / f"{split}.jsonl"
    return out


def test_search_on_your_own_manifests_from_the_command_line(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from speechnas.cli import app

    mine = _user_corpus(tiny_corpus, tmp_path / "mine")
    # the YAML names the built-in corpus in a folder that must stay untouched: the flags win
    path = write_search_yaml(
        tiny_corpus, tmp_path, corpora_dir=str(tmp_path / "untouched"),
        objectives=["dev_wer", "latency"], search_test=None, retrain_minutes=1, retrain_steps=2,
        retrain_threads=1,
    )  # fmt: skip
    path.write_text(path.read_text().replace("corpus: null", "corpus: digits-en"))
    args = ["search", "--config", str(path), "--train", str(mine["train"]),
            "--dev", str(mine["dev"]), "--test", f"mine={mine['test']}"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"--train: {mine['train']}, 48 utterances" in res.output
    report = json.loads((tmp_path / "search" / "pareto.json").read_text())
    assert report["retrained"]["wer:mine"] >= 0 and "wer:test" not in report["retrained"]
    assert report["config"]["corpus"] is None
    assert report["config"]["train"]["data"]["train"] == str(mine["train"])
    assert not (tmp_path / "untouched").exists()
    # a broken manifest is reported, naming the file, before any work
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio_filepath": "gone.wav", "duration": 1.0, "text": "one"}\n')
    res = CliRunner().invoke(app, [*args[:5], "--dev", str(bad)])
    assert res.exit_code == 2 and "bad.jsonl" in res.output and "gone.wav" in res.output
    res = CliRunner().invoke(app, [*args[:5]])
    assert res.exit_code == 2 and "needs both --train and --dev" in res.output


def test_a_study_stored_before_a_config_key_existed_resumes(tmp_path: Path) -> None:
    """A stored config without a newer key (``task``, ``judge``) holds that key's default: the
    study resumes with the defaults and refuses another value."""
    from speechnas.search.config import SearchConfig
    from speechnas.search.runner import _check_resume
    from speechnas.search.study import open_study

    cfg = SearchConfig(output_dir=str(tmp_path))
    ss = open_study(cfg.storage_url, cfg.study_name, len(cfg.objectives))
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("task", "judge", "judge_minutes")}
    ss.study.set_user_attr("config", old)
    _check_resume(cfg, ss, resume=True)
    with pytest.raises(ValueError, match=r"differs in \['judge'\]"):
        _check_resume(cfg.replace(judge="elsewhere"), ss, resume=True)
    # a key added inside a section (fidelity.rank_by) also takes its default
    ss = open_study(cfg.storage_url, "nested", len(cfg.objectives))
    old = cfg.to_dict()
    del old["fidelity"]["rank_by"]
    ss.study.set_user_attr("config", old)
    _check_resume(cfg.replace(study_name="nested"), ss, resume=True)
    changed = dataclasses.replace(cfg.fidelity, rank_by="predicted")
    with pytest.raises(ValueError, match=r"differs in \['fidelity'\]"):
        _check_resume(cfg.replace(study_name="nested", fidelity=changed), ss, resume=True)
