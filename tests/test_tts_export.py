"""TTS export: ONNX graphs against eager PyTorch, int8 copies, the torch-free synthesizer and
the ASR judge of intelligibility."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from speechnas.data.synth.espeak import Espeak
from speechnas.data.synth.text import normalize_text
from speechnas.data.synth.voice import Voice
from speechnas.data.tts import MelConfig, PhonemeVocab, frames, phonemize
from speechnas.evaluate.metrics import error_rates
from speechnas.export.transcribe import Transcriber, read_metadata
from speechnas.export.tts import (
    OnnxSynthesizer,
    TtsExportResult,
    export_tts,
    export_tts_checkpoint,
)
from speechnas.export.tts_judge import judge_texts
from speechnas.nn.tts import FastSpeech, decode_tts
from speechnas.space import Arch
from speechnas.train.checkpoint import save_checkpoint

VOICE = "en-us"
TEXTS = ("three one four", "the old dog saw a red car", "nine")
# Every kind of layer op in a small model, with energy and a postnet.
ARCH = Arch(
    {
        "d_model": 64, "heads": 2, "enc_layers": 3, "dec_layers": 3,
        "enc_op": ("attn", "sep9", "lstm"), "enc_ffn": (128, 0, 128),
        "dec_op": ("glu5", "attn", "sep5"), "dec_ffn": (0, 128, 128),
        "ffn_kernel": 3, "variance_dim": 64, "energy": True, "postnet": True,
    }
)  # fmt: skip
MEL = MelConfig()

# Runs in a fresh interpreter: synthesizes, writes a WAV and PNG, reports the loaded modules.
NO_TORCH = """
import json, sys
from speechnas.export.tts_runtime import OnnxSynthesizer, synthesize_command
out = OnnxSynthesizer(sys.argv[1]).synthesize(sys.argv[2])
report = synthesize_command(sys.argv[1], sys.argv[2], sys.argv[3], plot=True)
print(json.dumps({"mel": out.mel.tolist(), "samples": len(out.audio), "report": report,
                  "torch": "torch" in sys.modules}))
"""


def _vocab() -> PhonemeVocab:
    """The phonemes of the test texts (a real inventory would come from a corpus)."""
    symbols = sorted({p for t in TEXTS for p in phonemize(t, VOICE)})
    return PhonemeVocab(("<pad>", *symbols))


def _model(vocab: PhonemeVocab, seed: int = 0) -> FastSpeech:
    """An untrained model whose predicted durations vary around 3 frames (not all zero)."""
    torch.manual_seed(seed)
    model = FastSpeech(decode_tts(ARCH), n_phonemes=len(vocab), n_mels=MEL.n_mels, dropout=0.0)
    with torch.no_grad():
        model.duration.out.bias.fill_(math.log(4.0))
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[FastSpeech, TtsExportResult]:
    vocab = _vocab()
    model = _model(vocab)
    out = tmp_path_factory.mktemp("tts")
    result = export_tts(model, out, vocab=vocab, mel=MEL, voice=VOICE, arch=ARCH, int8=True)
    return model, result


def _torch_infer(model: FastSpeech, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model.infer(torch.tensor([ids]))[0].numpy()


def test_export_writes_self_describing_graphs_that_match_pytorch(
    exported: tuple[FastSpeech, TtsExportResult],
) -> None:
    _, result = exported
    paths = result.paths
    assert set(paths) == {
        "acoustic", "acoustic_fixed", "acoustic.int8", "acoustic_fixed.int8", "metadata"
    }  # fmt: skip
    assert all(p.is_file() for p in paths.values())
    assert set(result.parity) == {"acoustic/mel", "acoustic_fixed/mel"}
    assert result.max_parity <= 1e-3
    meta = read_metadata(paths["acoustic.int8"])
    assert meta["task"] == "tts" and meta["voice"] == VOICE and meta["graph"] == "acoustic"
    assert meta["quantization"] == "int8-dynamic"
    assert json.loads(meta["phonemes"]) == list(_vocab().symbols)
    assert MelConfig.from_dict(json.loads(meta["mel"])) == MEL
    assert Arch.from_json(json.loads(meta["arch"])) == ARCH
    beside = json.loads(paths["metadata"].read_text())
    assert beside["voice"] == VOICE and beside["mel"] == MEL.to_dict()
    assert read_metadata(paths["acoustic_fixed"])["graph"] == "acoustic_fixed"


def test_predicted_duration_graph_equals_infer_at_several_lengths(
    exported: tuple[FastSpeech, TtsExportResult],
) -> None:
    model, result = exported
    synth = OnnxSynthesizer(result.paths["acoustic"].parent)
    gen = torch.Generator().manual_seed(7)
    n_frames = []
    for n in (1, 2, 9, 30, 64):
        ids = torch.randint(1, model.n_phonemes, (n,), generator=gen).tolist()
        ref, got = _torch_infer(model, ids), synth.mel(ids)
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-3
        n_frames.append(ref.shape[0])
    assert len(set(n_frames)) == len(n_frames)  # the frame count follows the phonemes
    assert n_frames[-1] > 64  # durations of several frames were predicted


def test_fixed_duration_graph_equals_the_teacher_forced_forward(
    exported: tuple[FastSpeech, TtsExportResult],
) -> None:
    import onnxruntime as ort

    model, result = exported
    session = ort.InferenceSession(str(result.paths["acoustic_fixed"]))
    gen = torch.Generator().manual_seed(3)
    lengths = [12, 5, 20]
    phonemes = torch.zeros(3, 20, dtype=torch.long)
    durations = torch.zeros(3, 20, dtype=torch.long)
    for b, n in enumerate(lengths):
        phonemes[b, :n] = torch.randint(1, model.n_phonemes, (n,), generator=gen)
        durations[b, :n] = torch.randint(0, 8, (n,), generator=gen)
    lengths_t = torch.tensor(lengths)
    with torch.no_grad():
        ref = model(phonemes, lengths_t, durations)
    mel, mel_lengths = session.run(
        None,
        {"phonemes": phonemes.numpy(), "phoneme_lengths": lengths_t.numpy(),
         "durations": durations.numpy()},
    )  # fmt: skip
    np.testing.assert_array_equal(mel_lengths, durations.sum(1).numpy())
    np.testing.assert_array_equal(mel_lengths, ref.mel_lengths.numpy())
    for b, t in enumerate(mel_lengths.tolist()):
        assert np.abs(mel[b, :t] - ref.mel_post[b, :t].numpy()).max() <= 1e-3


def test_int8_graphs_run_and_stay_close(exported: tuple[FastSpeech, TtsExportResult]) -> None:
    import onnxruntime as ort

    _, result = exported
    assert result.int8_diff is not None and 0.0 < result.int8_diff < math.inf
    # The fixed-duration graphs on one utterance: int8 against float, frame by frame.
    ids = _vocab().encode(phonemize(TEXTS[1], VOICE))
    feeds = {
        "phonemes": np.array([ids]), "phoneme_lengths": np.array([len(ids)]),
        "durations": np.full((1, len(ids)), 3),
    }  # fmt: skip
    ref, _ = ort.InferenceSession(str(result.paths["acoustic_fixed"])).run(None, feeds)
    got, _ = ort.InferenceSession(str(result.paths["acoustic_fixed.int8"])).run(None, feeds)
    diff = np.abs(got - ref)
    print(f"int8 vs float mel: max {diff.max():.4f}, mean {diff.mean():.4f}, std {ref.std():.4f}")
    # The quantization error is small against the spread of the mel values.
    assert diff.max() < 0.2 * ref.std() and diff.mean() < 0.05 * ref.std()
    # The predicted-duration graph runs in int8 too (its rounded durations may differ).
    mel = OnnxSynthesizer(result.paths["acoustic"].parent, int8=True).mel(ids)
    assert mel.shape[1] == MEL.n_mels and np.isfinite(mel).all()


def test_synthesizer_needs_no_torch_and_its_mel_equals_pytorch(
    exported: tuple[FastSpeech, TtsExportResult], tmp_path: Path
) -> None:
    model, result = exported
    folder = result.paths["acoustic"].parent
    text = TEXTS[0]
    wav = tmp_path / "out.wav"
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(folder), text, str(wav)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["torch"] is False
    mel = np.array(out["mel"], dtype=np.float32)
    ref = _torch_infer(model, _vocab().encode(phonemize(text, VOICE)))
    assert mel.shape == ref.shape and np.abs(mel - ref).max() <= 1e-3
    # Griffin-Lim with centred frames: (T - 1) hops of audio, whose own mel has T frames.
    assert out["samples"] == (mel.shape[0] - 1) * MEL.hop_length
    assert frames(out["samples"], MEL) == mel.shape[0]
    report = out["report"]
    assert report["frames"] == mel.shape[0] and report["sample_rate"] == MEL.sample_rate
    audio, rate = sf.read(wav, dtype="float32")
    assert rate == MEL.sample_rate and len(audio) == out["samples"]
    assert Path(report["png"]).is_file() and Path(report["png"]).stat().st_size > 1000
    assert report["phonemes"] == phonemize(text, VOICE) and report["rtf"] > 0


def test_synthesizer_rejects_what_it_cannot_speak(
    exported: tuple[FastSpeech, TtsExportResult], tmp_path: Path
) -> None:
    _, result = exported
    synth = OnnxSynthesizer(result.paths["acoustic"].parent)
    with pytest.raises(ValueError, match="phoneme_ids"):
        synth.mel([0, 1])
    with pytest.raises(ValueError, match=r"has no acoustic\.onnx"):
        OnnxSynthesizer(tmp_path)


def test_export_checks_the_model_against_its_description(tmp_path: Path) -> None:
    vocab = _vocab()
    model = _model(vocab)
    other = ARCH.replace(postnet=False)
    with pytest.raises(ValueError, match="arch"):
        export_tts(model, tmp_path, vocab=vocab, mel=MEL, voice=VOICE, arch=other)
    small = PhonemeVocab(vocab.symbols[:-1])
    with pytest.raises(ValueError, match="vocab"):
        export_tts(model, tmp_path, vocab=small, mel=MEL, voice=VOICE, arch=ARCH)


def test_a_checkpoint_exports_with_its_inventory_and_mel_config(tmp_path: Path) -> None:
    vocab = _vocab()
    model = _model(vocab, seed=1)
    meta = {"task": "tts", "arch": ARCH.to_json(), "phonemes": list(vocab.symbols),
            "mel": MEL.to_dict()}  # fmt: skip
    save_checkpoint(tmp_path / "best", model, meta)
    with pytest.raises(ValueError, match="voice"):
        export_tts_checkpoint(tmp_path / "best", tmp_path / "onnx")
    result = export_tts_checkpoint(tmp_path / "best", tmp_path / "onnx", voice=VOICE)
    assert result.max_parity <= 1e-3 and "acoustic.int8" not in result.paths
    ids = vocab.encode(phonemize(TEXTS[2], VOICE))
    got = OnnxSynthesizer(tmp_path / "onnx").mel(ids)
    assert np.abs(got - _torch_infer(model, ids)).max() <= 1e-3


# --------------------------------------------------------------------------------------------
# The judge: an exported ASR model transcribes synthesized speech
# --------------------------------------------------------------------------------------------


def test_judge_transcribes_audio_at_its_own_rate_and_scores_it(tiny_judge: Path) -> None:
    espeak = Espeak.get()
    texts = ["Three one four.", "nine two", "oh five"]
    audios = [espeak.synthesize(t, Voice("en-us", "m1")) for t in texts]
    rate = espeak.sample_rate
    assert rate != 16000  # the judge resamples
    result = judge_texts(audios, rate, texts, tiny_judge)
    assert result.references == ("three one four", "nine two", "oh five")
    assert len(result.hypotheses) == len(texts) and any(result.hypotheses)
    assert result.cer >= 0.0 and result.wer >= 0.0
    transcriber = Transcriber(tiny_judge)
    expected = [
        normalize_text(
            transcriber.transcribe_wave(np.clip(soxr.resample(a, rate, 16000, "HQ"), -1, 1)).text
        )
        for a in audios
    ]
    assert list(result.hypotheses) == expected
    rates = error_rates(list(result.references), expected)
    assert (result.cer, result.wer) == (rates.cer, rates.wer)
    # Audio already at the judge's rate, and an open transcriber, give the same.
    at_16k = [np.clip(soxr.resample(a, rate, 16000, "HQ"), -1, 1) for a in audios]
    assert judge_texts(at_16k, 16000, texts, transcriber) == result
    with pytest.raises(ValueError, match="texts"):
        judge_texts(audios, rate, texts[:2], transcriber)
