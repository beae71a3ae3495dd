"""The browser page in a real headless Chromium (Debian's /usr/bin/chromium through Playwright): the
fake camera plays a synthetic face video (y4m), the page connects to `slidergan serve` over WebRTC on
loopback, and the test decodes the <video> into a canvas and looks at the pixels. A screenshot is
kept in the test's tmp dir (and copied to $SLIDERGAN_ARTIFACTS when that is set)."""
from __future__ import annotations

import os
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from streaming.client import chromium_context, serve_process
from tests import streamkit as kit

CHROMIUM = os.environ.get("SLIDERGAN_CHROMIUM", "/usr/bin/chromium")
pytestmark = pytest.mark.timeout(180)


def need_browser() -> None:
    """Skip unless Debian's Chromium and Playwright are here."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright (pip install playwright) not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need_browser()
    d = tmp_path_factory.mktemp("browser")
    import cv2
    ck = kit.tiny_checkpoint(d / "ck")
    cv2.imwrite(str(d / "portrait.png"), kit.synth_portrait(0)[:, :, ::-1])
    kit.write_y4m(d / "cam.y4m", kit.synth_driving_frames(60))
    with serve_process(["--checkpoint", str(ck), "--backend", "torch", "--portraits", str(d / "portrait.png"),
                        "--size", "256", "--max-sessions", "2"], d / "server.log") as (url, _):
        yield url, d


@pytest.fixture
def page(server, tmp_path):
    from playwright.sync_api import sync_playwright
    url, d = server
    with sync_playwright() as pw:
        ctx = chromium_context(pw, tmp_path / "profile", d / "cam.y4m", executable=CHROMIUM)
        try:
            pg = ctx.new_page()
            pg.console = []
            pg.on("console", lambda m: pg.console.append(m.text))
            pg.goto(url)
            pg.wait_for_function("document.querySelectorAll('#portraits img').length > 0", timeout=20000)
            yield pg
        finally:
            ctx.close()


GRAB = """() => {
  const v = document.getElementById('out');
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  return {w: c.width, h: c.height, data: Array.from(g.getImageData(0, 0, c.width, c.height).data)};
}"""


def _grab(page) -> np.ndarray:
    r = page.evaluate(GRAB)
    return np.array(r["data"], np.uint8).reshape(r["h"], r["w"], 4)[:, :, :3]


def _keep(path: Path):
    dest = os.environ.get("SLIDERGAN_ARTIFACTS")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(dest) / path.name)


def test_page_streams_the_animated_portrait(page, tmp_path):
    page.click("#start")
    page.wait_for_function("document.getElementById('out').videoWidth > 0", timeout=40000)
    page.wait_for_function("document.getElementById('r-face').textContent.startsWith('ok')", timeout=30000)
    page.wait_for_function("Number(document.getElementById('r-fps').textContent) > 1", timeout=20000)
    frame = _grab(page)
    assert frame.shape == (256, 256, 3)
    assert frame.std() > 10, "the decoded video is flat"
    # the portrait is there: not black, has the cartoon's skin tones in the middle
    assert frame[96:160, 96:160].mean() > 40
    # frames keep coming (the picture itself may be still)
    shown = page.evaluate("document.getElementById('out').currentTime")
    page.wait_for_function(f"document.getElementById('out').currentTime > {shown} + 0.3", timeout=10000)
    n_sliders = page.locator("#sliders input[type=range]").count()
    assert n_sliders == 40
    assert page.inner_text("#status") == "connected"
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot))
    _keep(shot)
    # a slider moved by hand pins it and changes the face
    before = _grab(page)
    page.evaluate("""() => { const s = document.querySelectorAll('#sliders input[type=range]');
        for (let i = 0; i < s.length; i++) { s[i].value = 1; s[i].dispatchEvent(new Event('input')); } }""")
    page.wait_for_function("document.querySelectorAll('#sliders .slider.pinned').length >= 40", timeout=10000)
    time.sleep(1.0)
    after = _grab(page)
    assert np.abs(after[64:192, 64:192].astype(float) - before[64:192, 64:192]).mean() > 2.0
    # the expression scale reaches the session
    assert _session_status(page.url)["scale"] == 1.0
    page.evaluate("""() => { const s = document.getElementById('scale'); s.value = 0.5;
        s.dispatchEvent(new Event('input')); }""")
    t0 = time.monotonic()
    while _session_status(page.url)["scale"] != 0.5:
        assert time.monotonic() - t0 < 10, "the page's expression scale did not reach the session"
        time.sleep(0.1)
    assert page.inner_text("#scale-value") == "0.50"
    # the page's framing: the whole photo (this square photo's face fills it: the same frames; the pixels of a
    # wide one are tests/test_streaming.py's), and the stream goes on
    assert _session_status(page.url)["framing"] == "square"
    page.check("input[name=framing][value=full]")
    t0 = time.monotonic()
    while _session_status(page.url)["framing"] != "full":
        assert time.monotonic() - t0 < 10, "the page's framing did not reach the session"
        time.sleep(0.1)
    shown = page.evaluate("document.getElementById('out').currentTime")
    page.wait_for_function(f"document.getElementById('out').currentTime > {shown} + 0.3", timeout=10000)
    page.click("#stop")
    page.wait_for_function("document.getElementById('start').disabled === false", timeout=5000)
    _wait_no_sessions(page.url)


def test_page_records_the_animated_portrait(page, tmp_path):
    """Record, a few seconds, Stop recording: the page offers a WebM of the received stream (the
    browser's MediaRecorder), whose frames are the animated portrait at the stream's size; Snapshot saves
    the frame shown as a PNG of that size."""
    import av
    assert page.is_disabled("#record")                       # nothing to record before the stream
    page.click("#start")
    page.wait_for_function("document.getElementById('out').videoWidth > 0", timeout=40000)
    page.click("#record")
    page.wait_for_function("document.getElementById('record').textContent === 'Stop recording'", timeout=5000)
    time.sleep(3.0)
    page.click("#record")
    page.wait_for_selector("#download:not([hidden])", timeout=10000)
    with page.expect_download() as dl:
        page.click("#download")
    path = tmp_path / dl.value.suggested_filename
    dl.value.save_as(str(path))
    assert path.suffix == ".webm" and path.stat().st_size > 10_000
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) >= 20, len(frames)                    # about 3 s of the stream
    assert frames[-1].shape == (256, 256, 3) and frames[-1].std() > 10
    with page.expect_download() as dl:                       # Snapshot: the frame shown, as a PNG
        page.click("#snapshot")
    shot = tmp_path / dl.value.suggested_filename
    dl.value.save_as(str(shot))
    import cv2
    picture = cv2.imread(str(shot))
    assert shot.suffix == ".png" and picture.shape == (256, 256, 3) and picture.std() > 10
    page.click("#stop")
    assert page.is_disabled("#snapshot")
    _wait_no_sessions(page.url)


def _sessions(url: str) -> int:
    import json
    return len(json.loads(urllib.request.urlopen(url + "api/sessions", timeout=5).read())["sessions"])


def _wait_no_sessions(url: str, timeout: float = 30.0) -> None:
    t0 = time.monotonic()
    while _sessions(url):
        assert time.monotonic() - t0 < timeout, "the server kept the session of a closed page"
        time.sleep(0.2)


def test_closing_the_tab_frees_the_session(page):
    page.click("#start")
    page.wait_for_function("document.getElementById('out').videoWidth > 0", timeout=40000)
    url = page.url
    assert _sessions(url) == 1
    page.close()            # the tab goes away without pressing Stop
    _wait_no_sessions(url)


def test_page_says_when_a_photo_has_no_face(page, tmp_path):
    import cv2
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 90, np.uint8))
    page.set_input_files("#upload", str(blank))
    page.wait_for_function("document.getElementById('portrait-msg').textContent.includes('no face')",
                           timeout=20000)
    msg = page.inner_text("#portrait-msg")
    assert "Cannot use this photo" in msg and "wall.png" in msg


def test_page_lists_each_face_of_a_group_photo(page, tmp_path):
    import cv2
    photo = np.full((320, 600, 3), 200, np.uint8)
    photo[:, :320], photo[40:280, 340:580] = kit.synth_portrait(0, size=320), kit.synth_portrait(3, size=240)
    cv2.imwrite(str(tmp_path / "two.png"), photo[:, :, ::-1])
    n = page.eval_on_selector_all("#portraits img", "els => els.length")
    page.set_input_files("#upload", str(tmp_path / "two.png"))
    page.wait_for_function(f"document.querySelectorAll('#portraits img').length === {n + 2}", timeout=30000)
    assert "2 faces in this photo" in page.inner_text("#portrait-msg")
    titles = page.eval_on_selector_all("#portraits img", "els => els.map(e => e.title)")
    assert titles[-2:] == ["two.png (face 1 of 2)", "two.png (face 2 of 2)"]
    assert page.eval_on_selector("#portraits img.sel", "e => e.title") == "two.png (face 1 of 2)"


def _session_status(url: str) -> dict:
    import json
    s = json.loads(urllib.request.urlopen(url + "api/sessions", timeout=5).read())["sessions"]
    return s[0] if s else {}


def test_page_switches_head_motion(tmp_path):
    """With a model that can move the head: the page offers the Motion switch and a Head slider group
    with presets; the switch and a head preset reach the session."""
    from playwright.sync_api import sync_playwright

    from tests.conftest import SHARED_DATA
    need_browser()
    if not (SHARED_DATA / "portraits").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    ck = kit.tiny_checkpoint(tmp_path / "ck", profile="tiny-warp")
    kit.write_y4m(tmp_path / "cam.y4m", kit.synth_driving_frames(60))
    args = ["--checkpoint", str(ck), "--backend", "torch", "--portraits", str(SHARED_DATA / "portraits" / "s5.jpg"),
            "--size", "256", "--renderer", "warp-only"]
    with serve_process(args, tmp_path / "server.log") as (url, _), sync_playwright() as pw:
        ctx = chromium_context(pw, tmp_path / "profile", tmp_path / "cam.y4m", executable=CHROMIUM)
        try:
            page = ctx.new_page()
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#portraits img').length > 0", timeout=20000)
            assert page.is_visible("#motion-row")
            assert page.locator("#sliders input[type=range]").count() == 48       # 40 parameters + 6 head + 2 eyes
            assert page.locator("#sliders .group").nth(2).inner_text() == "Head"
            assert page.locator("#sliders .group").nth(3).inner_text() == "Eyes"
            page.click("#start")
            page.wait_for_function("document.getElementById('out').videoWidth > 0", timeout=40000)
            assert _session_status(url)["motion"] == "head"
            page.check("input[name=motion][value=expression]")
            deadline = time.monotonic() + 10
            while _session_status(url)["motion"] != "expression":
                assert time.monotonic() < deadline, "the switch did not reach the session"
                time.sleep(0.2)
            page.check("input[name=mouth][value=own]")         # the portrait's mouth as photographed
            deadline = time.monotonic() + 10
            while _session_status(url)["mouth"] != "own":
                assert time.monotonic() < deadline, "the mouth switch did not reach the session"
                time.sleep(0.2)
            assert _session_status(url)["interior"] == "driver"
            page.check("input[name=interior][value=drawn]")     # inside the mouth: drawn, not the webcam's
            deadline = time.monotonic() + 10
            while _session_status(url)["interior"] != "drawn":
                assert time.monotonic() < deadline, "the interior switch did not reach the session"
                time.sleep(0.2)
            page.click("#presets button:text-is('look left')")
            deadline = time.monotonic() + 10
            while not _session_status(url).get("pose_pinned"):
                assert time.monotonic() < deadline, "the head preset did not reach the session"
                time.sleep(0.2)
            page.click("#stop")
        finally:
            ctx.close()
