"""Training items for an acoustic model: phoneme ids, durations, log-mel targets and energies,
padded into batches of bounded size.

Shapes: B batch, N phonemes, T frames, M mel bins.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from speechnas.data.audio import read_audio
from speechnas.data.tts.corpus import TtsUtterance
from speechnas.data.tts.mel import MIN_MAGNITUDE, MelConfig, log_mel
from speechnas.data.tts.phonemes import PhonemeVocab

__all__ = ["TtsBatch", "TtsDataset", "collate_tts", "tts_batches"]

#: frames by which audio may differ from its durations' sum (resampling rounds lengths)
FRAME_SLACK = 2


class TtsDataset(torch.utils.data.Dataset):
    """Utterances as training items; the log-mel spectrogram is computed when an item is read.

    An item is a dict: ``phonemes`` LongTensor [N], ``durations`` LongTensor [N], ``mel``
    FloatTensor [T, M] with ``T == sum(durations)``, ``energy`` FloatTensor [N] (each phoneme's
    mean over its frames of the frame's mean log-mel; 0 for a phoneme of no frames), ``id`` and
    ``text``.
    """

    def __init__(
        self, utterances: Sequence[TtsUtterance], vocab: PhonemeVocab, mel_cfg: MelConfig
    ) -> None:
        self.utterances = list(utterances)
        self.vocab = vocab
        self.mel_cfg = mel_cfg
        self.frames = [u.frames for u in self.utterances]
        self._ids = []
        for u in self.utterances:
            try:
                self._ids.append(vocab.encode(u.phonemes))
            except ValueError as err:
                raise ValueError(f"utterance {u.id}: {err}") from None

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> dict[str, Any]:
        u = self.utterances[index]
        audio = read_audio(u.audio, sample_rate=self.mel_cfg.sample_rate)
        mel = log_mel(torch.from_numpy(audio), self.mel_cfg)  # (T', M)
        if abs(mel.shape[0] - u.frames) > FRAME_SLACK:
            raise ValueError(
                f"utterance {u.id}: {u.audio} has {mel.shape[0]} frames, its durations add up "
                f"to {u.frames}"
            )
        mel = mel[: u.frames]
        if mel.shape[0] < u.frames:  # a frame or two short: silence
            pad = mel.new_full((u.frames - mel.shape[0], mel.shape[1]), math.log(MIN_MAGNITUDE))
            mel = torch.cat([mel, pad])
        durations = torch.tensor(u.durations, dtype=torch.long)  # (N,)
        owner = torch.repeat_interleave(torch.arange(len(durations)), durations)  # (T,)
        sums = torch.zeros(len(durations)).index_add_(0, owner, mel.mean(dim=1))
        return {
            "phonemes": torch.tensor(self._ids[index], dtype=torch.long),
            "durations": durations,
            "mel": mel,
            "energy": sums / durations.clamp(min=1),
            "id": u.id,
            "text": u.text,
        }


@dataclass(frozen=True)
class TtsBatch:
    """Items padded with zeros: ``phonemes``, ``durations``, ``energy`` [B, N], ``mel``
    [B, T, M], their valid lengths ``phoneme_lengths`` and ``mel_lengths`` [B]."""

    phonemes: torch.Tensor
    phoneme_lengths: torch.Tensor
    durations: torch.Tensor
    mel: torch.Tensor
    mel_lengths: torch.Tensor
    energy: torch.Tensor
    ids: tuple[str, ...]
    texts: tuple[str, ...]

    def to(self, device: torch.device | str) -> TtsBatch:
        moved = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()
        }
        return TtsBatch(**moved)


def collate_tts(items: Sequence[dict[str, Any]]) -> TtsBatch:
    """Items of :class:`TtsDataset` as one zero-padded :class:`TtsBatch`."""

    def pad(key: str) -> torch.Tensor:
        return pad_sequence([it[key] for it in items], batch_first=True)

    return TtsBatch(
        phonemes=pad("phonemes"),
        phoneme_lengths=torch.tensor([len(it["phonemes"]) for it in items]),
        durations=pad("durations"),
        mel=pad("mel"),
        mel_lengths=torch.tensor([it["mel"].shape[0] for it in items]),
        energy=pad("energy"),
        ids=tuple(it["id"] for it in items),
        texts=tuple(it["text"] for it in items),
    )


def tts_batches(
    dataset: TtsDataset, *, max_frames: int, rng: random.Random, bucket_size: int = 256
) -> Iterator[list[int]]:
    """One epoch of batches (lists of item indices), each at most ``max_frames`` frames once
    padded (``len(batch) * longest``).

    The order is shuffled with ``rng`` and cut into buckets of ``bucket_size``; each bucket is
    sorted by length and packed greedily, so a batch holds utterances of similar lengths, and
    the batches are shuffled.
    """
    lengths = dataset.frames
    if lengths and max(lengths) > max_frames:
        i = max(range(len(lengths)), key=lengths.__getitem__)
        raise ValueError(
            f"max_frames: {max_frames} is below the longest utterance ({dataset.utterances[i].id}"
            f", {lengths[i]} frames); allowed: >= {lengths[i]}"
        )
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches: list[list[int]] = []
    for start in range(0, len(order), bucket_size):
        batch: list[int] = []
        longest = 0
        for i in sorted(order[start : start + bucket_size], key=lengths.__getitem__):
            if batch and max(longest, lengths[i]) * (len(batch) + 1) > max_frames:
                batches.append(batch)
                batch, longest = [], 0
            batch.append(i)
            longest = max(longest, lengths[i])
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return iter(batches)
