"""sherpa-onnx streaming export: the real sherpa-onnx online recogniser, fed audio, emits the tokens
speechnas's own chunk-by-chunk model emits, at the same frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, tiny_config
from typer.testing import CliRunner

from speechnas.cli import app
from speechnas.data.audio import read_audio
from speechnas.data.features import FeatureExtractor
from speechnas.data.synth.corpus import CorpusInfo
from speechnas.data.tokenizer import CharTokenizer
from speechnas.evaluate.metrics import error_rates
from speechnas.export.sherpa_online import (
    check_sherpa_streaming,
    export_sherpa_streaming,
    sherpa_online_recognizer,
)
from speechnas.nn.build import SpeechModel, build
from speechnas.nn.streaming import stream_encode
from speechnas.space import Arch
from speechnas.train.config import DynamicChunkConfig
from speechnas.train.trainer import Trainer

pytest.importorskip("sherpa_onnx")
runner = CliRunner()
STREAM = {"streaming": True, "chunk_size": 4, "left_chunks": 2, "frontend": "knf80"}


def _silence(model: SpeechModel) -> np.ndarray:
    """A window of silence and a bit: sherpa-onnx decodes whole chunks only."""
    geo = model.stream_geometry()
    return np.zeros(160 * (geo.window + 2 * geo.hop), dtype=np.float32)


def _sherpa(recognizer: object, wave: np.ndarray, tail: np.ndarray) -> object:
    stream = recognizer.create_stream()
    for piece in np.array_split(wave, 5):  # audio arriving in pieces, as from a microphone
        stream.accept_waveform(16000, piece)
        while recognizer.is_ready(stream):
            recognizer.decode_stream(stream)
    stream.accept_waveform(16000, tail)
    stream.input_finished()
    while recognizer.is_ready(stream):
        recognizer.decode_stream(stream)
    return recognizer.get_result_all(stream)


@torch.no_grad()
def _ours(model: SpeechModel, wave: np.ndarray) -> list[tuple[int, int]]:
    """(output frame, token) of CTC's best path over the chunks sherpa-onnx runs: those whose
    window lies before the last feature frame."""
    geo = model.stream_geometry()
    feats, n = FeatureExtractor(model.features)(torch.from_numpy(wave)[None])
    chunks = (int(n[0]) - geo.window - 1) // geo.hop + 1
    feats = feats[:, : (chunks - 1) * geo.hop + geo.window]
    enc = stream_encode(model, feats, torch.tensor([feats.shape[1]])).enc[:, : chunks * geo.chunk]
    best = model.decoder(enc)[0].argmax(-1).tolist()
    return [(t, b) for t, b in enumerate(best) if b and (t == 0 or b != best[t - 1])]


def _emitted(result: object, symbols: list[str]) -> list[tuple[int, int]]:
    # sherpa-onnx stamps token t at t * 4 * 10 ms whatever the subsampling
    frames = [round(s / 0.04) for s in result.timestamps]
    tokens = ["\u2581" if tok == " " else tok for tok in result.tokens]  # sherpa shows ▁ as " "
    return [(t, symbols.index(tok)) for t, tok in zip(frames, tokens, strict=True)]


@pytest.mark.parametrize(
    "change",
    [{"lookahead": 0, "attention": "rel"}, {"lookahead": 2, "attention": "abs"}],
    ids=["rel-no-lookahead", "abs-lookahead-2"],
)
def test_sherpa_streams_an_untrained_model_frame_by_frame_like_pytorch(
    change: dict[str, object], tmp_path: Path
) -> None:
    """Per-layer kernels (7 and 15: the shared convolution cache), look-ahead (a longer window)
    and both position encodings; random weights scaled so that the best path is decisive."""
    torch.manual_seed(0)
    two = {"layers": 2, "ffn_dim": [64, 64], "ffn_lowrank": [0, 0],
           "module_order": ["mhsa_first"] * 2, "conv_kernel": [7, 15]}  # fmt: skip
    arch = Arch({**TINY_ARCH, **STREAM, **change, **two})
    tok = CharTokenizer(list("abcdefgh "))
    model = build(arch, vocab_size=tok.vocab_size).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(30)
    res = export_sherpa_streaming(model, tmp_path, tokenizer=tok, int8=False)
    assert max(res.parity.values()) < 1e-4, res.parity
    assert res.metadata["cnn_module_kernel"] == "15" and res.metadata["num_left_chunks"] == "2"
    symbols = [line.split(" ")[0] for line in res.tokens.read_text().splitlines()]
    recognizer = sherpa_online_recognizer(tmp_path)
    rng = np.random.default_rng(0)
    emitted = 0
    for seconds in (0.7, 1.0, 1.3):
        wave = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        result = _sherpa(recognizer, wave, _silence(model))
        want = _ours(model, np.concatenate([wave, _silence(model)]))
        assert _emitted(result, symbols) == want
        emitted += len(want)
    assert emitted >= 6  # not a vacuous agreement on blanks


@pytest.fixture(scope="module")
def streaming_knf_run(tiny_corpus: CorpusInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("knf-stream-run")
    arch = Arch({**TINY_ARCH, **STREAM})
    cfg = tiny_config(tiny_corpus, out, max_epochs=6).replace(
        arch=arch.to_json(), dynamic_chunk=DynamicChunkConfig(chunks=(2, 4, 8))
    )
    Trainer.from_config(cfg, show_progress=False).fit()
    return out / "best"


def _waves(corpus: CorpusInfo, split: str, n: int) -> list[np.ndarray]:
    lines = corpus.manifests[split].read_text().splitlines()[:n]
    return [
        read_audio(corpus.folder / json.loads(line)["audio_filepath"], sample_rate=16000)
        for line in lines
    ]


def test_the_cli_export_decodes_in_sherpa_as_speechnas_streams_it(
    streaming_knf_run: Path, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    from speechnas.train.checkpoint import load_model

    res = runner.invoke(app, ["export", "--checkpoint", str(streaming_knf_run), "--output",
                              str(tmp_path), "--format", "sherpa", "--streaming"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "from_wenet_ctc" in res.output
    assert {p.name for p in tmp_path.iterdir()} >= {"model.onnx", "model.int8.onnx", "tokens.txt"}
    loaded = load_model(streaming_knf_run)
    model, tok = loaded.model.eval(), loaded.tokenizer
    symbols = [line.split(" ")[0] for line in (tmp_path / "tokens.txt").read_text().splitlines()]
    waves = _waves(tiny_corpus, "test", 6) + _waves(tiny_corpus, "test-noisy", 3)
    texts: dict[bool, tuple[list[str], list[str]]] = {}
    for int8 in (False, True):
        recognizer = sherpa_online_recognizer(tmp_path, int8=int8)
        ours, theirs = [], []
        for wave in waves:
            result = _sherpa(recognizer, wave, _silence(model))
            want = _ours(model, np.concatenate([wave, _silence(model)]))
            if not int8:
                assert _emitted(result, symbols) == want
            ours.append(tok.decode([b for _, b in want]))
            theirs.append(result.text.replace("\u2581", " ").strip())
        texts[int8] = ours, theirs
    ours, theirs = texts[False]
    assert theirs == [t.strip() for t in ours]
    assert sum(bool(t) for t in ours) >= len(waves) // 2, ours  # a trained model says something
    ours, theirs = texts[True]  # sherpa-onnx's own ONNX Runtime rounds int8 kernels its way
    assert error_rates([t.strip() for t in ours], theirs).cer < 0.05


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encoder": "transformer"}, r"encoder: 'transformer'"),
        ({"frontend": "fbank80"}, r"frontend: .*knf80"),
        ({"streaming": False}, r"streaming"),
        ({"layer_heads": [2, 4], "layers": 2, "heads": 2}, r"layer_heads"),
    ],
    ids=["transformer", "speechnas-fbank", "not-streaming", "mixed-heads"],
)
def test_what_sherpa_cannot_stream_is_named(change: dict[str, object], message: str) -> None:
    arch = {**TINY_ARCH, **STREAM, **change}
    if arch.get("layers") == 2:
        arch.update(ffn_dim=[64, 64], ffn_lowrank=[0, 0], conv_kernel=[7, 7],
                    module_order=["mhsa_first"] * 2)  # fmt: skip
    if arch["encoder"] == "transformer":
        for key in ("conv_kernel", "macaron", "module_order"):
            arch.pop(key, None)
    with pytest.raises(ValueError, match=message):
        check_sherpa_streaming(build(Arch(arch), vocab_size=5))


def test_coreml_streaming_is_refused_before_any_work(
    streaming_knf_run: Path, tmp_path: Path
) -> None:
    args = ["--output", str(tmp_path / "o"), "--format", "coreml", "--streaming"]
    res = runner.invoke(app, ["export", "--checkpoint", str(streaming_knf_run), *args])
    assert res.exit_code != 0 and "--streaming" in res.output
    assert not (tmp_path / "o").exists()


def test_speechnas_streams_the_same_kaldi_features_itself(
    streaming_knf_run: Path, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    """``speechnas transcribe --streaming`` computes Kaldi filterbanks incrementally
    (kaldi-native-fbank's online extractor) and gets what PyTorch's stream of the training
    features gives."""
    from speechnas.evaluate.streaming import stream_decode
    from speechnas.export.stream_transcribe import StreamingTranscriber
    from speechnas.export.streaming import export_streaming
    from speechnas.train.checkpoint import load_model

    loaded = load_model(streaming_knf_run)
    export_streaming(loaded.model, tmp_path, tokenizer=loaded.tokenizer)
    transcriber = StreamingTranscriber(tmp_path, threads=1)
    lines = tiny_corpus.manifests["test"].read_text().splitlines()[:4]
    said = 0
    for line in lines:
        path = tiny_corpus.folder / json.loads(line)["audio_filepath"]
        wave = read_audio(path, sample_rate=16000)
        feats, n = FeatureExtractor(loaded.features)(torch.from_numpy(wave)[None])
        want = stream_decode(loaded.model, stream_encode(loaded.model, feats, n))[0]
        got = transcriber.transcribe_file(path, piece_ms=70)
        assert got.tokens == want[-1]
        said += bool(got.tokens)
    assert said >= 2
