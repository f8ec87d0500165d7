"""The TTS search on the ASR search's engine: a tiny search end to end (real eSpeak corpus, real
training, ONNX Runtime latency, a real exported ASR judge), the trainer's resume, and the
config errors that stop a TTS search before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from rich.console import Console
from safetensors.torch import load_file
from typer.testing import CliRunner

from speechnas.cli import app
from speechnas.data.tts import (
    TtsCorpusConfig,
    build_tts_corpus,
    load_tts_manifest,
    write_tts_corpus,
)
from speechnas.report.build import TTS_SECTIONS, write_report
from speechnas.search.config import load_search_config, search_config_from_dict, search_config_path
from speechnas.search.runner import run_search
from speechnas.train.tts import TtsTrainConfig, TtsTrainer

SIZES = {"train": 24, "dev": 10, "test": 6}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpora")
    cfg = TtsCorpusConfig(sizes=SIZES)
    build_tts_corpus(cfg, root, workers=1, show_progress=False)
    return root


def _config(corpora: Path, out: Path, judge_dir: Path, **over: object) -> dict:
    cfg = {
        "task": "tts",
        "space": "tts-fastspeech",
        "strategy": {"name": "random"},
        "objectives": ["mcd", "tts_cer", "latency"],
        "target": "cpu-ort-1t",
        "seeds": ["lightspeech"],
        "fidelity": {
            "rungs": [{"minutes": 5, "steps": 2}, {"minutes": 5, "steps": 4}],
            "eta": 2,
            "candidates": 2,
        },
        "n_trials": 3,
        "workers": 1,
        "output_dir": str(out),
        "corpus": "tts-en",
        "corpus_sizes": SIZES,
        "corpora_dir": str(corpora),
        "train": {"threads": 1, "max_batch_frames": 2000, "dev_utterances": 4},
        "retrain_minutes": 5,
        "retrain_steps": 3,
        "retrain_threads": 1,
        "judge": str(judge_dir),
    }
    cfg.update(over)
    return cfg


def test_a_tiny_tts_search_selects_retrains_exports_and_speaks(
    corpora: Path, tiny_judge: Path, tmp_path: Path
) -> None:
    cfg = search_config_from_dict(_config(corpora, tmp_path / "run", tiny_judge))
    outcome = run_search(cfg, console=Console(quiet=True))
    assert outcome is not None
    done = [t for t in outcome.study.trials() if t.state.name == "COMPLETE"]
    assert len(done) == 3  # two candidates at rung 0, then the seed promoted
    assert len(outcome.results) == 2  # one row per architecture, at its top rung
    for r in outcome.results:
        mcd, cer, latency = r.values
        assert 0 < mcd < 100 and cer >= 0 and latency > 0
        assert r.metric("steps") in (2, 4)
        assert r.metric("rtf") == pytest.approx(latency / 3200, rel=1e-6)
    # the seed is the hand-designed small preset and reached the top rung
    assert any(r.rung == 1 for r in outcome.results)
    pareto = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert pareto["config"]["task"] == "tts" and pareto["selected"] is not None
    got = outcome.retrained
    assert got is not None and got["steps"] == 3
    assert got["onnx_parity"] < 1e-3
    assert got["latency_measured"] > 0 and got["latency_int8_measured"] > 0
    assert got["tts_cer"] >= 0 and got["mcd"] > 0  # on the test split
    assert len(got["samples"]) == 3
    for s in got["samples"]:
        audio, rate = sf.read(s["wav"])
        assert rate == 16000 and len(audio) > 0 and Path(s["png"]).is_file()
    # the report: the search's sections, the selection's graph, scores and spoken sentences
    html = write_report(tmp_path / "run").read_text()
    assert ",".join(TTS_SECTIONS) in html and "listen" in TTS_SECTIONS
    assert html.count("<audio controls") == 3 and "variance adaptor" in html
    # the torch-free command speaks with the exported model
    wav = tmp_path / "hello.wav"
    res = CliRunner().invoke(app, ["synthesize", got["onnx"], "one two three", "-o", str(wav)])
    assert res.exit_code == 0, res.output
    assert sf.info(str(wav)).samplerate == 16000


def test_tts_training_resumes_where_it_stopped(corpora: Path, tmp_path: Path) -> None:
    folder = corpora / TtsCorpusConfig(sizes=SIZES).name
    base = TtsTrainConfig(
        train=str(folder / "train.jsonl"), dev=str(folder / "dev.jsonl"),
        test=str(folder / "test.jsonl"), vocab=str(folder / "phonemes.json"),
        max_batch_frames=1000, dev_utterances=2, preset="lightspeech",
    )  # fmt: skip
    straight = TtsTrainer(base.replace(max_steps=6, output_dir=str(tmp_path / "a"))).fit()
    TtsTrainer(base.replace(max_steps=3, output_dir=str(tmp_path / "b"))).fit()
    resumed = TtsTrainer(base.replace(max_steps=6, output_dir=str(tmp_path / "b"))).fit()
    assert straight.steps == resumed.steps == 6
    a = load_file(str(tmp_path / "a" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "last" / "model.safetensors"))
    for k in a:
        np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), atol=1e-6, err_msg=k)
    assert resumed.dev["mcd"] == pytest.approx(straight.dev["mcd"], rel=1e-5)


def test_the_packaged_tts_search_config_loads() -> None:
    cfg = load_search_config(search_config_path("tts"))
    assert cfg.task == "tts" and cfg.space == "tts-fastspeech" and "mcd" in cfg.objectives


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"objectives": ["wer:test", "latency"]}, "not one of a TTS search's"),
        ({"task": "asr", "objectives": ["mcd", "latency"]}, "set task: tts"),
        ({"seeds": ["small"]}, "seeds\\[0\\]"),
        ({"constraints": {"max_latency_ms": "small"}}, "take numbers|a TTS search takes"),
        ({"task": "speech"}, "task: 'speech' is not one of"),
    ],
)
def test_config_errors_name_the_field(over: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        search_config_from_dict(_config(tmp_path, tmp_path / "o", tmp_path, **over))


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"strategy": {"name": "oneshot"}}, "one-shot supernet covers ASR"),
        ({"corpus": "digits-en"}, "needs a TTS corpus"),
        ({"judge": "nowhere"}, "judge: nowhere is not an exported"),
        ({"corpus": None}, "train.train: '' is not a file; a TTS search on your own data"),
        ({"target": "cpu-torch-1t"}, "a TTS search measures on ONNX Runtime"),
        ({"target": "cpu-ort-stream-1t"}, "streaming target"),
    ],
)
def test_a_tts_search_refuses_before_any_work(over: dict, message: str, tmp_path: Path) -> None:
    cfg = search_config_from_dict(_config(tmp_path / "c", tmp_path / "o", tmp_path, **over))
    with pytest.raises(ValueError, match=message):
        run_search(cfg, console=Console(quiet=True))
    assert not (tmp_path / "c").exists()  # no corpus was built


def test_a_tts_search_on_your_own_manifests(corpora: Path, tmp_path: Path) -> None:
    """Your corpus (here the utterances of a built one, re-split) as manifests; the search
    reads them with corpus: null."""
    folder = corpora / TtsCorpusConfig(sizes=SIZES).name
    utts = [u for s in ("train", "dev") for u in load_tts_manifest(folder / f"{s}.jsonl")]
    info = write_tts_corpus(utts, tmp_path / "mine", dev=4, test=4, seed=1)
    assert [len(load_tts_manifest(p)) for p in info.manifests.values()] == [4, 4, len(utts) - 8]
    train = {"train": str(info.manifests["train"]), "dev": str(info.manifests["dev"]),
             "test": str(info.manifests["test"]), "vocab": str(info.vocab_path),
             "threads": 1, "max_batch_frames": 2000, "dev_utterances": 2}  # fmt: skip
    rungs = {"rungs": [{"minutes": 5, "steps": 2}], "eta": 2, "candidates": 1}
    over = {"corpus": None, "train": train, "n_trials": 1, "retrain_minutes": 0,
            "judge_minutes": 0, "judge": None, "objectives": ["mcd", "latency"],
            "fidelity": rungs}  # fmt: skip
    cfg = search_config_from_dict(_config(corpora, tmp_path / "run", tmp_path, **over))
    outcome = run_search(cfg, console=Console(quiet=True))
    assert outcome is not None and len(outcome.results) == 1
    assert outcome.results[0].metric("steps") == 2


def test_importing_an_ljspeech_folder_without_durations_says_what_is_missing(
    tmp_path: Path,
) -> None:
    (tmp_path / "lj" / "wavs").mkdir(parents=True)
    (tmp_path / "lj" / "metadata.csv").write_text("LJ001-0001|One.|one.\n")
    res = CliRunner().invoke(app, ["data", "tts-import", str(tmp_path / "lj"), "--out",
                                   str(tmp_path / "out")])  # fmt: skip
    assert res.exit_code != 0 and "no phoneme durations" in res.output
