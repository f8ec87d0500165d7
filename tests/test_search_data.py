"""What a search reads and is judged on: objectives over several test sets, several built-in corpora
(languages) in one search."""

from __future__ import annotations

from pathlib import Path

import pytest
from search_helpers import search_dict

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.config import search_config_from_dict
from speechnas.search.objectives import check_objective, objective_tests, objective_values
from speechnas.search.runner import run_search

MEAN = "wer:mean(test,test-noisy)"


def test_names_and_values() -> None:
    assert check_objective(MEAN) == MEAN and objective_tests(MEAN) == ("test", "test-noisy")
    assert objective_tests("wer:test") == ("test",) and objective_tests("latency") == ()
    for bad in ("wer:mean()", "wer:mean(test,test)", "rtf:mean(a,b)", "wer:mean(a"):
        with pytest.raises(ValueError, match="objectives: "):
            check_objective(bad)
    metrics = {"wer:test": 0.1, "wer:test-noisy": 0.3, "latency": 2.0}
    assert objective_values(metrics, [MEAN, "latency"]) == pytest.approx((0.2, 2.0))
    with pytest.raises(ValueError, match=r"objective wer:mean\(test,test-tel\) is None"):
        objective_values(metrics, ["wer:mean(test,test-tel)"])


def _search(corpus: CorpusInfo, tmp: Path, objectives: list[str]) -> dict:
    d = search_dict(corpus, tmp, objectives=objectives, n_trials=3)
    d["train"]["data"]["test"] = {
        "test": str(corpus.manifests["test"]),
        "test-noisy": str(corpus.manifests["test-noisy"]),
        "test-tel": str(corpus.manifests["test-tel"]),
    }
    return d


def test_trials_score_every_test_set_an_objective_names(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = search_config_from_dict(_search(tiny_corpus, tmp_path, [MEAN, "latency"]))
    outcome = run_search(cfg)
    trials = [t for t in outcome.study.trials() if t.state.name == "COMPLETE"]
    assert len(trials) == 3
    for t in trials:
        m = t.user_attrs["metrics"]
        assert {"wer:test", "wer:test-noisy"} <= set(m) and "wer:test-tel" not in m
        assert t.values[0] == pytest.approx((m["wer:test"] + m["wer:test-noisy"]) / 2)


def test_a_mean_over_an_unknown_test_set_is_named_before_any_training(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = search_config_from_dict(_search(tiny_corpus, tmp_path, ["wer:mean(test,far)", "latency"]))
    with pytest.raises(ValueError, match=r"objectives: 'wer:mean\(test,far\)' names 'far'"):
        run_search(cfg)
    assert not (tmp_path / "search" / "trials").exists()


def test_one_search_over_several_languages(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    from speechnas.data.manifest import load_manifest
    from speechnas.search.config import load_search_config, search_config_path

    d = search_dict(
        tiny_corpus, tmp_path, n_trials=3, objectives=["dev_wer", "latency"], search_test=None,
        retrain_minutes=1, retrain_steps=2, retrain_threads=1,
    )  # fmt: skip
    d.update(
        corpus=["digits-en", "digits-de"],
        corpora_dir=str(tmp_path / "corpora"),
        corpus_sizes={"train": 8, "dev": 3, "test": 3, "test-noisy": 0, "test-tel": 0,
                      "test-unseen-engine": 0, "test-device": 0},
    )  # fmt: skip
    outcome = run_search(search_config_from_dict(d))
    retrained = outcome.retrained
    assert retrained is not None
    assert {"wer:test-en", "wer:test-de"} <= set(retrained)
    assert retrained["wer:corpus-mean"] == pytest.approx(
        (retrained["wer:test-en"] + retrained["wer:test-de"]) / 2
    )
    dev = load_manifest(tmp_path / "corpora" / "digits-en+digits-de" / "dev.jsonl").utterances
    assert sorted({u.id.split("/")[0] for u in dev}) == ["digits-de", "digits-en"]
    assert {u.lang for u in dev} == {"en", "de"} and len(dev) == 6
    # the packaged four-language config, by name
    cfg = load_search_config(search_config_path("multilingual"))
    assert cfg.corpus == ("digits-en", "digits-de", "digits-es", "digits-fr")


def test_a_retrained_model_is_timed_against_its_preset_limit(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    """On a hardware target with the limit given as a preset, the retrained model and the
    preset are timed in turn and the verdict printed with their ratio."""
    import io

    from rich.console import Console

    d = search_dict(
        tiny_corpus, tmp_path, n_trials=3, target="cpu-ort-1t",
        constraints={"max_latency_ms": "small"}, retrain_minutes=1, retrain_steps=2,
        retrain_threads=1,
    )  # fmt: skip
    out = io.StringIO()
    outcome = run_search(search_config_from_dict(d), console=Console(file=out, width=200))
    retrained = outcome.retrained
    assert retrained is not None and retrained["latency_ratio_to_limit"] < 1
    assert "against preset 'small', timed in turn 5 times" in out.getvalue()
    assert "misses the target" not in out.getvalue()
