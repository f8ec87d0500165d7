"""Checkpoints that load without executing code.

A fake-quantized model (:mod:`speechnas.nn.quant`) is saved with its quantized weights under the
plain names and its bit widths in ``meta.json`` (``bits``); it loads quantized again.

A checkpoint is a folder: ``model.safetensors`` (weights), ``meta.json`` (everything needed to
rebuild the model and its input pipeline: model, feature and tokenizer config, the training
config, seed and versions) and, for resumable ones, ``state.pt`` (optimizer, scheduler, sampler,
counters) read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from speechnas.data.features import FeatureConfig
from speechnas.data.tokenizer import Tokenizer, tokenizer_from_dict
from speechnas.nn.build import SpeechModel, build
from speechnas.nn.legacy import convert_legacy_state, is_legacy_meta, legacy_arch
from speechnas.nn.quant import allocation_of, apply_bits, plain_state_dict
from speechnas.space.arch import Arch


def save_checkpoint(
    folder: Path,
    model: nn.Module,
    meta: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> None:
    """Writes atomically: a kill mid-save leaves the previous checkpoint intact."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().contiguous() for k, v in plain_state_dict(model).items()}
    bits = allocation_of(model)
    if bits:  # a fake-quantized model: its weights are stored quantized, with their widths
        meta = {**meta, "bits": bits}
    save_file(weights, str(tmp / "model.safetensors"))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    if state is not None:
        torch.save(state, tmp / "state.pt")
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)


@dataclass
class LoadedModel:
    model: SpeechModel
    tokenizer: Tokenizer
    features: FeatureConfig
    meta: dict[str, Any]


def load_model(folder: str | Path) -> LoadedModel:
    """Rebuilds the model of a checkpoint folder for inference (eval mode)."""
    folder = Path(folder)
    for name in ("model.safetensors", "meta.json"):
        if not (folder / name).is_file():
            raise ValueError(f"{folder} is not a speechnas checkpoint: {name} is missing")
    meta = json.loads((folder / "meta.json").read_text())
    tokenizer = tokenizer_from_dict(meta["tokenizer"])
    features = FeatureConfig(**meta["features"])
    weights = load_file(str(folder / "model.safetensors"))
    if is_legacy_meta(meta):  # written by the first Conformer-CTC implementation
        arch = legacy_arch(meta["model"], features, where=str(folder))
        weights = convert_legacy_state(weights)
        meta = {**meta, "arch": arch.to_json()}
    elif meta.get("arch") is None:
        raise ValueError(f"{folder}/meta.json: names no architecture (`arch`)")
    else:
        arch = Arch.from_json(meta["arch"])
    model = build(arch, vocab_size=tokenizer.vocab_size)
    model.load_state_dict(weights)
    if meta.get("bits"):  # quantized weights stay on their grid: quantizing again is exact
        apply_bits(model, meta["bits"])
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, features=features, meta=meta)


def load_supernet(folder: str | Path) -> LoadedModel:
    """Rebuilds the weight-sharing supernet a supernet training wrote (eval mode, the largest
    path active). :func:`load_model` on the same folder gives the largest path as a plain
    model."""
    from speechnas.nn.supernet import Supernet
    from speechnas.space import SearchSpace

    folder = Path(folder)
    plain = load_model(folder)
    spec = plain.meta.get("supernet")
    if spec is None:
        raise ValueError(f"{folder} is a plain model checkpoint, not a supernet")
    net = Supernet(
        SearchSpace.from_dict(spec["space"]),
        vocab_size=plain.tokenizer.vocab_size,
        dropout=float(plain.meta["config"]["model"]["dropout"]),
        random_subnets=int(spec["random_subnets"]),
        distill=float(spec["distill"]),
        path_draw=str(spec.get("path_draw", "architecture")),  # older supernets: architecture
        shrink=float(spec.get("shrink", 0.0)),
        shrink_order=str(spec.get("shrink_order", "together")),
    )
    net.load_state_dict(plain.model.state_dict())
    net.eval()
    return LoadedModel(
        model=net, tokenizer=plain.tokenizer, features=plain.features, meta=plain.meta
    )


def save_extracted(loaded: LoadedModel, arch: Any, folder: str | Path) -> Path:
    """Writes the path ``arch`` of a loaded supernet (:func:`load_supernet`) as a plain model
    checkpoint (for ``evaluate``, ``export``, fine-tuning with ``init_from``); returns it."""
    net = loaded.model
    model = net.extract(arch).eval()  # type: ignore[operator]
    meta = {**loaded.meta, "arch": model.arch.to_json(), "supernet": None, "step": 0}
    save_checkpoint(Path(folder), model, meta)
    return Path(folder)


def load_state(folder: Path) -> dict[str, Any]:
    return torch.load(Path(folder) / "state.pt", weights_only=True)
