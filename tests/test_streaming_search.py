"""Streaming in the search: objectives, constraints, the streaming space and config, the
per-chunk latency timed with real states, and a trial's streaming metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import TINY_ARCH

from speechnas.data.synth.corpus import CorpusInfo
from speechnas.export.streaming import export_streaming
from speechnas.hardware.stream import chunk_latency_of_file
from speechnas.nn.build import build
from speechnas.nn.spec import decode
from speechnas.search.config import (
    ConstraintsConfig,
    load_search_config,
    search_config_path,
)
from speechnas.search.feasibility import check_feasible
from speechnas.search.objectives import (
    ProxyLatency,
    check_objective,
    is_error_rate,
    objective_kind,
    predicted_metrics,
    violations,
)
from speechnas.search.trial import Fidelity, run_trial
from speechnas.space import Arch, load_space

STREAMING_TINY = Arch(
    {**TINY_ARCH, "streaming": True, "chunk_size": 4, "left_chunks": 2, "lookahead": 2}
)


def test_streaming_objectives_are_named_and_classified() -> None:
    for name in ("stream_dev_wer", "stream_wer:test", "chunk_latency", "emission_delay"):
        assert check_objective(name) == name
    assert objective_kind("stream_wer:test") == "error" and is_error_rate("stream_wer:test")
    assert objective_kind("stream_dev_wer") == "error" and is_error_rate("stream_dev_wer")
    assert objective_kind("chunk_latency") == "latency"
    assert objective_kind("algorithmic_latency") == "latency"
    with pytest.raises(ValueError, match="stream_wer:TESTSET"):
        check_objective("stream_wer")


def test_predicted_metrics_of_a_streaming_architecture() -> None:
    m = predicted_metrics(STREAMING_TINY, vocab_size=20, latency=ProxyLatency(), seconds=5.0)
    geo = decode(STREAMING_TINY).stream_geometry
    assert m["algorithmic_latency"] == geo.algorithmic_latency_ms
    assert m["lookahead_ms"] == 2 * 4 * 10
    assert 0 < m["chunk_latency"] < m["latency"] / 5  # one window, not five seconds
    plain = predicted_metrics(TINY_ARCH, vocab_size=20, latency=ProxyLatency(), seconds=5.0)
    assert "chunk_latency" not in plain
    bad = violations(m, {"max_lookahead_ms": 40.0, "max_chunk_latency_ms": 1e9}, predicted=True)
    assert bad == ["predicted look-ahead 80 ms > 40 ms"]


def test_the_streaming_search_config_and_space_load() -> None:
    cfg = load_search_config(search_config_path("streaming"))
    space = load_space(cfg.space)
    (seed,) = cfg.seed_archs(space)
    assert decode(seed).streaming and cfg.objectives == ("stream_dev_wer", "chunk_latency")
    check_feasible(cfg, space, latency=ProxyLatency())  # the limits can be met
    tight = cfg.replace(constraints=ConstraintsConfig(max_algorithmic_latency_ms=100.0))
    with pytest.raises(ValueError, match="max_algorithmic_latency_ms: 100 cannot be met"):
        check_feasible(tight, space, latency=ProxyLatency())


def test_chunk_latency_is_timed_chunk_by_chunk_with_states(tmp_path: Path) -> None:
    model = build(STREAMING_TINY, vocab_size=9).eval()
    path = export_streaming(model, tmp_path, check=False).path
    lat = chunk_latency_of_file(path, "cpu-ort-stream-1t", seconds=2.0)
    geo = model.stream_geometry()
    assert lat.chunks == math.ceil(200 / geo.hop)
    assert 0 < lat.p50_ms <= lat.p90_ms
    assert lat.rtf == pytest.approx(lat.mean_ms * lat.chunks / (lat.chunks * geo.chunk_ms))
    with pytest.raises(ValueError, match="onnxruntime targets"):
        chunk_latency_of_file(path, "cpu-torch-1t")


def test_a_streaming_trial_reports_streaming_metrics(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    from conftest import tiny_config

    base = tiny_config(tiny_corpus, tmp_path / "base")
    metrics = run_trial(
        STREAMING_TINY,
        base=base,
        fidelity=Fidelity(minutes=5.0, steps=30),
        output_dir=tmp_path / "trial",
        seed=0,
    )
    assert metrics["stream_dev_wer"] == metrics["dev_wer"]
    assert metrics["stream_wer:test"] == metrics["wer:test"]
    assert "emission_delay" in metrics  # nan when no token was emitted: an untrained model
