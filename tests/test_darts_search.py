"""Differentiable compression as a search driver (``strategy: darts``) on the tiny corpus: the
seed trained as trial 0, one compressed trial per η in the same study, the common results,
resume, and the options checked before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config
from search_helpers import search_config

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.drivers.darts import Darts
from speechnas.search.runner import run_search
from speechnas.space import Arch

SEED = {"frontend": "fbank80", "subsampling": "conv2d", "subsampling_factor": 4,
        "encoder": "conformer", "d_model": 32, "layers": 1, "heads": 2, "ffn_dim": [64],
        "conv_kernel": [3], "macaron": True, "decoder": "ctc"}  # fmt: skip
OPTIONS = {
    "etas": [0.0, 50.0],
    "darts": {"weight_steps": 2, "arch_steps": 6, "ranks": [0, 8], "threads": 1},
    "finetune_steps": 1,
}


def _config(corpus: CorpusInfo, tmp: Path, **changes):
    settings = {"strategy": {"name": "darts", "options": OPTIONS}, "seeds": [SEED],
                "target": "proxy", **changes}  # fmt: skip
    return search_config(corpus, tmp, **settings)


def test_the_seed_and_each_eta_become_trials_of_one_study(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = _config(tiny_corpus, tmp_path, retrain_minutes=1, retrain_steps=1, retrain_threads=1)
    out = Path(cfg.output_dir)
    outcome = run_search(cfg)
    trials = outcome.study.trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    seed, free, dear = (t.user_attrs for t in trials)
    assert seed["slot"] == "darts-seed" and seed["metrics"]["steps"] == 4  # the top rung
    assert Arch.from_json(seed["arch"]) == Arch(SEED)
    for attrs, eta in ((free, 0.0), (dear, 50.0)):
        assert attrs["eta"] == eta and attrs["metrics"]["darts_eta"] == eta
        assert attrs["strategy"] == "darts" and attrs["metrics"]["steps"] == 1  # fine-tuned
        assert len(attrs["darts_choice"]) == 1  # one layer, one choice
        assert (Path(attrs["darts_output"]) / "model" / "meta.json").is_file()
        assert "wer:test" in attrs["metrics"]
    # no penalty keeps the full FFN; a large one shrinks it
    assert free["metrics"]["params"] == seed["metrics"]["params"]
    assert dear["metrics"]["params"] < seed["metrics"]["params"]
    assert dear["metrics"]["darts_ffn_params_ratio"] < 1.0
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["front"] and pareto["retrained"]["steps"] == 1
    summary = json.loads((out / "darts" / "summary.json").read_text())
    assert summary["etas"] == [0.0, 50.0] and set(summary["runs"]) == {"0", "50"}
    # the retraining continues from the selection's weights, outside the space's checks
    tuned = Darts(cfg).retrain_config(tiny_config(tiny_corpus, tmp_path / "b").replace(
        space=cfg.space))  # fmt: skip
    assert tuned.space is None and tuned.optim.warmup_steps <= 10
    # resumed, a finished search trains nothing again
    mtime = (Path(seed["output_dir"]) / "best" / "meta.json").stat().st_mtime
    again = run_search(cfg, resume=True)
    assert [t.user_attrs["slot"] for t in again.study.trials()] == [
        "darts-seed", "darts-eta0", "darts-eta50"
    ]  # fmt: skip
    assert (Path(seed["output_dir"]) / "best" / "meta.json").stat().st_mtime == mtime


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"seeds": []}, ["seeds", "one architecture", "got 0"]),
        ({"seeds": [{**SEED, "encoder": "lstm", "lstm_hidden": 16}]}, ["seeds[0]", "lstm"]),
        ({"strategy": {"name": "darts", "options": {"etas": []}}}, ["etas"]),
        ({"strategy": {"name": "darts", "options": {"etas": [1, 1]}}}, ["repeats"]),
        ({"strategy": {"name": "darts", "options": {"darts": {"eta": 2}}}}, ["darts.eta"]),
        ({"strategy": {"name": "darts", "options": {"darts": {"ranks": [8]}}}}, ["darts.ranks"]),
        ({"strategy": {"name": "darts", "options": {"budget": 3}}}, ["unknown", "budget"]),
    ],
)
def test_bad_options_are_named_before_any_work(
    change: dict, words: list[str], tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = _config(tiny_corpus, tmp_path, **change)
    with pytest.raises(ValueError) as e:
        Darts(cfg).setup()
    for w in words:
        assert w in str(e.value)
    assert not Path(cfg.output_dir).exists()
