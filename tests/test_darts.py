"""Differentiable FFN compression (speechnas.compress.darts*) on tiny models and the tiny corpus."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_ARCH, tiny_config
from typer.testing import CliRunner

from speechnas.cli import app
from speechnas.compress.darts import (
    DartsResult,
    darts_front,
    finetune_config,
    load_compression_data,
)
from speechnas.compress.darts_config import DartsConfig
from speechnas.compress.darts_search import BatchStream, train_weights
from speechnas.compress.darts_supernet import (
    DartsSupernet,
    MixedFeedForward,
    ffn_parameters,
    semi_orthogonal_step,
)
from speechnas.data.synth.corpus import CorpusInfo
from speechnas.nn.blocks.feedforward import FeedForward
from speechnas.nn.build import SpeechModel, build
from speechnas.nn.presets import preset
from speechnas.nn.spec import decode
from speechnas.train.checkpoint import load_model, save_checkpoint
from speechnas.train.config import config_from_dict
from speechnas.train.trainer import Trainer

WIDTHS = (1.0, 0.75, 0.5, 0.25)
RANKS = (0, 12, 6)
FAST = DartsConfig(widths=WIDTHS, ranks=RANKS, weight_steps=4, arch_steps=4, threads=1)
_SMALL = {"d_model": 32, "layers": 2, "heads": 2, "conv_kernel": 7, "subsampling_channels": 8}
ARCHS = {
    "conformer": preset("small", ffn_dim=(64, 40), **_SMALL),
    "conformer-lowrank": preset("small", ffn_dim=48, ffn_lowrank=(0, 10), **_SMALL),
    "transformer": preset("small", encoder="transformer", ffn_dim=48, **_SMALL),
    "ebranchformer": preset("small", encoder="ebranchformer", ffn_dim=48, **_SMALL),
}


def _model(name: str) -> SpeechModel:
    torch.manual_seed(0)
    return build(ARCHS[name], vocab_size=11).eval()


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(2, 60, 80, generator=g), torch.tensor([60, 44])


@pytest.fixture(scope="module")
def trained(tiny_corpus: CorpusInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Conformer trained for one epoch: the checkpoint every search here starts from."""
    out = tmp_path_factory.mktemp("darts-trained")
    Trainer.from_config(tiny_config(tiny_corpus, out, max_epochs=1), show_progress=False).fit()
    return out / "best"


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"widths": (0.5, 0.25)}, ["darts.widths", "1.0"]),
        ({"widths": (1.0, 1.5)}, ["darts.widths", "1.5", "(0, 1]"]),
        ({"ranks": (16, 8)}, ["darts.ranks", "0 (full rank)"]),
        ({"ranks": (0, -2)}, ["darts.ranks", "-2"]),
        ({"schedule": "both"}, ["darts.schedule", "'both'", "pipelined", "joint"]),
        ({"weight_training": "all"}, ["darts.weight_training", "sample", "uniform"]),
        ({"eta": -1.0}, ["darts.eta", "-1.0", ">= 0"]),
        ({"tau0": 0.1, "tau_min": 0.5}, ["darts.tau_min", "0.5"]),
        ({"projection_period": 0}, ["darts.projection_period", "0", "> 0"]),
        ({"arch_steps": 2.5}, ["darts.arch_steps", "2.5", "integer"]),
        ({"gumbel": "yes"}, ["darts.gumbel", "'yes'"]),
    ],
)
def test_bad_config_names_field_value_and_allowed(change: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as e:
        DartsConfig(**change)
    for w in words:
        assert w in str(e.value)


def test_config_round_trips_through_its_dict() -> None:
    cfg = DartsConfig(widths=(1.0, 0.5), ranks=(0, 8), eta=0.3, gumbel=False)
    assert DartsConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        DartsConfig.from_dict({"etta": 1.0})


# ------------------------------------------------------------------ candidates from trained weights
@pytest.mark.parametrize("encoder", sorted(ARCHS))
def test_full_candidates_reproduce_the_trained_ffns(encoder: str) -> None:
    model = _model(encoder)
    net = DartsSupernet(model, WIDTHS, RANKS).eval()
    originals = [m for m in model.modules() if isinstance(m, FeedForward)]
    mixed = [m for m in net.model.modules() if isinstance(m, MixedFeedForward)]
    assert len(mixed) == len(originals) == (2 if encoder == "transformer" else 4)
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(1))
    for ff, mf in zip(originals, mixed, strict=True):
        want = ff(x)
        assert torch.allclose(mf.candidate_forward(x, mf.hidden, 0), want, atol=1e-5)
        # the truncated SVD at full rank is the trained (permuted) weight again
        assert torch.allclose(mf.candidate_forward(x, mf.hidden, mf.max_rank), want, atol=1e-4)
    feats, lens = _inputs()
    assert torch.allclose(net.model.encode(feats, lens)[0], model.encode(feats, lens)[0], atol=1e-5)
    if encoder == "ebranchformer":  # its cgMLP is as wide as ffn_dim: only ranks are searched
        assert {net.candidates[c].fraction for c in net.valid.nonzero()[:, 1].tolist()} == {1.0}
    else:
        assert net.valid[:, 0].all() and net.valid.sum() > len(RANKS) * net.valid.shape[0]


def test_narrow_widths_keep_the_most_important_units() -> None:
    model = _model("conformer")
    net = DartsSupernet(model, WIDTHS, RANKS)
    ff = model.encoder.stages[-1].layers[1].ff2  # ffn_dim 40
    mf = net.mixed[1][1]
    score = ff.up.weight.norm(dim=1) * ff.down.weight.norm(dim=0)
    for w in mf.widths:
        kept = {tuple(r) for r in mf.w_up[:w].detach().round(decimals=5).tolist()}
        best = ff.up.weight[score.argsort(descending=True)[:w]].detach().round(decimals=5)
        assert kept == {tuple(r) for r in best.tolist()}
    assert mf.widths == (40, 30, 20, 10)


def test_rank_candidates_are_truncated_svds() -> None:
    mf = DartsSupernet(_model("transformer"), WIDTHS, RANKS).mixed[0][0]
    w_up = mf.w_up.detach()
    for r in (6, 12):
        approx = mf.up_a[:, :r] @ mf.up_b[:r]
        s = torch.linalg.svdvals(w_up)
        err = torch.linalg.matrix_norm(approx - w_up)  # Eckart–Young: the tail singular values
        assert torch.isclose(err, s[r:].square().sum().sqrt(), rtol=1e-4)


# ------------------------------------------------------------------ mixing and the penalty
def test_mixing_weights_are_distributions_over_each_layers_candidates() -> None:
    net = DartsSupernet(_model("conformer"), WIDTHS, RANKS)
    with torch.no_grad():
        net.alpha.normal_(generator=torch.Generator().manual_seed(2))
    draws = {}
    for gumbel, tau in ((True, 5.0), (True, 0.1), (False, 1.0)):
        runs = []
        for _ in range(2):
            gen = torch.Generator().manual_seed(9)
            runs.append(torch.stack([net.mixing_weights(gumbel=gumbel, tau=tau, generator=gen)
                                     for _ in range(50)]))  # fmt: skip
        w = runs[0]
        assert torch.equal(runs[0], runs[1])  # seeded by the generator alone
        assert torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5)
        assert (w[:, ~net.valid] == 0).all() and (w >= 0).all()
        draws[(gumbel, tau)] = w
    assert torch.allclose(draws[(False, 1.0)][0], net.probabilities())
    sharp, soft = draws[(True, 0.1)].amax(-1).mean(), draws[(True, 5.0)].amax(-1).mean()
    assert sharp > 0.9 > soft  # a low temperature gives near one-hot samples


def test_soft_mixture_is_the_weighted_sum_of_its_candidates() -> None:
    net = DartsSupernet(_model("conformer"), WIDTHS, RANKS).eval()
    with torch.no_grad():
        net.alpha.normal_(generator=torch.Generator().manual_seed(3))
    probs = net.probabilities()
    net.set_mix(probs)
    x = torch.randn(2, 7, 32, generator=torch.Generator().manual_seed(4))
    total = torch.zeros(())
    for li, mods in enumerate(net.mixed):
        for mf in mods:
            want = sum(
                float(probs[li, ci].detach()) * mf.candidate_forward(x, *net.choice_of(li, ci))
                for ci in range(len(net.candidates)) if net.valid[li, ci]
            )  # fmt: skip
            got = mf(x)
            assert torch.allclose(got, want, atol=1e-5)
            total = total + got.square().sum()
    total.backward()
    assert net.alpha.grad is not None and net.alpha.grad[net.valid].abs().sum() > 0


def test_parameter_table_counts_what_the_extracted_model_holds() -> None:
    model = _model("conformer")
    net = DartsSupernet(model, WIDTHS, RANKS)
    for h, r in ((64, 0), (48, 12), (10, 6)):
        assert ffn_parameters(32, h, r) == sum(
            p.numel() for p in FeedForward(32, h, lowrank=r).parameters()
        )
    choice = [5, 10]
    extracted = net.extract(choice)
    ffn = sum(p.numel() for m in extracted.modules() if isinstance(m, FeedForward)
              for p in m.parameters())  # fmt: skip
    assert ffn == sum(float(net.params[li, ci]) for li, ci in enumerate(choice))
    ffns = [m for m in model.modules() if isinstance(m, FeedForward)]
    assert net.fp32_ffn_params == sum(p.numel() for m in ffns for p in m.parameters())
    assert float(net.penalty(net.one_hot(net.largest()))) == pytest.approx(1.0)


# ------------------------------------------------------------------ extraction
@pytest.mark.parametrize("encoder", sorted(ARCHS))
def test_extracted_model_computes_the_argmax_path(encoder: str) -> None:
    net = DartsSupernet(_model(encoder), WIDTHS, RANKS).eval()
    with torch.no_grad():
        net.alpha.normal_(generator=torch.Generator().manual_seed(7))
    choice = net.argmax()
    assert choice != net.largest()
    net.set_mix(net.one_hot(choice))
    plain = net.extract().eval()
    arch = net.arch_of(choice)
    assert plain.arch == arch and decode(arch).layer[0].ffn_dim == net.choice_of(0, choice[0])[0]
    assert build(arch, vocab_size=11).num_parameters() == plain.num_parameters()
    feats, lens = _inputs()
    assert torch.allclose(plain.encode(feats, lens)[0], net.model.encode(feats, lens)[0], atol=1e-5)
    assert plain.decode(feats, lens) == net.model.decode(feats, lens)


# ------------------------------------------------------------------ semi-orthogonal factors
def test_repeated_projection_makes_the_factor_semi_orthogonal() -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.randn(24, 64, generator=g) * 1.3 / 64**0.5  # far from orthonormal
    before = torch.linalg.matrix_norm(m @ m.T - torch.eye(24))
    for _ in range(40):
        m = semi_orthogonal_step(m)
    assert before > 1.0
    assert torch.allclose(m @ m.T, torch.eye(24), atol=1e-4)
    f = 3.0 * torch.randn(8, 20, generator=g) / 20**0.5
    for _ in range(60):
        f = semi_orthogonal_step(f, floating=True)
    p = f @ f.T
    assert torch.allclose(p / p.diagonal().mean(), torch.eye(8), atol=1e-3)
    with pytest.raises(ValueError, match="rows"):
        semi_orthogonal_step(torch.zeros(5, 3))


def test_stage1_is_seeded_and_keeps_the_factors_semi_orthogonal(trained: Path) -> None:
    loaded = load_model(trained)
    cfg = FAST.replace(weight_steps=6, semi_orthogonal=True, projection_period=2)
    data = load_compression_data(loaded, config_from_dict(loaded.meta["config"]), None, cfg.seed)
    states = []
    for _ in range(2):
        net = DartsSupernet(loaded.model, cfg.widths, cfg.ranks)
        before = net.mixed[0][0].w_up.detach().clone()
        hist = train_weights(net, BatchStream(data.train, max_seconds=30.0, seed=0), cfg)
        assert hist[-1]["step"] == 6 and not torch.equal(before, net.mixed[0][0].w_up)
        states.append(net.state_dict())
        for mf in net.mixed[0]:
            for f in (mf.up_b, mf.down_a.T):
                assert torch.allclose(f @ f.T, torch.eye(f.shape[0]), atol=2e-3)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# ------------------------------------------------------------------ the search on real data
def test_penalty_decides_the_size_and_no_signal_keeps_the_trained_model(
    trained: Path, tmp_path: Path
) -> None:
    base = FAST.replace(weight_steps=0, arch_steps=12, lr_arch=0.1)
    idle, free, dear = darts_front(
        trained, tmp_path,
        [base.replace(arch_steps=0, eta=0.0), base.replace(eta=0.0, tau0=1.0),
         base.replace(eta=200.0, tau0=1.0)],
        score=(),
    )  # fmt: skip
    loaded = load_model(trained)
    # no architecture step: the ties go to the largest candidate, the trained model itself
    assert idle.arch == loaded.model.arch.to_json() and idle.params["ffn_ratio"] == 1.0
    again = load_model(Path(idle.output_dir) / "model").model
    feats, lens = _inputs()
    assert torch.allclose(again.encode(feats, lens)[0], loaded.model.encode(feats, lens)[0],
                          atol=1e-5)  # fmt: skip
    # a large η picks the smallest candidate of every layer; without it the size stays larger
    net = DartsSupernet(loaded.model, base.widths, base.ranks)
    smallest = net.params.masked_fill(~net.valid, float("inf")).argmin(-1).tolist()
    assert [net.candidates.index(next(c for c in net.candidates if c.label() == r["candidate"]))
            for r in dear.choice] == smallest  # fmt: skip
    assert dear.params["ffn_ratio"] < free.params["ffn_ratio"]
    assert dear.params["total_after"] < dear.params["total_before"]
    assert sum(dear.probabilities[0]) == pytest.approx(1.0)


def test_lstm_checkpoint_is_refused_before_training(trained: Path, tmp_path: Path) -> None:
    loaded = load_model(trained)
    arch = TINY_ARCH.replace(encoder="lstm", lstm_hidden=16, heads=None)
    model = build(arch, vocab_size=loaded.tokenizer.vocab_size)
    save_checkpoint(tmp_path / "lstm", model, {**loaded.meta, "arch": arch.to_json()})
    with pytest.raises(ValueError, match="'lstm' encoder has no feed-forward"):
        darts_front(tmp_path / "lstm", tmp_path / "out", [FAST])
    assert not (tmp_path / "out").exists()


def test_cli_compresses_end_to_end_and_the_model_fine_tunes(
    trained: Path, tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    out = tmp_path / "darts"
    args = ["compress", "darts", "--checkpoint", str(trained), "--output-dir", str(out),
            "--eta", "0.5", "--eta", "50", "--steps", "3", "--ranks", "0,12,6",
            "--softmax", "--joint"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "dev WER %" in res.output and "test WER %" in res.output
    front = json.loads((out / "front.json").read_text())
    assert [r["config"]["eta"] for r in front["runs"]] == [0.5, 50.0]
    run = out / "eta50-softmax-joint"
    rec = json.loads((run / "darts.json").read_text())
    assert (run / "darts.png").stat().st_size > 0 and rec["seed"] == 0
    assert rec["config"]["gumbel"] is False and rec["config"]["schedule"] == "joint"
    assert len(rec["history"]["arch"]) == 1 and "weight_loss" in rec["history"]["arch"][0]
    assert "torch" in rec["versions"]
    assert set(rec["scores"]) == {"dev", "test"} and rec["params"]["ffn_ratio"] < 1
    loaded = load_model(run / "model")
    assert loaded.model.arch.to_json() == rec["arch"]
    assert loaded.meta["darts"]["choice"] == rec["choice"]
    # an ordinary checkpoint: the trainer fine-tunes it with init_from
    cfg = finetune_config(DartsResult(**rec), tmp_path / "tune", steps=2)
    assert cfg.init_from == str(run / "model") and cfg.arch == rec["arch"]
    result = Trainer.from_config(cfg, show_progress=False).fit()
    assert result.steps == 2 and result.parameters == rec["params"]["total_after"]
    bad = CliRunner().invoke(app, [*args[:6], "--ranks", "8,4"])
    assert bad.exit_code == 2 and "darts.ranks" in bad.output


def test_data_override_with_another_tokenizer_keeps_the_checkpoints(
    trained: Path, tiny_corpus: CorpusInfo
) -> None:
    loaded = load_model(trained)
    cfg = config_from_dict(loaded.meta["config"])
    dev_only = dataclasses.replace(cfg.data, train=str(tiny_corpus.manifests["test-tel"]))
    data = load_compression_data(loaded, cfg, dev_only, 0)
    assert data.tokenizer.to_dict() == loaded.tokenizer.to_dict()
    assert data.train.tokenizer is loaded.tokenizer or (
        data.train.tokenizer.to_dict() == loaded.tokenizer.to_dict()
    )
