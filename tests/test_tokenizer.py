import pytest

from speechnas.data.tokenizer import (
    BLANK,
    BPETokenizer,
    CharTokenizer,
    build_tokenizer,
    tokenizer_from_dict,
)

TEXTS = ["one two three", "four five six seven", "eight nine oh zero", "two two five"] * 20


def test_char_round_trip_and_blank() -> None:
    tok = CharTokenizer.train(TEXTS)
    ids = tok.encode("nine oh")
    assert BLANK not in ids and tok.decode(ids) == "nine oh"
    assert tok.encode("niñe") == tok.encode("nie")  # unknown characters are dropped
    again = tokenizer_from_dict(tok.to_dict())
    assert again.encode("two five") == tok.encode("two five")


def test_bpe_round_trip_and_serialisation() -> None:
    tok = build_tokenizer("bpe", TEXTS, vocab_size=30)
    assert isinstance(tok, BPETokenizer)
    ids = tok.encode("four five six")
    assert min(ids) >= 1 and tok.decode(ids) == "four five six"
    assert len(ids) < len("four five six")
    assert tokenizer_from_dict(tok.to_dict()).encode("four five six") == ids


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match=r"tokenizer\.kind"):
        build_tokenizer("wordpiece", TEXTS)
