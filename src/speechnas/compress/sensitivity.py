"""How much each sub-module's output posteriors suffer when only its weights lose bits.

Sensitivity of sub-module i at n bits (Xu et al., Interspeech 2023): the mean over frames of
KL(P_fp32 ‖ P_i,n), where P are the CTC output posteriors of the float model and P_i,n those of
the same model with only sub-module i fake-quantized to n bits, on held-out utterances.

Each (sub-module, bits) pair costs one more forward pass, but only from the sub-module's own
part of the network onwards: the float pass records the output of every stage of the encoder
and of every layer of a layered stage, and a pass with sub-module i quantized replays those
outputs for the parts before i (which it cannot change) instead of computing them; for the
output layer's sub-modules the whole encoder is replayed. On the `base` preset (6 layers, 58
sub-modules, 5 widths) that halves the work of the 290 passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from speechnas.data.dataset import Batch
from speechnas.nn.build import SpeechModel
from speechnas.nn.quant import BITS, allocation_of, apply_bits, quantizable

__all__ = ["Sensitivity", "frame_posteriors", "kl_sensitivity"]


@dataclass(frozen=True, slots=True)
class Sensitivity:
    """``kl[name][bits]``: mean per-frame KL of the posteriors with only ``name`` quantized;
    ``numel`` / ``channels``: each sub-module's weight elements and output channels (what its
    size at n bits is computed from); ``frames``: held-out frames averaged over."""

    kl: dict[str, dict[int, float]]
    numel: dict[str, int]
    channels: dict[str, int]
    frames: int

    @property
    def modules(self) -> list[str]:
        return list(self.kl)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["kl"] = {m: {str(b): v for b, v in row.items()} for m, row in self.kl.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Sensitivity:
        kl = {m: {int(b): float(v) for b, v in row.items()} for m, row in d["kl"].items()}  # type: ignore[union-attr]
        return cls(kl=kl, numel=dict(d["numel"]), channels=dict(d["channels"]),  # type: ignore[arg-type]
                   frames=int(d["frames"]))  # type: ignore[arg-type]  # fmt: skip


def frame_posteriors(model: SpeechModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """CTC log-posteriors (B, T', V) of a batch and the mask (B, T') of its real frames."""
    if model.spec.decoder != "ctc":
        raise ValueError(
            f"KL sensitivity reads CTC frame posteriors; the model's decoder is "
            f"{model.spec.decoder!r} (use a CTC architecture)"
        )
    enc, lens = model.encode(batch.feats, batch.feat_lens)
    logp = model.decoder(enc)
    mask = torch.arange(logp.shape[1])[None, :] < lens[:, None]
    return logp, mask


def _kl(ref: torch.Tensor, logq: torch.Tensor, mask: torch.Tensor) -> tuple[float, int]:
    """Summed KL(P ‖ Q) over the masked frames, and the frame count."""
    kl = (ref.exp() * (ref - logq)).sum(-1)  # (B, T')
    return float(kl[mask].sum()), int(mask.sum())


def _units(model: SpeechModel) -> list[tuple[str, nn.Module]]:
    """The encoder's parts in the order they run: each stage, or each layer of a stage that has
    a ``layers`` list; then the encoder as a whole (replayed for the output layer's modules)."""
    units: list[tuple[str, nn.Module]] = []
    for s, stage in enumerate(getattr(model.encoder, "stages", ())):
        layers = getattr(stage, "layers", None)
        if isinstance(layers, nn.ModuleList) and len(layers):
            units += [(f"encoder.stages.{s}.layers.{k}", m) for k, m in enumerate(layers)]
        else:
            units.append((f"encoder.stages.{s}", stage))
    return [*units, ("encoder", model.encoder)]


def _before(units: list[tuple[str, nn.Module]], name: str) -> list[tuple[str, nn.Module]]:
    """The units that run before sub-module ``name`` and so do not depend on it."""
    for k, (unit, _) in enumerate(units):
        if name.startswith(unit + "."):
            return units[:k]
    return units[-1:]  # outside the encoder: the encoder as a whole


@contextlib.contextmanager
def _recording(units: list[tuple[str, nn.Module]]) -> Iterator[dict[str, list[Any]]]:
    """Every unit's output of each forward pass, in call order."""
    out: dict[str, list[Any]] = {name: [] for name, _ in units}
    handles = [m.register_forward_hook(lambda _m, _a, o, n=name: out[n].append(o))
               for name, m in units]  # fmt: skip
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _replaying(
    units: list[tuple[str, nn.Module]], recorded: dict[str, list[Any]], batch: list[int]
) -> Iterator[None]:
    """``units`` return their recorded output of batch ``batch[0]`` instead of computing it."""
    for name, m in units:
        m.forward = lambda *_a, n=name, **_k: recorded[n][batch[0]]  # type: ignore[method-assign]
    try:
        yield
    finally:
        for _, m in units:
            m.__dict__.pop("forward", None)


@torch.no_grad()
def kl_sensitivity(
    model: SpeechModel,
    batches: Sequence[Batch],
    *,
    bits: Iterable[int] = (2, 3, 4, 6, 8),
    modules: Iterable[str] | None = None,
    progress: bool = False,
) -> Sensitivity:
    """The sensitivity of every quantizable sub-module (or of ``modules``) at each of ``bits``.

    ``model`` must be a float model (no sub-module quantized); it is left as it was.
    """
    widths = sorted(set(bits))
    bad = [b for b in widths if b not in BITS or b == 32]
    if bad:
        raise ValueError(f"bits: {bad} are not quantized widths; choose from {list(BITS[:-1])}")
    if allocation_of(model):
        raise ValueError("model: is already fake-quantized; measure sensitivity on the float one")
    if not batches:
        raise ValueError("batches: no held-out utterances to measure sensitivity on")
    mods = quantizable(model)
    names = list(mods) if modules is None else list(modules)
    unknown = sorted(set(names) - set(mods))
    if unknown:
        raise ValueError(f"modules: {unknown[:5]} are not quantizable sub-modules of the model")
    was_training = model.training
    model.eval()
    units = _units(model)
    with _recording(units) as recorded:
        refs = [frame_posteriors(model, b) for b in batches]
    frames = sum(int(m.sum()) for _, m in refs)
    kl: dict[str, dict[int, float]] = {}
    current = [0]
    for name in tqdm(names, desc="sensitivity", disable=not progress, leave=False):
        kl[name] = {}
        with _replaying(_before(units, name), recorded, current):
            for n in widths:
                apply_bits(model, {name: n})
                total = 0.0
                for i, (batch, (ref, mask)) in enumerate(zip(batches, refs, strict=True)):
                    current[0] = i
                    total += _kl(ref, frame_posteriors(model, batch)[0], mask)[0]
                kl[name][n] = max(total / frames, 0.0)  # rounding can make a tiny KL negative
        apply_bits(model, {name: 32})
    model.train(was_training)
    weight = {n: mods[n].weight for n in names}
    return Sensitivity(
        kl=kl,
        numel={n: w.numel() for n, w in weight.items()},
        channels={n: int(w.shape[0]) for n, w in weight.items()},
        frames=frames,
    )
