"""Decoders: one shared table over every decoder, then the checks particular to each one."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from speechnas.nn.decoders import DECODERS, AttentionDecoder, Decoder, RNNTDecoder, make_decoder
from speechnas.nn.decoders.ctc import ctc_greedy_search, ctc_prefix_beam_search
from speechnas.nn.decoders.rnnt import rnnt_loss

D, V = 8, 5
TINY: dict[str, dict[str, object]] = {
    "ctc": {},
    "rnnt": {"pred_dim": 8, "joint_dim": 8},
    "attention": {"layers": 1, "heads": 2, "ffn_dim": 16, "dropout": 0.0},
}


def tiny(kind: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return make_decoder(kind, d_model=D, vocab_size=V, **TINY[kind])


def padded_batch(seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Three utterances of different frame and token counts, padded (tokens padded with 0)."""
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(3, 7, D, generator=g)
    enc_lens = torch.tensor([7, 5, 3])
    tokens = torch.tensor([[1, 2, 3], [4, 4, 0], [2, 0, 0]])
    token_lens = torch.tensor([3, 2, 1])
    return enc, enc_lens, tokens, token_lens


# ---- the shared table ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_loss_is_finite_and_backward_gives_finite_grads(kind: str) -> None:
    dec = tiny(kind)
    assert isinstance(dec, Decoder) and dec.vocab_size == V
    loss = dec.loss(*padded_batch())
    assert loss.dim() == 0 and math.isfinite(loss.item()) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in dec.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_decode_returns_valid_ids_for_every_utterance(kind: str, beam: int) -> None:
    dec = tiny(kind).eval()
    enc, enc_lens, _, _ = padded_batch()
    hyps = dec.decode(enc, enc_lens, beam=beam)
    assert len(hyps) == 3
    for hyp in hyps:
        assert isinstance(hyp, list) and all(isinstance(i, int) and 1 <= i < V for i in hyp)


@pytest.mark.parametrize("kind", sorted(DECODERS))
def test_utterance_loss_is_the_same_alone_and_in_a_padded_batch(kind: str) -> None:
    dec = tiny(kind).eval()
    enc, enc_lens, tokens, token_lens = padded_batch()
    batched = dec.utterance_losses(enc, enc_lens, tokens, token_lens)
    assert batched.shape == (3,)
    torch.testing.assert_close(dec.loss(enc, enc_lens, tokens, token_lens), batched.mean())
    for i, (t, u) in enumerate(zip(enc_lens.tolist(), token_lens.tolist(), strict=True)):
        alone = dec.utterance_losses(enc[i : i + 1, :t], enc_lens[i : i + 1],
                                     tokens[i : i + 1, :u], token_lens[i : i + 1])  # fmt: skip
        torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=1e-5)


def test_make_decoder_names_the_valid_kinds_and_checks_arguments() -> None:
    with pytest.raises(ValueError, match=r"'attention', 'ctc', 'rnnt'"):
        make_decoder("lstm", d_model=D, vocab_size=V)
    with pytest.raises(ValueError, match="heads"):
        make_decoder("attention", d_model=D, vocab_size=V, heads=3)
    with pytest.raises(ValueError, match="beam"):
        tiny("ctc").decode(*padded_batch()[:2], beam=0)


def overfit(dec: torch.nn.Module, steps: int, lr: float) -> tuple[torch.Tensor, ...]:
    """Train dec alone on two fixed random 'encoder outputs' and their token sequences."""
    g = torch.Generator().manual_seed(1)
    enc = torch.randn(2, 6, D, generator=g)
    enc_lens = torch.tensor([6, 5])
    tokens = torch.tensor([[1, 3, 2, 4], [2, 2, 1, 0]])
    token_lens = torch.tensor([4, 3])
    opt = torch.optim.Adam(dec.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        dec.loss(enc, enc_lens, tokens, token_lens).backward()
        opt.step()
    return enc, enc_lens, tokens, token_lens


# ---- CTC ----------------------------------------------------------------------------------------


def brute_force_labellings(log_probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Every labelling's total probability: the sum over all T^V frame paths collapsing to it."""
    probs = log_probs.double().exp()
    t_len, vocab = probs.shape
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=t_len):
        p = math.prod(float(probs[t, s]) for t, s in enumerate(path))
        label = tuple(s for i, s in enumerate(path) if s != 0 and (i == 0 or path[i - 1] != s))
        out[label] = out.get(label, 0.0) + p
    return out


def test_ctc_prefix_beam_search_matches_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    for case in range(30):
        t_len, vocab = 1 + case % 5, 2 + case % 2
        lp = torch.randn(t_len, vocab, generator=g).mul(2).log_softmax(-1)
        truth = brute_force_labellings(lp)
        best = max(truth, key=truth.__getitem__)
        # A beam as wide as the number of labellings prunes nothing: exact n-best with scores.
        nbest = ctc_prefix_beam_search(lp, beam=len(truth))
        assert tuple(nbest[0][0]) == best
        assert sorted(tuple(h) for h, _ in nbest) == sorted(truth)
        for hyp, logp in nbest:
            assert logp == pytest.approx(math.log(truth[tuple(hyp)]), abs=1e-9)
        for beam in (1, 2, 3):  # narrower beams: pruned paths only ever lower a score
            for hyp, logp in ctc_prefix_beam_search(lp, beam=beam):
                assert logp <= math.log(truth[tuple(hyp)]) + 1e-9


def test_ctc_beam_one_equals_greedy_on_peaked_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        path = torch.randint(0, V, (9,), generator=g)
        logits = torch.randn(9, V, generator=g) + 10 * torch.nn.functional.one_hot(path, V)
        lp = logits.log_softmax(-1)
        greedy = ctc_greedy_search(lp[None], torch.tensor([9]))[0]
        assert ctc_prefix_beam_search(lp, beam=1)[0][0] == greedy
        assert ctc_prefix_beam_search(lp, beam=4)[0][0] == greedy


# ---- RNN-T --------------------------------------------------------------------------------------


def brute_force_rnnt_nll(logits: torch.Tensor, tokens: list[int]) -> float:
    """-log of the sum over every alignment: U emissions placed among the first T + U - 1 moves,
    the last move being the blank of the final frame. logits (T, U+1, V)."""
    lp = logits.double().log_softmax(-1)
    t_len, u_len = lp.shape[0], len(tokens)
    total = []
    for emits in itertools.combinations(range(t_len + u_len - 1), u_len):
        t = u = 0
        s = 0.0
        for move in range(t_len + u_len):
            if move in emits:
                s += float(lp[t, u, tokens[u]])
                u += 1
            else:
                s += float(lp[t, u, 0])
                t += 1
        total.append(s)
    return -float(torch.logsumexp(torch.tensor(total, dtype=torch.float64), 0))


def test_rnnt_loss_matches_brute_force_with_padding() -> None:
    g = torch.Generator().manual_seed(0)
    lens = [(4, 3), (3, 2), (2, 0), (1, 1), (4, 1), (2, 3)]  # (T_b, U_b) inside a (4, 3) pad
    logits = torch.randn(len(lens), 4, 4, 3, generator=g, dtype=torch.float64) * 2
    tokens = torch.randint(1, 3, (len(lens), 3), generator=g)
    t_lens = torch.tensor([t for t, _ in lens])
    u_lens = torch.tensor([u for _, u in lens])
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        nll = rnnt_loss(logits.to(dtype), tokens, t_lens, u_lens)
        assert nll.shape == (len(lens),) and nll.dtype == dtype
        for b, (t, u) in enumerate(lens):
            want = brute_force_rnnt_nll(logits[b, :t, : u + 1], tokens[b, :u].tolist())
            assert float(nll[b]) == pytest.approx(want, abs=tol, rel=tol)


def test_rnnt_loss_gradients_pass_gradcheck() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    tokens = torch.tensor([[1, 2], [2, 0]])
    t_lens, u_lens = torch.tensor([3, 2]), torch.tensor([2, 1])
    assert torch.autograd.gradcheck(lambda x: rnnt_loss(x, tokens, t_lens, u_lens), (logits,))
    rnnt_loss(logits, tokens, t_lens, u_lens).sum().backward()
    assert logits.grad is not None and bool(logits.grad[1, 2:].eq(0).all())  # padded frame


def test_rnnt_greedy_follows_the_argmax_path_with_max_symbols() -> None:
    vocab = 4
    dec = RNNTDecoder(vocab, vocab, pred_dim=4, joint_dim=vocab, max_symbols=1).eval()
    with torch.no_grad():  # logits = tanh(enc): the prediction network has no say
        for lin in (dec.joiner.enc_proj, dec.joiner.out):
            lin.weight.copy_(torch.eye(vocab))
            lin.bias.zero_()
        dec.joiner.pred_proj.weight.zero_()
        dec.joiner.pred_proj.bias.zero_()
    path = [1, 0, 2, 2, 0, 3, 0]
    enc = 3 * torch.nn.functional.one_hot(torch.tensor([path, path]), vocab).float()
    lens = torch.tensor([7, 4])
    assert dec.decode(enc, lens) == [[1, 2, 2, 3], [1, 2, 2]]
    dec.max_symbols = 2  # a token that stays the argmax is emitted max_symbols times per frame
    assert dec.decode(enc, lens) == [[1, 1, 2, 2, 2, 2, 3, 3], [1, 1, 2, 2, 2, 2]]


def test_rnnt_batched_greedy_equals_one_utterance_at_a_time() -> None:
    dec = tiny("rnnt", seed=3).eval()
    assert isinstance(dec, RNNTDecoder)
    enc, enc_lens, _, _ = padded_batch(seed=3)
    batched = dec.decode(enc, enc_lens)
    for i, n in enumerate(enc_lens.tolist()):
        hyp: list[int] = []
        pred, state = dec.predictor.step(torch.tensor([0]), None)
        for t in range(n):
            for _ in range(dec.max_symbols):
                k = int(dec.joiner(enc[i, t], pred[0]).argmax())
                if k == 0:
                    break
                hyp.append(k)
                pred, state = dec.predictor.step(torch.tensor([k]), state)
        assert batched[i] == hyp


def test_rnnt_tiny_model_overfits_two_sequences() -> None:
    torch.manual_seed(0)
    dec = RNNTDecoder(D, V, pred_dim=16, joint_dim=16)
    enc, enc_lens, tokens, token_lens = overfit(dec, steps=150, lr=2e-2)
    dec.eval()
    want = [row[:n] for row, n in zip(tokens.tolist(), token_lens.tolist(), strict=True)]
    assert dec.decode(enc, enc_lens) == want
    assert dec.decode(enc, enc_lens, beam=3) == want


# ---- attention ----------------------------------------------------------------------------------


def test_attention_is_causal() -> None:
    dec = tiny("attention").eval()
    assert isinstance(dec, AttentionDecoder) and dec.sos_eos == V
    enc, enc_lens, _, _ = padded_batch()
    ys = torch.tensor([[V, 1, 2, 3], [V, 4, 4, 1], [V, 2, 1, 1]])
    changed = ys.clone()
    changed[:, 2] = torch.tensor([4, 1, 3])
    a, b = dec.logits(enc, enc_lens, ys), dec.logits(enc, enc_lens, changed)
    assert a.shape == (3, 4, V + 1)
    torch.testing.assert_close(a[:, :2], b[:, :2])
    assert not torch.allclose(a[:, 2:], b[:, 2:])


def test_attention_tiny_model_overfits_two_sequences() -> None:
    torch.manual_seed(0)
    dec = AttentionDecoder(D, V, layers=1, heads=2, ffn_dim=32, dropout=0.0, ctc_weight=0.3)
    enc, enc_lens, tokens, token_lens = overfit(dec, steps=100, lr=1e-2)
    dec.eval()
    want = [row[:n] for row, n in zip(tokens.tolist(), token_lens.tolist(), strict=True)]
    assert dec.decode(enc, enc_lens) == want
    assert dec.decode(enc, enc_lens, beam=3) == want
    assert dec.ctc.decode(enc, enc_lens) == want


def test_cached_attention_steps_equal_the_full_prefix_recompute() -> None:
    dec = tiny("attention", seed=5).eval()
    assert isinstance(dec, AttentionDecoder)
    enc, enc_lens, _, _ = padded_batch(seed=5)
    ys = torch.tensor([[V, 1, 2, 3], [V, 4, 4, 1], [V, 2, 1, 1]])
    caches = dec._start(enc, enc_lens)
    with torch.no_grad():
        for pos in range(ys.shape[1]):
            step = dec._step(ys[:, pos], pos, caches)
            full = dec._next_log_probs(enc, enc_lens, ys[:, : pos + 1])
            torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-5)


def test_ctc_prefix_scores_equal_brute_force_sums_over_paths() -> None:
    import itertools

    from speechnas.nn.decoders.ctc import CTCPrefixScorer

    gen = torch.Generator().manual_seed(4)
    t_len, vocab = 5, 3
    lp = torch.log_softmax(torch.randn(t_len, vocab, generator=gen), dim=-1).double()
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(vocab), repeat=t_len):
        onehot = torch.nn.functional.one_hot(torch.tensor([path]), vocab).float()
        label = tuple(ctc_greedy_search(onehot, torch.tensor([t_len]))[0])
        p = float(sum(lp[t, k] for t, k in enumerate(path)).exp())
        probs[label] = probs.get(label, 0.0) + p
    scorer = CTCPrefixScorer(lp)
    r = scorer.initial()[None]
    last, empty = torch.tensor([-1]), torch.tensor([True])
    prefix: tuple[int, ...] = ()
    for token in (1, 1, 2):  # a repeat included
        psi, new = scorer.extend(r, last, torch.tensor([[1, 2]]), empty=empty)
        col = token - 1
        grown = (*prefix, token)
        want = sum(p for lab, p in probs.items() if lab[: len(grown)] == grown)
        assert float(psi[0, col].exp()) == pytest.approx(want, rel=1e-6)
        exact = float(scorer.final(new[0, col]).exp())
        assert exact == pytest.approx(probs.get(grown, 0.0), rel=1e-6, abs=1e-12)
        r, last, empty, prefix = new[:, col], torch.tensor([token]), torch.tensor([False]), grown


def test_joint_ctc_attention_beam_search_follows_its_weight() -> None:
    torch.manual_seed(0)
    dec = AttentionDecoder(D, V, layers=1, heads=2, ffn_dim=32, dropout=0.0, ctc_weight=0.5)
    enc, enc_lens, tokens, token_lens = overfit(dec, steps=100, lr=1e-2)
    dec.eval()
    want = [row[:n] for row, n in zip(tokens.tolist(), token_lens.tolist(), strict=True)]
    for lam in (0.0, 0.3, 1.0):
        assert dec.decode(enc, enc_lens, beam=3, ctc_weight=lam) == want
    with pytest.raises(ValueError, match="ctc_weight"):
        dec.decode(enc, enc_lens, beam=3, ctc_weight=1.5)
