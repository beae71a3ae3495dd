"""The page's "Speech from: microphone" in a real headless Chromium: its fake microphone plays a wav
(speech, then silence, looped; ``--use-file-for-fake-audio-capture``), the page sends it to
`slidergan serve` as a WebRTC audio track, and the server's audio model moves the lips: the speech
parameters the server reports follow the sound and the received video changes with them."""
from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest

from streaming.client import chromium_context, serve_process
from tests import streamkit as kit
from tests.test_audio import DEFAULT_AUDIO
from tests.test_browser import CHROMIUM, _grab, _wait_no_sessions, need_browser

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_browser()
    if not DEFAULT_AUDIO.exists():
        pytest.skip("no audio model in the default model folder")
    from tests.conftest import SHARED_DATA
    if not (SHARED_DATA / "talking").is_dir():
        pytest.skip("shared data not found")
    import cv2

    from engine.audio import read_audio
    d = tmp_path_factory.mktemp("browser-mic")
    ck = kit.tiny_checkpoint(d / "ck")
    cv2.imwrite(str(d / "portrait.png"), kit.synth_portrait(0)[:, :, ::-1])
    kit.write_y4m(d / "cam.y4m", kit.synth_driving_frames(30))
    speech = read_audio(SHARED_DATA / "talking" / "tpsmm_driving.mp4", rate=48000, max_seconds=3.0)
    x = np.concatenate([speech, np.zeros(48000 * 2, np.float32)])
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    kit.write_wav(d / "mic.wav", np.stack([pcm, pcm], 1))
    with serve_process(["--checkpoint", str(ck), "--backend", "torch", "--portraits", str(d / "portrait.png"),
                        "--size", "256", "--max-sessions", "1"], d / "server.log") as (url, _):
        yield url, d


def test_page_microphone_moves_the_lips(server, tmp_path):
    from playwright.sync_api import sync_playwright
    url, d = server
    info = json.loads(urllib.request.urlopen(url + "api/info", timeout=10).read())
    assert info["mic"] is True
    with sync_playwright() as pw:
        ctx = chromium_context(pw, tmp_path / "profile", d / "cam.y4m", executable=CHROMIUM,
                               microphone_wav=d / "mic.wav")
        try:
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#portraits img').length > 0", timeout=20000)
            page.select_option("#route-exp", "sliders")
            page.select_option("#route-speech", "mic")
            page.click("#start")
            page.wait_for_function("document.getElementById('out').videoWidth > 0", timeout=40000)
            def session():
                s = json.loads(urllib.request.urlopen(url + "api/sessions", timeout=5).read())["sessions"]
                return s[0] if s else None
            t_end = time.monotonic() + 30
            while time.monotonic() < t_end and not ((session() or {}).get("mic") or {}).get("frames", 0) > 50:
                time.sleep(0.2)      # the fake microphone's sound is arriving
            lips, mic = [], None
            t_end = time.monotonic() + 5.0          # the wav loops: 3 s of speech, 2 s of silence
            while time.monotonic() < t_end:
                s = session()
                lips.append(s["params"][info["n_exp"]])      # lips_part, the first speech parameter
                mic = s["mic"]
                time.sleep(0.1)
            frames = []
            for _ in range(6):
                frames.append(_grab(page).astype(np.float32))
                time.sleep(0.3)
            page.wait_for_function("document.getElementById('r-mic').textContent !== '-'", timeout=5000)
            page.click("#stop")
            _wait_no_sessions(url)
        finally:
            ctx.close()
    lips = np.array(lips)
    assert mic is not None and mic["heard"] and mic["frames"] > 150, mic
    assert lips.std() > 0.03 and lips.max() > 0.15, lips.round(2)
    assert max(np.abs(frames[i] - frames[j]).mean() for i in range(len(frames)) for j in range(i)) > 0.5
