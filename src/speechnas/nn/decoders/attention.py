"""Attention (Transformer) decoder with a CTC side head: hybrid CTC/attention training.

Id convention: ids 0..V-1 are the shared vocabulary (0 = blank/padding, never emitted) and the
extra id V (``self.sos_eos``) is both the start and the end symbol, so the embedding and the
output layer have V + 1 entries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.blocks.masks import padding_mask, sinusoidal_positions
from speechnas.nn.decoders.base import BLANK, DecoderModule, check_beam, check_common
from speechnas.nn.decoders.ctc import CTCDecoder

__all__ = ["AttentionDecoder"]

IGNORE = -100  # target id of padded positions in the cross-entropy


class _Attention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, mem: torch.Tensor, mask: torch.Tensor | None, *, causal: bool
    ) -> torch.Tensor:
        """x (B, L, D) attends to mem (B, S, D); mask (B, 1, 1, S) True where allowed."""
        b, length, d = x.shape
        h = self.heads
        q = self.q(x).view(b, length, h, d // h).transpose(1, 2)  # (B, H, L, Dh)
        k, v = self.kv(mem).view(b, mem.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.out(y.transpose(1, 2).reshape(b, length, d))


class _Block(nn.Module):
    """Pre-LN: causal self-attention, cross-attention to the encoder, feed-forward."""

    def __init__(self, d_model: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attn = _Attention(d_model, heads)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_attn = _Attention(d_model, heads)
        self.ffn = nn.Sequential(
            nn.LayerNorm(d_model),
            nn.Linear(d_model, ffn_dim),
            nn.ReLU(),
            nn.Linear(ffn_dim, d_model),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mem: torch.Tensor, mem_mask: torch.Tensor) -> torch.Tensor:
        y = self.self_norm(x)
        x = x + self.drop(self.self_attn(y, y, None, causal=True))
        x = x + self.drop(self.cross_attn(self.cross_norm(x), mem, mem_mask, causal=False))
        return x + self.drop(self.ffn(x))


class AttentionDecoder(DecoderModule):
    """Autoregressive Transformer decoder over the encoder output, plus a CTC head.

    Loss per utterance: ``ctc_weight * CTC + (1 - ctc_weight) * CE`` where CE is the summed
    label-smoothed (0.1) cross-entropy of ``tokens + [eos]`` given ``[sos] + tokens``.
    """

    def __init__(
        self,
        d_model: int,
        vocab_size: int,
        *,
        layers: int = 3,
        heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        ctc_weight: float = 0.3,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__()
        check_common(d_model, vocab_size)
        for name, v in (("layers", layers), ("heads", heads), ("ffn_dim", ffn_dim)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"attention {name}: expected a positive integer, got {v!r}")
        if d_model % heads:
            raise ValueError(f"attention heads: {heads} does not divide d_model={d_model}")
        for name, f in (("dropout", dropout), ("label_smoothing", label_smoothing)):
            if not 0.0 <= f < 1.0:
                raise ValueError(f"attention {name}: {f} is not in [0, 1)")
        if not 0.0 <= ctc_weight <= 1.0:
            raise ValueError(f"attention ctc_weight: {ctc_weight} is not in [0, 1]")
        self.vocab_size = vocab_size
        self.sos_eos = vocab_size
        self.ctc_weight = ctc_weight
        self.label_smoothing = label_smoothing
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size + 1, d_model)
        self.blocks = nn.ModuleList(_Block(d_model, heads, ffn_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size + 1)
        self.ctc = CTCDecoder(d_model, vocab_size)
        self.drop = nn.Dropout(dropout)

    def logits(self, enc: torch.Tensor, enc_lens: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """enc (B, T, D), enc_lens (B,), decoder inputs ys (B, L) → logits (B, L, V+1)."""
        length = ys.shape[1]
        pos = sinusoidal_positions(length, self.d_model).to(enc.device, enc.dtype)
        x = self.drop(self.embed(ys) * math.sqrt(self.d_model) + pos)  # (B, L, D)
        mem_mask = ~padding_mask(enc_lens, enc.shape[1])[:, None, None, :]  # (B, 1, 1, T)
        for block in self.blocks:
            x = block(x, enc, mem_mask)
        return self.out(self.norm(x))

    def attention_losses(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        """(B,) summed label-smoothed cross-entropy of each utterance's tokens and eos."""
        b, u = tokens.shape
        ys_in = torch.cat([torch.full_like(tokens[:, :1], self.sos_eos), tokens], dim=1)
        ys_out = torch.cat([tokens, torch.full_like(tokens[:, :1], BLANK)], dim=1)  # (B, U+1)
        rows = torch.arange(b, device=tokens.device)
        ys_out[rows, token_lens] = self.sos_eos
        ys_out = ys_out.masked_fill(padding_mask(token_lens + 1, u + 1), IGNORE)
        logits = self.logits(enc, enc_lens, ys_in).float()
        ce = F.cross_entropy(
            logits.transpose(1, 2),  # (B, V+1, U+1)
            ys_out,
            ignore_index=IGNORE,
            label_smoothing=self.label_smoothing,
            reduction="none",
        )  # (B, U+1), zero on ignored positions
        return ce.sum(dim=1)

    def utterance_losses(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        tokens: torch.Tensor,
        token_lens: torch.Tensor,
    ) -> torch.Tensor:
        w = self.ctc_weight
        total = torch.zeros(enc.shape[0], device=enc.device)
        if w > 0:
            total = total + w * self.ctc.utterance_losses(enc, enc_lens, tokens, token_lens)
        if w < 1:
            total = total + (1 - w) * self.attention_losses(enc, enc_lens, tokens, token_lens)
        return total

    def _next_log_probs(
        self, enc: torch.Tensor, enc_lens: torch.Tensor, ys: torch.Tensor
    ) -> torch.Tensor:
        """(B, V+1) log-probabilities of the next token; blank (padding) is never proposed."""
        logp = F.log_softmax(self.logits(enc, enc_lens, ys)[:, -1].float(), dim=-1)
        logp[:, BLANK] = float("-inf")
        return logp

    @torch.no_grad()
    def decode(
        self, enc: torch.Tensor, enc_lens: torch.Tensor, *, beam: int = 1
    ) -> list[list[int]]:
        """Greedy (``beam == 1``) or length-normalised beam search; at most 2 T_b + 10 tokens."""
        check_beam(beam)
        if beam == 1:
            return self._greedy(enc, enc_lens)
        return [self._beam(enc[i : i + 1, : int(n)], beam) for i, n in enumerate(enc_lens.tolist())]

    def _greedy(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[list[int]]:
        b = enc.shape[0]
        max_lens = 2 * enc_lens + 10
        ys = torch.full((b, 1), self.sos_eos, dtype=torch.long, device=enc.device)
        done = torch.zeros(b, dtype=torch.bool, device=enc.device)
        for step in range(int(max_lens.max())):
            best = self._next_log_probs(enc, enc_lens, ys).argmax(dim=-1)
            best = best.masked_fill(done, self.sos_eos)
            ys = torch.cat([ys, best[:, None]], dim=1)
            done |= (best == self.sos_eos) | (step + 1 >= max_lens)
            if bool(done.all()):
                break
        out = []
        for row, n in zip(ys[:, 1:].tolist(), max_lens.tolist(), strict=True):
            row = row[:n]
            out.append(row[: row.index(self.sos_eos)] if self.sos_eos in row else row)
        return out

    def _beam(self, enc: torch.Tensor, beam: int) -> list[int]:
        """Beam search over one utterance enc (1, T, D); scores are log P / (tokens + 1).

        Per step the ``2 * beam`` best extensions are ranked: an eos among the first ``beam``
        finishes its hypothesis, and the ``beam`` best others stay alive. The search stops once
        the best finished hypothesis scores at least as well as any alive one would if it ended
        at the next step (a heuristic: more tokens lower log P but raise the length), or at
        2 T + 10 tokens, and returns the finished hypothesis with the best normalised score.
        """
        max_len = 2 * enc.shape[1] + 10
        enc_lens = torch.tensor([enc.shape[1]], device=enc.device)
        ys = torch.full((1, 1), self.sos_eos, dtype=torch.long, device=enc.device)
        scores = torch.zeros(1, device=enc.device)
        finished: list[tuple[float, list[int]]] = []
        for step in range(max_len):
            k = ys.shape[0]
            logp = self._next_log_probs(enc.expand(k, -1, -1), enc_lens.expand(k), ys)
            cand = (scores[:, None] + logp).flatten()  # (K * (V+1),)
            top = cand.topk(min(2 * beam, cand.numel()))
            keep: list[tuple[int, int, float]] = []
            ranked = zip(top.values.tolist(), top.indices.tolist(), strict=True)
            for rank, (score, i) in enumerate(ranked):
                if score == float("-inf"):
                    break
                parent, token = divmod(i, self.vocab_size + 1)
                if token == self.sos_eos:  # an ending counts only if it ranks inside the beam
                    if rank < beam:
                        finished.append((score / (step + 1), ys[parent, 1:].tolist()))
                elif len(keep) < beam:
                    keep.append((parent, token, score))
            if not keep:
                break
            best_alive = max(score / (step + 2) for _, _, score in keep)  # if it ended next step
            if finished and max(f[0] for f in finished) >= best_alive:
                break
            parents = torch.tensor([p for p, _, _ in keep], device=enc.device)
            tokens = torch.tensor([[t] for _, t, _ in keep], device=enc.device)
            ys = torch.cat([ys[parents], tokens], dim=1)
            scores = torch.tensor([s for _, _, s in keep], device=enc.device)
        if not finished:  # ran out of length: fall back on the unfinished hypotheses
            rows = ys.tolist()
            finished = [(s / len(r), r[1:]) for s, r in zip(scores.tolist(), rows, strict=True)]
        return max(finished, key=lambda f: f[0])[1]
