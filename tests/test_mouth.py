"""engine.mouth: the driver's own mouth interior, cut from its frame and drawn into the portrait's opening."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine.blendshapes import INNER_LIP_LOOP, OUTER_LIP_LOOP
from engine.mouth import OPEN_FROM, cut_mouth, paste_mouth, placement

DRIVER_SKIN, LIPS, TEETH = (200, 150, 120), (170, 60, 70), (235, 235, 225)
PORTRAIT_SKIN = (150, 130, 60)     # darker and yellower: a varnished painting's


def _loop(cx, cy, a, b, angle=0.0) -> np.ndarray:
    """20 points of an ellipse in the order of a lip loop: the right corner (image left), along the upper
    lip to the left corner, back along the lower lip."""
    th = np.r_[np.pi * (1 - np.arange(11) / 10), -np.pi * np.arange(1, 10) / 10]
    x, y = a * np.cos(th), -b * np.sin(th)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _mesh(cx, cy, a, b, angle=0.0, lip=6.0) -> np.ndarray:
    """A face mesh (478, 2) whose lips are ellipses (the only points engine.mouth reads)."""
    lm = np.tile([cx, cy], (478, 1)).astype(np.float64)
    lm[list(INNER_LIP_LOOP)] = _loop(cx, cy, a, b, angle)
    lm[list(OUTER_LIP_LOOP)] = _loop(cx, cy, a * 1.25, b + lip, angle)
    return lm


def _driver(b=14.0, inside_low=(40, 20, 25)):
    """A driver frame with a mouth open by ``b`` (half its height): white teeth in the upper half of the
    opening, ``inside_low`` below; and its mesh."""
    import cv2
    img = np.zeros((220, 220, 3), np.uint8)
    img[:] = DRIVER_SKIN
    lm = _mesh(110, 120, 30, b)
    cv2.fillPoly(img, [np.round(lm[list(OUTER_LIP_LOOP)]).astype(np.int32)], LIPS)
    inner = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(inner, [np.round(lm[list(INNER_LIP_LOOP)]).astype(np.int32)], 1)
    ys = np.arange(img.shape[0])[:, None]
    img[(inner > 0) & (ys < 120)] = TEETH
    img[(inner > 0) & (ys >= 120)] = inside_low
    return img, lm


def _portrait():
    region = np.zeros((240, 240, 3), np.uint8)
    region[:] = PORTRAIT_SKIN
    src = _mesh(120, 130, 36, 0.5)                     # its mouth closed
    dst = _mesh(120, 130, 40, 22, angle=np.radians(12))   # the target's open, the head tilted
    return region, src, dst


def _inside(lm, shrink: float) -> np.ndarray:
    """Mask of the inner-lip loop shrunk towards its centre by ``shrink`` (pixels), as a boolean image."""
    import cv2
    loop = lm[list(INNER_LIP_LOOP)]
    c = loop.mean(0)
    d = loop - c
    n = np.linalg.norm(d, axis=1, keepdims=True)
    pts = c + d * np.maximum(n - shrink, 0) / np.maximum(n, 1e-6)
    m = np.zeros((240, 240), np.uint8)
    cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    return m > 0


def test_the_cut_mouth_lands_on_the_targets_corners_and_opening():
    img, lm = _driver()
    mouth = cut_mouth(img, lm)
    assert mouth is not None and mouth.opening == pytest.approx(28 / 60, abs=0.01)
    _, _, dst = _portrait()
    m, fit = placement(mouth, dst)
    assert fit == 1.0                                            # (a stretch of 1.18: clear of the fades)
    corners = np.c_[mouth.corners, np.ones(2)] @ m.T
    assert np.abs(corners - dst[[78, 308]]).max() < 0.5          # tilted and wider: corners onto corners
    mid = np.c_[mouth.mid, np.ones(2)] @ m.T
    assert np.linalg.norm(mid[1] - mid[0]) == pytest.approx(np.linalg.norm(dst[14] - dst[13]), rel=0.02)
    # an opening that would have to stretch past STRETCH is not placed, and fades out before it does
    assert placement(mouth, _mesh(120, 130, 36, 2)) is None
    fits = [placement(mouth, _mesh(120, 130, 36, b))[1] for b in (10.5, 9.5, 8.8)]   # stretch 0.63, 0.57, 0.52
    assert 1 > fits[0] > fits[1] > fits[2] > 0


def test_the_drivers_teeth_show_inside_the_opening_in_the_portraits_light_and_nothing_else_changes(monkeypatch):
    """Teeth in the portrait's light; below them a lip-coloured inside (a tongue): shaded as deep as the drawn
    cavity in a mouth opened less than LIP_WIDE (else a small opening filled with lip reads as closed), shown in
    a wide one (this driver's opens by 0.47 of its width: a black hole had replaced its tongue)."""
    import engine.mouth as M
    img, lm = _driver(inside_low=LIPS)                  # below the teeth: the lips' inside (lip-coloured)
    mouth = cut_mouth(img, lm)
    assert mouth.opening > M.LIP_WIDE[1]
    region, src, dst = _portrait()
    shown = region.copy()
    assert paste_mouth(shown, mouth, src, dst, np.array(PORTRAIT_SKIN, float))
    monkeypatch.setattr(M, "LIP_WIDE", (0.6, 0.8))     # as if this opening were a small one
    before = region.copy()
    assert paste_mouth(region, mouth, src, dst, np.array(PORTRAIT_SKIN, float))
    deep = _inside(dst, 10.0)                           # past the fade from the outline (EDGE)
    upper = deep & (np.arange(240)[:, None] < 127)          # (the tilt moves the middle line a little)
    lower = deep & (np.arange(240)[:, None] > 133)
    assert upper.sum() > 100 and lower.sum() > 100
    luma = region.astype(float) @ [0.299, 0.587, 0.114]
    assert luma[upper].mean() > 150                           # teeth, brighter than the portrait's skin (132)
    teeth = region[upper].astype(float).mean(0)
    assert teeth[2] / teeth[0] < TEETH[2] / TEETH[0] - 0.1     # in the portrait's yellow cast
    lips_luma = np.dot(LIPS, [0.299, 0.587, 0.114])
    assert luma[lower].mean() < 0.5 * lips_luma                 # the lips' inside shaded deep, not lip
    tongue = (shown.astype(float) @ [0.299, 0.587, 0.114])[lower].mean()
    assert tongue > 1.5 * luma[lower].mean()                     # ... but a wide mouth's tongue shows
    assert np.median(np.abs(shown[upper].astype(float) - region[upper])) < 1     # its teeth as they were
    outside = ~_inside(dst, -3.0)
    assert np.array_equal(region[outside], before[outside])  # the portrait's lips and skin untouched


def test_nothing_is_drawn_for_a_closed_driver_mouth_or_a_target_no_wider_than_the_source():
    region, src, dst = _portrait()
    before = region.copy()
    skin = np.array(PORTRAIT_SKIN, float)
    assert cut_mouth(*_driver(b=OPEN_FROM * 30 * 0.8)) is None       # a closed mouth: nothing cut
    mouth = cut_mouth(*_driver())
    closed = replace(mouth, mid=mouth.mid.mean(0) + (mouth.mid - mouth.mid.mean(0)) * 0.1)
    assert closed.opening < OPEN_FROM
    ajar = _mesh(120, 130, 36, 2.5)                    # the target a little open (the cut would fit it)
    assert placement(closed, ajar) is not None
    assert not paste_mouth(region, closed, src, ajar, skin)
    assert placement(mouth, dst) is not None
    assert not paste_mouth(region, mouth, dst, dst, skin)   # the portrait's own mouth already as open
    assert paste_mouth(region, mouth, src, dst, skin)
    assert not np.array_equal(region, before)
    region[:] = before
    assert not paste_mouth(region, mouth, src, ajar, skin)  # the driver's opening 4x the target's: not stretched
    assert np.array_equal(region, before)


def test_no_mouth_is_cut_where_it_leaves_the_frame():
    img, lm = _driver()
    assert cut_mouth(img, lm + [120, 0]) is None
    assert cut_mouth(img, np.full_like(lm, np.nan)) is None


def test_the_mix_gives_the_faces_mouth_only_while_the_face_moves_the_lips():
    from streaming.drivers import DriverMix

    class Face:
        def mouth(self):
            return "the frame's mouth"

        def value(self, t):
            return np.zeros(40, np.float32)

    mix = DriverMix(30, 40)
    mix.set_driver("face", Face())
    assert mix.mouth() is None                        # the speech group on the sliders (the start)
    mix.route("speech", "face")
    assert mix.mouth() == "the frame's mouth"
    mix.sliders.set(35, 0.5)                          # a speech slider pinned over the face
    assert mix.mouth() is None
    mix.sliders.release()
    mix.route("speech", "rest")
    assert mix.mouth() is None


def test_render_draws_the_drivers_mouth_only_inside_the_portraits_mouth(shared_data, tmp_path):
    """A real talking clip on a held-out portrait: with the driver's interior the frames differ from the drawn
    interior's only round the mouth, and there where it opens."""
    from engine.video import read_frames
    from streaming.render import render
    outs = {}
    for interior in ("driver", "drawn"):
        out = tmp_path / f"{interior}.mp4"
        render(shared_data / "portraits" / "d30.jpg", shared_data / "talking" / "sadtalker_wda_aoc.mp4", out,
               size=256, max_seconds=1.0, progress=False, no_audio=True, mouth_interior=interior, crf=0)
        outs[interior] = np.stack([f for f, _ in read_frames(out)]).astype(int)
    diff = np.abs(outs["driver"] - outs["drawn"]).max(axis=(0, 3))
    ys, xs = np.nonzero(diff > 12)
    assert len(ys) > 100                                  # the first second's open mouths differ
    # ... within a box about the mouth's size, in the lower middle of the 256 px face square
    assert xs.max() - xs.min() < 90 and ys.max() - ys.min() < 60, (xs.min(), xs.max(), ys.min(), ys.max())
    assert 150 < ys.mean() < 230 and 80 < xs.mean() < 180


def test_the_cutter_smooths_the_drivers_light_over_frames_and_forgets_it_after_a_gap():
    """A driver whose skin round the mouth flickers by 20 grey levels from frame to frame: at 30 fps the cut's
    skin colour moves a tenth as much; after seconds without a face it is the new frame's own."""
    from engine.mouth import MouthCutter
    img, lm = _driver()
    skin = np.all(img == DRIVER_SKIN, axis=2)            # (only the skin changes)
    lighter = img.copy()
    lighter[skin] = np.array(DRIVER_SKIN) + 20
    cutter = MouthCutter()
    seen = [cutter(img if k % 2 else lighter, lm, k / 30).skin[0] for k in range(60)]
    raw = [cut_mouth(img if k % 2 else lighter, lm).skin[0] for k in range(60)]
    assert np.ptp(raw[30:]) == pytest.approx(20, abs=1)
    assert np.ptp(seen[30:]) < 3
    assert cutter(img, lm, 5.0).skin[0] == pytest.approx(DRIVER_SKIN[0], abs=1)   # after a gap: afresh
