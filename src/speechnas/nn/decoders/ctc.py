"""CTC decoder: a linear head, greedy decoding and prefix beam search (no language model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.decoders.base import BLANK, DecoderModule, check_beam, check_common

__all__ = [
    "CTCDecoder",
    "CTCPrefixBeam",
    "ctc_greedy_search",
    "ctc_losses",
    "ctc_prefix_beam_search",
]


class CTCDecoder(DecoderModule):
    """Linear projection to the vocabulary + log-softmax, trained with CTC (Graves et al., 2006)."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        check_common(d_model, vocab_size)
        self.vocab_size = vocab_size
        self.proj = nn.Linear(d_model, vocab_size)

    def forward(self, enc: torch.Tensor) -> torch.Tensor:
        """enc (B, T, D) → log-probabilities (B, T, V)."""
        return F.log_softmax(self.proj(enc), dim=-1)

    def utterance_losses(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        """(B,) CTC negative log-likelihoods; impossible alignments give 0 (zero_infinity)."""
        return ctc_losses(self(enc), enc_lens, tokens, token_lens)

    @torch.no_grad()
    def decode(
        self, enc: torch.Tensor, enc_lens: torch.Tensor, *, beam: int = 1
    ) -> list[list[int]]:
        """Greedy best path for ``beam == 1``, CTC prefix beam search otherwise."""
        check_beam(beam)
        log_probs = self(enc)
        if beam == 1:
            return ctc_greedy_search(log_probs, enc_lens)
        return [
            ctc_prefix_beam_search(log_probs[b, : int(n)], beam=beam)[0][0]
            for b, n in enumerate(enc_lens.tolist())
        ]


def ctc_losses(
    log_probs: torch.Tensor,
    lengths: torch.Tensor,
    tokens: torch.Tensor,
    token_lens: torch.Tensor,
) -> torch.Tensor:
    """(B, T, V) log-probabilities → (B,) CTC negative log-likelihoods (impossible alignments
    give 0, zero_infinity)."""
    return F.ctc_loss(
        log_probs.float().transpose(0, 1),  # (T, B, V)
        tokens,
        lengths,
        token_lens,
        blank=BLANK,
        reduction="none",
        zero_infinity=True,
    )


def ctc_greedy_search(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path: argmax per frame, merge repeats, drop blanks. (B, T, V) → token ids per row."""
    best = log_probs.argmax(dim=-1)
    out: list[list[int]] = []
    for row, n in zip(best.tolist(), lengths.tolist(), strict=True):
        ids: list[int] = []
        prev = BLANK
        for i in row[:n]:
            if i != prev and i != BLANK:
                ids.append(i)
            prev = i
        out.append(ids)
    return out


def ctc_prefix_beam_search(log_probs: torch.Tensor, *, beam: int) -> list[tuple[list[int], float]]:
    """Prefix beam search over one utterance's (T, V) log-probabilities (blank = 0); the
    labellings left with their log-probabilities, best first (see :class:`CTCPrefixBeam`)."""
    return CTCPrefixBeam(beam).step(log_probs).results()


class CTCPrefixBeam:
    """CTC prefix beam search that takes an utterance's frames in as many steps as it likes
    (a streaming decoder feeds each chunk's frames as they come).

    Each hypothesis is a labelling with two scores: the log-probability of all frame paths of
    the frames seen so far that collapse to it and end in blank (``pb``) or in its last token
    (``pnb``). Per frame every hypothesis either stays (blank, or a repeat of its last token)
    or grows by one token; growths that reach a labelling already in the beam are merged into
    it, and the ``beam`` best labellings by total probability are kept. With a beam at least as
    large as the number of labellings the search is exact.
    """

    def __init__(self, beam: int) -> None:
        check_beam(beam)
        self.beam = beam
        self.hyps: list[tuple[int, ...]] = [()]
        self.pb = torch.zeros(1, dtype=torch.float64)
        self.pnb = torch.full((1,), float("-inf"), dtype=torch.float64)

    def best(self) -> list[int]:
        """The best labelling of the frames so far."""
        return self.results()[0][0]

    def results(self) -> list[tuple[list[int], float]]:
        """The surviving labellings with their log-probabilities, best first."""
        total = torch.logaddexp(self.pb, self.pnb)
        order = total.argsort(descending=True).tolist()
        return [(list(self.hyps[i]), float(total[i])) for i in order]

    def step(self, log_probs: torch.Tensor) -> CTCPrefixBeam:
        """Takes in the next (T, V) frames; returns self."""
        lp = log_probs.detach().double().cpu()
        vocab = lp.shape[1]
        neg_inf = float("-inf")
        hyps, pb, pnb = self.hyps, self.pb, self.pnb
        for frame in lp:
            k = len(hyps)
            total = torch.logaddexp(pb, pnb)  # (K,)
            last = torch.tensor([h[-1] if h else BLANK for h in hyps])
            has_last = torch.tensor([bool(h) for h in hyps])
            new_pb = total + frame[BLANK]
            new_pnb = torch.where(has_last, pnb + frame[last], neg_inf)
            # Growth by token c (column c - 1): a repeat of the last token needs a blank between.
            grow = total[:, None] + frame[None, 1:]  # (K, V-1)
            rows = has_last.nonzero().squeeze(1)
            grow[rows, last[rows] - 1] = pb[rows] + frame[last[rows]]
            index = {h: i for i, h in enumerate(hyps)}
            for j, h in enumerate(hyps):
                parent = index.get(h[:-1]) if h else None
                if parent is not None:  # h = hyps[parent] + (h[-1],): merge that growth into h
                    new_pnb[j] = torch.logaddexp(new_pnb[j], grow[parent, h[-1] - 1])
                    grow[parent, h[-1] - 1] = neg_inf
            scores = torch.cat([torch.logaddexp(new_pb, new_pnb), grow.flatten()])
            top = scores.topk(min(self.beam, scores.numel()))
            next_hyps: list[tuple[int, ...]] = []
            next_pb: list[float] = []
            next_pnb: list[float] = []
            for score, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                if score == neg_inf:
                    break
                if i < k:
                    next_hyps.append(hyps[i])
                    next_pb.append(float(new_pb[i]))
                    next_pnb.append(float(new_pnb[i]))
                else:
                    parent, col = divmod(i - k, vocab - 1)
                    next_hyps.append((*hyps[parent], col + 1))
                    next_pb.append(neg_inf)
                    next_pnb.append(score)
            hyps = next_hyps
            pb = torch.tensor(next_pb, dtype=torch.float64)
            pnb = torch.tensor(next_pnb, dtype=torch.float64)
        self.hyps, self.pb, self.pnb = hyps, pb, pnb
        return self


class CTCPrefixScorer:
    """Prefix probabilities of one utterance's CTC posteriors, for joint CTC/attention search.

    The CTC prefix score of a labelling ``h`` is the log-probability of every frame path whose
    collapse starts with ``h`` (Watanabe et al., 2017). It is computed incrementally: a
    hypothesis keeps its forward variables ``r`` (T, 2) — the log-probability of ``h`` having
    been emitted by frame t, ending in a non-blank and in a blank — and each extension by token
    c costs one pass over the frames, vectorised over hypotheses and candidates. Extending by
    ``eos`` gives the probability of exactly ``h``, the CTC likelihood of the labelling.
    """

    def __init__(self, log_probs: torch.Tensor) -> None:
        self.x = log_probs.detach().double().cpu()  # (T, V)

    def initial(self) -> torch.Tensor:
        """r of the empty prefix: (T, 2), only blanks so far."""
        r = torch.full((self.x.shape[0], 2), float("-inf"), dtype=torch.float64)
        r[:, 1] = torch.cumsum(self.x[:, BLANK], dim=0)
        return r

    def extend(
        self, r: torch.Tensor, last: torch.Tensor, cands: torch.Tensor, *, empty: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hypotheses' r (K, T, 2), their last tokens (K,) (any value when empty), candidate
        tokens (K, C) and which hypotheses are empty (K,) bool → prefix log-probabilities of
        every extension (K, C) and the extensions' r (K, C, T, 2)."""
        t_len = self.x.shape[0]
        xc = self.x[:, cands].permute(1, 2, 0)  # (K, C, T)
        r_nb, r_b = r[..., 0][:, None, :], r[..., 1][:, None, :]  # (K, 1, T)
        phi = torch.logaddexp(r_nb, r_b).expand(-1, cands.shape[1], -1).clone()
        repeat = cands == last[:, None]  # a repeat needs a blank between: only r_b continues
        phi[repeat] = r_b.expand_as(phi)[repeat]
        new = torch.full((*cands.shape, t_len, 2), float("-inf"), dtype=torch.float64)
        start = torch.where(empty[:, None], xc[..., 0], torch.tensor(float("-inf")).double())
        new[..., 0, 0] = start
        for t in range(1, t_len):
            new[..., t, 0] = torch.logaddexp(new[..., t - 1, 0], phi[..., t - 1]) + xc[..., t]
            new[..., t, 1] = (
                torch.logaddexp(new[..., t - 1, 0], new[..., t - 1, 1]) + self.x[t, BLANK]
            )
        psi = torch.logsumexp(
            torch.cat([start[..., None], phi[..., :-1] + xc[..., 1:]], dim=-1), dim=-1
        )
        return psi, new

    @staticmethod
    def final(r: torch.Tensor) -> torch.Tensor:
        """log P(exactly the prefix) from r (..., T, 2): it ended by the last frame."""
        return torch.logaddexp(r[..., -1, 0], r[..., -1, 1])
