"""Tokenizers: characters, or SentencePiece BPE. Id 0 is always the CTC blank."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from typing import Any, Protocol

import sentencepiece as spm

BLANK = 0


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...


class CharTokenizer:
    """One token per character; the space is a token. Unknown characters are dropped."""

    def __init__(self, symbols: Iterable[str]) -> None:
        self.symbols: list[str] = ["<blank>", *symbols]
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self.vocab_size = len(self.symbols)

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        chars = sorted({c for t in texts for c in t})
        if not chars:
            raise ValueError("cannot build a character tokenizer from empty texts")
        return cls(chars)

    def encode(self, text: str) -> list[int]:
        return [self._index[c] for c in text if c in self._index]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.symbols[i] for i in ids if i != BLANK).strip()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "char", "symbols": self.symbols[1:]}


class BPETokenizer:
    """SentencePiece BPE; its ids are shifted by one so that 0 stays the blank."""

    def __init__(self, model_proto: bytes) -> None:
        self._proto = model_proto
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self._sp.get_piece_size() + 1

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int = 128) -> BPETokenizer:
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(texts)),
            model_writer=buf,
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=1.0,
            bos_id=-1,
            eos_id=-1,
            unk_id=0,
            num_threads=1,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        return cls(buf.getvalue())

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self._sp.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([i - 1 for i in ids if i != BLANK]).strip()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "bpe", "model": base64.b64encode(self._proto).decode()}


def build_tokenizer(kind: str, texts: Iterable[str], *, vocab_size: int = 128) -> Tokenizer:
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size=vocab_size)
    raise ValueError(f"tokenizer.kind: {kind!r} is not one of 'char', 'bpe'")


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    if d.get("kind") == "char":
        return CharTokenizer(d["symbols"])
    if d.get("kind") == "bpe":
        return BPETokenizer(base64.b64decode(d["model"]))
    raise ValueError(f"tokenizer: unknown kind {d.get('kind')!r}; expected 'char' or 'bpe'")
