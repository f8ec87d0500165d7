"""RNN transducer (Graves, 2012): prediction network, joiner, loss, greedy and beam search."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.decoders.base import BLANK, DecoderModule, check_beam, check_common

__all__ = ["Joiner", "PredictionNetwork", "RNNTDecoder", "rnnt_loss"]

State = tuple[torch.Tensor, torch.Tensor]  # LSTM (h, c), each (layers, B, H)


class PredictionNetwork(nn.Module):
    """Label-conditioned LSTM; the blank id doubles as the start symbol."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True)
        self.output_dim = hidden

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, U) → (B, U+1, H); row u has seen the start symbol and tokens[:, :u]."""
        start = torch.full_like(tokens[:, :1], BLANK)
        out, _ = self.lstm(self.embed(torch.cat([start, tokens], dim=1)))
        return out

    def step(self, tokens: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """tokens (B,), state or None (= start) → output (B, H), new state."""
        out, new_state = self.lstm(self.embed(tokens)[:, None, :], state)
        return out[:, 0], new_state


class Joiner(nn.Module):
    """out(tanh(W_e enc + W_p pred)): logits over the vocabulary."""

    def __init__(self, enc_dim: int, pred_dim: int, joint_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.enc_proj = nn.Linear(enc_dim, joint_dim)
        self.pred_proj = nn.Linear(pred_dim, joint_dim)
        self.out = nn.Linear(joint_dim, vocab_size)

    def forward(self, enc: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """enc (..., E), pred (..., P) → logits (..., V), the leading dims broadcast.

        For the loss: enc (B, T, 1, E) and pred (B, 1, U+1, P) give (B, T, U+1, V); each input
        is projected before the broadcast, so the large tensor is only built once.
        """
        return self.out(torch.tanh(self.enc_proj(enc) + self.pred_proj(pred)))


def rnnt_loss(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    logit_lens: torch.Tensor,
    token_lens: torch.Tensor,
    blank: int = BLANK,
) -> torch.Tensor:
    """Transducer negative log-likelihood per utterance.

    logits (B, T, U+1, V) unnormalised; tokens (B, U); logit_lens (B,) = T_b; token_lens (B,) = U_b.
    Returns (B,) -log P(tokens[b, :U_b] | frames[b, :T_b]).

    alpha(t, u) is the log-probability of having emitted u tokens and consumed t frames (so an
    alignment ends at alpha(T_b, U_b) after the blank of frame T_b - 1). Cells with equal t + u lie
    on one anti-diagonal and depend only on the previous one, so the recursion runs over the
    T + U anti-diagonals, vectorised over the batch and the cells of a diagonal. Gradients come
    from autograd. Unreachable cells hold a large finite negative number instead of -inf so that
    logaddexp never sees (-inf, -inf), whose gradient is NaN.
    """
    b, t_max, u1, _ = logits.shape
    assert tokens.shape == (b, u1 - 1), f"tokens {tuple(tokens.shape)} vs logits {logits.shape}"
    dtype = torch.promote_types(logits.dtype, torch.float32)
    lp = F.log_softmax(logits.to(dtype), dim=-1)
    neg = torch.tensor(-1e30, dtype=dtype, device=logits.device)
    blank_lp = lp[..., blank]  # (B, T, U+1)
    idx = tokens.long().clamp(min=0)[:, None, :, None].expand(b, t_max, u1 - 1, 1)
    emit_lp = lp[:, :, :-1].gather(3, idx).squeeze(3)  # (B, T, U): emit tokens[u] at (t, u)
    frames = torch.arange(t_max, device=logits.device)
    emit_lp = torch.where(frames[None, :, None] < logit_lens[:, None, None], emit_lp, neg)

    # Skew so that row n holds the cells (t = n - u, u) of anti-diagonal n.
    n_diag = t_max + u1 - 1
    n = torch.arange(n_diag, device=logits.device)[:, None]
    u = torch.arange(u1, device=logits.device)[None, :]
    t = n - u  # (N, U+1)
    valid = (t >= 0) & (t < t_max)
    tc = t.clamp(0, t_max - 1)
    blank_skew = torch.where(valid, blank_lp[:, tc, u], neg)  # (B, N, U+1)
    emit_skew = torch.where(valid[:, :-1], emit_lp[:, tc[:, :-1], u[:, :-1]], neg)  # (B, N, U)

    start = torch.zeros(b, 1, dtype=dtype, device=logits.device)
    alpha = torch.cat([start, neg.expand(b, u1 - 1)], dim=1)  # diagonal 0: alpha(0, 0) = 0
    diagonals = [alpha]
    for d in range(n_diag):
        stay = alpha + blank_skew[:, d]  # (t - 1, u) --blank--> (t, u)
        move = torch.cat([neg.expand(b, 1), alpha[:, :-1] + emit_skew[:, d]], dim=1)  # (t, u - 1)
        alpha = torch.logaddexp(stay, move)
        diagonals.append(alpha)
    alphas = torch.stack(diagonals, dim=1)  # (B, N + 1, U+1)
    rows = torch.arange(b, device=logits.device)
    return -alphas[rows, logit_lens + token_lens, token_lens]


@dataclass(slots=True)
class GreedyState:
    """Where a greedy RNN-T search stands: tokens so far, predictor output and state."""

    hyps: list[list[int]]
    pred: torch.Tensor
    state: State


class RNNTDecoder(DecoderModule):
    """Prediction network + joiner over the encoder output, trained with ``rnnt_loss``.

    Decoding: greedy (``beam == 1``, at most ``max_symbols`` tokens per frame, batched) or the
    breadth-first beam search of Graves (2012) in the simplified form used by ESPnet (``beam > 1``).
    """

    def __init__(
        self,
        d_model: int,
        vocab_size: int,
        *,
        pred_dim: int = 256,
        joint_dim: int = 320,
        pred_layers: int = 1,
        max_symbols: int = 5,
    ) -> None:
        super().__init__()
        check_common(d_model, vocab_size)
        sizes = {"pred_dim": pred_dim, "joint_dim": joint_dim, "pred_layers": pred_layers,
                 "max_symbols": max_symbols}  # fmt: skip
        for name, v in sizes.items():
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"rnnt {name}: expected a positive integer, got {v!r}")
        self.vocab_size = vocab_size
        self.max_symbols = max_symbols
        self.predictor = PredictionNetwork(vocab_size, pred_dim, pred_dim, pred_layers)
        self.joiner = Joiner(d_model, pred_dim, joint_dim, vocab_size)

    def utterance_losses(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        pred = self.predictor(tokens)  # (B, U+1, P)
        logits = self.joiner(enc[:, :, None, :], pred[:, None, :, :])  # (B, T, U+1, V)
        return rnnt_loss(logits, tokens, enc_lens, token_lens)

    @torch.no_grad()
    def decode(
        self, enc: torch.Tensor, enc_lens: torch.Tensor, *, beam: int = 1
    ) -> list[list[int]]:
        check_beam(beam)
        if beam == 1:
            return self._greedy(enc, enc_lens)
        return [self._beam(enc[i, : int(n)], beam) for i, n in enumerate(enc_lens.tolist())]

    def _greedy(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[list[int]]:
        return self.greedy_step(enc, enc_lens, self.greedy_start(enc.shape[0])).hyps

    def greedy_start(self, batch: int) -> GreedyState:
        """The greedy search's state before any frame: empty hypotheses, the predictor after
        blank."""
        device = next(self.parameters()).device
        pred, state = self.predictor.step(torch.full((batch,), BLANK, device=device), None)
        return GreedyState([[] for _ in range(batch)], pred, state)

    def greedy_step(
        self, enc: torch.Tensor, enc_lens: torch.Tensor, search: GreedyState
    ) -> GreedyState:
        """Greedy search over the next frames enc (B, T, D) (``enc_lens`` valid per row) from
        ``search``, so an utterance can be decoded chunk by chunk; returns the new state (the
        hypotheses are extended in place)."""
        hyps, pred, state = search.hyps, search.pred, search.state
        for t in range(enc.shape[1]):
            active = t < enc_lens  # (B,) utterances still inside their frames
            for _ in range(self.max_symbols):
                best = self.joiner(enc[:, t], pred).argmax(dim=-1)  # (B,)
                emit = active & (best != BLANK)
                if not bool(emit.any()):
                    break
                for i in emit.nonzero().squeeze(1).tolist():
                    hyps[i].append(int(best[i]))
                new_pred, new_state = self.predictor.step(best, state)
                pred = torch.where(emit[:, None], new_pred, pred)
                keep = emit[None, :, None]  # (1, B, 1) against (layers, B, H)
                state = (
                    torch.where(keep, new_state[0], state[0]),
                    torch.where(keep, new_state[1], state[1]),
                )
                active = emit  # a frame ends at its first blank
        return GreedyState(hyps, pred, state)

    def _beam(self, enc: torch.Tensor, beam: int) -> list[int]:
        """Breadth-first beam search over one utterance's frames enc (T, D).

        Per frame, the best unexpanded hypothesis of set A is popped and extended: by blank into
        B (the frame's finished set; equal label sequences are merged by adding probabilities)
        and by its ``beam`` best tokens back into A. The frame ends once B holds ``beam``
        hypotheses better than anything left in A, or after ``beam * max_symbols`` expansions.
        Prediction-network outputs are cached per label sequence.
        """
        cache: dict[tuple[int, ...], tuple[torch.Tensor, State]] = {}

        def predict(seq: tuple[int, ...]) -> torch.Tensor:
            """(P,) prediction output after seq; its prefix seq[:-1] is always cached first."""
            if seq not in cache:
                prev_state = cache[seq[:-1]][1] if seq else None
                token = torch.tensor([seq[-1] if seq else BLANK], device=enc.device)
                cache[seq] = self.predictor.step(token, prev_state)
            return cache[seq][0][0]

        kept: dict[tuple[int, ...], float] = {(): 0.0}
        for t in range(enc.shape[0]):
            frame_a = dict(kept)
            frame_b: dict[tuple[int, ...], float] = {}
            for _ in range(beam * self.max_symbols):
                if not frame_a:
                    break
                seq = max(frame_a, key=frame_a.__getitem__)
                score = frame_a.pop(seq)
                logp = F.log_softmax(self.joiner(enc[t], predict(seq)), dim=-1)
                blank_score = score + float(logp[BLANK])
                old = frame_b.get(seq)
                frame_b[seq] = blank_score if old is None else _logadd(old, blank_score)
                top = logp[1:].topk(min(beam, self.vocab_size - 1))
                for lp, k in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                    grown = (*seq, k + 1)
                    prev = frame_a.get(grown)
                    frame_a[grown] = score + lp if prev is None else _logadd(prev, score + lp)
                best_a = max(frame_a.values(), default=float("-inf"))
                if sum(s > best_a for s in frame_b.values()) >= beam:
                    break
            kept = dict(sorted(frame_b.items(), key=lambda kv: -kv[1])[:beam])
        return list(max(kept, key=kept.__getitem__))


def _logadd(a: float, b: float) -> float:
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))
