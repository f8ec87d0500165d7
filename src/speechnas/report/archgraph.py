"""An architecture as an inline SVG layer stack: features, subsampling, one bar per encoder
layer (its width drawn in proportion to the layer's feed-forward width, with d_model, heads,
kernel and FFN width written on it), and the decoder.

Drawn by hand because the picture is a plain column of labelled boxes: graph libraries
(Graphviz, pydot) need a system binary to lay out and render, and plotly would put a whole
figure with axes around each of a dozen small diagrams."""

from __future__ import annotations

from html import escape

from speechnas.nn.spec import ArchSpec, decode
from speechnas.nn.tts import TtsLayerSpec, decode_tts
from speechnas.space import Arch

WIDTH = 360
ROW = 26
GAP = 6
MIN_BAR = 120


def _box(y: int, width: int, label: str, fill: str) -> str:
    x = (WIDTH - width) // 2
    return (
        f'<rect x="{x}" y="{y}" width="{width}" height="{ROW}" rx="4" fill="{fill}" '
        f'stroke="#445"/><text x="{WIDTH // 2}" y="{y + ROW // 2 + 4}" text-anchor="middle" '
        f'font-size="11" font-family="sans-serif">{escape(label)}</text>'
    )


def _layer_label(spec: ArchSpec, i: int) -> str:
    layer = spec.layer[i]
    parts = [f"L{i + 1} {spec.encoder}", f"d {spec.d_model}"]
    if layer.heads:
        parts.append(f"{layer.heads}×{spec.head_dim} heads")
    if layer.ffn_dim:
        low = f" (rank {layer.ffn_lowrank})" if layer.ffn_lowrank else ""
        parts.append(f"ffn {layer.ffn_dim}{low}")
    if layer.kernel:
        parts.append(f"k {layer.kernel}")
    if layer.cgmlp_dim:
        parts.append(f"cgmlp {layer.cgmlp_dim}")
    return " · ".join(parts)


def _svg(rows: list[tuple[int, str, str]]) -> str:
    height = len(rows) * (ROW + GAP)
    body = "".join(_box(k * (ROW + GAP), w, label, fill) for k, (w, label, fill) in enumerate(rows))
    return (
        f'<svg class="arch" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" '
        f'height="{height}" viewBox="0 0 {WIDTH} {height}">{body}</svg>'
    )


def _tts_op(layer: TtsLayerSpec, heads: int) -> str:
    if layer.kind == "attn":
        return f"attention ×{heads}"
    if layer.kind == "lstm":
        return "BiLSTM"
    return f"{'sep conv' if layer.kind == 'sep' else 'conv+GLU'} k {layer.kernel}"


def tts_arch_svg(arch: Arch) -> str:
    """A TTS acoustic model's stack: phonemes, encoder layers (op, feed-forward width),
    variance adaptor, decoder layers, mel (and post-net)."""
    spec = decode_tts(arch)
    layers = (*spec.encoder, *spec.decoder)
    widest = max((layer.ffn for layer in layers), default=0) or 1
    rows = [(WIDTH - 20, f"phoneme embedding, d {spec.d_model}", "#e8eef7")]

    def stack(side: tuple[TtsLayerSpec, ...], tag: str, fill: str) -> None:
        for i, layer in enumerate(side):
            w = MIN_BAR + int((WIDTH - 20 - MIN_BAR) * layer.ffn / widest)
            ffn = f" · ffn {layer.ffn}" if layer.ffn else ""
            rows.append((w, f"{tag}{i + 1} {_tts_op(layer, spec.heads)}{ffn}", fill))

    stack(spec.encoder, "E", "#cfe3d4")
    what = "durations" + (" + energy" if spec.energy else "")
    rows.append((WIDTH - 40, f"variance adaptor: {what} ({spec.variance_dim} ch)", "#f3ecd9"))
    stack(spec.decoder, "D", "#d7dff0")
    rows.append((WIDTH - 20, "mel" + (" + post-net" if spec.postnet else ""), "#f3dede"))
    return _svg(rows)


def arch_svg(arch: Arch) -> str:
    """The SVG (a string) of ``arch``'s layer stack, top (input) to bottom (output); a TTS
    acoustic model's by :func:`tts_arch_svg`."""
    if "enc_op" in arch:
        return tts_arch_svg(arch)
    spec = decode(arch)
    widest = max((layer.ffn_dim for layer in spec.layer), default=0) or 1
    rows = [
        (WIDTH - 20, f"{spec.frontend}: {spec.features.kind} {spec.features.n_mels}", "#e8eef7"),
        (
            WIDTH - 40,
            f"{spec.subsampling} ×{spec.subsampling_factor} ({spec.subsampling_channels} ch)",
            "#dde7f3",
        ),
    ]
    for i, layer in enumerate(spec.layer):
        w = MIN_BAR + int((WIDTH - 20 - MIN_BAR) * layer.ffn_dim / widest)
        rows.append((w, _layer_label(spec, i), "#cfe3d4"))
    stream = ""
    if spec.streaming:
        stream = f" · chunk {spec.chunk_size}, left {spec.left_chunks}, ahead {spec.lookahead}"
    if spec.heads or stream:
        what = f"{spec.attention} attention" if spec.heads else "streaming"
        rows.append((WIDTH - 40, what + stream, "#f3ecd9"))
    dec = spec.decoder if spec.decoder == "ctc" else f"{spec.decoder} ({spec.pred_dim})"
    rows.append((WIDTH - 20, f"decoder: {dec}", "#f3dede"))
    return _svg(rows)


__all__ = ["arch_svg", "tts_arch_svg"]
