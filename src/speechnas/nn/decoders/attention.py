"""Attention (Transformer) decoder with a CTC side head: hybrid CTC/attention training.

Id convention: ids 0..V-1 are the shared vocabulary (0 = blank/padding, never emitted) and the
extra id V (``self.sos_eos``) is both the start and the end symbol, so the embedding and the
output layer have V + 1 entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from speechnas.nn.blocks._shared import make_layer
from speechnas.nn.blocks.masks import padding_mask, sinusoidal_positions
from speechnas.nn.decoders.base import BLANK, DecoderModule, check_beam, check_common
from speechnas.nn.decoders.ctc import CTCDecoder, CTCPrefixScorer

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
        return self.attend(x, *self.keys_values(mem), mask, causal=causal)

    def keys_values(self, mem: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mem (B, S, D) → keys and values (B, H, S, Dh), to compute once and reuse."""
        b, length, d = mem.shape
        k, v = self.kv(mem).view(b, length, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def attend(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        *,
        causal: bool = False,
    ) -> torch.Tensor:
        b, length, d = x.shape
        q = self.q(x).view(b, length, self.heads, d // self.heads).transpose(1, 2)
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

    def step(
        self, x: torch.Tensor, cache: _BlockCache
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The newest position only, x (B, 1, D), with the keys/values of the earlier positions
        and of the encoder cached → (B, 1, D) and the self-attention keys/values so far."""
        y = self.self_norm(x)
        k, v = self.self_attn.keys_values(y)
        if cache.self_k is not None:
            k, v = torch.cat([cache.self_k, k], dim=2), torch.cat([cache.self_v, v], dim=2)
        x = x + self.self_attn.attend(y, k, v, None)  # every cached position is earlier
        x = x + self.cross_attn.attend(self.cross_norm(x), cache.mem_k, cache.mem_v, cache.mask)
        return x + self.ffn(x), (k, v)


@dataclass
class _BlockCache:
    mem_k: torch.Tensor  # (B, H, T, Dh) cross-attention keys of the encoder output
    mem_v: torch.Tensor
    mask: torch.Tensor  # (B, 1, 1, T)
    self_k: torch.Tensor | None = None  # (B, H, L, Dh) of the positions decoded so far
    self_v: torch.Tensor | None = None

    def select(self, rows: torch.Tensor) -> _BlockCache:
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return _BlockCache(self.mem_k[rows], self.mem_v[rows], self.mask[rows],
                           pick(self.self_k), pick(self.self_v))  # fmt: skip


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
        self.blocks = nn.ModuleList(
            make_layer(_Block, d_model, heads, ffn_dim, dropout) for _ in range(layers)
        )
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

    # -- incremental decoding: keys and values cached, one position per step ---------------

    def _start(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[_BlockCache]:
        mask = ~padding_mask(enc_lens, enc.shape[1])[:, None, None, :]
        return [_BlockCache(*b.cross_attn.keys_values(enc), mask) for b in self.blocks]

    def _step(self, tokens: torch.Tensor, position: int, caches: list[_BlockCache]) -> torch.Tensor:
        """The next token's log-probabilities (B, V+1) after ``tokens`` (B,) at ``position``
        (the caches grow by one position); blank (padding) is never proposed. Equal to
        :meth:`_next_log_probs` over the whole prefix, at the cost of one position."""
        pos = sinusoidal_positions(position + 1, self.d_model)[position].to(self.out.weight)
        x = self.embed(tokens)[:, None] * math.sqrt(self.d_model) + pos
        for block, cache in zip(self.blocks, caches, strict=True):
            x, (cache.self_k, cache.self_v) = block.step(x, cache)
        logp = F.log_softmax(self.out(self.norm(x))[:, 0].float(), dim=-1)
        logp[:, BLANK] = float("-inf")
        return logp

    @torch.no_grad()
    def decode(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        *,
        beam: int = 1,
        ctc_weight: float | None = None,
    ) -> list[list[int]]:
        """Greedy (``beam == 1``) or beam search, at most 2 T_b + 10 tokens. The beam search is
        joint CTC/attention: each extension scores ``(1 - λ) log P_att + λ log P_ctc-prefix``
        with ``λ = ctc_weight`` (default: the training weight; 0 is attention alone)."""
        check_beam(beam)
        if beam == 1:
            return self._greedy(enc, enc_lens)
        lam = self.ctc_weight if ctc_weight is None else ctc_weight
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"ctc_weight: {lam} is not in [0, 1]")
        log_probs = self.ctc(enc) if lam > 0 else None
        return [
            self._beam(enc[i : i + 1, : int(n)], beam, lam,
                       None if log_probs is None else log_probs[i, : int(n)])
            for i, n in enumerate(enc_lens.tolist())
        ]  # fmt: skip

    def _greedy(self, enc: torch.Tensor, enc_lens: torch.Tensor) -> list[list[int]]:
        b = enc.shape[0]
        max_lens = 2 * enc_lens + 10
        caches = self._start(enc, enc_lens)
        token = torch.full((b,), self.sos_eos, dtype=torch.long, device=enc.device)
        done = torch.zeros(b, dtype=torch.bool, device=enc.device)
        out: list[list[int]] = [[] for _ in range(b)]
        for step in range(int(max_lens.max())):
            best = self._step(token, step, caches).argmax(dim=-1)
            best = best.masked_fill(done, self.sos_eos)
            for i in (~done & (best != self.sos_eos)).nonzero().squeeze(1).tolist():
                out[i].append(int(best[i]))
            done |= (best == self.sos_eos) | (step + 1 >= max_lens)
            token = best
            if bool(done.all()):
                break
        return out

    def _beam(
        self, enc: torch.Tensor, beam: int, lam: float, log_probs: torch.Tensor | None
    ) -> list[int]:
        """Beam search over one utterance enc (1, T, D); scores are log P / (tokens + 1), P the
        joint score of the docstring of :meth:`decode`.

        Per step the ``2 * beam`` best extensions are ranked (with CTC, among each
        hypothesis's ``beam + 2`` best tokens by attention and the end): an eos among the first
        ``beam`` finishes its hypothesis, and the ``beam`` best others stay alive. The search
        stops once the best finished hypothesis scores at least as well as any alive one would
        if it ended at the next step, or at 2 T + 10 tokens, and returns the finished hypothesis
        with the best normalised score.
        """
        dev = enc.device
        max_len = 2 * enc.shape[1] + 10
        caches = self._start(enc, torch.tensor([enc.shape[1]], device=dev))
        seqs: list[list[int]] = [[]]
        tokens = torch.full((1,), self.sos_eos, dtype=torch.long, device=dev)
        scores = torch.zeros(1, dtype=torch.float64)
        scorer = CTCPrefixScorer(log_probs) if log_probs is not None else None
        r = scorer.initial()[None] if scorer is not None else None  # (K, T, 2)
        psi = torch.zeros(1, dtype=torch.float64)  # each hypothesis's CTC prefix score
        finished: list[tuple[float, list[int]]] = []
        eos = self.sos_eos
        for step in range(max_len):
            k = len(seqs)
            att = self._step(tokens, step, caches).double().cpu()  # (K, V+1)
            if scorer is None:
                cand = torch.arange(att.shape[1]).expand(k, -1)  # (K, V+1)
                inc = att
                new_r = new_psi = None
            else:
                real = att.clone()
                real[:, eos] = float("-inf")
                width = min(beam + 2, self.vocab_size - 1)
                cand_real = real.topk(width, dim=-1).indices  # (K, C)
                last = torch.tensor([q[-1] if q else -1 for q in seqs])
                empty = torch.tensor([not q for q in seqs])
                new_psi, new_r = scorer.extend(r, last, cand_real, empty=empty)
                ctc_end = scorer.final(r)  # (K,) the prefix as it is
                cand = torch.cat([cand_real, torch.full((k, 1), eos)], dim=1)
                ctc_inc = torch.cat([new_psi, ctc_end[:, None]], dim=1) - psi[:, None]
                inc = (1 - lam) * att.gather(1, cand) + lam * ctc_inc
            total = (scores[:, None] + inc).flatten()
            top = total.topk(min(2 * beam, total.numel()))
            keep: list[tuple[int, int, int, float]] = []
            for rank, (score, i) in enumerate(
                zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ):
                if score == float("-inf"):
                    break
                parent, col = divmod(i, cand.shape[1])
                token = int(cand[parent, col])
                if token == eos:  # an ending counts only if it ranks inside the beam
                    if rank < beam:
                        finished.append((score / (step + 1), seqs[parent]))
                elif len(keep) < beam:
                    keep.append((parent, col, token, score))
            if not keep:
                break
            best_alive = max(score / (step + 2) for *_, score in keep)  # if it ended next step
            if finished and max(f[0] for f in finished) >= best_alive:
                break
            parents = torch.tensor([p for p, *_ in keep])
            caches = [c.select(parents.to(dev)) for c in caches]
            seqs = [[*seqs[p], t] for p, _, t, _ in keep]
            tokens = torch.tensor([t for *_, t, _ in keep], device=dev)
            scores = torch.tensor([s for *_, s in keep], dtype=torch.float64)
            if new_r is not None and new_psi is not None:
                cols = torch.tensor([c for _, c, _, _ in keep])
                r = new_r[parents, cols]
                psi = new_psi[parents, cols]
        if not finished:  # ran out of length: fall back on the unfinished hypotheses
            finished = [(s / (len(q) + 1), q) for s, q in zip(scores.tolist(), seqs, strict=True)]
        return max(finished, key=lambda f: f[0])[1]
