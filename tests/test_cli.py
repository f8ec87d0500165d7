"""The `speechnas` command end to end on the tiny corpus."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import tiny_config
from typer.testing import CliRunner

from speechnas.cli import app
from speechnas.data.synth.corpus import CorpusInfo

runner = CliRunner()


def _bad_train_manifest(corpus: CorpusInfo, tmp_path: Path) -> Path:
    """The tiny train manifest plus a missing file, a corrupt file and a malformed line."""
    good = corpus.manifests["train"].read_text().splitlines()
    rows = [json.loads(line) for line in good]
    for r in rows:
        r["audio_filepath"] = str(corpus.folder / r["audio_filepath"])
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + bytes(range(256)) * 4)
    lines = [json.dumps(r) for r in rows[:20]]
    lines.append(json.dumps({"audio_filepath": "gone.flac", "duration": 1.0, "text": "one"}))
    lines.append(json.dumps({"audio_filepath": str(corrupt), "duration": 1.0, "text": "two"}))
    lines.append('{"audio_filepath": "x.flac", "duration": 1.0, "text": "three"')
    lines += [json.dumps(r) for r in rows[20:]]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_config(corpus: CorpusInfo, tmp_path: Path, train: Path) -> Path:
    cfg = tiny_config(corpus, tmp_path / "run", max_epochs=1).to_dict()
    cfg["data"]["train"] = str(train)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(cfg))))
    return path


def test_bad_manifest_names_every_problem_then_skip_goes_on(
    tiny_corpus: CorpusInfo, tmp_path: Path
) -> None:
    bad = _bad_train_manifest(tiny_corpus, tmp_path)
    cfg = _write_config(tiny_corpus, tmp_path, bad)
    out = runner.invoke(app, ["train", "--config", str(cfg)])
    assert out.exit_code == 2
    text = " ".join(out.output.split())
    assert "3 problems" in text
    for line in (21, 22, 23):
        assert f"bad.jsonl:{line}:" in text
    assert not (tmp_path / "run" / "last").exists()  # stopped before training

    out = runner.invoke(app, ["train", "--config", str(cfg), "--skip-invalid"])
    assert out.exit_code == 0, out.output
    assert "skipped 3 invalid entries" in out.output
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert len(saved["skipped"][str(bad)]) == 3


def test_evaluate_gives_one_row_per_manifest(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    cfg = _write_config(tiny_corpus, tmp_path, tiny_corpus.manifests["train"])
    assert runner.invoke(app, ["train", "--config", str(cfg)]).exit_code == 0
    m = tiny_corpus.manifests
    out = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint", str(tmp_path / "run" / "best"),
            "--manifest", str(m["test"]),
            "--manifest", str(m["test-tel"]),
            "--json", str(tmp_path / "eval.json"),
        ],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    rows = json.loads((tmp_path / "eval.json").read_text())
    assert list(rows) == [str(m["test"]), str(m["test-tel"])]
    assert rows[str(m["test"])]["utterances"] == 12 and rows[str(m["test-tel"])]["utterances"] == 8
    assert "WER %" in out.output
    # a model compared with itself: the same WER, no difference, p = 1 by both tests
    best = str(tmp_path / "run" / "best")
    cmp = runner.invoke(
        app, ["compare", best, best, "--manifest", str(m["test"]), "--samples", "200",
              "--json", str(tmp_path / "cmp.json")],
    )  # fmt: skip
    assert cmp.exit_code == 0, cmp.output
    same = json.loads((tmp_path / "cmp.json").read_text())[str(m["test"])]
    assert same["wer_a"] == same["wer_b"] == rows[str(m["test"])]["wer"]
    assert same["delta"] == 0 and same["p_mapsswe"] == 1.0 and same["p_bootstrap"] == 1.0
    assert "p MAPSSWE" in cmp.output


def test_evaluate_rejects_a_folder_that_is_no_checkpoint(tmp_path: Path) -> None:
    out = runner.invoke(app, ["evaluate", "--checkpoint", str(tmp_path), "--manifest", "x.jsonl"])
    assert out.exit_code == 2 and "not a speechnas checkpoint" in out.output


def test_bad_config_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim: {learning_rate: 0.1}\n")
    out = runner.invoke(app, ["train", "--config", str(cfg)])
    assert out.exit_code == 2
    assert "optim: unknown key(s) ['learning_rate']" in " ".join(out.output.split())


def test_space_count_and_show() -> None:
    out = runner.invoke(app, ["space", "count", "--space", "conformer-ctc"])
    assert out.exit_code == 0 and out.output.strip() == "12913992"
    out = runner.invoke(app, ["space", "show", "--space", "speech-all"])
    assert out.exit_code == 0
    assert "4,891,516,529,923,268,745,531,532,200 architectures" in out.output
    for choice in ("attention_window", "chunk_size", "lstm_hidden", "pred_dim", "ctc_weight"):
        assert choice in out.output
    bad = runner.invoke(app, ["space", "count", "--space", "nope"])
    assert bad.exit_code == 2 and "conformer-ctc" in bad.output
