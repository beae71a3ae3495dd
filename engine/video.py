"""Reading videos through PyAV: frames as RGB uint8 with their timestamps, stream facts, audio.

    for rgb, t in read_frames("talk.mp4", start=2.0, end=4.0):   # t in seconds
        ...
    info = video_info("talk.mp4")   # VideoInfo(fps, frame_count, width, height, duration, has_audio)
    for frame, t in read_frames("hd.mp4", lazy=True):             # DecodedFrame: convert on demand
        face_rgb = frame.region(400, 100, 700, 400)                # only these pixels become RGB

Frames come upright: a phone video's rotation (the container's display matrix, e.g. a portrait clip
stored landscape with "rotate 90") is applied, so width and height are the displayed ones.

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

__all__ = ["VideoError", "VideoInfo", "DecodedFrame", "video_info", "read_frames", "extract_audio"]


class VideoError(ValueError):
    """A video file that cannot be opened or decoded."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    frame_count: int          # from the container, or counted by decoding when it does not say
    width: int                # as displayed (rotation applied)
    height: int
    duration: float           # seconds
    has_audio: bool
    audio_codec: str | None = None
    audio_sample_rate: int | None = None
    audio_delay: float = 0.0  # seconds from the first video frame to the first audio sample (< 0: audio first)
    rotation: int = 0         # degrees counter-clockwise the stored frames are turned to be upright


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
        with _open(path) as c2:     # its own reader: decoding a frame here must not disturb the count
            rot = _stream_rotation(c2, c2.streams.video[0])
        w, h = int(vs.codec_context.width), int(vs.codec_context.height)
        if rot in (90, 270):
            w, h = h, w
        return VideoInfo(path=str(path), fps=fps, frame_count=n, width=w, height=h, duration=float(dur),
                         rotation=rot,
                         has_audio=a is not None,
                         audio_codec=a.codec_context.name if a is not None else None,
                         audio_sample_rate=int(a.codec_context.sample_rate or 0) if a is not None
                         else None, audio_delay=delay)


def _quarter_turns(degrees) -> int:
    """Counter-clockwise quarter turns (0..3) for a display rotation in degrees (nearest)."""
    try:
        d = float(degrees or 0)
    except (TypeError, ValueError):
        return 0
    return int(round(d / 90.0)) % 4 if np.isfinite(d) else 0


def _stream_rotation(container, stream) -> int:
    """Degrees (0, 90, 180, 270 counter-clockwise) that turn the stream's frames upright: the first
    frame's display matrix (PyAV ``VideoFrame.rotation``), else an old-style ``rotate`` tag (clockwise)."""
    try:
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            return 90 * _quarter_turns(frame.rotation)
    except Exception:
        pass
    tag = (stream.metadata or {}).get("rotate")
    return 90 * ((-_quarter_turns(tag)) % 4) if tag else 0


def _i420(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Planes (h, w), (h/2, w/2), (h/2, w/2) packed as OpenCV's I420 layout, (3h/2, w)."""
    h, w = y.shape
    buf = np.empty(h * w * 3 // 2, np.uint8)
    buf[:h * w] = y.reshape(-1)
    q = h * w // 4
    buf[h * w:h * w + q] = u.reshape(-1)
    buf[h * w + q:] = v.reshape(-1)
    return buf.reshape(h * 3 // 2, w)


class DecodedFrame:
    """One decoded video frame, converted to RGB only where asked (``read_frames(lazy=True)``).

    ``rgb()``: the whole upright frame (converted once, then kept). ``region(x0, y0, x1, y1)``: the
    RGB pixels of an upright-frame rectangle, converting just those from the decoder's YUV 4:2:0
    planes (an HD frame's face costs a fraction of the whole frame). ``thumbnail(max_side)``: the
    whole frame shrunk (area averaging) so its longer side is at most ``max_side``. ``shape`` is the
    upright (H, W, 3). Frames in formats other than 8-bit YUV 4:2:0 are converted whole, once."""

    def __init__(self, frame, quarter_turns: int = 0):
        self._frame = frame
        self.k = int(quarter_turns) % 4
        w, h = int(frame.width), int(frame.height)
        self.stored = (h, w)
        self.shape = (w, h, 3) if self.k % 2 else (h, w, 3)
        self._rgb: np.ndarray | None = None
        self._planes = None

    @property
    def height(self) -> int:
        return self.shape[0]

    @property
    def width(self) -> int:
        return self.shape[1]

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            a = self._frame.to_ndarray(format="rgb24")
            self._rgb = np.ascontiguousarray(np.rot90(a, self.k)) if self.k else a
        return self._rgb

    def _yuv(self):
        if self._planes is None:
            f = self._frame
            if f.format.name != "yuv420p" or len(f.planes) != 3:
                self._planes = ()
            else:
                self._planes = tuple(np.frombuffer(p, np.uint8).reshape(-1, p.line_size)[:p.height, :p.width]
                                     for p in f.planes)
        return self._planes

    def _stored_rect(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        """The stored-frame rectangle (x0, y0, x1, y1) under an upright-frame one."""
        hs, ws = self.stored
        corners = []
        for i, j in ((y0, x0), (y1 - 1, x1 - 1)):
            if self.k == 0:
                corners.append((i, j))
            elif self.k == 1:
                corners.append((j, ws - 1 - i))
            elif self.k == 2:
                corners.append((hs - 1 - i, ws - 1 - j))
            else:
                corners.append((hs - 1 - j, i))
        (a, b), (c, d) = corners
        return min(b, d), min(a, c), max(b, d) + 1, max(a, c) + 1

    def region(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """RGB uint8 (y1 - y0, x1 - x0, 3) of the upright frame; the rectangle is clipped to the frame."""
        h, w = self.shape[:2]
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(w, int(x1)), min(h, int(y1))
        if x1 <= x0 or y1 <= y0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        planes = self._yuv() if self._rgb is None else ()
        if not planes:
            return self.rgb()[y0:y1, x0:x1]
        import cv2
        sx0, sy0, sx1, sy1 = self._stored_rect(x0, y0, x1, y1)
        # whole chroma samples: even bounds in the stored frame, cut back after conversion
        ex0, ey0 = sx0 & ~1, sy0 & ~1
        ex1, ey1 = min(self.stored[1], sx1 + (sx1 & 1)), min(self.stored[0], sy1 + (sy1 & 1))
        if (ex1 - ex0) % 2 or (ey1 - ey0) % 2:      # an odd-sized frame's last row/column
            return self.rgb()[y0:y1, x0:x1]
        yp, up, vp = planes
        out = cv2.cvtColor(_i420(yp[ey0:ey1, ex0:ex1], up[ey0 // 2:ey1 // 2, ex0 // 2:ex1 // 2],
                                 vp[ey0 // 2:ey1 // 2, ex0 // 2:ex1 // 2]), cv2.COLOR_YUV2RGB_I420)[sy0 - ey0:sy1 - ey0, sx0 - ex0:sx1 - ex0]
        return np.ascontiguousarray(np.rot90(out, self.k)) if self.k else out

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float]:
        """(the whole frame with its longer side at most ``max_side``, its scale: thumbnail px per frame px)."""
        import cv2
        h, w = self.shape[:2]
        k = min(1.0, float(max_side) / max(h, w))
        if k >= 1.0:
            return self.rgb(), 1.0
        planes = self._yuv() if self._rgb is None else ()
        if not planes or self.stored[0] % 2 or self.stored[1] % 2:
            src = self.rgb()
            small = cv2.resize(src, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA)
            return small, k
        hs, ws = self.stored
        tw, th = max(2, 2 * round(ws * k / 2)), max(2, 2 * round(hs * k / 2))
        yp, up, vp = planes
        small = cv2.cvtColor(_i420(*(cv2.resize(a, (tw // d, th // d), interpolation=cv2.INTER_AREA)
                                     for a, d in ((yp, 1), (up, 2), (vp, 2)))), cv2.COLOR_YUV2RGB_I420)
        if self.k:
            small = np.ascontiguousarray(np.rot90(small, self.k))
        return small, small.shape[1] / w


def read_frames(path: str | os.PathLike, start: float = 0.0, end: float | None = None,
                max_frames: int | None = None, lazy: bool = False,
                upright: bool = True) -> Iterator[tuple[np.ndarray, float]]:
    """Yield ``(rgb uint8 (H, W, 3), t seconds)`` for every frame with ``start <= t < end``.

    Timestamps come from the stream (relative to its first frame); frames without one are spaced at
    1/fps. ``upright``: apply the stream's display rotation (phone videos). ``lazy``: yield
    ``DecodedFrame`` objects instead of arrays, which convert only the pixels asked for. Raises
    VideoError when the file cannot be opened or no frame decodes; a file that breaks part-way stops
    with VideoError after the frames that decoded."""
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
                k = _quarter_turns(frame.rotation) if upright else 0
                if lazy:
                    yield DecodedFrame(frame, k), t
                else:
                    rgb = frame.to_ndarray(format="rgb24")
                    yield (np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb), t
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
