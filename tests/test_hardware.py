"""Targets, the profiler and the calibrated latency predictor on tiny real models.

Timing is real (ONNX Runtime and PyTorch on this CPU) but nothing asserts how fast anything
runs: only structure, positivity and what follows from the construction.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from speechnas.cli import app
from speechnas.export.onnx import export_model
from speechnas.hardware import builtin_targets, load_target, profile
from speechnas.hardware.backends import backend_for_target
from speechnas.hardware.block_modules import block_module
from speechnas.hardware.blocks import RUN_BLOCK, decompose
from speechnas.hardware.calibration import _least, fit_length_model, measure_blocks
from speechnas.hardware.evaluation import accuracy, measure_archs, time_in_turn
from speechnas.hardware.predictor import LatencyPredictor, cache_file
from speechnas.nn.build import build, feature_config
from speechnas.space import Arch, load_space

torch.set_num_threads(1)
VOCAB = 16


def tiny(layers: int = 2, **changes: object) -> Arch:
    """A small valid speech-all architecture: 96 wide, 2 heads, fbank40, CTC."""
    values = {
        "frontend": "fbank40", "subsampling": "conv2d", "subsampling_factor": 4,
        "encoder": "conformer", "d_model": 96, "layers": layers, "heads": 2, "attention": "rel",
        "streaming": False, "ffn_dim": (256,) * layers, "ffn_lowrank": (0,) * layers,
        "macaron": True, "conv_kernel": (7,) * layers, "module_order": ("mhsa_first",) * layers,
        "decoder": "ctc", **changes,
    }  # fmt: skip
    return load_space("speech-all").validate(Arch(values))


def tiny_model(arch: Arch) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build(arch, vocab_size=VOCAB).eval()


# -- targets ---------------------------------------------------------------------------------


def test_builtin_targets_load() -> None:
    names = builtin_targets()
    assert {"cpu-ort-1t", "cpu-ort-int8-1t", "cpu-torch-1t", "cpu-ort-stream-1t"} <= set(names)
    for name in names:
        t = load_target(name)
        assert t.name == name and t.threads >= 1 and t.seconds
    stream = load_target("cpu-ort-stream-1t")
    assert stream.streaming and stream.chunks(1.0) == math.ceil(1000 / stream.chunk_ms)
    assert load_target("cpu-ort-int8-1t").precision == "int8"
    assert load_target("cpu-torch-1t").runtime == "torch"


def test_user_target_yaml(tmp_path: Path) -> None:
    path = tmp_path / "phone.yaml"
    path.write_text(
        "name: phone\nruntime: onnxruntime\nprecision: int8\nthreads: 4\nseconds: [1, 3]\n"
    )
    t = load_target(path)
    assert (t.name, t.precision, t.threads, t.seconds) == ("phone", "int8", 4, (1.0, 3.0))
    assert load_target(str(path)) == t
    assert t.replace(threads=2).threads == 2


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: x\nruntime: tflite\n", ["runtime", "'tflite'", "onnxruntime", "torch"]),
        ("name: x\nprecision: fp16\n", ["precision", "'fp16'", "fp32", "int8"]),
        ("name: x\nruntime: torch\nprecision: int8\n", ["precision", "onnxruntime"]),
        ("name: x\nthreads: 0\n", ["threads", "positive"]),
        ("name: x\nthreads: 2\nclock: cpu\n", ["clock", "threads 1"]),
        ("name: x\nclock: sundial\n", ["clock", "wall", "cpu"]),
        ("name: x\nseconds: [2, -1]\n", ["seconds", "-1"]),
        ("name: x\nleft_context_ms: 100\n", ["left_context_ms", "chunk_ms"]),
        ("name: x\nthread: 1\n", ["unknown", "thread", "allowed fields", "threads"]),
        ("runtime: torch\n", ["name", "required"]),
        ("[1, 2]\n", ["mapping"]),
    ],
)
def test_bad_target_names_the_field(tmp_path: Path, text: str, words: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_target(path)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_unknown_target_lists_the_builtins(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cpu-ort-1t"):
        load_target("no-such-target")
    with pytest.raises(ValueError, match="does not exist"):
        load_target(tmp_path / "missing.yaml")


# -- profiler --------------------------------------------------------------------------------


def test_profile_onnx_file(tmp_path: Path) -> None:
    files = export_model(tiny_model(tiny()), tmp_path / "export", check=False).files
    prof = profile(files["model"], "cpu-ort-1t", seconds=(1.0, 2.0), warmup=1, repeats=3)
    assert prof.decoding == "ctc"
    assert prof.files == {"model": os.path.getsize(files["model"])}
    assert prof.model_bytes == os.path.getsize(files["model"])
    assert [r.seconds for r in prof.lengths] == [1.0, 2.0]
    frames = feature_config(tiny()).num_frames
    assert [r.input_length for r in prof.lengths] == [frames(16000), frames(32000)]
    for r in prof.lengths:
        assert 0 < r.median_ms <= r.p90_ms
        assert r.rtf == pytest.approx(r.median_ms / (1000 * r.seconds))
        assert r.chunks is None
    if os.access("/proc/self/clear_refs", os.W_OK):  # Linux: the peak counter can be reset
        assert prof.peak_memory_bytes is not None and prof.peak_memory_bytes > 0
    assert prof.latency_ms(2.0) == prof.lengths[1].median_ms
    data = json.loads(json.dumps(prof.to_dict()))
    assert data["target"]["name"] == "cpu-ort-1t" and "definition" in data
    assert prof.table().row_count == 2


def test_profile_keeps_the_fastest_round(tmp_path: Path) -> None:
    files = export_model(tiny_model(tiny()), tmp_path / "export", check=False).files
    prof = profile(files["model"], "cpu-ort-1t", seconds=(1.0, 2.0), warmup=1, repeats=3,
                   memory=False, rounds=3)  # fmt: skip
    for r in prof.lengths:
        assert len(r.rounds_ms) == 3 and r.median_ms == min(r.rounds_ms)
        assert r.median_ms <= r.p90_ms  # the same round's figures
        assert r.rtf == pytest.approx(r.median_ms / (1000 * r.seconds))
    once = profile(files["model"], "cpu-ort-1t", seconds=(1.0,), repeats=2, memory=False)
    assert once.lengths[0].rounds_ms == ()
    with pytest.raises(ValueError, match="rounds: 0 must be at least 1"):
        profile(files["model"], "cpu-ort-1t", rounds=0)


def test_profile_rnnt_int8_and_streaming(tmp_path: Path) -> None:
    model = tiny_model(tiny(decoder="rnnt", pred_dim=128))
    result = export_model(model, tmp_path / "export", check=False)
    prof = profile(result, "cpu-ort-int8-1t", seconds=(1.0,), warmup=1, repeats=2, memory=False)
    assert prof.decoding == "rnnt"
    assert set(prof.files) == {"encoder", "predictor", "joiner"}
    fp32_bytes = sum(os.path.getsize(p) for p in result.files.values())
    assert prof.model_bytes < fp32_bytes  # the quantised files
    r = prof.lengths[0]
    assert set(r.parts_ms) == {"encoder", "predictor", "joiner"}
    assert all(v > 0 for v in r.parts_ms.values()) and r.median_ms > 0
    stream = load_target("cpu-ort-stream-1t").replace(chunk_ms=160, left_context_ms=320)
    prof = profile(result.files, stream, seconds=(1.0, 1.5), warmup=0, repeats=2, memory=False)
    for r, seconds in zip(prof.lengths, (1.0, 1.5), strict=True):
        assert r.chunks == math.ceil(1000 * seconds / 160)
        assert 0 < r.chunk_median_ms <= r.chunk_p90_ms
        assert r.median_ms > r.chunk_median_ms  # a sum over several chunks


def test_profile_torch_module() -> None:
    model = tiny_model(tiny(frontend="learnable"))
    prof = profile(model, "cpu-torch-1t", seconds=(1.0,), warmup=1, repeats=2)
    state = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    assert prof.files == {"model": state}
    assert prof.lengths[0].input_length == 16000  # samples for the learnable front end
    assert prof.lengths[0].median_ms > 0
    if os.access("/proc/self/clear_refs", os.W_OK):
        assert prof.peak_memory_bytes is not None and prof.peak_memory_bytes > 0
    with pytest.raises(ValueError, match="chunk_ms"):  # one 40 ms chunk is too short
        stream = load_target("cpu-ort-stream-1t").replace(chunk_ms=40, left_context_ms=0)
        profile(tiny_model(tiny()), stream.replace(runtime="torch"), seconds=(1.0,), memory=False)


@pytest.mark.parametrize("target", ["cpu-ort-1t", "cpu-torch-1t"])
def test_models_timed_in_turn_round_by_round(target: str) -> None:
    small, large = tiny(2), tiny(8)
    quick = load_target(target).replace(warmup=1, repeats=3)
    times = time_in_turn([small, large], quick, 1.0, vocab_size=VOCAB, rounds=3)
    assert len(times) == 2 and all(len(t) == 3 and min(t) > 0 for t in times)
    # eight layers against two: slower in the median of the per-round ratios
    ratios = sorted(b / a for a, b in zip(*times, strict=True))
    assert ratios[1] > 1.3


def test_measured_latency_is_the_least_of_its_rounds() -> None:
    quick = load_target("cpu-ort-1t").replace(warmup=1, repeats=2)
    rows = measure_archs([tiny(2), tiny(6)], quick, (1.0, 2.0), vocab_size=VOCAB, rounds=3)
    assert [(r["key"], r["seconds"]) for r in rows] == [
        (a.hash(), s) for a in (tiny(2), tiny(6)) for s in (1.0, 2.0)
    ]
    for r in rows:
        assert len(r["rounds_ms"]) == 3 and min(r["rounds_ms"]) > 0
        assert r["measured_ms"] == min(r["rounds_ms"])
    (once,) = measure_archs([tiny(2)], quick, (1.0,), vocab_size=VOCAB, rounds=1)
    assert once["rounds_ms"] == [once["measured_ms"]]
    with pytest.raises(ValueError, match="rounds: 0"):
        measure_archs([tiny(2)], quick, (1.0,), vocab_size=VOCAB, rounds=0)


def test_calibration_times_every_block_once_per_pass(tmp_path: Path) -> None:
    target = load_target("cpu-ort-1t")
    blocks = sorted({u.block for u in decompose(tiny(2), vocab_size=VOCAB)}, key=str)[:3]
    seen: list[str] = []
    fits = measure_blocks(blocks, target, backend_for_target(target), tmp_path, warmup=0,
                          repeats=2, passes=2, progress=lambda b: seen.append(b.key))  # fmt: skip
    assert seen == [b.key for b in blocks] * 2  # a pass over all blocks, then another
    assert set(fits) == {b.key for b in blocks}
    assert all(min(f.ms) > 0 and min(f.warm_ms) > 0 for f in fits.values())
    with pytest.raises(ValueError, match="passes: 0"):
        measure_blocks(blocks, target, backend_for_target(target), tmp_path, warmup=0,
                       repeats=1, passes=0)  # fmt: skip


def test_of_two_passes_each_length_keeps_the_runs_of_the_faster_one() -> None:
    import numpy as np

    a = np.array([[1.0, 5.0, 9.0], [1.2, 5.2, 9.4]])  # (repeats, lengths)
    b = np.array([[2.0, 4.0, 9.1], [2.2, 4.2, 9.3]])  # faster at the second length only
    got = _least(a, b)
    assert got[:, 0].tolist() == [1.0, 1.2] and got[:, 1].tolist() == [4.0, 4.2]
    assert got[:, 2].tolist() == [9.0, 9.4]  # equal medians: the first pass's runs


# -- predictor -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"encoder": "transformer", "attention": "local", "attention_window": 16},
        {"encoder": "ebranchformer", "streaming": True, "chunk_size": 8, "left_chunks": 2},
        {"encoder": "lstm", "lstm_hidden": 256, "decoder": "rnnt", "pred_dim": 128},
        {"encoder": "blstm", "lstm_hidden": 256, "frontend": "learnable"},
        {"encoder": "cnn", "cnn_se": True, "cnn_dilation": 2, "decoder": "attention"},
    ],
)
def test_blocks_hold_every_parameter(changes: dict) -> None:
    """The blocks of an architecture are the model's modules: same parameter count (all but
    the attention decoder, which latency does not include)."""
    space = load_space("speech-all")
    arch = space.repair({**tiny(layers=4), **changes}, random.Random(0))
    model = build(arch, vocab_size=VOCAB)
    skip = "decoder." if arch.get("decoder") == "attention" else "\0"
    expected = sum(
        p.numel()
        for n, p in model.named_parameters()
        if not n.startswith(skip) or n.startswith("decoder.ctc.")
    )
    uses = decompose(arch, vocab_size=VOCAB)
    got = sum(u.times * sum(p.numel() for p in block_module(u.block)[0].parameters()) for u in uses)
    assert got == expected


def transformer(impl: str, **changes: object) -> Arch:
    """A tiny 2-layer Transformer of speech-all with the attention implementation ``impl``."""
    space = load_space("speech-all")
    drop = ("macaron", "conv_kernel", "module_order")
    values = {k: v for k, v in tiny().items() if k not in drop}
    arch = space.validate(Arch({**values, "encoder": "transformer", "attention": "abs", **changes}))
    return Arch({**arch, "attention_impl": impl})


@pytest.mark.parametrize("impl", ["sdpa", "split_heads"])
def test_a_streaming_attention_block_is_timed_under_the_mask_its_stack_passes(impl: str) -> None:
    """What attention masks changes its time (the softmax slows on masked scores), so the
    block of a streaming encoder gets the chunk mask its layers get in the model, named by
    chunk and left context, and the open mask otherwise."""
    from speechnas.nn.blocks import MultiHeadSelfAttention
    from speechnas.nn.blocks._stack import AttentionStack

    arch = transformer(impl, streaming=True, chunk_size=8, left_chunks=2)
    (block,) = {u.block for u in decompose(arch, vocab_size=VOCAB) if u.block.kind == "mhsa"}
    assert (block.get("chunk"), block.get("left")) == (8, 2)
    stack = next(m for m in tiny_model(arch).modules() if isinstance(m, AttentionStack))
    seen: list[torch.Tensor] = []
    attn = next(m for m in stack.modules() if isinstance(m, MultiHeadSelfAttention))
    attn.register_forward_pre_hook(lambda _m, args: seen.append(args[1]))
    t = 37
    with torch.no_grad():
        stack(torch.randn(1, t, 96), torch.tensor([t]))
    mask = block_module(block)[1](t, torch.Generator().manual_seed(0))["mask"]
    assert mask.dtype == seen[0].dtype and torch.equal(mask, seen[0])
    assert (mask == 0).any() if impl == "sdpa" else torch.isinf(mask).any()  # some masked
    open_arch = transformer(impl)
    (plain,) = {u.block for u in decompose(open_arch, vocab_size=VOCAB) if u.block.kind == "mhsa"}
    assert "chunk=" not in plain.key
    plain_mask = block_module(plain)[1](t, torch.Generator().manual_seed(0))["mask"]
    assert not ((plain_mask == 0).any() if impl == "sdpa" else torch.isinf(plain_mask).any())


def test_length_fit_is_non_negative_and_exact_on_a_parabola() -> None:
    lengths = [16, 40, 100, 200, 400]
    (a, b, c), err = fit_length_model(lengths, [0.1 + 0.002 * t + 1e-5 * t * t for t in lengths])
    assert (a, b, c) == pytest.approx((0.1, 0.002, 1e-5), rel=1e-6) and err < 1e-9
    coef, _ = fit_length_model(lengths, [5.0, 4.0, 3.0, 2.0, 1.0])  # decreasing: clipped at 0
    assert min(coef) >= 0


def test_predictor_calibrate_save_load_predict(tmp_path: Path) -> None:
    small, large = tiny(layers=2), tiny(layers=4)
    predictor = LatencyPredictor.calibrate(
        "cpu-ort-1t", [small], vocab_size=VOCAB, warmup=1, repeats=2, cache=tmp_path
    )
    keys = {u.block.key for u in decompose(small, vocab_size=VOCAB)} | {RUN_BLOCK.key}
    assert set(predictor.fits) == keys
    assert all(
        f.coef[0] >= 0 and f.coef[1] >= 0 and f.coef[2] >= 0 for f in predictor.fits.values()
    )
    # Same block types, twice the layers: nothing new to measure, and a larger prediction.
    assert predictor.missing([large], vocab_size=VOCAB) == []
    for s in (1.0, 2.0, 8.0):
        p_small = predictor.predict(small, s, VOCAB)
        assert 0 < p_small < predictor.predict(large, s, VOCAB)
        parts = predictor.raw_parts(large, s, VOCAB)  # the block sum by kind
        assert {"run", "mhsa", "ffn", "convmod"} <= set(parts) and min(parts.values()) >= 0
        assert sum(parts.values()) == pytest.approx(predictor.raw_ms(large, s, VOCAB))
    # The table is cached under the target's name and round-trips through JSON.
    path = cache_file(load_target("cpu-ort-1t"), tmp_path)
    assert path.is_file()
    loaded = LatencyPredictor.load(path)
    assert loaded.to_dict() == predictor.to_dict()
    assert loaded.predict(large, 3.0, VOCAB) == predictor.predict(large, 3.0, VOCAB)
    again = LatencyPredictor.calibrate("cpu-ort-1t", [large], vocab_size=VOCAB, cache=tmp_path)
    assert again.to_dict()["blocks"] == predictor.to_dict()["blocks"]  # reused, not re-timed
    # A new block type is reported, then measured on demand.
    other = tiny(layers=2, decoder="rnnt", pred_dim=128)
    with pytest.raises(ValueError, match="not calibrated"):
        predictor.predict(other, 2.0, VOCAB)
    assert predictor.extend([other], vocab_size=VOCAB, warmup=0, repeats=1) == 2
    assert predictor.predict(other, 2.0, VOCAB) > 0
    # Accuracy against measured whole models: structure of the report.
    acc = accuracy(predictor, [small], seconds=(1.0, 2.0), vocab_size=VOCAB, repeats=2, warmup=1)
    assert acc["archs"] == 1 and acc["n"] == 2 and set(acc["per_length"]) == {"1", "2"}
    assert 0.0 <= acc["within_10pct"] <= 1.0 and acc["mape"] >= 0
    predictor.fit_correction(acc["rows"], vocab_size=VOCAB)
    scale, offset = predictor.correction
    assert scale > 0 and offset == 0.0 and predictor.correction_archs == [small.hash()]
    assert predictor.family_scales == {}  # one model is not enough for a family of its own
    predictor.fit_correction(acc["rows"], vocab_size=VOCAB, per_family=1)
    family = predictor.family_scales[str(small["encoder"])]
    raw = predictor.raw_ms(small, 2.0, VOCAB)
    assert predictor.predict(small, 2.0, VOCAB) == pytest.approx(family * raw)
    kept = LatencyPredictor.load(predictor.save(tmp_path / "corrected.json"))
    assert kept.family_scales == predictor.family_scales


def test_cli_profile_and_latency(tmp_path: Path) -> None:
    runner = CliRunner()
    files = export_model(tiny_model(tiny()), tmp_path / "export", check=False).files
    out = runner.invoke(
        app,
        ["profile", str(files["model"]), "--seconds", "1", "--repeats", "2", "--no-memory",
         "--rounds", "2", "--json", str(tmp_path / "p.json")],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    (length,) = json.loads((tmp_path / "p.json").read_text())[0]["lengths"]
    assert length["seconds"] == 1.0 and length["median_ms"] == min(length["rounds_ms"])
    assert "the fastest of 2 rounds" in " ".join(out.output.split())  # the caption wraps
    out = runner.invoke(app, ["profile", str(files["model"]), "--rounds", "0"])
    assert out.exit_code == 2 and "rounds" in out.output
    arch = json.dumps({"arch": tiny().to_json()})
    common = ["--arch", arch, "--cache", str(tmp_path / "cache"), "--vocab-size", str(VOCAB)]
    out = runner.invoke(
        app, ["latency", "calibrate", *common, "--repeats", "1", "--warmup", "0", "--passes", "1"]
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["latency", "predict", *common, "--seconds", "2", "--seconds", "4"])
    assert out.exit_code == 0, out.output
    assert tiny().hash() in out.output and "4 s" in out.output
    # A whole-model correction, saved with the table: later predictions apply it.
    out = runner.invoke(
        app, ["latency", "correct", *common, "--seconds", "2", "--repeats", "2", "--rounds", "2"]
    )
    assert out.exit_code == 0, out.output
    assert "correction from 1 timings of 1 models" in out.output
    out = runner.invoke(app, ["latency", "correct", *common, "--rounds", "0"])
    assert out.exit_code == 2 and "rounds" in out.output
    kept = LatencyPredictor.for_target("cpu-ort-1t", cache_dir=tmp_path / "cache")
    scale, _ = kept.correction
    assert scale > 0 and kept.correction_archs == [tiny().hash()]
    assert kept.predict(tiny(), 2.0, VOCAB) == pytest.approx(
        scale * kept.raw_ms(tiny(), 2.0, VOCAB)
    )
    out = runner.invoke(app, ["profile", str(files["model"]), "--target", "nowhere"])
    assert out.exit_code == 2 and "nowhere" in out.output
