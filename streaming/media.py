"""Media helpers shared by the server, ``render`` and ``live``: audio decoding to a sample array,
the audio of a parameter track cut to the track's span, a media clock, and frame conversions."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

__all__ = ["load_audio", "track_audio", "MediaClock", "rgb_to_yuv420", "AudioError"]


from engine.audio import AudioError  # noqa: E402  (one error for every audio input)


def load_audio(path: str | os.PathLike, rate: int = 48000, channels: int = 2, start: float = 0.0,
               duration: float | None = None) -> np.ndarray:
    """Decode the first audio stream of ``path`` (an audio file or a video with audio) to int16
    samples of shape (n, channels) at ``rate`` Hz, from ``start`` seconds for ``duration`` seconds
    (padded with silence where the file is shorter; ``start`` < 0 pads the beginning)."""
    import av
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio not found: {path}")
    layout = {1: "mono", 2: "stereo"}[channels]
    chunks = []
    # With a duration, decoding stops once the span is covered: memory follows what is asked for,
    # not the length of the file.
    need = None if duration is None else max(0, int(round(start * rate))) + int(round(duration * rate))
    have = 0
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise AudioError(f"no audio stream in {path}")
            a = c.streams.audio[0]
            res = av.AudioResampler(format="s16", layout=layout, rate=rate)
            for frame in c.decode(a):
                frame.pts = None
                for rf in res.resample(frame):
                    chunks.append(rf.to_ndarray().reshape(-1, channels))
                    have += len(chunks[-1])
                if need is not None and have >= need:
                    break
            else:
                for rf in res.resample(None):
                    chunks.append(rf.to_ndarray().reshape(-1, channels))
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"cannot decode audio of {path}: {str(e).splitlines()[0] if str(e) else e}") from None
    pcm = np.concatenate(chunks) if chunks else np.zeros((0, channels), np.int16)
    s0 = int(round(start * rate))
    if s0 < 0:
        pcm = np.concatenate([np.zeros((-s0, channels), np.int16), pcm])
        s0 = 0
    pcm = pcm[s0:]
    if duration is not None:
        n = int(round(duration * rate))
        if len(pcm) < n:
            pcm = np.concatenate([pcm, np.zeros((n - len(pcm), channels), np.int16)])
        pcm = pcm[:n]
    return np.ascontiguousarray(pcm.astype(np.int16))


def track_audio(track, rate: int = 48000, channels: int = 2, audio: str | os.PathLike | None = None,
                duration: float | None = None):
    """The audio that goes with a parameter track over its span (track.start .. start + duration),
    as int16 (n, channels); None when the track has no audio and none is given. ``audio``: another
    file to use (then its time 0 is the track's time 0). ``duration``: seconds to take (default: the
    track's duration), what the result is padded or cut to."""
    duration = track.duration if duration is None else float(duration)
    if audio is not None:
        return load_audio(audio, rate, channels, start=0.0, duration=duration)
    p = track.audio_path
    if p is None:
        return None
    return load_audio(p, rate, channels, start=track.start + float(track.audio_offset), duration=duration)


class MediaClock:
    """Seconds since ``start()`` (monotonic), shared by the audio and video of one session so both
    follow one timeline; ``period`` > 0 wraps it (a looping track)."""

    def __init__(self, period: float = 0.0):
        self.period = float(period)
        self._t0: float | None = None

    def start(self, at: float | None = None) -> None:
        self._t0 = time.monotonic() if at is None else at

    @property
    def started(self) -> bool:
        return self._t0 is not None

    def elapsed(self, at: float | None = None) -> float:
        """Unwrapped seconds since start (0 before it), now or at ``time.monotonic()`` value ``at``."""
        if self._t0 is None:
            return 0.0
        return (time.monotonic() if at is None else at) - self._t0

    def now(self) -> float:
        t = self.elapsed()
        return t % self.period if self.period > 0 else t


def rgb_to_yuv420(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) with even H, W -> I420 planes stacked (H * 3 / 2, W) for
    ``av.VideoFrame.from_ndarray(..., format="yuv420p")`` (BT.601 limited range, like FFmpeg's
    default conversion)."""
    import cv2
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
