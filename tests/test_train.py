"""End-to-end training on the tiny real corpus: determinism, resume after kill -9, budgets."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config
from safetensors.torch import load_file

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.train.checkpoint import load_model, load_state
from speechnas.train.config import LrScaleConfig, load_config
from speechnas.train.trainer import Trainer


def _scores(tests: dict[str, dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Error rates only: RTF is a timing and differs between any two runs."""
    return {k: (v["wer"], v["cer"]) for k, v in tests.items()}


def test_training_learns_writes_results_and_checkpoints(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    cfg = tiny_config(tiny_corpus, tmp_path / "run", max_epochs=4)
    result = Trainer.from_config(cfg, show_progress=False).fit()
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert result.stop_reason == "max_epochs" and result.throughput > 0
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["config"]["seed"] == 3 and "torch" in saved["versions"]
    assert set(saved["test"]) == {"test"} and saved["test"]["test"]["wer"] >= 0.0
    loaded = load_model(tmp_path / "run" / "best")
    assert loaded.meta["seed"] == 3 and loaded.tokenizer.vocab_size == loaded.model.vocab_size
    state = load_state(tmp_path / "run" / "last")  # weights_only loading: no code runs
    assert state["step"] == result.steps
    assert (tmp_path / "run" / "training.png").stat().st_size > 10_000


def test_same_config_and_seed_give_identical_results(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    results = []
    for name in ("a", "b"):
        cfg = tiny_config(tiny_corpus, tmp_path / name, max_epochs=2)
        results.append(Trainer.from_config(cfg, show_progress=False).fit())
    a, b = (load_file(str(tmp_path / n / "last" / "model.safetensors")) for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _scores(results[0].test) == _scores(results[1].test)
    assert results[0].history == [
        {**h, "minutes": results[0].history[i]["minutes"]} for i, h in enumerate(results[1].history)
    ]


def test_step_budget_and_data_fraction(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_corpus, tmp_path / "r", max_steps=3, max_epochs=50)
    cfg = cfg.replace(data=dataclasses.replace(cfg.data, fraction=0.5))
    trainer = Trainer.from_config(cfg, show_progress=False)
    assert len(trainer.train_set) == 24
    result = trainer.fit()
    assert result.steps == 3 and result.stop_reason == "budget"


def test_finished_run_continues_with_a_larger_budget_only(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    """Continuing to 6 steps after stopping at 3 gives the weights of a straight 6-step run;
    any change other than the budget is refused."""
    straight = tiny_config(tiny_corpus, tmp_path / "straight", max_steps=6, max_epochs=50)
    Trainer.from_config(straight, show_progress=False).fit()
    short = tiny_config(tiny_corpus, tmp_path / "grown", max_steps=3, max_epochs=50)
    assert Trainer.from_config(short, show_progress=False).fit().steps == 3
    grown = Trainer.from_config(short.replace(budget=straight.budget), show_progress=False).fit(
        resume=True
    )
    assert grown.steps == 6
    a = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "grown" / "last" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    changed = short.replace(optim=dataclasses.replace(short.optim, lr=1e-2))
    with pytest.raises(ValueError, match="only the budget may change"):
        Trainer.from_config(changed, show_progress=False).fit(resume=True)


def _run_train(cfg_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "speechnas", "train", "--config", str(cfg_path)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_resume_after_kill_matches_uninterrupted_run(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    ref = Trainer.from_config(
        tiny_config(tiny_corpus, tmp_path / "ref", max_epochs=6), show_progress=False
    )
    ref_result = ref.fit()

    cfg = tiny_config(tiny_corpus, tmp_path / "killed", max_epochs=6, checkpoint_every_minutes=0.0)
    cfg_path = tmp_path / "killed.yaml"
    cfg_path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg.to_dict()))))
    proc = _run_train(cfg_path)
    state_file = tmp_path / "killed" / "last" / "state.pt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a checkpoint mid-way exists, then kill -9
        if state_file.exists():
            try:
                if 4 <= load_state(state_file.parent)["step"] < ref_result.steps - 2:
                    break
            except Exception:  # written at this very moment; look again
                pass
        if proc.poll() is not None:
            raise AssertionError(f"training ended before the kill: {proc.stderr.read()!r}")
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_state(state_file.parent)["step"]
    assert killed_at < ref_result.steps

    resumed = Trainer.from_config(cfg, show_progress=False).fit(resume=True)
    assert resumed.steps == ref_result.steps
    a = load_file(str(tmp_path / "ref" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "last" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _scores(resumed.test) == _scores(ref_result.test)


def test_mfcc_features_and_bpe_tokens_train_too(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    from speechnas.data.features import FeatureConfig
    from speechnas.train.config import TokenizerConfig

    cfg = tiny_config(tiny_corpus, tmp_path / "bpe", max_epochs=1)
    cfg = cfg.replace(
        arch={**cfg.arch, "frontend": "mfcc40"},
        tokenizer=TokenizerConfig(kind="bpe", vocab_size=24),
    )
    mismatch = cfg.replace(features=FeatureConfig(kind="mfcc", n_mels=40, n_mfcc=20))
    with pytest.raises(ValueError, match=r"features: .* differ from those of .* 'mfcc40'"):
        Trainer.from_config(mismatch, show_progress=False)
    result = Trainer.from_config(cfg, show_progress=False).fit()
    loaded = load_model(tmp_path / "bpe" / "best")
    assert loaded.features.kind == "mfcc" and loaded.features.dim == 40
    assert loaded.meta["tokenizer"]["kind"] == "bpe"
    assert result.steps > 0


def test_a_run_stored_before_a_config_field_existed_resumes(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    """A checkpoint whose stored config lacks fields added since (``dmao``, ``dynamic_chunk``:
    None by default) continues, since missing means the default; a real difference still
    stops the resume."""
    cfg = tiny_config(tiny_corpus, tmp_path / "run", max_epochs=1)
    first = Trainer.from_config(cfg, show_progress=False).fit()
    meta_path = tmp_path / "run" / "last" / "meta.json"
    meta = json.loads(meta_path.read_text())
    for key in ("dmao", "dynamic_chunk"):
        assert key in meta["config"] and meta["config"][key] is None
        del meta["config"][key]
    meta_path.write_text(json.dumps(meta))
    more = cfg.replace(budget=dataclasses.replace(cfg.budget, max_epochs=2))
    # The test sets only score the result: a resume may score others (here: none).
    more = more.replace(data=dataclasses.replace(more.data, test={}))
    resumed = Trainer.from_config(more, show_progress=False).fit(resume=True)
    assert resumed.steps > first.steps and resumed.test == {}
    other = more.replace(seed=cfg.seed + 1)
    with pytest.raises(ValueError, match="different config"):
        Trainer.from_config(other, show_progress=False).fit(resume=True)


def test_peak_rate_scales_down_with_encoder_width_and_depth(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    """``optim.lr_scale``: the 32-wide, 1-layer encoder trains at lr·sqrt(16/32) against a
    16 x 1 reference, and the rate it used is recorded; a fixed rate (fine-tuning) drops the
    scaling; an encoder at or below the reference keeps ``lr``."""
    cfg = tiny_config(tiny_corpus, tmp_path / "run", max_steps=2)
    scaled = dataclasses.replace(cfg.optim, lr_scale=LrScaleConfig(d_model=16, layers=1))
    trainer = Trainer.from_config(cfg.replace(optim=scaled), show_progress=False)
    assert trainer.peak_lr == pytest.approx(3e-3 * (16 / 32) ** 0.5)
    assert [g["initial_lr"] for g in trainer.optimizer.param_groups] == [trainer.peak_lr] * 2
    trainer.fit()
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["peak_lr"] == trainer.peak_lr
    assert saved["config"]["optim"]["lr_scale"] == {
        "d_model": 16,
        "layers": 1,
        "power": 0.5,
        "encoders": None,
    }
    assert scaled.fixed(1e-4).peak_lr(512, 12) == 1e-4
    assert scaled.peak_lr(8, 1) == 3e-3 and scaled.peak_lr(32, 2) == pytest.approx(1.5e-3)
    # a family outside `encoders` keeps the rate whatever its size
    some = dataclasses.replace(scaled.lr_scale, encoders=("conformer",))
    only = dataclasses.replace(scaled, lr_scale=some)
    assert only.peak_lr(32, 2, "cnn") == 3e-3
    assert only.peak_lr(32, 2, "conformer") == pytest.approx(1.5e-3)


def test_a_bad_rate_scale_is_named_before_training(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim: {lr: 0.003, lr_scale: {d_model: 64, power: -1}}\n")
    with pytest.raises(ValueError, match=r"optim.lr_scale.power: -1.0 is not in \[0, 2\]"):
        load_config(cfg)
    cfg.write_text("optim: {lr_scale: {encoders: [conformer, mamba]}}\n")
    with pytest.raises(ValueError, match=r"optim.lr_scale.encoders: \['mamba'\] are not encoder"):
        load_config(cfg)
    cfg.write_text("optim: {lr_scale: {width: 64}}\n")
    with pytest.raises(ValueError, match=r"optim.lr_scale: unknown key\(s\) \['width'\]"):
        load_config(cfg)
