"""The per-chunk latency predictor: a streamed chunk as its shell and layer blocks, cut from the
real model, timed at their one shape on ONNX Runtime, and summed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_streaming import FAMILIES, _arch

from speechnas.hardware import LatencyPredictor
from speechnas.hardware.stream_blocks import decompose_stream, stream_block_module
from speechnas.nn.build import build
from speechnas.search.objectives import ProxyLatency, predicted_metrics


def _keys(arch: object) -> dict[str, int]:
    return {u.block.key: u.times for u in decompose_stream(arch, vocab_size=9)}


def test_a_chunk_is_its_shell_and_one_block_per_distinct_layer() -> None:
    arch = _arch("conformer-rel", layers=3)
    uses = decompose_stream(arch, vocab_size=9)
    kinds = [(u.block.kind, u.times) for u in uses]
    assert kinds == [("stream_shell", 1), ("stream_layer", 3)]  # three identical layers
    layer = dict(uses[1].block.params)
    assert (layer["chunk"], layer["cache"], layer["heads"]) == (4, 8, 4)  # 2 chunks cached
    # look-ahead is computed once, below the layers: only the shell's key depends on it
    ahead = _keys(_arch("conformer-rel", layers=3, lookahead=2))
    assert set(ahead) - set(_keys(arch)) == {k for k in ahead if k.startswith("stream_shell")}
    # a longer chunk changes every block
    assert not set(_keys(_arch("conformer-rel", layers=3, chunk_size=8))) & set(_keys(arch))
    # the LSTM streams as a whole: one block
    assert [u.block.kind for u in decompose_stream(_arch("lstm"), vocab_size=9)] == ["stream_shell"]
    with pytest.raises(ValueError, match="does not stream"):
        decompose_stream(_arch("lstm", streaming=False), vocab_size=9)


@pytest.mark.parametrize("family", ["conformer-rel", "transformer", "ebranchformer", "cnn-se"])
def test_a_layer_block_is_the_model_layer_with_full_caches(family: str) -> None:
    arch = _arch(family)
    use = decompose_stream(arch, vocab_size=9)[1]
    module, feeds, axes = stream_block_module(use.block)
    assert set(axes) == set(feeds) and all(a == {0: "batch"} for a in axes.values())
    torch.manual_seed(0)
    layer = build(arch, vocab_size=9).eval().encoder.stages[-1].layers[0]
    with torch.no_grad():
        y, *states = module(*feeds.values())
        want, want_states = layer.streaming_forward(
            feeds["x"], feeds["pad"], feeds["extra"], [v for k, v in feeds.items() if k[0] == "s"]
        )
    assert y.shape == want.shape == feeds["x"].shape
    assert len(states) == len(want_states) == len(layer.state_kinds)
    for s, w in zip(states, want_states, strict=True):
        assert s.shape == w.shape
    if family == "cnn-se":  # the stream's offset: past the cache of the steady state
        assert feeds["extra"].dtype == torch.long
    else:  # the mask over cache and chunk: the steady state sees every cached frame
        assert feeds["extra"].shape == (1, 4, 8 + 4) and bool(feeds["extra"][:, :, :8].all())


def test_chunk_predictions_reuse_blocks_and_price_every_layer(tmp_path: Path) -> None:
    predictor = LatencyPredictor.for_target("cpu-ort-1t", cache_dir=tmp_path, auto_extend=True)
    two = _arch("conformer-rel", layers=2)
    ms = predictor.predict_chunk(two, vocab_size=9)
    assert ms > 0 and predictor.cache_path is not None and predictor.cache_path.is_file()
    fits = {k: f for k, f in predictor.fits.items() if f.axis == "chunk"}
    # the shell, the layer and the layer's inputs and outputs alone; every fit is one shape
    assert sorted(k.split("(")[0] for k in fits) == ["stream_io", "stream_layer", "stream_shell"]
    assert all(len(f.lengths) == 1 and f.coef[1:] == (0.0, 0.0) for f in fits.values())
    # one more identical layer: nothing new to time, and never cheaper
    n = len(predictor.fits)
    assert predictor.predict_chunk(_arch("conformer-rel", layers=3), vocab_size=9) >= ms
    assert len(predictor.fits) == n
    # another look-ahead needs only its shell
    predictor.predict_chunk(_arch("conformer-rel", layers=2, lookahead=2), vocab_size=9)
    assert len(predictor.fits) == n + 1
    # the search's metric is this prediction for a calibrated predictor
    m = predicted_metrics(two, vocab_size=9, latency=predictor, seconds=5.0)
    assert m["chunk_latency"] == predictor.predict_chunk(two, vocab_size=9)
    proxy = predicted_metrics(two, vocab_size=9, latency=ProxyLatency(), seconds=5.0)
    assert proxy["chunk_latency"] > 0


@pytest.mark.parametrize("family", ["lstm", "transformer"])
def test_every_family_exports_and_times(family: str, tmp_path: Path) -> None:
    assert family in FAMILIES
    predictor = LatencyPredictor.for_target("cpu-ort-1t", cache_dir=tmp_path, auto_extend=True)
    assert predictor.predict_chunk(_arch(family), vocab_size=9) > 0
