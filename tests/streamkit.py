"""Shared helpers of the streaming, browser and render tests: a tiny random model, synthetic faces
that MediaPipe detects (trainer.synthetic's cartoon faces), videos, y4m files and tracks."""
from __future__ import annotations

import fractions
import os
from pathlib import Path

import numpy as np


def tiny_checkpoint(path: Path, seed: int = 0, profile: str = "tiny", regressor_gain: float = 1.0) -> Path:
    """A random-weight checkpoint. ``regressor_gain`` scales the regression head, so that the small
    differences a random trunk sees between two driving faces become visible parameter changes
    (relative mode subtracts the constant part)."""
    import torch

    from engine.checkpoint import save_checkpoint
    from engine.config import get_profile
    from engine.models import Discriminator, build_generator
    cfg = get_profile(profile)
    torch.manual_seed(seed)
    G, D = build_generator(cfg), Discriminator(cfg)
    # Random FiLM weights are small; make the parameters' effect on the image clearly visible.
    with torch.no_grad():
        for m in G.modules():
            if m.__class__.__name__ == "FiLM":
                m.to_scale_shift.weight.mul_(6.0)
        D.regressor.weight.mul_(regressor_gain)
    return save_checkpoint(path, cfg, G, D)


def load_tiny(path: Path, backend: str = "torch"):
    from engine import inference
    return inference.load_models(path, backend=backend, device="cpu")


def _synthetic():
    import pytest
    return pytest.importorskip("trainer.synthetic", reason="trainer.synthetic (cartoon faces) not available")


def synth_face(seed: int = 0, p: np.ndarray | None = None, size: int = 256) -> np.ndarray:
    syn = _synthetic()
    ident = syn.random_identity(np.random.default_rng(seed))
    return syn.render_face(ident, np.zeros(40) if p is None else p, size=size)


def synth_portrait(seed: int = 0, size: int = 384) -> np.ndarray:
    return synth_face(seed, size=size)


def synth_driving_frames(n: int, seed: int = 1, w: int = 640, h: int = 480, period: int = 30,
                         face: int = 300) -> list[np.ndarray]:
    """Frames of a cartoon face that opens and closes its mouth (parameter 0) and smiles (1)."""
    syn = _synthetic()
    ident = syn.random_identity(np.random.default_rng(seed))
    out = []
    cache = {}
    for i in range(n):
        ph = (i % period) / period
        k = round(float(np.sin(2 * np.pi * ph)), 1)
        if k not in cache:
            p = np.zeros(40)
            p[0] = max(k, 0.0)
            p[1] = k
            f = syn.render_face(ident, p, size=face)
            canvas = np.full((h, w, 3), 200, np.uint8)
            y0, x0 = (h - face) // 2, (w - face) // 2
            canvas[y0:y0 + face, x0:x0 + face] = f
            cache[k] = canvas
        out.append(cache[k])
    return out


def write_video(path: Path, frames, fps: float = 30.0, audio: np.ndarray | None = None,
                rate: int = 48000, rotation: int = 0) -> Path:
    """H.264 (+ AAC from int16 (n, 2) samples) with PyAV. ``rotation``: the display matrix's
    counter-clockwise rotation in degrees (a phone video stores its frames sideways and says so)."""
    import av
    fr = fractions.Fraction(fps).limit_denominator(1001)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=fr)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        if rotation:
            vs.set_display_rotation(rotation)
        tb = 1 / fr
        a_s = None
        if audio is not None:
            a_s = c.add_stream("aac", rate=rate)
            a_s.layout = "stereo"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, tb
            for p in vs.encode(vf):
                c.mux(p)
        for p in vs.encode(None):
            c.mux(p)
        if a_s is not None:
            for s in range(0, len(audio), 1024):
                chunk = np.ascontiguousarray(audio[s:s + 1024])
                af = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="stereo")
                af.sample_rate, af.pts, af.time_base = rate, s, fractions.Fraction(1, rate)
                for p in a_s.encode(af):
                    c.mux(p)
            for p in a_s.encode(None):
                c.mux(p)
    return path


def write_y4m(path: Path, frames, fps: int = 30) -> Path:
    """A raw YUV4MPEG2 file (Chromium's --use-file-for-fake-video-capture)."""
    import av
    with av.open(str(path), "w", format="yuv4mpegpipe") as c:
        s = c.add_stream("rawvideo", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for f in frames:
            vf = av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p")
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def tone(seconds: float, rate: int = 48000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    a = (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    return np.stack([a, a], axis=1)


def write_wav(path: Path, pcm: np.ndarray, rate: int = 48000) -> Path:
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(pcm).tobytes())
    return path


def speech_track(path: Path, seconds: float = 2.0, fps: float = 25.0, audio: Path | None = None,
                 n_speech: int = 10, n_exp: int = 30, expression: bool = False) -> Path:
    from engine.tracks import ParamTrack, save_track
    n = int(round(seconds * fps))
    t = np.arange(n) / fps
    sp = np.stack([np.sin(2 * np.pi * (1.5 + k) * t) * 0.8 for k in range(n_speech)], axis=1)
    ex = np.stack([np.cos(2 * np.pi * 0.5 * t) * 0.5] * n_exp, axis=1) if expression else None
    tr = ParamTrack(times=t, speech=sp.astype(np.float32), expression=ex, fps=fps, n_expression=n_exp,
                    audio=str(audio) if audio is not None else None)
    return save_track(tr, path)


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height with almost no pixel data (a few hundred bytes):
    what a decompression bomb or a 40000 x 1 strip looks like to a header check."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))
