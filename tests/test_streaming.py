"""Streaming: chunk-by-chunk encoders with explicit states equal the masked full forward, for
every streaming family; look-ahead; incremental decoding and features; the streaming ONNX graph
and its torch-free transcriber."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH, tiny_config

from speechnas.data.audio import read_audio
from speechnas.data.dataset import SpeechDataset
from speechnas.data.features import FeatureExtractor
from speechnas.data.loading import load_utterances
from speechnas.data.synth.corpus import CorpusInfo
from speechnas.evaluate.streaming import emission_times, evaluate_streaming, stream_decode
from speechnas.export.features_np import compute_features
from speechnas.export.stream_transcribe import IncrementalFeatures, StreamingTranscriber
from speechnas.export.streaming import export_streaming
from speechnas.nn.build import SpeechModel, build
from speechnas.nn.decoders.ctc import CTCPrefixBeam, ctc_prefix_beam_search
from speechnas.nn.spec import decode
from speechnas.nn.streaming import stream_encode
from speechnas.space import Arch
from speechnas.train.config import DynamicChunkConfig
from speechnas.train.trainer import Trainer

STREAM = {"streaming": True, "chunk_size": 4, "left_chunks": 2, "frontend": "fbank40"}
FAMILIES: dict[str, dict[str, object]] = {
    "conformer-rel": {"encoder": "conformer", "heads": 4, "attention": "rel", "conv_kernel": 5},
    "conformer-abs-convfirst": {"encoder": "conformer", "heads": 2, "attention": "abs",
                                "module_order": "conv_first", "conv_kernel": 3},
    "conformer-local": {"encoder": "conformer", "heads": 2, "attention": "local",
                        "attention_window": 5},
    "transformer": {"encoder": "transformer", "heads": 4, "attention": "abs"},
    "ebranchformer": {"encoder": "ebranchformer", "heads": 2, "attention": "rel"},
    "lstm": {"encoder": "lstm", "lstm_hidden": 24},
    "cnn-se": {"encoder": "cnn", "cnn_se": True, "cnn_dilation": 2},
}  # fmt: skip


def _arch(family: str, **change: object) -> Arch:
    spec = {"d_model": 32, "layers": 2, **STREAM, **FAMILIES[family], **change}
    if spec["encoder"] in ("conformer", "transformer", "ebranchformer"):
        spec["ffn_dim"] = 48
    return Arch(spec)


def _model(arch: Arch, vocab: int = 9, seed: int = 0) -> SpeechModel:
    torch.manual_seed(seed)
    model = build(arch, vocab_size=vocab).eval()
    with torch.no_grad():  # the look-ahead starts at zero: make every weight count
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _feats(model: SpeechModel, lengths: list[int], seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), model.features.dim, generator=gen)
    for b, n in enumerate(lengths):
        x[b, n:] = 0.0
    return x


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize(("chunk", "lookahead", "factor"), [(4, 0, 4), (3, 2, 6), (8, 5, 4)])
def test_chunk_by_chunk_equals_the_masked_full_forward(
    family: str, chunk: int, lookahead: int, factor: int
) -> None:
    model = _model(_arch(family, chunk_size=chunk, lookahead=lookahead, subsampling_factor=factor))
    lengths = [183, 121]  # unequal rows; both end inside a chunk
    x = _feats(model, lengths)
    n = torch.tensor(lengths)
    with torch.no_grad():
        full, full_lens = model.encode(x, n)
    streamed = stream_encode(model, x, n)
    assert torch.equal(streamed.lengths, full_lens)
    for b, t in enumerate(full_lens.tolist()):
        torch.testing.assert_close(streamed.enc[b, :t], full[b, :t], atol=2e-5, rtol=1e-4)
    assert len(streamed.ready_ms[0]) == -(-int(full_lens[0]) // chunk)
    assert list(streamed.ready_ms[0]) == sorted(streamed.ready_ms[0])


def test_state_names_match_the_states() -> None:
    for family in FAMILIES:
        model = _model(_arch(family))
        states = model.init_states(3)
        names = model.state_names()
        assert len(names) == len(states) and len(set(names)) == len(names)
        if family != "lstm":
            assert names[0] == "offset" and states[0].dtype == torch.long


def test_a_chunk_sees_no_frame_beyond_its_look_ahead() -> None:
    model = _model(_arch("conformer-rel", chunk_size=4, lookahead=2))
    geo = model.stream_geometry()
    x = _feats(model, [200])
    n = torch.tensor([200])
    with torch.no_grad():
        base, _ = model.encode(x, n)
        # Change every feature frame after chunk 3's window: chunks 0..3 must not move.
        y = x.clone()
        y[:, 3 * geo.hop + geo.window :] += 5.0
        moved, _ = model.encode(y, n)
    torch.testing.assert_close(moved[:, : 4 * geo.chunk], base[:, : 4 * geo.chunk])
    assert not torch.allclose(moved[:, 4 * geo.chunk :], base[:, 4 * geo.chunk :])


def test_look_ahead_is_part_of_the_algorithmic_latency() -> None:
    none = decode(_arch("lstm", chunk_size=8, lookahead=0)).stream_geometry
    one = decode(_arch("lstm", chunk_size=8, lookahead=8)).stream_geometry
    assert none.chunk_ms == 320 and one.lookahead_ms == 320
    assert one.algorithmic_latency_ms - none.algorithmic_latency_ms == pytest.approx(320)
    # 320 ms chunk + subsampling context (7 - 4 frames) + the FFT window beyond one hop.
    assert none.algorithmic_latency_ms == pytest.approx(320 + 30 + 32 - 10)


def test_bad_streaming_architectures_are_named() -> None:
    with pytest.raises(ValueError, match="lookahead: only a streaming"):
        decode({"encoder": "lstm", "d_model": 32, "layers": 1, "lstm_hidden": 8, "lookahead": 2})
    with pytest.raises(ValueError, match="blstm"):
        decode({"encoder": "blstm", "d_model": 32, "layers": 1, "lstm_hidden": 8, **STREAM})
    with pytest.raises(ValueError, match="does not stream"):
        build(TINY_ARCH, vocab_size=5).init_states(1)
    model = _model(_arch("transformer", lookahead=2))
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        model.configure_streaming(chunk=4, lookahead=3)
    with pytest.raises(ValueError, match="window of"):
        model.streaming_forward(torch.zeros(1, 5, 40), torch.tensor([1]), model.init_states(1))


def test_one_model_streams_at_other_chunk_sizes_and_less_look_ahead() -> None:
    model = _model(_arch("conformer-rel", chunk_size=4, lookahead=4))
    x = _feats(model, [170])
    n = torch.tensor([170])
    for chunk, lookahead in [(2, 0), (8, 4), (4, 1)]:
        model.configure_streaming(chunk=chunk, lookahead=lookahead)
        with torch.no_grad():
            full, _ = model.encode(x, n)
        torch.testing.assert_close(stream_encode(model, x, n).enc, full, atol=2e-5, rtol=1e-4)
    model.configure_streaming(chunk=None)
    with pytest.raises(ValueError, match="full context"):
        model.stream_geometry()


def test_ctc_prefix_beam_search_in_pieces_equals_one_call() -> None:
    gen = torch.Generator().manual_seed(3)
    lp = torch.log_softmax(torch.randn(23, 6, generator=gen), dim=-1)
    whole = ctc_prefix_beam_search(lp, beam=4)
    search = CTCPrefixBeam(4)
    for lo in range(0, 23, 5):
        search.step(lp[lo : lo + 5])
    assert search.results() == whole


@pytest.mark.parametrize("decoder", ["ctc", "rnnt", "attention"])
def test_streaming_search_ends_where_the_full_search_ends(decoder: str) -> None:
    model = _model(_arch("conformer-rel", decoder=decoder, pred_dim=16), vocab=7)
    x = _feats(model, [150, 97])
    n = torch.tensor([150, 97])
    streamed = stream_encode(model, x, n)
    partials = stream_decode(model, streamed)
    if decoder == "attention":  # a hybrid streams through its CTC head
        enc, lens = model.encode(x, n)
        want = model.decoder.ctc.decode(enc, lens)
    else:
        want = model.decode(x, n)
    assert [p[-1] for p in partials] == want
    for p in partials:  # greedy partial results only grow
        assert all(p[i] == p[i + 1][: len(p[i])] for i in range(len(p) - 1))
    if decoder == "ctc":
        beam = stream_decode(model, streamed, beam=3)
        enc, lens = model.encode(x, n)
        assert [p[-1] for p in beam] == model.decoder.decode(enc, lens, beam=3)


def test_emission_time_is_when_a_token_settled() -> None:
    partials = [[], [3], [3, 4], [3, 5], [3, 5, 6]]
    ready = [100.0, 200.0, 300.0, 400.0, 500.0]
    assert emission_times(partials, ready) == [200.0, 400.0, 500.0]
    assert emission_times([[]], [100.0]) == []


@pytest.mark.parametrize("frontend", ["fbank40", "knf80"])
def test_incremental_features_equal_the_whole_waveform_features(frontend: str) -> None:
    cfg = decode(_arch("lstm", frontend=frontend)).features
    wave = np.random.default_rng(0).standard_normal(16000 + 137).astype(np.float32) * 0.1
    want, n = compute_features(wave, cfg)
    inc = IncrementalFeatures(cfg)
    rng = np.random.default_rng(1)
    got, i = [], 0
    while i < len(wave):
        step = int(rng.integers(1, 900))
        got.append(inc.accept(wave[i : i + step]))
        assert sum(len(g) for g in got) <= cfg.num_frames(i + step)  # nothing before its audio
        i += step
    got.append(inc.finish())  # Kaldi's last frames reflect the end: they wait for it
    frames = np.concatenate(got)
    assert frames.shape == (n, cfg.dim)
    np.testing.assert_allclose(frames, want[:n], atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def streaming_run(tiny_corpus: CorpusInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny streaming Conformer trained for a few epochs with dynamic chunks."""
    out = tmp_path_factory.mktemp("stream-run")
    arch = Arch({**TINY_ARCH, **STREAM, "frontend": "fbank80", "lookahead": 4})
    cfg = tiny_config(tiny_corpus, out, max_epochs=4).replace(
        arch=arch.to_json(), dynamic_chunk=DynamicChunkConfig(chunks=(2, 4, 8))
    )
    Trainer.from_config(cfg, show_progress=False).fit()
    return out / "best"


def _audio(corpus: CorpusInfo, split: str) -> list[Path]:
    lines = corpus.manifests[split].read_text().splitlines()
    return [corpus.folder / json.loads(line)["audio_filepath"] for line in lines]


def test_streaming_onnx_and_its_transcriber_equal_pytorch(
    streaming_run: Path, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    from speechnas.train.checkpoint import load_model

    loaded = load_model(streaming_run)
    loaded.model.configure_streaming(chunk=4, lookahead=4)
    result = export_streaming(loaded.model, tmp_path, tokenizer=loaded.tokenizer, int8=True)
    assert result.parity["stream/log_probs"] < 1e-4
    assert result.parity["stream_vs_full/log_probs"] < 1e-4
    assert result.int8_path is not None and result.int8_path.is_file()
    assert json.loads(result.metadata["stream_states"])["offset"] == [1]
    tr = StreamingTranscriber(tmp_path, threads=1)
    for path in _audio(tiny_corpus, "test")[:4]:
        wave = read_audio(path, sample_rate=16000)
        feats, n = FeatureExtractor(loaded.features)(torch.from_numpy(wave)[None])
        streamed = stream_encode(loaded.model, feats, n)
        want = stream_decode(loaded.model, streamed)[0]
        got = tr.transcribe_file(path, piece_ms=70)
        assert got.tokens == want[-1]
        assert len(got.chunk_seconds) == len(streamed.ready_ms[0])
        assert [t for _, t in got.partials] == [loaded.tokenizer.decode(p) for p in want]


def test_streaming_transcriber_imports_no_torch(streaming_run: Path, tmp_path: Path) -> None:
    from speechnas.train.checkpoint import load_model

    loaded = load_model(streaming_run)
    export_streaming(loaded.model, tmp_path, tokenizer=loaded.tokenizer, check=False)
    code = (
        "import sys, numpy as np\n"
        "from speechnas.export.stream_transcribe import StreamingTranscriber\n"
        "t = StreamingTranscriber(sys.argv[1])\n"
        "t.accept(np.zeros(8000, dtype=np.float32)); t.finish()\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_streaming_evaluation_scores_a_manifest(
    streaming_run: Path, tiny_corpus: CorpusInfo
) -> None:
    from speechnas.train.checkpoint import load_model

    loaded = load_model(streaming_run)
    utts = load_utterances(tiny_corpus.manifests["test"], skip_invalid=False)
    ds = SpeechDataset(utts, loaded.tokenizer, loaded.features)
    ev = evaluate_streaming(loaded.model, ds)
    assert ev.rates.utterances == len(utts)
    assert ev.chunks > len(utts)
    assert ev.rtf > 0
    d = ev.to_dict()
    assert set(d) >= {"wer", "first_token_delay_ms", "last_token_delay_ms", "rtf"}


def test_dynamic_chunk_needs_a_streaming_architecture(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = tiny_config(tiny_corpus, tmp_path).replace(dynamic_chunk=DynamicChunkConfig())
    with pytest.raises(ValueError, match="dynamic_chunk: the architecture does not stream"):
        Trainer.from_config(cfg, show_progress=False)
    with pytest.raises(ValueError, match=r"dynamic_chunk\.full_context"):
        DynamicChunkConfig(full_context=1.5)
    assert dataclasses.asdict(DynamicChunkConfig())["chunks"] == (4, 8, 16)
