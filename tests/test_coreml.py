"""Core ML export: the package's interface and metadata, and the converted program run in numpy
against PyTorch (coremltools cannot run predictions off macOS)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_ARCH
from typer.testing import CliRunner

from speechnas.cli import app
from speechnas.data.tokenizer import CharTokenizer
from speechnas.export.onnx import _CTC
from speechnas.nn.build import build
from speechnas.space import Arch
from speechnas.train.checkpoint import save_checkpoint

ct = pytest.importorskip("coremltools")
from speechnas.export.coreml import check_program, export_coreml_model  # noqa: E402

runner = CliRunner()
TOKENIZER = CharTokenizer(list(" abc"))


def _model(**change: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build(Arch({**TINY_ARCH, "frontend": "knf80", **change}), vocab_size=5).eval()


def test_fp32_program_equals_pytorch_and_the_package_describes_itself(tmp_path: Path) -> None:
    model = _model()
    res = export_coreml_model(
        model, tmp_path / "m.mlpackage", tokenizer=TOKENIZER, precision="fp32", max_seconds=10
    )
    assert res.checks == ["ML program", "input/output names", "flexible time axis", "metadata",
                          "feature definition"]  # fmt: skip
    assert len(res.program_parity) == 2 and max(res.program_parity.values()) < 1e-4
    spec = ct.utils.load_spec(str(res.path))
    meta = dict(spec.description.metadata.userDefined)
    assert json.loads(meta["vocabulary"])["symbols"] == [" ", "a", "b", "c"]
    assert json.loads(meta["features"])["kind"] == "knf"
    assert meta["subsampling_factor"] == "4" and spec.description.metadata.author == "speechnas"
    (time_range,) = [r for r in spec.description.input[0].type.multiArrayType.shapeRange
                     .sizeRanges][1:2]  # fmt: skip
    assert time_range.upperBound == 1000 and time_range.lowerBound == res.min_frames


def test_the_program_check_sees_a_wrong_weight(tmp_path: Path) -> None:
    model = _model()
    res = export_coreml_model(
        model, tmp_path / "m.mlpackage", precision="fp32", max_seconds=5, check=False
    )
    assert res.checks == [] and res.program_parity == {}
    x = torch.randn(1, 120, 80)
    other = _model()  # a copy: the program's constants may share memory with the model's
    with torch.no_grad():
        other.decoder.proj.bias[1] += 1.0
        ref = _CTC(other, waveform=False)(x, torch.tensor([120]))[0][0].numpy()
    got = check_program(res.program, x[0].numpy(), 120)
    assert got.shape == ref.shape and np.abs(got - ref).max() > 0.1


def test_fp16_program_stays_close(tmp_path: Path) -> None:
    res = export_coreml_model(_model(), tmp_path / "m.mlpackage", max_seconds=5)
    assert res.precision == "fp16"
    # half precision keeps ~3 significant digits of log-probabilities of a few units
    assert 0 < max(res.program_parity.values()) < 0.05


def test_fp16_log_probabilities_of_a_confident_model_stay_finite(tmp_path: Path) -> None:
    """A trained model is sure of its best token: the others' probabilities underflow fp16, and
    log(softmax) (coremltools' own lowering) gives -inf; the export's log-softmax does not."""
    model = _model()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(200)  # log-probabilities far below fp16's smallest probability, 6e-8
    res = export_coreml_model(model, tmp_path / "m.mlpackage", max_seconds=5)  # checks finite
    assert res.precision == "fp16" and len(res.program_parity) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [({"decoder": "rnnt"}, "decoder"), ({"frontend": "learnable"}, "frontend")],
    ids=["rnnt", "learnable"],
)
def test_what_core_ml_export_does_not_cover_is_named(
    change: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        export_coreml_model(_model(**change), tmp_path / "m.mlpackage")


def test_cli_converts_a_checkpoint(tmp_path: Path) -> None:
    model = build(TINY_ARCH, vocab_size=TOKENIZER.vocab_size)  # speechnas's own fbank80
    meta = {"arch": TINY_ARCH.to_json(), "tokenizer": TOKENIZER.to_dict(),
            "features": model.features.to_dict()}  # fmt: skip
    save_checkpoint(tmp_path / "ckpt", model, meta)
    res = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "ckpt"), "--output",
                              str(tmp_path / "out"), "--format", "coreml", "--precision", "fp32",
                              "--max-seconds", "5"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "model.mlpackage").is_dir()
    assert "checked: ML program" in res.output and "max |MIL program" in res.output
