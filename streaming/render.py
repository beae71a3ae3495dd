"""``slidergan render``: animate a portrait offline to a video file (PyAV: H.264 + AAC, VP9 + Opus or GIF).

    slidergan render --source portrait.jpg --driver talk.mp4 -o out.mp4 [--side-by-side]
    slidergan render --source portrait.jpg --driver speech.npz [--audio speech.wav] -o out.mp4
    slidergan render --source portrait.jpg --driver speech.wav -o out.mp4

The driver is a video (its face is tracked and read by the regression head, as the webcam is live),
a parameter track (``.npz`` from ``slidergan track extract``), or a sound file (wav, mp3, m4a, ogg,
flac, ...: the audio model predicts the speech parameters, ``engine.audio``, the expression stays the
portrait's own). The audio is the driver video's own, the track's, the sound file, or ``--audio
FILE``; it is cut or padded to the video's duration exactly, so audio and
video end together. The output appears only when complete (written next to it, then renamed): a
failing render leaves no file and an existing output as it was. Before any work, the output's folder
is checked to be writable, and the render's frame rate (1..240 fps) and length (at most an hour, the
audio being held in memory; ``--max-seconds`` renders a part) are checked before anything is sized.

Work runs as a pipeline of threads: (1) decode + face tracking + batched regression, (2) batched
generation + paste-back, on ``generation_workers()`` threads side by side (the frames put back in order),
(3) encoding and muxing, so the stages overlap on a multi-core CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

log = logging.getLogger("slidergan.render")

AUDIO_RATE = 48000
_END = object()
# What one render may be, checked before anything is sized from the driver (frames, audio buffer):
MIN_FPS, MAX_FPS = 1.0, 240.0
GENERATION_WORKERS = 2  # batches generated side by side, at most (a 300-frame render on 2 cores: 2.25x -> 2.36x)
MAX_SECONDS = 3600.0  # one file; its audio track (48 kHz stereo, 660 MiB an hour) is held in memory


@dataclass
class RenderResult:
    path: Path
    frames: int
    fps: float
    duration: float               # video seconds
    audio_duration: float | None  # audio seconds written (None: no audio)
    seconds: float                # wall time
    faces_missing: int = 0
    cpu: dict | None = None       # CPU seconds: per stage thread, and the whole process
    faces_lost: int = 0           # of faces_missing: frames where other faces were in view, not the locked one
    recalibrated: tuple = ()      # driver video seconds where its face became someone else's (calibrated again)

    @property
    def speed(self) -> float:
        """x real time."""
        return self.duration / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        a = f", audio {self.audio_duration:.2f} s" if self.audio_duration is not None else ", no audio"
        miss = f", {self.faces_missing} driver frame(s) without a face (held)" if self.faces_missing else ""
        if self.faces_lost:
            miss += (f"; in {self.faces_lost} of them the locked face was lost while another face was in view "
                     "(not followed)")
        if self.recalibrated:
            miss += (f"; the driver's face became someone else's at {', '.join(f'{t:.1f}' for t in self.recalibrated)}"
                     " s: calibrated again on them")
        return (f"wrote {self.path}: {self.frames} frames at {self.fps:g} fps ({self.duration:.2f} s{a}) "
                f"in {self.seconds:.1f} s, {self.speed:.2f}x real time{miss}")


def is_track_file(path) -> bool:
    p = Path(path)
    if p.suffix.lower() == ".npz":
        return True
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"PK\x03\x04" and p.suffix.lower() not in (".mp4", ".mov", ".mkv", ".webm")
    except OSError:
        return False


# ----------------------------------------------------------------------------------------- writer
# What render (and live's --record) writes, by the output's suffix: (container, video codec, audio codec; None: the
# format holds no sound). WebM plays in any browser (VP9 + Opus); a GIF loops wherever a picture shows.
OUTPUTS = {".mp4": ("mp4", "libx264", "aac"), ".mov": ("mov", "libx264", "aac"),
           ".mkv": ("matroska", "libx264", "aac"), ".webm": ("webm", "libvpx-vp9", "libopus"),
           ".gif": ("gif", "gif", None)}
CRF = {"libx264": (20, 51), "libvpx-vp9": (32, 63)}     # --crf's default and largest value per codec (lower: better)
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
DEFAULT_PRESET = "superfast"    # 3.7 ms a 512 px frame here, against 5.6 for veryfast
# VP9 as fast as x264's superfast (realtime, cpu-used 8: 4 ms a 512 px frame, 2 cores); crf with b 0: constant quality
VP9_OPTIONS = {"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "b": "0"}


def output_format(path) -> tuple[str, str, str | None]:
    """(container, video codec, audio codec or None) of an output file, by its suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUTS:
        raise ValueError(f"output must end in {', '.join(list(OUTPUTS)[:-1])} or {list(OUTPUTS)[-1]}, "
                         f"got {Path(path).name}")
    return OUTPUTS[suffix]


def check_encoding(path, crf: int | None = None, preset: str | None = None) -> None:
    """``crf`` and ``preset`` for the codec ``path`` is written with, before any work (the encoder would
    otherwise fail mid-render, or quietly clamp)."""
    codec = output_format(path)[1]
    if crf is not None:
        if codec not in CRF:
            raise ValueError(f"--crf sets H.264's or VP9's quality; a {Path(path).suffix} has none")
        if not 0 <= int(crf) <= CRF[codec][1]:
            raise ValueError(f"--crf must be 0 (best) to {CRF[codec][1]} for {codec}, not {crf}")
    if preset is not None:
        if codec != "libx264":
            raise ValueError(f"--preset is x264's (.mp4, .mov, .mkv); a {Path(path).suffix} is written with {codec}")
        if preset not in X264_PRESETS:
            raise ValueError(f"--preset must be one of x264's: {', '.join(X264_PRESETS)}; not {preset!r}")


class _GifPalette:
    """RGB frames to ``first``'s 255-colour palette (FFmpeg's palettegen, one colour kept for the GIF's
    transparency) with Bayer dithering: ``map(frame)`` -> pal8 frames."""

    def __init__(self, first: np.ndarray):
        import av
        h, w = first.shape[:2]
        tb = Fraction(1, 100)
        gen = av.filter.Graph()
        src = gen.add_buffer(width=w, height=h, format="rgb24", time_base=tb)
        pg, sink = gen.add("palettegen", "stats_mode=full:max_colors=256:reserve_transparent=1"), gen.add("buffersink")
        src.link_to(pg)
        pg.link_to(sink)
        gen.configure()
        src.push(self._frame(first, 0))
        src.push(None)
        palette = sink.pull()
        self.graph = av.filter.Graph()
        self.src = self.graph.add_buffer(width=w, height=h, format="rgb24", time_base=tb)
        pal = self.graph.add_buffer(width=palette.width, height=palette.height, format=palette.format.name,
                                    time_base=tb)
        use = self.graph.add("paletteuse", "dither=bayer:bayer_scale=4:diff_mode=rectangle")
        self.sink = self.graph.add("buffersink")
        self.src.link_to(use, 0, 0)
        pal.link_to(use, 0, 1)
        use.link_to(self.sink)
        self.graph.configure()
        palette.pts = 0
        pal.push(palette)
        pal.push(None)      # the one palette, for every frame

    @staticmethod
    def _frame(rgb: np.ndarray, pts: int):
        import av
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts, frame.time_base = pts, Fraction(1, 100)
        return frame

    def map(self, rgb: np.ndarray, pts: int) -> list:
        import av
        self.src.push(self._frame(rgb, pts))
        out = []
        while True:
            try:
                out.append(self.sink.pull())
            except (av.BlockingIOError, av.EOFError):
                return out


class VideoWriter:
    """A video file through PyAV, its codecs by its suffix (``OUTPUTS``: H.264 + AAC, VP9 + Opus, GIF), with
    audio interleaved as video advances. ``suffix`` names the format where ``path`` (a temporary file) does not.
    ``crf`` / ``preset``: None for the codec's default (``CRF``, ``DEFAULT_PRESET``)."""

    def __init__(self, path: Path, width: int, height: int, fps: float, audio: np.ndarray | None,
                 crf: int | None = None, preset: str | None = None, suffix: str | None = None):
        import av
        kind = Path(path).with_suffix(suffix) if suffix else Path(path)
        check_encoding(kind, crf, preset)
        fmt, codec, audio_codec = output_format(kind)
        if audio is not None and audio_codec is None:
            raise ValueError(f"a {kind.suffix} holds no sound: write it without audio")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.c = av.open(str(path), "w", format=fmt,
                         options={"movflags": "+faststart"} if fmt in ("mp4", "mov") else None)
        self._palette = None
        self._last_pts = -1
        try:
            vs = self.c.add_stream(codec, rate=self.fps)
            vs.width, vs.height = width, height
            if codec == "gif":
                vs.pix_fmt = "pal8"
                self.tb = Fraction(1, 100)      # a GIF's frame delays are in hundredths of a second
            else:
                vs.pix_fmt = "yuv420p"
                self.tb = 1 / self.fps          # the frames' time base (the stream's may change at mux)
                crf = CRF[codec][0] if crf is None else int(crf)
                vs.codec_context.options = ({"crf": str(crf), "preset": preset or DEFAULT_PRESET}
                                            if codec == "libx264" else {"crf": str(crf), **VP9_OPTIONS})
            vs.codec_context.time_base = self.tb
            self.vs = vs
            self.audio = audio
            self.apos = 0
            self.frames = 0
            if audio is not None:
                self.as_ = self.c.add_stream(audio_codec, rate=AUDIO_RATE)
                self.as_.layout = "stereo"
                self.as_.bit_rate = 128000
                self.as_.time_base = Fraction(1, AUDIO_RATE)
                self.asize = 1024       # samples a frame; PyAV re-chunks them to the codec's (Opus: 960)
        except BaseException:
            self.c.close()
            raise

    def write(self, rgb: np.ndarray) -> None:
        import av
        from .media import rgb_to_yuv420
        if self.vs.pix_fmt == "pal8":
            self._write_gif(rgb)
        else:
            vf = av.VideoFrame.from_ndarray(rgb_to_yuv420(rgb), format="yuv420p")
            vf.pts = self.frames
            vf.time_base = self.tb
            for p in self.vs.encode(vf):
                self.c.mux(p)
        self.frames += 1
        if self.audio is not None:
            self._audio_until(int(round(self.frames / float(self.fps) * AUDIO_RATE)))

    def _write_gif(self, rgb: np.ndarray) -> None:
        """One frame of a GIF: every frame in one palette (FFmpeg's palettegen on the first frame) with ordered
        dithering, so what does not move keeps its pixels and the encoder stores only the changed rectangle
        (a palette per frame made each frame 2.7 times as large). Above 100 fps frames that share a hundredth of a second are
        dropped (a GIF's delays are hundredths)."""
        pts = int(round(self.frames / float(self.fps) * 100))
        if pts == self._last_pts:
            return
        self._last_pts = pts
        if self._palette is None:
            self._palette = _GifPalette(rgb)
        for out in self._palette.map(rgb, pts):
            out.pts, out.time_base = pts, self.tb
            for p in self.vs.encode(out):
                self.c.mux(p)

    def _audio_until(self, n: int, final: bool = False) -> None:
        import av
        n = min(n, len(self.audio))
        while self.apos + (1 if final else self.asize) <= n and self.apos < n:
            chunk = self.audio[self.apos:min(self.apos + self.asize, n)]
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk).reshape(1, -1), format="s16",
                                            layout="stereo")
            af.sample_rate = AUDIO_RATE
            af.pts = self.apos
            af.time_base = Fraction(1, AUDIO_RATE)
            for p in self.as_.encode(af):
                self.c.mux(p)
            self.apos += len(chunk)

    def close(self) -> None:
        for p in self.vs.encode(None):
            self.c.mux(p)
        if self.audio is not None:
            self._audio_until(len(self.audio), final=True)
            for p in self.as_.encode(None):
                self.c.mux(p)
        self.c.close()

    def abort(self) -> None:
        try:
            self.c.close()
        except Exception:
            pass


# ----------------------------------------------------------------------------------------- stages
_STAGE_CPU: dict[str, float] = {}     # CPU seconds by stage (its threads' together)
_STAGE_LOCK = threading.Lock()


def _thread(target, *args, name: str):
    err: list[BaseException] = []

    def run():
        try:
            target(*args)
        except BaseException as e:  # re-raised in the main thread
            err.append(e)
        finally:
            stage = name.rstrip("0123456789")       # render-generate0, render-generate1: one stage
            with _STAGE_LOCK:
                _STAGE_CPU[stage] = _STAGE_CPU.get(stage, 0.0) + time.thread_time()
    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    return t, err


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _put_end(q: queue.Queue, stop: threading.Event) -> None:
    """A producer's last item. Once stopped it is put only where there is room: a worker waiting on an empty
    queue needs it, and while the queue is full no worker waits (each takes an item and sees the stop)."""
    if not _put(q, _END, stop):
        try:
            q.put_nowait(_END)
        except queue.Full:
            pass


def _bars(p: np.ndarray, n_exp: int, h: int, w: int, names=None) -> np.ndarray:
    """A simple picture of the parameters (for --side-by-side with a track driver)."""
    import cv2
    img = np.full((h, w, 3), 24, np.uint8)
    n = len(p)
    bw = w / max(n, 1)
    mid = h // 2
    cv2.line(img, (0, mid), (w, mid), (90, 90, 90), 1)
    for i, v in enumerate(p):
        x0, x1 = int(i * bw + 1), int((i + 1) * bw - 1)
        y = int(mid - v * (h * 0.45))
        col = (80, 140, 255) if i < n_exp else (255, 160, 70)
        cv2.rectangle(img, (x0, min(mid, y)), (max(x0, x1), max(mid, y)), col, -1)
    cv2.putText(img, "expression", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (80, 140, 255), 1, cv2.LINE_AA)
    cv2.putText(img, "speech", (int(n_exp * bw) + 6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 160, 70), 1,
                cv2.LINE_AA)
    return img


def _left_width(w: int, h: int, out_h: int) -> int:
    """Width of a w x h driver frame scaled to height out_h, rounded to even (H.264 wants even)."""
    return max(2, 2 * int(round(w * out_h / h / 2)))


def _side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    import cv2
    h = right.shape[0]
    w = _left_width(left.shape[1], left.shape[0], h)
    if left.shape[:2] != (h, w):
        left = cv2.resize(left, (w, h), interpolation=cv2.INTER_AREA)
    return np.concatenate([left, right], axis=1)


# ------------------------------------------------------------------------------------------ render
def render(source, driver, out, *, audio=None, checkpoint=None, backend: str = "auto", models=None,
           size: int | None = None, fps: float | None = None, side_by_side: bool = False, mode: str = "relative",
           no_audio: bool = False, batch: int = 8, crf: int | None = None, preset: str | None = None,
           max_seconds: float | None = None, progress: bool = True, threads: int | None = 1,
           params: str = "mesh", renderer: str = "model", motion: str | None = None,
           face: tuple[float, float] | None = None, source_mouth: str = "closed", precision: str = "fp32",
           neutral_at: float | str | None = None, expression_scale: float = 1.0, framing: str = "square",
           source_face: tuple[float, float] | None = None, mouth_interior: str = "driver",
           neutral_from: str | Path | None = None, blinks: bool = True) -> RenderResult:
    """Render ``source`` (portrait) driven by ``driver`` (video or track) to ``out``. ``framing``: "square"
    (a square around the face, ``size`` px, default 512) or "full" (the whole photo, its aspect kept,
    long side ``size``, default the photo's own up to 1920: LivePortrait's paste-back, SadTalker's
    "full"; engine.animator.Animator). ``params``: where a
    video driver's p comes from ("mesh": the blendshape fit of its face mesh; "head": the regression
    head on its crop). ``renderer``: "model" or "warp-only" (engine.animator.Animator). ``motion``:
    "speech" (the lips and jaw only: dubbing), "expression" (SliderGAN's: expression and speech), "head"
    (expression + the driver's head pose, from a video's face mesh or a track's pose) or None (head wherever
    the model can move it). ``face``: a video
    driver with several people: follow the face at (or nearest) this (x, y) pixel of its first frames
    (default: the largest face when tracking starts); either way one face is followed, never another.
    ``source_face``: a portrait with several faces: animate the one at (or nearest) this (x, y) pixel of it
    (default: the largest).
    ``source_mouth``: "closed" or "own" (engine.animator.Animator). ``precision``: "fp32" or "int8"
    (engine.animator.load_models). ``neutral_at``: a video driver in relative mode takes its neutral from
    its faces from this time (seconds) on instead of its first second, or with "auto" from its faces over
    the whole video (with ``params`` "mesh" its neutral mesh from the relaxed ones,
    ``engine.blendshapes.estimate_neutral``, as a track's): for a driver that
    starts mid-expression (a smile held through its first second would otherwise open the portrait's
    eyes wider than its own for the whole video). ``neutral_from``: a photo or video of the driver's face at
    rest: its neutral expression from there instead (a driver that holds an expression through the whole
    video, as posed-emotion clips do, keeps it only so; ``neutral_at`` cannot tell it from the face's own
    shape), the head's neutral pose still from the video's first second; a file of someone else is refused.
    ``expression_scale``: the driver's expression and speech motion times this (streaming.drivers; 1: as
    driven). ``mouth_interior``: with a driver video, "driver" (the driver's own teeth and tongue inside the
    portrait's open mouth, engine.mouth) or "drawn". ``blinks``: a portrait driven by sound or a track without
    expression blinks as people do (streaming.drivers.IdleBlinks); False: its eyes stay as they are."""
    out = Path(out)
    driver = Path(driver)
    if not driver.exists():
        raise FileNotFoundError(f"driver not found: {driver}")
    check_encoding(out, crf, preset)
    if audio is not None and not Path(audio).exists():
        raise FileNotFoundError(f"audio not found: {audio}")
    if output_format(out)[2] is None:          # a GIF: no sound
        if audio is not None:
            raise ValueError(f"--audio {audio}: a {out.suffix} holds no sound (write a .mp4, .mkv or .webm)")
        no_audio = True
    from .drivers import PARAMS_SOURCES
    if params not in PARAMS_SOURCES:
        raise ValueError(f"params must be one of {PARAMS_SOURCES}, not {params!r}")
    if renderer not in ("model", "warp-only"):
        raise ValueError(f"renderer must be 'model' or 'warp-only', not {renderer!r}")
    from engine.animator import check_framing
    check_framing(framing, size)
    from engine.mouth import check_interior
    check_interior(mouth_interior)
    from .drivers import check_expression_scale, check_motion
    check_motion(motion)
    expression_scale = check_expression_scale(expression_scale)
    if fps is not None:
        check_fps(float(fps), "--fps")
    if face is not None:
        face = face_point(face)
    if source_face is not None:
        source_face = face_point(source_face, "--source-face", "the portrait")
    if max_seconds is not None and not (math.isfinite(float(max_seconds)) and float(max_seconds) > 0):
        raise ValueError(f"--max-seconds must be a positive number of seconds, not {max_seconds}")
    if neutral_at is not None:
        neutral_at = check_neutral_at(neutral_at)
        if mode != "relative":
            raise ValueError("--neutral-at is the relative mode's neutral: it needs --mode relative")
    if neutral_from is not None:
        neutral_from = Path(neutral_from)
        if neutral_at is not None:
            raise ValueError("--neutral-from and --neutral-at are two places to take the driver's neutral from: "
                             "give one")
        if mode != "relative":
            raise ValueError("--neutral-from is the relative mode's neutral: it needs --mode relative")
        if not neutral_from.is_file():
            raise FileNotFoundError(f"--neutral-from: no such file: {neutral_from}")
    made = prepare_output(out)
    try:
        with opencv_threads(threads):
            return _render(source, driver, out, audio=audio, checkpoint=checkpoint, backend=backend, models=models,
                           size=size, fps=fps, side_by_side=side_by_side, mode=mode, no_audio=no_audio, batch=batch,
                           crf=crf, preset=preset, max_seconds=max_seconds, progress=progress, threads=threads,
                           params=params, renderer=renderer, motion=motion, face=face, source_mouth=source_mouth,
                           precision=precision, neutral_at=neutral_at, expression_scale=expression_scale,
                           framing=framing, source_face=source_face, mouth_interior=mouth_interior,
                           neutral_from=neutral_from, blinks=blinks)
    except BaseException:
        for d in reversed(made):  # folders made for the output, if the render left them empty
            try:
                d.rmdir()
            except OSError:
                break
        raise


@contextlib.contextmanager
def opencv_threads(threads: int | None):
    """OpenCV's thread pool at ``threads`` (the models' intra-op threads; None: as it was) while a render runs:
    its stages already run side by side, and OpenCV's own workers on 2 cores only added about 0.5 s of CPU to
    300 frames, for no time saved. (Process-wide: the render is its process's work.)"""
    import cv2
    before = cv2.getNumThreads()
    if threads is not None:
        cv2.setNumThreads(int(threads))
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def check_neutral_at(value) -> float | str:
    """--neutral-at: "auto" or a time in seconds (>= 0)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"--neutral-at must be a time in the driver video (seconds, >= 0) or 'auto', not {value!r}")
    return t


def check_fps(fps: float, what: str) -> None:
    if not (math.isfinite(fps) and MIN_FPS <= fps <= MAX_FPS):
        raise ValueError(f"{what} is {fps:g} fps; render writes {MIN_FPS:g} to {MAX_FPS:g} fps")


def check_length(seconds: float, what: str) -> None:
    """Refuse a render longer than MAX_SECONDS, before its frames or audio are sized."""
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"{what} lasts {seconds:.6g} s; render writes at most {MAX_SECONDS:.0f} s to one file "
                         f"(its audio is held in memory): render a part with --max-seconds")


def prepare_output(out: Path) -> list[Path]:
    """Check before any work that ``out`` can be written: its folder exists or can be made, and a file
    can be created in it. Returns the folders made for it (oldest first)."""
    import os
    import tempfile
    if out.is_dir():
        raise ValueError(f"the output {out} is a folder; give a file name ending in {', '.join(OUTPUTS)}")
    parent = out.parent if str(out.parent) else Path(".")
    missing, p = [], parent
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        raise ValueError(f"cannot write the output {out}: {p} is not a folder")
    made: list[Path] = []
    try:
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        for d in reversed(made):
            try:
                d.rmdir()
            except OSError:
                pass
        where = e.filename or parent
        raise OSError(f"cannot write the output {out}: {where}: {e.strerror or e}") from None
    return made


def _render(source, driver: Path, out: Path, *, audio, checkpoint, backend, models, size, fps, side_by_side, mode,
            no_audio, batch, crf, preset, max_seconds, progress, threads, params, renderer, motion,
            face=None, source_mouth="closed", precision="fp32", neutral_at=None, expression_scale=1.0,
            framing="square", source_face=None, mouth_interior="driver", neutral_from=None, blinks=True) -> RenderResult:
    from engine.animator import Animator, load_models
    from engine.atomic import atomic_path

    if models is None:
        models = load_models(checkpoint, backend=backend, threads=threads, precision=precision)
    anim = Animator(models, output_size=size, framing=framing, renderer=renderer, source_mouth=source_mouth)
    say_faces(anim.set_source(source, face=source_face), source_face)
    n_exp = int(getattr(models, "n_exp", 0) or 0)
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    _STAGE_CPU.clear()
    track_mode = is_track_file(driver)
    from .drivers import resolve_motion
    motion = resolve_motion(motion, anim)
    from engine.audio import is_audio_file
    for name, given in (("--neutral-at", neutral_at), ("--neutral-from", neutral_from)):
        if given is not None and (track_mode or is_audio_file(driver)):
            raise ValueError(f"{name} calibrates a driver video's face; {driver.name} is "
                             f"{'a parameter track' if track_mode else 'a sound file'}")
    if not track_mode and is_audio_file(driver):
        # Sound drives the lips: the audio model's speech track (streamed through the file in chunks),
        # rendered like any track; the sound itself is the output's audio.
        from engine.audio import audio_model_for, track_from_audio
        net = audio_model_for(checkpoint, anim.param_names[n_exp:])
        track = track_from_audio(driver, fps=float(fps or 25.0), net=net, max_seconds=max_seconds,
                                 n_expression=n_exp, progress=progress)
        job = _TrackJob(anim, track, n_exp, fps, audio, no_audio, max_seconds, side_by_side, motion, expression_scale,
                        blinks)
    elif track_mode:
        job = _TrackJob(anim, driver, n_exp, fps, audio, no_audio, max_seconds, side_by_side, motion, expression_scale,
                        blinks)
    else:
        from .drivers import check_params_source
        check_params_source(params, anim.fit if anim.face_model is not None else None)
        job = _VideoJob(anim, driver, n_exp, fps, audio, no_audio, max_seconds, side_by_side, mode, params, motion,
                        face, neutral_at, expression_scale, mouth_interior, neutral_from)
    h, w = anim.output_shape
    if side_by_side:
        w = w + job.left_width(h)
    from .media import load_audio  # noqa: F401  (import errors early)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=job.n_frames, unit="frame", desc=f"render {out.name}", leave=True)
    stop = threading.Event()
    q_params: queue.Queue = queue.Queue(maxsize=4)
    q_frames: queue.Queue = queue.Queue(maxsize=4)
    workers = generation_workers()
    order = _Order()
    threads = []
    try:
        with atomic_path(out) as tmp:
            writer = VideoWriter(tmp, w, h, job.fps, job.audio, crf=crf, preset=preset, suffix=out.suffix)
            try:
                threads.append(_thread(job.produce, q_params, stop, batch, name="render-drive"))
                for k in range(workers):
                    threads.append(_thread(_generate, anim, q_params, q_frames, stop, side_by_side, order,
                                           name=f"render-generate{k}"))
                t_main = time.thread_time()
                done, ended, next_seq = {}, 0, 0
                while ended < workers:
                    item = q_frames.get()
                    if item is _END:
                        ended += 1
                        continue
                    done[item[0]] = item[1]
                    while next_seq in done:        # the workers' batches back in the driver's order
                        for frame in done.pop(next_seq):
                            writer.write(frame)
                            if bar is not None:
                                bar.update(1)
                        next_seq += 1
                for t, err in threads:
                    t.join()
                    if err:
                        raise err[0]
                writer.close()
                _STAGE_CPU["render-encode"] = time.thread_time() - t_main
            except BaseException:
                stop.set()
                writer.abort()
                for t, err in threads:
                    t.join(timeout=5)
                for t, err in threads:
                    if err and not isinstance(err[0], _Stopped):
                        raise err[0]
                raise
    finally:
        stop.set()
        if bar is not None:
            bar.close()
        job.close()
    n = writer.frames
    dur = n / job.fps
    adur = writer.apos / AUDIO_RATE if job.audio is not None else None
    cpu = {k.replace("render-", ""): round(v, 2) for k, v in _STAGE_CPU.items()}
    cpu["process"] = round(time.process_time() - cpu_start, 2)
    return RenderResult(out, n, job.fps, dur, adur, time.perf_counter() - t_start, job.missing, cpu,
                        getattr(job, "lost", 0), tuple(getattr(job, "recalibrated", ())))


class _Stopped(Exception):
    pass


class _Order:
    """Numbers the batches as the generation workers take them (so their frames can be put back in order)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.next = 0


def generation_workers() -> int:
    """Generation workers a render runs: one per CPU it may use (logical ones: a worker's work is mostly geometry
    and compositing, not the convolutions ``engine.inference.physical_cores`` sizes), at most GENERATION_WORKERS."""
    import os
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(GENERATION_WORKERS, cores))


def _generate(anim, q_in: queue.Queue, q_out: queue.Queue, stop: threading.Event, side: bool, order: _Order):
    """One generation worker: batches of (parameters, driver frames, poses) in, (number, frames) out."""
    try:
        while True:
            with order.lock:           # taken and numbered together: the numbers follow the driver's order
                item = q_in.get()
                seq = order.next
                order.next += 1
            if item is _END:
                q_in.put(_END)         # for the other workers
                break
            if stop.is_set():
                break
            params, lefts, poses, mouths = item
            frames = anim.animate_batch(np.stack(params), None if poses is None else np.stack(poses), mouths)
            if side:
                frames = [_side(left, f) for left, f in zip(lefts, frames)]
            if not _put(q_out, (seq, frames), stop):
                raise _Stopped()
    except BaseException:
        stop.set()                     # the batches after this one would wait for it for ever
        raise
    finally:
        try:
            q_out.put(_END, timeout=5)
        except queue.Full:
            pass


class _TrackJob:
    def __init__(self, anim, path, n_exp, fps, audio, no_audio, max_seconds, side, motion="expression",
                 expression_scale=1.0, blinks=True):
        from engine.tracks import ParamTrack, load_track

        from .drivers import DriverMix, IdleBlinks, TrackDriver
        self.track = path if isinstance(path, ParamTrack) else load_track(path, check_audio=audio is None
                                                                           and not no_audio)
        self.anim = anim
        self.n_exp = n_exp
        self.driver = TrackDriver(self.track, n_exp, anim.n_params, loop=False, face_model=anim.face_model,
                                  rest_lids=anim.source.lids)
        self.mix = DriverMix(n_exp, anim.n_params, anim.source_params)
        self.mix.expression_scale = expression_scale
        self.mix.hold_expression = motion == "speech"
        self.mix.set_driver("track", self.driver)
        for g in self.driver.groups():
            self.mix.route(g, "track")
        if "exp" not in self.driver.groups():
            self.mix.route("exp", "rest")
            if blinks:          # sound or a speech-only track: the portrait blinks as people do (IdleBlinks)
                self.mix.idle = IdleBlinks(anim.face_model, anim.source.lids)
        self.head = motion == "head" and self.track.pose is not None
        self.fps = float(fps or self.track.fps or 30.0)
        check_fps(self.fps, f"the track {path}" if not fps else "--fps")
        dur = self.track.duration
        if max_seconds is not None:
            dur = min(dur, float(max_seconds))
        check_length(dur, f"the track {path}")
        self.n_frames = max(1, int(round(dur * self.fps)))
        self.missing = 0
        self.side = side
        self.audio = None
        if not no_audio:
            from .media import track_audio
            a = track_audio(self.track, AUDIO_RATE, 2, audio=audio, duration=self.n_frames / self.fps)
            if a is not None:
                self.audio = _fit_audio(a, self.n_frames / self.fps)

    def left_width(self, h: int) -> int:
        return _left_width(256, 256, h)

    def produce(self, q: queue.Queue, stop: threading.Event, batch: int):
        try:
            params, lefts, start = [], [], 0
            for i in range(self.n_frames):
                if stop.is_set():
                    return
                p = self.mix.value(i / self.fps)
                params.append(p)
                lefts.append(_bars(p, self.n_exp, 256, 256) if self.side else None)
                if len(params) == batch or i == self.n_frames - 1:
                    poses = [self.driver.pose(k / self.fps) for k in range(start, i + 1)] if self.head else None
                    if not _put(q, (params, lefts, poses, None), stop):
                        return
                    params, lefts, start = [], [], i + 1
        finally:
            _put_end(q, stop)

    def close(self):
        pass


def face_point(value, option: str = "--face", picture: str = "the driver video") -> tuple[float, float]:
    """``option`` X,Y (a pixel of ``picture``) -> (x, y)."""
    parts = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
    try:
        x, y = (float(v) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{option} wants X,Y: a pixel of {picture}, e.g. 320,180; got {value!r}") from None
    if not (math.isfinite(x) and math.isfinite(y) and x >= 0 and y >= 0):
        raise ValueError(f"{option} wants a pixel of {picture} (non-negative X,Y), got {value!r}")
    return x, y


class _VideoJob:
    def __init__(self, anim, path, n_exp, fps, audio, no_audio, max_seconds, side, mode, params="mesh",
                 motion="expression", face=None, neutral_at=None, expression_scale=1.0, mouth="driver",
                 neutral_from=None):
        self.params = params
        self.mouth = mouth
        self.expression_scale = expression_scale
        self.head = motion == "head"
        # --motion speech: the portrait's own expression (DriverMix.hold_expression's rest), kept once
        self.held_expression = anim.source_params[:n_exp] if motion == "speech" else None
        self.face = face
        from engine.video import video_info
        self.info = video_info(path)
        self.path = path
        self.anim = anim
        self.n_exp = n_exp
        self.mode = mode
        self.fps = float(self.info.fps)
        if fps is not None and abs(float(fps) - self.fps) > 1e-3:
            log.warning("--fps %s ignored: a video driver renders at its own %.3f fps", fps, self.fps)
        check_fps(self.fps, f"the video {path}")
        dur = self.info.duration
        if max_seconds is not None:
            dur = min(dur, float(max_seconds))
        check_length(dur, f"the video {path}")
        self.max_frames = int(round(dur * self.fps)) if max_seconds is not None else None
        self.n_frames = min(self.info.frame_count, self.max_frames or self.info.frame_count)
        if neutral_at not in (None, "auto") and neutral_at >= self.info.duration:
            raise ValueError(f"--neutral-at {neutral_at:g} is past the end of {path} ({self.info.duration:.2f} s)")
        self.neutral_at = neutral_at
        self.neutral_from = neutral_from
        if face is not None and not (face[0] < self.info.width and face[1] < self.info.height):
            raise ValueError(f"--face {face[0]:g},{face[1]:g} is outside the driver video "
                             f"({self.info.width}x{self.info.height})")
        self.side = side
        self.missing = 0
        self.lost = 0
        self.recalibrated: list[float] = []
        self.audio = None
        if not no_audio:
            from .media import load_audio
            src = audio if audio is not None else (path if self.info.has_audio else None)
            if src is not None:
                seconds = self.n_frames / self.fps
                self.audio = _fit_audio(load_audio(src, AUDIO_RATE, 2, duration=seconds), seconds)
        self.tracker = None

    def left_width(self, h: int) -> int:
        return _left_width(self.info.width, self.info.height, h)

    def produce(self, q: queue.Queue, stop: threading.Event, batch: int):
        from engine.animator import to_model_input
        from engine.face import FILE_SAMPLES, FaceTracker
        from engine.video import read_frames

        from engine.geometry import mouth_opening
        from engine.mouth import MouthCutter
        from engine.person import SAME_PERSON_DISTANCE
        from engine.pose import measure

        from .drivers import PERSON_REFERENCE, FaceDriver

        def read_batch(results):
            if self.params == "mesh":
                return drv.read_mesh(np.stack([r.landmarks for r in results]))
            x = np.concatenate([to_model_input(r.crop) for r in results])
            return np.asarray(self.anim.models.regress(x), np.float32)
        try:
            drv = FaceDriver(self.anim.regress, self.anim.n_params, self.anim.image_size, mode=self.mode,
                             rest=self.anim.rest_params, rest_pose=self.anim.source.pose,
                             rest_lids=self.anim.source.lids, n_exp=self.n_exp, fps=self.fps,
                             tracker=None, params=self.params, fit=self.anim.fit,
                             face_model=self.anim.face_model, neutral_mouth=self.anim.source_mouth,
                             expression_scale=self.expression_scale)
            # a mesh driver's crops cut only when read (its person check); the head reads every one
            self.tracker = FaceTracker(size=self.anim.image_size, fps=self.fps, max_faces=1, pick=self.face,
                                       lazy_crop=self.params == "mesh")
            ahead = drv.lookahead()   # the whole video is known: the head without the smoothing's lag
            cut_mouth = MouthCutter()
            pending = []   # (rgb, t, result, the frame's mouth)
            # Relative mode: the driver's neutral (drivers.neutral_of) from its first second of faces (at
            # least 8; looked for in the first 2 s); those frames wait until it is known. With --neutral-at,
            # from the second of faces from that time (auto: from frames spread over the whole video), read by
            # a tracker of its own before anything renders. With --neutral-from, the expression's neutral from
            # that file, read first, and the head's neutral pose alone from the video's first second
            # (``pose_only``, until a cut to someone else calibrates on the video).
            calibrated = self.mode != "relative"
            k_calib, calib_s, look = 8, 1.0, int(round(2 * self.fps))
            pose_only = False

            def faces_in(read, where):
                """The faces among ``read`` (tracker results); none: a clear error."""
                ok = [r for r in read if r.ok]
                if not ok:
                    why = next((r.message for r in reversed(read) if r.message), "")
                    raise ValueError(f"no face in the {len(read)} frames {where} of {self.path}"
                                     f"{f' (last: {why})' if why else ''}: cannot calibrate the driver's "
                                     "neutral (use --mode absolute, another --neutral-at, or another video)")
                return ok

            def calibrate(read, where, heads=None):
                """The neutral from the faces among ``read``; their p as read from now on."""
                ok = faces_in(read, where)
                heads = [measure(r.landmarks) for r in ok] if heads is None else heads
                return drv.calibrate_on(read_batch(ok), [mouth_opening(r.landmarks) for r in ok], heads,
                                        [r.crop_landmarks for r in ok], [r.crop for r in ok])

            if not calibrated and self.neutral_from is not None:
                try:
                    drv.calibrate_on_file(self.neutral_from, stop=stop)
                except ValueError as e:
                    raise ValueError(f"--neutral-from: {e}") from None
                if stop.is_set():
                    return
                pose_only = True

            if not calibrated and self.neutral_at is not None:
                read, faces = [], []
                auto = self.neutral_at == "auto"
                # auto: every step-th frame of what renders (at most FILE_SAMPLES, as a file's), relaxed ones kept by
                # calibrate_on; else the second of faces from the time asked for
                step = max(1, -(-self.n_frames // FILE_SAMPLES)) if auto else 1
                some = (read_frames(self.path, max_frames=self.n_frames, lazy=True) if auto else
                        read_frames(self.path, start=self.neutral_at, end=self.neutral_at + 2.0, lazy=True))
                with FaceTracker(size=self.anim.image_size, fps=self.fps / step, max_faces=1, pick=self.face) as tracker:
                    for i, (frame, t) in enumerate(some):
                        if stop.is_set():
                            return
                        if i % step:
                            continue
                        read.append(tracker.process(frame, t))
                        faces += [t] if read[-1].ok else []
                        if not auto and len(faces) >= k_calib and faces[-1] - faces[0] >= calib_s:
                            break
                calibrate(read, "over the video" if auto else f"from {self.neutral_at:g} s")
                calibrated = True

            def flush(calibrate_here: bool = False):
                ok = [r for _, _, r, _ in pending if r.ok]
                heads = [measure(r.landmarks) for r in ok]
                if calibrate_here and pose_only:
                    faces_in([r for _, _, r, _ in pending], "at the start")
                    spread = ok[::max(1, len(ok) // PERSON_REFERENCE)][:PERSON_REFERENCE]
                    far = drv.person_distance([r.crop for r in spread])
                    if far is not None and far > SAME_PERSON_DISTANCE:
                        raise ValueError(f"--neutral-from {self.neutral_from} shows someone else than {self.path} "
                                         f"(face-recognition distance {far:.2f}; the same person's faces are "
                                         f"within {SAME_PERSON_DISTANCE}): give a photo or video of the driver's own "
                                         "face at rest")
                    drv.calibrate_pose(heads)
                    regs = read_batch(ok)
                elif calibrate_here:
                    regs = calibrate([r for _, _, r, _ in pending], "at the start", heads)
                else:
                    regs = read_batch(ok) if ok else np.zeros((0, self.anim.n_params), np.float32)
                it, it_head = iter(regs), iter(heads)
                ready = []
                for rgb, t, r, mouth in pending:
                    if r.ok:
                        drv.update(next(it), t, r.status, r.message, head=next(it_head))
                    else:
                        self.missing += 1
                        self.lost += r.status == "lost"
                        drv.update(None, t, r.status, r.message)
                    ready += ahead.push(t, drv.vector(t), drv.target, (rgb, mouth))
                pending.clear()
                return send(ready)

            def send(ready) -> bool:
                """Frames whose values are final ((vector, driver frame) from ``ahead``, half a second at a time)
                to the generation workers, ``batch`` at a time."""
                for start in range(0, len(ready), batch):
                    params, lefts, poses, mouths = [], [], [], []
                    for v, (rgb, mouth) in ready[start:start + batch]:
                        p, pose = drv.split(v)
                        if self.held_expression is not None:
                            p[:self.n_exp] = self.held_expression
                        params.append(p)
                        poses.append(pose)
                        lefts.append(rgb)
                        mouths.append(mouth)
                    if not _put(q, (params, lefts, poses if self.head else None,
                                    mouths if self.mouth == "driver" else None), stop):
                        return False
                return True

            # Decoded frames are converted to RGB only where needed: the face's square for the mesh
            # (and a thumbnail when searching for the face), the whole frame only for --side-by-side.
            for i, (frame, t) in enumerate(read_frames(self.path, max_frames=self.n_frames, lazy=True)):
                if stop.is_set():
                    return
                res = self.tracker.process(frame, t)
                if calibrated and res.ok and drv.person_changed(lambda: res.crop, t):
                    # someone else (a cut to another person): the frames before keep the neutral they had, these
                    # wait for a calibration on the new face
                    if pending and not flush():
                        return
                    drv.calibrate()
                    if pose_only:
                        log.warning("the driver's face at %.2f s is someone else than --neutral-from %s shows: "
                                    "their neutral is taken from the video", t, self.neutral_from)
                    calibrated = pose_only = False
                    self.recalibrated.append(float(t))
                mouth = cut_mouth(frame, res.landmarks, t) if self.mouth == "driver" and res.ok else None
                pending.append((self._left(frame) if self.side else None, t, res, mouth))
                if not calibrated:
                    res.crop         # the calibration's crops (the person it remembers) cut now: its frames let go
                    faces = [t for _, t, r, _ in pending if r.ok]
                    if (len(faces) >= k_calib and faces[-1] - faces[0] >= calib_s) or len(pending) >= look:
                        calibrated = True
                        if not flush(calibrate_here=True):
                            return
                elif len(pending) >= batch and not flush():
                    return
            if pending and not flush(calibrate_here=not calibrated):
                return
            send(ahead.finish())
        finally:
            _put_end(q, stop)

    def _left(self, frame) -> np.ndarray:
        """The driver frame for the side-by-side panel, already shrunk to the output's height."""
        h = self.anim.output_shape[0]
        fh, fw = frame.shape[:2]
        return frame.thumbnail(max(1, int(math.ceil(max(fh, fw) * h / fh))))[0]

    def close(self):
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None


def _fit_audio(pcm: np.ndarray, seconds: float) -> np.ndarray:
    n = int(round(seconds * AUDIO_RATE))
    if len(pcm) < n:
        pcm = np.concatenate([pcm, np.zeros((n - len(pcm), pcm.shape[1]), pcm.dtype)])
    return np.ascontiguousarray(pcm[:n])


# --------------------------------------------------------------------------------------------- CLI
def add_source_face_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source-face", default=None, metavar="X,Y",
                   help="a portrait with several faces: animate the one at this pixel of it (default: the largest)")


def say_faces(info, picked) -> None:
    """A portrait with several faces (``SourceInfo``): say where each is, and how to animate another than the
    largest (``--source-face``) where none was picked."""
    if info.n_faces > 1:
        log.warning(info.message + ("" if picked is not None else
                                    ": --source-face X,Y animates the one at that pixel"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.animator import add_framing_arguments, add_precision_argument, add_source_mouth_argument

    from .drivers import add_expression_scale_argument
    p.add_argument("--source", required=True, help="the portrait to animate (an image with a face)")
    add_source_face_argument(p)
    p.add_argument("--driver", required=True,
                   help="a driving video (its face drives the portrait), a parameter track (.npz) or a sound "
                        "file (wav, mp3, m4a, ogg, flac: the audio model moves the lips)")
    p.add_argument("--audio", default=None, help="audio to put in the output (default: the driver's own)")
    p.add_argument("--no-audio", action="store_true", help="write no audio")
    p.add_argument("-o", "--output", required=True,
                   help="output video: .mp4, .mov or .mkv (H.264 + AAC), .webm (VP9 + Opus: plays in any browser) "
                        "or .gif (no sound; about 1.5 MB a second at 512 px and 30 fps: --size 256 for a quarter)")
    p.add_argument("--side-by-side", action="store_true", help="driver | result layout")
    p.add_argument("--checkpoint", "--model", dest="checkpoint", default=None,
                   help="model folder (default: the embedded default model)")
    p.add_argument("--backend", default="auto", help="inference backend: auto, torch, onnxruntime, tensorrt")
    add_framing_arguments(p)
    p.add_argument("--fps", type=float, default=None, help="output fps for a track driver (default: the track's) or a sound file (default 25)")
    p.add_argument("--mode", choices=["relative", "absolute"], default="relative",
                   help="video driver: relative (the portrait's own expression plus the driver's change "
                        "from its neutral; default) or absolute (copy the driver's expression)")
    p.add_argument("--params", choices=["mesh", "head"], default="mesh",
                   help="a video driver's parameters: 'mesh', the blendshape fit of its face mesh (default: it "
                        "follows the driver better, README), or 'head', the discriminator's regression head")
    p.add_argument("--motion", choices=["speech", "expression", "head"], default=None,
                   help="'head' (expression + the driver's head turns, nods, tilts and moves and where "
                        "its eyes look, within engine.pose.LIMITS; the default where the model can: a video's face, a track with a pose), "
                        "'expression' (expression and speech only: SliderGAN's) or 'speech' (the lips and jaw only: "
                        "dubbing; the portrait keeps its own expression and head)")
    p.add_argument("--renderer", choices=["model", "warp-only"], default="model",
                   help="'model' (the generator) or 'warp-only' (no network: the portrait warped along its mesh)")
    add_source_mouth_argument(p)
    from engine.mouth import add_interior_argument
    add_interior_argument(p)
    add_precision_argument(p)
    add_expression_scale_argument(p)
    p.add_argument("--face", default=None, metavar="X,Y",
                   help="a driver video with several people: follow the face at this pixel of its first frames "
                        "(default: the largest face); one face is followed, never another")
    p.add_argument("--neutral-at", default=None, metavar="SECONDS|auto",
                   help="a driver video in relative mode: take its neutral from its face at this time (a second "
                        "of frames from there) instead of its first second, for a video that starts "
                        "mid-expression (the page's \"Calibrate neutral\" at a moment of your choosing); 'auto': "
                        "from its faces over the whole video (up to 120 frames spread over it)")
    p.add_argument("--neutral-from", default=None, metavar="FILE",
                   help="a driver video in relative mode: take its neutral expression from this photo or video "
                        "of the same face at rest, for a driver that holds an expression all through (an "
                        "angry face from the first frame to the last stays angry only so); the head's neutral "
                        "pose still from the video's first second")
    p.add_argument("--no-blinks", dest="blinks", action="store_false",
                   help="a portrait driven by sound or a track without expression blinks as people do, about "
                        "every 3.5 s (default); with this its eyes stay as they are")
    p.add_argument("--max-seconds", type=float, default=None, help="render at most this many seconds")
    p.add_argument("--batch", type=int, default=8, help="frames per model call (default 8)")
    p.add_argument("--crf", type=int, default=None,
                   help="quality, lower is better: H.264 0-51 (default 20), VP9 0-63 (default 32)")
    p.add_argument("--preset", default=None, choices=X264_PRESETS, metavar="PRESET",
                   help="x264 preset (.mp4, .mov, .mkv; default superfast: 3.7 ms a 512 px frame here, against 5.6 "
                        "for veryfast; slower presets make smaller files)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads per model call, and OpenCV's while rendering (default 1: the "
                        "pipeline's stages already run side by side)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    res = render(args.source, args.driver, args.output, audio=args.audio, checkpoint=args.checkpoint,
                 backend=args.backend, size=args.size, fps=args.fps, side_by_side=args.side_by_side,
                 mode=args.mode, no_audio=args.no_audio, batch=args.batch, crf=args.crf,
                 preset=args.preset, max_seconds=args.max_seconds, progress=not args.quiet,
                 threads=args.threads, params=args.params, renderer=args.renderer, motion=args.motion,
                 face=args.face, source_mouth=args.source_mouth, precision=args.precision,
                 neutral_at=args.neutral_at, neutral_from=args.neutral_from,
                 expression_scale=args.expression_scale, framing=args.framing,
                 source_face=args.source_face, mouth_interior=args.mouth_interior, blinks=args.blinks)
    print(res.summary())
    return 0
