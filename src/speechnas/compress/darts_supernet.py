"""The mixed supernet of differentiable FFN compression, initialised from a trained model.

Every :class:`~speechnas.nn.blocks.feedforward.FeedForward` of a trained Conformer, Transformer
or E-Branchformer is replaced by a :class:`MixedFeedForward` whose output is a weighted sum over
candidates ``(hidden width, rank)``: the width is a fraction of the layer's trained ``ffn_dim``,
the rank the bottleneck ``k`` of ``W ≈ A·B`` for both FFN linears (0: the unfactorised FFN;
a rank that would not save parameters at a width, ``k >= d·h / (d + h)``, is no candidate there).
All candidates share one set of weights, initialised from the trained ones:

- the hidden units are ranked by ``‖W_up[i, :]‖·‖W_down[:, i]‖`` and permuted so the most
  important come first; a width ``w`` is the first ``w`` units (a permutation of hidden units
  leaves the FFN's function unchanged, so the full width is the trained FFN exactly);
- a rank-``k`` candidate uses the first ``k`` components of the truncated SVD of the permuted
  dense weights: ``W_up = (U S)·Vᵀ`` and ``W_down = U·(S Vᵀ)``, the orthonormal factor on the
  ``d_model`` side (so the semi-orthogonal constraint of TDNN-F holds at the start, and a prefix
  of its rows is still semi-orthogonal). Full rank reproduces the trained weights.

Because the down projection is linear, the mixture over widths of one rank is one pass with the
hidden units scaled by ``m_i = Σ_{w > i} p_w``; one pass per rank, not per candidate, keeps the
soft mixture affordable on a CPU. With a one-hot mixture (stage 1 sampling, or the extracted
architecture) only that candidate is computed, on sliced weights, exactly as the plain
:class:`FeedForward` of :meth:`DartsSupernet.extract` computes it.

Both macaron FFNs of a layer share the layer's choice, as the :class:`Arch` has one ``ffn_dim``
and one ``ffn_lowrank`` per layer. The E-Branchformer's cgMLP is as wide as its ``ffn_dim``, so
only its ranks are searched (widths other than 1.0 are left out).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.blocks.feedforward import FeedForward
from speechnas.nn.build import SpeechModel
from speechnas.nn.spec import ATTENTION_ENCODERS
from speechnas.space.arch import Arch

__all__ = [
    "Candidate",
    "DartsSupernet",
    "MixedFeedForward",
    "candidate_grid",
    "ffn_parameters",
    "semi_orthogonal_step",
]

_FFN_NAMES = ("ff1", "ff", "ff2")  # the FeedForward attributes of the attention layers


@dataclass(frozen=True, slots=True)
class Candidate:
    """One per-layer choice: hidden width as a fraction of the trained ``ffn_dim``, and rank."""

    fraction: float
    rank: int

    def label(self) -> str:
        return f"{self.fraction:g}×" + (f" r{self.rank}" if self.rank else " full")


def candidate_grid(widths: Sequence[float], ranks: Sequence[int]) -> tuple[Candidate, ...]:
    """Width-major grid, the largest first: widths descending, then full rank, then ranks
    descending. ``argmax`` returns the first of tied logits, so ties keep the larger model."""
    ws = sorted(set(widths), reverse=True)
    rs = [0, *sorted({r for r in ranks if r}, reverse=True)]
    return tuple(Candidate(float(w), int(r)) for w in ws for r in rs)


def ffn_parameters(d_model: int, hidden: int, rank: int) -> int:
    """Parameters of ``FeedForward(d_model, hidden, lowrank=rank)`` (LayerNorm included)."""
    if rank == 0:
        return 2 * d_model * hidden + hidden + d_model + 2 * d_model
    return 2 * rank * (d_model + hidden) + hidden + d_model + 2 * d_model


def semi_orthogonal_step(m: torch.Tensor, *, floating: bool = False) -> torch.Tensor:
    """One TDNN-F projection step (Povey et al., 2018) towards ``M Mᵀ = α² I``: (r, c) → (r, c).

    ``M ← M − ½ α⁻² (M Mᵀ − α² I) M`` with ``α = 1``, or with ``floating`` the scale
    ``α² = tr(P Pᵀ) / tr(P)``, ``P = M Mᵀ``, so only the shape is constrained. A matrix far
    from orthonormal (``r·tr(P²)/tr(P)² > 1.1``) takes a quarter step, as Kaldi's does.
    Rows must not outnumber columns.
    """
    rows, cols = m.shape
    if rows > cols:
        raise ValueError(f"semi_orthogonal_step: {rows} rows > {cols} columns; pass Mᵀ")
    p = m @ m.T
    tr_p, tr_pp = torch.trace(p), torch.trace(p @ p.T)
    alpha2 = tr_pp / tr_p if floating else torch.ones((), dtype=m.dtype)
    speed = 0.125
    if rows * tr_pp / tr_p.square() > 1.1:
        speed *= 0.25
    eye = torch.eye(rows, dtype=m.dtype, device=m.device)
    return m - (4 * speed / alpha2) * (p - alpha2 * eye) @ m


def _dense(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The (out, in) weight and (out,) bias of ``factorised_linear``'s result."""
    if isinstance(layer, nn.Linear):
        return layer.weight.detach().clone(), layer.bias.detach().clone()
    first, second = layer[0], layer[1]  # bias-free bottleneck, then the biased map
    return (second.weight @ first.weight).detach().clone(), second.bias.detach().clone()


class MixedFeedForward(nn.Module):
    """A FeedForward over a grid of (hidden width, rank) candidates: (B, T, D) → (B, T, D).

    ``mix`` (set by the supernet before a forward) is the (n_widths, n_ranks) grid of mixing
    weights of this layer; invalid candidates carry weight 0.
    """

    mix: torch.Tensor | None

    def __init__(
        self, ff: FeedForward, widths: Sequence[int], ranks: Sequence[int], valid: torch.Tensor
    ) -> None:
        """``widths``: hidden units of each width candidate; ``ranks``: 0 first; ``valid``:
        (n_widths, n_ranks) bool."""
        super().__init__()
        w1, b1 = _dense(ff.up)  # (H, d), (H,)
        w2, b2 = _dense(ff.down)  # (d, H), (d,)
        hidden, d = w1.shape
        order = torch.argsort(w1.norm(dim=1) * w2.norm(dim=0), descending=True, stable=True)
        w1, b1, w2 = w1[order], b1[order], w2[:, order]
        self.d_model, self.hidden = d, hidden
        self.widths, self.ranks = tuple(int(w) for w in widths), tuple(int(r) for r in ranks)
        self.norm = copy.deepcopy(ff.norm)
        self.drop = copy.deepcopy(ff.drop)
        self.w_up, self.b_up = nn.Parameter(w1), nn.Parameter(b1)
        self.w_down, self.b_down = nn.Parameter(w2), nn.Parameter(b2)
        u, s, vh = torch.linalg.svd(w1, full_matrices=False)  # (H, K), (K,), (K, d)
        self.up_a, self.up_b = nn.Parameter(u * s), nn.Parameter(vh.contiguous())
        u2, s2, vh2 = torch.linalg.svd(w2, full_matrices=False)  # (d, K), (K,), (K, H)
        self.down_a, self.down_b = nn.Parameter(u2.contiguous()), nn.Parameter(s2[:, None] * vh2)
        units = torch.arange(hidden)
        self.register_buffer("unit_mask", (units[None, :] < torch.tensor(widths)[:, None]).float())
        self.register_buffer("valid", valid.clone())
        self.mix = None

    @property
    def max_rank(self) -> int:
        return min(self.d_model, self.hidden)

    def _up(self, n: torch.Tensor, rank: int, width: int) -> torch.Tensor:
        if rank == 0:
            return F.linear(n, self.w_up[:width], self.b_up[:width])
        return F.linear(F.linear(n, self.up_b[:rank]), self.up_a[:width, :rank], self.b_up[:width])

    def _down(self, h: torch.Tensor, rank: int, width: int) -> torch.Tensor:
        """Without the bias."""
        if rank == 0:
            return F.linear(h, self.w_down[:, :width])
        return F.linear(F.linear(h, self.down_b[:rank, :width]), self.down_a[:, :rank])

    def candidate_forward(self, x: torch.Tensor, width: int, rank: int) -> torch.Tensor:
        """x (B, T, D) → (B, T, D) of one candidate (any width <= H, rank <= min(d, H))."""
        h = F.silu(self._up(self.norm(x), rank, width))
        return self.drop(self._down(h, rank, width) + self.b_down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) → Σ_c mix_c · FFN_c(x), (B, T, D)."""
        mix = self.mix
        if mix is None:
            raise RuntimeError("MixedFeedForward: no mixing weights set (DartsSupernet.set_mix)")
        if not mix.requires_grad:
            nonzero = mix.nonzero()
            if len(nonzero) == 1:  # one candidate: compute it alone, on sliced weights
                i, j = nonzero[0].tolist()
                return mix[i, j] * self.candidate_forward(x, self.widths[i], self.ranks[j])
        n = self.norm(x)
        y = self.b_down * mix.sum()
        t = F.linear(n, self.up_b) if any(self.ranks) else n  # (B, T, K), shared by all ranks
        for j, rank in enumerate(self.ranks):
            col = mix[:, j]  # (n_widths,)
            if not bool(self.valid[:, j].any()) or (not col.requires_grad and not col.any()):
                continue
            if rank == 0:
                z = F.linear(n, self.w_up, self.b_up)
            else:
                z = F.linear(t[..., :rank], self.up_a[:, :rank], self.b_up)
            h = F.silu(z) * (col @ self.unit_mask)  # (B, T, H), units beyond a width scaled out
            y = y + self._down(h, rank, self.hidden)
        return self.drop(y)

    @torch.no_grad()
    def project_semi_orthogonal(self) -> None:
        """One projection step of the d_model-side factors (``up_b`` rows, ``down_a`` cols)."""
        self.up_b.copy_(semi_orthogonal_step(self.up_b))
        self.down_a.copy_(semi_orthogonal_step(self.down_a.T).T)

    def plain_state(self, width: int, rank: int) -> dict[str, torch.Tensor]:
        """The state dict of ``FeedForward(d, width, lowrank=rank)`` computing this candidate."""
        out = {f"norm.{k}": v for k, v in self.norm.state_dict().items()}
        if rank == 0:
            out |= {"up.weight": self.w_up[:width], "up.bias": self.b_up[:width],
                    "down.weight": self.w_down[:, :width], "down.bias": self.b_down}  # fmt: skip
        else:
            out |= {
                "up.0.weight": self.up_b[:rank], "up.1.weight": self.up_a[:width, :rank],
                "up.1.bias": self.b_up[:width], "down.0.weight": self.down_b[:rank, :width],
                "down.1.weight": self.down_a[:, :rank], "down.1.bias": self.b_down,
            }  # fmt: skip
        return {k: v.detach().clone() for k, v in out.items()}


class DartsSupernet(nn.Module):
    """A copy of a trained model with mixed FFNs, plus architecture logits ``alpha`` (L, C).

    ``model`` runs as the ordinary :class:`SpeechModel` (``loss``, ``decode``) with the mixing
    weights last given to :meth:`set_mix`. ``candidates`` is the grid of :func:`candidate_grid`;
    ``valid`` (L, C) marks the candidates of each layer; ``params`` (L, C) their FFN parameter
    count summed over the layer's FFN modules; ``fp32_ffn_params`` the trained model's.
    """

    def __init__(self, model: SpeechModel, widths: Sequence[float], ranks: Sequence[int]) -> None:
        super().__init__()
        spec = model.spec
        if spec.encoder not in ATTENTION_ENCODERS:
            raise ValueError(
                f"encoder: a {spec.encoder!r} encoder has no feed-forward layers to compress; "
                f"differentiable FFN compression needs one of {list(ATTENTION_ENCODERS)}"
            )
        self.base_arch: Arch = model.arch
        self.vocab_size = model.vocab_size
        ffs = [m for m in model.modules() if isinstance(m, FeedForward)]
        self.dropout = ffs[0].drop.p if ffs else 0.0
        self.model = SpeechModel(model.arch, vocab_size=model.vocab_size, dropout=self.dropout)
        self.model.load_state_dict(model.state_dict())  # a copy: the trained model stays as is
        self.candidates = candidate_grid(widths, ranks)
        fractions = sorted(set(widths), reverse=True)
        self.rank_values = tuple(dict.fromkeys(c.rank for c in self.candidates))  # 0 first
        d = spec.d_model
        stack = self.model.encoder.stages[-1]
        n_layers, n_cand = len(stack.layers), len(self.candidates)
        valid = torch.zeros(n_layers, n_cand, dtype=torch.bool)
        params = torch.zeros(n_layers, n_cand, dtype=torch.float64)
        self.mixed: list[list[MixedFeedForward]] = []
        self.hidden: list[tuple[int, ...]] = []  # per layer: the hidden units of each fraction
        fp32 = 0
        for li, layer in enumerate(stack.layers):
            trained = spec.layer[li].ffn_dim
            names = [n for n in _FFN_NAMES if isinstance(getattr(layer, n, None), FeedForward)]
            hidden = tuple(max(1, round(f * trained)) for f in fractions)
            seen: set[int] = set()
            for ci, c in enumerate(self.candidates):
                h = hidden[fractions.index(c.fraction)]
                ok = spec.encoder != "ebranchformer" or c.fraction == 1.0
                # a factorisation must save parameters (then also rank < min(d, h))
                ok = ok and (c.rank == 0 or ffn_parameters(d, h, c.rank) < ffn_parameters(d, h, 0))
                if c.rank == 0:  # a width rounding to an earlier one is no new candidate
                    ok = ok and h not in seen
                    seen.add(h)
                else:
                    ok = ok and bool(valid[li, self.candidates.index(Candidate(c.fraction, 0))])
                valid[li, ci] = ok
                params[li, ci] = len(names) * ffn_parameters(d, h, c.rank)
            grid = valid[li].view(len(fractions), len(self.rank_values))
            mods = []
            for name in names:
                ff = getattr(layer, name)
                fp32 += sum(p.numel() for p in ff.parameters())
                mixed = MixedFeedForward(ff, hidden, self.rank_values, grid)
                setattr(layer, name, mixed)
                mods.append(mixed)
            self.mixed.append(mods)
            self.hidden.append(hidden)
        self.n_fractions = len(fractions)
        self.fractions = tuple(fractions)
        self.register_buffer("valid", valid)
        self.register_buffer("params", params)
        self.fp32_ffn_params = fp32
        self.alpha = nn.Parameter(torch.zeros(n_layers, n_cand))
        self.set_mix(self.one_hot(self.largest()))

    # ------------------------------------------------------------------ architecture weights
    def logits(self) -> torch.Tensor:
        """(L, C) logits, -inf on the candidates a layer does not have."""
        return self.alpha.masked_fill(~self.valid, float("-inf"))

    def probabilities(self) -> torch.Tensor:
        """(L, C) choice probabilities softmax(alpha); each row sums to 1."""
        return F.softmax(self.logits(), dim=-1)

    def mixing_weights(
        self, *, gumbel: bool, tau: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(L, C) relaxed one-hot weights: softmax((alpha + g) / tau) with Gumbel noise g drawn
        from ``generator``, or the plain softmax(alpha) (``gumbel=False``; tau unused)."""
        logits = self.logits()
        if not gumbel:
            return F.softmax(logits, dim=-1)
        u = torch.rand(logits.shape, generator=generator).clamp(1e-10, 1 - 1e-7)
        return F.softmax((logits - torch.log(-torch.log(u))) / tau, dim=-1)

    def largest(self) -> list[int]:
        return [0] * len(self.mixed)  # (1.0, full rank) is always valid and first

    def argmax(self) -> list[int]:
        """Per layer the candidate of the highest logit (ties: the larger candidate)."""
        return [int(i) for i in self.logits().argmax(dim=-1)]

    def sample(self, generator: torch.Generator) -> list[int]:
        """Per layer a uniformly drawn valid candidate."""
        w = self.valid.double()
        return [int(i) for i in torch.multinomial(w, 1, generator=generator)[:, 0]]

    def one_hot(self, choice: Sequence[int]) -> torch.Tensor:
        out = torch.zeros(self.valid.shape)
        out[torch.arange(len(choice)), torch.tensor(list(choice))] = 1.0
        return out

    def uniform(self) -> torch.Tensor:
        return self.valid.float() / self.valid.sum(-1, keepdim=True)

    def set_mix(self, weights: torch.Tensor) -> None:
        """Mixing weights (L, C) for the next forward passes (each row on the valid ones)."""
        for li, mods in enumerate(self.mixed):
            grid = weights[li].view(self.n_fractions, len(self.rank_values))
            for m in mods:
                m.mix = grid

    def expected_params(self, probs: torch.Tensor) -> torch.Tensor:
        """Scalar Σ_l Σ_c p_lc · params(l, c): the expected FFN parameter count."""
        return (probs.double() * self.params).sum().float()

    def penalty(self, probs: torch.Tensor) -> torch.Tensor:
        """The expected FFN parameters as a share of the trained model's fp32 FFN parameters."""
        return self.expected_params(probs) / self.fp32_ffn_params

    def weight_parameters(self) -> list[nn.Parameter]:
        return list(self.model.parameters())

    @torch.no_grad()
    def project_semi_orthogonal(self) -> None:
        for mods in self.mixed:
            for m in mods:
                m.project_semi_orthogonal()

    # ------------------------------------------------------------------ the chosen model
    def choice_of(self, li: int, ci: int) -> tuple[int, int]:
        """(hidden units, rank) of candidate ``ci`` in layer ``li``."""
        c = self.candidates[ci]
        return self.hidden[li][self.fractions.index(c.fraction)], c.rank

    def arch_of(self, choice: Sequence[int]) -> Arch:
        """The trained architecture with the per-layer ``ffn_dim``/``ffn_lowrank`` of ``choice``."""
        dims = [self.choice_of(li, ci) for li, ci in enumerate(choice)]
        return self.base_arch.replace(
            ffn_dim=tuple(h for h, _ in dims), ffn_lowrank=tuple(r for _, r in dims)
        )

    def extract(self, choice: Sequence[int] | None = None) -> SpeechModel:
        """A plain model of ``choice`` (default: the argmax) holding copies of its weights."""
        choice = self.argmax() if choice is None else list(choice)
        arch = self.arch_of(choice)
        plain = SpeechModel(arch, vocab_size=self.vocab_size, dropout=self.dropout)
        state = {}
        prefixes: dict[str, MixedFeedForward] = {}
        for name, module in self.model.named_modules():
            if isinstance(module, MixedFeedForward):
                prefixes[name + "."] = module
        for k, v in self.model.state_dict().items():
            if not any(k.startswith(p) for p in prefixes):
                state[k] = v.detach().clone()
        stack_name = next(iter(prefixes)).split(".layers.")[0]
        for prefix, module in prefixes.items():
            li = int(prefix[len(stack_name) + len(".layers.") :].split(".")[0])
            width, rank = self.choice_of(li, choice[li])
            state |= {prefix + k: v for k, v in module.plain_state(width, rank).items()}
        plain.load_state_dict(state)
        plain.train(self.training)
        return plain
