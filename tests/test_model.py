import math

import pytest
import torch

from speechnas.nn.model import PRESETS, ASRModel, ModelConfig, greedy_ctc, preset


def test_presets_sizes_and_baseline_under_3m() -> None:
    sizes = {
        n: ASRModel(c, feat_dim=80, vocab_size=29).num_parameters() for n, c in PRESETS.items()
    }
    assert sizes["small"] < sizes["base"] < sizes["large"]
    assert sizes["base"] <= 3_000_000


def test_output_shapes_and_padding_invariance() -> None:
    torch.manual_seed(0)
    model = ASRModel(preset("small"), feat_dim=40, vocab_size=12).eval()
    x = torch.randn(3, 230, 40)
    lens = torch.tensor([230, 150, 61])
    y, out = model(x, lens)
    assert y.shape[:2] == (3, int(out.max())) and y.shape[-1] == 12
    assert out.tolist() == [((n - 1) // 2 - 1) // 2 for n in lens.tolist()]
    torch.testing.assert_close(y.exp().sum(-1), torch.ones(y.shape[:2]))
    for i in range(3):
        alone, n = model(x[i : i + 1, : lens[i]], lens[i : i + 1])
        torch.testing.assert_close(y[i, : out[i]], alone[0, : n[0]], atol=1e-5, rtol=1e-4)


def test_loss_backward_and_a_few_steps_fit_a_batch() -> None:
    torch.manual_seed(0)
    model = ASRModel(
        ModelConfig(d_model=32, layers=1, heads=2, ffn_dim=64, conv_kernel=5, dropout=0.0,
                    subsampling_channels=8),
        feat_dim=20, vocab_size=6,
    )  # fmt: skip
    x = torch.randn(4, 120, 20)
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
    hyps = greedy_ctc(*model(x, lens))
    assert hyps == tokens.tolist()


def test_greedy_ctc_merges_repeats_and_drops_blanks() -> None:
    path = [0, 1, 1, 0, 1, 2, 2, 0, 0, 3, 3]
    lp = torch.full((1, len(path), 4), -10.0)
    lp[0, torch.arange(len(path)), torch.tensor(path)] = 0.0
    assert greedy_ctc(lp, torch.tensor([len(path)])) == [[1, 1, 2, 3]]
    assert greedy_ctc(lp, torch.tensor([4])) == [[1]]


@pytest.mark.parametrize(
    "field,value",
    [("heads", 5), ("conv_kernel", 8), ("dropout", 1.5), ("layers", 0)],
)
def test_invalid_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"model\.{field}"):
        ModelConfig(**{field: value})  # type: ignore[arg-type]
