"""Trial checkpoints in an artifact store (``artifacts: URL``), for workers that share no folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.console import Console
from search_helpers import search_config, study_trials

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.artifacts import fetch_checkpoints, resume_source, store_checkpoints
from speechnas.search.runner import run_search


def test_trials_store_their_checkpoints_and_a_lost_folder_is_fetched(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    cfg = search_config(tiny_corpus, tmp_path, artifacts=f"file://{store}")
    run_search(cfg, console=Console(quiet=True))
    trials = [
        t for t in study_trials(tmp_path / "search" / "study.db") if t.state.name == "COMPLETE"
    ]
    trained = [t for t in trials if "reused_from" not in t.user_attrs]
    assert len(trained) >= 3
    for t in trained:
        uri = t.user_attrs["artifact_uri"]
        folder = Path(t.user_attrs["output_dir"])
        assert uri == f"file://{store}/search/{folder.name}"
        for name in ("last", "best"):
            local = sorted(p.name for p in (folder / name).iterdir())
            stored = sorted(p.name for p in (store / "search" / folder.name / name).iterdir())
            assert local == stored and local
    promoted = [t for t in trained if t.user_attrs.get("resumed_from")]
    assert promoted  # the top rung continued from the rung below (its folder is here)
    # On a machine that never saw the lower rung's folder the checkpoints come from the store.
    source = next(
        t for t in trained if t.user_attrs["output_dir"] == promoted[0].user_attrs["resumed_from"]
    )
    attrs = dict(source.user_attrs)
    shutil.rmtree(attrs["output_dir"])
    here = tmp_path / "elsewhere" / "0007-r1-abc"
    got = resume_source(attrs, here)
    assert got == str(here.with_name(here.name + ".from-store"))
    stored = store / "search" / Path(attrs["output_dir"]).name
    for name in ("last", "best"):
        want = sorted(p.name for p in (stored / name).iterdir())
        assert sorted(p.name for p in (Path(got) / name).iterdir()) == want
        for p in (stored / name).iterdir():
            assert (Path(got) / name / p.name).read_bytes() == p.read_bytes()


def test_store_round_trip_on_a_plain_path(tmp_path: Path) -> None:
    trial = tmp_path / "t"
    for name in ("last", "best"):
        (trial / name).mkdir(parents=True)
        (trial / name / "meta.json").write_text(f'{{"which": "{name}"}}')
    assert store_checkpoints(trial, str(tmp_path / "s" / "t")) == ["last", "best"]
    (trial / "last" / "meta.json").write_text('{"which": "newer"}')
    store_checkpoints(trial, str(tmp_path / "s" / "t"))  # a rerun replaces, never mixes
    back = tmp_path / "back"
    assert fetch_checkpoints(str(tmp_path / "s" / "t"), back) == ["last", "best"]
    assert (back / "last" / "meta.json").read_text() == '{"which": "newer"}'
    assert fetch_checkpoints(str(tmp_path / "s" / "none"), tmp_path / "x") == []
    assert resume_source({"output_dir": str(tmp_path / "gone")}, tmp_path / "y") == str(
        tmp_path / "gone"
    )  # nothing stored: the trial trains its rung from the start


def test_an_unusable_store_is_named_before_any_work(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = search_config(tiny_corpus, tmp_path, artifacts="nosuchfs://bucket/x")
    with pytest.raises(ValueError, match=r"artifacts: 'nosuchfs://bucket/x'"):
        run_search(cfg)
    assert not (tmp_path / "search").exists()
    with pytest.raises(ValueError, match=r"artifacts: an empty URL"):
        search_config(tiny_corpus, tmp_path, artifacts=" ")
