"""CTC decoder: a linear head, greedy decoding and prefix beam search (no language model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.decoders.base import BLANK, DecoderModule, check_beam, check_common

__all__ = ["CTCDecoder", "ctc_greedy_search", "ctc_losses", "ctc_prefix_beam_search"]


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
    """Prefix beam search over one utterance's (T, V) log-probabilities (blank = 0).

    Each hypothesis is a labelling with two scores: the log-probability of all frame paths of
    the frames seen so far that collapse to it and end in blank (``pb``) or in its last token
    (``pnb``). Per frame every hypothesis either stays (blank, or a repeat of its last token)
    or grows by one token; growths that reach a labelling already in the beam are merged into
    it, and the ``beam`` best labellings by total probability are kept. With a beam at least as
    large as the number of labellings the search is exact.

    Returns the surviving labellings with their log-probabilities, best first.
    """
    check_beam(beam)
    lp = log_probs.detach().double().cpu()  # (T, V)
    vocab = lp.shape[1]
    neg_inf = float("-inf")
    hyps: list[tuple[int, ...]] = [()]
    pb = torch.zeros(1, dtype=torch.float64)
    pnb = torch.full((1,), neg_inf, dtype=torch.float64)
    for frame in lp:
        k = len(hyps)
        total = torch.logaddexp(pb, pnb)  # (K,)
        last = torch.tensor([h[-1] if h else BLANK for h in hyps])
        has_last = torch.tensor([bool(h) for h in hyps])
        new_pb = total + frame[BLANK]
        new_pnb = torch.where(has_last, pnb + frame[last], neg_inf)
        # Growth by token c (column c - 1): a repeat of the last token needs a blank in between.
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
        top = scores.topk(min(beam, scores.numel()))
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
    total = torch.logaddexp(pb, pnb)
    order = total.argsort(descending=True).tolist()
    return [(list(hyps[i]), float(total[i])) for i in order]
