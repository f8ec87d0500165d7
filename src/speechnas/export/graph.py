"""One way to turn a torch module into an ONNX file, shared by model export and profiling."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

OPSET = 17


def export_module(
    module: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Writes ``module(*inputs)`` as an ONNX graph at ``path`` (in eval mode, no gradients).

    The TorchScript tracer is used rather than the ``torch.export`` one: it exports the
    blocks of every search space in a fraction of a second (the search and the latency
    calibration export hundreds of graphs), and the axes named in ``dynamic_axes`` stay
    symbolic. ``metadata`` goes into the model's ``metadata_props`` so a file describes itself.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = module.training
    module.eval()
    try:
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                inputs,
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in (dynamic_axes or {}).items()},
                do_constant_folding=True,
            )
    finally:
        module.train(was_training)
    if metadata:
        import onnx

        model = onnx.load(str(path))
        del model.metadata_props[:]
        for k, v in metadata.items():
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, str(path))
    return path
