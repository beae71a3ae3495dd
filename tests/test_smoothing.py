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


def test_lookahead_removes_the_lag_and_keeps_every_frame_in_order():
    """Offline (engine.smoothing.Lookahead): a ramp that the causal filter follows behind is followed
    without lag; noise is smoothed no less; frames the filter did not take (target None) and the columns not
    asked for keep the causal value exactly; every frame comes out once, in order, with its item."""
    from engine.smoothing import Lookahead
    rng = np.random.default_rng(0)
    t = np.arange(150) / 30.0
    ramp = np.clip((t - 1.0) * 0.3, 0.0, 0.6)
    x = np.stack([ramp, ramp + rng.normal(0, 0.02, t.shape)], axis=1)
    f = OneEuroFilter(min_cutoff=1.5, beta=5.0)
    ahead = Lookahead(f, columns=np.array([True, True]))
    shown, final = [], []
    for i, (xi, ti) in enumerate(zip(x, t)):
        target = None if i == 100 else xi      # one frame the filter did not take
        shown.append(f(xi, ti))
        final += ahead.push(ti, shown[-1], target, i)
    final += ahead.finish()
    assert [i for _, i in final] == list(range(len(t)))
    out, shown = np.stack([v for v, _ in final]), np.stack(shown)
    np.testing.assert_array_equal(out[100], shown[100])
    moving = (ramp > 0.05) & (ramp < 0.55) & (np.abs(np.arange(len(t)) - 100) > 20)
    lag_causal = np.abs(shown[moving, 0] - ramp[moving]).mean()
    lag_offline = np.abs(out[moving, 0] - ramp[moving]).mean()
    assert lag_causal > 0.005 and lag_offline < 0.25 * lag_causal, (lag_causal, lag_offline)
    still = t < 0.9
    assert np.diff(out[still, 1]).std() <= np.diff(shown[still, 1]).std()
    # the columns not asked for: the causal values; bounds hold
    ahead = Lookahead(f, columns=np.array([True, False]), lo=-1.0, hi=0.5)
    final = sum((ahead.push(ti, s, xi) for ti, s, xi in zip(t, shown, x)), []) + ahead.finish()
    out = np.stack([v for v, _ in final])
    np.testing.assert_array_equal(out[:, 1], shown[:, 1])
    assert out[:, 0].max() <= 0.5


def test_lookahead_in_steps_matches_a_backward_run_over_the_whole_sequence():
    """Half a second ahead is as good as the whole future: the backward run forgets faster than that."""
    from engine.smoothing import Lookahead
    rng = np.random.default_rng(1)
    t = np.arange(200) / 30.0
    x = np.cumsum(rng.normal(0, 0.03, (200, 3)), axis=0)
    f = OneEuroFilter(min_cutoff=1.5, beta=5.0)
    shown = np.stack([f(xi, ti) for xi, ti in zip(x, t)])
    runs = {}
    for seconds in (0.5, 100.0):
        ahead = Lookahead(f, seconds=seconds)
        final = sum((ahead.push(ti, s, xi) for ti, s, xi in zip(t, shown, x)), []) + ahead.finish()
        runs[seconds] = np.stack([v for v, _ in final])
    assert np.abs(runs[0.5] - runs[100.0]).max() < 0.01 * np.abs(x).max()
    assert np.abs(runs[0.5] - shown).max() > 0.01 * np.abs(x).max()   # it did something
