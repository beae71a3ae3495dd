"""Faces in real footage: small and distant faces in HD frames, several people, rotated phone videos.

The shared stills and videos (../shared/data) are scaled down into large blank frames, as a person
far from the camera of an HD or phone video is: the face mesh's own (short-range) detector finds
nothing there; the full-range ``FaceLocator`` does, and the mesh runs on a square around the face.
Tests without shared data use synthetic frames.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("mediapipe")

from engine import face  # noqa: E402
from engine.video import DecodedFrame, read_frames, video_info  # noqa: E402
from tests import streamkit as kit  # noqa: E402

pytestmark = pytest.mark.timeout(240)

S5_BOX = 150.0   # the full-range detector's box width on portraits/s5.jpg (720 px), for sizing


def _place(img, w, h, scale, at=(0.3, 0.25), fill=40):
    """``img`` scaled by ``scale`` into a ``w`` x ``h`` frame of grey ``fill``, its top-left at fractions ``at``."""
    small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out = np.full((h, w, 3), fill, np.uint8)
    x0, y0 = int(at[0] * (w - small.shape[1])), int(at[1] * (h - small.shape[0]))
    out[y0:y0 + small.shape[0], x0:x0 + small.shape[1]] = small
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("footage")
    return kit.load_tiny(kit.tiny_checkpoint(d / "ck"))


# -------------------------------------------------------------------------- no shared data needed
def test_decoded_frame_converts_regions_and_turns_upright(tmp_path):
    """A lazily decoded frame gives the same pixels as the whole-frame conversion, region by region,
    for every display rotation; the reader turns rotated videos upright."""
    rng = np.random.default_rng(0)
    upright = cv2.GaussianBlur((rng.random((96, 64, 3)) * 255).astype(np.uint8), (0, 0), 2)
    upright[:16, :24] = (255, 40, 40)            # a red corner marks the top left
    for rot in (0, 90, 180, 270):
        stored = np.ascontiguousarray(np.rot90(upright, -rot // 90))   # turned the other way when stored
        path = kit.write_video(tmp_path / f"r{rot}.mp4", [stored] * 3, fps=30, rotation=rot)
        info = video_info(path)
        assert (info.width, info.height, info.rotation) == (64, 96, rot)
        whole = next(read_frames(path))[0]
        assert whole.shape == upright.shape and np.abs(whole.astype(int) - upright).mean() < 4
        assert whole[:16, :24, 0].mean() > 200 and whole[-16:, -24:, 0].mean() < 200
        for rect in ((10, 6, 50, 80), (0, 0, 64, 96), (3, 5, 4, 8), (1, 1, 63, 95), (60, 90, 200, 200)):
            lazy = next(read_frames(path, lazy=True))[0]
            assert isinstance(lazy, DecodedFrame) and lazy.shape == upright.shape
            x0, y0, x1, y1 = rect
            part = lazy.region(*rect)
            assert part.shape == whole[y0:y1, x0:x1].shape
            assert np.abs(part.astype(int) - whole[y0:y1, x0:x1]).max() <= 4     # colour rounding only
        thumb, k = next(read_frames(path, lazy=True))[0].thumbnail(48)
        assert thumb.shape == (48, 32, 3) and k == pytest.approx(0.5)
        assert np.abs(thumb.astype(int) - cv2.resize(whole, (32, 48), interpolation=cv2.INTER_AREA)).mean() < 4
    stored = next(read_frames(tmp_path / "r90.mp4", upright=False))[0]
    assert stored.shape == (64, 96, 3)


# -------------------------------------------------------------------------------- shared data
def test_small_face_still_and_video_detect_align_drive_render(shared_data, tiny, tmp_path):
    """A portrait whose face is ~56 px wide in a 1280x720 frame, and a driving video whose face is
    ~60 px wide in 1280x720 frames: the mesh alone finds neither; both go through detect, align,
    drive and render."""
    from streaming.render import render
    s5 = face.load_image(shared_data / "portraits" / "s5.jpg")
    portrait = _place(s5, 1280, 720, 56 / S5_BOX)
    with face.FaceMeshDetector(static=True, locate=False) as mesh_only:
        assert mesh_only.detect(portrait) == []          # the short-range detector misses it
    al = face.detect_and_align(portrait)
    assert al.status == face.STATUS_OK and 70 < al.face_px < 110, al.face_px
    # the crop is the same face as the one aligned in the original photo
    ref = face.detect_and_align(s5)
    k = 56 / S5_BOX
    assert np.abs((al.landmarks[:, :2] - al.landmarks[:, :2].mean(0))
                  - (ref.landmarks[:, :2] - ref.landmarks[:, :2].mean(0)) * k).mean() < 2.0
    p_path = tmp_path / "far.png"
    cv2.imwrite(str(p_path), portrait[:, :, ::-1])

    frames = [f for f, _ in read_frames(shared_data / "driving" / "d18.mp4", max_frames=36)]
    small = [_place(f, 1280, 720, 95 / 378, at=(0.7, 0.4)) for f in frames]    # crop region ~95 px
    drv = kit.write_video(tmp_path / "far.mp4", small, fps=30)
    with face.FaceMeshDetector(static=True, locate=False) as mesh_only:
        assert mesh_only.detect(small[0]) == []
    out = tmp_path / "out.mp4"
    res = render(p_path, drv, out, models=tiny, size=128, progress=False)
    assert res.frames == 36 and res.faces_missing == 0 and out.exists()
    got = [f for f, _ in read_frames(out)]
    assert len(got) == 36
    # the driven portrait moves: the frames are not all the same
    assert max(np.abs(got[i].astype(float) - got[0]).mean() for i in range(1, 36)) > 0.2


def test_tracker_follows_a_small_face_in_hd_frames(shared_data):
    """The same clip, padded into 1280x720 and into a 720x1080 portrait frame: every frame is
    tracked, the landmarks agree with the mesh on the unpadded clip (scaled), and the lazily
    decoded frame gives the same result as the RGB array."""
    frames = [f for f, _ in read_frames(shared_data / "driving" / "d18.mp4", max_frames=12)]
    k = 95 / 378
    with face.FaceMeshDetector(static=True) as still:
        refs = [still.detect(f)[0] for f in frames]
    for w, h in ((1280, 720), (720, 1080)):
        at = (0.2, 0.6)
        with face.FaceTracker(size=128, max_faces=1) as tr:
            for f, ref in zip(frames, refs):
                big = _place(f, w, h, k, at=at)
                r = tr.process(big)
                assert r.ok, r.message
                x0 = int(at[0] * (w - round(480 * k)))
                y0 = int(at[1] * (h - round(480 * k)))
                want = ref[:, :2] * (round(480 * k) / 480) + (x0, y0)
                err = np.linalg.norm(r.landmarks[:, :2] - want, axis=1)[list(face.STABLE_POINTS)]
                assert np.median(err) < 1.5, np.median(err)        # frame px, at a face ~55 px wide


def test_two_people_the_first_locked_face_is_followed(shared_data, tmp_path):
    """Two shared videos side by side; the right person grows until they are the larger face. The
    tracker keeps following the face it locked on to first (the larger one then: the left), and
    says when it is lost while the other is in view; when it comes back it is the one followed."""
    a = [f for f, _ in read_frames(shared_data / "driving" / "d18.mp4", max_frames=24)]
    b = [f for f, _ in read_frames(shared_data / "driving" / "d19.mp4", max_frames=24)]
    w, h = 1280, 720
    frames = []
    for i, (fa, fb) in enumerate(zip(a, b)):
        c = np.full((h, w, 3), 40, np.uint8)
        la = cv2.resize(fa, (300, 300), interpolation=cv2.INTER_AREA)
        sb = int(200 + 16 * i)                        # 200 px -> 568 px: larger than the left at the end
        lb = cv2.resize(fb, (sb, sb), interpolation=cv2.INTER_AREA)
        c[200:500, 100:400] = la
        c[(h - sb) // 2:(h - sb) // 2 + sb, 1200 - sb:1200] = lb
        frames.append(c)
    drv = kit.write_video(tmp_path / "two.mp4", frames, fps=30)
    # per frame, the largest face changes sides: a tracker that takes the largest would jump
    assert face.detect_landmarks(frames[0])[0][:, 0].mean() < w / 2
    assert face.detect_landmarks(frames[-1])[0][:, 0].mean() > w / 2
    with face.FaceTracker(size=128, max_faces=1) as tr:
        for frame, t in read_frames(drv, lazy=True):
            r = tr.process(frame, t)
            assert r.ok and r.landmarks[:, 0].mean() < w / 2, (t, r.status, r.message)
        assert r.n_faces == 2 and r.status == face.STATUS_MULTIPLE
        # the locked face leaves (its side blanked): "lost", the other face is not taken ...
        gone = frames[-1].copy()
        gone[:, :w // 2] = 40
        for i in range(3):
            r = tr.process(gone, t + (i + 1) / 30)
            assert r.status == face.STATUS_LOST and not r.ok and "lost" in r.message
        # ... and when it is back, it is followed again, not the larger one
        r = tr.process(frames[-1], t + 4 / 30)
        assert r.ok and r.landmarks[:, 0].mean() < w / 2
        # a face picked by a point is followed instead (the page's click, render's --face)
        tr.pick(0.75, 0.5, normalized=True)
        for i in range(3):
            r = tr.process(frames[-1], t + (5 + i) / 30)
            assert r.ok and r.landmarks[:, 0].mean() > w / 2
    # the same through the face driver (the server's {"type": "face"} message): status and a new neutral
    from streaming.drivers import FaceDriver
    seen = []
    drv = FaceDriver(lambda crop: np.full(4, crop.mean() / 255, np.float32), 4, 128, mode="relative",
                     calib_frames=2, calib_s=0.0)
    try:
        for i, f in enumerate(frames[:3]):
            drv.push(f, i / 30)
            seen.append(drv.tracker._target[0])
        assert drv.neutral is not None and max(seen) < w / 2
        drv.pick(1100, 360, normalized=False)
        assert drv.neutral is None                       # calibrated again on the picked face
        drv.push(frames[3], 3 / 30)
        assert drv.state.status in ("ok", "multiple_faces") and drv.tracker._target[0] > w / 2
    finally:
        drv.close()


def test_rotated_phone_video_is_driven_upright(shared_data, tiny, tmp_path):
    """A portrait-mode phone clip: frames stored sideways (landscape) with a display rotation.
    The reader turns them upright, the tracker sees the face the right way up, and render drives
    from it (no frame without a face)."""
    from streaming.render import render
    frames = [f for f, _ in read_frames(shared_data / "driving" / "d18.mp4", max_frames=30)]
    tall = [_place(f, 360, 640, 0.5, at=(0.5, 0.3)) for f in frames]      # a 360x640 portrait frame
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in tall]          # stored 640x360, turned
    drv = kit.write_video(tmp_path / "phone.mp4", stored, fps=30, rotation=90)
    info = video_info(drv)
    assert (info.width, info.height, info.rotation) == (360, 640, 90)
    got = [f for f, _ in read_frames(drv)]
    assert got[0].shape == (640, 360, 3)
    assert np.mean([np.abs(g.astype(int) - f).mean() for g, f in zip(got, tall)]) < 4
    with face.FaceTracker(size=128, max_faces=1) as tr:
        for frame, t in read_frames(drv, lazy=True):
            r = tr.process(frame, t)
            assert r.ok, r.message
            assert r.landmarks[face.FOREHEAD_TOP, 1] < r.landmarks[face.CHIN, 1] - 50   # upright
    src = tmp_path / "s5.png"
    cv2.imwrite(str(src), face.load_image(shared_data / "portraits" / "s5.jpg")[:, :, ::-1])
    res = render(src, drv, tmp_path / "out.mp4", models=tiny, size=128, progress=False, side_by_side=True)
    assert res.faces_missing == 0 and res.frames == 30
    out = next(read_frames(tmp_path / "out.mp4"))[0]
    assert out.shape[0] == 128 and out.shape[1] == 128 + 2 * round(360 * 128 / 640 / 2)   # upright panel


def test_too_small_faces_say_the_size_found_and_needed(shared_data):
    s5 = face.load_image(shared_data / "portraits" / "s5.jpg")
    tiny_face = _place(s5, 1280, 720, 26 / S5_BOX)          # a face ~26 px wide
    with pytest.raises(face.FaceTooSmallError) as e:
        face.detect_and_align(tiny_face)
    msg = str(e.value)
    assert "too small" in msg, msg
    found = [int(s) for s in re.findall(r"(\d+) px crop region", msg)]
    assert len(found) == 2 and found[0] < face.MIN_FACE_PX <= found[1], msg      # found, needed
    with face.FaceTracker() as tr:
        r = tr.process(tiny_face, 0.0)
    assert r.status == face.STATUS_TOO_SMALL and not r.ok and "too small" in r.message
    assert str(face.MIN_FACE_PX) in r.message
    # the same face at 40 px is tracked
    with face.FaceTracker() as tr:
        r = tr.process(_place(s5, 1280, 720, 40 / S5_BOX), 0.0)
    assert r.ok and face.MIN_FACE_PX <= r.face_px < 80, (r.status, r.message, r.face_px)
