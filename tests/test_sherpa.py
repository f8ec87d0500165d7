"""sherpa-onnx export: the real sherpa-onnx decodes it as speechnas's own transcriber does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_ARCH, tiny_config
from typer.testing import CliRunner

from speechnas.cli import app
from speechnas.data.audio import read_audio
from speechnas.data.synth.corpus import CorpusInfo
from speechnas.data.tokenizer import CharTokenizer
from speechnas.evaluate.metrics import error_rates
from speechnas.export.features_np import compute_features
from speechnas.export.sherpa import (
    SherpaExport,
    check_sherpa,
    export_sherpa,
    sherpa_recognizer,
    sherpa_tokens,
)
from speechnas.export.transcribe import Transcriber, ctc_greedy
from speechnas.nn.build import build
from speechnas.space import Arch
from speechnas.train.trainer import Trainer

sherpa_onnx = pytest.importorskip("sherpa_onnx")
runner = CliRunner()
KNF_ARCH = Arch({**TINY_ARCH, "frontend": "knf80"})


@pytest.fixture(scope="module")
def knf_checkpoint(tiny_corpus: CorpusInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("knf-run")
    cfg = tiny_config(tiny_corpus, out, max_epochs=8).replace(arch=KNF_ARCH.to_json())
    Trainer.from_config(cfg, show_progress=False).fit()
    return out / "best"


@pytest.fixture(scope="module")
def exported(knf_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> SherpaExport:
    return export_sherpa(knf_checkpoint, tmp_path_factory.mktemp("sherpa"))


def _waves(corpus: CorpusInfo, split: str, n: int) -> list[np.ndarray]:
    lines = corpus.manifests[split].read_text().splitlines()[:n]
    paths = [corpus.folder / json.loads(line)["audio_filepath"] for line in lines]
    return [read_audio(p, sample_rate=16000) for p in paths]


def _sherpa(recognizer: object, waves: list[np.ndarray]) -> list[object]:
    """One stream per utterance, as the transcriber runs (a padded batch changes the valid
    frames' log-probabilities by float rounding only, ~1e-6, but that can flip a near-tie of a
    barely trained model)."""
    results = []
    for w in waves:
        s = recognizer.create_stream()
        s.accept_waveform(16000, w)
        recognizer.decode_stream(s)
        results.append(s.result)
    return results


def test_sherpa_onnx_decodes_the_export_like_the_transcriber(
    exported: SherpaExport, tiny_corpus: CorpusInfo
) -> None:
    waves = _waves(tiny_corpus, "test", 8) + _waves(tiny_corpus, "test-tel", 4)
    texts = {}
    for int8 in (False, True):
        transcriber = Transcriber(exported.int8_model if int8 else exported.model)
        ours = [transcriber.transcribe_wave(w).text for w in waves]
        theirs = [r.text.strip() for r in _sherpa(sherpa_recognizer(exported, int8=int8), waves)]
        texts[int8] = ours, theirs
    ours, theirs = texts[False]
    assert theirs == ours
    assert sum(bool(t) for t in ours) >= len(waves) // 2, ours  # a trained model says something
    # int8: sherpa-onnx bundles its own ONNX Runtime, whose integer kernels may round an
    # activation differently; a near-tie can then flip a character, no more
    ours, theirs = texts[True]
    assert error_rates(ours, theirs).cer < 0.05


def test_sherpa_best_path_is_the_transcribers_frame_by_frame(
    exported: SherpaExport, tiny_corpus: CorpusInfo
) -> None:
    """Same tokens at the same output frames: sherpa-onnx's features (its own build of
    kaldi-native-fbank) and graph run agree with ours, not only the final text."""
    transcriber = Transcriber(exported.model)
    session, cfg = transcriber.sessions["model"], transcriber.features
    symbols = exported.tokens.read_text(encoding="utf-8").split("\n")
    for wave, result in zip(
        waves := _waves(tiny_corpus, "test-noisy", 6),
        _sherpa(sherpa_recognizer(exported), waves),
        strict=True,
    ):
        feats, n = compute_features(wave, cfg)
        log_probs, out_len = session.run(
            None, {"features": feats[None], "lengths": np.array([n], dtype=np.int64)}
        )
        best = log_probs[0, : int(out_len[0])].argmax(-1)
        emitted = [t for t in range(len(best)) if best[t] and (t == 0 or best[t] != best[t - 1])]
        assert [symbols[best[t]].split(" ")[0] for t in emitted] == [
            "▁" if tok == " " else tok for tok in result.tokens
        ]
        # sherpa-onnx places token t at t * subsampling (4 assumed) * 10 ms
        np.testing.assert_allclose(result.timestamps, [0.04 * t for t in emitted], atol=1e-4)
        assert [best[t] for t in emitted] == ctc_greedy(log_probs[0], int(out_len[0]))


def test_tokens_file_is_what_sherpa_reads(exported: SherpaExport) -> None:
    lines = exported.tokens.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "<blk> 0"
    assert all(len(line.split(" ")) == 2 for line in lines)
    assert [int(line.split(" ")[1]) for line in lines] == list(range(len(lines)))
    assert "▁" in {line.split(" ")[0] for line in lines}  # the space of the char vocabulary
    with pytest.raises(ValueError, match=r"tokens\.txt"):
        sherpa_tokens(CharTokenizer(["a", "\t"]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frontend": "fbank80"}, r"frontend: .*'fbank'.*knf80"),
        ({"frontend": "learnable"}, r"frontend: the learnable frontend"),
        ({"frontend": "knf80", "decoder": "rnnt"}, r"decoder: 'rnnt'"),
    ],
    ids=["speechnas-fbank", "learnable", "rnnt"],
)
def test_what_sherpa_cannot_run_is_named(change: dict[str, str], message: str) -> None:
    model = build(Arch({**TINY_ARCH, **change}), vocab_size=5)
    with pytest.raises(ValueError, match=message):
        check_sherpa(model)


def test_attention_models_export_through_their_ctc_head() -> None:
    check_sherpa(build(Arch({**KNF_ARCH, "decoder": "attention"}), vocab_size=5))


def test_cli_writes_a_folder_sherpa_loads(
    knf_checkpoint: Path, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    res = runner.invoke(
        app, ["export", "--checkpoint", str(knf_checkpoint), "--output", str(tmp_path),
              "--format", "sherpa", "--no-check"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert {p.name for p in tmp_path.iterdir()} >= {"model.onnx", "model.int8.onnx", "tokens.txt"}
    (wave,) = _waves(tiny_corpus, "test", 1)
    (result,) = _sherpa(sherpa_recognizer(tmp_path), [wave])
    assert result.text.strip() == Transcriber(tmp_path / "model.onnx").transcribe_wave(wave).text
    bad = runner.invoke(app, ["export", "--checkpoint", str(knf_checkpoint), "--output",
                              str(tmp_path), "--format", "tflite"])  # fmt: skip
    assert bad.exit_code != 0 and "--format" in bad.output


def test_cli_names_an_unsupported_model(tmp_path: Path) -> None:
    from speechnas.train.checkpoint import save_checkpoint

    tok = CharTokenizer(list("ab "))
    model = build(TINY_ARCH, vocab_size=tok.vocab_size)  # speechnas's own fbank80
    meta = {"arch": TINY_ARCH.to_json(), "tokenizer": tok.to_dict(),
            "features": model.features.to_dict()}  # fmt: skip
    save_checkpoint(tmp_path / "ckpt", model, meta)
    res = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "ckpt"), "--output",
                              str(tmp_path / "out"), "--format", "sherpa"])  # fmt: skip
    assert res.exit_code != 0
    assert "knf80" in res.output, res.output
