"""A programmatic WebRTC client for ``slidergan serve`` (aiortc): what the tests and the benchmark use,
and a starting point for anyone driving the server from code.

    async with StreamClient("http://127.0.0.1:8080", frames=my_frames, fps=30) as c:
        await c.wait_frames(30)
        c.frames[-1]          # (RGB uint8 (H, W, 3), receive time)
        await c.send({"type": "slider", "index": 0, "value": 1.0})
        c.stats               # the server's last "stats" message
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .rtp import marker_frame_buffer, use_buffer


__all__ = ["StreamClient", "FrameSource", "SoundSource", "OfferError", "serve_process", "free_port", "chromium_context",
           "TOKEN_HEADER", "page_token", "fetch_token"]

ROOT = Path(__file__).resolve().parents[1]
TOKEN_HEADER = "X-Slidergan-Token"   # the server's per-run token: state-changing requests carry it
_TOKEN_META = re.compile(r'<meta\s+name="slidergan-token"\s+content="([^"]*)"')


def page_token(html: str) -> str | None:
    """The token the server put in its page (``<meta name="slidergan-token">``), or None."""
    m = _TOKEN_META.search(html)
    return m.group(1) if m else None


async def fetch_token(url: str, http=None) -> str | None:
    """Read the server's token from its page (``GET /``), as the browser page does. ``http``: an
    aiohttp.ClientSession to use (else a new one)."""
    import aiohttp
    own = http is None
    http = http or aiohttp.ClientSession()
    try:
        async with http.get(url.rstrip("/") + "/") as r:
            return page_token(await r.text()) if r.status == 200 else None
    finally:
        if own:
            await http.close()


class OfferError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _track_base():
    from aiortc import MediaStreamTrack
    return MediaStreamTrack


class FrameSource(_track_base()):
    """A video track that plays RGB frames (a list, looped) at ``fps`` in real time."""
    kind = "video"

    def __init__(self, frames, fps: float = 30.0):
        super().__init__()
        self.frames = frames
        self.fps = float(fps)
        self.index = 0
        self._t0 = None
        self.sent = 0

    async def recv(self):
        import av
        from aiortc.mediastreams import MediaStreamError
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        due = self._t0 + self.index / self.fps
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        rgb = self.frames[self.index % len(self.frames)]
        vf = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        vf.pts = int(round(self.index * 90000 / self.fps))
        vf.time_base = fractions.Fraction(1, 90000)
        self.index += 1
        self.sent += 1
        return vf


class SoundSource(_track_base()):
    """An audio track (a microphone stand-in) that plays mono samples (float in [-1, 1] or int16, at
    ``rate``) in real time, in 20 ms frames, then silence. ``sent[i]``: the monotonic time frame i was
    handed to the sender (a benchmark's onset clock); ``pause()``/``resume()`` stop and restart the
    packets (a dropout: nothing is sent meanwhile)."""
    kind = "audio"

    def __init__(self, samples, rate: int = 48000, loop: bool = False):
        import numpy as np
        super().__init__()
        x = np.asarray(samples)
        if x.dtype != np.int16:
            x = (np.clip(x, -1, 1) * 32767).astype(np.int16)
        self.samples, self.rate, self.loop = x.reshape(-1), int(rate), loop
        self.frame = self.rate // 50
        self.index = 0
        self._t0 = None
        self.sent: list[float] = []
        self._running = asyncio.Event()
        self._running.set()

    def pause(self):
        self._running.clear()

    def resume(self):
        self._t0 = None          # restart the real-time schedule from now
        self._running.set()

    async def recv(self):
        import av
        import numpy as np
        from aiortc.mediastreams import MediaStreamError
        if self.readyState != "live":
            raise MediaStreamError
        if not self._running.is_set():
            await self._running.wait()
        if self._t0 is None:
            self._t0 = time.monotonic() - self.index * self.frame / self.rate
        due = self._t0 + self.index * self.frame / self.rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        a = self.index * self.frame
        n = len(self.samples)
        if self.loop and n:
            chunk = np.take(self.samples, np.arange(a, a + self.frame) % n)
        else:
            chunk = self.samples[a:a + self.frame]
            chunk = np.pad(chunk, (0, self.frame - len(chunk)))
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk).reshape(1, -1), format="s16", layout="mono")
        f.sample_rate, f.pts, f.time_base = self.rate, a, fractions.Fraction(1, self.rate)
        self.index += 1
        self.sent.append(time.monotonic())
        return f


class StreamClient:
    """Connect to the server, optionally send a video (``frames``) and a sound (``sound``: an audio
    track such as ``SoundSource``, the microphone), receive the animated video (and audio)."""

    def __init__(self, url: str, frames=None, fps: float = 30.0, portrait: str | None = None,
                 exp: str | None = None, speech: str | None = None, track: str | None = None,
                 mode: str = "relative", audio: bool = True, keep: int = 600, decode: bool = True,
                 token: str | None = None, sound=None, motion: str | None = None, framing: str | None = None):
        self.url = url.rstrip("/")
        self.token = token           # the server's token; None: read from its page on connect
        self.source = FrameSource(frames, fps) if frames is not None else None
        self.offer_extra = {"portrait": portrait, "mode": mode, "track": track, "motion": motion, "framing": framing,
                            "exp": exp or ("face" if frames is not None else "sliders"),
                            "speech": speech or ("face" if frames is not None else "sliders")}
        self.want_audio = audio
        self.sound = sound
        self.frames: collections.deque = collections.deque(maxlen=keep)
        self.frame_times: collections.deque = collections.deque(maxlen=10000)
        self.audio_samples = 0
        self.messages: list[dict] = []
        self.stats: dict | None = None
        self.hello: dict | None = None
        self.session: str | None = None
        self.decode = decode
        self.pc = None
        self.channel = None
        self._tasks: list[asyncio.Task] = []
        self._opened = None
        self._new_frame = None

    async def __aenter__(self):
        await self.connect()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def connect(self, timeout: float = 20.0):
        import aiohttp
        from aiortc import RTCPeerConnection, RTCSessionDescription
        self._opened = asyncio.Event()
        self._hello = asyncio.Event()
        self._new_frame = asyncio.Event()
        self.pc = pc = RTCPeerConnection()
        self.channel = pc.createDataChannel("control")

        @self.channel.on("open")
        def _open():
            self._opened.set()

        @self.channel.on("message")
        def _msg(m):
            d = json.loads(m)
            if d.get("type") == "stats":
                self.stats = d
            elif d.get("type") == "hello":
                self.hello = d
                self._hello.set()
            self.messages.append(d)
            if len(self.messages) > 2000:
                del self.messages[:1000]

        @pc.on("track")
        def _track(track):
            if track.kind == "video":
                use_buffer(pc, track, marker_frame_buffer())   # frames as a browser passes them on
            self._tasks.append(asyncio.ensure_future(self._read(track)))

        if self.source is not None:
            pc.addTrack(self.source)
        else:
            pc.addTransceiver("video", direction="recvonly")
        if self.sound is not None:
            pc.addTrack(self.sound)           # sendrecv: the server's audio comes back on it
        elif self.want_audio:
            pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}
        body.update({k: v for k, v in self.offer_extra.items() if v is not None})
        async with aiohttp.ClientSession() as http:
            if self.token is None:
                self.token = await fetch_token(self.url, http)
            headers = {TOKEN_HEADER: self.token} if self.token else {}
            async with http.post(self.url + "/offer", json=body, headers=headers) as r:
                data = await r.json(content_type=None)
                if r.status != 200:
                    await pc.close()
                    raise OfferError(r.status, data.get("error", str(data)))
        self.session = data.get("session")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))
        await asyncio.wait_for(self._opened.wait(), timeout)
        await asyncio.wait_for(self._hello.wait(), timeout)     # the server greets every new channel
        return self

    async def _read(self, track):
        from aiortc.mediastreams import MediaStreamError
        try:
            while True:
                f = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.frame_times.append(now)
                    if self.decode:
                        self.frames.append((f.to_ndarray(format="rgb24"), now))
                    self._new_frame.set()
                else:
                    self.audio_samples += f.samples
        except (MediaStreamError, asyncio.CancelledError):
            pass

    async def send(self, msg: dict):
        self.channel.send(json.dumps(msg))

    async def wait_frames(self, n: int, timeout: float = 30.0) -> list:
        """Wait until ``n`` more video frames have arrived; returns the newest frame."""
        target = len(self.frame_times) + n
        deadline = time.monotonic() + timeout
        while len(self.frame_times) < target:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"got {len(self.frame_times) - target + n} of {n} frames in {timeout} s")
            self._new_frame.clear()
            try:
                await asyncio.wait_for(self._new_frame.wait(), left)
            except asyncio.TimeoutError:
                pass
        return self.frames[-1] if self.frames else None

    async def wait_message(self, kind: str, timeout: float = 10.0, after: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.messages[after:]:
                if m.get("type") == kind:
                    return m
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {kind!r} message within {timeout} s")

    async def request(self, msg: dict, reply: str, timeout: float = 10.0) -> dict:
        n = len(self.messages)
        await self.send(msg)
        return await self.wait_message(reply, timeout, after=n)

    async def close(self):
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.source is not None:
            self.source.stop()
        if self.sound is not None:
            self.sound.stop()
        if self.pc is not None:
            await self.pc.close()


# ============================================ a server in its own process, a browser (tests, benchmarks)

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_process(args: list[str], log_path, timeout: float = 60.0):
    """``slidergan serve ARGS`` in its own process on a free loopback port (``--ice loopback``);
    yields its URL (``http://127.0.0.1:PORT/``) once ``/api/info`` answers; stops it afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "engine.cli", "serve", "--port", str(port), "--ice", "loopback", *args]
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"slidergan serve exited: {Path(log_path).read_text()[-2000:]}")
                try:
                    urllib.request.urlopen(url + "api/info", timeout=1).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"slidergan serve did not answer in {timeout:.0f} s") from None
                    time.sleep(0.1)
            yield url, proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


CHROMIUM = "/usr/bin/chromium"


def chromium_context(playwright, profile_dir, camera_y4m, viewport=(1280, 860), executable: str = CHROMIUM,
                     microphone_wav=None):
    """Headless Chromium (Playwright) whose fake webcam plays ``camera_y4m`` (and fake microphone
    ``microphone_wav``, looped, when given), allowed to use loopback ICE candidates, with the flags that
    keep it off the network (none of its background services)."""
    return playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=executable, headless=True,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
              f"--use-file-for-fake-video-capture={camera_y4m}", "--allow-loopback-in-peer-connection",
              "--autoplay-policy=no-user-gesture-required"]
        + ([f"--use-file-for-fake-audio-capture={microphone_wav}"] if microphone_wav else []),
        viewport={"width": viewport[0], "height": viewport[1]})
