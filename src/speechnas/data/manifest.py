"""Loading corpora: NeMo-style JSONL manifests, Kaldi data directories and Lhotse CutSets.

The loaders check every entry and report *all* problems at once. By default they raise a single
:class:`ManifestError` listing each bad line as ``file:line: reason``; with ``skip_invalid=True``
they drop the bad entries, log a warning and return them in :attr:`LoadReport.skipped`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechnas.data.audio import AudioError, audio_info, check_span
from speechnas.data.utterance import Utterance

log = logging.getLogger(__name__)

AlphabetCheck = Callable[[str], bool]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a corpus: the file, the 1-based line (if any) and what is wrong."""

    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.message}"


class ManifestError(ValueError):
    """A manifest or data directory could not be loaded; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[Problem], *, source: str, header: str | None = None):
        self.problems: list[Problem] = list(problems)
        self.source = str(source)
        n = len(self.problems)
        header = header or f"{n} problem{'' if n == 1 else 's'} in manifest {self.source}"
        super().__init__(header + ":\n" + "\n".join(f"  {p}" for p in self.problems))


@dataclass(frozen=True)
class LoadReport:
    """What a loader produced: the usable utterances and the entries it dropped."""

    utterances: tuple[Utterance, ...]
    skipped: tuple[Problem, ...]


# --------------------------------------------------------------------------- shared helpers


def _fatal(source: str, message: str) -> ManifestError:
    return ManifestError([Problem(source, None, message)], source=source)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise _fatal(str(path), f"{what} {'is not a file' if path.exists() else 'not found'}")


def _lines(path: Path, problems: list[Problem]) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, stripped text)`` for the non-blank lines of a UTF-8 file."""
    try:
        with path.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
                except UnicodeDecodeError as err:
                    problems.append(Problem(str(path), lineno, f"not valid UTF-8 ({err.reason})"))
                    continue
                if line:
                    yield lineno, line
    except OSError as err:
        raise _fatal(str(path), f"cannot read file: {err}") from err


def _resolve(base: Path, audio: str) -> Path:
    """An absolute, normalised path; relative paths are taken relative to ``base``."""
    return Path(os.path.normpath(base.absolute() / Path(audio).expanduser()))


def _normalise_text(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def _text_problem(text: str, alphabet_check: AlphabetCheck | None) -> str | None:
    usable = alphabet_check(text) if alphabet_check else any(c.isalnum() for c in text)
    return None if usable else f"text {text!r} has no usable characters"


_Info = tuple[int, int, int] | str | None  # header, why the file is unusable, or not checked


def _audio_probe(check_audio: bool) -> Callable[[Path], _Info]:
    """A cached look-up of each audio file's header. Existence is checked even without headers."""

    @functools.cache
    def probe(path: Path) -> _Info:
        try:
            if not path.is_file():
                raise AudioError(f"{path}: audio file not found")
            return audio_info(path) if check_audio else None
        except AudioError as err:
            return str(err)

    return probe


def _span_problem(info: _Info, path: Path, offset: float, duration: float | None) -> str | None:
    if not isinstance(info, tuple):
        return info
    try:
        check_span(path, sample_rate=info[0], frames=info[1], offset=offset, duration=duration)
    except AudioError as err:
        return str(err)
    return None


_Found = tuple[str, int, Utterance]  # where an utterance was defined, and the utterance


def _finish(
    source: str, found: list[_Found], problems: list[Problem], *, skip_invalid: bool
) -> LoadReport:
    """Shared tail of every loader: duplicate ids, then raise or skip-and-warn."""
    first_seen: dict[str, tuple[str, int]] = {}
    utterances = []
    for src, line, utt in found:
        if utt.id in first_seen:
            prev = first_seen[utt.id]
            msg = f"duplicate utterance id {utt.id!r} (first at {prev[0]}:{prev[1]})"
            problems.append(Problem(src, line, msg))
        else:
            first_seen[utt.id] = (src, line)
            utterances.append(utt)
    problems.sort(key=lambda p: (p.source, p.line or 0))
    if problems and not skip_invalid:
        raise ManifestError(problems, source=source)
    if not utterances:
        problems.append(Problem(source, None, "no usable utterances"))
        raise ManifestError(problems, source=source, header=f"no usable utterances in {source}")
    if problems:
        listing = "\n".join(f"  {p}" for p in problems)
        log.warning("skipped %d invalid entries in %s:\n%s", len(problems), source, listing)
    return LoadReport(tuple(utterances), tuple(problems))


# --------------------------------------------------------------------------- JSONL


def _number(obj: dict[str, Any], key: str, errors: list[str], *, positive: bool) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        kind = "positive" if positive else "non-negative"
        errors.append(f"{key!r} must be a {kind} number, got {value!r}")
        return None
    return float(value)


def _label(obj: dict[str, Any], key: str, errors: list[str]) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors.append(f"{key!r} must be a string, got {value!r}")
        return None
    return str(value)


def _json_entry(
    line: str,
    base: Path,
    default_id: str,
    probe: Callable[[Path], _Info],
    alphabet_check: AlphabetCheck | None,
) -> Utterance | str:
    """Parse one manifest line into an Utterance, or return why it is unusable."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return f"malformed JSON: {err.msg} (column {err.colno})"
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    errors: list[str] = []
    missing = [k for k in ("audio_filepath", "duration", "text") if obj.get(k) is None]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        errors.append(f"missing required field{plural} " + ", ".join(map(repr, missing)))
    audio, text = obj.get("audio_filepath"), obj.get("text")
    if audio is not None and (not isinstance(audio, str) or not audio.strip()):
        errors.append(f"'audio_filepath' must be a non-empty string, got {audio!r}")
    if text is not None and not isinstance(text, str):
        errors.append(f"'text' must be a string, got {text!r}")
    duration = _number(obj, "duration", errors, positive=True)
    offset = _number(obj, "offset", errors, positive=False) or 0.0
    speaker, lang = _label(obj, "speaker", errors), _label(obj, "lang", errors)
    utt_id = _label(obj, "id", errors) or default_id
    if errors:
        return "; ".join(errors)
    path, text = _resolve(base, audio), _normalise_text(text)
    span = _span_problem(probe(path), path, offset, duration)
    errors = [e for e in (_text_problem(text, alphabet_check), span) if e]
    if errors:
        return "; ".join(errors)
    return Utterance(utt_id, path, text, duration, offset, speaker, lang)


def load_manifest(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    check_audio: bool = True,
    alphabet_check: AlphabetCheck | None = None,
) -> LoadReport:
    """Load a NeMo-style JSONL manifest (``audio_filepath``, ``duration``, ``text``, ...)."""
    path = Path(path)
    source = str(path)
    _require_file(path, "manifest file")
    probe = _audio_probe(check_audio)
    problems: list[Problem] = []
    found: list[_Found] = []
    for lineno, line in _lines(path, problems):
        got = _json_entry(line, path.parent, f"{path.stem}-{lineno:06d}", probe, alphabet_check)
        if isinstance(got, str):
            problems.append(Problem(source, lineno, got))
        else:
            found.append((source, lineno, got))
    return _finish(source, found, problems, skip_invalid=skip_invalid)


# --------------------------------------------------------------------------- Kaldi

KALDI_FILES = ("wav.scp", "text", "segments", "utt2spk")
_Table = dict[str, tuple[int, list[str]]]


def _read_table(
    path: Path, problems: list[Problem], fields: int, usage: str
) -> tuple[_Table, set[str]]:
    """Read a Kaldi ``key value...`` file into ``{key: (line, fields)}`` plus the keys of bad lines.

    With ``fields == 2`` the value is the rest of the line; otherwise the line must split into
    exactly ``fields`` whitespace-separated fields.
    """
    table: _Table = {}
    bad: set[str] = set()
    for lineno, line in _lines(path, problems):
        parts = line.split(maxsplit=1) if fields == 2 else line.split()
        if len(parts) != fields:
            problems.append(Problem(str(path), lineno, f"malformed line, expected '{usage}'"))
            bad.add(parts[0])
        elif parts[0] in table:
            first = table[parts[0]][0]
            msg = f"duplicate id {parts[0]!r} (first on line {first})"
            problems.append(Problem(str(path), lineno, msg))
        else:
            table[parts[0]] = (lineno, parts[1:])
    return table, bad


def _read_segments(
    path: Path, problems: list[Problem]
) -> tuple[dict[str, tuple[int, str, float, float]], set[str]]:
    table, bad = _read_table(path, problems, 4, "<utt-id> <recording-id> <start> <end>")
    segments = {}
    for uid, (lineno, (rec, start_s, end_s)) in table.items():
        try:
            start, end = float(start_s), float(end_s)
        except ValueError:
            message = f"start and end must be numbers, got {start_s!r} {end_s!r}"
        else:
            if start >= 0 and end > start and math.isfinite(end):
                segments[uid] = (lineno, rec, start, end)
                continue
            message = f"bad segment times: start {start:g}, end {end:g} (need 0 <= start < end)"
        problems.append(Problem(str(path), lineno, message))
        bad.add(uid)
    return segments, bad


def load_kaldi_dir(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    check_audio: bool = True,
    alphabet_check: AlphabetCheck | None = None,
) -> LoadReport:
    """Load a Kaldi data directory: ``wav.scp``, ``text``, optional ``utt2spk`` and ``segments``.

    ``wav.scp`` must hold plain file paths (relative ones are taken relative to the directory);
    with ``segments`` it is keyed by recording id and the segments give offset and duration.
    """
    root = Path(path)
    if not root.is_dir():
        raise _fatal(str(root), "Kaldi data directory not found")
    wav_file, text_file, seg_file, spk_file = (root / n for n in KALDI_FILES)
    _require_file(wav_file, "wav.scp")
    _require_file(text_file, "text")
    problems: list[Problem] = []
    wav, bad_wav = _read_table(wav_file, problems, 2, "<id> <audio path>")
    texts, bad_text = _read_table(text_file, problems, 2, "<utt-id> <transcription>")
    spk = _read_table(spk_file, problems, 2, "<utt-id> <speaker>")[0] if spk_file.exists() else {}
    segs, bad_segs = _read_segments(seg_file, problems) if seg_file.exists() else (None, set())
    for rec, (lineno, (value,)) in wav.items():
        if value.endswith("|"):
            msg = "commands in wav.scp are not supported; give file paths"
            problems.append(Problem(str(wav_file), lineno, msg))
            bad_wav.add(rec)

    probe = _audio_probe(check_audio)
    reported: set[str] = set()  # recordings whose file problem is already listed
    found: list[_Found] = []
    for uid, (lineno, (raw_text,)) in texts.items():
        if segs is None:
            rec, where, offset, duration = uid, (str(text_file), lineno), 0.0, None
        elif uid in bad_segs:
            continue  # the segments line is already reported
        elif uid not in segs:
            problems.append(Problem(str(text_file), lineno, f"utterance {uid!r} has no segment"))
            continue
        else:
            seg_line, rec, offset, end = segs[uid]
            where, duration = (str(seg_file), seg_line), end - offset
        if rec in bad_wav:
            continue  # the wav.scp line is already reported
        if rec not in wav:
            problems.append(Problem(*where, f"{rec!r} has no audio in wav.scp"))
            continue
        audio_path = _resolve(root, wav[rec][1][0])
        info = probe(audio_path)
        if isinstance(info, str):  # missing or unreadable: report once, on the wav.scp line
            if rec not in reported:
                reported.add(rec)
                problems.append(Problem(str(wav_file), wav[rec][0], info))
            continue
        text = _normalise_text(raw_text)
        text_msg = _text_problem(text, alphabet_check)
        span_msg = _span_problem(info, audio_path, offset, duration)
        if text_msg:
            problems.append(Problem(str(text_file), lineno, text_msg))
        if span_msg:
            problems.append(Problem(*where, span_msg))
        if not (text_msg or span_msg):
            if duration is None and info is not None:
                duration = info[1] / info[0]
            speaker = spk[uid][1][0] if uid in spk else None
            utt = Utterance(uid, audio_path, text, duration, offset, speaker)
            found.append((str(text_file), lineno, utt))

    # Audio that nobody transcribed.
    if segs is None:
        orphans = {k: v[0] for k, v in wav.items() if k not in bad_wav}
    else:
        orphans = {k: v[0] for k, v in segs.items()}
    orphan_file = str(wav_file if segs is None else seg_file)
    for key, lineno in orphans.items():
        if key not in texts and key not in bad_text:
            problems.append(Problem(orphan_file, lineno, f"{key!r} has audio but no text"))
    return _finish(str(root), found, problems, skip_invalid=skip_invalid)


# --------------------------------------------------------------------------- Lhotse

#: file names Lhotse writes a CutSet to (``cuts.jsonl.gz``, ``my_cuts_train.jsonl``, ...)
_LHOTSE_SUFFIXES = (".jsonl.gz", ".jsonl", ".json", ".json.gz")


def is_lhotse_cuts(path: Path) -> bool:
    """A Lhotse CutSet manifest: its first entry has a ``recording`` and a cut ``type``."""
    if not path.is_file() or not path.name.endswith(_LHOTSE_SUFFIXES):
        return False
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            first = json.loads(f.readline() or "null")
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(first, dict) and "recording" in first and "Cut" in str(first.get("type"))


def load_lhotse_cuts(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    check_audio: bool = True,
    alphabet_check: AlphabetCheck | None = None,
) -> LoadReport:
    """Load a Lhotse CutSet (read by ``lhotse`` itself): one utterance per cut, its text the
    supervisions' texts joined, its audio the recording's single file source from the cut's
    start for its duration (channels are mixed down when read)."""
    from lhotse import CutSet

    path = Path(path)
    source = str(path)
    _require_file(path, "CutSet manifest")
    probe = _audio_probe(check_audio)
    problems: list[Problem] = []
    found: list[_Found] = []
    for n, cut in enumerate(CutSet.from_file(path), start=1):
        got = _cut_entry(cut, path.parent, probe, alphabet_check)
        if isinstance(got, str):
            problems.append(Problem(source, n, f"cut {cut.id!r}: {got}"))
        else:
            found.append((source, n, got))
    return _finish(source, found, problems, skip_invalid=skip_invalid)


def _cut_entry(
    cut: Any, base: Path, probe: Callable[[Path], _Info], alphabet_check: AlphabetCheck | None
) -> Utterance | str:
    recording = getattr(cut, "recording", None)
    if recording is None:
        return "has no recording"
    sources = [s for s in recording.sources if s.type == "file"]
    if len(recording.sources) != 1 or not sources:
        kinds = [s.type for s in recording.sources]
        return f"expected one audio file source, got {kinds} (only type 'file' is read)"
    sups = list(cut.supervisions)
    text = _normalise_text(" ".join(s.text for s in sups if s.text))
    if not text:
        return "no supervision with a text"
    path = _resolve(base, sources[0].source)
    offset, duration = float(cut.start), float(cut.duration)
    errors = [
        e
        for e in (
            _text_problem(text, alphabet_check),
            _span_problem(probe(path), path, offset, duration),
        )
        if e
    ]
    if errors:
        return "; ".join(errors)
    speaker = next((s.speaker for s in sups if s.speaker), None)
    lang = next((s.language for s in sups if s.language), None)
    return Utterance(cut.id, path, text, duration, offset, speaker, lang)


# --------------------------------------------------------------------------- dispatch and writing


def load_corpus(path: str | Path, **kw: Any) -> LoadReport:
    """Load a Kaldi data directory (a folder with ``wav.scp``), a Lhotse CutSet manifest or a
    NeMo-style JSONL manifest file."""
    path = Path(path)
    if path.is_dir() and (path / "wav.scp").is_file():
        return load_kaldi_dir(path, **kw)
    if is_lhotse_cuts(path):
        return load_lhotse_cuts(path, **kw)
    if path.is_file():
        return load_manifest(path, **kw)
    raise _fatal(
        str(path),
        "not a corpus: expected a JSONL manifest file, a Lhotse CutSet (cuts.jsonl.gz) or a "
        "Kaldi data directory containing wav.scp"
        + ("" if path.exists() else " (path does not exist)"),
    )


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write a JSONL manifest; audio under the manifest's folder is stored as a relative path.

    Utterances without a duration get one from the audio file's header.
    """
    path = Path(path)
    folder = path.parent.absolute()
    lines = []
    for utt in utterances:
        audio = utt.audio_path.absolute()
        rel = audio.relative_to(folder) if audio.is_relative_to(folder) else audio
        duration = utt.duration
        if duration is None:
            sample_rate, frames, _ = audio_info(audio)
            duration = frames / sample_rate - utt.offset
        record = dict(audio_filepath=str(rel), duration=duration, text=utt.text)
        record.update((k, v) for k, v in utt.to_json().items() if k not in record)
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
