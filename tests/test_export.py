"""ONNX export: parity with PyTorch at untraced lengths for every family, metadata, int8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import TINY_ARCH, tiny_config

import speechnas
from speechnas.data.audio import read_audio
from speechnas.data.features import FeatureConfig, FeatureExtractor
from speechnas.data.synth.corpus import CorpusInfo
from speechnas.data.tokenizer import CharTokenizer, tokenizer_from_dict
from speechnas.export.onnx import export_model
from speechnas.export.quantize import quantize_int8
from speechnas.export.transcribe import Transcriber, read_metadata
from speechnas.nn.build import build
from speechnas.space import Arch, load_space
from speechnas.train.checkpoint import LoadedModel, load_model
from speechnas.train.trainer import Trainer

TOL = 1e-4  # max |ORT - torch| of log-probabilities / encodings on valid frames

BASE = {"frontend": "fbank40", "subsampling": "conv2d", "subsampling_factor": 4, "d_model": 32,
        "layers": 2, "decoder": "ctc"}  # fmt: skip
ATTN = {"heads": 2, "attention": "rel", "streaming": False, "ffn_dim": (64, 64),
        "ffn_lowrank": (0, 16)}  # fmt: skip
STREAM = {"streaming": True, "chunk_size": 8, "left_chunks": 2}
CASES = {
    "conformer-rel-ctc": {**BASE, **ATTN, "encoder": "conformer", "macaron": True,
                          "conv_kernel": (7, 15), "module_order": ("mhsa_first", "conv_first")},
    "conformer-abs-streaming-dw6": {**BASE, **ATTN, **STREAM, "encoder": "conformer",
                                    "attention": "abs", "subsampling": "dwconv2d",
                                    "subsampling_factor": 6, "macaron": False,
                                    "conv_kernel": (7, 7),
                                    "module_order": ("conv_first", "mhsa_first")},
    "transformer-local-attention-8": {**BASE, **ATTN, "encoder": "transformer",
                                      "frontend": "fbank64", "attention": "local",
                                      "attention_window": 16, "subsampling_factor": 8,
                                      "decoder": "attention", "ctc_weight": 0.3,
                                      "decoder_layers": 1},
    "ebranchformer-rel-rnnt-mfcc": {**BASE, **ATTN, "encoder": "ebranchformer",
                                    "frontend": "mfcc40", "subsampling": "dwconv2d",
                                    "subsampling_factor": 6, "conv_kernel": (7, 7),
                                    "decoder": "rnnt", "pred_dim": 128},
    "ebranchformer-local-streaming": {**BASE, **ATTN, **STREAM, "encoder": "ebranchformer",
                                      "attention": "local", "attention_window": 16,
                                      "conv_kernel": (7, 15)},
    "lstm-streaming-rnnt": {**BASE, **STREAM, "encoder": "lstm", "lstm_hidden": 256,
                            "decoder": "rnnt", "pred_dim": 128},
    "blstm-learnable-8": {**BASE, "frontend": "learnable", "subsampling_factor": 8,
                          "encoder": "blstm", "lstm_hidden": 256},
    "cnn-se-streaming-dilated": {**BASE, **STREAM, "encoder": "cnn", "conv_kernel": (7, 15),
                                 "cnn_se": True, "cnn_dilation": 2, "subsampling": "dwconv2d"},
}  # fmt: skip


def _random_model(name: str) -> torch.nn.Module:
    if name == "baseline":  # a preset's recipe (absolute positions), outside speech-all's sizes
        arch = TINY_ARCH
    else:
        arch = Arch(CASES[name])
        assert set(load_space("speech-all").active(arch)) == set(arch)  # a point of speech-all
    torch.manual_seed(0)
    model = build(arch, vocab_size=9, dropout=0.0)
    with torch.no_grad():  # non-trivial statistics, so CMVN inside the graph is exercised
        model.cmvn_mean.uniform_(-3.0, 3.0)
        model.cmvn_std.uniform_(0.5, 2.0)
    return model


def _inputs(model: torch.nn.Module, lengths: list[int], waveform: bool) -> torch.Tensor:
    """(B, T, F) features around the CMVN mean, or (B, N) samples; zero beyond each length."""
    gen = torch.Generator().manual_seed(5)
    if waveform:
        x = 0.1 * torch.randn(len(lengths), max(lengths), generator=gen)
    else:
        dim = model.cmvn_mean.shape[0]
        x = model.cmvn_mean + torch.randn(len(lengths), max(lengths), dim, generator=gen)
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x


@pytest.mark.parametrize("name", [*sorted(CASES), "baseline"])
def test_graphs_match_pytorch_at_untraced_lengths(name: str, tmp_path: Path) -> None:
    model = _random_model(name)
    result = export_model(model, tmp_path, example_seconds=2.0)
    rnnt = CASES.get(name, {}).get("decoder") == "rnnt"
    assert set(result.files) == ({"encoder", "predictor", "joiner"} if rnnt else {"model"})
    assert result.parity and all(v < TOL for v in result.parity.values()), result.parity
    assert all(v == 0.0 for k, v in result.parity.items() if k.endswith("out_lengths"))
    main = result.files["encoder" if rnnt else "model"]
    session = ort.InferenceSession(str(main), providers=["CPUExecutionProvider"])
    batch_dim, time_dim = session.get_inputs()[0].shape[:2]
    assert isinstance(batch_dim, str) and isinstance(time_dim, str)  # symbolic axes
    if rnnt:
        return
    # An independent check: batch 3, lengths none of which export_model traced or checked.
    waveform = CASES.get(name, {}).get("frontend") == "learnable"
    kind = "waveform" if waveform else "features"
    assert session.get_inputs()[0].name == result.metadata["input"] == kind
    assert len(session.get_inputs()[0].shape) == (2 if waveform else 3)  # (B, N) or (B, T, F)
    # The shortest input (one output frame) too: no branch was traced for it.
    model.eval()
    shortest = int(result.metadata["min_input_length"])
    for lengths in ([27_111, 19_001, 30_555] if waveform else [171, 133, 52], [shortest]):
        x, lens = _inputs(model, lengths, waveform), torch.tensor(lengths)
        log_probs, out_lens = session.run(None, {kind: x.numpy(), "lengths": lens.numpy()})
        with torch.no_grad():
            enc, ref_lens = model.encode(x[..., None] if waveform else x, lens)
            ref = getattr(model.decoder, "ctc", model.decoder)(enc)
        assert out_lens.tolist() == ref_lens.tolist() and min(ref_lens.tolist()) >= 1
        for b, n in enumerate(ref_lens.tolist()):
            assert np.abs(log_probs[b, :n] - ref[b, :n].numpy()).max() < TOL
    assert ref.shape[1] == 1  # the last run had one output frame


def test_metadata_describes_the_model_and_round_trips(tmp_path: Path) -> None:
    model = _random_model("ebranchformer-rel-rnnt-mfcc")
    tokenizer = CharTokenizer("abcdefgh")
    result = export_model(model, tmp_path, tokenizer=tokenizer, check=False)
    assert result.parity == {}
    for graph, path in result.files.items():
        meta = read_metadata(path)
        assert meta == {**result.metadata, "graph": graph}
    meta = result.metadata
    assert tokenizer_from_dict(json.loads(meta["vocabulary"])).to_dict() == tokenizer.to_dict()
    assert Arch.from_json(json.loads(meta["arch"])) == model.arch
    assert FeatureConfig(**json.loads(meta["features"])) == model.features
    assert meta["input"] == "features" and meta["decoder"] == meta["decoding"] == "rnnt"
    assert meta["subsampling_factor"] == "6" and meta["blank_id"] == "0"
    assert meta["speechnas_version"] == speechnas.__version__
    assert (meta["pred_layers"], meta["pred_hidden"]) == ("1", "128")
    # fewest frames that give one encoder frame: 3x3 stride 2, then 5x5 stride 3
    assert meta["min_input_length"] == "11"
    with pytest.raises(ValueError, match="vocab_size"):
        export_model(model, tmp_path / "bad", tokenizer=CharTokenizer("ab"), check=False)


@pytest.fixture(scope="module")
def trained(tiny_corpus: CorpusInfo, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    out = tmp_path_factory.mktemp("run")
    Trainer.from_config(tiny_config(tiny_corpus, out, max_epochs=8), show_progress=False).fit()
    return load_model(out / "best")


def test_int8_is_smaller_keeps_metadata_and_still_decodes(
    trained: LoadedModel, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    result = export_model(
        trained.model, tmp_path, tokenizer=trained.tokenizer, features=trained.features, int8=True
    )
    fp32, int8 = result.files["model"], result.int8_files["model"]
    # d_model 32: convolutions, norms and biases (kept in float) weigh more than in real models
    assert result.sizes[int8.name] < 0.75 * result.sizes[fp32.name]
    assert read_metadata(int8) == {**read_metadata(fp32), "quantization": "int8-dynamic"}
    # Frame decisions of the int8 graph on real audio mostly agree with the float graph.
    sessions = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, int8)
    ]
    extract = FeatureExtractor(trained.features)
    agree = total = 0
    for line in tiny_corpus.manifests["test"].read_text().splitlines():
        path = tiny_corpus.folder / json.loads(line)["audio_filepath"]
        feats, n = extract(torch.from_numpy(read_audio(path, sample_rate=16000))[None])
        inputs = {"features": feats.numpy(), "lengths": n.numpy()}
        (a, _), (b, _) = (s.run(None, inputs) for s in sessions)
        agree += int((a[0].argmax(-1) == b[0].argmax(-1)).sum())
        total += a.shape[1]
    assert agree / total > 0.9
    text = Transcriber(int8).transcribe_file(path).text
    assert isinstance(text, str)


def test_int8_transducer_graphs_are_found_together(tmp_path: Path) -> None:
    model = _random_model("lstm-streaming-rnnt")
    result = export_model(model, tmp_path, tokenizer=CharTokenizer("abcdefgh"), check=False)
    for path in result.files.values():
        q = quantize_int8(path, path.with_suffix(".int8.onnx"))
        assert q.int8_bytes < q.fp32_bytes and q.ratio < 0.7
    tr = Transcriber(tmp_path / "predictor.int8.onnx")
    assert {p.name for p in tr.paths.values()} == {
        "encoder.int8.onnx", "predictor.int8.onnx", "joiner.int8.onnx"
    }  # fmt: skip
    wave = np.random.default_rng(0).normal(0.0, 0.1, 16000).astype(np.float32)
    assert tr.transcribe_wave(wave).audio_seconds == pytest.approx(1.0)
