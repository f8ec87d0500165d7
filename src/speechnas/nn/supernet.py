"""A weight-sharing supernet over a Conformer or Transformer CTC subspace (Once-for-All style).

The supernet holds the weights of the largest architecture of its subspace. Every other
architecture of the subspace is a *path* through those weights:

- depth: the first ``layers`` blocks;
- width (``d_model``): the first ``d_model`` channels of every tensor, taken per section for the
  packed query/key/value and GLU projections;
- per-layer FFN width: the first ``ffn_dim`` hidden units of that layer;
- heads: the same projections split into more or fewer heads (the relative-position biases are
  the same numbers regrouped);
- depthwise kernel: the taps of the largest kernel that line up with the smaller kernel's
  (its centre, or its newest taps when the convolution is causal).

The active path runs the ordinary :class:`SpeechModel` code on a parameter-free skeleton of the
active architecture, with its parameters bound to slices of the shared weights
(:func:`torch.func.functional_call`), so a path and the model :meth:`Supernet.extract` returns
compute the same function by construction, and gradients flow back into the shared weights.
Every block uses LayerNorm, so no normalisation statistics need recalibrating after slicing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.build import SpeechModel
from speechnas.nn.decoders.ctc import ctc_greedy_search, ctc_losses
from speechnas.space import SAMPLE_BY, Arch, SearchSpace

#: Choices a supernet path may vary; every other choice of its space has one value.
ELASTIC = ("d_model", "layers", "heads", "ffn_dim", "conv_kernel")
#: How progressive shrinking opens the elastic choices: all at once, or one stage after another
#: in Once-for-All's order (kernel, then depth, then width).
SHRINK_STAGES = {
    "together": (ELASTIC,),
    "staged": (("conv_kernel",), ("layers",), ("ffn_dim", "heads", "d_model")),
}
ENCODERS = ("conformer", "transformer")

# Tensors whose first axis packs several d_model-wide sections (q|k|v, GLU value|gate).
_SECTIONS = {".attn.qkv.weight": 3, ".attn.qkv.bias": 3, ".conv.pw1.weight": 2, ".conv.pw1.bias": 2}
_HEAD_BIASES = (".attn.u", ".attn.v")  # (heads, head_dim): d_model numbers regrouped
_DEPTHWISE = ".dw.conv.weight"  # (channels, 1, kernel)


def supernet_space(space: SearchSpace, fixed: Mapping[str, Any] | None = None) -> SearchSpace:
    """The subspace of ``space`` a supernet covers: the elastic choices keep their values and
    every other choice is fixed, to ``fixed[name]`` or else its first value.

    Raises a ValueError naming the choice when the space cannot be shared: an encoder other than
    a Conformer or Transformer, a decoder other than CTC, or low-rank feed-forward layers.
    """
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(space.names))
    if unknown:
        raise ValueError(f"supernet fixed: {unknown} are not choices of space {space.name!r}")
    bad = sorted(set(fixed) & set(ELASTIC))
    if bad:
        raise ValueError(f"supernet fixed: {bad} are elastic choices and cannot be fixed")
    d = space.to_dict()
    kept: dict[str, list[Any]] = {}  # the values left to each choice still in the subspace
    choices = []
    for c in d["choices"]:
        name = c["name"]
        when = {p: [v for v in vs if v in kept.get(p, [])] for p, vs in c.get("when", {}).items()}
        per = c.get("per_layer")
        if any(not vs for vs in when.values()) or (per is not None and per not in kept):
            if name in fixed:
                raise ValueError(f"supernet fixed.{name}: not used once the others are fixed")
            continue  # its condition can no longer hold
        if when:
            c["when"] = when
        if name not in ELASTIC:
            value = fixed.get(name, c["values"][0])
            if value not in c["values"]:
                raise ValueError(f"supernet fixed.{name}: {value!r} is not one of {c['values']}")
            c["values"] = [value]
        kept[name] = list(c["values"])
        choices.append(c)
    d["choices"] = choices
    values = {c["name"]: c["values"][0] for c in d["choices"]}
    if values.get("encoder") not in ENCODERS:
        raise ValueError(
            f"encoder: a supernet shares weights across {list(ENCODERS)}, "
            f"not {values.get('encoder')!r}"
        )
    if values.get("decoder", "ctc") != "ctc":
        raise ValueError(f"decoder: a supernet needs 'ctc', not {values['decoder']!r}")
    if values.get("ffn_lowrank", 0) != 0:
        raise ValueError("ffn_lowrank: a supernet needs full-rank feed-forward layers (0)")
    if "d_model" not in values or "layers" not in values:
        raise ValueError(f"space {space.name!r}: a supernet needs d_model and layers choices")
    if not space.name.endswith("-supernet"):
        d["name"] = f"{space.name}-supernet"
    return SearchSpace.from_dict(d)


def _extreme(space: SearchSpace, pick: Any) -> Arch:
    """The architecture with ``pick`` (max or min) of every elastic value, per layer too."""
    partial: dict[str, Any] = {}
    for name in space.names:
        c = space[name]
        partial[name] = pick(c.values) if name in ELASTIC else c.values[0]
    if "heads" in partial:  # the most (fewest) heads that divide the width
        ok = [h for h in space["heads"].values if int(partial["d_model"]) % int(h) == 0]
        if not ok:
            raise ValueError(f"heads: none of {space['heads'].values} divides d_model")
        partial["heads"] = pick(ok)
    n = int(partial["layers"])
    for name in space.names:
        if space[name].per_layer is not None:
            partial[name] = (partial[name],) * n
    active = set(space.active(partial))
    return space.validate({k: v for k, v in partial.items() if k in active})


def largest(space: SearchSpace) -> Arch:
    return _extreme(space, max)


def smallest(space: SearchSpace) -> Arch:
    return _extreme(space, min)


class _Head(nn.Module):
    """``model`` as features → CTC log-probabilities, for :func:`torch.func.functional_call`."""

    def __init__(self, model: SpeechModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, feats: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        enc, enc_lens = self.model.encode(feats, lengths)
        return self.model.decoder(enc), enc_lens


class Supernet(SpeechModel):
    """Shared weights of ``largest(space)`` plus an active path (initially the largest).

    The state dict is the largest architecture's, so a supernet checkpoint also loads as that
    plain model. In training mode ``loss`` follows the sandwich rule: the largest path on the
    labels, then the smallest and ``random_subnets`` random paths on the labels mixed with
    in-place distillation from the largest path's frame posteriors (weight ``distill``); one
    backward pass covers them all. In eval mode it is the active path's CTC loss. With
    ``shrink`` > 0 the students come from a subspace that opens up as training goes on
    (:meth:`set_progress`; :class:`~speechnas.train.config.SupernetConfig` says how).
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        vocab_size: int,
        dropout: float = 0.1,
        random_subnets: int = 2,
        distill: float = 0.5,
        path_draw: str = "choice",
        shrink: float = 0.0,
        shrink_order: str = "together",
    ) -> None:
        self.space = supernet_space(space)  # idempotent on an already fixed subspace
        super().__init__(largest(self.space), vocab_size=vocab_size, dropout=dropout)
        if random_subnets < 0:
            raise ValueError(f"supernet random_subnets: expected >= 0, got {random_subnets}")
        if not 0.0 <= distill <= 1.0:
            raise ValueError(f"supernet distill: {distill} is not in [0, 1]")
        if path_draw not in SAMPLE_BY:
            raise ValueError(f"supernet path_draw: {path_draw!r} is not one of {list(SAMPLE_BY)}")
        if not 0.0 <= shrink < 1.0:
            raise ValueError(f"supernet shrink: {shrink} is not in [0, 1)")
        if shrink_order not in SHRINK_STAGES:
            raise ValueError(
                f"supernet shrink_order: {shrink_order!r} is not one of {list(SHRINK_STAGES)}"
            )
        self.largest = self.arch
        self.smallest = smallest(self.space)
        self.random_subnets = random_subnets
        self.distill = distill
        self.path_draw = path_draw
        self.shrink = shrink
        self.shrink_order = shrink_order
        self.dropout_p = dropout
        self.active = self.largest
        self._skeletons: dict[Arch, _Head] = {}  # not submodules: no weights of their own
        self.students = self.space  # the subspace the students come from (see set_progress)
        self._opened: dict[tuple[int, ...], SearchSpace] = {}

    # ------------------------------------------------------------------ progressive shrinking
    def set_progress(self, used: float) -> SearchSpace:
        """Opens the students' subspace for a training that has spent ``used`` (0-1) of its
        budget: every elastic choice keeps its largest ``1 + floor(n * p)`` of its ``n``
        values, where p is its progress: ``used / shrink`` for every choice when
        ``shrink_order`` is "together"; when "staged", the stages of :data:`SHRINK_STAGES` that
        vary here split ``shrink`` evenly and open one after another. All values once ``used``
        reaches ``shrink``, and always without ``shrink``. Returns that subspace, also in
        :attr:`students`."""
        stage = 1.0 if self.shrink <= 0 else min(1.0, used / self.shrink)
        elastic = self._elastic()
        counts = {c: len(self.space[c].values) for c in elastic}
        groups = [
            g for g in SHRINK_STAGES[self.shrink_order] if any(counts.get(c, 1) > 1 for c in g)
        ]
        progress = {
            c: min(1.0, max(0.0, stage * len(groups) - k)) for k, g in enumerate(groups) for c in g
        }
        sizes = tuple(
            min(counts[c], 1 + math.floor(counts[c] * progress.get(c, 1.0) + 1e-9)) for c in elastic
        )
        if stage >= 1.0:
            self.students = self.space
        else:
            if sizes not in self._opened:
                self._opened[sizes] = self._opening(sizes)
            self.students = self._opened[sizes]
        return self.students

    def _elastic(self) -> list[str]:
        return [c for c in ELASTIC if c in self.space.names]

    def _opening(self, sizes: tuple[int, ...]) -> SearchSpace:
        """The subspace whose elastic choices keep their ``sizes`` largest values."""
        keep = dict(zip(self._elastic(), sizes, strict=True))
        d = self.space.to_dict()
        for c in d["choices"]:
            if c["name"] in keep and keep[c["name"]] < len(c["values"]):
                c["values"] = sorted(c["values"])[-keep[c["name"]] :]
        return SearchSpace.from_dict(d)

    # ------------------------------------------------------------------ the active path
    def set_active(self, arch: Mapping[str, Any]) -> Arch:
        """Makes ``arch`` (validated against the subspace) the path that runs."""
        self.active = self.space.validate(arch)
        return self.active

    def sample_active(self, rng: random.Random) -> Arch:
        """Activates a random path of the subspace (drawn as ``path_draw`` says) and returns it."""
        return self.set_active(self.space.sample(rng, by=self.path_draw))

    def extract(self, arch: Mapping[str, Any] | None = None) -> SpeechModel:
        """A plain model of the active path (or ``arch``) holding copies of its weights."""
        arch = self.active if arch is None else self.space.validate(arch)
        model = SpeechModel(arch, vocab_size=self.vocab_size, dropout=self.dropout_p)
        with torch.no_grad():
            state = {k: v.detach().clone() for k, v in self.path_state(arch).items()}
        model.load_state_dict(state)
        model.train(self.training)
        return model

    def path_state(self, arch: Arch) -> dict[str, torch.Tensor]:
        """The state dict of ``arch``'s model as (differentiable) slices of the shared one."""
        skeleton = self._skeleton(arch).model
        full = dict(self.named_parameters())
        full.update(self.named_buffers())
        out = {}
        for name, meta in [*skeleton.named_parameters(), *skeleton.named_buffers()]:
            out[name] = self._slice(name, full[name], tuple(meta.shape), skeleton)
        return out

    def _slice(
        self, name: str, w: torch.Tensor, shape: tuple[int, ...], skeleton: SpeechModel
    ) -> torch.Tensor:
        if tuple(w.shape) == shape:
            return w
        for suffix, n in _SECTIONS.items():
            if name.endswith(suffix):
                rows, big = shape[0] // n, w.shape[0] // n
                parts = [w[i * big : i * big + rows] for i in range(n)]
                return torch.cat(parts)[(slice(None), *(slice(0, s) for s in shape[1:]))]
        if name.endswith(_HEAD_BIASES):
            return w.reshape(-1)[: int(np.prod(shape))].reshape(shape)
        if name.endswith(_DEPTHWISE):
            owner = name[: -len(".conv.weight")]
            start = self.get_submodule(owner).left - skeleton.get_submodule(owner).left
            return w[: shape[0], :, start : start + shape[2]]
        return w[tuple(slice(0, s) for s in shape)]

    def _skeleton(self, arch: Arch) -> _Head:
        head = self._skeletons.get(arch)
        if head is None:
            with torch.device("meta"):
                head = _Head(SpeechModel(arch, vocab_size=self.vocab_size, dropout=self.dropout_p))
            self._skeletons[arch] = head
        return head

    def path_forward(
        self, arch: Arch, feats: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) features → (B, T', V) CTC log-probabilities of ``arch``'s path."""
        if arch == self.largest:
            enc, enc_lens = super().encode(feats, lengths)
            return self.decoder(enc), enc_lens
        head = self._skeleton(arch)
        head.train(self.training)
        params = {f"model.{k}": v for k, v in self.path_state(arch).items()}
        return torch.func.functional_call(head, params, (feats, lengths))

    # ------------------------------------------------------------------ the model contract
    def encode(
        self, feats: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.active != self.largest:
            raise NotImplementedError(
                "a supernet path has no separate encoder; use path_forward or extract()"
            )
        return super().encode(feats, lengths)

    def loss(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        if not self.training:
            lp, lens = self.path_forward(self.active, feats, lengths)
            return ctc_losses(lp, lens, tokens, token_lens).mean()
        teacher, lens = self.path_forward(self.largest, feats, lengths)
        total = ctc_losses(teacher, lens, tokens, token_lens).mean()
        target = teacher.detach()
        valid = torch.arange(teacher.shape[1])[None, :] < lens[:, None]
        for arch in self.sandwich():
            lp, _ = self.path_forward(arch, feats, lengths)
            ctc = ctc_losses(lp, lens, tokens, token_lens).mean()
            kl = F.kl_div(lp, target, log_target=True, reduction="none").sum(-1)
            kd = (kl * valid).sum() / lp.shape[0]  # per utterance, as CTC is
            total = total + (1 - self.distill) * ctc + self.distill * kd
        return total

    def sandwich(self) -> list[Arch]:
        """The students of one step: the smallest path and ``random_subnets`` random ones
        (drawn as ``path_draw`` says), from torch's generator (which the trainer seeds per step,
        so resumable). Under progressive shrinking they come from :attr:`students` (its
        smallest path, not the subspace's), the largest path itself left out."""
        seed = int(torch.randint(0, 2**62, (1,)).item())
        rng = random.Random(seed)
        space = self.students
        draws = [space.sample(rng, by=self.path_draw) for _ in range(self.random_subnets)]
        if space is self.space:
            return [self.smallest, *draws]
        paths = [self.space.validate(a) for a in (smallest(space), *draws)]
        return [a for a in paths if a != self.largest]

    @torch.no_grad()
    def decode(
        self, feats: torch.Tensor, lengths: torch.Tensor, *, beam: int = 1
    ) -> list[list[int]]:
        """Greedy CTC decoding with the active path."""
        if beam != 1:
            return self.extract().eval().decode(feats, lengths, beam=beam)
        lp, lens = self.path_forward(self.active, feats, lengths)
        return ctc_greedy_search(lp, lens)


__all__ = ["ELASTIC", "SHRINK_STAGES", "Supernet", "largest", "smallest", "supernet_space"]
