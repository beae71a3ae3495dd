"""``slidergan serve``: the WebRTC server and its browser page (aiohttp + aiortc).

Routes (JSON errors are ``{"error": "..."}`` with a 4xx/5xx status):

  GET  /                       the page (streaming/static), carrying this run's token in
                               ``<meta name="slidergan-token">``
  GET  /api/info               parameter names and groups, presets, portraits, tracks, limits (and the
                               token, for the server's own origin and ``--allow-origin`` ones)
  GET  /api/portraits          portraits to choose from;  GET /api/portraits/{id}.jpg  its framed image
  POST /api/portraits          upload a portrait (multipart field "image", or the raw image as body):
                               200 with its description (a group photo: "other_faces", its other
                               faces, each listed as a portrait of its own); 413 over 16 MB or over the image limits
                               (engine.images: 16384 px a side, 50 megapixels); 422 when it is not a
                               readable image or holds no usable face; 503 when too many are in progress
  GET  /api/tracks             parameter tracks (``--tracks``)
  POST /offer                  {"sdp", "type": "offer", "portrait", "exp", "speech", "track", "mode", "params",
                               "motion", "mouth", "interior", "scale", "framing"}
                               -> the answer; 400 on a bad offer, 413 over 256 KB, 503 when all
                               sessions are in use
  GET  /api/sessions           live sessions and their figures ("closing": sessions still being closed)
  GET  /api/preview?p=a,b,...  the blendshape model's 3D face for parameters p (PNG; 404 without one)

Who may talk to the server (a page on another site, or one reached by DNS rebinding, must not drive
it): every request must name this server in its Host header (127.0.0.1, localhost or [::1] with the
server's port, the ``--host`` address, the address the connection came in on, or an ``--allow-host``
name), else 421. Requests that change state (every method but GET/HEAD/OPTIONS) must come from the
server's own origin or an ``--allow-origin`` one when they carry an Origin header, and must carry
this run's random token in the ``X-Slidergan-Token`` header, else 403. The page has the token from
its ``<meta>``; ``streaming.client`` reads it from there too; a page served from an ``--allow-origin``
origin gets it from ``/api/info`` (CORS answers go to those origins only).

A session is one RTCPeerConnection. The browser sends its webcam (optional) and opens a data channel;
the server sends back the animated portrait (framing "square": 512 x 512 round the face by default;
"full": the whole photo, its long side 512, the animated face pasted back into it) and an audio track (a parameter
track's audio, else silence). Only the newest webcam frame is used: frames that arrive while one is
being processed are dropped, so latency stays bounded. A producer task renders frames on the
session's worker thread while aiortc encodes the previous one, and ``recv`` hands out the newest.
Audio and video share one clock: video frames take the track's parameters at the audio clock time
(ahead by the measured render latency) so lips stay in sync for the whole track. The browser may
also send its microphone (an audio track): the audio model (``engine.audio``, ``drivers.MicDriver``)
turns each 20 ms of it into speech parameters as it arrives, for the "mic" route of the speech group
(with the webcam or sliders on the expression); silence closes the mouth, and a dropout eases it
closed rather than freezing it.

Data channel messages (JSON), browser -> server:
  {"type": "route", "exp": "face|track|sliders|rest", "speech": ...|mic}   which driver moves what
  {"type": "mode", "mode": "relative|absolute"}      {"type": "calibrate"}
  {"type": "mouth", "mouth": "closed|own"}            (a relative webcam starts from both mouths closed, or as they are)
  {"type": "interior", "interior": "driver|drawn"}    (inside the open mouth: the webcam's own teeth and tongue, or drawn)
  {"type": "params", "params": "mesh|head"}           (the webcam's p: blendshape fit of its mesh, or D_p)
  {"type": "motion", "motion": "head|expression|speech"}   (expression + head pose, expression only, or the lips and jaw only)
  {"type": "scale", "value": s}                       (the drivers' expression and speech motion times s, 0..3)
  {"type": "framing", "framing": "square|full"}       (the square round the face, or the whole photo)
  {"type": "pose", "index": i, "value": v}            (pin a head-pose slider; v in units of its limit, -1..1)
  {"type": "slider", "index": i, "value": v}          {"type": "sliders", "values": [...]}
  {"type": "preset", "name": "..."}                   {"type": "release"}   (unpin the sliders)
  {"type": "portrait", "id": "..."}                   {"type": "track", "id": "..." | null}
  {"type": "face", "x": 0..1, "y": 0..1}              (several people: follow the webcam face at that point)
  {"type": "ping", "t": ...}                          {"type": "bye"}
server -> browser: "hello" (names, presets, state), "stats" (twice a second: fps, latency p50/p95,
face status, current parameters), "pong", "error" {"message"}. Every message gets exactly one
reply: the ones above, "ok" {"of": type} for slider/sliders/release, or "error" {"message", "of"}
for anything malformed (not JSON, over 16 KB, nested too deeply, an unknown type, an index that is
not an integer in 0..n-1, a value that is not a finite number).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import fractions
import json
import logging
import math
import os
import secrets
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.animator import FRAMINGS, check_framing
from engine.images import MAX_PIXELS, MAX_SIDE, ImageReadError, ImageTooLargeError, decode_image, load_image
from engine.pose import LIMITS as POSE_LIMITS
from engine.pose import N_POSE, POSE_NAMES, POSE_PRESETS, POSE_UNITS, from_unit, pose_labels, to_unit

from .rtp import marker_frame_buffer, mic_buffer, use_buffer

log = logging.getLogger("slidergan.serve")

STATIC = Path(__file__).resolve().parent / "static"
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_UPLOAD = 16 * 1024 * 1024
MAX_UPLOADED_PORTRAITS = 32
MAX_FACES_PER_PHOTO = 4         # a group photo's largest faces, each listed as a portrait of its own
MAX_OFFER = 256 * 1024          # an SDP offer is a few KB
MAX_MESSAGE = 16 * 1024         # a data channel message (the largest, "sliders", is about 1 KB)
IMAGE_WORKERS = 2               # uploads decoded and thumbnailed at once, off the event loop
MAX_UPLOADS_IN_PROGRESS = 8     # more at once are answered 503
TOKEN_HEADER = "X-Slidergan-Token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020
VIDEO_CLOCK = 90000


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ------------------------------------------------------------------------------------- portraits
@dataclass
class Portrait:
    id: str
    name: str
    image: np.ndarray | None                 # RGB, dropped once prepared
    prepared: object | None = None           # engine.animator.PreparedSource, framing "square"
    whole: object | None = None              # the same, framing "full" (the whole photo)
    error: str | None = None
    uploaded: bool = False
    thumb: bytes | None = None               # JPEG of the whole photo (of its face, in a group photo), at most 256 px
    face: np.ndarray | None = None           # the face of a group photo to animate (its mesh); None: the largest
    others: list = field(default_factory=list)   # a group photo's other faces (Portraits), made by Engine.prepare
    lock: threading.Lock = field(default_factory=threading.Lock)

    def framed(self, framing: str):
        """The prepared portrait in a framing ("square" or "full"); None until prepared."""
        return self.whole if framing == "full" else self.prepared

    def describe(self) -> dict:
        d = {"id": self.id, "name": self.name, "uploaded": self.uploaded, "url": f"/api/portraits/{self.id}.jpg"}
        if self.prepared is not None:
            d.update(self.prepared.info.to_json())
            d.pop("params", None)
        if self.whole is not None:
            d["output_full"] = self.whole.info.output
        if self.others:
            d["message"] = (f"{len(self.others) + 1} faces in this photo: each is a portrait of its own "
                            f"(this one the largest)")
        if self.error:
            d["error"] = self.error
        return d


@dataclass
class TrackEntry:
    id: str
    name: str
    path: Path
    track: object
    audio: np.ndarray | None = None
    audio_loaded: bool = False

    def describe(self) -> dict:
        return {"id": self.id, "name": self.name, "duration": round(self.track.duration, 3),
                "fps": self.track.fps, "frames": len(self.track), "audio": self.track.audio_path is not None,
                "expression": self.track.expression is not None}


# ------------------------------------------------------------------------------------ the engine
class Engine:
    """What all sessions share: the models, the portraits, the tracks, the presets."""

    def __init__(self, models, output_size: int = 512, fps: float = 30.0, max_sessions: int = 2,
                 presets: dict | None = None, n_exp: int | None = None, renderer: str = "model",
                 audio_net=None, checkpoint=None, source_mouth: str = "closed", framing: str = "square",
                 mouth_interior: str = "driver"):
        from engine.animator import Animator
        from engine.mouth import check_interior
        check_framing(framing, output_size)
        self.models = models
        self._audio_net = audio_net          # the audio model (microphone route), loaded on first use
        self._audio_error: str | None = None
        self._audio_lock = threading.Lock()
        self.checkpoint = checkpoint
        self.output_size = int(output_size)
        self.renderer = renderer
        self.source_mouth = source_mouth     # engine.animator.Animator's: a relative webcam's starting mouth
        self.framing = framing               # a session's first framing (the page switches it)
        self.mouth_interior = check_interior(mouth_interior)   # a session's first (engine.mouth; the page switches it)
        self.fps = float(fps)
        self.max_sessions = int(max_sessions)
        self.param_names = list(models.param_names)
        self.n_params = len(self.param_names)
        self.n_exp = int(n_exp if n_exp is not None else getattr(models, "n_exp", 0) or
                         sum(not n.lower().startswith("speech") for n in self.param_names))
        self.image_size = int(models.image_size)
        # every portrait in both framings, the face found once: the square (output_size a side) and the
        # whole photo (output_size its long side)
        self._prep = {f: Animator(models, output_size=self.output_size, framing=f, renderer=renderer)
                      for f in FRAMINGS}
        self.portraits: dict[str, Portrait] = {}
        self._listing = threading.Lock()     # held by whoever lists portraits (Engine._list)
        self.tracks: dict[str, TrackEntry] = {}
        from engine.animator import face_model_for
        self.face_model = face_model_for(models)     # blendshape model: presets, 3D preview
        # what the sliders are called: the blendshape model's readable labels, else the names
        self.param_labels = (self.face_model.param_labels if self.face_model is not None
                             and self.face_model.param_names == self.param_names else list(self.param_names))
        if presets is None:
            from .presets import make_presets
            presets = make_presets(self.param_names, self.n_exp, self.face_model)
        self.presets = {k: np.asarray(v, np.float32) for k, v in presets.items()}
        self.sessions: dict[str, "Session"] = {}
        self.pending = 0
        self.closing = 0                     # sessions being closed (gone from ``sessions`` already)
        self.uploads_in_progress = 0
        self.prep_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="portrait-prep")
        self.warm_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="portrait-warm")
        # Decoding and thumbnailing uploads: a few at a time, never on the event loop.
        self.image_pool = concurrent.futures.ThreadPoolExecutor(IMAGE_WORKERS, thread_name_prefix="image")
        # The sessions' two stages run on two pools shared by all sessions (one worker per session
        # each; a session has at most one job in each at a time): threads made once and reused,
        # where a pool per session made and joined two threads for every session. (Memory over
        # many sessions: see limit_malloc_arenas and release_memory_soon.)
        self.drive_pool = concurrent.futures.ThreadPoolExecutor(self.max_sessions, thread_name_prefix="drive")
        self.render_pool = concurrent.futures.ThreadPoolExecutor(self.max_sessions, thread_name_prefix="render")
        self._trim_handle = None

    def start_threads(self) -> None:
        """Start every pool's threads now (``serve`` does), so the server's thread count is the same
        before its first session and after its last."""
        for pool in (self.prep_pool, self.warm_pool, self.image_pool, self.drive_pool, self.render_pool):
            prestart(pool)

    def release_memory_soon(self, delay: float = 0.25) -> None:
        """After a session: once it is freed, hand the heap it leaves free back to the OS (on a
        worker thread). glibc keeps freed memory in its arenas otherwise, and a server that has
        run many sessions in a row grew by 100+ MB before levelling off."""
        if _malloc_trim() is None:
            return
        loop = asyncio.get_running_loop()
        if self._trim_handle is not None:
            self._trim_handle.cancel()

        def trim():
            self._trim_handle = None
            if not loop.is_closed():
                loop.run_in_executor(None, release_memory)
        self._trim_handle = loop.call_later(delay, trim)

    # portraits -----------------------------------------------------------------------
    def add_portrait_file(self, path: Path) -> Portrait:
        """A portrait from a file (``--portraits``). ImageReadError (a ValueError) when it is not a
        readable image or is over the limits (engine.images), FileNotFoundError when missing."""
        rgb = load_image(path)
        p = Portrait(id=path.stem, name=path.name, image=rgb, thumb=_thumbnail(rgb))
        self._list([p])
        return p

    def _list(self, add: list, drop: tuple = ()) -> None:
        """List portraits (and unlist ``drop``): the event loop and the warm-up thread both add, so the
        dictionary is replaced, never changed in place, and readers iterate a whole one."""
        with self._listing:
            listed = {k: v for k, v in self.portraits.items() if k not in drop}
            for p in add:
                p.id = _slug(p.id, listed)
                listed[p.id] = p
            self.portraits = listed

    def new_upload(self, rgb: np.ndarray, name: str, thumb: bytes | None = None) -> Portrait:
        """An uploaded portrait, not listed yet: ``add_upload`` lists it once it proved usable."""
        pid = _slug("upload-" + uuid.uuid4().hex[:8], self.portraits)
        return Portrait(id=pid, name=name, image=rgb, uploaded=True,
                        thumb=thumb if thumb is not None else _thumbnail(rgb))

    def add_upload(self, p: Portrait) -> Portrait:
        """List a prepared upload (and a group photo's other faces, prepared in the background); at the cap
        the oldest uploads no session uses make room (only now, so a failed upload never costs a good one
        its place)."""
        new = [p, *p.others]
        uploaded = [q for q in self.portraits.values() if q.uploaded]
        in_use = {s.portrait_id for s in self.sessions.values()}
        spare = [q.id for q in uploaded if q.id not in in_use]
        self._list(new, drop=tuple(spare[:max(0, len(uploaded) + len(new) - MAX_UPLOADED_PORTRAITS)]))
        for q in p.others:
            self.warm_pool.submit(self.prepare, q)
        return p

    def prepare(self, p: Portrait):
        """Detect, align and encode a portrait once (blocking; run it in a worker thread)."""
        from engine.face import FaceError
        with p.lock:
            if p.prepared is not None or p.error is not None:
                return p.prepared
            try:
                p.prepared = self._prep["square"].prepare(p.image, name=p.name, landmarks=p.face)
                p.whole = self._prep["full"].prepare(p.image, landmarks=p.prepared.info.landmarks, name=p.name)
                if p.face is None:
                    self._split_faces(p)
                p.image = None
            except FaceError as e:
                p.prepared, p.error = None, str(e)
        if p.others and p.id in self.portraits:      # listed already (--portraits): its faces are listed now
            new = [q for q in p.others if q.id not in self.portraits]
            self._list(new)
            for q in new:
                self.warm_pool.submit(self.prepare, q)
        return p.prepared

    def _split_faces(self, p: Portrait) -> None:
        """A group photo: each of its largest faces (up to MAX_FACES_PER_PHOTO, each large enough to animate)
        becomes a portrait of its own, named by its rank in size, its thumbnail its face; ``p`` keeps the
        largest."""
        from engine.face import MIN_FACE_PX, alignment_matrix, matrix_scale
        size = self._prep["square"].image_size
        faces = [lm for lm in p.prepared.info.faces or ()
                 if size / matrix_scale(alignment_matrix(lm, size)) >= MIN_FACE_PX][:MAX_FACES_PER_PHOTO]
        if len(faces) < 2:
            return
        name = p.name
        p.name, p.thumb = f"{name} (face 1 of {len(faces)})", _face_thumbnail(p.image, faces[0])
        p.others = [Portrait(id=f"{p.id}-face{k}", name=f"{name} (face {k} of {len(faces)})", image=p.image,
                             uploaded=p.uploaded, thumb=_face_thumbnail(p.image, lm), face=lm)
                    for k, lm in enumerate(faces[1:], 2)]

    def warm_up(self) -> None:
        """Prepare every portrait in the background (offers then start at once, and the page learns
        which photos have no usable face); an offer's own preparation does not wait for this."""
        for p in list(self.portraits.values()):
            self.warm_pool.submit(self.prepare, p)
        # the audio model too (loaded and converted to onnxruntime once, not in a session's first offer)
        self.warm_pool.submit(lambda: self.audio_net)

    async def prepared(self, p: Portrait, framing: str = "square"):
        """The portrait prepared in ``framing`` (HTTPError 422 when it holds no usable face)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.prep_pool, self.prepare, p)
        if p.error:
            raise HTTPError(422, p.error)
        return p.framed(framing)

    # tracks --------------------------------------------------------------------------------
    def add_track_file(self, path: Path) -> TrackEntry | None:
        from engine.tracks import TrackError, load_track
        try:
            tr = load_track(path)
            tr.check_widths(n_speech=self.n_params - self.n_exp, n_expression=self.n_exp)
        except (TrackError, FileNotFoundError) as e:
            log.warning("track %s not used: %s", path, e)
            return None
        tid = _slug(path.stem, self.tracks)
        e = TrackEntry(id=tid, name=path.name, path=path, track=tr)
        self.tracks[tid] = e
        return e

    def track_audio(self, e: TrackEntry) -> np.ndarray | None:
        if not e.audio_loaded:
            from .media import track_audio
            try:
                e.audio = track_audio(e.track, AUDIO_RATE, 2)
            except Exception as ex:  # a broken audio file: the track still drives the face
                log.warning("audio of track %s not usable: %s", e.name, ex)
                e.audio = None
            e.audio_loaded = True
        return e.audio

    @property
    def preset_names(self) -> list[str]:
        """The expression presets, and the head's where the model can move it."""
        return sorted(self.presets) + (list(POSE_PRESETS) if self.moves_head else [])

    @property
    def moves_head(self) -> bool:
        from engine.animator import moves_head
        return moves_head(self.models, self.renderer)

    @property
    def audio_net(self):
        """The audio model for the microphone route (the model folder's own ``audio.safetensors``, else
        the embedded default's), or None with ``audio_error`` saying why."""
        with self._audio_lock:
            if self._audio_net is None and self._audio_error is None:
                from engine.audio import audio_model_for
                try:
                    self._audio_net = audio_model_for(self.checkpoint, self.param_names[self.n_exp:])
                except (ValueError, OSError) as e:
                    self._audio_error = str(e)
                    log.warning("no microphone driver: %s", e)
            return self._audio_net

    @property
    def audio_error(self) -> str | None:
        return None if self.audio_net is not None else self._audio_error

    @property
    def params_sources(self) -> list[str]:
        """Where a webcam's p may come from: the mesh's blendshape fit needs the model's blendshapes."""
        from .drivers import PARAMS_SOURCES
        return list(PARAMS_SOURCES) if self.face_model is not None else ["head"]

    def info(self) -> dict:
        return {"param_names": self.param_names, "param_labels": self.param_labels, "n_exp": self.n_exp,
                "n_params": self.n_params,
                "groups": {"exp": [0, self.n_exp], "speech": [self.n_exp, self.n_params]},
                "presets": self.preset_names, "portraits": [p.describe() for p in self.portraits.values()],
                "tracks": [t.describe() for t in self.tracks.values()], "max_sessions": self.max_sessions,
                "sessions": len(self.sessions), "output_size": self.output_size, "fps": self.fps,
                "backend": str(getattr(self.models, "backend", "")),
                "preview": self.face_model is not None,
                "params_sources": self.params_sources, "renderer": self.renderer,
                "source_mouth": self.source_mouth, "framing": self.framing, "framings": list(FRAMINGS),
                "mouth_interior": self.mouth_interior,
                "mic": self._audio_error is None,     # (not waiting for the model being loaded)
                "pose_names": list(POSE_NAMES), "pose_labels": pose_labels(), "pose_units": list(POSE_UNITS),
                "pose_limits": [float(v) for v in POSE_LIMITS], "moves_head": self.moves_head,
                "limits": {"upload_bytes": MAX_UPLOAD, "image_max_side": MAX_SIDE,
                           "image_max_megapixels": round(MAX_PIXELS / 1e6), "uploaded_portraits": MAX_UPLOADED_PORTRAITS,
                           "offer_bytes": MAX_OFFER, "message_bytes": MAX_MESSAGE},
                "profile": str(getattr(self.models, "profile", "") or "")}

    def close(self):
        for pool in (self.prep_pool, self.warm_pool, self.image_pool, self.drive_pool, self.render_pool):
            pool.shutdown(wait=False, cancel_futures=True)


def prestart(pool: concurrent.futures.ThreadPoolExecutor) -> None:
    """Make a ThreadPoolExecutor start all its threads now (it starts them one by one, on demand)."""
    n = pool._max_workers
    barrier = threading.Barrier(n)

    def hold():
        try:
            barrier.wait(timeout=10)   # every worker busy at once: the pool had to start them all
        except threading.BrokenBarrierError:
            pass
    for _ in range(n):
        pool.submit(hold)


_TRIM: list = []
MALLOC_ARENAS = 4    # serve's cap on glibc malloc arenas (glibc's default: 8 per core)


def _glibc():
    """The C library when it is glibc, else None."""
    try:
        import ctypes
        import platform
        if platform.libc_ver()[0] == "glibc":
            return ctypes.CDLL("libc.so.6")
    except OSError:
        pass
    return None


def _malloc_trim():
    """glibc's malloc_trim, or None (another libc)."""
    if not _TRIM:
        import ctypes
        libc = _glibc()
        fn = getattr(libc, "malloc_trim", None) if libc is not None else None
        if fn is not None:
            fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
        _TRIM.append(fn)
    return _TRIM[0]


def limit_malloc_arenas(n: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas (as MALLOC_ARENA_MAX=n would; a MALLOC_ARENA_MAX set by the user
    stands). Every thread that allocates (aiortc's encoders on the default executor, the sessions'
    pools, MediaPipe's and the decoders' threads) otherwise gets an arena of its own, up to 8 per
    core, and each keeps memory freed in it: a server running webcam sessions one after the other
    grew by 100+ MB before levelling off (benchmarks/bench_sessions.py)."""
    libc = _glibc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    import ctypes
    M_ARENA_MAX = -8
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(libc.mallopt(M_ARENA_MAX, int(n)))


def release_memory() -> None:
    """Return the free memory of the heap to the OS (glibc; ctypes releases the GIL meanwhile)."""
    fn = _malloc_trim()
    if fn is not None:
        fn(0)


def _decode_upload(data: bytes, name: str) -> tuple[np.ndarray, bytes]:
    """Worker thread: the upload's header checked, then decoded (downscaled when large), and its
    thumbnail. HTTPError 413 over the image limits, 422 when it cannot be read."""
    try:
        rgb = decode_image(data, name)
    except ImageTooLargeError as e:
        raise HTTPError(413, str(e)) from None
    except ImageReadError as e:
        raise HTTPError(422, str(e)) from None
    return rgb, _thumbnail(rgb)


def _thumbnail(rgb: np.ndarray, side: int = 256) -> bytes:
    import cv2
    h, w = rgb.shape[:2]
    k = min(1.0, side / max(h, w))
    small = cv2.resize(rgb, (max(1, int(w * k)), max(1, int(h * k))), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def _face_thumbnail(rgb: np.ndarray, landmarks: np.ndarray) -> bytes:
    """The thumbnail of one face of a photo: a square about twice its mesh's size, around it."""
    from engine.face import mesh_box
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = mesh_box(landmarks)
    side = int(min(2.0 * max(x1 - x0, y1 - y0), w, h))
    left = int(np.clip((x0 + x1 - side) / 2, 0, w - side))
    top = int(np.clip((y0 + y1 - side) / 2, 0, h - side))
    return _thumbnail(rgb[top:top + side, left:left + side])


def _slug(stem: str, taken) -> str:
    base = "".join(c if c.isalnum() or c in "-_" else "-" for c in stem.lower()).strip("-") or "item"
    s, i = base, 2
    while s in taken:
        s, i = f"{base}-{i}", i + 1
    return s


# -------------------------------------------------------------------------------------- sessions
class _Stats:
    def __init__(self):
        self.latency = collections.deque(maxlen=300)    # seconds, driver frame received -> sent
        self.render = collections.deque(maxlen=300)     # seconds in the render stage
        self.drive = collections.deque(maxlen=300)      # seconds in the drive stage
        self.sent = collections.deque(maxlen=120)       # monotonic send times
        self.received = collections.deque(maxlen=120)
        self.frames_in = 0
        self.frames_used = 0
        self.frames_dropped = 0       # webcam frames never processed (a newer one came first)
        self.frames_superseded = 0    # processed, but a newer one was rendered instead
        self.frames_out = 0

    @staticmethod
    def _fps(ts) -> float:
        if len(ts) < 2:
            return 0.0
        now = time.monotonic()
        recent = [t for t in ts if now - t <= 2.0]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def summary(self) -> dict:
        lat = np.array(self.latency) * 1000 if self.latency else None
        ren = np.array(self.render) * 1000 if self.render else None
        drv = np.array(self.drive) * 1000 if self.drive else None
        return {"fps": round(self._fps(self.sent), 1), "in_fps": round(self._fps(self.received), 1),
                "latency_ms": round(float(np.median(lat)), 1) if lat is not None else None,
                "latency_p95_ms": round(float(np.percentile(lat, 95)), 1) if lat is not None else None,
                "render_ms": round(float(np.median(ren)), 1) if ren is not None else None,
                "drive_ms": round(float(np.median(drv)), 1) if drv is not None else None,
                "frames_in": self.frames_in, "frames_used": self.frames_used,
                "frames_dropped": self.frames_dropped, "frames_superseded": self.frames_superseded,
                "frames_out": self.frames_out}


class Session:
    """One browser (or client) connection and everything it owns."""

    def __init__(self, engine: Engine, pc, portrait: Portrait, mode: str = "relative", params: str | None = None,
                 motion: str | None = None, mouth: str | None = None, scale: float = 1.0, framing: str | None = None,
                 interior: str | None = None):
        from engine.animator import Animator

        from .drivers import DriverMix, IdleBlinks, SlidersDriver
        self.id = uuid.uuid4().hex[:12]
        self.engine = engine
        self.pc = pc
        self.portrait_id = portrait.id
        self.animator = Animator(engine.models, output_size=engine.output_size, renderer=engine.renderer,
                                 source_mouth=mouth or engine.source_mouth)
        self.params_source = params or engine.params_sources[0]
        self.framing = framing or engine.framing
        self.interior = interior or engine.mouth_interior   # engine.mouth: "driver" (the webcam's) or "drawn"
        prepared = portrait.framed(self.framing)
        self.animator.use(prepared)
        rest = prepared.info.params
        self.sliders = SlidersDriver(engine.n_params, rest, engine.presets)
        self.mix = DriverMix(engine.n_exp, engine.n_params, rest, self.sliders)
        self.mix.idle = IdleBlinks(self.animator.face_model, prepared.info.lids)   # while nothing drives the expression
        self.mix.expression_scale = scale      # every driver set on the mix gets it
        self.mode = mode
        self.face = None                       # FaceDriver, made when webcam frames come
        self.mic = None                        # MicDriver, made when the microphone is routed or heard
        self.mic_track = None
        self._mic_worker = None                # its own thread: the microphone's frames in order
        self._mic_pending = 0
        self.track: TrackEntry | None = None
        self.track_driver = None
        self.track_t0 = 0.0                    # clock time the track started
        self.audio_pcm: np.ndarray | None = None
        from .media import MediaClock
        self.clock = MediaClock()
        self._jobs: set[concurrent.futures.Future] = set()   # this session's work on the shared pools
        self._handlers: set[asyncio.Task] = set()              # data channel messages being handled
        self.stats = _Stats()
        self.input_track = None
        self.latest_in = None                  # (av.VideoFrame, t_received)
        self.in_event = asyncio.Event()
        self.out_event = asyncio.Event()
        self.driven = None                     # receive time of the newest driven webcam frame
        self.driven_event = asyncio.Event()
        self.out_frame = None                  # (VideoFrame, t_driver_received | None, t_rendered)
        self.channel = None
        self.tasks: list[asyncio.Task] = []
        self.closed = False
        self.params = rest.copy()
        from .drivers import resolve_motion
        self.motion = resolve_motion(motion, self.animator)
        self.mix.hold_expression = self.motion == "speech"
        self.pose_sliders = np.zeros(N_POSE, np.float32)     # head-pose sliders, in units of their limits
        self.pose_pinned = np.zeros(N_POSE, bool)
        self.pose = np.zeros(N_POSE, np.float32)             # the pose of the last frame (engine.pose units)
        self.lat_est = 0.03                    # render-to-send latency estimate (s), for track sync
        self.video_out = AnimatedTrack(self)
        self.audio_out = SessionAudioTrack(self)
        self.created = time.monotonic()
        self.connected = False
        self.last_error = ""

    # ---------------------------------------------------------------- driver control
    @property
    def uses_face(self) -> bool:
        return "face" in self.mix.routes.values()

    def ensure_face(self):
        if self.face is None:
            from .drivers import FaceDriver
            self.face = FaceDriver(self.animator.regress, self.engine.n_params, self.engine.image_size,
                                   mode=self.mode, rest=self.animator.rest_params, fps=self.engine.fps,
                                   params=self.params_source, fit=self.animator.fit,
                                   rest_pose=self.animator.source.pose, rest_lids=self.animator.source.lids,
                                   n_exp=self.engine.n_exp,
                                   face_model=self.animator.face_model, neutral_mouth=self.animator.source_mouth,
                                   cut_mouths=self.interior == "driver")
            self.mix.set_driver("face", self.face)
        return self.face

    def ensure_mic(self):
        if self.mic is None:
            net = self.engine.audio_net
            if net is None:
                raise ValueError(f"no microphone driver on this server: {self.engine.audio_error}")
            from .drivers import MicDriver
            self.mic = MicDriver(net, self.engine.n_exp, self.engine.n_params)
            self.mix.set_driver("mic", self.mic)
        return self.mic

    def set_track(self, entry: TrackEntry | None):
        from .drivers import TrackDriver
        if entry is None:
            self.track, self.track_driver, self.audio_pcm = None, None, None
            self.mix.set_driver("track", None)
            return
        self.track_t0 = self.clock.elapsed()
        drv = TrackDriver(entry.track, self.engine.n_exp, self.engine.n_params, loop=True,
                          started_at=self.track_t0, face_model=self.animator.face_model,
                          rest_lids=self.animator.source.lids)
        self.audio_pcm = self.engine.track_audio(entry)
        self.track, self.track_driver = entry, drv
        self.mix.set_driver("track", drv)

    def track_time(self, t_elapsed: float) -> float:
        return t_elapsed - self.track_t0

    def head_pose(self, t: float) -> np.ndarray:
        """The head's pose now: the webcam's when it drives the expression, else a track's (when it has
        one and drives), else rest; pinned head sliders on top."""
        pose = np.zeros(N_POSE)
        if self.face is not None and self.mix.routes.get("exp") == "face":
            pose = self.face.pose_value(t)
        elif self.track_driver is not None and "track" in self.mix.routes.values():
            pose = self.track_driver.pose(t)
        if self.pose_pinned.any():
            pose = np.where(self.pose_pinned, from_unit(self.pose_sliders), pose)
        return pose

    # ---------------------------------------------------------------- worker-thread work
    # Two stages on two threads, so consecutive frames overlap: "drive" (decode to RGB, face mesh,
    # regression head, smoothing) and "render" (mix, generator, paste-back, YUV), on the engine's
    # shared drive and render pools. aiortc encodes on its own thread meanwhile.
    async def _work(self, pool, fn, *args):
        """``fn(*args)`` on one of the engine's shared pools. The job is remembered until it has
        finished, so ``close`` can wait for it (cancelling the awaiting task does not stop it)."""
        if self.closed:
            raise RuntimeError("session closed")
        fut = pool.submit(fn, *args)
        self._jobs.add(fut)
        try:
            return await asyncio.wrap_future(fut)
        finally:
            if fut.done():
                self._jobs.discard(fut)

    def drive_frame(self, job) -> float:
        """Drive thread: the newest webcam frame through the face driver."""
        t0 = time.perf_counter()
        frame, t_recv = job
        from engine.video import DecodedFrame
        # stamped on the session clock when it arrived, the clock the render asks the drivers at (the
        # frame's own pts counts from the sender's first frame, so a hold timed on it would be off by
        # however long the session ran before); converted to RGB only where the tracker looks (the
        # face's square; a thumbnail when searching)
        self.ensure_face().push(DecodedFrame(frame), self.clock.elapsed(at=t_recv))
        self.stats.drive.append(time.perf_counter() - t0)
        return t_recv

    def render(self, t_content: float):
        """Render thread: mix the drivers at ``t_content``, animate, convert to a video frame."""
        import av

        from .media import rgb_to_yuv420
        t0 = time.perf_counter()
        p = self.mix.value(t_content)
        self.params = p
        pose = self.head_pose(t_content) if self.motion == "head" else None
        self.pose = np.zeros(N_POSE, np.float32) if pose is None else pose.astype(np.float32)
        out = self.animator.animate(p, pose=pose, mouth=self.mix.mouth() if self.interior == "driver" else None)
        h, w = out.shape[:2]
        if h % 2 or w % 2:
            out = out[: h - h % 2, : w - w % 2]
        vf = av.VideoFrame.from_ndarray(rgb_to_yuv420(out), format="yuv420p")
        self.stats.render.append(time.perf_counter() - t0)
        return vf

    # ---------------------------------------------------------------- tasks
    async def consume(self, track):
        """Read the browser's webcam track; keep only the newest frame."""
        from aiortc.mediastreams import MediaStreamError
        self.input_track = track
        try:
            while not self.closed:
                frame = await track.recv()
                now = time.monotonic()
                if not self.clock.started:
                    self.clock.start(now)
                self.stats.frames_in += 1
                self.stats.received.append(now)
                if self.latest_in is not None:
                    self.stats.frames_dropped += 1
                self.latest_in = (frame, now)
                self.in_event.set()
        except (MediaStreamError, asyncio.CancelledError):
            pass
        finally:
            self.input_track = None

    MIC_BACKLOG = 25    # frames (0.5 s) the microphone's worker may fall behind before frames are dropped

    async def consume_audio(self, track):
        """Read the browser's microphone: every frame (20 ms) through the audio model as it arrives, on
        the session's own microphone thread (in order; never on the event loop, which a slow model
        call on a loaded machine would stall). A worker that falls MIC_BACKLOG frames behind drops
        frames (the driver then holds, then eases the mouth closed) rather than lagging further."""
        from aiortc.mediastreams import MediaStreamError
        self.mic_track = track
        loop = asyncio.get_running_loop()

        def done():
            self._mic_pending -= 1

        def push(mic, frame, now):     # the microphone's thread
            try:
                mic.push_frame(frame, now)
            finally:
                try:
                    loop.call_soon_threadsafe(done)
                except RuntimeError:   # the loop has closed
                    pass
        try:
            while not self.closed:
                frame = await track.recv()
                if "mic" not in self.mix.routes.values() and self.mic is None:
                    continue
                mic = self.ensure_mic()
                if self._mic_worker is None:
                    self._mic_worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mic")
                if self._mic_pending >= self.MIC_BACKLOG:
                    continue
                self._mic_pending += 1
                loop.run_in_executor(self._mic_worker, push, mic, frame, time.monotonic())
        except (MediaStreamError, asyncio.CancelledError):
            pass
        except ValueError as e:     # no audio model: say so once
            self.send({"type": "error", "message": str(e)})
        finally:
            self.mic_track = None

    async def drive(self):
        """Stage 1: the newest webcam frame -> face driver (stale frames are dropped)."""
        try:
            while not self.closed:
                await self.in_event.wait()
                self.in_event.clear()
                job, self.latest_in = self.latest_in, None
                if job is None or not self.uses_face:
                    continue
                self.stats.frames_used += 1
                try:
                    t_in = await self._work(self.engine.drive_pool, self.drive_frame, job)
                except RuntimeError:   # closing (or the engine's pools shut down)
                    if self.closed:
                        break
                    raise
                if self.driven is not None:
                    self.stats.frames_superseded += 1
                self.driven = t_in
                self.driven_event.set()
        except asyncio.CancelledError:
            pass
        except Exception as e:
            self._failed(e)

    async def produce(self):
        """Stage 2: render a frame for each newly driven webcam frame when the face drives, else at
        the stream fps on the session clock."""
        period = 1.0 / self.engine.fps
        next_t = time.monotonic()
        try:
            while not self.closed:
                if self.uses_face and self.input_track is not None:
                    try:
                        await asyncio.wait_for(self.driven_event.wait(), timeout=0.25)
                    except asyncio.TimeoutError:
                        pass
                    next_t = time.monotonic()
                else:
                    next_t += period
                    delay = next_t - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif delay < -0.25:
                        next_t = time.monotonic()
                self.driven_event.clear()
                t_in, self.driven = self.driven, None
                if not self.clock.started:
                    self.clock.start()
                t_content = self.clock.elapsed() + self.lat_est
                try:
                    vf = await self._work(self.engine.render_pool, self.render, t_content)
                except RuntimeError:   # closing (or the engine's pools shut down)
                    if self.closed:
                        break
                    raise
                self.out_frame = (vf, t_in, time.monotonic(), t_content)
                self.out_event.set()
        except asyncio.CancelledError:
            pass
        except Exception as e:  # keep the reason for the page and the log
            self._failed(e)

    def _failed(self, e: Exception) -> None:
        self.last_error = f"{type(e).__name__}: {e}"
        log.exception("session %s: frame processing failed", self.id)
        self.send({"type": "error", "message": f"frame processing failed: {self.last_error}"})

    async def next_frame(self):
        while self.out_frame is None:
            self.out_event.clear()
            await self.out_event.wait()
            if self.closed:
                from aiortc.mediastreams import MediaStreamError
                raise MediaStreamError
        vf, t_in, t_rendered, t_content = self.out_frame
        self.out_frame = None
        now = time.monotonic()
        if t_in is not None:
            self.stats.latency.append(now - t_in)
        # track sync: what the render+queue wait costs, so content is taken that far ahead
        self.lat_est = 0.9 * self.lat_est + 0.1 * min(max(now - t_rendered + (self.stats.render[-1]
                                                                          if self.stats.render else 0), 0.0), 0.3)
        self.stats.sent.append(now)
        self.stats.frames_out += 1
        return vf, t_content

    async def report(self):
        try:
            while not self.closed:
                await asyncio.sleep(0.5)
                self.send(self.status())
        except asyncio.CancelledError:
            pass

    def status(self) -> dict:
        s = self.stats.summary()
        s.update({"type": "stats", "session": self.id, "routes": dict(self.mix.routes), "mode": self.mode,
                  "params_source": self.params_source, "mouth": self.animator.source_mouth,
                  "interior": self.interior, "scale": self.mix.expression_scale, "framing": self.framing,
                  "portrait": self.portrait_id, "track": self.track.id if self.track else None,
                  "params": [round(float(v), 3) for v in self.params],
                  "pinned": [int(i) for i in np.flatnonzero(self.sliders.pinned)],
                  "motion": self.motion, "pose": [round(float(v), 3) for v in to_unit(self.pose)],
                  "pose_pinned": [int(i) for i in np.flatnonzero(self.pose_pinned)],
                  "webcam": self.input_track is not None, "error": self.last_error or None,
                  "mic": None if self.mic is None else {
                      "heard": self.mic_track is not None, "frames": self.mic.frames,
                      "model_ms": round(self.mic.ms, 2),
                      "silent_s": None if self.mic.silent_for is None else round(self.mic.silent_for, 2)}})
        if self.face is not None:
            st = self.face.state
            s.update({"face": st.status, "face_message": st.message, "calibrating": st.calibrating,
                      "holding": st.holding, "track_ms": round(st.ms, 1)})
            lost = self.face.lost_for(self.clock.elapsed())
            s["lost_s"] = None if lost is None else round(lost, 3)
        else:
            s["face"] = None
        return s

    def hello(self) -> dict:
        return {"type": "hello", "session": self.id, "param_names": self.engine.param_names,
                "param_labels": self.engine.param_labels,
                "n_exp": self.engine.n_exp, "presets": self.engine.preset_names,
                "rest": [round(float(v), 4) for v in self.animator.source_params],
                "routes": dict(self.mix.routes), "mode": self.mode, "params_source": self.params_source,
                "mouth": self.animator.source_mouth, "interior": self.interior, "scale": self.mix.expression_scale,
                "framing": self.framing, "output": self.animator.source.output,
                "motion": self.motion, "portrait": self.portrait_id,
                "track": self.track.id if self.track else None}

    def send(self, msg: dict) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open":
            try:
                ch.send(json.dumps(msg))
            except Exception:  # the channel closed under us
                pass

    # ---------------------------------------------------------------- control messages
    def on_message_event(self, raw) -> None:
        """The data channel's "message" event: handle it in a task of its own (kept until done)."""
        t = asyncio.ensure_future(self.on_message(raw))
        self._handlers.add(t)
        t.add_done_callback(self._handlers.discard)

    async def on_message(self, raw) -> None:
        """Every message gets exactly one reply: its answer, {"type": "ok"}, or {"type": "error"}."""
        kind = None
        try:
            msg = _parse_message(raw)
            kind = msg.get("type")
            reply = await self.handle(msg)
            if reply is None:
                reply = {"type": "ok", "of": kind}
        except asyncio.CancelledError:
            raise
        except HTTPError as e:
            reply = {"type": "error", "message": e.message}
        except (ValueError, KeyError, TypeError, OverflowError, IndexError) as e:
            reply = {"type": "error", "message": _message_error(e)}
        except Exception as e:  # a bug: still answer, and keep the reason in the log
            log.exception("session %s: message %r failed", self.id, kind)
            reply = {"type": "error", "message": f"internal error: {type(e).__name__}: {e}"}
        if reply.get("type") == "error":
            reply["of"] = kind if isinstance(kind, str) else None
        self.send(reply)

    async def handle(self, msg: dict):
        kind = msg.get("type")
        if not isinstance(kind, str):
            raise ValueError("a message needs a \"type\" (a string)")
        n = self.engine.n_params
        if kind == "slider":
            i = _index(msg, "index", n)
            self.sliders.set(i, _number(msg, "value"), pin=self.mix.routes.get(self._group(i)) != "sliders")
            return None
        if kind == "sliders":
            self.sliders.set_all(_numbers(msg, "values", n), pin=False)
            return None
        if kind == "preset":
            name = _string(msg, "name")
            if name in POSE_PRESETS and self.engine.moves_head:   # the head's sliders, pinned
                self.pose_sliders[:] = to_unit(np.array(POSE_PRESETS[name]))
                self.pose_pinned[:] = True
                return {"type": "preset", "name": name, "values": [round(float(x), 4) for x in self.params],
                        "pose": [round(float(x), 4) for x in self.pose_sliders], "routes": dict(self.mix.routes)}
            v = self.sliders.preset(name)
            if name == "neutral":                                  # ... and the head unmoved
                self.pose_sliders[:] = 0.0
                self.pose_pinned[:] = True
            for g in ("exp", "speech"):
                if self.mix.routes[g] != "sliders" and msg.get("route", True):
                    self.mix.route(g, "sliders")
            self.sliders.release()
            return {"type": "preset", "name": name, "values": [round(float(x), 4) for x in v],
                    "routes": dict(self.mix.routes)}
        if kind == "release":
            self.sliders.release(None if msg.get("index") is None else _index(msg, "index", n))
            if msg.get("index") is None:
                self.pose_pinned[:] = False
            return None
        if kind == "pose":
            i = _index(msg, "index", N_POSE)
            self.pose_sliders[i] = np.clip(_number(msg, "value"), -1.0, 1.0)
            self.pose_pinned[i] = True
            return None
        if kind == "motion":
            from .drivers import resolve_motion
            self.motion = resolve_motion(_string(msg, "motion"), self.animator)
            self.mix.hold_expression = self.motion == "speech"
            return {"type": "motion", "motion": self.motion}
        if kind == "scale":
            self.mix.expression_scale = _number(msg, "value")    # a ValueError gives the range
            return {"type": "scale", "value": self.mix.expression_scale}
        if kind == "route":
            routes = {g: _string(msg, g) for g in ("exp", "speech") if msg.get(g) is not None}
            from .drivers import DRIVER_NAMES
            for g, name in routes.items():   # all checked before any is applied
                if name not in DRIVER_NAMES:
                    raise ValueError(f"unknown driver {name!r}; use {', '.join(DRIVER_NAMES[:-1])} or rest")
            if "track" in routes.values() and self.track is None and not self.engine.tracks:
                raise ValueError("no parameter tracks on this server (start it with --tracks DIR)")
            if "mic" in routes.values():
                if routes.get("exp") == "mic":
                    raise ValueError("the microphone drives the speech parameters only")
                self.ensure_mic()
            for g, name in routes.items():
                self.mix.route(g, name)
            if self.uses_face:
                self.ensure_face()
            if "track" in self.mix.routes.values() and self.track is None:
                self.set_track(next(iter(self.engine.tracks.values())))
            return {"type": "routes", "routes": dict(self.mix.routes),
                    "track": self.track.id if self.track else None}
        if kind == "mode":
            mode = _string(msg, "mode")
            if mode not in ("relative", "absolute"):
                raise ValueError(f"mode must be 'relative' or 'absolute', not {mode!r}")
            self.ensure_face().set_mode(mode)
            self.mode = mode
            return {"type": "mode", "mode": mode}
        if kind == "mouth":
            self.animator.source_mouth = _string(msg, "mouth")    # a ValueError names the choices
            if self.face is not None:
                self.face.neutral_mouth = self.animator.source_mouth
                self.face.set_rest(self.animator.rest_params, self.animator.source.pose, self.animator.source.lids)
            return {"type": "mouth", "mouth": self.animator.source_mouth}
        if kind == "interior":
            from engine.mouth import check_interior
            self.interior = check_interior(_string(msg, "interior"))    # a ValueError names the choices
            if self.face is not None:
                self.face.cut_mouths = self.interior == "driver"
            return {"type": "interior", "interior": self.interior}
        if kind == "params":
            source = _string(msg, "params")
            if source not in self.engine.params_sources:
                raise ValueError(f"params must be one of {self.engine.params_sources}, not {source!r}")
            self.ensure_face().set_params(source)
            self.params_source = source
            return {"type": "params", "params": source}
        if kind == "calibrate":
            self.ensure_face().calibrate()
            return {"type": "calibrate"}
        if kind == "face":
            x, y = _number(msg, "x"), _number(msg, "y")
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError("face: x and y are fractions of the webcam frame, 0..1")
            self.ensure_face().pick(x, y, normalized=True)
            return {"type": "face", "x": x, "y": y}
        if kind == "portrait":
            pid = _string(msg, "id")
            p = self.engine.portraits.get(pid)
            if p is None:
                raise ValueError(f"no portrait {pid!r}")
            prepared = await self.engine.prepared(p, self.framing)
            self.animator.use(prepared)
            self.portrait_id = p.id
            rest = prepared.info.params
            self.mix.rest = rest.copy()
            from .drivers import IdleBlinks
            self.mix.idle = IdleBlinks(self.animator.face_model, prepared.info.lids)
            self.sliders.set_all(rest)
            self.sliders.release()
            if self.face is not None:
                self.face.set_rest(self.animator.rest_params, prepared.info.pose, prepared.info.lids)
            if self.track_driver is not None:
                self.track_driver.set_rest_lids(prepared.info.lids)
            return self.hello()
        if kind == "framing":
            framing = _string(msg, "framing")
            check_framing(framing, None)           # a ValueError names the choices
            portrait = self.engine.portraits.get(self.portrait_id)
            if portrait is None:
                raise ValueError("this session's portrait is gone: choose another")
            # the same portrait and parameters in another frame: nothing else changes
            self.animator.use(await self.engine.prepared(portrait, framing))
            self.framing = framing
            return {"type": "framing", "framing": framing, "output": self.animator.source.output}
        if kind == "track":
            tid = msg.get("id")
            if tid is None:
                self.set_track(None)
                return {"type": "track", "track": None}
            tid = _string(msg, "id")
            e = self.engine.tracks.get(tid)
            if e is None:
                raise ValueError(f"no track {tid!r}")
            self.set_track(e)
            for g in self.track_driver.groups():
                if g == "speech" or msg.get("expression", False):
                    self.mix.route(g, "track")
            return {"type": "track", "track": e.id, "routes": dict(self.mix.routes)}
        if kind == "ping":
            t = msg.get("t")
            return {"type": "pong", "t": t if _finite(t) or isinstance(t, str) and len(t) <= 64 else None}
        if kind == "bye":
            asyncio.ensure_future(self.close())
            return {"type": "ok", "of": "bye"}
        if kind == "status":
            return self.status()
        raise ValueError(f"unknown message type {kind[:40]!r}")

    def _group(self, index: int) -> str:
        return "exp" if index < self.engine.n_exp else "speech"

    # ---------------------------------------------------------------- teardown
    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.engine.sessions.pop(self.id, None)
        self.engine.closing += 1
        try:
            await self._close()
        finally:
            self.engine.closing -= 1

    async def _close(self) -> None:
        self.out_event.set()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        self.video_out.stop()
        self.audio_out.stop()
        if self.input_track is not None:
            self.input_track.stop()
        if self.mic_track is not None:
            self.mic_track.stop()
        try:
            await self.pc.close()
        except Exception:  # already closed or half-open
            pass
        # a worker may be inside a render: let it finish, then release the face tracker
        face = self.face
        running = [asyncio.wrap_future(f) for f in self._jobs if not f.done()]
        if running:
            await asyncio.wait(running)
        self._jobs.clear()
        for t in list(self._handlers):
            t.cancel()
        if face is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self.engine.drive_pool, face.close)
            except RuntimeError:   # the engine's pools are shut down
                face.close()
        self.face = None
        if self._mic_worker is not None:
            self._mic_worker.shutdown(wait=False, cancel_futures=True)
            self._mic_worker = None
        self.mic = None
        # The peer connection's and the channel's handlers hold this session: drop them, so that
        # the session (its animator, frames and buffers) is freed now, not at the next full
        # collection of the cyclic GC (aiortc's own objects keep cycles of their own).
        for emitter in (self.pc, self.channel):
            try:
                emitter.remove_all_listeners()
            except Exception:  # not an event emitter (a test double)
                pass
        self.channel = None
        self.latest_in = None
        self.out_frame = None
        self.mix.drivers.clear()
        self.engine.release_memory_soon()
        log.info("session %s closed (%d frames out)", self.id, self.stats.frames_out)


# ------------------------------------------------------------------------- data channel messages
def _parse_message(raw) -> dict:
    """A data channel message as a JSON object: at most MAX_MESSAGE bytes, no NaN/Infinity
    literals, nesting the parser can take (RecursionError becomes a ValueError)."""
    if isinstance(raw, str):
        size = len(raw.encode("utf-8", "surrogatepass"))
    else:
        raw = bytes(raw)
        size = len(raw)
    if size > MAX_MESSAGE:
        raise ValueError(f"message too large: {size} bytes (at most {MAX_MESSAGE})")
    try:
        msg = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("message nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"message is not JSON: {e}") from None
    if not isinstance(msg, dict):
        raise ValueError("a message must be a JSON object")
    return msg


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number a message may hold")


def _message_error(e: Exception) -> str:
    if isinstance(e, KeyError):
        return f"missing field {e.args[0]!r}" if e.args else "missing field"
    return str(e) or type(e).__name__


def _index(msg: dict, key: str, n: int) -> int:
    """An integer in 0..n-1 (an integral float such as 3.0 is fine; -1 is not the last)."""
    v = msg[key]
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < n:
        raise ValueError(f"{key!r} must be an integer from 0 to {n - 1}, not {_short(v)}")
    return v


def _finite(x) -> bool:
    """A JSON number (not a bool) that is finite as a float (huge integers are not)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


def _number(msg: dict, key: str) -> float:
    v = msg[key]
    if not _finite(v):
        raise ValueError(f"{key!r} must be a finite number, not {_short(v)}")
    return float(v)


def _numbers(msg: dict, key: str, n: int) -> np.ndarray:
    v = msg[key]
    if not isinstance(v, list) or len(v) != n or not all(_finite(x) for x in v):
        raise ValueError(f"{key!r} must be a list of {n} finite numbers")
    return np.clip(np.asarray(v, np.float64), -1.0, 1.0).astype(np.float32)


def _string(msg: dict, key: str) -> str:
    v = msg[key]
    if not isinstance(v, str):
        raise ValueError(f"{key!r} must be a string, not {_short(v)}")
    return v


def _short(v) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10 ** 30:
        return "a huge integer"
    r = repr(v) if isinstance(v, (int, float, str, bool, type(None))) else type(v).__name__
    return r if len(r) <= 40 else r[:37] + "..."


# ---------------------------------------------------------------------------------------- tracks
def _media_track_base():
    from aiortc import MediaStreamTrack
    return MediaStreamTrack


class _SessionTrack(_media_track_base()):
    """A track of a session, holding it weakly: aiortc keeps its tracks past the session's close,
    and a strong reference back would make a cycle that only the cyclic GC frees (the session's
    animator, frames and buffers would stay until a full collection)."""

    def __init__(self, session: Session):
        super().__init__()
        self._session = weakref.ref(session)

    @property
    def session(self) -> Session | None:
        return self._session()


class AnimatedTrack(_SessionTrack):
    """The animated portrait: hands out the newest rendered frame."""
    kind = "video"

    def __init__(self, session: Session):
        super().__init__(session)
        self._last_pts = -1

    async def recv(self):
        from aiortc.mediastreams import MediaStreamError
        s = self.session
        if self.readyState != "live" or s is None or s.closed:
            raise MediaStreamError
        vf, t_content = await s.next_frame()
        del s
        # the frame's time on the shared clock (the audio's timeline)
        pts = max(int(round(t_content * VIDEO_CLOCK)), self._last_pts + 1)
        self._last_pts = pts
        vf.pts = pts
        vf.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return vf


class SessionAudioTrack(_SessionTrack):
    """The audio of the session's parameter track (looping with it), or silence; paced on the
    session's clock, so audio time == clock time == the time the video takes its parameters at."""
    kind = "audio"

    def __init__(self, session: Session):
        super().__init__(session)
        self._samples = int(AUDIO_RATE * AUDIO_PTIME)
        self._pts = 0

    async def recv(self):
        import av
        from aiortc.mediastreams import MediaStreamError
        s = self.session
        if self.readyState != "live" or s is None or s.closed:
            raise MediaStreamError
        if not s.clock.started:
            s.clock.start()
        # the pts of the audio is the clock time of its first sample: send it when it is due
        if self._pts == 0:
            self._pts = int(s.clock.elapsed() * AUDIO_RATE)
        wait = self._pts / AUDIO_RATE - s.clock.elapsed()
        if wait > 0:
            await asyncio.sleep(wait)
        n = self._samples
        pcm = s.audio_pcm
        if pcm is not None and len(pcm) and s.track is not None:
            start = int(round(s.track_time(self._pts / AUDIO_RATE) * AUDIO_RATE))
            idx = (start + np.arange(n)) % len(pcm)
            chunk = pcm[idx] if start >= 0 else np.zeros((n, 2), np.int16)
        else:
            chunk = np.zeros((n, 2), np.int16)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk).reshape(1, -1), format="s16",
                                           layout="stereo")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self._pts += n
        return frame


# ---------------------------------------------------------------------------------------- the app
def _json(data, status: int = 200):
    from aiohttp import web
    return web.json_response(data, status=status)


def _err(status: int, message: str):
    return _json({"error": message}, status)


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_TOKEN_META = '<meta name="slidergan-token" content="">'
_WILDCARD_HOSTS = ("", "*")


def _bracket(host: str) -> str:
    """An IPv6 address as it appears in a Host header ([::1]); names and IPv4 unchanged."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _split_host(value: str) -> tuple[str, int | None]:
    """``name[:port]`` of a Host header (or an --allow-host entry) -> (lowercase name, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):                       # [v6]:port
        name, _, rest = value.partition("]")
        name += "]"
        port = rest[1:] if rest.startswith(":") else None
    elif value.count(":") == 1:
        name, port = value.split(":")
    else:
        name, port = value, None
    if port is not None:
        if not port.isdigit():
            raise ValueError(f"bad port in {value!r}")
        return name.rstrip("."), int(port)
    return name.rstrip("."), None


class Guard:
    """Who may use the server: the Host allowlist (every request), the Origin check and the token
    (requests that change state), and CORS for ``--allow-origin`` origins. See the module docstring."""

    def __init__(self, token: str | None = None, allow_origins=(), allow_hosts=(), host: str | None = None):
        self.token = token or secrets.token_urlsafe(32)
        self.allow_origins = {self.normalize_origin(o) for o in allow_origins}
        self.names = set(LOOPBACK_NAMES)
        if host and host.strip().lower() not in _WILDCARD_HOSTS:
            self.names.add(_bracket(host.strip().lower()))
        self.extra: set[tuple[str, int | None]] = set()   # --allow-host: (name, port or None = any)
        for h in allow_hosts:
            name, port = _split_host(h)
            self.extra.add((_bracket(name), port))

    @staticmethod
    def normalize_origin(origin: str) -> str:
        o = origin.strip().rstrip("/").lower()
        if not o.startswith(("http://", "https://")) or "/" in o.split("://", 1)[1]:
            raise ValueError(f"an origin is scheme://host[:port] (e.g. https://example.org), not {origin!r}")
        return o

    def host_ok(self, request) -> bool:
        value = request.headers.get("Host")
        if value is None:       # HTTP/1.0 without Host: not a browser, nothing to rebind
            return True
        try:
            name, port = _split_host(value)
        except ValueError:
            return False
        sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
        own_port = sock[1] if sock else None
        names = set(self.names)
        if sock:                # the address the connection came in on (an IP: not rebindable)
            names.add(_bracket(str(sock[0]).lower()))
        if name in names and (port or 80) == own_port:
            return True
        return (name, port) in self.extra or (name, None) in self.extra

    def own_origin(self, request, origin: str) -> bool:
        host = request.headers.get("Host", "").strip().lower()
        return bool(host) and origin in (f"http://{host}", f"https://{host}")

    def origin_allowed(self, request, origin: str) -> bool:
        o = origin.strip().rstrip("/").lower()
        return self.own_origin(request, o) or o in self.allow_origins

    def token_ok(self, request) -> bool:
        got = request.headers.get(TOKEN_HEADER, "")
        return secrets.compare_digest(got.encode("utf-8", "replace"), self.token.encode())

    def allowed_names(self, request) -> str:
        sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
        port = sock[1] if sock else "PORT"
        return ", ".join(f"{n}:{port}" for n in sorted(self.names))


def _app_key():
    try:
        from aiohttp import web
        return web.AppKey("slidergan_token", str)
    except (ImportError, AttributeError):   # aiohttp < 3.9
        return "slidergan_token"


TOKEN = _app_key()   # app[TOKEN]: the token of a make_app application


def make_app(engine: Engine, *, token: str | None = None, allow_origins=(), allow_hosts=(),
             host: str | None = None):
    """The aiohttp application. ``token``: this run's token (default: a random one; ``app[TOKEN]``
    holds it); ``allow_origins``: other origins whose pages may use the server (they still need the
    token, which ``/api/info`` gives them); ``allow_hosts``: more names the Host header may carry
    (``name`` for any port, or ``name:port``); ``host``: the address the server listens on."""
    from aiohttp import web
    guard = Guard(token, allow_origins, allow_hosts, host)

    def cors(request, response):
        origin = request.headers.get("Origin")
        if origin and origin.strip().rstrip("/").lower() in guard.allow_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    @web.middleware
    async def security(request, handler):
        if not guard.host_ok(request):
            return _err(421, f"misdirected request: this server does not answer to Host "
                             f"{request.headers.get('Host', '')[:100]!r} (it answers to "
                             f"{guard.allowed_names(request)}; start it with --allow-host NAME to add one)")
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS":   # a CORS preflight: for --allow-origin origins only
            if origin and origin.strip().rstrip("/").lower() in guard.allow_origins:
                return cors(request, web.Response(status=204, headers={
                    "Access-Control-Allow-Methods": "GET, POST",
                    "Access-Control-Allow-Headers": f"Content-Type, {TOKEN_HEADER}, X-Filename",
                    "Access-Control-Max-Age": "600"}))
            return _err(403, f"cross-origin request refused: origin {str(origin)[:100]!r} is not allowed "
                             "(start the server with --allow-origin ORIGIN to allow a page there)")
        if request.method not in SAFE_METHODS:
            if origin is not None and not guard.origin_allowed(request, origin):
                return _err(403, f"cross-origin request refused: origin {origin[:100]!r} is not this "
                                 "server's (start the server with --allow-origin ORIGIN to allow a page there)")
            if not guard.token_ok(request):
                return cors(request, _err(403, f"missing or wrong {TOKEN_HEADER} header: requests that "
                                               "change state need this server's token (the page has it in "
                                               "<meta name=\"slidergan-token\">)"))
        return cors(request, await handler(request))

    @web.middleware
    async def errors(request, handler):
        try:
            return await handler(request)
        except HTTPError as e:
            return _err(e.status, e.message)
        except web.HTTPRequestEntityTooLarge:
            return _err(413, f"the upload is too large (at most {MAX_UPLOAD // (1024 * 1024)} MB)")
        except web.HTTPException as e:
            if e.status >= 400 and request.path.startswith(("/api/", "/offer")):
                return _err(e.status, e.reason or "request failed")
            raise
        except Exception as e:  # never a bare 500 page: say what went wrong
            log.exception("%s %s failed", request.method, request.path)
            return _err(500, f"internal error: {type(e).__name__}: {e}")

    app = web.Application(middlewares=[security, errors], client_max_size=MAX_UPLOAD)
    app[TOKEN] = guard.token
    page = (STATIC / "index.html").read_text()
    if _TOKEN_META not in page:
        raise RuntimeError(f"{STATIC / 'index.html'} lacks {_TOKEN_META}")
    page = page.replace(_TOKEN_META, f'<meta name="slidergan-token" content="{guard.token}">')

    # Other sites may not frame the page (a click there would start a session with the page's token)
    frame_ancestors = " ".join(["'self'", *sorted(guard.allow_origins)])

    async def index(request):
        return web.Response(text=page, content_type="text/html",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                     "Content-Security-Policy": f"frame-ancestors {frame_ancestors}"})

    async def info(request):
        d = engine.info()
        origin = request.headers.get("Origin")
        if origin and guard.origin_allowed(request, origin):
            d["token"] = guard.token
        return _json(d)

    async def portraits(request):
        return _json([p.describe() for p in engine.portraits.values()])

    async def portrait_image(request):
        p = engine.portraits.get(request.match_info["pid"])
        if p is None:
            raise HTTPError(404, f"no portrait {request.match_info['pid']!r}")
        return web.Response(body=p.thumb, content_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    async def upload(request):
        if engine.uploads_in_progress >= MAX_UPLOADS_IN_PROGRESS:
            raise HTTPError(503, f"server busy: {MAX_UPLOADS_IN_PROGRESS} uploads in progress; try again shortly")
        engine.uploads_in_progress += 1
        try:
            data, name = await _read_upload(request)
            loop = asyncio.get_running_loop()
            # header check, decode (downscaled), thumbnail: on the image pool, never the event loop
            rgb, thumb = await loop.run_in_executor(engine.image_pool, _decode_upload, data, name)
            del data
            p = engine.new_upload(rgb, name, thumb)
            await engine.prepared(p)             # 422 when it holds no usable face
            engine.add_upload(p)                 # listed (and an old one evicted) only now
        finally:
            engine.uploads_in_progress -= 1
        return _json({**p.describe(), "other_faces": [q.describe() for q in p.others]})

    async def preview(request):
        try:
            p = np.array([float(v) for v in request.query.get("p", "").split(",") if v.strip()], np.float32)
        except ValueError:
            raise HTTPError(400, "p must be comma-separated numbers") from None
        if p.size == 0:
            p = np.zeros(engine.n_params, np.float32)
        if p.shape[0] != engine.n_params or not np.all(np.isfinite(p)):
            raise HTTPError(400, f"p must hold {engine.n_params} finite numbers")
        try:
            size = int(request.query.get("size", 160))
        except ValueError:
            raise HTTPError(400, "size must be an integer number of pixels (32 to 512)") from None
        size = min(max(size, 32), 512)
        if engine.face_model is None:
            raise HTTPError(404, "no blendshape model: the 3D preview needs one")

        def draw():
            import cv2

            from engine.preview import render_params
            img = render_params(engine.face_model, np.clip(p, -1, 1), size=size)
            return cv2.imencode(".png", img[:, :, ::-1])[1].tobytes()
        png = await asyncio.get_running_loop().run_in_executor(None, draw)
        return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "no-store"})

    async def tracks(request):
        return _json([t.describe() for t in engine.tracks.values()])

    async def sessions(request):
        return _json({"sessions": [s.status() for s in engine.sessions.values()],
                      "max_sessions": engine.max_sessions, "closing": engine.closing})

    async def offer(request):
        return await _offer(request, engine)

    app.router.add_get("/", index)
    app.router.add_get("/api/info", info)
    app.router.add_get("/api/portraits", portraits)
    app.router.add_get("/api/portraits/{pid}.jpg", portrait_image)
    app.router.add_post("/api/portraits", upload)
    app.router.add_get("/api/tracks", tracks)
    app.router.add_get("/api/preview", preview)
    app.router.add_get("/api/sessions", sessions)
    app.router.add_post("/offer", offer)
    app.router.add_static("/static/", STATIC)

    async def on_shutdown(app):
        await asyncio.gather(*(s.close() for s in list(engine.sessions.values())), return_exceptions=True)

    app.on_shutdown.append(on_shutdown)
    return app


async def _read_upload(request) -> tuple[bytes, str]:
    """The uploaded image's bytes and name; 413 past MAX_UPLOAD (multipart parts are read in chunks:
    aiohttp's client_max_size does not bound them)."""
    too_large = f"the upload is too large (at most {MAX_UPLOAD // (1024 * 1024)} MB)"
    if request.content_length is not None and request.content_length > MAX_UPLOAD + 64 * 1024:
        raise HTTPError(413, too_large)
    ctype = request.content_type or ""
    if ctype.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if part.name in ("image", "file"):
                data = bytearray()
                while True:
                    chunk = await part.read_chunk(256 * 1024)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > MAX_UPLOAD:
                        raise HTTPError(413, too_large)
                return bytes(data), _clean_name(part.filename or "upload")
        raise HTTPError(400, "no image in the upload (send a multipart field named 'image')")
    data = await request.read()
    if not data:
        raise HTTPError(400, "empty upload: send an image file")
    return data, _clean_name(request.headers.get("X-Filename", "upload"))


def _clean_name(name: str) -> str:
    name = "".join(c for c in str(name) if c.isprintable()).strip() or "upload"
    return name if len(name) <= 120 else name[:117] + "..."


async def _read_body(request, limit: int, what: str) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (without reading it all)."""
    if request.content_length is not None and request.content_length > limit:
        raise HTTPError(413, f"{what} is too large: {request.content_length} bytes (at most {limit // 1024} KB)")
    chunks, n = [], 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            break
        n += len(chunk)
        if n > limit:
            raise HTTPError(413, f"{what} is too large: over {limit // 1024} KB")
        chunks.append(chunk)
    return b"".join(chunks)


async def _offer(request, engine: Engine):
    from aiortc import RTCPeerConnection, RTCSessionDescription
    body = await _read_body(request, MAX_OFFER, "the offer")
    try:
        params = json.loads(body)
    except Exception:
        raise HTTPError(400, "the offer must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}") from None
    if not isinstance(params, dict):
        raise HTTPError(400, "the offer must be a JSON object {\"sdp\": ..., \"type\": \"offer\"}")
    sdp, typ = params.get("sdp"), params.get("type", "offer")
    if not isinstance(sdp, str) or not sdp.strip():
        raise HTTPError(400, "missing 'sdp' in the offer")
    if typ != "offer":
        raise HTTPError(400, f"expected an SDP of type 'offer', got {typ!r}")
    if not sdp.lstrip().startswith("v=0") or "m=" not in sdp:
        raise HTTPError(400, "invalid SDP offer: it must start with 'v=0' and describe media ('m=' lines)")
    if len(engine.sessions) + engine.pending >= engine.max_sessions:
        raise HTTPError(503, f"server busy: all {engine.max_sessions} session(s) are in use; "
                             "close another tab or try again later")
    # the portrait
    pid = params.get("portrait")
    if pid is None:
        if not engine.portraits:
            raise HTTPError(400, "no portrait: upload one first (POST /api/portraits)")
        pid = next(iter(engine.portraits))
    portrait = engine.portraits.get(str(pid))
    if portrait is None:
        raise HTTPError(404, f"no portrait {pid!r}")
    mode = params.get("mode", "relative")
    if mode not in ("relative", "absolute"):
        raise HTTPError(400, f"mode must be 'relative' or 'absolute', not {mode!r}")
    source = params.get("params", engine.params_sources[0])
    if source not in engine.params_sources:
        raise HTTPError(400, f"params must be one of {engine.params_sources}, not {source!r}")
    from engine.animator import check_mouth
    try:
        mouth = check_mouth(params.get("mouth", engine.source_mouth), "mouth")
    except ValueError as e:
        raise HTTPError(400, str(e)) from None
    from engine.mouth import check_interior
    try:
        interior = check_interior(params.get("interior", engine.mouth_interior))
    except ValueError as e:
        raise HTTPError(400, str(e)) from None
    motion = params.get("motion")
    from .drivers import MOTIONS
    motions = [m for m in MOTIONS if m != "head" or engine.moves_head]
    if motion is not None and motion not in motions:
        raise HTTPError(400, f"motion must be one of {motions}, not {motion!r}")
    from .drivers import check_expression_scale
    try:
        scale = params.get("scale", 1.0)
        if not _finite(scale):
            raise ValueError(f"scale must be a finite number, not {_short(scale)}")
        scale = check_expression_scale(scale)
    except ValueError as e:
        raise HTTPError(400, str(e)) from None
    framing = params.get("framing", engine.framing)
    try:
        check_framing(framing if isinstance(framing, str) else _short(framing), None)
    except ValueError as e:
        raise HTTPError(400, str(e)) from None
    engine.pending += 1
    pc = None
    try:
        await engine.prepared(portrait)
        pc = RTCPeerConnection()
        session = Session(engine, pc, portrait, mode=mode, params=source, motion=motion, mouth=mouth, scale=scale,
                          framing=framing, interior=interior)
        exp, speech = params.get("exp", "face"), params.get("speech", "face")
        try:
            if exp == "mic":
                raise ValueError("the microphone drives the speech parameters only")
            session.mix.route("exp", exp)
            session.mix.route("speech", speech)
            if speech == "mic":
                session.ensure_mic()
            if params.get("track"):
                e = engine.tracks.get(str(params["track"]))
                if e is None:
                    raise HTTPError(404, f"no track {params['track']!r}")
                session.set_track(e)
            elif "track" in (exp, speech):
                if not engine.tracks:
                    raise HTTPError(400, "no parameter tracks on this server (start it with --tracks DIR)")
                session.set_track(next(iter(engine.tracks.values())))
        except ValueError as e:
            raise HTTPError(400, str(e)) from None
        _wire(session, pc)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as e:
            raise HTTPError(400, f"invalid SDP offer: {type(e).__name__}: {str(e) or 'cannot be parsed'}") from None
        kinds = {t.kind for t in pc.getTransceivers()}
        if "video" not in kinds:
            raise HTTPError(400, "the offer has no video: add a video transceiver (recvonly or sendrecv)")
        pc.addTrack(session.video_out)
        if "audio" in kinds:
            pc.addTrack(session.audio_out)
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as e:
            raise HTTPError(400, f"cannot answer this offer: {type(e).__name__}: {e}") from None
        engine.sessions[session.id] = session
        session.tasks.append(asyncio.ensure_future(session.drive()))
        session.tasks.append(asyncio.ensure_future(session.produce()))
        session.tasks.append(asyncio.ensure_future(session.report()))
        session.tasks.append(asyncio.ensure_future(_watchdog(session)))
        pc = None  # owned by the session now
        return _json({"sdp": session.pc.localDescription.sdp, "type": session.pc.localDescription.type,
                      "session": session.id})
    finally:
        engine.pending -= 1
        if pc is not None:
            try:
                await pc.close()
            except Exception:
                pass


def _wire(session: Session, pc) -> None:
    @pc.on("datachannel")
    def on_datachannel(channel):
        session.channel = channel
        channel.on("message", session.on_message_event)

        @channel.on("open")
        def _open():
            session.send(session.hello())

        @channel.on("close")
        def _closed():
            asyncio.ensure_future(session.close())

        if channel.readyState == "open":
            session.send(session.hello())

    @pc.on("track")
    def on_track(track):
        # streaming.rtp: a webcam frame is passed on at its last packet (aiortc: a frame later), the
        # microphone's sound with one frame held back (aiortc: four)
        if track.kind == "video":
            use_buffer(pc, track, marker_frame_buffer())
            session.tasks.append(asyncio.ensure_future(session.consume(track)))
        elif track.kind == "audio":
            use_buffer(pc, track, mic_buffer())
            session.tasks.append(asyncio.ensure_future(session.consume_audio(track)))

    @pc.on("connectionstatechange")
    async def on_state():
        st = pc.connectionState
        if st == "connected":
            session.connected = True
        elif st in ("failed", "closed"):
            await session.close()


async def _watchdog(session: Session, connect_timeout: float = 20.0, disconnect_grace: float = 8.0):
    """Close sessions that never connect, or that stay disconnected."""
    gone_since = None
    try:
        while not session.closed:
            await asyncio.sleep(1.0)
            st = session.pc.connectionState
            now = time.monotonic()
            if not session.connected and now - session.created > connect_timeout:
                log.info("session %s never connected; closing", session.id)
                break
            if st == "disconnected":
                gone_since = gone_since or now
                if now - gone_since > disconnect_grace:
                    break
            else:
                gone_since = None
    except asyncio.CancelledError:
        return
    asyncio.ensure_future(session.close())


# ------------------------------------------------------------------------------------------- ICE
_ice_original = None


def configure_ice(mode: str = "all") -> None:
    """Which local addresses WebRTC offers as ICE candidates. aioice leaves out 127.0.0.1, so a
    machine without another interface could not connect at all: "all" is aioice's choice plus
    127.0.0.1; "loopback" is 127.0.0.1 only (media never leaves this machine; the browser must then
    offer loopback candidates too, e.g. Chromium with --allow-loopback-in-peer-connection)."""
    global _ice_original
    import aioice.ice as ice
    if mode not in ("all", "loopback"):
        raise ValueError(f"ICE mode must be 'all' or 'loopback', not {mode!r}")
    if _ice_original is None:
        _ice_original = ice.get_host_addresses

    def addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if mode == "loopback":
            return ["127.0.0.1"] if use_ipv4 else []
        out = list(_ice_original(use_ipv4, use_ipv6))
        if use_ipv4 and "127.0.0.1" not in out:
            out.append("127.0.0.1")
        return out

    ice.get_host_addresses = addresses


# ------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.animator import add_precision_argument, add_source_mouth_argument
    p.add_argument("--checkpoint", "--model", dest="checkpoint", default=None,
                   help="model: a checkpoint folder or exported model (default: the embedded default "
                        "model, engine/assets/default_model)")
    p.add_argument("--backend", default="auto", help="inference backend: auto, torch, onnxruntime, tensorrt")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--portraits", action="append", default=[], metavar="PATH",
                   help="a portrait image or a folder of them to offer in the page (repeatable); "
                        "users can also upload their own")
    p.add_argument("--tracks", action="append", default=[], metavar="PATH",
                   help="a parameter track (.npz from `slidergan track extract`) or a folder of them")
    p.add_argument("--max-sessions", type=int, default=2, help="concurrent sessions (default 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="intra-op threads per model call (default 1: each session already runs its "
                        "stages on two threads side by side)")
    p.add_argument("--size", type=int, default=512,
                   help="the stream's size in pixels: the square's side, and the whole photo's long side (default 512)")
    p.add_argument("--framing", choices=FRAMINGS, default="square",
                   help="what a session streams first (the page switches it): 'square' (default: a square round "
                        "the face) or 'full' (the whole photo, its aspect kept, the animated face pasted back)")
    p.add_argument("--renderer", choices=["model", "warp-only"], default="model",
                   help="'model' (the generator) or 'warp-only' (no network: the portrait warped along its mesh)")
    add_source_mouth_argument(p)
    from engine.mouth import add_interior_argument
    add_interior_argument(p)
    add_precision_argument(p)
    p.add_argument("--fps", type=float, default=30.0, help="stream frame rate without a webcam (default 30)")
    p.add_argument("--ice", choices=["all", "loopback"], default="all",
                   help="ICE candidates: all local addresses plus 127.0.0.1 (default), or loopback only")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a page at ORIGIN (scheme://host[:port]) may use this server: it passes the Origin "
                        "check, gets CORS answers, and reads the token from /api/info (repeatable; by "
                        "default only the server's own page may change state)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME[:PORT]",
                   help="another name this server may be reached by (the Host header), e.g. behind a proxy "
                        "or tunnel; without a port, any port (repeatable; by default 127.0.0.1, localhost, "
                        "[::1] and --host, with the server's port)")
    p.add_argument("--log-level", default="info")


def build_engine(args) -> Engine:
    from engine.animator import load_models
    models = load_models(args.checkpoint, backend=args.backend, threads=args.threads, precision=args.precision)
    eng = Engine(models, output_size=args.size, fps=args.fps, max_sessions=args.max_sessions, checkpoint=args.checkpoint,
                 renderer=args.renderer, source_mouth=args.source_mouth, framing=args.framing,
                 mouth_interior=args.mouth_interior)
    for spec in args.portraits:
        for f in _expand(spec, IMAGE_EXTS):
            try:
                eng.add_portrait_file(f)
            except (ImageReadError, OSError) as e:  # one bad photo does not stop the server
                log.warning("portrait %s not used: %s", f, e)
    for spec in args.tracks:
        for f in _expand(spec, (".npz",)):
            eng.add_track_file(f)
    return eng


def _expand(spec: str, exts) -> list[Path]:
    p = Path(spec)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix.lower() in exts)
    if not p.exists():
        raise FileNotFoundError(f"not found: {p}")
    return [p]


def main(args) -> int:
    from aiohttp import web
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    logging.getLogger("aiortc").setLevel(logging.WARNING)
    if args.max_sessions < 1:
        raise ValueError("--max-sessions must be at least 1")
    limit_malloc_arenas()
    origins = [Guard.normalize_origin(o) for o in getattr(args, "allow_origin", [])]   # ValueError: say so now
    allow_hosts = list(getattr(args, "allow_host", []))
    configure_ice(args.ice)
    eng = build_engine(args)
    eng.start_threads()
    eng.warm_up()
    app = make_app(eng, allow_origins=origins, allow_hosts=allow_hosts, host=args.host)

    async def default_executor(app):
        # asyncio's default executor (aiortc encodes there) starts its threads one by one as load
        # comes: the same size, started at once, so sessions leave the thread count as they found it
        ex = concurrent.futures.ThreadPoolExecutor(min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="asyncio")
        prestart(ex)
        asyncio.get_running_loop().set_default_executor(ex)
    app.on_startup.append(default_executor)
    print(f"slidergan serve: http://{args.host}:{args.port}/  ({len(eng.portraits)} portrait(s), "
          f"{len(eng.tracks)} track(s), backend {getattr(eng.models, 'backend', '?')}, "
          f"at most {eng.max_sessions} session(s))", flush=True)
    try:
        web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    finally:
        eng.close()
    return 0
