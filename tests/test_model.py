"""One model family: presets as architectures, the decoded spec, and old checkpoints."""

import math
import shutil
from pathlib import Path

import pytest
import torch

from speechnas.nn.build import SpeechModel, build
from speechnas.nn.cost import count_parameters
from speechnas.nn.presets import PRESETS, preset
from speechnas.nn.spec import decode
from speechnas.space import Arch, load_space
from speechnas.train.checkpoint import load_model
from speechnas.train.config import ModelConfig, config_from_dict

LEGACY = Path(__file__).parent / "fixtures" / "legacy-conformer-ctc"


def test_presets_sizes_and_baseline_under_3m() -> None:
    sizes = {n: count_parameters(a, vocab_size=29) for n, a in PRESETS.items()}
    assert sizes["small"] < sizes["base"] < sizes["large"]
    assert sizes["base"] <= 3_000_000
    # The figures of the first Conformer-CTC implementation, which the presets replace.
    assert sizes == {"small": 738_365, "base": 2_336_061, "large": 7_008_765}


def test_presets_are_points_of_speech_all() -> None:
    space = load_space("speech-all")
    for name in ("small", "large"):  # base's 384-wide feed-forward is not among its choices
        assert space.validate(PRESETS[name]) == PRESETS[name]


def test_output_shapes_and_padding_invariance() -> None:
    torch.manual_seed(0)
    model = build(preset("small"), vocab_size=12).eval()
    x = torch.randn(3, 230, 80)
    lens = torch.tensor([230, 150, 61])
    enc, out = model.encode(x, lens)
    y = model.decoder(enc)
    assert y.shape[:2] == (3, int(out.max())) and y.shape[-1] == 12
    assert out.tolist() == [((n - 1) // 2 - 1) // 2 for n in lens.tolist()]
    torch.testing.assert_close(y.exp().sum(-1), torch.ones(y.shape[:2]))
    for i in range(3):
        alone, n = model.encode(x[i : i + 1, : lens[i]], lens[i : i + 1])
        torch.testing.assert_close(
            y[i, : out[i]], model.decoder(alone)[0, : n[0]], atol=1e-5, rtol=1e-4
        )


def test_loss_backward_and_a_few_steps_fit_a_batch() -> None:
    torch.manual_seed(0)
    arch = preset("small", d_model=32, layers=1, heads=2, ffn_dim=64, conv_kernel=5,
                  subsampling_channels=8, frontend="fbank40")  # fmt: skip
    model = build(arch, vocab_size=6, dropout=0.0)
    x = torch.randn(4, 120, 40)
    lens = torch.full((4,), 120)
    tokens = torch.tensor([[1, 2, 3], [2, 3, 4], [5, 1, 2], [3, 3, 1]])
    tlens = torch.full((4,), 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = model.loss(x, lens, tokens, tlens)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(loss.item()) and loss.item() < 0.2 * first
    model.eval()
    assert model.decode(x, lens) == tokens.tolist()


def test_preset_overrides_expand_per_layer_values() -> None:
    arch = preset("small", layers=2, ffn_dim=128)
    assert arch["ffn_dim"] == (128, 128) and arch["conv_kernel"] == (15, 15)
    assert arch["module_order"] == ("mhsa_first",) * 2
    spec = decode(arch)
    assert [ly.ffn_dim for ly in spec.layer] == [128, 128] and spec.attention == "abs"
    with pytest.raises(ValueError, match="heads: 5 does not divide d_model=96"):
        preset("small", heads=5)
    with pytest.raises(ValueError, match="unknown; choose from"):
        preset("tiny")


def test_spec_resolves_defaults_once() -> None:
    spec = decode({"encoder": "conformer", "d_model": 64, "layers": 2, "heads": 2})
    assert spec.frontend == "fbank80" and spec.attention == "rel" and spec.macaron
    assert [ly.ffn_dim for ly in spec.layer] == [256, 256]  # 4 · d_model
    assert [ly.kernel for ly in spec.layer] == [15, 15] and spec.subsampling_channels == 32
    with pytest.raises(ValueError, match="ffn_dim: 3 per-layer values for 2 layers"):
        decode({"encoder": "conformer", "d_model": 64, "layers": 2, "heads": 2,
                "ffn_dim": [1, 2, 3]})  # fmt: skip
    with pytest.raises(ValueError, match="'heads'"):
        decode({"encoder": "transformer", "d_model": 64, "layers": 2})
    with pytest.raises(ValueError, match="encoder: 'gru' is not one of"):
        decode({"encoder": "gru", "d_model": 64, "layers": 2})


@pytest.mark.parametrize(
    "model,match",
    [
        ({"preset": "small", "heads": 5}, r"model: heads: 5 does not divide"),
        ({"preset": "small", "depth": 3}, r"model: unknown key\(s\) \['depth'\]"),
        ({"preset": "huge"}, r"model.preset: 'huge' is unknown"),
        ({"dropout": 1.5}, r"model.dropout"),
    ],
)
def test_model_section_errors_name_the_field(model: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        config_from_dict({"model": model})


def test_model_section_with_overrides_becomes_the_arch() -> None:
    cfg = config_from_dict({"model": {"preset": "small", "layers": 2, "dropout": 0.2}})
    assert cfg.model == ModelConfig(preset="small", dropout=0.2)
    assert cfg.architecture() == preset("small", layers=2)
    assert config_from_dict({"model": {"preset": "large"}}).architecture() == PRESETS["large"]


def test_a_checkpoint_of_the_first_implementation_loads_with_the_same_outputs(
    tmp_path: Path,
) -> None:
    """The fixture was written by the first Conformer-CTC class (``ASRModel``, since removed)
    with random weights, together with its outputs on a fixed batch."""
    expected = torch.load(LEGACY / "expected.pt", weights_only=True)
    loaded = load_model(LEGACY)
    assert isinstance(loaded.model, SpeechModel)
    spec = loaded.model.spec
    assert (spec.d_model, spec.layers, spec.heads, spec.subsampling_channels) == (16, 2, 2, 4)
    assert spec.attention == "abs" and spec.frontend == "fbank40"
    with torch.no_grad():
        enc, lens = loaded.model.encode(expected["feats"], expected["lengths"])
        log_probs = loaded.model.decoder(enc)
    assert lens.tolist() == expected["out_lengths"].tolist()
    for b, n in enumerate(lens.tolist()):
        torch.testing.assert_close(log_probs[b, :n], expected["log_probs"][b, :n])


def test_a_first_implementation_checkpoint_with_other_features_fails_clearly(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "old"
    shutil.copytree(LEGACY, folder)
    meta = (folder / "meta.json").read_text().replace('"win_ms": 25.0', '"win_ms": 32.0')
    (folder / "meta.json").write_text(meta)
    with pytest.raises(ValueError, match=r"match no front end.*retrain"):
        load_model(folder)


def test_arch_mapping_and_arch_build_the_same_model() -> None:
    arch = preset("small", layers=1)
    torch.manual_seed(0)
    a = build(dict(arch), vocab_size=9)
    torch.manual_seed(0)
    b = build(Arch(arch), vocab_size=9)
    assert a.arch == b.arch
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
