"""``slidergan live``: local puppeteering without a browser. Camera in (OpenCV ``VideoCapture``: a
camera index or a video file), the animated portrait out to a window (when OpenCV has a GUI and a
display exists) and/or a recording, a parameter track's audio through sounddevice, the lips from a
microphone (sounddevice input, the audio model of ``engine.audio``).

    slidergan live --source portrait.jpg                      # webcam 0 drives the portrait
    slidergan live --source portrait.jpg --track speech.npz   # lips from the track, with its audio
    slidergan live --source portrait.jpg --mic                # lips from the microphone, expression from the webcam
    slidergan live --source portrait.jpg --mic --camera none  # the microphone alone
    slidergan live --source portrait.jpg --camera talk.mp4 --record out.mp4 --max-seconds 10

Keys in the window: q or Esc quits, c recalibrates the neutral, m switches relative/absolute, n shows
the portrait's own expression (sliders back to rest), h switches the head's motion, + and - scale the
expression's motion up and down by 0.1 (``--expression-scale``).

Importing this module opens nothing (no camera, no audio device, no window).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

import numpy as np

log = logging.getLogger("slidergan.live")


class LiveError(RuntimeError):
    pass


def gui_available() -> tuple[bool, str]:
    """(can open a window, why not)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) and os.name != "nt":
        return False, "no display (DISPLAY/WAYLAND_DISPLAY not set)"
    import cv2
    info = cv2.getBuildInformation()
    gui = [ln for ln in info.splitlines() if "GUI:" in ln]
    if gui and ("NONE" in gui[0].upper()):
        return False, "this OpenCV is the headless build (no window support)"
    return True, ""


class Camera:
    """Reads frames on a thread and keeps only the newest (stale frames are dropped)."""

    def __init__(self, spec: str, width: int = 640, height: int = 480, loop: bool = False):
        import cv2
        src = int(spec) if str(spec).isdigit() else str(spec)
        self.is_file = not isinstance(src, int)
        if self.is_file and not os.path.exists(src):
            raise FileNotFoundError(f"camera source not found: {src}")
        self.cap = cv2.VideoCapture(src)
        if not self.cap.isOpened():
            raise LiveError(f"cannot open camera {spec!r}" + (" (no camera on this machine?)" if not
                                                               self.is_file else ""))
        if not self.is_file:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 30.0) or 30.0
        self.loop = loop
        self.latest = None
        self.frames = 0
        self.dropped = 0
        self.ended = False
        self._stop = threading.Event()
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._run, name="live-camera", daemon=True)
        self._t.start()

    def _run(self):
        import cv2
        t0 = time.monotonic()
        while not self._stop.is_set():
            ok, bgr = self.cap.read()
            if not ok:
                if self.is_file and self.loop:
                    self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                    continue
                break
            if self.is_file:   # play a file at its own rate, like a camera
                due = t0 + self.frames / self.fps
                d = due - time.monotonic()
                if d > 0:
                    time.sleep(d)
            with self._cv:
                if self.latest is not None:
                    self.dropped += 1
                self.latest = (bgr[:, :, ::-1].copy(), time.monotonic())
                self.frames += 1
                self._cv.notify_all()
        with self._cv:
            self.ended = True
            self._cv.notify_all()

    def read(self, timeout: float = 1.0):
        """The newest frame (RGB, time) not yet read; None at the end or on timeout."""
        with self._cv:
            if self.latest is None and not self.ended:
                self._cv.wait(timeout)
            item, self.latest = self.latest, None
            return item

    def close(self):
        self._stop.set()
        self._t.join(timeout=2)
        self.cap.release()


class AudioPlayer:
    """Plays int16 (n, 2) samples through sounddevice and serves as the clock (seconds played)."""

    def __init__(self, pcm: np.ndarray, rate: int = 48000, loop: bool = True):
        try:
            import sounddevice as sd
        except (ImportError, OSError) as e:
            raise LiveError(f"no audio output: sounddevice/PortAudio unavailable ({e}); install "
                            "libportaudio2, or use --no-audio") from None
        self.pcm = pcm
        self.rate = rate
        self.loop = loop
        self.pos = 0
        self._t0 = None

        def callback(out, frames, time_info, status):
            n = len(self.pcm)
            idx = (self.pos + np.arange(frames))
            if self.loop:
                idx %= n
                out[:] = self.pcm[idx]
            else:
                ok = idx < n
                out[:] = 0
                out[ok] = self.pcm[idx[ok]]
            self.pos += frames
        try:
            self.stream = sd.OutputStream(samplerate=rate, channels=2, dtype="int16", callback=callback)
            self.stream.start()
        except Exception as e:
            raise LiveError(f"cannot open an audio output device: {e} (use --no-audio)") from None

    def now(self) -> float:
        return self.pos / self.rate

    def close(self):
        self.stream.stop()
        self.stream.close()


def check_microphone(device=None) -> tuple:
    """(device, name, sample rate) of the input device ``device`` (None or "default": the system's
    default; an index; a name), checked before anything is loaded: LiveError when sounddevice/PortAudio
    is missing, the device does not exist or has no input channels."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:
        raise LiveError(f"no microphone: sounddevice/PortAudio unavailable ({e}); install libportaudio2") from None
    from engine.audio import SAMPLE_RATE
    if device == "default":
        device = None
    dev = int(device) if isinstance(device, str) and device.isdigit() else device
    which = "the default input device" if dev is None else f"input device {device!r}"
    try:
        info = sd.query_devices(dev, kind="input")
    except (ValueError, sd.PortAudioError) as e:
        raise LiveError(f"no microphone: {which} does not exist ({e}); list the devices with "
                        "`python -m sounddevice`, or leave out --mic") from None
    if int(info.get("max_input_channels", 0)) < 1:
        raise LiveError(f"no microphone: {info.get('name', which)} has no input channels")
    try:
        sd.check_input_settings(dev, channels=1, samplerate=SAMPLE_RATE, dtype="float32")
        rate = SAMPLE_RATE
    except Exception:
        rate = int(info.get("default_samplerate") or 48000)
    return dev, str(info.get("name", which)), rate


class Microphone:
    """sounddevice input, mono, 20 ms blocks, each handed to ``sink(samples_16k)`` on a worker thread
    (PortAudio's callback only queues). 16 kHz when the device takes it, else its own rate resampled.
    A missing device, a device that is not an input, or one that cannot be opened (taken by another
    program) is a LiveError saying which."""

    def __init__(self, sink, device=None, block_s: float = 0.02):
        import queue

        import sounddevice as sd
        dev, self.name, self.rate = check_microphone(device)
        self.sink = sink
        self.q: queue.Queue = queue.Queue(maxsize=100)
        self.blocks = self.overflows = 0
        self._stop = threading.Event()

        def callback(indata, frames, time_info, status):
            if status:
                self.overflows += 1
            try:
                self.q.put_nowait(indata[:, 0].copy())
            except queue.Full:
                self.overflows += 1
        self._t = threading.Thread(target=self._run, name="live-mic", daemon=True)
        self._t.start()
        try:
            self.stream = sd.InputStream(device=dev, channels=1, samplerate=self.rate, dtype="float32",
                                         blocksize=int(self.rate * block_s), callback=callback)
            self.stream.start()
        except Exception as e:
            self._stop.set()
            raise LiveError(f"cannot open the microphone {self.name}: {e} (is another program using it?)") from None

    def _run(self):
        import queue

        from engine.audio import SAMPLE_RATE
        while not self._stop.is_set():
            try:
                x = self.q.get(timeout=0.1)
            except queue.Empty:
                continue
            if self.rate != SAMPLE_RATE:
                n = int(round(len(x) * SAMPLE_RATE / self.rate))
                x = np.interp(np.arange(n) * self.rate / SAMPLE_RATE, np.arange(len(x)), x).astype(np.float32)
            self.sink(x)
            self.blocks += 1

    def close(self):
        self._stop.set()
        try:
            self.stream.stop()
            self.stream.close()
        except Exception:
            pass
        self._t.join(timeout=2)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from engine.animator import add_framing_arguments, add_precision_argument, add_source_mouth_argument

    from .drivers import add_expression_scale_argument
    from .render import add_source_face_argument
    p.add_argument("--source", required=True, help="the portrait to animate")
    add_source_face_argument(p)
    p.add_argument("--camera", default="0", help="camera index or a video file (default 0), or 'none'")
    p.add_argument("--mic", nargs="?", const="default", default=None, metavar="DEVICE",
                   help="lips from the microphone (the audio model): the default input device, or a device "
                        "index or name (`python -m sounddevice` lists them)")
    p.add_argument("--track", default=None, help="a parameter track: speech from it, with its audio")
    p.add_argument("--checkpoint", "--model", dest="checkpoint", default=None,
                   help="model folder (default: the embedded default model)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--mode", choices=["relative", "absolute"], default="relative")
    p.add_argument("--params", choices=["mesh", "head"], default="mesh",
                   help="the camera's parameters: 'mesh' (blendshape fit of its face mesh, default) or 'head' "
                        "(the discriminator's regression head)")
    p.add_argument("--renderer", choices=["model", "warp-only"], default="model",
                   help="'model' (the generator) or 'warp-only' (no network: the portrait warped along its mesh)")
    add_source_mouth_argument(p)
    add_precision_argument(p)
    p.add_argument("--motion", choices=["speech", "expression", "head"], default=None,
                   help="'head' (expression + the camera's head turns, nods, tilts and moves and where its eyes "
                        "look; the default where "
                        "the model can), 'expression' (expression and speech only; the h key switches) or 'speech' "
                        "(the lips and jaw only)")
    add_expression_scale_argument(p)
    from engine.mouth import add_interior_argument
    add_interior_argument(p)
    add_framing_arguments(p)
    p.add_argument("--record", default=None,
                   help="also write the animated video here (.mp4, .mov, .mkv, .webm or .gif; no sound)")
    p.add_argument("--no-window", action="store_true", help="do not open a window")
    p.add_argument("--no-audio", action="store_true", help="do not play the track's audio")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--neutral-from", default=None, metavar="FILE",
                   help="relative mode: take the camera face's neutral expression from this photo or video of the "
                        "same face at rest (for a face that starts mid-expression; c takes it from the camera "
                        "again); the head's neutral pose still from the camera's first second")
    p.add_argument("--face", default=None, metavar="X,Y",
                   help="several people in view: follow the face at this pixel of the camera frame (default: the "
                        "largest); one face is followed, never another")


def _finish_recording(writer, recording, error: BaseException | None, frames: int) -> None:
    """Close the recording and rename it onto its name; after an error, or with no frame, drop it instead."""
    if error is None and frames == 0:
        error = LiveError("no frame was animated")
        print(f"slidergan live: {error}, so nothing was recorded", file=sys.stderr, flush=True)
    if error is not None:
        writer.abort()
        recording.__exit__(type(error), error, error.__traceback__)   # removes the temporary
        return
    try:
        writer.close()
    except BaseException as e:
        recording.__exit__(type(e), e, e.__traceback__)
        raise
    recording.__exit__(None, None, None)


def main(args) -> int:
    import cv2

    from engine.animator import Animator, check_framing, load_models

    from .drivers import MAX_EXPRESSION_SCALE, DriverMix, FaceDriver, IdleBlinks, TrackDriver, resolve_motion
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    window, why = (False, "--no-window") if args.no_window else gui_available()
    if not window and not args.record:
        raise LiveError(f"nowhere to show the result: {why}. Record it with --record OUT.mp4, or use "
                        "`slidergan serve` and a browser")
    if not window and not args.no_window:
        print(f"slidergan live: no window ({why}); recording to {args.record}", flush=True)
    if args.mic is not None and args.track:
        raise LiveError("--mic and --track both drive the lips: choose one")
    if args.camera == "none" and args.mic is None and not args.track:
        raise LiveError("--camera none leaves nothing to drive the portrait: add --mic or --track")
    if args.neutral_from is not None:
        if args.camera == "none":
            raise LiveError("--neutral-from is the camera face's neutral: it needs a camera")
        if args.mode != "relative":
            raise LiveError("--neutral-from is the relative mode's neutral: it needs --mode relative")
        if not os.path.isfile(args.neutral_from):
            raise LiveError(f"--neutral-from: no such file: {args.neutral_from}")
    if args.mic is not None:
        check_microphone(args.mic)        # a missing microphone is said before anything loads
    check_framing(args.framing, args.size)
    from .render import face_point, output_format, say_faces
    if args.record:
        output_format(args.record)        # a format render cannot write is said before anything loads
    source_face = None if args.source_face is None else face_point(args.source_face, "--source-face", "the portrait")
    models = load_models(args.checkpoint, backend=args.backend, precision=args.precision)
    anim = Animator(models, output_size=args.size, framing=args.framing, renderer=args.renderer,
                    source_mouth=args.source_mouth)
    say_faces(anim.set_source(args.source, face=source_face), source_face)
    motion = resolve_motion(args.motion, anim)
    head = motion == "head"
    n_exp = int(models.n_exp)
    mix = DriverMix(n_exp, anim.n_params, anim.source_params)
    mix.idle = IdleBlinks(anim.face_model, anim.source.lids)    # while nothing drives the expression
    mix.hold_expression = motion == "speech"
    mix.expression_scale = args.expression_scale       # and every driver set on the mix below
    mic = None
    if args.mic is not None:
        from engine.audio import audio_model_for

        from .drivers import MicDriver
        mic_driver = MicDriver(audio_model_for(args.checkpoint, anim.param_names[n_exp:]), n_exp, anim.n_params)
        mic = Microphone(mic_driver.push, args.mic)
        mix.set_driver("mic", mic_driver)
    try:
        cam = Camera(args.camera) if args.camera != "none" else None
    except BaseException:
        if mic is not None:
            mic.close()
        raise
    fps = cam.fps if cam is not None else 30.0
    face = None
    if cam is not None:
        face = FaceDriver(anim.regress, anim.n_params, anim.image_size, mode=args.mode,
                          rest=anim.rest_params, rest_pose=anim.source.pose, rest_lids=anim.source.lids,
                          n_exp=n_exp, fps=cam.fps,
                          params=args.params, fit=anim.fit if anim.face_model is not None else None,
                          face_model=anim.face_model, neutral_mouth=anim.source_mouth,
                          cut_mouths=args.mouth_interior == "driver")
        if args.face:
            face.pick(*face_point(args.face), normalized=False)
        if args.neutral_from is not None:
            try:
                n = face.calibrate_on_file(args.neutral_from)
            except ValueError as e:
                cam.close()
                if mic is not None:
                    mic.close()
                raise LiveError(f"--neutral-from: {e}") from None
            print(f"slidergan live: the neutral expression from {n} face{'s' if n > 1 else ''} of "
                  f"{args.neutral_from}", flush=True)
        mix.set_driver("face", face)
    mix.route("exp", "face" if cam is not None else "rest")
    mix.route("speech", "mic" if mic is not None else "face" if cam is not None else "rest")
    player = None
    clock0 = time.monotonic()
    if args.track:
        from engine.tracks import load_track

        from .media import track_audio
        tr = load_track(args.track, check_audio=not args.no_audio)
        td = TrackDriver(tr, n_exp, anim.n_params, loop=True, face_model=anim.face_model, rest_lids=anim.source.lids)
        mix.set_driver("track", td)
        for g in td.groups():
            if g == "speech":
                mix.route(g, "track")
        if not args.no_audio:
            pcm = track_audio(tr, 48000, 2)
            if pcm is not None:
                try:
                    player = AudioPlayer(pcm)
                except LiveError as e:   # no sound card (a server): the track still drives the lips
                    print(f"slidergan live: {e}; the track plays without sound", flush=True)
    writer = recording = None
    if args.record:
        from pathlib import Path

        from engine.atomic import atomic_path

        from .render import VideoWriter
        h, w = anim.output_shape
        # Written beside OUT and renamed onto it when the session ends, finished: a player never opens half a
        # file, and an earlier OUT is replaced only by a whole recording (an error keeps it as it was).
        recording = atomic_path(Path(args.record))
        writer = VideoWriter(recording.__enter__(), w, h, fps, None, suffix=Path(args.record).suffix)
    n = 0
    last_status = "ok"
    file_neutral = args.neutral_from is not None     # the neutral still the file's (False once the camera's)
    stopped = ""
    t_start = time.monotonic()
    error = None
    try:
        while True:
            if cam is not None:
                item = cam.read(timeout=1.0 / cam.fps)
                if item is None and cam.ended:
                    break
                if item is not None:
                    rgb, t = item
                    face.push(rgb, t - clock0)
                    st = face.state.status
                    if st != last_status and st in ("lost", "no_face", "too_small", "ok"):
                        # say when the followed face goes and comes back (not every frame)
                        print(f"slidergan live: face {st}" + (f": {face.state.message}" if face.state.message
                                                              else ""), flush=True)
                    last_status = st
                    if file_neutral and face.state.calibrating:
                        # the person check found someone else than the file shows (c says so itself)
                        file_neutral = False
                        print(f"slidergan live: the camera shows someone else than {args.neutral_from}: the "
                              "neutral expression from the camera's first second instead", flush=True)
            else:
                time.sleep(max(0.0, t_start + (n + 1) / fps - time.monotonic()))
            t_clock = player.now() if player is not None else time.monotonic() - clock0
            out = anim.animate(mix.value(t_clock), pose=face.pose_value(t_clock) if head and face is not None else None,
                               mouth=mix.mouth() if args.mouth_interior == "driver" else None)
            n += 1
            if writer is not None:
                writer.write(out)
            if window:
                cv2.imshow("slidergan live", out[:, :, ::-1])
                k = cv2.waitKey(1) & 0xFF
                if k in (ord("q"), 27):
                    break
                if k == ord("c") and face is not None:
                    face.calibrate()
                    file_neutral = False
                if k == ord("m") and face is not None:
                    face.set_mode("absolute" if face.mode == "relative" else "relative")
                if k == ord("n"):
                    mix.route("exp", "rest")
                if k == ord("h"):
                    head = not head
                if k in (ord("+"), ord("="), ord("-")):
                    step = -0.1 if k == ord("-") else 0.1
                    mix.expression_scale = round(min(max(mix.expression_scale + step, 0.0), MAX_EXPRESSION_SCALE), 2)
                    print(f"slidergan live: expression scale {mix.expression_scale:g}", flush=True)
            if args.max_seconds is not None and time.monotonic() - t_start >= args.max_seconds:
                break
    except KeyboardInterrupt:
        stopped = " (stopped by Ctrl-C)"      # the way to stop without a window: as q, the recording is kept
    except BaseException as e:
        error = e
        raise
    finally:
        if mic is not None:
            mic.close()
        if cam is not None:
            cam.close()
        if face is not None:
            face.close()
        if player is not None:
            player.close()
        if writer is not None:
            _finish_recording(writer, recording, error, n)
        if window:
            cv2.destroyAllWindows()
    dt = time.monotonic() - t_start
    cam_s = f", camera frames {cam.frames}, dropped {cam.dropped}" if cam is not None else ""
    mic_s = f", microphone blocks {mic.blocks} ({mic.overflows} overflows)" if mic is not None else ""
    print(f"slidergan live: {n} frames in {dt:.1f} s ({n / max(dt, 1e-6):.1f} fps){cam_s}{mic_s}{stopped}"
          + (f"; recorded to {args.record}" if args.record else ""), flush=True)
    return 0
