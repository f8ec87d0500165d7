"""A text-to-speech architecture decoded once: the typed :class:`TtsSpec` every consumer reads.

An acoustic model of the FastSpeech 2 family is an :class:`~speechnas.space.Arch` with exactly
the fields of :data:`FIELDS`; the per-layer ones (``enc_op``, ``enc_ffn``, ``dec_op``,
``dec_ffn``) hold one value per encoder or decoder layer (a single value applies to all).
:func:`decode_tts` checks every field once, so the builder (:mod:`speechnas.nn.tts.model`) and
the cost model (:mod:`speechnas.nn.tts.cost`) read the same resolved layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from speechnas.space.arch import Arch

__all__ = ["FIELDS", "OPS", "TtsLayerSpec", "TtsSpec", "decode_tts"]

#: The layer operations: self-attention, separable convolutions (kernel after ``sep``), a
#: bidirectional LSTM and gated convolutions (kernel after ``glu``).
OPS: tuple[str, ...] = (
    "attn", "sep5", "sep9", "sep13", "sep17", "sep21", "sep25", "lstm", "glu5", "glu9",
)  # fmt: skip

#: Every field of a TTS architecture; all are required.
FIELDS: tuple[str, ...] = (
    "d_model", "heads", "enc_layers", "dec_layers", "enc_op", "enc_ffn", "dec_op", "dec_ffn",
    "ffn_kernel", "variance_dim", "energy", "postnet",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TtsLayerSpec:
    """One encoder or decoder layer: its operation and its FFN width (0: no FFN)."""

    op: str
    ffn: int

    @property
    def kind(self) -> str:
        """``attn``, ``sep``, ``lstm`` or ``glu``."""
        return self.op.rstrip("0123456789")

    @property
    def kernel(self) -> int:
        """The convolution kernel of a ``sep``/``glu`` op; 0 for ``attn`` and ``lstm``."""
        digits = self.op[len(self.kind) :]
        return int(digits) if digits else 0


@dataclass(frozen=True, slots=True)
class TtsSpec:
    """One acoustic model, fully resolved. Build with :func:`decode_tts`."""

    d_model: int
    heads: int  # attention heads of every ``attn`` layer, each d_model / heads wide
    encoder: tuple[TtsLayerSpec, ...]
    decoder: tuple[TtsLayerSpec, ...]
    ffn_kernel: int  # kernel of every FFN's first convolution
    variance_dim: int  # channels of the duration and energy predictors
    energy: bool  # an energy predictor and embedding
    postnet: bool  # a residual convolutional postnet after the mel projection

    @property
    def enc_layers(self) -> int:
        return len(self.encoder)

    @property
    def dec_layers(self) -> int:
        return len(self.decoder)

    @property
    def ops(self) -> frozenset[str]:
        """The operations any layer uses."""
        return frozenset(ly.op for ly in self.encoder + self.decoder)

    def to_arch(self) -> Arch:
        """The architecture this spec decodes from, every field present, per-layer as tuples."""
        return Arch(
            d_model=self.d_model,
            heads=self.heads,
            enc_layers=self.enc_layers,
            dec_layers=self.dec_layers,
            enc_op=tuple(ly.op for ly in self.encoder),
            enc_ffn=tuple(ly.ffn for ly in self.encoder),
            dec_op=tuple(ly.op for ly in self.decoder),
            dec_ffn=tuple(ly.ffn for ly in self.decoder),
            ffn_kernel=self.ffn_kernel,
            variance_dim=self.variance_dim,
            energy=self.energy,
            postnet=self.postnet,
        )


def _int(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"tts arch: {name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"tts arch: {name}: expected true or false, got {value!r}")
    return value


def _per_layer(arch: Mapping[str, Any], name: str, n: int, layers_field: str) -> list[Any]:
    value = arch[name]
    if isinstance(value, tuple | list):
        if len(value) != n:
            raise ValueError(
                f"tts arch: {name}: {len(value)} per-layer values for {layers_field}={n}"
            )
        return list(value)
    return [value] * n


def _layers(arch: Mapping[str, Any], side: str) -> tuple[TtsLayerSpec, ...]:
    layers_field = f"{side}_layers"
    n = _int(layers_field, arch[layers_field])
    ops = _per_layer(arch, f"{side}_op", n, layers_field)
    ffns = _per_layer(arch, f"{side}_ffn", n, layers_field)
    out = []
    for i, (op, ffn) in enumerate(zip(ops, ffns, strict=True)):
        if op not in OPS:
            raise ValueError(f"tts arch: {side}_op[{i}]: {op!r} is not one of {list(OPS)}")
        out.append(TtsLayerSpec(op=op, ffn=_int(f"{side}_ffn[{i}]", ffn, minimum=0)))
    return tuple(out)


def decode_tts(arch: Mapping[str, Any]) -> TtsSpec:
    """The :class:`TtsSpec` of ``arch`` (an Arch or any mapping with the fields of
    :data:`FIELDS`); a ValueError names the field that is missing, unknown or wrong."""
    missing = [f for f in FIELDS if f not in arch]
    if missing:
        raise ValueError(f"tts arch: missing fields {missing} (a TTS arch has {list(FIELDS)})")
    unknown = sorted(set(arch) - set(FIELDS))
    if unknown:
        raise ValueError(f"tts arch: unknown fields {unknown} (a TTS arch has {list(FIELDS)})")
    d = _int("d_model", arch["d_model"])
    if d % 2:
        raise ValueError(
            f"tts arch: d_model: {d} must be even (sinusoidal positions, BiLSTM halves)"
        )
    heads = _int("heads", arch["heads"])
    if d % heads:
        raise ValueError(f"tts arch: heads: {heads} does not divide d_model={d}")
    kernel = _int("ffn_kernel", arch["ffn_kernel"])
    if kernel % 2 == 0:
        raise ValueError(f"tts arch: ffn_kernel: {kernel} must be odd ('same' padding)")
    return TtsSpec(
        d_model=d,
        heads=heads,
        encoder=_layers(arch, "enc"),
        decoder=_layers(arch, "dec"),
        ffn_kernel=kernel,
        variance_dim=_int("variance_dim", arch["variance_dim"]),
        energy=_bool("energy", arch["energy"]),
        postnet=_bool("postnet", arch["postnet"]),
    )
