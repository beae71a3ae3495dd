import numpy as np
import pytest

from engine.smoothing import OneEuroFilter, smooth_sequence


def test_constant_signal_passes_unchanged():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.1)
    x = np.array([[1.0, -2.0], [3.0, 0.5]])
    for i in range(20):
        y = f(x, i / 30)
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x)


def test_noise_is_reduced_and_fast_motion_follows():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 30.0
    clean = np.zeros((300, 4))
    noisy = clean + rng.normal(0, 1.0, clean.shape)
    out = smooth_sequence(noisy, t, min_cutoff=1.0, beta=0.0)
    assert out[30:].std() < 0.45 * noisy[30:].std()
    # A ramp: with a large beta the lag stays small, with beta=0 it is larger.
    ramp = (t * 10.0)[:, None]
    lag_fast = np.abs(smooth_sequence(ramp, t, min_cutoff=1.0, beta=1.0) - ramp)[60:].mean()
    lag_slow = np.abs(smooth_sequence(ramp, t, min_cutoff=1.0, beta=0.0) - ramp)[60:].mean()
    assert lag_fast < 0.5 * lag_slow


def test_timestamps_optional_and_reset():
    f = OneEuroFilter(freq=25.0)
    a = f(np.zeros(3))
    b = f(np.ones(3))
    assert np.all(b > a) and np.all(b < 1)
    f.reset()
    np.testing.assert_allclose(f(np.full(3, 5.0)), 5.0)
    # repeated timestamps do not divide by zero
    f(np.full(3, 5.0), 1.0)
    assert np.all(np.isfinite(f(np.full(3, 6.0), 1.0)))


def test_bad_inputs():
    with pytest.raises(ValueError):
        OneEuroFilter(min_cutoff=0)
    with pytest.raises(ValueError):
        OneEuroFilter(beta=-1)
    f = OneEuroFilter()
    f(np.zeros(2))
    with pytest.raises(ValueError, match="shape"):
        f(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        f(np.array([np.nan, 0.0]))


def test_group_filter_smooths_each_group_with_its_own_setting():
    """Speech follows fast motion more closely than expression; a still signal stays still in both."""
    from engine.smoothing import PARAM_SMOOTHING, group_filter
    t = np.arange(90) / 30.0
    # syllable-rate motion, small enough that the groups' cut-offs, not their speed gains, decide (both groups
    # follow a wide fast motion closely: 0.84 and 0.88 of a 0.1 wave)
    wave = 0.05 * np.sin(2 * np.pi * 5.0 * t)
    f = group_filter({"exp": 1, "speech": 1, "pose": 1}, freq=30.0)
    out = np.stack([f(np.array([w, w, 0.0]), ti) for w, ti in zip(wave, t)])
    amp = out[30:].std(0) / wave[30:].std()
    assert PARAM_SMOOTHING["speech"][0] > PARAM_SMOOTHING["exp"][0]
    assert amp[1] > amp[0] + 0.05, amp
    assert np.all(out[:, 2] == 0.0)
