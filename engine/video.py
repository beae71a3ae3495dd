"""Reading videos through PyAV: frames as RGB uint8 with their timestamps, stream facts, audio.

    for rgb, t in read_frames("talk.mp4", start=2.0, end=4.0):   # t in seconds
        ...
    info = video_info("talk.mp4")   # VideoInfo(fps, frame_count, width, height, duration, has_audio)

A missing file raises FileNotFoundError; a file PyAV cannot open or decode, or one without a video
stream, raises VideoError (a ValueError) naming the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["VideoError", "VideoInfo", "video_info", "read_frames", "extract_audio"]


class VideoError(ValueError):
    """A video file that cannot be opened or decoded."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    frame_count: int          # from the container, or counted by decoding when it does not say
    width: int
    height: int
    duration: float           # seconds
    has_audio: bool
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_delay: float = 0.0  # seconds from the first video frame to the first audio sample (< 0: audio first)


def _open(path):
    import av
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video not found: {path}")
    if path.is_dir():
        raise VideoError(f"not a video file (a folder): {path}")
    try:
        c = av.open(str(path))
    except Exception as e:
        raise VideoError(f"cannot open video {path}: {_why(e)}") from None
    if not c.streams.video:
        c.close()
        raise VideoError(f"no video stream in {path}")
    return c


def _why(e: Exception) -> str:
    s = str(e).strip() or type(e).__name__
    return s.split("\n")[0][:200]


def _fps(stream) -> float:
    for r in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if r:
            f = float(r)
            if 0 < f < 1000:
                return f
    return 30.0


def video_info(path: str | os.PathLike, count_frames: bool = False) -> VideoInfo:
    """Facts about a video. ``count_frames=True`` decodes packets to count frames exactly."""
    with _open(path) as c:
        vs = c.streams.video[0]
        fps = _fps(vs)
        n = int(vs.frames or 0)
        dur = None
        if vs.duration is not None and vs.time_base is not None:
            dur = float(vs.duration * vs.time_base)
        elif c.duration is not None:
            dur = c.duration / 1e6
        if count_frames or n <= 0:
            try:
                n = sum(1 for p in c.demux(vs) if p.size)
            except Exception as e:
                raise VideoError(f"cannot read video {path}: {_why(e)}") from None
        if dur is None:
            dur = n / fps
        a = c.streams.audio[0] if c.streams.audio else None
        delay = 0.0
        if a is not None and a.start_time is not None and vs.start_time is not None:
            delay = float(a.start_time * a.time_base) - float(vs.start_time * vs.time_base)
        return VideoInfo(path=str(path), fps=fps, frame_count=n, width=int(vs.codec_context.width),
                         height=int(vs.codec_context.height), duration=float(dur),
                         has_audio=a is not None,
                         audio_codec=a.codec_context.name if a is not None else None,
                         audio_sample_rate=int(a.codec_context.sample_rate or 0) if a is not None
                         else None, audio_delay=delay)


def read_frames(path: str | os.PathLike, start: float = 0.0, end: float | None = None,
                max_frames: int | None = None) -> Iterator[tuple[np.ndarray, float]]:
    """Yield ``(rgb uint8 (H, W, 3), t seconds)`` for every frame with ``start <= t < end``.

    Timestamps come from the stream (relative to its first frame); frames without one are spaced at
    1/fps. Raises VideoError when the file cannot be opened or no frame decodes; a file that breaks
    part-way stops with VideoError after the frames that decoded."""
    c = _open(path)
    try:
        vs = c.streams.video[0]
        vs.thread_type = "AUTO"
        fps = _fps(vs)
        t0 = None
        n_out = 0
        n_dec = 0
        last_t = None
        try:
            for frame in c.decode(vs):
                if frame.pts is not None and frame.time_base is not None:
                    t = float(frame.pts * frame.time_base)
                else:
                    t = (last_t + 1.0 / fps) if last_t is not None else 0.0
                if t0 is None:
                    t0 = t
                t -= t0
                if last_t is not None and t <= last_t:   # broken or repeated stamps
                    t = last_t + 1.0 / fps
                last_t = t
                n_dec += 1
                if t < start - 1e-6:
                    continue
                if end is not None and t >= end - 1e-6:
                    break
                yield frame.to_ndarray(format="rgb24"), t
                n_out += 1
                if max_frames is not None and n_out >= max_frames:
                    break
        except Exception as e:
            if isinstance(e, GeneratorExit):
                raise
            raise VideoError(f"cannot decode video {path} (after {n_dec} frames): {_why(e)}") from None
        if n_dec == 0:
            raise VideoError(f"no decodable video frames in {path}")
    finally:
        c.close()


def extract_audio(video: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy the first audio stream of ``video`` into ``out``.

    ``.m4a``/``.aac``/``.mp4`` with an AAC source: the packets are copied unchanged (no re-encoding);
    ``.wav``: decoded to 16-bit PCM. Other combinations are re-encoded (AAC for .m4a, PCM for .wav).
    Raises VideoError when the video has no audio."""
    import av
    out = Path(out)
    ext = out.suffix.lower()
    if ext not in (".m4a", ".wav", ".aac", ".mp4"):
        raise ValueError(f"audio output must end in .m4a or .wav, got {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    with _open(video) as c:
        if not c.streams.audio:
            raise VideoError(f"no audio stream in {video}")
        a = c.streams.audio[0]
        fmt = {"m4a": "ipod", "mp4": "mp4", "aac": "adts", "wav": "wav"}[ext[1:]]
        try:
            with av.open(str(tmp), "w", format=fmt) as o:
                if ext != ".wav" and a.codec_context.name == "aac":
                    os_ = o.add_stream_from_template(a)
                    for pkt in c.demux(a):
                        if pkt.dts is None:
                            continue
                        pkt.stream = os_
                        o.mux(pkt)
                else:
                    codec = "pcm_s16le" if ext == ".wav" else "aac"
                    rate = int(a.codec_context.sample_rate or 44100)
                    os_ = o.add_stream(codec, rate=rate)
                    try:
                        os_.layout = a.codec_context.layout.name
                    except Exception:
                        pass
                    resampler = av.AudioResampler(format="s16" if ext == ".wav" else "fltp",
                                                  layout=os_.layout.name, rate=rate)
                    for frame in c.decode(a):
                        frame.pts = None
                        for rf in resampler.resample(frame):
                            for p in os_.encode(rf):
                                o.mux(p)
                    for rf in resampler.resample(None):
                        for p in os_.encode(rf):
                            o.mux(p)
                    for p in os_.encode(None):
                        o.mux(p)
        except VideoError:
            raise
        except Exception as e:
            tmp.unlink(missing_ok=True)
            raise VideoError(f"cannot extract audio from {video}: {_why(e)}") from None
    os.replace(tmp, out)
    return out


def _fraction(x: float) -> Fraction:
    return Fraction(x).limit_denominator(1001 * 1000)
