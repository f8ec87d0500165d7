import numpy as np
import pytest
import torch

from speechnas.data.features import (
    FeatureConfig,
    FeatureExtractor,
    SpecAugmentConfig,
    mel_matrix,
    spec_augment,
    speed_perturb,
)


def _sine(freq: float, seconds: float = 1.0, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return torch.sin(2 * torch.pi * freq * t)


def test_frame_count_and_shapes() -> None:
    cfg = FeatureConfig()
    feats, n = FeatureExtractor(cfg)(_sine(440.0)[None])
    assert feats.shape == (1, cfg.num_frames(16000), 80)
    assert int(n[0]) == feats.shape[1] == 1 + (16000 - 512) // 160
    mfcc, _ = FeatureExtractor(FeatureConfig(kind="mfcc", n_mfcc=13))(_sine(440.0)[None])
    assert mfcc.shape[-1] == 13


def test_sine_energy_lands_in_the_right_mel_band() -> None:
    cfg = FeatureConfig()
    feats, _ = FeatureExtractor(cfg)(_sine(1000.0)[None])
    band = int(feats[0].mean(0).argmax())
    centres = np.linspace(0, 8000, cfg.n_fft // 2 + 1) @ mel_matrix(cfg) / mel_matrix(cfg).sum(0)
    assert abs(centres[band] - 1000.0) < 60.0


def test_batched_equals_alone_for_padded_utterances() -> None:
    fx = FeatureExtractor(FeatureConfig())
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16000, generator=g), torch.randn(9000, generator=g)
    batch = torch.zeros(2, 16000)
    batch[0], batch[1, :9000] = a, b
    feats, n = fx(batch, torch.tensor([16000, 9000]))
    alone, _ = fx(b[None])
    assert int(n[1]) == alone.shape[1]
    torch.testing.assert_close(feats[1, : n[1]], alone[0])


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"features\.kind"):
        FeatureConfig(kind="spectrogram")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_mfcc"):
        FeatureConfig(kind="mfcc", n_mfcc=100, n_mels=40)


def test_speed_perturbation_changes_duration() -> None:
    x = _sine(300.0).numpy()
    assert abs(len(speed_perturb(x, 16000, 1.1)) - 16000 / 1.1) <= 2
    assert abs(len(speed_perturb(x, 16000, 0.9)) - 16000 / 0.9) <= 2


def test_spec_augment_masks_and_is_seeded() -> None:
    base = torch.randn(200, 80)
    a, b = base.clone(), base.clone()
    cfg = SpecAugmentConfig(freq_masks=2, freq_width=10, time_masks=2, time_width_ratio=0.1)
    spec_augment(a, cfg, np.random.default_rng(5))
    spec_augment(b, cfg, np.random.default_rng(5))
    torch.testing.assert_close(a, b)
    assert (a != base).any()


KNF80 = FeatureConfig(kind="knf", n_mels=80, f_min=20.0, f_max=-400.0)


def test_knf_features_are_kaldi_native_fbank_in_training_and_the_transcriber() -> None:
    import kaldi_native_fbank as knf

    from speechnas.export.features_np import compute_features

    opts = knf.FbankOptions()  # what sherpa-onnx sets for its offline recognisers
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = False
    opts.mel_opts.num_bins = 80
    opts.mel_opts.high_freq = -400.0
    g = torch.Generator().manual_seed(0)
    # Lengths around the reflected edges: shorter than the window, than the half window
    # before the first frame's centre, one sample, none.
    lengths = [16000, 9001, 15999, 400, 240, 121, 119, 81, 80, 1, 0]
    batch = torch.zeros(len(lengths), 16000)
    for row, n in enumerate(lengths):
        batch[row, :n] = 0.1 * torch.randn(n, generator=g)
    batch[1, 3000:5000] = 0.0  # digital silence: the energy floor
    feats, frames = FeatureExtractor(KNF80)(batch, torch.tensor(lengths))
    for row, n in enumerate(lengths):
        wave = batch[row, :n].numpy()
        fbank = knf.OnlineFbank(opts)
        fbank.accept_waveform(16000, wave)
        fbank.input_finished()
        ref = np.stack([fbank.get_frame(t) for t in range(fbank.num_frames_ready)] or [[0.0] * 80])
        ref = ref[: fbank.num_frames_ready]
        got, count = compute_features(wave, KNF80)
        assert count == KNF80.num_frames(n) == int(frames[row]) == len(ref), n
        np.testing.assert_array_equal(got, ref)  # the transcriber calls kaldi-native-fbank
        # Training computes the same in one batched program; float32 FFTs differ in rounding,
        # most in the lowest bins, where pre-emphasis leaves little energy (measured up to 1.1e-3)
        np.testing.assert_allclose(feats[row, :count].numpy(), ref, atol=5e-3, rtol=0)
        if count:
            assert np.abs(feats[row, :count].numpy() - ref).mean() < 1e-4
        assert not feats[row, count:].any()
    silent = feats[1, 20:30]  # frames wholly inside samples 3000-5000
    assert silent.numel() and (silent == np.log(np.finfo(np.float32).eps)).all()


def test_knf_frame_count_follows_kaldi_without_snipped_edges() -> None:
    import kaldi_native_fbank as knf

    opts = knf.FbankOptions()
    opts.frame_opts.snip_edges = False
    for samples in (0, 79, 80, 240, 399, 400, 16079, 16080):
        fbank = knf.OnlineFbank(opts)
        fbank.accept_waveform(16000, np.full(samples, 0.01, dtype=np.float32))
        fbank.input_finished()
        assert KNF80.num_frames(samples) == fbank.num_frames_ready, samples


def test_kaldi_offset_below_nyquist_only_for_knf() -> None:
    with pytest.raises(ValueError, match=r"features\.f_max"):
        FeatureConfig(kind="fbank", f_max=-400.0)
    assert KNF80.dim == 80
