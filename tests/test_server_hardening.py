"""`slidergan serve` attacked over loopback as an outsider would: hostile images (uploads and
``--portraits``), cross-origin and DNS-rebinding requests, malformed data channel messages, bad query
strings and bodies, the upload cap, and the threads that sessions leave behind.

Two servers: `slidergan serve` in its own process (what a crash would take down; the CLI flags), and
the in-process app of tests/test_streaming.py (where the test can look inside). Loopback only;
every wait is bounded and no assertion depends on the machine's speed."""
from __future__ import annotations

import asyncio
import http.client
import json
import re
import threading
import time

import numpy as np
import pytest

from streaming.client import page_token, serve_process
from tests import streamkit as kit
from tests.test_streaming import _post, _wait_closed, serving, setup  # noqa: F401  (setup: a fixture)

pytest.importorskip("aiortc")
pytestmark = pytest.mark.timeout(240)

EMBED = "https://embed.example"      # the server runs with --allow-origin EMBED
EVIL = "http://evil.example"


# ------------------------------------------------------------------------- the server in a process
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`slidergan serve --portraits DIR` where DIR holds one good photo and three hostile files."""
    import cv2
    d = tmp_path_factory.mktemp("hardened")
    ck = kit.tiny_checkpoint(d / "ck")
    pics = d / "portraits"
    pics.mkdir()
    cv2.imwrite(str(pics / "good.png"), kit.synth_portrait(0)[:, :, ::-1])
    (pics / "wide.png").write_bytes(kit.png_header(40000, 1))       # aborted the process
    (pics / "bomb.png").write_bytes(kit.png_header(30000, 30000))   # segfaulted it
    (pics / "junk.jpg").write_bytes(b"\xff\xd8 not a jpeg at all " * 8)
    log = d / "server.log"
    with serve_process(["--checkpoint", str(ck), "--backend", "torch", "--portraits", str(pics),
                        "--size", "128", "--max-sessions", "1", "--allow-origin", EMBED], log,
                       timeout=180) as (url, proc):
        yield url.rstrip("/"), proc, log


def _http(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
          chunked: bool = False):
    """One request with full control of the headers (Host included): (status, headers, body)."""
    host, port = url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        if chunked:
            conn.request(method, path, body=iter([body]), headers=headers or {}, encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def _token(url: str) -> str:
    st, _, body = _http(url, "GET", "/")
    assert st == 200
    tok = page_token(body.decode())
    assert tok and len(tok) >= 32
    return tok


def _sessions(url: str, closing: bool = False) -> int:
    """Live sessions (``closing``: and the ones still being closed)."""
    st, _, body = _http(url, "GET", "/api/sessions")
    assert st == 200
    d = json.loads(body)
    return len(d["sessions"]) + (d.get("closing", 0) if closing else 0)


def _offer_sdp() -> str:
    """A real SDP offer (aiortc), as a page would send."""
    from aiortc import RTCPeerConnection

    async def make():
        pc = RTCPeerConnection()
        pc.createDataChannel("control")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp
    return asyncio.run(make())


def test_bad_portrait_files_are_skipped_at_startup(served):
    url, proc, log = served
    st, _, body = _http(url, "GET", "/api/info")
    assert st == 200 and proc.poll() is None
    assert [p["name"] for p in json.loads(body)["portraits"]] == ["good.png"]
    text = log.read_text()
    for name, why in (("wide.png", "too large"), ("bomb.png", "too large"), ("junk.jpg", "cannot read")):
        line = next((ln for ln in text.splitlines() if name in ln and "not used" in ln), "")
        assert "WARNING" in line and why in line, (name, text[-3000:])


def test_hostile_uploads_are_refused_with_the_limit(served):
    """A 196-byte 40000 x 1 PNG, a 30000 x 30000 header (decompression bomb), an 81 MP one: 413
    naming the limit; garbage and a too-small image: 422. The server lives on."""
    url, proc, _ = served
    tok = _token(url)
    cases = [(kit.png_header(40000, 1), 413, "16384 px a side"),
             (kit.png_header(30000, 30000), 413, "megapixels"),
             (kit.png_header(9000, 9000), 413, "50 megapixels"),
             (b"GIF89a" + b"\xff" * 100, 422, "not an image"),
             (kit.png_header(8, 8), 422, "too small")]
    for data, status, words in cases:
        st, _, body = _http(url, "POST", "/api/portraits", data,
                            {"Content-Type": "image/png", "X-Slidergan-Token": tok, "X-Filename": "x.png"})
        msg = json.loads(body)["error"]
        assert st == status and words in msg and "x.png" in msg, (st, msg)
    # the same as a multipart upload, as the page sends it
    import aiohttp

    async def multipart():
        form = aiohttp.FormData()
        form.add_field("image", kit.png_header(30000, 30000), filename="bomb.png", content_type="image/png")
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/api/portraits", data=form, headers={"X-Slidergan-Token": tok}) as r:
                return r.status, await r.json()
    st, body = asyncio.run(multipart())
    assert st == 413 and "bomb.png is too large" in body["error"], body
    # 17 MB in a multipart part sent chunked (no Content-Length): refused while reading
    body = (b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + b"x" * (17 << 20) + b"\r\n--B--\r\n")
    st, _, resp = _http(url, "POST", "/api/portraits", body, {
        "Content-Type": "multipart/form-data; boundary=B", "X-Slidergan-Token": tok}, chunked=True)
    assert st == 413 and "16 MB" in json.loads(resp)["error"], (st, resp[:200])
    assert proc.poll() is None
    st, _, body = _http(url, "GET", "/api/info")
    assert st == 200 and [p["name"] for p in json.loads(body)["portraits"]] == ["good.png"]


def test_state_changes_need_the_page_token_and_its_origin(served):
    url, proc, _ = served
    tok = _token(url)
    st, headers, page = _http(url, "GET", "/")
    assert f'<meta name="slidergan-token" content="{tok}">' in page.decode()
    assert headers["cache-control"] == "no-store"
    assert headers["content-security-policy"] == f"frame-ancestors 'self' {EMBED}"   # no framing elsewhere
    sdp = json.dumps({"sdp": _offer_sdp(), "type": "offer"}).encode()
    own = url   # http://127.0.0.1:PORT
    refused = [
        ({"Content-Type": "text/plain", "Origin": EVIL}, "origin"),                        # a form post from a site
        ({"Content-Type": "text/plain", "Origin": EVIL, "X-Slidergan-Token": tok}, "origin"),
        ({"Content-Type": "application/json", "Origin": "null", "X-Slidergan-Token": tok}, "origin"),
        ({"Content-Type": "application/json"}, "token"),                                   # no token
        ({"Content-Type": "application/json", "Origin": own}, "token"),
        ({"Content-Type": "application/json", "Origin": own, "X-Slidergan-Token": tok[:-2] + "xx"}, "token"),
    ]
    for headers, word in refused:
        st, _, body = _http(url, "POST", "/offer", sdp, headers)
        assert st == 403 and word in json.loads(body)["error"].lower(), (headers, body)
        st, _, body = _http(url, "POST", "/api/portraits", b"\x89PNG", dict(headers, **{"Content-Type": "image/png"}))
        assert st == 403, (headers, body)
    assert _sessions(url) == 0
    # the page's own requests pass (a bad SDP then gets its 400: the checks came first)
    st, _, body = _http(url, "POST", "/offer", b'{"sdp": "hello", "type": "offer"}',
                        {"Content-Type": "application/json", "Origin": own, "X-Slidergan-Token": tok})
    assert st == 400 and "invalid SDP" in json.loads(body)["error"]
    # the token is not handed to other origins (nor is any CORS answer)
    for origin in (None, EVIL):
        st, h, body = _http(url, "GET", "/api/info", headers={"Origin": origin} if origin else {})
        assert st == 200 and "token" not in json.loads(body) and "access-control-allow-origin" not in h
    st, h, _ = _http(url, "OPTIONS", "/offer", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert st == 403 and "access-control-allow-origin" not in h
    assert proc.poll() is None


def test_host_header_must_name_this_server(served):
    """DNS rebinding: a page at http://evil.example:PORT whose name now resolves to 127.0.0.1."""
    url, _, _ = served
    port = url.rsplit(":", 1)[1]
    tok = _token(url)
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.nip.io:{port}", "localhost:1", "",
                 f"localhost:{port}x"):
        for method, path in (("GET", "/"), ("GET", "/api/info"), ("GET", "/api/sessions"), ("POST", "/offer")):
            st, _, body = _http(url, method, path, b"{}" if method == "POST" else None,
                                {"Host": host, "X-Slidergan-Token": tok})
            assert st == 421 and "Host" in json.loads(body)["error"], (host, path, st)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"LOCALHOST:{port}"):
        st, _, _ = _http(url, "GET", "/api/info", headers={"Host": host})
        assert st == 200, host


def test_allow_origin_gets_cors_and_the_token(served):
    url, _, _ = served
    tok = _token(url)
    st, h, _ = _http(url, "OPTIONS", "/offer", headers={
        "Origin": EMBED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-slidergan-token"})
    assert st == 204 and h["access-control-allow-origin"] == EMBED
    assert "x-slidergan-token" in h["access-control-allow-headers"].lower()
    st, h, body = _http(url, "GET", "/api/info", headers={"Origin": EMBED})
    assert st == 200 and json.loads(body)["token"] == tok and h["access-control-allow-origin"] == EMBED
    st, h, body = _http(url, "POST", "/offer", b'{"sdp": "hello", "type": "offer"}',
                        {"Content-Type": "application/json", "Origin": EMBED, "X-Slidergan-Token": tok})
    assert st == 400 and h["access-control-allow-origin"] == EMBED
    st, _, body = _http(url, "POST", "/offer", b'{"sdp": "hello", "type": "offer"}',
                        {"Content-Type": "application/json", "Origin": EMBED})
    assert st == 403 and "token" in json.loads(body)["error"]


def test_offer_body_and_preview_query_limits(served):
    url, proc, _ = served
    tok = _token(url)
    big = json.dumps({"sdp": "v=0\r\n" + "a=x\r\n" * 200_000, "type": "offer"}).encode()   # 1.2 MB
    for chunked in (False, True):
        st, _, body = _http(url, "POST", "/offer", big,
                            {"Content-Type": "application/json", "X-Slidergan-Token": tok}, chunked=chunked)
        assert st == 413 and "too large" in json.loads(body)["error"], (chunked, st, body[:200])
    for q in ("size=abc", "size=1e999", "p=&size=", "size=12345678901234567890x"):
        st, _, body = _http(url, "GET", "/api/preview?" + q)
        assert st == 400 and "size" in json.loads(body)["error"], (q, st, body)
    assert proc.poll() is None


# ------------------------------------------------------------------------------ the app in-process
def test_uploads_are_decoded_off_the_event_loop_a_few_at_a_time(setup, monkeypatch):
    """Decoding and thumbnails run on the image pool (IMAGE_WORKERS at once), never on the event
    loop: the server answers while they are busy, and more uploads than MAX_UPLOADS_IN_PROGRESS get 503."""
    eng, _ = setup
    import aiohttp
    import cv2

    import streaming.server as srv
    real_decode, real_thumb = srv.decode_image, srv._thumbnail
    seen: list[tuple[str, int]] = []
    count = {"inside": 0, "most": 0}
    lock = threading.Lock()
    release = threading.Event()

    def decode(data, name):
        with lock:
            count["inside"] += 1
            count["most"] = max(count["most"], count["inside"])
        seen.append(("decode", threading.get_ident()))
        try:
            release.wait(60)
            return real_decode(data, name)
        finally:
            with lock:
                count["inside"] -= 1

    def thumb(rgb, side=256):
        seen.append(("thumb", threading.get_ident()))
        return real_thumb(rgb, side)

    monkeypatch.setattr(srv, "decode_image", decode)
    monkeypatch.setattr(srv, "_thumbnail", thumb)
    blank = cv2.imencode(".png", np.full((200, 200, 3), 128, np.uint8))[1].tobytes()   # no face: 422
    loop_thread = threading.get_ident()

    async def wait_for(cond, what, timeout=60.0):
        t0 = time.monotonic()
        while not cond():
            assert time.monotonic() - t0 < timeout, what
            await asyncio.sleep(0.02)

    async def run():
        async with serving(eng) as url:
            up = dict(data=blank, headers={"Content-Type": "image/png", "X-Filename": "wall.png"})
            posts = [asyncio.ensure_future(_post(url + "/api/portraits", **up))
                     for _ in range(srv.MAX_UPLOADS_IN_PROGRESS)]
            try:
                await wait_for(lambda: eng.uploads_in_progress == srv.MAX_UPLOADS_IN_PROGRESS
                               and count["inside"] == srv.IMAGE_WORKERS, "uploads did not reach the decoder")
                st, body = await _post(url + "/api/portraits", **up)
                assert st == 503 and "busy" in body["error"]
                async with aiohttp.ClientSession() as s:       # the event loop is free meanwhile
                    async with s.get(url + "/api/info") as r:
                        assert r.status == 200
                await asyncio.sleep(0.3)
                assert count["most"] == srv.IMAGE_WORKERS
            finally:
                release.set()
            results = await asyncio.gather(*posts)
            assert all(st == 422 and "no face" in b["error"] for st, b in results), results
            assert eng.uploads_in_progress == 0

    asyncio.run(run())
    assert {k for k, _ in seen} == {"decode", "thumb"}
    assert all(ident != loop_thread for _, ident in seen)
    assert count["most"] <= srv.IMAGE_WORKERS
    assert not [p for p in eng.portraits.values() if p.uploaded]


def test_a_failed_upload_never_evicts_a_good_portrait(setup):
    """At the cap (32 uploads), uploads without a face, unreadable or too large are refused and
    every stored portrait stays; a good one then takes the oldest unused one's place."""
    eng, _ = setup
    import aiohttp
    import cv2

    from streaming.server import MAX_UPLOADED_PORTRAITS, Portrait
    fakes = [f"upload-kept{i:02d}" for i in range(MAX_UPLOADED_PORTRAITS)]
    for pid in fakes:
        eng.portraits[pid] = Portrait(id=pid, name=pid + ".jpg", image=None, uploaded=True, thumb=b"")
    wall = cv2.imencode(".png", np.full((240, 320, 3), 90, np.uint8))[1].tobytes()
    face = cv2.imencode(".png", kit.synth_portrait(5)[:, :, ::-1])[1].tobytes()

    async def run():
        async with serving(eng) as url:
            for data, status in ((wall, 422), (b"not an image", 422), (kit.png_header(30000, 30000), 413)):
                form = aiohttp.FormData()
                form.add_field("image", data, filename="x.png", content_type="image/png")
                st, body = await _post(url + "/api/portraits", data=form)
                assert st == status, body
                assert all(pid in eng.portraits for pid in fakes), f"{body}: a stored portrait was evicted"
            form = aiohttp.FormData()
            form.add_field("image", face, filename="me.png", content_type="image/png")
            st, body = await _post(url + "/api/portraits", data=form)
            assert st == 200, body
            uploaded = [p.id for p in eng.portraits.values() if p.uploaded]
            assert len(uploaded) == MAX_UPLOADED_PORTRAITS and body["id"] in uploaded
            assert fakes[0] not in eng.portraits and all(pid in eng.portraits for pid in fakes[1:])

    try:
        asyncio.run(run())
    finally:
        for pid in [p.id for p in eng.portraits.values() if p.uploaded]:
            eng.portraits.pop(pid, None)


def test_every_data_channel_message_gets_a_reply(setup):
    """Malformed messages each get an "error" naming the problem (they used to get nothing: uncaught
    OverflowError, IndexError, RecursionError), change nothing, and the session goes on; -1 is not
    the last slider. Well-formed ones get their answer or {"type": "ok"}."""
    eng, _ = setup
    from streaming.client import StreamClient
    n = eng.n_params

    async def reply_after(c, k, timeout=15.0):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for m in c.messages[k:]:
                if m.get("type") not in ("stats", "hello"):
                    return m
            await asyncio.sleep(0.01)
        raise TimeoutError("no reply")

    bad = {
        '{"type": "slider", "index": 1e999, "value": 0.5}': "index",
        '{"type": "slider", "index": -1000, "value": 0.5}': "index",
        '{"type": "slider", "index": -1, "value": 0.5}': "index",
        f'{{"type": "slider", "index": {n}, "value": 0.5}}': "index",
        '{"type": "slider", "index": 1.5, "value": 0.5}': "index",
        '{"type": "slider", "index": "3", "value": 0.5}': "index",
        '{"type": "slider", "index": true, "value": 0.5}': "index",
        '{"type": "slider", "index": 10' + "0" * 400 + ', "value": 0.5}': "index",
        '{"type": "slider", "index": 0, "value": 1e999}': "value",
        '{"type": "slider", "index": 0, "value": NaN}': "NaN",
        '{"type": "slider", "index": 0, "value": "x"}': "value",
        '{"type": "slider", "index": 0}': "value",
        '{"type": "sliders", "values": [0.5]}': "values",
        '{"type": "sliders", "values": ' + json.dumps([[0.5]] * n) + "}": "values",
        '{"type": "sliders", "values": ' + json.dumps([1e999] * n).replace("Infinity", "1e999") + "}": "values",
        '{"type": "release", "index": -1}': "index",
        '{"type": "release", "index": 1e999}': "index",
        '{"type": "mode", "mode": "sideways"}': "mode",
        '{"type": "mouth", "mouth": "open"}': "closed, own",
        '{"type": "mouth", "mouth": 1}': "mouth",
        '{"type": "interior", "interior": "teeth"}': "driver, drawn",
        '{"type": "interior"}': "interior",
        '{"type": "scale", "value": 3.5}': "expression scale must be a number from 0",
        '{"type": "scale", "value": "1"}': "value",
        '{"type": "scale"}': "value",
        '{"type": "face", "x": 2, "y": 0.5}': "0..1",
        '{"type": "face", "x": "left", "y": 0.5}': "x",
        '{"type": "face", "y": 0.5}': "x",
        '{"type": "route", "exp": "telepathy"}': "driver",
        '{"type": "portrait", "id": ["x"]}': "id",
        '{"type": "preset", "name": "nope"}': "preset",
        '{"type": "nonsense"}': "unknown",
        '{"type": 42}': "type",
        "{}": "type",
        "[]": "object",
        "not json": "JSON",
        "[" * 5000: "nested",
        "[" * 50_000: "too large",                                    # 50,000 deep
        '{"type": "ping", "t": "' + "x" * 20_000 + '"}': "too large",
        b"\xff\xfe\x00garbage": "JSON",
    }

    async def run():
        async with serving(eng) as url:
            async with StreamClient(url, exp="sliders", speech="sliders", audio=False) as c:
                await c.wait_frames(2)
                before = (await c.request({"type": "status"}, "stats"))["params"]
                for raw, word in bad.items():
                    k = len(c.messages)
                    c.channel.send(raw)
                    try:
                        r = await reply_after(c, k)
                    except TimeoutError:
                        raise AssertionError(f"no reply to {raw[:60]!r}") from None
                    assert r["type"] == "error" and word.lower() in r["message"].lower(), (raw[:60], r)
                await c.wait_frames(3)                        # the session goes on, nothing changed
                after = (await c.request({"type": "status"}, "stats"))["params"]
                assert np.allclose(before, after, atol=1e-3), (before, after)
                good = [({"type": "slider", "index": n - 1, "value": 0.5}, "ok"), ({"type": "release"}, "ok"),
                        ({"type": "release", "index": 0}, "ok"), ({"type": "sliders", "values": [0.25] * n}, "ok"),
                        ({"type": "slider", "index": 2.0, "value": 9e300}, "ok"),
                        ({"type": "ping", "t": 7}, "pong"), ({"type": "status"}, "stats"),
                        ({"type": "scale", "value": 1.5}, "scale")]
                for msg, kind in good:
                    k = len(c.messages)
                    await c.send(msg)
                    t0 = time.monotonic()
                    while not any(m.get("type") == kind for m in c.messages[k:]):
                        assert time.monotonic() - t0 < 15, f"no {kind} reply to {msg}"
                        await asyncio.sleep(0.01)
                    r = next(m for m in c.messages[k:] if m.get("type") == kind)
                    assert kind != "ok" or r["of"] == msg["type"]
                await c.wait_frames(3)
                st = await c.request({"type": "status"}, "stats")
                assert st["params"][2] == 1.0 and st["params"][0] == 0.25 and st["params"][n - 1] == 0.25
            await _wait_closed(eng)

    asyncio.run(run())


def test_sessions_share_the_worker_threads(setup, monkeypatch):
    """Webcam sessions run their two stages on the engine's two pools: sessions in a row start no
    threads of their own (a pool per session made and joined two threads each time, and each new
    thread's malloc arena kept memory: benchmarks/bench_sessions.py)."""
    eng, _ = setup
    from streaming.client import StreamClient
    started: list[str] = []
    real_start = threading.Thread.start

    def start(self, *a, **kw):
        started.append(self.name)
        return real_start(self, *a, **kw)

    monkeypatch.setattr(threading.Thread, "start", start)
    frames = kit.synth_driving_frames(20)

    async def run():
        async with serving(eng) as url:
            for _ in range(5):
                async with StreamClient(url, frames=frames, fps=30, audio=False) as c:
                    await c.wait_frames(3, timeout=60)
                    st = await c.request({"type": "status"}, "stats")
                    assert st["frames_used"] >= 1      # the drive stage ran
                await _wait_closed(eng)

    asyncio.run(run())
    stage = [n for n in started if re.match(r"(drive|render)", n)]
    assert len(stage) <= 2 * eng.max_sessions, stage
    assert not [t.name for t in threading.enumerate() if re.match(r"(drive|render)-[0-9a-f]{12}", t.name)]


def test_a_closed_session_is_freed_at_once(setup):
    """A closed session (its animator, face tracker, frames) is freed when it closes, not at the
    cyclic GC's next full collection: its tracks hold it weakly and the peer connection's and data
    channel's handlers are dropped (they used to keep it in cycles with aiortc's objects)."""
    import gc
    import weakref

    eng, _ = setup
    from streaming.client import StreamClient
    made: list = []
    frames = kit.synth_driving_frames(20)

    async def run():
        async with serving(eng) as url:
            for i in range(2):
                async with StreamClient(url, frames=frames, fps=30, audio=(i == 0)) as c:
                    await c.wait_frames(3, timeout=60)
                    made.extend(weakref.ref(s) for s in eng.sessions.values())
                    await c.request({"type": "ping", "t": 1}, "pong")
                await _wait_closed(eng)
            await asyncio.sleep(0.2)

    gc.collect()
    gc.disable()
    try:
        asyncio.run(run())
        alive = [r() for r in made if r() is not None]
        assert len(made) == 2 and not alive, [type(s).__name__ for s in alive]
    finally:
        gc.enable()


def test_sessions_leave_the_server_thread_count_as_they_found_it(served):
    """`slidergan serve` starts its pools' threads up front (its own pools and asyncio's default
    executor, where aiortc encodes): after a first session (the models' and MediaPipe's own lazy
    set-up), webcam sessions in a row leave the process with exactly the threads it had."""
    import collections
    import os

    url, proc, _ = served
    from streaming.client import StreamClient
    from streaming.server import configure_ice

    def threads() -> collections.Counter:
        task = f"/proc/{proc.pid}/task"
        names = []
        for t in os.listdir(task):
            try:
                with open(f"{task}/{t}/comm") as f:
                    names.append(f.read().strip())
            except OSError:    # it ended meanwhile
                pass
        return collections.Counter(names)

    configure_ice("loopback")
    frames = kit.synth_driving_frames(20)
    counts = []

    async def run():
        for i in range(4):
            async with StreamClient(url, frames=frames, fps=30, audio=(i != 2)) as c:
                await c.wait_frames(5, timeout=60)
                st = await c.request({"type": "status"}, "stats")
                assert st["frames_used"] >= 1
            t0 = time.monotonic()
            while _sessions(url, closing=True):   # closed: aiortc's decoder and MediaPipe's threads joined
                assert time.monotonic() - t0 < 30, "the server kept a closed session"
                await asyncio.sleep(0.1)
            counts.append(threads())

    asyncio.run(run())
    assert counts[1] == counts[2] == counts[3] == counts[0], counts
    assert proc.poll() is None


def test_webcam_parameters_source_is_chosen_and_switched(tmp_path):
    """The page's "Parameters from": the offer names the source, a data channel message switches it
    (mesh needs the blendshape model; an unknown source is refused with a reply)."""
    import asyncio

    from streaming.server import Engine, Session
    models = kit.load_tiny(kit.tiny_checkpoint(tmp_path / "ck"))
    engine = Engine(models, output_size=128)
    assert engine.params_sources == ["mesh", "head"] and engine.info()["params_sources"] == ["mesh", "head"]
    p = engine.add_upload(engine.new_upload(kit.synth_portrait(0, 256), "face"))
    engine.prepare(p)

    class _PC:
        def on(self, *a, **k):
            return lambda f: f
    s = Session(engine, _PC(), p, params="head")
    assert s.hello()["params_source"] == "head"
    reply = asyncio.run(s.handle({"type": "params", "params": "mesh"}))
    assert reply == {"type": "params", "params": "mesh"} and s.face.params == "mesh" and s.face.neutral is None
    with pytest.raises(ValueError, match="params must be one of"):
        asyncio.run(s.handle({"type": "params", "params": "eyes"}))
    engine.close()
