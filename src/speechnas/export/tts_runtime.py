"""Text to speech with an exported acoustic model and no PyTorch: eSpeak, ONNX Runtime, librosa.

The exported graph ``acoustic.onnx`` (written by ``speechnas.export.tts``) says what it needs
in its ``metadata_props``: the phoneme inventory, the mel configuration and the eSpeak voice
whose phonemes it was trained on. Synthesis is text → phonemes (eSpeak, the same symbols as in
training) → ids → log-mel (the graph, with the durations it predicts) → waveform (Griffin-Lim,
the inverse of the training mel). Nothing on this module's import path imports torch.

>>> tts = OnnxSynthesizer("export/tts", threads=1)
>>> out = tts.synthesize("three one four")
>>> out.audio, out.sample_rate
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import soundfile as sf

from speechnas.data.tts.mel import MelConfig, griffin_lim
from speechnas.data.tts.phonemes import PhonemeVocab, phonemize
from speechnas.export.transcribe import session_options

__all__ = [
    "ACOUSTIC",
    "ACOUSTIC_FIXED",
    "OnnxSynthesizer",
    "Synthesis",
    "graph_path",
    "synthesize_command",
]

#: File stems of the two graphs of an export folder (``<stem>.onnx``, ``<stem>.int8.onnx``).
ACOUSTIC = "acoustic"
ACOUSTIC_FIXED = "acoustic_fixed"


@dataclass(frozen=True, slots=True)
class Synthesis:
    """One utterance: float32 audio at ``sample_rate``, the log-mel it came from (T, M), the
    phonemes spoken, and where the time went (seconds)."""

    audio: np.ndarray
    sample_rate: int
    mel: np.ndarray
    phonemes: tuple[str, ...]
    acoustic_seconds: float
    compute_seconds: float

    @property
    def seconds(self) -> float:
        """Duration of the audio."""
        return len(self.audio) / self.sample_rate

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time / audio duration."""
        return self.compute_seconds / max(self.seconds, 1e-9)


def graph_path(model_dir: str | Path, stem: str = ACOUSTIC, *, int8: bool = False) -> Path:
    """``<model_dir>/<stem>.onnx`` (``.int8.onnx`` with ``int8``); a ValueError when missing."""
    folder = Path(model_dir)
    path = folder / f"{stem}{'.int8' if int8 else ''}.onnx"
    if not path.is_file():
        hint = " (export with int8=True for the int8 graphs)" if int8 else ""
        raise ValueError(f"model_dir: {folder} has no {path.name}{hint}")
    return path


class OnnxSynthesizer:
    """Speech synthesis with an exported acoustic model folder.

    ``threads`` sets ONNX Runtime's intra-op threads; ``int8`` uses the dynamically quantized
    graph. ``n_iter`` is the number of Griffin-Lim iterations (more: cleaner phase, slower).
    """

    def __init__(
        self, model_dir: str | Path, *, threads: int = 1, int8: bool = False, n_iter: int = 32
    ) -> None:
        self.path = graph_path(model_dir, ACOUSTIC, int8=int8)
        self.session = ort.InferenceSession(
            str(self.path), session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        meta = self.metadata
        missing = [k for k in ("phonemes", "mel", "voice") if k not in meta]
        if meta.get("task") != "tts" or missing:
            raise ValueError(
                f"model_dir: {self.path} is not a speechnas TTS export (task={meta.get('task')!r},"
                f" missing metadata: {', '.join(missing) or 'none'})"
            )
        self.vocab = PhonemeVocab(tuple(json.loads(meta["phonemes"])))
        self.mel_config = MelConfig.from_dict(json.loads(meta["mel"]))
        self.voice = meta["voice"]
        self.n_iter = n_iter

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    def mel(self, phoneme_ids: list[int] | np.ndarray) -> np.ndarray:
        """Phoneme ids (N,) of the model's inventory → log-mel (T, M) with predicted durations."""
        ids = np.asarray(phoneme_ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"phoneme_ids: expected a non-empty 1-D sequence, got {ids.shape}")
        if ids.min() < 1 or ids.max() >= len(self.vocab):
            raise ValueError(
                f"phoneme_ids: ids must be in [1, {len(self.vocab) - 1}] (0 is padding), "
                f"got [{ids.min()}, {ids.max()}]"
            )
        (mel,) = self.session.run(None, {"phonemes": ids[None]})
        return mel[0]

    def synthesize(self, text: str) -> Synthesis:
        """Text → audio: eSpeak phonemes of ``text`` in the model's voice, the acoustic graph,
        Griffin-Lim."""
        start = time.perf_counter()
        phonemes = phonemize(text, self.voice)
        if not phonemes:
            raise ValueError(f"text: {text!r} has nothing to speak (no phonemes)")
        try:
            ids = self.vocab.encode(phonemes)
        except ValueError as err:
            raise ValueError(f"text: {text!r} needs phonemes the model lacks: {err}") from None
        t_acoustic = time.perf_counter()
        mel = self.mel(ids)
        t_vocoder = time.perf_counter()
        audio = griffin_lim(mel, self.mel_config, n_iter=self.n_iter)
        end = time.perf_counter()
        return Synthesis(
            audio=np.asarray(audio, dtype=np.float32),
            sample_rate=self.sample_rate,
            mel=mel,
            phonemes=tuple(phonemes),
            acoustic_seconds=t_vocoder - t_acoustic,
            compute_seconds=end - start,
        )


def _plot_mel(mel: np.ndarray, cfg: MelConfig, path: Path, title: str) -> None:
    """The log-mel (T, M) as a PNG: time on x, mel bands on y. A bare Figure (Agg canvas), so
    no pyplot state or backend is touched."""
    from matplotlib.figure import Figure

    seconds = mel.shape[0] * cfg.hop_length / cfg.sample_rate
    fig = Figure(figsize=(max(4.0, 1.5 + 2.0 * seconds), 3.0), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(
        mel.T, origin="lower", aspect="auto", cmap="magma",
        extent=(0.0, seconds, 0, mel.shape[1]), interpolation="nearest",
    )  # fmt: skip
    ax.set(xlabel="time (s)", ylabel="mel band", title=title)
    fig.colorbar(image, ax=ax, label="log magnitude")
    fig.savefig(path, dpi=120)


def synthesize_command(
    model_dir: str | Path,
    text: str,
    out_wav: str | Path,
    *,
    int8: bool = False,
    threads: int = 1,
    plot: bool = False,
) -> dict[str, Any]:
    """Speaks ``text`` with the export in ``model_dir`` into ``out_wav`` (16-bit PCM WAV); with
    ``plot`` also writes the log-mel as a PNG beside it (same name, ``.png``). Returns what was
    done: files, phonemes, frames, durations, real-time factor."""
    synth = OnnxSynthesizer(model_dir, threads=threads, int8=int8)
    out = synth.synthesize(text)
    wav = Path(out_wav)
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, np.clip(out.audio, -1.0, 1.0), out.sample_rate, subtype="PCM_16")
    png = None
    if plot:
        png = wav.with_suffix(".png")
        _plot_mel(out.mel, synth.mel_config, png, text if len(text) <= 60 else text[:57] + "...")
    return {
        "wav": str(wav),
        "png": str(png) if png else None,
        "text": text,
        "phonemes": list(out.phonemes),
        "frames": int(out.mel.shape[0]),
        "sample_rate": out.sample_rate,
        "audio_seconds": out.seconds,
        "compute_seconds": out.compute_seconds,
        "acoustic_seconds": out.acoustic_seconds,
        "rtf": out.rtf,
        "graph": synth.path.name,
    }
