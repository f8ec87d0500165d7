"""The torch-free transcriber: numpy features, greedy search, no torch on its path, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch
from conftest import tiny_config
from typer.testing import CliRunner

from speechnas.cli import app
from speechnas.data.audio import read_audio, write_flac
from speechnas.data.dataset import SpeechDataset
from speechnas.data.features import FeatureConfig, FeatureExtractor
from speechnas.data.loading import load_utterances
from speechnas.data.synth.corpus import CorpusInfo
from speechnas.data.tokenizer import CharTokenizer
from speechnas.evaluate.decode import evaluate_dataset
from speechnas.export.features_np import compute_features
from speechnas.export.onnx import export_model
from speechnas.export.transcribe import Transcriber
from speechnas.nn.build import build
from speechnas.space import Arch
from speechnas.train.checkpoint import LoadedModel, load_model
from speechnas.train.trainer import Trainer

runner = CliRunner()

# Runs in a fresh interpreter: transcribes its arguments, then reports the loaded modules.
NO_TORCH = """
import json, sys
from speechnas.export.transcribe import Transcriber
tr = Transcriber(sys.argv[1], threads=1)
texts = {p: tr.transcribe_file(p).text for p in sys.argv[2:]}
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "soxr"})
print(json.dumps({"texts": texts, "loaded": loaded}))
"""
CLI_NO_TORCH = """
import json, sys
from speechnas.cli import app
app(sys.argv[1:], standalone_mode=False)
print(json.dumps("torch" in sys.modules))
"""


def _audio(corpus: CorpusInfo, split: str) -> list[Path]:
    lines = corpus.manifests[split].read_text().splitlines()
    return [corpus.folder / json.loads(line)["audio_filepath"] for line in lines]


def _torch_text(loaded: LoadedModel, path: Path, sample_rate: int = 16000) -> str:
    wave = read_audio(path, sample_rate=sample_rate)
    feats, n = FeatureExtractor(loaded.features)(torch.from_numpy(wave)[None])
    return loaded.tokenizer.decode(loaded.model.decode(feats, n)[0])


@pytest.fixture(scope="module")
def checkpoint(tiny_corpus: CorpusInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    Trainer.from_config(tiny_config(tiny_corpus, out, max_epochs=8), show_progress=False).fit()
    return out / "best"


@pytest.mark.parametrize(
    "cfg",
    [FeatureConfig(), FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=40), FeatureConfig(n_mels=40)],
    ids=["fbank80", "mfcc40", "fbank40"],
)
def test_numpy_features_match_the_training_features(
    tiny_corpus: CorpusInfo, cfg: FeatureConfig
) -> None:
    extract = FeatureExtractor(cfg)
    diffs = []
    for path in _audio(tiny_corpus, "test")[:6] + _audio(tiny_corpus, "test-tel")[:6]:
        wave = read_audio(path, sample_rate=cfg.sample_rate)
        ref, ref_n = extract(torch.from_numpy(wave)[None])
        got, n = compute_features(wave, cfg)
        assert got.dtype == np.float32 and got.shape == tuple(ref.shape[1:])
        assert n == int(ref_n[0]) == got.shape[0]
        diffs.append(np.abs(got - ref[0].numpy()).ravel())
    d = np.concatenate(diffs)
    # Both sides use float32 FFTs that round differently; the log of a near-silent mel band
    # (telephone audio has none above 3.4 kHz) magnifies that to ~1e-2 in a few entries, while
    # the bulk agrees to ~1e-5. (Against a float64 reference numpy is the closer of the two.)
    assert d.max() < 0.05 and d.mean() < 2e-4
    short = np.full(100, 0.1, dtype=np.float32)  # shorter than one FFT: one padded frame, 0 valid
    got, n = compute_features(short, cfg)
    ref, ref_n = extract(torch.from_numpy(short)[None])
    assert n == int(ref_n[0]) == 0 and got.shape == tuple(ref.shape[1:])


def test_transcriber_needs_no_torch_and_equals_pytorch_greedy(
    checkpoint: Path, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    loaded = load_model(checkpoint)
    result = export_model(
        loaded.model, tmp_path, tokenizer=loaded.tokenizer, features=loaded.features
    )
    paths = _audio(tiny_corpus, "test") + _audio(tiny_corpus, "test-tel")
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(result.files["model"]), *map(str, paths)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["loaded"] == []  # neither torch nor (16 kHz audio needs no resampling) soxr
    expected = {str(p): _torch_text(loaded, p) for p in paths}
    assert out["texts"] == expected
    assert sum(bool(t) for t in expected.values()) >= len(paths) // 2  # not all empty
    # Audio at another rate is resampled as in training.
    low = tmp_path / "8k.flac"
    wave = read_audio(paths[0], sample_rate=16000)
    write_flac(low, soxr.resample(wave, 16000, 8000), 8000)
    assert Transcriber(result.files["model"]).transcribe_file(low).text == _torch_text(loaded, low)


SMALL = {"subsampling": "conv2d", "subsampling_factor": 4, "d_model": 32, "layers": 2}
GREEDY = {
    "rnnt": {**SMALL, "frontend": "fbank40", "encoder": "transformer", "heads": 2,
             "attention": "abs", "streaming": False, "ffn_dim": (64, 64),
             "ffn_lowrank": (0, 0), "decoder": "rnnt", "pred_dim": 128},
    "learnable-ctc": {**SMALL, "frontend": "learnable", "encoder": "cnn", "streaming": False,
                      "conv_kernel": (7, 7), "cnn_se": False, "cnn_dilation": 1,
                      "decoder": "ctc"},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(GREEDY))
def test_greedy_search_over_the_graphs_equals_pytorch(
    name: str, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    torch.manual_seed(1)
    model = build(Arch(GREEDY[name]), vocab_size=9, dropout=0.0).eval()
    if name == "rnnt":  # random weights: make real tokens likely, so the search emits
        with torch.no_grad():
            model.decoder.joiner.out.bias[0] -= 2.0
    export_model(model, tmp_path, tokenizer=CharTokenizer("abcdefgh"), check=False)
    transcriber = Transcriber(tmp_path)
    emitted = 0
    for path in _audio(tiny_corpus, "test")[:4]:
        feats, n = compute_features(read_audio(path, sample_rate=16000), model.features)
        got = transcriber.transcribe_features(feats, n)
        x = torch.from_numpy(feats)[None]
        with torch.no_grad():
            ref = model.decode(x[..., None] if feats.ndim == 1 else x, torch.tensor([n]))[0]
        assert list(got.tokens) == ref
        emitted += len(ref)
    assert emitted > 0
    # Shorter than one output frame: padded up to the graph's minimum, decoded as nothing.
    assert transcriber.transcribe_wave(np.full(300, 0.1, dtype=np.float32)).tokens == ()


def test_cli_exports_a_checkpoint_and_transcribes_without_torch(
    checkpoint: Path, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    out_dir = tmp_path / "onnx"
    out = runner.invoke(
        app, ["export", "--checkpoint", str(checkpoint), "--output", str(out_dir), "--int8"]
    )
    assert out.exit_code == 0, out.output
    assert (out_dir / "model.onnx").is_file() and (out_dir / "model.int8.onnx").is_file()
    text = " ".join(out.output.split())
    assert "model.onnx" in text and "model.int8.onnx" in text and "e-0" in text  # parity column

    manifest = tiny_corpus.manifests["test"]
    audio = _audio(tiny_corpus, "test")[0]
    args = ["transcribe", str(out_dir / "model.onnx"), str(audio), "--manifest", str(manifest)]
    proc = subprocess.run(
        [sys.executable, "-c", CLI_NO_TORCH, *args, "--threads", "1", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    *report, torch_loaded = proc.stdout.strip().splitlines()
    assert json.loads(torch_loaded) is False
    report = json.loads("\n".join(report))
    loaded = load_model(checkpoint)
    assert report["files"][str(audio)]["text"] == _torch_text(loaded, audio)
    assert report["files"][str(audio)]["rtf"] > 0
    ref = evaluate_dataset(
        loaded.model,
        SpeechDataset(
            load_utterances(str(manifest), skip_invalid=False), loaded.tokenizer, loaded.features
        ),
    )
    scored = report["manifests"][str(manifest)]
    assert (scored["wer"], scored["cer"]) == (ref.rates.wer, ref.rates.cer)
    assert scored["utterances"] == len(ref.hypotheses) and scored["rtf"] > 0

    plain = runner.invoke(app, ["transcribe", str(out_dir / "model.int8.onnx"), str(audio)])
    assert plain.exit_code == 0 and "RTF" in plain.output
    missing = runner.invoke(app, ["transcribe", str(tmp_path / "none.onnx"), str(audio)])
    assert missing.exit_code == 2 and "not an ONNX file" in missing.output


def test_cli_export_under_another_attention_implementation(
    checkpoint: Path, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    """``--attention-impl matmul``: the same weights as another graph (no per-layer NaN guard),
    the same transcripts; refused, with the reason, for the formats that do not take it."""
    import onnx

    from speechnas.export.transcribe import Transcriber, score_manifest

    paths = {}
    for impl in ("sdpa", "matmul"):
        out_dir = tmp_path / impl
        out = runner.invoke(
            app, ["export", "--checkpoint", str(checkpoint), "--output", str(out_dir),
                  "--attention-impl", impl],
        )  # fmt: skip
        assert out.exit_code == 0, out.output
        paths[impl] = out_dir / "model.onnx"
    ops = {n.op_type for n in onnx.load(str(paths["matmul"])).graph.node}
    assert "IsNaN" in {n.op_type for n in onnx.load(str(paths["sdpa"])).graph.node}
    assert "IsNaN" not in ops
    manifest = tiny_corpus.manifests["test"]
    a, b = (score_manifest(Transcriber(p), manifest)["hypotheses"] for p in paths.values())
    assert a == b
    bad = runner.invoke(
        app, ["export", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "s"),
              "--format", "sherpa", "--attention-impl", "matmul"],
    )  # fmt: skip
    assert bad.exit_code != 0 and "--attention-impl" in bad.output
