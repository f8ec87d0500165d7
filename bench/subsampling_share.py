"""MAC share of the subsampling block in a 12-layer, 256-wide Conformer: vanilla vs
depthwise-separable convolutions, at the builder's default 32 channels and at 256 (the
on-device Conformer paper's setting). Analytic counts, cross-checked against a measured count.

    .venv/bin/python bench/subsampling_share.py
"""

from __future__ import annotations

import json

import torch

from speechnas.nn.build import build, feature_config
from speechnas.nn.cost import analytic_macs, measured_breakdown
from speechnas.space import Arch, load_space

LAYERS = 12
CONFORMER = {
    "frontend": "fbank80", "subsampling_factor": 4, "d_model": 256, "layers": LAYERS,
    "encoder": "conformer", "heads": 4, "attention": "rel", "streaming": False,
    "ffn_dim": (1024,) * LAYERS, "ffn_lowrank": (0,) * LAYERS, "macaron": True,
    "conv_kernel": (15,) * LAYERS, "module_order": ("mhsa_first",) * LAYERS, "decoder": "ctc",
}  # fmt: skip
VOCAB = 32


def main() -> None:
    space = load_space("speech-all")
    out: dict[str, dict[str, float]] = {}
    for sub in ("conv2d", "dwconv2d"):
        arch = space.validate(Arch({**CONFORMER, "subsampling": sub}))
        for channels in (32, 256):
            wide = Arch({**arch, "subsampling_channels": channels})
            m = analytic_macs(wide, seconds=5.0, vocab_size=VOCAB)
            out[f"{sub}/{channels}ch"] = {
                "subsampling_mmacs": m.subsampling / 1e6,
                "encoder_side_mmacs": m.encoder_side / 1e6,
                "share": m.subsampling / m.encoder_side,
            }
        # one measured cross-check at the builder's default channels
        model = build(arch, vocab_size=VOCAB).eval()
        n = feature_config(arch).num_frames(5 * 16000)
        feats = torch.zeros(1, n, feature_config(arch).dim)
        measured = measured_breakdown(model, feats, torch.tensor([n]))
        out[f"{sub}/32ch"]["measured_subsampling_mmacs"] = measured.subsampling / 1e6
    print(json.dumps({"seconds": 5.0, "shares": out}, indent=1))


if __name__ == "__main__":
    main()
