"""Shared fixtures: a tiny real synthetic corpus, a tiny model config and a PostgreSQL
server."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from speechnas.data.synth.corpus import CorpusConfig, CorpusInfo, build_corpus
from speechnas.nn.presets import preset
from speechnas.train.config import BudgetConfig, DataConfig, OptimConfig, TrainConfig

TINY_SIZES = {
    "train": 48, "dev": 12, "test": 12, "test-noisy": 8, "test-tel": 8, "test-unseen-engine": 8,
}  # fmt: skip
# The `small` preset's recipe at a size that trains in seconds.
TINY_ARCH = preset(
    "small", d_model=32, layers=1, heads=2, ffn_dim=64, conv_kernel=7, subsampling_channels=8
)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Latency calibration tables (``$XDG_CACHE_HOME/speechnas``) go to a folder of the test
    session, shared by its tests and their subprocesses: blocks timed by tests on a busy machine
    must not end up in the user's table, which later searches read."""
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusInfo:
    root = tmp_path_factory.mktemp("corpora")
    return build_corpus(
        CorpusConfig(sizes=TINY_SIZES, babble_pool=6), root, workers=1, show_progress=False
    )


def tiny_config(corpus: CorpusInfo, out: Path, **budget: object) -> TrainConfig:
    m = corpus.manifests
    return TrainConfig(
        seed=3,
        threads=1,
        output_dir=str(out),
        data=DataConfig(train=str(m["train"]), dev=str(m["dev"]), test={"test": str(m["test"])}),
        arch=TINY_ARCH.to_json(),
        optim=OptimConfig(lr=3e-3, warmup_steps=5, max_batch_seconds=30.0),
        budget=BudgetConfig(**{"max_epochs": 2, "patience": None, **budget}),  # type: ignore[arg-type]
    )


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The SQLAlchemy URL of a PostgreSQL server: ``SPEECHNAS_TEST_POSTGRES_URL`` when set (a
    role that may create databases), else a server started for the session by
    ``scripts/pg.sh``; skipped only when the PostgreSQL binaries are missing."""
    given = os.environ.get("SPEECHNAS_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    script = str(REPO / "scripts" / "pg.sh")
    folder = str(tmp_path_factory.mktemp("postgres"))
    run = subprocess.run(["bash", script, "start", folder], capture_output=True, text=True)
    if run.returncode == 3:
        pytest.skip(f"no PostgreSQL server to test on: {run.stderr.strip()}")
    if run.returncode != 0:
        raise RuntimeError(f"scripts/pg.sh could not start PostgreSQL:\n{run.stderr}")
    try:
        yield run.stdout.strip()
    finally:
        subprocess.run(["bash", script, "stop", folder], check=False)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """The URL of a new, empty database on :func:`postgres_server`."""
    import sqlalchemy

    name = f"speechnas_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    url = sqlalchemy.engine.make_url(postgres_server).set(database=name)
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def tiny_judge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported, untrained tiny ASR model whose blank is made less likely so that it emits
    text: a judge of synthesized speech for the TTS tests (its transcripts are noise)."""
    import torch

    from speechnas.data.tokenizer import CharTokenizer
    from speechnas.export.onnx import export_model
    from speechnas.nn.build import build

    torch.manual_seed(0)
    tokenizer = CharTokenizer("abcdefghijklmnopqrstuvwxyz' ")
    model = build(TINY_ARCH, vocab_size=tokenizer.vocab_size, dropout=0.0).eval()
    with torch.no_grad():
        model.decoder.proj.bias[0] -= 3.0
    out = tmp_path_factory.mktemp("judge")
    export_model(model, out, tokenizer=tokenizer, check=False)
    return out
