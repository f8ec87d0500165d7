"""Named hand-designed TTS architectures, the baselines a search is compared with.

* ``fastspeech2``: the FastSpeech 2 paper's model — d 256, 2 heads, 4 self-attention layers in
  the encoder and in the decoder, each with a 1024-wide FFN whose first convolution has kernel
  9, variance predictors of 256 channels, an energy predictor and no postnet.
* ``lightspeech``: the separable-convolution layers LightSpeech's search found (encoder kernels
  5, 25, 13, 9; decoder 17, 21, 9, 13) at d 256, with narrow FFNs (256, kernel 1) and
  128-channel variance predictors: a model of a tenth of FastSpeech 2's size.

Each is an ordinary :class:`~speechnas.space.Arch` of the TTS fields, decoded and built like
any searched architecture.
"""

from __future__ import annotations

from typing import Any

from speechnas.nn.tts.spec import decode_tts
from speechnas.space.arch import Arch

__all__ = ["TTS_PRESETS", "tts_preset"]

TTS_PRESETS: dict[str, dict[str, Any]] = {
    "fastspeech2": {
        "d_model": 256,
        "heads": 2,
        "enc_layers": 4,
        "dec_layers": 4,
        "enc_op": ("attn",) * 4,
        "enc_ffn": (1024,) * 4,
        "dec_op": ("attn",) * 4,
        "dec_ffn": (1024,) * 4,
        "ffn_kernel": 9,
        "variance_dim": 256,
        "energy": True,
        "postnet": False,
    },
    "lightspeech": {
        "d_model": 256,
        "heads": 2,
        "enc_layers": 4,
        "dec_layers": 4,
        "enc_op": ("sep5", "sep25", "sep13", "sep9"),
        "enc_ffn": (256,) * 4,
        "dec_op": ("sep17", "sep21", "sep9", "sep13"),
        "dec_ffn": (256,) * 4,
        "ffn_kernel": 1,
        "variance_dim": 128,
        "energy": True,
        "postnet": False,
    },
}


def tts_preset(name: str, **overrides: Any) -> Arch:
    """The preset ``name`` as an Arch, with any fields replaced (``tts_preset("lightspeech",
    d_model=64)``); a per-layer field given as one value applies to every layer. A ValueError
    names an unknown preset or a wrong override."""
    if name not in TTS_PRESETS:
        raise ValueError(f"tts preset {name!r} is unknown; choose from {sorted(TTS_PRESETS)}")
    # decoding resolves single per-layer values, and to_arch writes them as tuples
    return decode_tts({**TTS_PRESETS[name], **overrides}).to_arch()
