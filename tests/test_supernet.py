"""The weight-sharing supernet: paths equal their extracted models, the subspace is declared and
checked, sandwich training runs through the trainer, resumes, and its checkpoints load."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.nn.build import SpeechModel
from speechnas.nn.supernet import SHRINK_STAGES, Supernet, largest, smallest, supernet_space
from speechnas.space import SearchSpace, load_space, space_from_yaml
from speechnas.train.checkpoint import load_model, load_supernet
from speechnas.train.config import SHRINK_ORDERS, SupernetConfig
from speechnas.train.trainer import Trainer

ELASTIC_SPACE = """\
name: elastic
choices:
  - {name: frontend, values: [fbank80]}
  - {name: subsampling, values: [conv2d, dwconv2d]}
  - {name: encoder, values: [ENCODER]}
  - {name: d_model, values: [16, 24, 32]}
  - {name: layers, values: [1, 2, 3]}
  - {name: heads, values: [2, 4]}
  - {name: ffn_dim, values: [24, 48, 64], per_layer: layers}
  - {name: conv_kernel, values: [3, 5, 7], per_layer: layers}
  - {name: attention, values: [ATTENTION]}
  - {name: streaming, values: [STREAMING, OTHER]}
  - {name: chunk_size, values: [4], when: {streaming: [true]}}
  - {name: left_chunks, values: [1], when: {streaming: [true]}}
  - {name: decoder, values: [ctc]}
constraints:
  - {divisible: [d_model, heads]}
"""


def elastic_space(encoder: str = "conformer", attention: str = "rel", streaming: bool = False):
    text = ELASTIC_SPACE.replace("ENCODER", encoder).replace("ATTENTION", attention)
    text = text.replace("STREAMING", str(streaming).lower()).replace(
        "OTHER", str(not streaming).lower()
    )
    if encoder == "transformer":
        text = text.replace("  - {name: conv_kernel, values: [3, 5, 7], per_layer: layers}\n", "")
    return space_from_yaml(text)


@pytest.mark.parametrize(
    ("encoder", "attention", "streaming"),
    [("conformer", "rel", False), ("conformer", "abs", True), ("transformer", "rel", False)],
)
def test_every_path_equals_its_extracted_model(
    encoder: str, attention: str, streaming: bool
) -> None:
    torch.manual_seed(0)
    net = Supernet(elastic_space(encoder, attention, streaming), vocab_size=11).eval()
    feats, lens = torch.randn(3, 90, 80), torch.tensor([90, 61, 33])
    rng = random.Random(4)
    archs = [net.smallest, net.largest] + [net.space.sample(rng) for _ in range(8)]
    seen = set()
    for arch in archs:
        net.set_active(arch)
        lp, out_lens = net.path_forward(net.active, feats, lens)
        model = net.extract()
        assert type(model) is SpeechModel and model.arch == arch
        enc, enc_lens = model.eval().encode(feats, lens)
        expected = model.decoder(enc)
        assert torch.equal(out_lens, enc_lens)
        assert torch.allclose(lp, expected, atol=1e-6), arch
        assert net.decode(feats, lens) == model.decode(feats, lens)
        seen.add(model.num_parameters())
    assert len(seen) > 5  # the paths really differ in size
    # extraction copies: training the extracted model leaves the supernet alone
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_kernels_share_the_centre_or_the_newest_taps() -> None:
    for streaming in (False, True):
        net = Supernet(elastic_space(streaming=streaming), vocab_size=11)
        arch = net.largest.replace(conv_kernel=(3, 7, 5))
        small = net.extract(arch)
        full_w = net.encoder.stages[1].layers[0].conv.dw.conv.weight
        small_w = small.encoder.stages[1].layers[0].conv.dw.conv.weight
        start = 4 if streaming else 2  # causal: the last 3 of 7 taps; else the middle 3
        assert torch.equal(small_w, full_w[:, :, start : start + 3])


def test_the_subspace_is_declared_and_its_paths_are_archs_of_the_search_space() -> None:
    space = elastic_space()
    sub = supernet_space(space)
    assert sub["subsampling"].values == ("conv2d",)  # non-elastic choices are fixed
    assert supernet_space(space, {"subsampling": "dwconv2d"})["subsampling"].values == ("dwconv2d",)
    rng = random.Random(0)
    for _ in range(20):
        assert space.is_valid(sub.sample(rng))
    assert largest(sub)["d_model"] == 32 and largest(sub)["ffn_dim"] == (64, 64, 64)
    assert smallest(sub)["layers"] == 1 and smallest(sub)["conv_kernel"] == (3,)
    default = load_space("src/speechnas/configs/search-space.yaml")
    assert supernet_space(default).count() > 1000
    with pytest.raises(ValueError, match=r"encoder: a supernet shares weights across"):
        supernet_space(load_space("speech-all"), {"encoder": "lstm"})
    with pytest.raises(ValueError, match=r"supernet fixed: \['d_model'\] are elastic"):
        supernet_space(space, {"d_model": 16})
    with pytest.raises(ValueError, match=r"fixed.subsampling: 'conv3d' is not one of"):
        supernet_space(space, {"subsampling": "conv3d"})
    with pytest.raises(ValueError, match=r"d_model: 40 is not one of"):
        Supernet(space, vocab_size=11).set_active(largest(sub).replace(d_model=40))


def _space_file(tmp: Path) -> Path:
    path = tmp / "elastic.yaml"
    path.write_text(ELASTIC_SPACE.replace("ENCODER", "conformer").replace("ATTENTION", "rel")
                    .replace("STREAMING", "false").replace("OTHER", "true"))  # fmt: skip
    return path


def test_sandwich_training_resumes_and_loads(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    space = _space_file(tmp_path)

    def cfg(out: Path, steps: int):
        c = tiny_config(tiny_corpus, out, max_steps=steps, max_epochs=100)
        return c.replace(arch=None, space=str(space), supernet=SupernetConfig(random_subnets=1))

    whole = Trainer.from_config(cfg(tmp_path / "whole", 6), show_progress=False).fit()
    Trainer.from_config(cfg(tmp_path / "split", 3), show_progress=False).fit()
    split = Trainer.from_config(cfg(tmp_path / "split", 6), show_progress=False).fit()
    assert whole.steps == split.steps == 6
    a = load_supernet(tmp_path / "whole" / "last").model
    b = load_supernet(tmp_path / "split" / "last").model
    assert isinstance(a, Supernet) and a.space == supernet_space(load_space(str(space)))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k  # the resumed run drew the same paths
    plain = load_model(tmp_path / "whole" / "last")
    assert type(plain.model) is SpeechModel and plain.model.arch == a.largest
    fresh = Supernet(a.space, vocab_size=a.vocab_size)
    assert any(
        not torch.equal(x, y)
        for x, y in zip(fresh.state_dict().values(), a.state_dict().values(), strict=True)
    )
    assert "supernet" in plain.meta and plain.meta["supernet"]["random_subnets"] == 1
    assert plain.meta["supernet"]["path_draw"] == a.path_draw == "choice"


def test_a_sandwich_step_trains_more_than_the_largest_path() -> None:
    torch.manual_seed(0)
    space: SearchSpace = elastic_space()
    net = Supernet(space, vocab_size=11, random_subnets=2).train()
    feats, lens = torch.randn(2, 80, 80), torch.tensor([80, 60])
    tokens, token_lens = torch.randint(1, 11, (2, 4)), torch.tensor([4, 3])
    torch.manual_seed(5)
    students = net.sandwich()
    assert students[0] == net.smallest and len(students) == 3
    torch.manual_seed(5)
    assert net.sandwich() == students  # drawn from torch's seeded generator
    plain = Supernet(space, vocab_size=11).eval()
    plain.load_state_dict(net.state_dict())
    sandwich = net.loss(feats, lens, tokens, token_lens)
    alone = plain.loss(feats, lens, tokens, token_lens)
    assert sandwich.item() > alone.item() > 0
    with pytest.raises(ValueError, match=r"supernet\.distill"):
        SupernetConfig(distill=2.0)
    with pytest.raises(ValueError, match=r"supernet\.path_draw: 'deepest' is not one of"):
        SupernetConfig(path_draw="deepest")


def test_random_paths_drawn_by_choice_train_every_depth() -> None:
    space = elastic_space()  # 1-3 layers, a feed-forward width and a kernel per layer
    depths = {}
    for draw in ("choice", "architecture"):
        net = Supernet(space, vocab_size=11, random_subnets=2, path_draw=draw)
        torch.manual_seed(0)
        drawn = [a["layers"] for _ in range(150) for a in net.sandwich()[1:]]
        depths[draw] = [drawn.count(n) / len(drawn) for n in (1, 2, 3)]
    assert min(depths["choice"]) > 0.25  # a third each
    assert depths["architecture"][2] > 0.85 and depths["architecture"][0] < 0.05


def test_progressive_shrinking_opens_the_students_paths_with_the_budget() -> None:
    space = elastic_space()  # d_model, layers, ffn_dim, conv_kernel: 3 values each; heads 2
    net = Supernet(space, vocab_size=11, random_subnets=3, shrink=0.5)

    def students(used: float) -> list:
        net.set_progress(used)
        torch.manual_seed(1)
        return [a for _ in range(40) for a in net.sandwich()]

    assert students(0.0) == []  # only the largest path's values: nothing besides the teacher
    early = students(0.2)  # 1 + floor(3 * 0.4) = 2 values each: the two largest
    assert early and all(a != net.largest for a in early)
    assert {a["d_model"] for a in early} <= {24, 32} and {a["layers"] for a in early} <= {2, 3}
    assert all(set(a["ffn_dim"]) <= {48, 64} for a in early)
    assert net.students["heads"].values == (4,)  # the largest of two values
    assert smallest(net.students) in early  # the opened subspace's smallest path
    late = students(0.5)  # every value from `shrink` on, the subspace's smallest path first
    assert net.students is net.space and late[0] == net.smallest
    assert {a["d_model"] for a in late} == {16, 24, 32}
    plain = Supernet(space, vocab_size=11, random_subnets=3)
    assert plain.set_progress(0.0) is plain.space  # without shrinking: all from the start
    with pytest.raises(ValueError, match=r"supernet\.shrink: 1\.0 is not in \[0, 1\)"):
        SupernetConfig(shrink=1.0)


def test_staged_shrinking_opens_kernel_then_depth_then_width() -> None:
    net = Supernet(elastic_space(), vocab_size=11, shrink=0.6, shrink_order="staged")

    def values(used: float) -> dict[str, tuple]:
        sub = net.set_progress(used)
        return {c: sub[c].values for c in ("conv_kernel", "layers", "d_model", "ffn_dim", "heads")}

    # three stages of 0.2 each; within a stage its choices keep 1 + floor(3 * progress) values
    assert values(0.0) == {"conv_kernel": (7,), "layers": (3,), "d_model": (32,),
                           "ffn_dim": (64,), "heads": (4,)}  # fmt: skip
    assert values(0.1) == {**values(0.0), "conv_kernel": (5, 7)}
    mid = values(0.3)  # kernels all open, depth half-way, widths still the largest
    assert mid["conv_kernel"] == (3, 5, 7) and mid["layers"] == (2, 3) and mid["d_model"] == (32,)
    late = values(0.5)
    assert late["layers"] == (1, 2, 3) and late["d_model"] == (24, 32) and late["heads"] == (2, 4)
    assert net.set_progress(0.6) is net.space
    together = Supernet(elastic_space(), vocab_size=11, shrink=0.6)
    assert together.set_progress(0.25)["layers"].values == (2, 3)  # every choice at once
    with pytest.raises(ValueError, match=r"supernet\.shrink_order: 'ofa' is not one of"):
        SupernetConfig(shrink=0.5, shrink_order="ofa")
    assert tuple(SHRINK_STAGES) == SHRINK_ORDERS  # the config checks the orders the net knows


def test_a_shrinking_supernet_trains_resumes_and_records_it(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    space = _space_file(tmp_path)
    c = tiny_config(tiny_corpus, tmp_path, max_steps=6, max_epochs=100)
    c = c.replace(arch=None, space=str(space),
                  supernet=SupernetConfig(random_subnets=1, shrink=0.5, shrink_order="staged"),
                  budget=dataclasses.replace(c.budget, checkpoint_every_minutes=0.0))  # fmt: skip
    whole = Trainer.from_config(c.replace(output_dir=str(tmp_path / "whole")), show_progress=False)
    whole.fit()
    assert whole.model.students is whole.model.space  # opened fully by the end
    # The same budget killed after 3 steps (a checkpoint after every step), then resumed: the
    # paths follow the share of the budget spent, so they are drawn as in one go.
    split = c.replace(output_dir=str(tmp_path / "split"))
    killed = Trainer.from_config(split, show_progress=False)
    step = killed._train_step

    def dies_at_three(indices: list[int]) -> float:
        if killed.step == 3:
            raise KeyboardInterrupt
        return step(indices)

    killed._train_step = dies_at_three  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    assert Trainer.from_config(split, show_progress=False).fit().steps == 6
    a = load_supernet(tmp_path / "whole" / "last")
    b = load_supernet(tmp_path / "split" / "last").model
    for (k, va), vb in zip(a.model.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    assert a.meta["supernet"]["shrink"] == a.model.shrink == 0.5
    assert a.meta["supernet"]["shrink_order"] == a.model.shrink_order == "staged"
