"""One Euro filter (Casiez, Roussel and Vogel, CHI 2012) on numpy arrays of any shape.

A low-pass filter whose cut-off frequency rises with the signal's speed: still signals are smoothed
hard (little jitter), fast ones lightly (little lag). Every element of the array is filtered
independently with the same settings.

    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    for t, x in stream:            # t in seconds, x an array of a fixed shape
        y = f(x, t)                # same shape, float64

``min_cutoff`` (Hz): the cut-off when still; lower = smoother, more lag at slow motion.
``beta`` (per unit of the signal's speed): how fast the cut-off rises with speed; higher = less lag.
Both may be arrays that broadcast against the samples (a setting per element).

``PARAM_SMOOTHING``: the settings for parameters in [-1, 1] units, per group, used by tracks made from
video and by the live face driver alike. Speech moves fastest (syllables at 4-6 Hz: a cut-off of
1.5 Hz with little speed gain left the mouth at 0.82-0.84 of the driver's motion, correlation
0.86-0.88, on two held-out talking clips, tpsmm_driving and sadtalker_wda_aoc; 3 Hz 0.90-0.93 and
0.95-0.96; on d19, whose mouth hardly moves, 0.57 and 0.60 either way); its cut-off sits above the
syllables' band, 8 Hz (against 3 Hz, rendered by the default model on five training talking clips and
four training portraits: the mouth's correlation with the driver's 0.86 -> 0.88 on other portraits,
0.92 -> 0.94 self-driven). Blinks and syllables are quick: both groups' cut-offs rise fast with speed
(beta 20 against 5 before; the same training set: blinks 0.90 / 0.71 -> 0.93 / 0.75 self-driven and 0.92 /
0.78 -> 0.94 / 0.81 on other portraits, correlation / amplitude; mouths 1.025 -> 1.046 and 0.941 -> 0.963 of the
driver's motion; the self-driven results as near their real frames). And a still face stays still: three
training stills replayed with sensor noise (sigma 3) move a portrait's target mouth by 0.005-0.044 % of the
inter-ocular distance per frame (0.0045-0.042 % at beta 5, 0.001-0.03 % at 3 Hz), its eyes by 0.022-0.033 %
(0.013-0.021 %), a tenth of a pixel at 512 px.
The head's pose keeps a still head still (1.5 Hz) and lets a turn through (beta 5, against 0.5 before: a turn at
60 degrees a second lagged 3 degrees, now 1.2; the self-driven landmark error on five training clips 0.710 ->
0.698 px; a still replayed with sensor noise, three training portraits, moves 0.026 degrees a frame in yaw,
0.023 at beta 0.5).
``d_cutoff`` (Hz): the cut-off of the speed estimate itself.
Timestamps may be irregular; without them the filter steps ``1 / freq`` seconds per sample.

Offline (render's video driver, evaluate, tracks made from video) the future is known, and the head need
not lag: ``Lookahead`` averages the causal filter's output with the same filter run backwards in time over
the next ``LOOKAHEAD_S`` seconds, which leads by as much as the causal one lags (zero phase). Only the head's
pose and gaze (``OFFLINE_ZERO_LAG``): held-out clips (``slidergan evaluate``, 4 talking + 8 expression clips
self-driven and on 3 held-out portraits) gave a self-driven landmark error of 1.4596 -> 1.4505 px, the other
figures within 0.01 (mouth 0.944 / 0.823 -> 0.946 / 0.822 self-driven, 0.897 / 0.763 -> 0.893 / 0.762 on other
portraits); every group without lag 1.4511 px but blinks 0.820 -> 0.783 of the driver's on other portraits (the
average of both directions smooths a quick peak twice: a first-order filter's gain squared), and the
expression and speech settings lag little anyway (their cut-offs rise fast with speed). A still face
replayed with sensor noise (three training stills) moves its head less: 0.028 -> 0.024 degrees a frame.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["OneEuroFilter", "smooth_sequence", "PARAM_SMOOTHING", "group_filter", "Lookahead", "LOOKAHEAD_S",
           "OFFLINE_ZERO_LAG"]

# (min_cutoff Hz, beta) per parameter group; "pose": the head pose in units of its limits; "gaze": the eyes'
# (engine.pose's last two), quick as the blinks: a glance is a jump of a tenth of a second, which the head's
# setting spread over half a second.
PARAM_SMOOTHING = {"exp": (1.5, 20.0), "speech": (8.0, 20.0), "pose": (1.5, 5.0), "gaze": (1.5, 20.0)}
# Offline: the groups smoothed without lag, and how far ahead the backward run starts (the slowest setting's
# time constant, 1 / (2 pi 1.5 Hz) = 0.11 s: under a hundredth of a step is left after 0.5 s).
OFFLINE_ZERO_LAG = ("pose", "gaze")
LOOKAHEAD_S = 0.5


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One Euro filter over arrays of a fixed shape. See the module docstring."""

    def __init__(self, min_cutoff=1.0, beta=0.0, d_cutoff: float = 1.0, freq: float = 30.0):
        min_cutoff = np.asarray(min_cutoff, np.float64)
        beta = np.asarray(beta, np.float64)
        if np.any(min_cutoff <= 0) or d_cutoff <= 0 or freq <= 0:
            raise ValueError("min_cutoff, d_cutoff and freq must be positive")
        if np.any(beta < 0):
            raise ValueError("beta must be >= 0")
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = float(d_cutoff)
        self.freq = float(freq)
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next sample passes through unchanged."""
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @property
    def value(self) -> np.ndarray | None:
        """The last filtered value (None before the first sample)."""
        return None if self._x is None else self._x.copy()

    def __call__(self, x, t: float | None = None) -> np.ndarray:
        return self.filter(x, t)

    def filter(self, x, t: float | None = None) -> np.ndarray:
        """Filter one sample ``x`` taken at time ``t`` seconds (None: one step of 1/freq later)."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("OneEuroFilter: sample contains NaN or inf")
        if self._x is None:
            self._x = x.copy()
            self._dx = np.zeros_like(x)
            self._t = 0.0 if t is None else float(t)
            return self._x.copy()
        if x.shape != self._x.shape:
            raise ValueError(f"OneEuroFilter: sample shape {x.shape} differs from {self._x.shape}; "
                             "reset() the filter to change shape")
        if t is None:
            dt = 1.0 / self.freq
            t = self._t + dt
        else:
            t = float(t)
            dt = t - self._t
            if dt <= 0:
                # Repeated or out-of-order timestamp: treat as one nominal step rather than divide by 0.
                dt = 1.0 / self.freq
                t = self._t + dt
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = _alpha(cutoff, dt)
        self._x = a * x + (1.0 - a) * self._x
        self._t = t
        return self._x.copy()


class Lookahead:
    """A causal filter's output made lag-free offline, frame by frame, ``seconds`` behind the input.

    ``push(t, shown, target, item)`` for each frame in time order: ``shown`` what the filter ``causal``
    gave for it, ``target`` the sample it was given (None where it filtered nothing: the frame's value is
    ``shown`` as it is, and the backward runs restart there); ``item`` rides along. Returns the frames now
    final, ``[(value, item)]``, in order: value = (shown + the filter run backwards from up to ``seconds``
    ahead) / 2 on the columns ``columns`` (a boolean mask or indices; None: all), clipped to ``lo`` ... ``hi``;
    ``shown`` elsewhere. ``finish()`` returns the rest at the end. ``causal`` itself is not touched (its
    settings are copied)."""

    def __init__(self, causal: OneEuroFilter, seconds: float = LOOKAHEAD_S, columns=None, lo=-np.inf, hi=np.inf):
        self._settings = (causal.min_cutoff, causal.beta, causal.d_cutoff, causal.freq)
        self.n = max(1, int(math.ceil(seconds * causal.freq)))
        self.columns = slice(None) if columns is None else columns
        self.lo, self.hi = lo, hi
        self._frames: list[tuple] = []   # (t, shown, target, item)

    def push(self, t: float, shown, target, item=None) -> list[tuple[np.ndarray, object]]:
        self._frames.append((float(t), np.asarray(shown, np.float64),
                             None if target is None else np.asarray(target, np.float64), item))
        return self._emit(self.n) if len(self._frames) >= 2 * self.n else []

    def finish(self) -> list[tuple[np.ndarray, object]]:
        return self._emit(len(self._frames))

    def _emit(self, k: int) -> list[tuple[np.ndarray, object]]:
        """The first ``k`` frames, final (the frames after them their lookahead)."""
        f = OneEuroFilter(*self._settings)
        back = [None] * len(self._frames)
        for i in range(len(self._frames) - 1, -1, -1):      # backwards: time runs as -t
            t, _, target, _ = self._frames[i]
            if target is None:
                f.reset()
            else:
                back[i] = f(target, -t)
        out = []
        for (_, shown, _, item), b in zip(self._frames[:k], back):
            value = shown.copy()
            if b is not None:
                c = self.columns
                value[c] = np.clip((shown[c] + b[c]) / 2.0, np.broadcast_to(self.lo, shown.shape)[c],
                                   np.broadcast_to(self.hi, shown.shape)[c])
            out.append((value, item))
        del self._frames[:k]
        return out


def group_filter(widths: dict[str, int], freq: float = 30.0) -> OneEuroFilter:
    """A filter over the concatenation of parameter groups (``{"exp": 30, "speech": 10}``, in that
    order), each with its ``PARAM_SMOOTHING``."""
    cut = np.concatenate([np.full(n, PARAM_SMOOTHING[g][0]) for g, n in widths.items()])
    beta = np.concatenate([np.full(n, PARAM_SMOOTHING[g][1]) for g, n in widths.items()])
    return OneEuroFilter(min_cutoff=cut, beta=beta, freq=freq)


def group_columns(widths: dict[str, int], groups=OFFLINE_ZERO_LAG) -> np.ndarray:
    """A boolean mask over ``group_filter(widths)``'s columns: those of the named groups."""
    return np.concatenate([np.full(n, g in groups) for g, n in widths.items()])


def smooth_sequence(values, times=None, fps: float = 30.0, min_cutoff=1.0,
                    beta=0.0, d_cutoff: float = 1.0) -> np.ndarray:
    """One Euro filter over a whole sequence ``values`` of shape (T, ...) (causal, one pass).

    ``times`` (T,) in seconds, or None for a regular ``fps``. Returns float64 of the same shape.
    """
    values = np.asarray(values, dtype=np.float64)
    f = OneEuroFilter(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff, freq=fps)
    out = np.empty_like(values)
    for i in range(len(values)):
        out[i] = f(values[i], None if times is None else float(times[i]))
    return out
