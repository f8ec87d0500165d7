import numpy as np

from speechnas.data.sampler import DurationBatchSampler

DUR = np.random.default_rng(0).uniform(0.5, 6.0, size=300).tolist()


def test_batches_cover_each_index_once_and_respect_the_budget() -> None:
    s = DurationBatchSampler(DUR, max_seconds=30.0, seed=1, bucket_size=64)
    batches = list(s)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(DUR)))
    for b in batches:
        assert len(b) == 1 or max(DUR[i] for i in b) * len(b) <= 30.0
    assert s.epoch == 1


def test_order_depends_on_seed_and_epoch_only() -> None:
    a = DurationBatchSampler(DUR, max_seconds=30.0, seed=1)
    b = DurationBatchSampler(DUR, max_seconds=30.0, seed=1)
    assert list(a) == list(b)
    assert list(a) != list(DurationBatchSampler(DUR, max_seconds=30.0, seed=1))  # epoch 1 ≠ 0
    assert list(DurationBatchSampler(DUR, max_seconds=30.0, seed=2)) != list(
        DurationBatchSampler(DUR, max_seconds=30.0, seed=1)
    )


def test_resume_mid_epoch_continues_exactly() -> None:
    full = DurationBatchSampler(DUR, max_seconds=30.0, seed=4)
    expected = list(full) + list(full)
    s = DurationBatchSampler(DUR, max_seconds=30.0, seed=4)
    it = iter(s)
    got = [next(it) for _ in range(7)]
    state = s.state_dict()
    resumed = DurationBatchSampler(DUR, max_seconds=30.0, seed=4)
    resumed.load_state_dict(state)
    got += list(resumed) + list(resumed)
    assert got == expected


def test_bucketing_keeps_padding_low() -> None:
    s = DurationBatchSampler(DUR, max_seconds=40.0, seed=0, bucket_size=300)
    waste = sum(max(DUR[i] for i in b) * len(b) - sum(DUR[i] for i in b) for b in s)
    assert waste / sum(DUR) < 0.1
