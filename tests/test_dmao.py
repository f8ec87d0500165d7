"""DMAO: groups, function-keeping duplication, parameter count, checkpoints, export, resume."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.export.onnx import export_checkpoint
from speechnas.nn.build import SpeechModel, build
from speechnas.nn.cost import analytic_macs, count_parameters
from speechnas.nn.presets import preset
from speechnas.nn.spec import decode
from speechnas.search.trial import reallocated_arch
from speechnas.space.arch import Arch
from speechnas.train.checkpoint import load_model
from speechnas.train.config import DmaoConfig, TrainConfig, config_from_dict
from speechnas.train.dmao import (
    Dmao,
    Plan,
    apply,
    arch_for,
    layer_prefix,
    make_groups,
    unit_sets,
)
from speechnas.train.trainer import Trainer

CONFORMER = preset("small", d_model=32, layers=2, heads=4, ffn_dim=64, conv_kernel=7)
ARCHS = {
    "conformer-abs": CONFORMER,
    "conformer-rel-lowrank": Arch({**CONFORMER, "attention": "rel", "ffn_lowrank": (0, 8)}),
    "ebranchformer-rel": Arch({"encoder": "ebranchformer", "d_model": 32, "layers": 2,
                               "heads": 4, "attention": "rel", "ffn_dim": (64, 48),
                               "conv_kernel": (7, 7), "frontend": "fbank40"}),
}  # fmt: skip


def _model(arch: Arch) -> SpeechModel:
    torch.manual_seed(0)
    model = build(arch, vocab_size=9, dropout=0.1)
    with torch.no_grad():  # non-trivial norms, so a copied norm entry matters
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm.bias"):
                p.uniform_(0.5, 1.5)
    return model.eval()


def _inputs(model: SpeechModel) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 90, model.features.dim, generator=gen)
    return x, torch.tensor([90, 61])


def _duplicating(model: SpeechModel, kinds: tuple[str, ...]) -> Plan:
    """Duplicates the last unit of every set of ``kinds`` (and the first head), drops nothing."""
    sets = unit_sets(decode(model.arch))
    units = []
    copies = []
    for us in sets:
        extra = ([0, us.units - 1] if us.kind == "head" else [us.units - 1]) * (us.kind in kinds)
        units.append([*range(us.units), *extra])
        copies.append([False] * us.units + [True] * len(extra))
    return Plan(
        units=tuple(tuple(u) for u in units),
        copies=tuple(tuple(c) for c in copies),
        dropped=(),
        duplicated=(),
        params_removed=0,
        params_added=0,
        arch=arch_for(model.arch, sets, units),
    )


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_duplicating_heads_and_ffn_units_keeps_the_output(name: str) -> None:
    model = _model(ARCHS[name])
    sets = unit_sets(decode(model.arch))
    new, _ = apply(model, sets, _duplicating(model, ("head", "ffn")))
    assert new.num_parameters() > model.num_parameters() and not new.training
    assert [ly.heads for ly in new.spec.layer] == [6, 6]
    x, lengths = _inputs(model)
    with torch.no_grad():
        a, b = model.encode(x, lengths)[0], new.encode(x, lengths)[0]
    torch.testing.assert_close(b, a, rtol=0, atol=2e-5)


@pytest.mark.parametrize("name", ["conformer-abs", "ebranchformer-rel"])
def test_duplicated_channels_compute_their_originals_up_to_the_channel_norm(name: str) -> None:
    """Convolution channels and cgMLP gates: the copy's pre-norm activations equal the
    original's; only the norm over the channels sees them twice (the documented change)."""
    model = _model(ARCHS[name])
    sets = unit_sets(decode(model.arch))
    kind = "conv" if name.startswith("conformer") else "cgmlp"
    new, _ = apply(model, sets, _duplicating(model, (kind,)))
    seen: dict[str, torch.Tensor] = {}

    def grab(key: str) -> Callable[..., None]:
        return lambda mod, args, out: seen.__setitem__(key, args[0])

    target = "conv.dw_norm" if kind == "conv" else "mlp.gate_norm"
    for key, m in (("old", model), ("new", new)):
        m.get_submodule(f"{layer_prefix(m)}0.{target}").register_forward_hook(grab(key))
    x, lengths = _inputs(model)
    with torch.no_grad():
        model.encode(x, lengths)
        new.encode(x, lengths)
    old, dup = seen["old"], seen["new"]
    assert dup.shape[-1] == old.shape[-1] + 1
    torch.testing.assert_close(dup[..., :-1], old, rtol=0, atol=1e-6)
    torch.testing.assert_close(dup[..., -1], old[..., -1], rtol=0, atol=1e-6)


def _observed(model: SpeechModel, cfg: DmaoConfig) -> Dmao:
    dmao = Dmao(cfg, model)
    model.train()
    x, lengths = _inputs(model)
    tokens, token_lens = torch.tensor([[1, 2, 3], [4, 5, 0]]), torch.tensor([3, 2])
    for _ in range(3):
        model.zero_grad()
        loss = model.loss(x, lengths, tokens, token_lens)
        loss.backward()
        dmao.observe(model, loss.item())
    return dmao


@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("importance", ["taylor", "magnitude", "gradient"])
def test_reallocation_keeps_the_parameter_count_within_one_group(
    name: str, importance: str
) -> None:
    model = _model(ARCHS[name])
    dmao = _observed(model, DmaoConfig(importance=importance, delta=0.25))
    new, _ = dmao.reallocate(model, step=3, seed=0)
    report = dmao.report
    assert report is not None and report["dropped"] and report["duplicated"]
    largest = max(g.params for g in dmao.groups)
    assert abs(new.num_parameters() - model.num_parameters()) <= largest
    assert new.arch != model.arch
    assert count_parameters(new.arch, vocab_size=9) == new.num_parameters()
    analytic_macs(new.arch, vocab_size=9)  # the cost model reads the new per-layer fields
    assert new.training  # the training mode of the old model


def test_groups_are_chunks_of_about_one_head() -> None:
    model = _model(ARCHS["conformer-abs"])
    groups, owner = make_groups(unit_sets(model.spec), model, DmaoConfig())
    head = next(g.params for g in groups if g.kind == "head")
    full = [g for g in groups if g.kind != "head" and g.units[-1] + 1 != 64 and g.units[-1] != 31]
    assert full and all(0.5 * head <= g.params <= 1.5 * head for g in full)
    assert len(owner) == sum(us.units for us in unit_sets(model.spec))


def test_config_and_arch_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"dmao\.importance: 'fisher'"):
        config_from_dict({"dmao": {"importance": "fisher"}})
    with pytest.raises(ValueError, match=r"dmao\.at"):
        config_from_dict({"dmao": {"at": 1.5}})
    with pytest.raises(ValueError, match=r"dmao: unknown key\(s\) \['share'\]"):
        config_from_dict({"dmao": {"share": 0.2}})
    assert config_from_dict({"dmao": {}}).dmao == DmaoConfig()
    lstm = build({"encoder": "lstm", "d_model": 32, "layers": 1, "lstm_hidden": 32}, vocab_size=9)
    with pytest.raises(ValueError, match="dmao: reallocates the groups of a conformer"):
        Dmao(DmaoConfig(), lstm)
    with pytest.raises(ValueError, match="conv_dim: only a conformer encoder has it"):
        decode({**ARCHS["ebranchformer-rel"], "conv_dim": 16})
    with pytest.raises(ValueError, match="cgmlp_dim: 31 must be even"):
        decode({**ARCHS["ebranchformer-rel"], "cgmlp_dim": 31})
    # Stored architectures mean what they meant: the new fields default to the old widths.
    spec = decode(CONFORMER)
    assert [(ly.heads, ly.conv_dim) for ly in spec.layer] == [(4, 32), (4, 32)]


def _dmao_config(corpus: CorpusInfo, out: Path, **budget: object) -> TrainConfig:
    cfg = tiny_config(corpus, out, max_epochs=50, checkpoint_every_minutes=0.0, **budget)
    arch = Arch({**cfg.arch, "layers": 2, "heads": 4, "ffn_dim": (64, 64), "ffn_lowrank": (0, 0),
                 "conv_kernel": (7, 7), "module_order": ("mhsa_first", "conv_first")})  # fmt: skip
    return cfg.replace(arch=arch.to_json(), dmao=DmaoConfig(at=0.5, delta=0.2))


def test_reallocated_model_round_trips_checkpoint_json_and_onnx(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = _dmao_config(tiny_corpus, tmp_path / "run", max_steps=6)
    trainer = Trainer.from_config(cfg, show_progress=False)
    trainer.fit(resume=False)
    meta = json.loads((tmp_path / "run" / "last" / "meta.json").read_text())
    assert meta["dmao"]["step"] == 3 and meta["arch"] == meta["dmao"]["arch_after"]
    assert meta["arch"] != cfg.arch and meta["arch"] == trainer.model.arch.to_json()
    assert (tmp_path / "run" / "dmao.png").stat().st_size > 0
    assert Arch.from_json(json.loads(json.dumps(meta["arch"]))) == trainer.model.arch
    loaded = load_model(tmp_path / "run" / "last")
    state = trainer.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())
    assert reallocated_arch(tmp_path / "run") == {"arch_trained": meta["arch"]}  # for the study
    result = export_checkpoint(tmp_path / "run" / "last", tmp_path / "onnx", example_seconds=2.0)
    assert result.parity and all(v < 1e-4 for v in result.parity.values()), result.parity


class _Killed(Exception):
    pass


class _KilledAt(Trainer):
    """Stops dead right after the checkpoint of step ``kill_at`` (as a kill -9 would)."""

    kill_at = 0

    def save(self) -> None:
        super().save()
        if self.step == self.kill_at:
            raise _Killed


@pytest.mark.parametrize("kill_at", [2, 4])  # the reallocation is at step 3
def test_resume_before_and_after_the_reallocation_gives_identical_weights(
    tiny_corpus: CorpusInfo, tmp_path: Path, kill_at: int
) -> None:
    straight = _dmao_config(tiny_corpus, tmp_path / "straight", max_steps=6)
    Trainer.from_config(straight, show_progress=False).fit(resume=False)
    cfg = dataclasses.replace(straight, output_dir=str(tmp_path / "killed"))
    killed = _KilledAt.from_config(cfg, show_progress=False)
    assert isinstance(killed, _KilledAt)
    killed.kill_at = kill_at
    with pytest.raises(_Killed):
        killed.fit(resume=False)
    resumed = Trainer.from_config(cfg, show_progress=False)
    assert resumed.fit(resume=True).steps == 6
    a = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta_a = json.loads((tmp_path / "straight" / "last" / "meta.json").read_text())
    meta_b = json.loads((tmp_path / "killed" / "last" / "meta.json").read_text())
    assert meta_a["arch"] == meta_b["arch"] and meta_a["dmao"] == meta_b["dmao"]
