"""Hypotheses for the report's error analysis and significance tests: the retrained selection
decoded on every test set, and each front member's checkpoint on the main test set.

A run stores metrics, not hypotheses, so they are decoded here (greedy, like the search scored
them) and cached in the report folder (``hyps/``), keyed by checkpoint and manifest, so
rendering the report again decodes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from speechnas.data.loading import load_utterances
from speechnas.data.utterance import Utterance
from speechnas.search.finished import Run
from speechnas.train.score import score_checkpoint

RETRAINED = "retrained"


@dataclass
class Decoded:
    """Per test set: its utterances and, per system (``retrained``, ``trial 12``...), the
    hypotheses in the utterances' order. ``notes`` say what could not be decoded and why."""

    utterances: dict[str, list[Utterance]] = field(default_factory=dict)
    hypotheses: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _checkpoint_tests(checkpoint: Path) -> dict[str, str]:
    meta = json.loads((checkpoint / "meta.json").read_text())
    return dict(((meta.get("config") or {}).get("data") or {}).get("test") or {})


def _resolve(manifest: str, run: Run) -> Path | None:
    """A manifest path as the search saw it: absolute, or relative to where it ran (the
    current folder, or a parent of the run folder)."""
    p = Path(manifest)
    if p.is_absolute():
        return p if p.exists() else None
    for root in (Path.cwd(), *run.folder.resolve().parents):
        if (root / p).exists():
            return root / p
    return None


def test_manifests(run: Run, checkpoint: Path, notes: list[str]) -> dict[str, Path]:
    """The test sets ``checkpoint`` was scored on, those whose manifest can be found."""
    out = {}
    for name, manifest in _checkpoint_tests(checkpoint).items():
        path = _resolve(manifest, run)
        if path is None:
            notes.append(
                f"test set {name!r}: manifest {manifest} (from {checkpoint / 'meta.json'}) not "
                "found; run the report from the folder the search ran in"
            )
        else:
            out[name] = path
    return out


def _decode_cached(checkpoint: Path, name: str, manifest: Path, cache: Path) -> list[str]:
    key = {"checkpoint": str(checkpoint.resolve()), "manifest": str(manifest.resolve()),
           "mtime": (checkpoint / "model.safetensors").stat().st_mtime}  # fmt: skip
    stem = checkpoint.resolve().parent.name
    path = cache / f"{stem}__{name}.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            return list(stored["hypotheses"])
    hyps = list(score_checkpoint(checkpoint, {name: manifest})[name].hypotheses)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": key, "hypotheses": hyps}))
    return hyps


def decode_run(
    run: Run,
    cache: Path,
    *,
    max_front: int = 6,
    log: Callable[[str], None] = lambda msg: None,
) -> Decoded:
    """Decodes the retrained selection (``RUN_DIR/retrained/best``) on its test sets and up to
    ``max_front`` front members' checkpoints on the first of them."""
    out = Decoded()
    best = run.folder / "retrained" / "best"
    if not (best / "meta.json").is_file():
        out.notes.append(f"{best} does not exist (the search did not retrain): no hypotheses")
        return out
    tests = test_manifests(run, best, out.notes)
    for name, manifest in tests.items():
        out.utterances[name] = load_utterances(manifest, skip_invalid=False)
        log(f"decoding the retrained model on {name}")
        out.hypotheses.setdefault(name, {})[RETRAINED] = _decode_cached(best, name, manifest, cache)
    if not tests:
        return out
    main, manifest = next(iter(tests.items()))
    for r in run.front[:max_front]:
        ckpt = Path(r.output_dir or "") / "best"
        if not (ckpt / "meta.json").is_file():
            out.notes.append(f"trial {r.trial}: checkpoint {ckpt} not found, not compared")
            continue
        log(f"decoding front member trial {r.trial} on {main}")
        out.hypotheses[main][f"trial {r.trial}"] = _decode_cached(ckpt, main, manifest, cache)
    if len(run.front) > max_front:
        out.notes.append(f"front members beyond the first {max_front} were not decoded")
    return out


__all__ = ["RETRAINED", "Decoded", "decode_run", "test_manifests"]
