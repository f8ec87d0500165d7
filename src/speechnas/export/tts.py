"""FastSpeech-style acoustic models as ONNX graphs that describe themselves, checked against
PyTorch.

Two graphs per model, both with the metadata the torch-free synthesizer needs (phoneme
inventory, mel configuration, eSpeak voice, architecture, versions) in their
``metadata_props`` and, for people and tools without ONNX, in ``metadata.json`` beside them:

* ``acoustic.onnx``: phoneme ids ``phonemes`` (1, N) int64 → log-mel ``mel`` (1, T, M) with
  the durations the model predicts; N and T are symbolic. This is what synthesis runs.
* ``acoustic_fixed.onnx``: ``phonemes`` (B, N), ``phoneme_lengths`` (B,), ``durations`` (B, N)
  in frames → ``mel`` (B, T, M) and ``mel_lengths`` (B,), the teacher-forced forward. Its cost
  depends on the given durations only, which makes latency measurements repeatable.

The runtime (:class:`OnnxSynthesizer`, :func:`synthesize_command`) lives in
``speechnas.export.tts_runtime``, which does not import torch; it is re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from speechnas import __version__
from speechnas.data.tts import MelConfig, PhonemeVocab
from speechnas.export.graph import export_module
from speechnas.export.quantize import quantize_int8
from speechnas.export.transcribe import session_options
from speechnas.export.tts_runtime import (
    ACOUSTIC,
    ACOUSTIC_FIXED,
    OnnxSynthesizer,
    Synthesis,
    synthesize_command,
)
from speechnas.nn.tts import FastSpeech, decode_tts
from speechnas.space import Arch
from speechnas.versions import versions

__all__ = [
    "OnnxSynthesizer",
    "Synthesis",
    "TtsExportResult",
    "export_fixed_graph",
    "export_tts",
    "export_tts_checkpoint",
    "synthesize_command",
    "tts_metadata",
]

#: Phoneme counts the graphs are traced at and checked at (any but the traced one).
TRACE_LENGTH = 17
CHECK_LENGTHS = (1, 5, 23, 41)


@dataclass(frozen=True)
class TtsExportResult:
    """What :func:`export_tts` wrote.

    ``paths`` maps "acoustic", "acoustic_fixed", "metadata" (and with int8 "acoustic.int8",
    "acoustic_fixed.int8") to files; ``parity`` maps "graph/check" to the largest absolute
    difference between ONNX Runtime and eager PyTorch (valid frames only; inf when the frame
    counts differ) and ``max_parity`` is its maximum. ``int8_diff``: the largest absolute
    difference of the int8 fixed-duration graph's mel from the float graph's on the same
    inputs (None without int8); ``sizes`` maps file names to bytes.
    """

    paths: dict[str, Path]
    max_parity: float
    parity: dict[str, float] = field(default_factory=dict)
    int8_diff: float | None = None
    sizes: dict[str, int] = field(default_factory=dict)


class _Infer(nn.Module):
    """phonemes (1, N) → mel (1, T, M) with predicted durations."""

    def __init__(self, model: FastSpeech) -> None:
        super().__init__()
        self.model = model

    def forward(self, phonemes: torch.Tensor) -> torch.Tensor:
        return self.model.infer(phonemes)


class _Fixed(nn.Module):
    """phonemes (B, N), phoneme_lengths (B,), durations (B, N) → mel (B, T, M), mel_lengths (B,)."""

    def __init__(self, model: FastSpeech) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, phonemes: torch.Tensor, phoneme_lengths: torch.Tensor, durations: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(phonemes, phoneme_lengths, durations)
        return out.mel_post, out.mel_lengths


def tts_metadata(*, vocab: PhonemeVocab, mel: MelConfig, voice: str, arch: Arch) -> dict[str, str]:
    """The metadata every graph of a TTS export carries (``graph`` is added per file); every
    value a string, JSON where structured, as in ASR exports."""
    return {
        "speechnas_version": __version__,
        "task": "tts",
        "phonemes": json.dumps(list(vocab.symbols)),
        "n_phonemes": str(len(vocab)),
        "mel": json.dumps(mel.to_dict(), sort_keys=True),
        "n_mels": str(mel.n_mels),
        "voice": voice,
        "arch": arch.key(),
        "versions": json.dumps(versions(), sort_keys=True),
    }


def _random_phonemes(n: int, n_phonemes: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) ids of real phonemes (1..n_phonemes-1; 0 is padding)."""
    return torch.randint(1, n_phonemes, (n,), generator=gen)


def _fixed_batch(
    lengths: list[int], n_phonemes: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A padded batch of random phonemes with random durations of 0-6 frames (0 beyond each
    length), every utterance at least one frame long."""
    n = max(lengths)
    phonemes = torch.zeros(len(lengths), n, dtype=torch.long)
    durations = torch.zeros(len(lengths), n, dtype=torch.long)
    for b, k in enumerate(lengths):
        phonemes[b, :k] = _random_phonemes(k, n_phonemes, gen)
        durations[b, :k] = torch.randint(0, 7, (k,), generator=gen)
        durations[b, 0] += 1
    return phonemes, torch.tensor(lengths, dtype=torch.long), durations


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))


def _infer_parity(module: _Infer, path: Path, inputs: list[torch.Tensor]) -> float:
    session = _session(path)
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            ref = module(x[None]).numpy()
        (got,) = session.run(None, {"phonemes": x[None].numpy()})
        worst = max(worst, _max_diff(got, ref))
    return worst


def _fixed_run(
    session: ort.InferenceSession, batch: tuple[torch.Tensor, ...]
) -> tuple[np.ndarray, np.ndarray]:
    names = ("phonemes", "phoneme_lengths", "durations")
    mel, lengths = session.run(None, {k: v.numpy() for k, v in zip(names, batch, strict=True)})
    return mel, lengths


def _fixed_parity(module: _Fixed, path: Path, batches: list[tuple[torch.Tensor, ...]]) -> float:
    session = _session(path)
    worst = 0.0
    for batch in batches:
        with torch.no_grad():
            ref, ref_len = module(*batch)
        got, got_len = _fixed_run(session, batch)
        worst = max(worst, _max_diff(got_len, ref_len.numpy()))
        if got.shape != tuple(ref.shape):
            return float("inf")
        for b, t in enumerate(ref_len.tolist()):
            worst = max(worst, _max_diff(got[b, :t], ref[b, :t].numpy()))
    return worst


def _int8_diff(fp32: Path, int8: Path, batches: list[tuple[torch.Tensor, ...]]) -> float:
    """Largest |int8 - float| of the fixed-duration graphs' mels over valid frames."""
    a, b = _session(fp32), _session(int8)
    worst = 0.0
    for batch in batches:
        ref, lengths = _fixed_run(a, batch)
        got, _ = _fixed_run(b, batch)
        for i, t in enumerate(lengths.tolist()):
            worst = max(worst, _max_diff(got[i, :t], ref[i, :t]))
    return worst


def export_fixed_graph(
    model: FastSpeech, path: str | Path, *, metadata: Mapping[str, str] | None = None
) -> Path:
    """Writes only the fixed-duration graph of ``model`` (``acoustic_fixed``: phonemes (B, N),
    phoneme_lengths (B,), durations (B, N) → mel (B, T, M), mel_lengths (B,)) at ``path``,
    e.g. to time an architecture; ``metadata`` goes into its ``metadata_props``."""
    gen = torch.Generator().manual_seed(0)  # trace inputs: only their shapes matter
    trace = _fixed_batch([TRACE_LENGTH, TRACE_LENGTH - 5], model.n_phonemes, gen)
    was_training = model.training
    try:
        return export_module(
            _Fixed(model).eval(), trace, path,
            input_names=["phonemes", "phoneme_lengths", "durations"],
            output_names=["mel", "mel_lengths"],
            dynamic_axes={"phonemes": {0: "batch", 1: "phonemes"}, "phoneme_lengths": {0: "batch"},
                          "durations": {0: "batch", 1: "phonemes"},
                          "mel": {0: "batch", 1: "frames"}, "mel_lengths": {0: "batch"}},
            metadata=metadata,
        )  # fmt: skip
    finally:
        model.train(was_training)


def export_tts(
    model: FastSpeech,
    out_dir: str | Path,
    *,
    vocab: PhonemeVocab,
    mel: MelConfig,
    voice: str,
    arch: Arch,
    int8: bool = False,
    check: bool = True,
    seed: int = 0,
) -> TtsExportResult:
    """Writes ``model`` as ``acoustic.onnx`` and ``acoustic_fixed.onnx`` (see the module
    docstring) plus ``metadata.json`` under ``out_dir``.

    ``vocab`` is the phoneme inventory the model was trained on, ``mel`` its mel
    configuration, ``voice`` the eSpeak voice whose phonemes it reads, ``arch`` its
    architecture (must decode to ``model.spec``). The graphs are traced at
    ``TRACE_LENGTH`` phonemes; with ``check`` both are compared with eager PyTorch on random
    phoneme ids (``seed``) at each of ``CHECK_LENGTHS`` (fixed graph: batches of unequal
    lengths too). With ``int8`` both graphs are also written dynamically quantized as
    ``<name>.int8.onnx``, and their difference from the float graph is measured.
    """
    if decode_tts(arch) != model.spec:
        raise ValueError(f"arch: {arch.key()} does not decode to the model's spec {model.spec}")
    if len(vocab) != model.n_phonemes:
        raise ValueError(
            f"vocab: {len(vocab)} symbols, the model embeds {model.n_phonemes} phoneme ids"
        )
    if mel.n_mels != model.n_mels:
        raise ValueError(f"mel: n_mels={mel.n_mels}, the model predicts {model.n_mels} bands")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = tts_metadata(vocab=vocab, mel=mel, voice=voice, arch=arch)
    gen = torch.Generator().manual_seed(seed)
    n_ph = len(vocab)
    was_training = model.training
    model.eval()
    infer, fixed = _Infer(model).eval(), _Fixed(model).eval()
    paths: dict[str, Path] = {}
    parity: dict[str, float] = {}
    checks = [
        _fixed_batch([TRACE_LENGTH + 6, TRACE_LENGTH // 2], n_ph, gen),
        *[_fixed_batch([n], n_ph, gen) for n in CHECK_LENGTHS],
    ]
    try:
        paths[ACOUSTIC] = export_module(
            infer, (_random_phonemes(TRACE_LENGTH, n_ph, gen)[None],), out / f"{ACOUSTIC}.onnx",
            input_names=["phonemes"], output_names=["mel"],
            dynamic_axes={"phonemes": {1: "phonemes"}, "mel": {1: "frames"}},
            metadata={**meta, "graph": ACOUSTIC},
        )  # fmt: skip
        paths[ACOUSTIC_FIXED] = export_fixed_graph(
            model, out / f"{ACOUSTIC_FIXED}.onnx", metadata={**meta, "graph": ACOUSTIC_FIXED}
        )
        if check:
            inputs = [_random_phonemes(n, n_ph, gen) for n in CHECK_LENGTHS]
            parity[f"{ACOUSTIC}/mel"] = _infer_parity(infer, paths[ACOUSTIC], inputs)
            parity[f"{ACOUSTIC_FIXED}/mel"] = _fixed_parity(fixed, paths[ACOUSTIC_FIXED], checks)
    finally:
        model.train(was_training)
    int8_diff = None
    if int8:
        for stem in (ACOUSTIC, ACOUSTIC_FIXED):
            src = paths[stem]
            paths[f"{stem}.int8"] = quantize_int8(src, src.with_suffix(".int8.onnx")).path
        int8_diff = _int8_diff(paths[ACOUSTIC_FIXED], paths[f"{ACOUSTIC_FIXED}.int8"], checks)
    readable: dict[str, Any] = {
        k: (json.loads(v) if k in ("phonemes", "mel", "arch", "versions") else v)
        for k, v in meta.items()
    }
    readable["graphs"] = {k: p.name for k, p in paths.items()}
    paths["metadata"] = out / "metadata.json"
    paths["metadata"].write_text(json.dumps(readable, indent=2, sort_keys=True) + "\n")
    return TtsExportResult(
        paths=paths,
        max_parity=max(parity.values(), default=0.0),
        parity=parity,
        int8_diff=int8_diff,
        sizes={p.name: p.stat().st_size for p in paths.values()},
    )


def export_tts_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    voice: str | None = None,
    int8: bool = False,
    check: bool = True,
) -> TtsExportResult:
    """Loads a TTS checkpoint folder (``speechnas.train.tts``) and exports its model with its
    phoneme inventory and mel configuration. ``voice`` defaults to the checkpoint's own."""
    from speechnas.train.tts import load_tts_model

    model, meta = load_tts_model(checkpoint)
    voice = voice or meta.get("voice")
    if not voice:
        raise ValueError(
            f"voice: {checkpoint} does not record the eSpeak voice it was trained on; pass it"
        )
    return export_tts(
        model, out_dir, vocab=PhonemeVocab(tuple(meta["phonemes"])),
        mel=MelConfig.from_dict(meta["mel"]), voice=voice, arch=Arch.from_json(meta["arch"]),
        int8=int8, check=check,
    )  # fmt: skip
