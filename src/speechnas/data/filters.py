"""Feature configuration and the fixed matrices of the feature pipeline, in numpy only.

Training (``speechnas.data.features``, PyTorch) and the standalone transcriber
(``speechnas.export.features_np``, numpy) both take their window, mel filters and DCT from here,
so the two compute the same features from one definition. Nothing here imports torch.

The mel matrix and DCT are written here because torchaudio has no build for the PyTorch that
the CPU install pins, and librosa would pull a large stack for two small matrices.

The "knf" kind is Kaldi's filterbank as kaldi-native-fbank computes it (:func:`kaldi_fbank`),
the features sherpa-onnx computes on device; training and the transcriber call the same
function, so the three agree by construction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

FeatureKind = Literal["fbank", "mfcc", "waveform", "knf"]
KINDS: tuple[str, ...] = ("fbank", "mfcc", "waveform", "knf")

#: Floor of the mel power before the log.
LOG_FLOOR = 1e-10


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """How waveforms become feature frames.

    ``kind="knf"``: Kaldi filterbank (kaldi-native-fbank: Povey window, pre-emphasis 0.97, DC
    removal, no dither, frames centred without snipping the edges, 25/10 ms by default) with
    ``n_mels`` bins from ``f_min`` to ``f_max``, where ``f_max <= 0`` means that far below the
    Nyquist frequency, as in Kaldi.
    """

    kind: FeatureKind = "fbank"
    sample_rate: int = 16000
    n_mels: int = 80
    n_mfcc: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    f_min: float = 20.0
    f_max: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"features.kind: {self.kind!r} is not one of {list(KINDS)}")
        if self.f_max is not None and self.f_max < 0 and self.kind != "knf":
            raise ValueError(
                f"features.f_max: {self.f_max} (Kaldi's offset below Nyquist) is only "
                "meaningful for kind 'knf'; give a frequency in Hz or null"
            )
        if self.kind == "mfcc" and not 0 < self.n_mfcc <= self.n_mels:
            raise ValueError(f"features.n_mfcc: {self.n_mfcc} must be in 1..n_mels={self.n_mels}")
        if self.hop_ms <= 0 or self.win_ms < self.hop_ms:
            raise ValueError(
                f"features: need 0 < hop_ms <= win_ms, got {self.hop_ms}/{self.win_ms}"
            )

    @property
    def dim(self) -> int:
        return {"mfcc": self.n_mfcc, "fbank": self.n_mels, "knf": self.n_mels, "waveform": 1}[
            self.kind
        ]

    @property
    def frame_rate(self) -> float:
        """Frames per second of audio ("waveform" frames are samples)."""
        return self.sample_rate if self.kind == "waveform" else 1000.0 / self.hop_ms

    @property
    def hop(self) -> int:
        return round(self.sample_rate * self.hop_ms / 1000)

    @property
    def win(self) -> int:
        return round(self.sample_rate * self.win_ms / 1000)

    @property
    def n_fft(self) -> int:
        return 1 << (self.win - 1).bit_length()

    def num_frames(self, num_samples: int) -> int:
        if self.kind == "knf":  # frames centred on multiples of the hop, edges not snipped
            return max(0, (num_samples + self.hop // 2) // self.hop)
        return (
            max(0, 1 + (num_samples - self.n_fft) // self.hop) if num_samples >= self.n_fft else 0
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_matrix(cfg: FeatureConfig) -> np.ndarray:
    """Triangular HTK-mel filters, shape (n_fft // 2 + 1, n_mels), float32."""
    f_max = cfg.f_max or cfg.sample_rate / 2
    mels = np.linspace(_hz_to_mel(np.array(cfg.f_min)), _hz_to_mel(np.array(f_max)), cfg.n_mels + 2)
    edges = _mel_to_hz(mels)
    bins = np.linspace(0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins[None, :] - lo) / (mid - lo)
    down = (hi - bins[None, :]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).T.astype(np.float32)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II, shape (n_in, n_out), float32."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    m = np.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    m[:, 0] /= math.sqrt(2.0)
    return m.astype(np.float32)


def window(cfg: FeatureConfig) -> np.ndarray:
    """Hann window of ``win`` samples centred in ``n_fft``."""
    w = np.hanning(cfg.win + 2)[1:-1]
    left = (cfg.n_fft - cfg.win) // 2
    return np.pad(w, (left, cfg.n_fft - cfg.win - left)).astype(np.float32)


def kaldi_mel_matrix(cfg: FeatureConfig) -> np.ndarray:
    """Kaldi's triangular filters (``MelBanks``: mel = 1127 ln(1 + f/700), ``n_mels`` bins
    evenly spaced in mel from ``f_min`` to ``f_max``), shape (n_fft // 2 + 1, n_mels), float32.
    As in Kaldi the Nyquist bin gets no weight."""
    nyquist = cfg.sample_rate / 2
    f_max = nyquist + cfg.f_max if cfg.f_max is not None and cfg.f_max <= 0 else cfg.f_max
    f_max = nyquist if f_max is None else f_max

    def mel(f: np.ndarray | float) -> np.ndarray:
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    lo, hi = mel(cfg.f_min), mel(f_max)
    delta = (hi - lo) / (cfg.n_mels + 1)
    left = lo + delta * np.arange(cfg.n_mels)[:, None]
    centre, right = left + delta, left + 2 * delta
    m = mel(cfg.sample_rate / cfg.n_fft * np.arange(cfg.n_fft // 2))[None, :]
    up = (m - left) / (centre - left)
    down = (right - m) / (right - centre)
    w = np.where((m > left) & (m < right), np.where(m <= centre, up, down), 0.0)
    return np.pad(w.T, ((0, 1), (0, 0))).astype(np.float32)


def povey_window(cfg: FeatureConfig) -> np.ndarray:
    """Kaldi's "povey" window of ``win`` samples: a Hann window to the power 0.85."""
    n = np.arange(cfg.win)
    return ((0.5 - 0.5 * np.cos(2 * math.pi * n / (cfg.win - 1))) ** 0.85).astype(np.float32)


def kaldi_online_fbank(cfg: FeatureConfig) -> Any:
    """A kaldi-native-fbank ``OnlineFbank`` with the options of ``cfg`` (kind "knf"): feed it
    samples in [-1, 1] (``accept_waveform``), end with ``input_finished``."""
    if cfg.kind != "knf":
        raise ValueError(
            f"features.kind: {cfg.kind!r}; kaldi-native-fbank computes kind 'knf' only"
        )
    try:
        import kaldi_native_fbank as knf
    except ImportError as e:  # pragma: no cover - a dependency of the package
        raise ImportError(
            "features kind 'knf' needs kaldi-native-fbank: pip install kaldi-native-fbank"
        ) from e
    opts = knf.FbankOptions()
    frame = opts.frame_opts
    frame.samp_freq = float(cfg.sample_rate)
    frame.frame_shift_ms = float(cfg.hop_ms)
    frame.frame_length_ms = float(cfg.win_ms)
    frame.dither = 0.0
    frame.snip_edges = False
    frame.remove_dc_offset = True
    frame.window_type = "povey"
    opts.mel_opts.num_bins = cfg.n_mels
    opts.mel_opts.low_freq = float(cfg.f_min)
    opts.mel_opts.high_freq = 0.0 if cfg.f_max is None else float(cfg.f_max)
    return knf.OnlineFbank(opts)


def kaldi_frames(fbank: Any, start: int, cfg: FeatureConfig) -> np.ndarray:
    """Frames ``start ..`` of what an ``OnlineFbank`` has ready, (n, n_mels) float32."""
    n = fbank.num_frames_ready
    out = np.empty((max(0, n - start), cfg.n_mels), dtype=np.float32)
    for t in range(start, n):
        out[t - start] = fbank.get_frame(t)
    return out


def kaldi_fbank(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Kaldi log-mel filterbank of ``wave`` (N,) float in [-1, 1], computed by
    kaldi-native-fbank with the options of ``cfg`` (kind "knf"): (T, n_mels) float32 with
    ``T = cfg.num_frames(N)``."""
    fbank = kaldi_online_fbank(cfg)
    fbank.accept_waveform(float(cfg.sample_rate), np.asarray(wave, dtype=np.float32))
    fbank.input_finished()
    return kaldi_frames(fbank, 0, cfg)
