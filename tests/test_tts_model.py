"""The TTS acoustic model: architecture decoding, every layer op in one table, the length
regulator, cost, loss, presets and ONNX export."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from speechnas.nn.cost import _EXTRA_FORMULAS
from speechnas.nn.tts import (
    FIELDS,
    OPS,
    TTS_PRESETS,
    FastSpeech,
    TtsOutput,
    decode_tts,
    length_regulate,
    predicted_durations,
    tts_loss,
    tts_macs,
    tts_parameters,
    tts_preset,
)
from speechnas.nn.tts.blocks import Frames

N_PHONEMES = 12
N_MELS = 8

# The choices of the TTS search space.
SPACE: dict[str, list[Any]] = {
    "d_model": [64, 96, 128, 192, 256],
    "heads": [1, 2, 4],
    "enc_layers": [1, 2, 3, 4, 5, 6],
    "dec_layers": [1, 2, 3, 4, 5, 6],
    "ffn": [0, 128, 256, 512, 1024],
    "ffn_kernel": [1, 3, 9],
    "variance_dim": [64, 128, 256],
    "energy": [True, False],
    "postnet": [False, True],
}


def tiny_arch(enc_op: Any = "sep5", dec_op: Any = "sep5", **fields: Any) -> dict[str, Any]:
    base = {
        "d_model": 16, "heads": 2, "enc_layers": 1, "dec_layers": 1, "enc_op": enc_op,
        "enc_ffn": 24, "dec_op": dec_op, "dec_ffn": 24, "ffn_kernel": 3, "variance_dim": 8,
        "energy": True, "postnet": True,
    }  # fmt: skip
    return {**base, **fields}


def tiny_model(arch: dict[str, Any], seed: int = 0, frames_per_phoneme: float = 3.0) -> FastSpeech:
    """A random model in eval mode whose predicted durations are around `frames_per_phoneme`."""
    torch.manual_seed(seed)
    model = FastSpeech(arch, n_phonemes=N_PHONEMES, n_mels=N_MELS).eval()
    with torch.no_grad():
        model.duration.out.bias.fill_(math.log(frames_per_phoneme + 1.0))
    return model


def sample_arch(rng: random.Random) -> dict[str, Any]:
    enc, dec = rng.choice(SPACE["enc_layers"]), rng.choice(SPACE["dec_layers"])
    return {
        "d_model": rng.choice(SPACE["d_model"]),
        "heads": rng.choice(SPACE["heads"]),
        "enc_layers": enc,
        "dec_layers": dec,
        "enc_op": tuple(rng.choice(OPS) for _ in range(enc)),
        "enc_ffn": tuple(rng.choice(SPACE["ffn"]) for _ in range(enc)),
        "dec_op": tuple(rng.choice(OPS) for _ in range(dec)),
        "dec_ffn": tuple(rng.choice(SPACE["ffn"]) for _ in range(dec)),
        **{k: rng.choice(SPACE[k]) for k in ("ffn_kernel", "variance_dim", "energy", "postnet")},
    }


class Batch:
    """The attributes tts_loss reads, with garbage in the padding."""

    def __init__(self, lengths: list[int], seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        b, n = len(lengths), max(lengths)
        self.phoneme_lengths = torch.tensor(lengths)
        valid = torch.arange(n)[None] < self.phoneme_lengths[:, None]
        self.phonemes = torch.randint(1, N_PHONEMES, (b, n), generator=gen)
        self.durations = torch.randint(0, 5, (b, n), generator=gen)
        self.durations[:, 0] += 1  # no utterance of 0 frames
        self.durations = torch.where(valid, self.durations, 7)  # padding: garbage
        self.phonemes = torch.where(valid, self.phonemes, 5)
        self.mel_lengths = torch.where(valid, self.durations, 0).sum(1)
        t = int(self.mel_lengths.max()) + 2  # padded past the longest utterance
        self.mel = torch.randn(b, t, N_MELS, generator=gen)
        self.energy = torch.randn(b, n, generator=gen)

    def run(self, model: FastSpeech) -> TtsOutput:
        return model(self.phonemes, self.phoneme_lengths, self.durations, self.energy)


# --------------------------------------------------------------------------------------------
# Architecture decoding


def test_decode_round_trip_and_layers() -> None:
    spec = decode_tts(tts_preset("lightspeech"))
    assert decode_tts(spec.to_arch()) == spec
    assert set(spec.to_arch()) == set(FIELDS)
    assert [ly.kernel for ly in spec.encoder] == [5, 25, 13, 9]
    assert {ly.kind for ly in spec.decoder} == {"sep"}
    one = decode_tts(tiny_arch(enc_layers=3, enc_op="glu9"))  # one value for every layer
    assert [(ly.kind, ly.kernel) for ly in one.encoder] == [("glu", 9)] * 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_model": None}, "missing fields \\['d_model'\\]"),
        ({"layers": 4}, "unknown fields \\['layers'\\]"),
        ({"enc_op": "conv7"}, "enc_op\\[0\\]: 'conv7' is not one of"),
        ({"dec_layers": 2, "dec_op": ("attn",) * 3}, "dec_op: 3 per-layer values for dec_layers=2"),
        ({"heads": 3}, "heads: 3 does not divide d_model=16"),
        ({"ffn_kernel": 4}, "ffn_kernel: 4 must be odd"),
        ({"enc_ffn": -1}, "enc_ffn\\[0\\]: expected an integer >= 0"),
        ({"energy": 1}, "energy: expected true or false"),
        ({"d_model": 15, "heads": 1}, "d_model: 15 must be even"),
    ],
)
def test_decode_errors(change: dict[str, Any], message: str) -> None:
    arch = {k: v for k, v in {**tiny_arch(), **change}.items() if v is not None}
    with pytest.raises(ValueError, match=message):
        decode_tts(arch)


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="choose from \\['fastspeech2', 'lightspeech'\\]"):
        tts_preset("tacotron")


# --------------------------------------------------------------------------------------------
# Every op, in the encoder and the decoder


@pytest.mark.parametrize("op", OPS)
def test_op_shapes_gradients_and_padding(op: str) -> None:
    model = tiny_model(tiny_arch(enc_op=op, dec_op=op))
    batch = Batch([7, 3, 5])

    # shapes, and gradients reach every parameter
    model.train()
    out = batch.run(model)
    b, n = batch.phonemes.shape
    t = int(batch.mel_lengths.max())
    assert out.mel.shape == out.mel_post.shape == (b, t, N_MELS)
    assert out.log_durations.shape == (b, n)
    assert out.energy is not None and out.energy.shape == (b, n)
    assert torch.equal(out.mel_lengths, batch.mel_lengths)
    total, _ = tts_loss(out, batch)
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name != "embed.weight":  # the padding row gets none
            assert p.grad.abs().sum() > 0, name

    # each utterance alone equals its row of the padded batch, teacher-forced and predicted
    model.eval()
    with torch.no_grad():
        padded = batch.run(model)
        predicted = model(batch.phonemes, batch.phoneme_lengths)
        for i, length in enumerate(batch.phoneme_lengths.tolist()):
            one = slice(i, i + 1)
            ids, lengths = batch.phonemes[one, :length], batch.phoneme_lengths[one]
            alone = model(ids, lengths, batch.durations[one, :length], batch.energy[one, :length])
            frames = int(alone.mel_lengths)
            assert frames == int(padded.mel_lengths[i])
            assert torch.allclose(alone.mel_post[0], padded.mel_post[i, :frames], atol=1e-5)
            assert torch.allclose(alone.log_durations[0], padded.log_durations[i, :length],
                                  atol=1e-5)  # fmt: skip
            assert (padded.mel_post[i, frames:] == 0).all()
            free = model(ids, lengths)
            frames = int(free.mel_lengths)
            assert frames == int(predicted.mel_lengths[i]) >= 1
            assert torch.allclose(free.mel[0], predicted.mel[i, :frames], atol=1e-5)
            assert torch.allclose(model.infer(ids)[0], free.mel_post[0], atol=1e-5)


# --------------------------------------------------------------------------------------------
# Length regulator and durations


def test_length_regulate_matches_repeat_interleave() -> None:
    gen = torch.Generator().manual_seed(1)
    h = torch.randn(3, 6, 4, generator=gen)
    durations = torch.tensor([[2, 0, 1, 3, 0, 1], [0, 0, 4, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
    y, lengths = length_regulate(h, durations)
    assert lengths.tolist() == [7, 4, 3]
    assert y.shape == (3, 7, 4)
    for i in range(3):
        ref = torch.repeat_interleave(h[i], durations[i], dim=0)
        assert torch.equal(y[i, : len(ref)], ref)
        assert (y[i, len(ref) :] == 0).all()


def test_predicted_durations_give_at_least_one_frame() -> None:
    log_d = torch.log(torch.tensor([[0.2, 0.4, 3.6, 0.0], [0.1, 0.2, 0.3, 9.0]]))
    frames = Frames.of(torch.tensor([4, 3]), 4, attention=False)
    d = predicted_durations(log_d, frames)  # round(0.2 - 1) < 0 → 0; 3.6 - 1 → 3
    assert d.tolist() == [[0, 0, 3, 0], [1, 0, 0, 0]]  # the second: one frame, padding 0

    model = tiny_model(tiny_arch(), frames_per_phoneme=-0.9)  # every phoneme predicts 0
    ids = torch.tensor([[3, 4, 5]])
    out = model(ids, torch.tensor([3]))
    assert out.mel_lengths.tolist() == [1]
    assert model.infer(ids).shape == (1, 1, N_MELS)


# --------------------------------------------------------------------------------------------
# Cost


def test_parameters_match_built_models() -> None:
    rng = random.Random(0)
    archs = [TTS_PRESETS["fastspeech2"], TTS_PRESETS["lightspeech"]]
    archs += [sample_arch(rng) for _ in range(12)]
    with torch.device("meta"):
        for arch in archs:
            model = FastSpeech(arch, n_phonemes=64, n_mels=80)
            assert tts_parameters(arch, 64, 80) == sum(p.numel() for p in model.parameters())


def test_macs_match_flop_counter() -> None:
    """Every op against FLOPs / 2 measured with the ASR cost model's formulas for the CPU
    kernels the counter does not know (attention, LSTM)."""
    arch = tiny_arch(enc_layers=len(OPS), enc_op=OPS, dec_layers=len(OPS),
                     dec_op=tuple(reversed(OPS)), enc_ffn=0)  # fmt: skip
    model = tiny_model(arch)
    batch = Batch([9])
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS)
    with counter, torch.no_grad():
        batch.run(model)
    frames = int(batch.mel_lengths[0])
    analytic = tts_macs(arch, phonemes=9, frames=frames, n_phonemes=N_PHONEMES, n_mels=N_MELS)
    assert analytic == counter.get_total_flops() // 2


# --------------------------------------------------------------------------------------------
# Loss


def test_loss_finite_and_blind_to_padding() -> None:
    model = tiny_model(tiny_arch(enc_op="attn", dec_op="sep9"))
    batch = Batch([6, 2, 4])
    total, parts = tts_loss(batch.run(model), batch)
    assert set(parts) == {"mel", "post", "duration", "energy"}
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in parts.values())
    assert total == sum(parts.values())

    other = Batch([6, 2, 4])
    frames = torch.arange(other.mel.shape[1])[None] >= other.mel_lengths[:, None]
    phones = torch.arange(6)[None] >= other.phoneme_lengths[:, None]
    other.mel[frames] = float("nan")
    other.energy[phones] = float("inf")
    other.durations[phones] = -1
    out = other.run(model)
    total2, _ = tts_loss(out, other)
    assert torch.allclose(total, total2)
    total2.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    plain = tiny_model(tiny_arch(energy=False, postnet=False))
    _, parts3 = tts_loss(batch.run(plain), batch)
    assert parts3["post"] == 0 and parts3["energy"] == 0

    wrong = model(batch.phonemes, batch.phoneme_lengths)  # predicted durations
    with pytest.raises(ValueError, match="durations, which must sum"):
        tts_loss(wrong, batch)


# --------------------------------------------------------------------------------------------
# Presets


def test_presets_build() -> None:
    sizes = {}
    for name in TTS_PRESETS:
        model = FastSpeech(tts_preset(name), n_phonemes=64)
        sizes[name] = sum(p.numel() for p in model.parameters())
        assert sizes[name] == tts_parameters(model.spec, 64)
        ids = torch.randint(1, 64, (1, 5))
        assert model.eval().infer(ids).shape[-1] == 80
    print(f"TTS preset parameters (64 phonemes, 80 mels): {sizes}")
    assert sizes["lightspeech"] * 8 < sizes["fastspeech2"]
