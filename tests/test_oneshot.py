"""One-shot search end to end on the tiny corpus: supernet, scoring by inherited weights under
the hard limits, finalists fine-tuned into the study, the common results, and resume."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from search_helpers import search_config
from test_supernet import _space_file

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.search.drivers.oneshot import (
    PathScorer,
    oneshot_setup,
    pick_finalists,
    search_paths,
)
from speechnas.search.runner import run_search
from speechnas.space import Arch

OPTIONS = {
    "supernet_steps": 4,
    "threads": 1,
    "random_subnets": 1,
    "inner": "evolution",
    "inner_options": {"population": 3},
    "evaluations": 8,
    "dev_utterances": 6,
    "finalists": 2,
    "finetune_steps": 1,
}


def _config(corpus: CorpusInfo, tmp: Path, **changes):
    return search_config(
        corpus,
        tmp,
        space=str(_space_file(tmp)),
        strategy={"name": "oneshot", "options": OPTIONS},
        target="proxy",
        **changes,
    )


def test_oneshot_search_fills_the_study_and_resumes(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = _config(
        tiny_corpus, tmp_path, constraints={"max_params": 45_000}, retrain_minutes=1,
        retrain_steps=1, retrain_threads=1,
    )  # fmt: skip
    out = Path(cfg.output_dir)
    outcome = run_search(cfg)
    records = [
        json.loads(x) for x in (out / "oneshot" / "candidates.jsonl").read_text().splitlines()
    ]
    assert [r["index"] for r in records] == list(range(8))
    rejected = [r for r in records if r["values"] is None]
    scored = [r for r in records if r["values"] is not None]
    assert scored and rejected  # the limit splits this space
    for r in rejected:
        assert (
            r["status"].startswith("rejected: predicted params") and "dev_wer" not in r["metrics"]
        )
    for r in scored:
        assert r["metrics"]["params"] <= 45_000 and 0 <= r["metrics"]["dev_wer"] <= 1.5
        assert r["values"] == [r["metrics"]["dev_wer"], r["metrics"]["latency"]]
    trials = outcome.study.trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    finalists = pick_finalists(records, 2)
    assert [t.user_attrs["arch_key"] for t in trials] == [r["key"] for r in finalists]
    for t in trials:
        a = t.user_attrs
        assert a["strategy"] == "oneshot" and Arch.from_json(a["arch"]).hash() == a["arch_key"]
        assert a["metrics"]["steps"] == 1 and "wer:test" in a["metrics"]
        assert a["inherited"]["dev_wer"] == records[a["candidate"]]["metrics"]["dev_wer"]
        assert (Path(a["output_dir"]) / "extracted" / "model.safetensors").is_file()
        assert t.values == [a["metrics"]["wer:test"], a["metrics"]["latency"]]
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["front"] and pareto["retrained"]["steps"] == 1
    assert (out / "pareto.png").is_file() and (out / "oneshot" / "candidates.png").is_file()
    summary = json.loads((out / "oneshot" / "summary.json").read_text())
    assert summary["supernet"]["steps"] == 4 and summary["scored"] == len(
        {r["key"] for r in scored}
    )
    assert outcome.study.study.user_attrs["oneshot"]["proposed"] == 8

    # resumed: nothing is trained, scored or fine-tuned again
    before = (out / "oneshot" / "candidates.jsonl").read_text()
    again = run_search(cfg.replace(retrain_minutes=0), resume=True)
    assert (out / "oneshot" / "candidates.jsonl").read_text() == before
    assert [t.number for t in again.study.trials()] == [0, 1]
    assert again.study.study.user_attrs["oneshot"]["supernet"]["steps"] == 4

    # killed while scoring: the complete records are kept, the cut one and the rest are scored
    lines = before.splitlines()
    (out / "oneshot" / "candidates.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    opts, _, sub = oneshot_setup(cfg)
    scorer = PathScorer(out / "supernet" / "last", cfg.train["data"]["dev"], utterances=6, seed=0)
    redone = search_paths(cfg, sub, scorer, opts, out / "oneshot", vocab_size=scorer.net.vocab_size,
                          console=Console(file=io.StringIO()))  # fmt: skip
    assert [r["key"] for r in redone] == [r["key"] for r in records]
    rows = (out / "oneshot" / "candidates.jsonl").read_text().splitlines()
    assert [json.loads(x)["index"] for x in rows] == list(range(8))  # the cut line is gone
    for a, b in zip(redone, records, strict=True):
        assert a["values"] == pytest.approx(b["values"]) if b["values"] else a["values"] is None


def test_oneshot_options_are_checked_before_any_work(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = _config(tiny_corpus, tmp_path)
    bad = cfg.replace(strategy=cfg.strategy.__class__("oneshot", {"finalist": 2}))
    with pytest.raises(ValueError, match=r"strategy.options: unknown \['finalist'\] for oneshot"):
        run_search(bad)
    assert not (Path(cfg.output_dir) / "supernet").exists()
    draw = cfg.replace(strategy=cfg.strategy.__class__("oneshot", {"path_draw": "deepest"}))
    with pytest.raises(ValueError, match=r"strategy.options.path_draw: 'deepest' is not one of"):
        run_search(draw)
    shrink = cfg.replace(strategy=cfg.strategy.__class__("oneshot", {"shrink": 1.5}))
    with pytest.raises(ValueError, match=r"strategy.options.shrink: 1.5 is not in \[0, 1\)"):
        run_search(shrink)
    order = cfg.replace(strategy=cfg.strategy.__class__("oneshot", {"shrink_order": "ofa"}))
    with pytest.raises(ValueError, match=r"strategy.options.shrink_order: 'ofa' is not one of"):
        run_search(order)
    lstm = cfg.replace(
        space="speech-all",
        strategy=cfg.strategy.__class__("oneshot", {"fixed": {"encoder": "lstm"}}),
    )
    with pytest.raises(ValueError, match="encoder: a supernet shares weights"):
        run_search(lstm)
    grid = cfg.replace(strategy=cfg.strategy.__class__("oneshot", {"inner": "grid"}))
    with pytest.raises(ValueError, match="strategy: 'grid' is not one of"):
        run_search(grid)  # the inner strategy, not only after the supernet has trained
    with pytest.raises(ValueError, match="objectives: rtf:test cannot be estimated"):
        run_search(cfg.replace(objectives=("wer:test", "rtf:test")))
    assert not Path(cfg.output_dir).exists()


def test_extract_writes_a_plain_checkpoint_of_a_path(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    import torch
    from conftest import tiny_config
    from typer.testing import CliRunner

    from speechnas.cli import app
    from speechnas.nn.build import SpeechModel
    from speechnas.train.checkpoint import load_model, load_supernet
    from speechnas.train.config import BudgetConfig, SupernetConfig
    from speechnas.train.trainer import Trainer

    cfg = tiny_config(tiny_corpus, tmp_path / "net", max_steps=2, max_epochs=10)
    cfg = cfg.replace(
        arch=None, space=str(_space_file(tmp_path)), supernet=SupernetConfig(random_subnets=1)
    )
    Trainer.from_config(cfg, show_progress=False).fit()
    net = load_supernet(tmp_path / "net" / "last").model
    arch = net.smallest.replace(d_model=24, heads=2)
    runner = CliRunner()
    last = str(tmp_path / "net" / "last")
    out = runner.invoke(
        app,
        ["extract", last, "--arch", json.dumps(arch.to_json()), "--output", str(tmp_path / "p")],
    )
    assert out.exit_code == 0, out.output
    model = load_model(tmp_path / "p").model
    assert type(model) is SpeechModel and model.arch == arch
    feats, lens = torch.randn(2, 70, 80), torch.tensor([70, 50])
    net.set_active(arch)
    assert net.decode(feats, lens) == model.decode(feats, lens)
    lp, _ = net.path_forward(arch, feats, lens)
    assert torch.allclose(lp, model.decoder(model.encode(feats, lens)[0]), atol=1e-6)
    init, other_dir = str(tmp_path / "p"), str(tmp_path / "other")
    other = cfg.replace(supernet=None, space=None, arch=net.smallest.to_json(), init_from=init,
                        output_dir=other_dir)  # fmt: skip
    with pytest.raises(ValueError, match=r"init_from: .* holds architecture"):
        Trainer.from_config(other, show_progress=False).fit()
    zero = other.replace(arch=arch.to_json(), budget=BudgetConfig(max_steps=0))
    trainer = Trainer.from_config(zero, show_progress=False)
    tuned = trainer.fit()
    from speechnas.evaluate.decode import evaluate_dataset

    assert tuned.steps == 0  # zero steps: the path's own dev WER is scored as the starting point
    assert tuned.best_dev_wer == evaluate_dataset(net, trainer.dev_set).rates.wer
    bad = runner.invoke(app, ["extract", str(tmp_path / "net" / "last"), "--arch",
                              json.dumps(arch.replace(d_model=40).to_json()), "--output",
                              str(tmp_path / "bad")])  # fmt: skip
    assert bad.exit_code != 0 and "d_model: 40 is not one of" in bad.output
