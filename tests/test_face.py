"""Face front-end: alignment stability, smoothing, paste-back, and bad inputs.

Figures (measured on ../shared/data; `python -m engine.face jitter ...` / `pasteback ...` print them):
- d18.mp4, 0-3 s, 128 crop: shake (frame-to-frame jitter of the crop, smooth motion removed)
  0.117 px/frame unsmoothed -> 0.024 smoothed; bound 0.05 and at most half the unsmoothed figure.
- A still replayed 45 times with sensor noise (sigma 3): every crop motion is jitter; smoothed
  motion stays below 0.03 crop px/frame (unsmoothed ~0.07).
- Paste-back of an unedited crop: exact (MAE 0) with keep_detail (the default); plain resampling
  (keep_detail=False) at 128: footprint MAE <= 2.0 levels, PSNR >= 33 dB on the stills used here.
"""
import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("mediapipe")

from engine import face  # noqa: E402
from engine.video import VideoError, read_frames, video_info  # noqa: E402

SHAKE_BOUND = 0.05           # crop px / frame, smoothed, d18 0-3 s
STILL_MOTION_BOUND = 0.03    # crop px / frame, smoothed, still + noise
PLAIN_FOOT_MAE = 2.5         # grey levels, keep_detail=False, 128 crop
PLAIN_FOOT_PSNR = 32.0       # dB


def _side_by_side(a, b, scale_b):
    b = cv2.resize(b, None, fx=scale_b, fy=scale_b, interpolation=cv2.INTER_AREA)
    h = max(a.shape[0], b.shape[0])
    c = np.full((h, a.shape[1] + b.shape[1], 3), 128, np.uint8)
    c[:a.shape[0], :a.shape[1]] = a
    c[:b.shape[0], a.shape[1]:] = b
    return c, a.shape[1]


# ---------------------------------------------------------------------- geometry (no shared data)
def test_template_fits_the_crop():
    t = face.canonical_mesh()
    assert t.shape == (478, 3)
    assert t[:, :2].min() > 0.05 and t[:, :2].max() < 0.95
    # symmetric and upright: eye corners level, nose on the centre line
    assert abs(t[33, 1] - t[263, 1]) < 1e-4 and abs(t[33, 0] + t[263, 0] - 1.0) < 1e-4
    assert abs(t[1, 0] - 0.5) < 1e-4
    assert t[face.FOREHEAD_TOP, 1] == pytest.approx(0.13) and t[face.CHIN, 1] == pytest.approx(0.83)
    np.testing.assert_allclose(face.template_points(256), t * 256, rtol=1e-6)


def test_mirror_partners_swap_the_sides_of_the_face():
    m = face.mirror_partners()
    assert sorted(m) == list(range(478)) and np.array_equal(m[m], np.arange(478))
    assert (m[33], m[133], m[61], m[468]) == (263, 362, 291, 473)   # eye and mouth corners, iris centres
    assert m[1] == 1 and m[face.CHIN] == face.CHIN                     # the midline stays
    t = face.template_points(128)
    np.testing.assert_allclose(face.mirror_landmarks(t, 128), t, atol=0.5)   # the template is its own mirror
    lm = t + np.random.default_rng(0).normal(0, 2, t.shape)
    np.testing.assert_allclose(face.mirror_landmarks(face.mirror_landmarks(lm, 128), 128), lm, atol=1e-9)


def test_the_face_mesh_of_a_flipped_crop_is_the_mirrored_mesh(shared_data):
    """What train-head's --mirror labels rest on: MediaPipe reads the flipped crop where
    mirror_landmarks puts the points (within the mesh's own jitter), not merely somewhere symmetric."""
    img = face.load_image(sorted((shared_data / "portraits").glob("*.jpg"))[0])
    with face.FaceMeshDetector(static=True, max_faces=1) as det:
        crop = face.align_face(img, det.detect(img)[0], size=256).crop
        seen = det.detect(crop)[0]
        flipped = det.detect(np.ascontiguousarray(crop[:, ::-1]))[0]
    err = np.abs(flipped[:, :2] - face.mirror_landmarks(seen, 256)[:, :2]).mean()
    unswapped = seen.copy()
    unswapped[:, 0] = 256 - unswapped[:, 0]
    miss = np.abs(flipped[:, :2] - unswapped[:, :2]).mean()
    assert err < 1.5, err
    assert miss > 4 * err, (miss, err)      # the partners matter: x mirrored, points not swapped, misses


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(1)
    tpl = face.template_points(128).astype(np.float64)
    ang, s, tx, ty = 0.3, 2.7, 310.0, 95.0
    r = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    lm = tpl.copy()
    lm[:, :2] = tpl[:, :2] @ r.T + [tx, ty]
    lm[:, 2] *= s
    lm[:, :2] += rng.normal(0, 0.01, lm[:, :2].shape)
    m = face.alignment_matrix(lm, 128)
    back = face.transform_points(lm, m)
    assert np.abs(back[:, :2] - tpl[:, :2]).max() < 0.05
    assert face.matrix_scale(m) == pytest.approx(1 / s, rel=1e-3)
    np.testing.assert_allclose(face.transform_points(back, face.invert_matrix(m)), lm, atol=1e-3)
    # 3D rigid alignment removes a 3D rotation too
    a, b = 0.4, -0.2
    rz = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    lm3 = 300 * face.canonical_mesh() @ (rz @ rx).T + [50, 60, 7]
    np.testing.assert_allclose(face.align_mesh_3d(lm3), face.canonical_mesh(), atol=1e-4)
    with pytest.raises(ValueError, match="478"):
        face.alignment_matrix(np.zeros((468, 3)))


def test_warp_to_crop_maps_points_where_the_matrix_says():
    img = np.zeros((400, 600, 3), np.uint8)
    cv2.circle(img, (250, 180), 6, (255, 255, 255), -1)
    m = np.array([[0.4, 0.0, -40.0], [0.0, 0.4, -10.0]])      # (250, 180) -> (60, 62)
    crop = face.warp_to_crop(img, m, 128)
    ys, xs = np.nonzero(crop[:, :, 0] > 60)
    assert abs(xs.mean() - 60) < 0.7 and abs(ys.mean() - 62) < 0.7


def test_the_mesh_square_maps_back_to_the_frame_exactly():
    """The mesh's input square, shrunk by a whole factor from a region trimmed to its multiples (the area
    resize's fast path): its pixels show the frame where (ax, bx, ay, by) say, so landmarks map back exactly.
    A ramp frame (grey level = x, and y) read back at the mapped coordinates: within rounding everywhere, where
    mapping the untrimmed region's width (2 px more) would be 2 grey levels off at the far side."""
    h, w = 245, 251
    frame = np.zeros((h, w, 3), np.uint8)
    frame[..., 0] = np.arange(w)[None, :]
    frame[..., 1] = np.arange(h)[:, None]
    for out, cx, cy, side in ((64, 125.5, 122.5, 251.0), (80, 100.0, 140.0, 300.0)):
        patch, (ax, bx, ay, by) = face._square_patch(frame, cx, cy, side, out)
        assert patch.shape == (out, out, 3) and ax > 2 and ay > 2
        px, py = np.meshgrid(np.arange(out), np.arange(out))
        fx, fy = ax * px + bx + ax / 2 - 0.5, ay * py + by + ay / 2 - 0.5      # pixel centres
        inside = (fx > ax) & (fx < w - 1 - ax) & (fy > ay) & (fy < h - 1 - ay)
        assert inside.sum() > out * out / 3
        assert np.abs(patch[..., 0][inside] - fx[inside]).max() < 0.75
        assert np.abs(patch[..., 1][inside] - fy[inside]).max() < 0.75


def test_landmarks_are_read_from_the_wire_as_from_their_fields():
    """``_landmark_xyz`` reads a landmark list's bytes where each holds exactly x, y and z, and the fields one by
    one otherwise (a landmark with a visibility): the same numbers either way."""
    from mediapipe.framework.formats import landmark_pb2
    rng = np.random.default_rng(0)
    values = rng.normal(size=(face.NUM_LANDMARKS, 3)).astype(np.float32)
    values[5] = 0.0                              # zeros are written too (proto2: x, y, z set)
    lms = landmark_pb2.NormalizedLandmarkList()
    for x, y, z in values:
        lms.landmark.add(x=x, y=y, z=z)
    np.testing.assert_array_equal(face._landmark_xyz(lms), values.astype(np.float64))
    lms.landmark[7].visibility = 0.5             # another layout: read field by field
    np.testing.assert_array_equal(face._landmark_xyz(lms), values.astype(np.float64))


def test_mask_is_feathered():
    for shape in ("face", "rect"):
        mk = face.face_mask(128, shape)
        assert mk.shape == (128, 128) and mk.dtype == np.float32
        assert mk[64, 64] == pytest.approx(1.0, abs=1e-3)
        assert mk[0, :].max() < 0.05 and mk[:, 0].max() < 0.05 and mk[-1, :].max() < 0.05
        # no steps: neighbouring values differ by a small amount only
        assert np.abs(np.diff(mk, axis=0)).max() < 0.15 and np.abs(np.diff(mk, axis=1)).max() < 0.15
    with pytest.raises(ValueError, match="mask shape"):
        face.face_mask(128, "circle")


def test_no_face_in_blank_or_noise():
    blank = np.full((480, 640, 3), 200, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for img in (blank, noise):
        with pytest.raises(face.NoFaceError, match="no face found"):
            face.detect_and_align(img)


def test_unreadable_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="image not found"):
        face.load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(face.ImageReadError, match="corrupt"):
        face.load_image(bad)
    with pytest.raises(face.ImageReadError):
        face.detect_and_align(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(face.ImageReadError):
        face.load_image(empty)


def test_tracker_never_raises_on_bad_frames():
    with face.FaceTracker() as tr:
        for i, frame in enumerate([np.zeros((240, 320, 3), np.uint8), np.zeros((5, 5), np.uint8),
                                   np.zeros((240, 320, 7), np.uint8)]):
            r = tr.process(frame, i / 30)
            assert r.status == face.STATUS_NO_FACE and r.crop is None and not r.ok
        assert tr.counts[face.STATUS_NO_FACE] == 3


def test_a_lazy_trackers_crops_are_cut_when_read_and_equal_the_eager_ones():
    """``FaceTracker(lazy_crop=True)`` (mesh drivers): a face is ``ok`` and has its landmarks without its crop
    being cut; read, the crop is the one an eager tracker cuts on every frame, and the frame is let go."""
    from tests.streamkit import synth_driving_frames
    frames = synth_driving_frames(6, w=320, h=240, face=200)
    with face.FaceTracker(size=128) as eager, face.FaceTracker(size=128, lazy_crop=True) as lazy:
        for i, frame in enumerate(frames):
            a, b = eager.process(frame, i / 30), lazy.process(frame, i / 30)
            assert a.ok and b.ok and b._crop is None and b._cut is not None and not isinstance(a, face.TrackedFace)
            np.testing.assert_array_equal(a.landmarks, b.landmarks)
            np.testing.assert_array_equal(a.crop, b.crop)
            assert b._cut is None


def test_a_crop_that_cannot_be_cut_is_none_not_an_error(monkeypatch, caplog):
    """A frame must not end a stream: where a lazy tracker's crop fails to cut, the face reads with no crop (said
    once), as an eager tracker's failure reads as no face, and a head driver takes it for a frame without one."""
    import logging

    from streaming.drivers import FaceDriver
    from tests.streamkit import synth_driving_frames

    def fails(self):
        raise ValueError("broken frame")
    monkeypatch.setattr(face._Cut, "__call__", fails)
    frame = synth_driving_frames(1, w=320, h=240, face=200)[0]
    with face.FaceTracker(size=128, lazy_crop=True) as lazy, caplog.at_level(logging.WARNING, "engine.face"):
        r = lazy.process(frame, 0.0)
        assert r.ok and r.crop is None and r.crop is None     # read twice: said once (below)
    assert sum("could not be cut" in m for m in caplog.messages) == 1
    with face.FaceTracker(size=128) as eager:
        assert eager.process(frame, 0.0).status == face.STATUS_NO_FACE
    regress = lambda crop: (_ for _ in ()).throw(AssertionError("read a crop that is not there"))  # noqa: E731
    with face.FaceTracker(size=128, lazy_crop=True) as tracker:
        d = FaceDriver(regress, 4, 128, mode="absolute", params="head", person_check=False, tracker=tracker)
        d.push(frame, 0.0)
    assert d.state.status == "no_face"


# -------------------------------------------------------------------------------- shared data
def test_same_still_twice_gives_the_same_crop(shared_data):
    p = shared_data / "portraits" / "s5.jpg"
    a = face.detect_and_align(p)
    b = face.detect_and_align(face.load_image(p))
    with face.FaceMeshDetector(static=True) as det:
        c = face.detect_and_align(p, detector=det)
    assert a.crop.shape == (128, 128, 3) and a.status == face.STATUS_OK and a.n_faces == 1
    for other in (b, c):
        np.testing.assert_array_equal(a.crop, other.crop)
        np.testing.assert_allclose(a.matrix, other.matrix, atol=1e-9)
    big = face.detect_and_align(p, size=256)
    # the same template at another size: the 256 matrix is the 128 one scaled by 2
    np.testing.assert_allclose(big.matrix, a.matrix * 2, atol=1e-6)
    # eye corners land on the template
    tpl = face.template_points(128)
    assert np.abs(a.crop_landmarks[[33, 133, 362, 263], :2] - tpl[[33, 133, 362, 263], :2]).max() < 4


def test_crops_of_a_video_jitter_little_after_smoothing(shared_data):
    raw, smooth = [], []
    with face.FaceTracker(size=128) as tr:
        for rgb, t in read_frames(shared_data / "driving" / "d18.mp4", start=0.0, end=3.0):
            r = tr.process(rgb, t)
            assert r.ok, r.message
            raw.append(r.raw_matrix)
            smooth.append(r.matrix)
    j_raw = face.alignment_jitter(raw)
    j_s = face.alignment_jitter(smooth)
    print("unsmoothed", j_raw, "smoothed", j_s)
    assert j_s["shake"] < SHAKE_BOUND
    assert j_s["shake"] < 0.5 * j_raw["shake"]
    assert j_s["motion_std"] < j_raw["motion_std"]


def test_the_tracker_reads_an_open_mouth_as_open_as_the_whole_frames_mesh(shared_data):
    """A talking clip's first 4 s, every other frame: the tracker's mouth opening against the static mesh on
    the whole frame (the motion tables' measure). MediaPipe's video mode on the tracker's square, which places
    the mesh from its last landmarks, reads it short (slope 0.90, 0.006 of the eye distance less open, its
    inner-lip points on the teeth); static mode on the square 0.98-0.99 and 0.002."""
    from engine.geometry import mouth_opening
    frames = list(read_frames(shared_data / "talking" / "tpsmm_driving.mp4", start=0.0, end=4.0))
    with face.FaceMeshDetector(static=True, max_faces=1) as det:
        whole = np.array([mouth_opening(det.detect(rgb)[0]) for rgb, _ in frames[::2]])
    with face.FaceTracker(fps=25) as tr:
        tracked = np.array([mouth_opening(tr.process(rgb, t).landmarks) for rgb, t in frames])[::2]
    slope = np.polyfit(whole, tracked, 1)[0]
    print("slope", slope, "mean difference", (tracked - whole).mean())
    assert whole.std() > 0.02                  # the mouth does move
    assert slope > 0.95
    assert (tracked - whole).mean() > -0.0035


def test_the_tracker_reads_the_face_it_chose_when_a_neighbour_reaches_into_its_square(shared_data):
    """Two people, the second overlapping the first's right side: the tracker locks on to the largest face
    its search finds, and the mesh on that face's square must read that face, though a more confident one
    reaches into the square (with one face a call, the detector's pick was the neighbour's)."""
    a = [f for f, _ in read_frames(shared_data / "driving" / "d18.mp4", max_frames=6)]
    b = [f for f, _ in read_frames(shared_data / "driving" / "d19.mp4", max_frames=6)]
    frames = []
    for fa, fb in zip(a, b):
        c = np.full((720, 1280, 3), 40, np.uint8)
        c[200:520, 300:620] = cv2.resize(fa, (320, 320), interpolation=cv2.INTER_AREA)
        c[240:480, 500:740] = cv2.resize(fb, (240, 240), interpolation=cv2.INTER_AREA)
        frames.append(c)
    with face.FaceTracker(size=128, max_faces=1) as tr:
        chosen = tr.locator.locate(frames[0])[0]          # the largest: the first person's
        assert chosen.centre[0] < 500
        for i, frame in enumerate(frames):
            r = tr.process(frame, i / 30)
            assert r.ok and abs(r.landmarks[:, 0].mean() - chosen.centre[0]) < 0.5 * chosen.w, (i, r.status)


def test_still_replayed_with_noise_barely_moves(shared_data):
    img = face.load_image(shared_data / "portraits" / "s5.jpg")
    rng = np.random.default_rng(0)
    raw, smooth = [], []
    with face.FaceTracker() as tr:
        for i in range(45):
            noisy = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
            r = tr.process(noisy, i / 30)
            raw.append(r.raw_matrix)
            smooth.append(r.matrix)
    j_s = face.alignment_jitter(smooth)
    assert j_s["motion"] < STILL_MOTION_BOUND
    assert j_s["motion"] < face.alignment_jitter(raw)["motion"]


def test_paste_back_of_unedited_crop_reproduces_the_frame(shared_data):
    frames = [face.load_image(shared_data / "portraits" / n) for n in ("s5.jpg", "s9.jpg", "d30.jpg")]
    frames.append(next(read_frames(shared_data / "driving" / "d18.mp4"))[0])
    for img in frames:
        r = face.detect_and_align(img)
        exact = face.paste_back_error(img, r)
        assert exact["max_abs"] <= 1.0
        plain = face.paste_back_error(img, r, keep_detail=False)
        assert plain["mae_face"] < PLAIN_FOOT_MAE and plain["psnr_face"] > PLAIN_FOOT_PSNR, plain
        rect = face.paste_back_error(img, r, mask="rect")
        assert rect["max_abs"] <= 1.0


def test_paste_back_of_an_edit_has_no_seam(shared_data):
    img = face.load_image(shared_data / "portraits" / "s9.jpg")
    r = face.detect_and_align(img)
    x0, y0, x1, y1 = face._roi(r.matrix, 128, img.shape)
    outside = np.ones(img.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    # A brightened crop (a tint keeps the frame's detail): the change ramps up smoothly from the
    # mask's outline, with no step between neighbouring pixels.
    edited = np.clip(r.crop.astype(np.int16) + 30, 0, 255).astype(np.uint8)
    for mask in ("face", "rect"):
        diff = r.paste_back(img, edited, mask=mask).astype(np.float64) - img
        assert np.all(diff[outside] == 0)                  # nothing outside the footprint moves
        d = diff.mean(axis=2)
        assert d.max() > 25                                # the edit arrived
        step = np.maximum(np.abs(np.diff(d, axis=0))[:, :-1], np.abs(np.diff(d, axis=1))[:-1])
        assert step.max() < 8 and np.percentile(step, 99.9) < 3, (step.max(), np.percentile(step, 99.9))
    # A structural edit (a dark blob where the mouth is) replaces the content there.
    blob = r.crop.copy()
    cv2.ellipse(blob, (64, 84), (14, 8), 0, 0, 360, (20, 10, 10), -1)
    out = r.paste_back(img, blob)
    centre = face.transform_points(np.array([[64.0, 84.0]]), face.invert_matrix(r.matrix))[0]
    cx, cy = np.round(centre).astype(int)
    assert out[cy - 3:cy + 4, cx - 3:cx + 4].max() < 40
    assert np.all(out[outside] == img[outside])


def test_several_faces_largest_chosen_and_reported(shared_data):
    p = shared_data / "portraits"
    # largest on the left (s5's face is bigger than d8 at half size) ...
    c, w = _side_by_side(face.load_image(p / "s5.jpg"), face.load_image(p / "d8.jpg"), 0.5)
    r = face.detect_and_align(c)
    assert r.status == face.STATUS_MULTIPLE and r.n_faces == 2 and "largest" in r.message
    assert face.invert_matrix(r.matrix)[0, 2] < w and r.crop_landmarks[:, 0].mean() == pytest.approx(64, abs=8)
    # ... and on the right
    c, w = _side_by_side(face.load_image(p / "s4.jpg"), face.load_image(p / "s42.jpg"), 0.6)
    r = face.detect_and_align(c)
    assert r.n_faces == 2 and r.landmarks[:, 0].mean() > w
    with face.FaceTracker() as tr:
        t = tr.process(c, 0.0)
    assert t.status == face.STATUS_MULTIPLE and t.ok and t.landmarks[:, 0].mean() > w


def test_small_faces_are_reported(shared_data):
    img = face.load_image(shared_data / "portraits" / "s5.jpg")
    small = cv2.resize(img, None, fx=0.2, fy=0.2, interpolation=cv2.INTER_AREA)   # face ~49 px
    with pytest.raises(face.FaceTooSmallError, match="too small"):
        face.detect_and_align(small)
    assert face.detect_and_align(small, min_face_px=0).crop.shape == (128, 128, 3)
    with face.FaceTracker() as tr:
        r = tr.process(small, 0.0)
        assert r.status == face.STATUS_TOO_SMALL and r.crop is None and "too small" in r.message
        r = tr.process(np.zeros_like(img), 1 / 30)
        assert r.status == face.STATUS_NO_FACE
        r = tr.process(img, 2 / 30)
        assert r.status == face.STATUS_OK
        assert tr.counts == {"ok": 1, "multiple_faces": 0, "no_face": 1, "too_small": 1}


def test_video_reader(shared_data, tmp_path):
    info = video_info(shared_data / "driving" / "d18.mp4")
    assert info.fps == pytest.approx(30) and info.frame_count == 216 and info.has_audio
    assert (info.width, info.height) == (480, 480)
    assert not video_info(shared_data / "driving" / "d0.mp4").has_audio
    frames = list(read_frames(shared_data / "driving" / "d18.mp4", start=1.0, end=1.5))
    assert len(frames) == 15 and frames[0][0].shape == (480, 480, 3) and frames[0][0].dtype == np.uint8
    ts = [t for _, t in frames]
    assert ts[0] == pytest.approx(1.0, abs=1e-6) and np.all(np.diff(ts) > 0)
    # a truncated copy (the header survives, the rest is garbage) and pure garbage
    data = (shared_data / "driving" / "d18.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[:2000])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 50000, dtype=np.uint8).tobytes())
    for bad in (cut, junk):
        with pytest.raises(VideoError, match=bad.name):
            list(read_frames(bad))
        with pytest.raises(VideoError):
            video_info(bad, count_frames=True)


def test_video_errors_without_shared_data(tmp_path):
    with pytest.raises(FileNotFoundError, match="video not found"):
        list(read_frames(tmp_path / "none.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match="junk.mp4"):
        video_info(junk)


def test_faces_in_file_reads_a_photo_or_the_start_of_a_video(tmp_path):
    """``faces_in_file`` (a driver's neutral from a file): a photo is one frame; a video is read over its first
    FILE_SECONDS only, at most FILE_SAMPLES frames spread over them (an hour-long file is not decoded whole);
    a file that is neither says both reasons."""
    import cv2

    from engine.face import FILE_SAMPLES, FILE_SECONDS, faces_in_file
    from tests import streamkit as kit
    face = kit.synth_portrait(0)
    cv2.imwrite(str(tmp_path / "rest.png"), face[:, :, ::-1])
    read = faces_in_file(tmp_path / "rest.png")
    assert len(read) == 1 and read[0].ok
    blank = np.full((64, 64, 3), 128, np.uint8)
    video = kit.write_video(tmp_path / "long.mp4", [blank] * int(4 * (FILE_SECONDS + 10)), fps=4)
    read = faces_in_file(video)
    assert 0 < len(read) <= FILE_SAMPLES and max(r.t for r in read) < FILE_SECONDS
    assert not any(r.ok for r in read)
    (tmp_path / "junk.jpg").write_bytes(b"neither" * 100)
    with pytest.raises(ValueError, match="junk.jpg is neither an image .* nor a video"):
        faces_in_file(tmp_path / "junk.jpg")
