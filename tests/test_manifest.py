"""Tests for speechnas.data.manifest on real manifests, data dirs and audio files."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechnas.data.manifest import (
    LoadReport,
    ManifestError,
    Problem,
    load_corpus,
    load_kaldi_dir,
    load_manifest,
    write_manifest,
)
from speechnas.data.synth.corpus import CorpusInfo
from speechnas.data.utterance import Utterance

SR = 16000


def make_audio(path: Path, seconds: float = 1.0, sr: int = SR, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = 0.1 * np.random.default_rng(0).standard_normal((round(seconds * sr), channels))
    sf.write(path, x.astype(np.float32), sr)
    return path


def entry(audio: str, text: str = "hello world", duration: float = 1.0, **kw: object) -> str:
    return json.dumps({"audio_filepath": audio, "duration": duration, "text": text, **kw})


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_kaldi(root: Path, **files: list[str]) -> Path:
    for name, lines in files.items():
        write_lines(root / name.replace("wav_scp", "wav.scp"), lines)
    return root


# --------------------------------------------------------------------------- JSONL


def test_loads_valid_manifest(tmp_path: Path) -> None:
    make_audio(tmp_path / "audio" / "a.wav")
    make_audio(tmp_path / "audio" / "b.flac", seconds=2.0, sr=8000, channels=2)
    manifest = write_lines(
        tmp_path / "train.jsonl",
        [
            entry("audio/a.wav", "  Hello   world "),
            "",
            entry(
                str(tmp_path / "audio" / "b.flac"),
                "zweite",
                duration=1.0,
                offset=0.5,
                speaker=7,
                lang="de",
                id="b",
            ),
        ],
    )
    report = load_manifest(manifest)
    assert isinstance(report, LoadReport) and report.skipped == ()
    a, b = report.utterances
    assert a == Utterance(
        "train-000001", (tmp_path / "audio" / "a.wav").absolute(), "Hello world", 1.0
    )
    assert a.audio_path.is_absolute()
    assert b == Utterance("b", tmp_path / "audio" / "b.flac", "zweite", 1.0, 0.5, "7", "de")


def test_key_all_problems_in_one_error_and_skip_mode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_audio(tmp_path / "good1.wav")
    make_audio(tmp_path / "good2.wav")
    (tmp_path / "corrupt.flac").write_bytes(np.random.default_rng(1).bytes(2048))
    manifest = write_lines(
        tmp_path / "m.jsonl",
        [
            entry("good1.wav"),
            entry("missing.wav"),
            entry("corrupt.flac"),
            '{"audio_filepath": "good2.wav", "duration": 1.0,',
            entry("good2.wav"),
        ],
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    err = info.value
    message = str(err)
    assert message.startswith(f"3 problems in manifest {manifest}:")
    assert f"{manifest}:2:" in message and "missing.wav" in message and "not found" in message
    assert f"{manifest}:3:" in message and "corrupt.flac" in message
    assert f"{manifest}:4:" in message and "malformed JSON" in message
    assert [p.line for p in err.problems] == [2, 3, 4]
    assert isinstance(err, ValueError)

    with caplog.at_level(logging.WARNING, logger="speechnas.data.manifest"):
        report = load_manifest(manifest, skip_invalid=True)
    assert [u.audio_path.name for u in report.utterances] == ["good1.wav", "good2.wav"]
    assert len(report.skipped) == 3
    assert all(isinstance(p, Problem) and p.source == str(manifest) for p in report.skipped)
    assert "skipped 3" in caplog.text and f"{manifest}:3:" in caplog.text


def test_problem_str() -> None:
    assert str(Problem("x.jsonl", 4, "bad")) == "x.jsonl:4: bad"
    assert str(Problem("x.jsonl", None, "bad")) == "x.jsonl: bad"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"audio_filepath": "a.wav", "duration": 1.0}', "missing required field 'text'"),
        ("[1, 2]", "expected a JSON object"),
        (
            '{"audio_filepath": "a.wav", "duration": -1, "text": "hi"}',
            "'duration' must be a positive",
        ),
        (
            '{"audio_filepath": "a.wav", "duration": "1", "text": "hi"}',
            "'duration' must be a positive",
        ),
        ('{"audio_filepath": "a.wav", "duration": 1, "text": 5}', "'text' must be a string"),
        (entry("a.wav", "?! ... --"), "no usable characters"),
        (entry("a.wav", duration=3.0), "truncated"),
        (entry("a.wav", duration=0.5, offset=1.5), "beyond the end"),
        (entry("empty.wav"), "empty"),
    ],
)
def test_single_line_problems(tmp_path: Path, line: str, expected: str) -> None:
    make_audio(tmp_path / "a.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    manifest = write_lines(tmp_path / "m.jsonl", [entry("a.wav"), line])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert (problem.source, problem.line) == (str(manifest), 2)
    assert expected in problem.message


def test_small_duration_overrun_is_tolerated(tmp_path: Path) -> None:
    make_audio(tmp_path / "a.wav")
    manifest = write_lines(tmp_path / "m.jsonl", [entry("a.wav", duration=1.03)])
    assert load_manifest(manifest).utterances[0].duration == 1.03


def test_alphabet_check_overrides_default(tmp_path: Path) -> None:
    make_audio(tmp_path / "a.wav")
    manifest = write_lines(tmp_path / "m.jsonl", [entry("a.wav", "abc"), entry("a.wav", "123")])
    report = load_manifest(manifest, skip_invalid=True, alphabet_check=lambda t: t.isalpha())
    assert [u.text for u in report.utterances] == ["abc"]
    assert report.skipped[0].line == 2


def test_check_audio_off_skips_headers_but_not_existence(tmp_path: Path) -> None:
    (tmp_path / "corrupt.flac").write_bytes(b"not audio at all")
    manifest = write_lines(
        tmp_path / "m.jsonl", [entry("corrupt.flac", duration=9.0), entry("missing.wav")]
    )
    report = load_manifest(manifest, check_audio=False, skip_invalid=True)
    assert [u.audio_path.name for u in report.utterances] == ["corrupt.flac"]
    assert "not found" in report.skipped[0].message


def test_duplicate_ids(tmp_path: Path) -> None:
    make_audio(tmp_path / "a.wav")
    manifest = write_lines(tmp_path / "m.jsonl", [entry("a.wav", id="x"), entry("a.wav", id="x")])
    with pytest.raises(ManifestError, match=r"m\.jsonl:2: duplicate utterance id 'x'"):
        load_manifest(manifest)


def test_missing_manifest_and_nothing_usable(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"nope\.jsonl: manifest file not found"):
        load_manifest(tmp_path / "nope.jsonl")
    manifest = write_lines(tmp_path / "m.jsonl", ["{oops", entry("missing.wav")])
    with pytest.raises(ManifestError, match="no usable utterances") as info:
        load_manifest(manifest, skip_invalid=True)
    assert len(info.value.problems) == 3
    write_lines(tmp_path / "blank.jsonl", ["", "  "])
    with pytest.raises(ManifestError, match="no usable utterances"):
        load_manifest(tmp_path / "blank.jsonl")


def test_write_manifest_round_trip(tmp_path: Path) -> None:
    inside = make_audio(tmp_path / "out" / "wav" / "a.wav")
    outside = make_audio(tmp_path / "elsewhere" / "b.wav", seconds=0.5)
    utts = [
        Utterance("a", inside, "one", 1.0, speaker="s1", lang="en"),
        Utterance("b", outside, "two", None, offset=0.25),
    ]
    manifest = tmp_path / "out" / "train.jsonl"
    write_manifest(manifest, utts)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert rows[0]["audio_filepath"] == "wav/a.wav"
    assert rows[1]["audio_filepath"] == str(outside)
    assert rows[1]["duration"] == pytest.approx(0.25)
    loaded = load_manifest(manifest).utterances
    assert loaded[0] == utts[0]
    assert loaded[1].duration == pytest.approx(0.25) and loaded[1].offset == 0.25


# --------------------------------------------------------------------------- Kaldi


def test_kaldi_plain(tmp_path: Path) -> None:
    make_audio(tmp_path / "wavs" / "u1.wav")
    make_audio(tmp_path / "wavs" / "u2.flac", seconds=0.5)
    root = write_kaldi(
        tmp_path / "data" / "train",
        wav_scp=["u1 ../../wavs/u1.wav", f"u2 {tmp_path / 'wavs' / 'u2.flac'}"],
        text=["u1 HELLO THERE", "u2 GOOD  BYE"],
    )
    report = load_kaldi_dir(root)
    u1, u2 = report.utterances
    assert u1 == Utterance("u1", tmp_path / "wavs" / "u1.wav", "HELLO THERE", 1.0)
    assert (u2.text, u2.duration, u2.speaker) == ("GOOD BYE", 0.5, None)
    assert load_corpus(root) == report


def test_kaldi_segments_and_utt2spk(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_audio(root / "rec1.wav", seconds=3.0)
    write_kaldi(
        root,
        wav_scp=["rec1 rec1.wav"],
        segments=["spk1-a rec1 0.0 1.5", "spk2-b rec1 1.5 3.0"],
        text=["spk1-a first part", "spk2-b second part"],
        utt2spk=["spk1-a spk1", "spk2-b spk2"],
    )
    a, b = load_kaldi_dir(root).utterances
    assert a == Utterance("spk1-a", root / "rec1.wav", "first part", 1.5, 0.0, "spk1")
    assert (b.offset, b.duration, b.speaker) == (1.5, 1.5, "spk2")


def test_kaldi_segment_problems(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_audio(root / "rec1.wav", seconds=3.0)
    write_kaldi(
        root,
        wav_scp=["rec1 rec1.wav"],
        segments=["a rec1 0.0 1.0", "b rec1 2.0 1.0", "c rec1 2.0 9.0", "d rec9 0 1", "e rec1 0 1"],
        text=["a ok", "b ok", "c ok", "d ok"],
    )
    with pytest.raises(ManifestError) as info:
        load_kaldi_dir(root)
    seg = str(root / "segments")
    got = {(p.source, p.line): p.message for p in info.value.problems}
    assert set(got) == {(seg, 2), (seg, 3), (seg, 4), (seg, 5)}
    assert "start < end" in got[seg, 2]
    assert "truncated" in got[seg, 3]
    assert "'rec9' has no audio" in got[seg, 4]
    assert "'e' has audio but no text" in got[seg, 5]


def test_kaldi_pipe_command_and_mismatched_ids(tmp_path: Path) -> None:
    root = tmp_path / "data" / "train"
    make_audio(root / "u1.wav")
    make_audio(root / "u4.wav")
    write_kaldi(
        root,
        wav_scp=["u1 u1.wav", "u2 sox in.wav -t wav - |", "u4 u4.wav"],
        text=["u1 hello", "u2 piped", "u3 no audio here"],
    )
    with pytest.raises(ManifestError) as info:
        load_kaldi_dir(root)
    message = str(info.value)
    assert message.startswith(f"3 problems in manifest {root}:")
    assert f"{root / 'wav.scp'}:2: commands in wav.scp are not supported" in message
    assert f"{root / 'text'}:3: 'u3' has no audio in wav.scp" in message
    assert f"{root / 'wav.scp'}:3: 'u4' has audio but no text" in message

    report = load_kaldi_dir(root, skip_invalid=True)
    assert [u.id for u in report.utterances] == ["u1"]
    assert len(report.skipped) == 3


def test_kaldi_bad_audio_and_malformed_lines(tmp_path: Path) -> None:
    root = tmp_path / "d"
    make_audio(root / "ok.wav")
    (root / "bad.wav").write_bytes(b"RIFF garbage")
    write_kaldi(
        root,
        wav_scp=["ok ok.wav", "bad bad.wav", "lonely"],
        text=["ok fine", "bad fine", "lonely"],
    )
    report = load_kaldi_dir(root, skip_invalid=True)
    assert [u.id for u in report.utterances] == ["ok"]
    assert [(Path(p.source).name, p.line) for p in report.skipped] == [
        ("text", 3),
        ("wav.scp", 2),
        ("wav.scp", 3),
    ]


def test_kaldi_missing_files_and_corpus_dispatch(tmp_path: Path) -> None:
    root = write_kaldi(tmp_path / "d", wav_scp=["u1 u1.wav"])
    with pytest.raises(ManifestError, match=r"d/text: text not found"):
        load_kaldi_dir(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match=r"a Lhotse CutSet .* or a Kaldi data"):
        load_corpus(tmp_path / "empty")
    with pytest.raises(ManifestError, match="does not exist"):
        load_corpus(tmp_path / "nowhere")
    make_audio(tmp_path / "a.wav")
    manifest = write_lines(tmp_path / "m.jsonl", [entry("a.wav")])
    assert load_corpus(manifest, check_audio=False).utterances[0].id == "m-000001"


def test_lhotse_cutset_is_read_by_lhotse(tiny_corpus: CorpusInfo, tmp_path: Path) -> None:
    """A CutSet written by Lhotse itself (cuts cut out of longer recordings, gzipped JSONL)."""
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    utts = load_manifest(tiny_corpus.manifests["test"]).utterances[:4]
    cuts = []
    for u in utts:
        rec = Recording.from_file(str(u.audio_path), recording_id=u.id)
        start, length = 0.1, rec.duration - 0.1  # a cut that starts inside its recording
        sup = SupervisionSegment(id=u.id, recording_id=u.id, start=0.0, duration=length,
                                 text=u.text.upper(), speaker="spk1", language="en")  # fmt: skip
        cuts.append(MonoCut(id=f"cut-{u.id}", start=start, duration=length, channel=0,
                            recording=rec, supervisions=[sup]))  # fmt: skip
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    got = load_corpus(path).utterances
    assert [g.id for g in got] == [f"cut-{u.id}" for u in utts]
    assert [g.text for g in got] == [u.text.upper() for u in utts]
    assert all(g.offset == 0.1 and g.speaker == "spk1" and g.lang == "en" for g in got)
    assert [g.audio_path for g in got] == [u.audio_path.absolute() for u in utts]
    # a cut past the end of its audio is reported with the file, the cut and the reason
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    entry = json.loads(lines[1])
    entry["duration"] = 60.0
    lines[1] = json.dumps(entry)
    broken = tmp_path / "broken_cuts.jsonl.gz"
    broken.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(ManifestError, match=r"broken_cuts.jsonl.gz:2: cut 'cut-"):
        load_corpus(broken)
