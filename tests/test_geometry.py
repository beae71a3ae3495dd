"""The per-frame mesh warp (engine.geometry.MeshWarp): the same warp as the pair maker's, drawn by the
same compiled rasteriser over a grid prepared once, and carried to the output frame at full resolution."""
from __future__ import annotations

import numpy as np
import pytest

from engine import geometry as g
from engine.blendshapes import load_default_face_model
from tests.test_synth_pairs import _face_and_image, _p


@pytest.fixture(scope="module")
def fm():
    return load_default_face_model()


def _face(fm, size=128):
    return _face_and_image(fm, size)


def test_no_motion_is_the_identity(fm):
    lm, img = _face(fm)
    mw = g.MeshWarp(lm, 128)
    bm = mw.backward_map(lm)
    assert bm.shape == (mw.grid_size, mw.grid_size, 2) and mw.grid_size > 128
    assert np.abs(bm - mw.grid).max() < 1e-3
    assert np.abs(mw.warp_crop(img, lm).astype(int) - img).max() <= 1


@pytest.mark.parametrize("motion", [dict(lips_part=1.0, jaw_open=0.8), dict(smile=1.0),
                                    dict(eye_close_left=1.0, eye_close_right=1.0)])
def test_matches_the_exact_warp(fm, motion):
    lm, img = _face(fm)
    dst = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, **motion))
    exact = g.warp_mesh(img, lm, dst, supersample=1)
    assert np.abs(exact.astype(int) - img).mean() > 0.2          # the motion is visible
    fast = g.MeshWarp(lm, 128).warp_crop(img, dst)
    diff = np.abs(fast.astype(int) - exact).max(2)
    # The same rasteriser on the same triangles: equal but for a rare pixel (float rounding on an edge).
    assert (diff > 1).mean() < 1e-3, (diff > 1).mean()


def test_raster_interpolates_the_corner_values_over_a_tiling():
    """Two triangles tiling a square: every pixel centre inside is drawn once or more, with the affine
    function its corners carry; pixels outside are left alone; what is drawn later wins."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 2)).astype(np.float32)
    b = rng.normal(size=2).astype(np.float32)
    quad = np.array([[3.2, 4.7], [17.6, 4.7], [17.6, 15.1], [3.2, 15.1]], np.float32)
    tris = quad[[[0, 1, 2], [0, 2, 3]]]
    s = 24
    out = np.full((s * s, 2), -99.0, np.float32)
    g._raster(tris, s, tris @ a.T + b, out)
    ys, xs = np.mgrid[0:s, 0:s]
    inside = ((xs >= 3.2) & (xs <= 17.6) & (ys >= 4.7) & (ys <= 15.1)).reshape(-1)
    pts = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32)
    assert np.abs(out[inside] - (pts[inside] @ a.T + b)).max() < 1e-4
    assert (out[~inside] == -99.0).all()
    # drawn again with other values, the later triangles win everywhere they cover
    g._raster(tris, s, np.full((2, 3, 2), 5.0, np.float32), out)
    assert (out[inside] == 5.0).all() and (out[~inside] == -99.0).all()
    # a degenerate triangle draws nothing
    flat = np.array([[[1, 1], [5, 5], [9, 9]]], np.float32)
    before = out.copy()
    g._raster(flat, s, flat, out)
    assert np.array_equal(out, before)


def test_region_mask_marks_the_openings(fm):
    lm, _ = _face(fm)
    mw = g.MeshWarp(lm, 128)
    dst = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, lips_part=1.0, jaw_open=0.8))
    m = mw.region_mask(dst)
    mouth = np.round(dst[[13, 14], :2].mean(0)).astype(int)
    assert m[mouth[1], mouth[0]] == pytest.approx(g.MOUTH_VALUE)
    assert np.isclose(m, g.EYE_VALUE, atol=0.05).sum() > 5
    assert m[2, 2] == 0


def test_generator_frame_and_the_seamless_edge(fm):
    lm, img = _face(fm)
    mw = g.MeshWarp(lm, 128)
    dst = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, lips_part=1.0, jaw_open=1.0))
    bm = mw.backward_map(dst)
    # the motion fades to exactly zero at the grid's edge (the fixed border points): no seam
    edge = np.concatenate([bm[0], bm[-1], bm[:, 0], bm[:, -1]]) - np.concatenate(
        [mw.grid[0], mw.grid[-1], mw.grid[:, 0], mw.grid[:, -1]])
    assert np.abs(edge).max() < 0.05
    assert np.abs(bm - mw.grid).max() > 3                      # while the jaw moves by pixels
    f = mw.generator_frame(img, dst, bm)
    assert f.shape == (6, 128, 128) and f.dtype == np.float32
    assert -1 <= f[:3].min() and f[:3].max() <= 1 and f[3].max() == pytest.approx(g.MOUTH_VALUE)
    assert 0.05 < np.abs(f[4:]).max() < 1.5


def test_output_map_warps_the_frame_at_full_resolution(fm):
    """The crop-level flow carried to a 4x larger output: the output warp agrees with the crop warp
    (downsampled), and keeps the output's own fine detail, which an upscaled crop would lose."""
    import cv2
    lm, _ = _face(fm)
    s, k = 128, 4
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.integers(0, 255, (s * k, s * k, 3)).astype(np.uint8), (0, 0), 1.0)
    crop = cv2.resize(big, (s, s), interpolation=cv2.INTER_AREA)
    out_to_crop = np.array([[1 / k, 0, 0.5 / k - 0.5], [0, 1 / k, 0.5 / k - 0.5]])
    mw = g.MeshWarp(lm, s)
    dst = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, smile=1.0, brow_raise_left=1.0))
    to_output = g.OutputWarp(mw, out_to_crop, (s * k, s * k))
    assert to_output.roi == (0, 0, s * k, s * k)
    warped_big = to_output.warp(big, mw.backward_map(dst))
    small = cv2.resize(warped_big, (s, s), interpolation=cv2.INTER_AREA)
    warped_crop = mw.warp_crop(crop, dst)
    assert np.abs(small.astype(int) - warped_crop).mean() < 6.0
    upscaled = cv2.resize(warped_crop, (s * k, s * k), interpolation=cv2.INTER_LINEAR)
    sharp = lambda im: np.abs(np.diff(im.astype(np.float32), axis=1)).mean()  # noqa: E731
    assert sharp(warped_big) > 1.5 * sharp(upscaled)


@pytest.mark.parametrize("turn, scale", [(0.0, 4.0), (0.3, 4.0), (0.2, 2.5), (0.1, 8.0)])
def test_output_warp_samples_the_flow_finely_enough(fm, turn, scale):
    """OutputWarp samples the grid's flow at output pixels half to one crop pixel apart and resizes:
    against sampling it at every output pixel, the maps agree but for a few pixels on the openings'
    edges, where the flow jumps (the lips parting)."""
    import cv2
    lm, _ = _face(fm)
    mw = g.MeshWarp(lm, 128)
    bm = mw.backward_map(g.target_landmarks(fm, lm, np.zeros(40), _p(fm, smile=1.0, jaw_open=1.0, lips_part=1.0)))
    c, s = np.cos(turn) / scale, np.sin(turn) / scale
    out_to_crop = np.array([[c, -s, 10.0], [s, c, -20.0]])
    n = int(128 * scale * 1.1)
    ow = g.OutputWarp(mw, out_to_crop, (n, n))
    got = cv2.convertMaps(*ow.maps(bm), cv2.CV_32FC2)[0]
    # every output pixel: the grid's flow sampled at its crop point, in output pixels
    flow = (bm - mw.grid).reshape(-1, 2) @ np.linalg.inv(out_to_crop[:, :2]).T.astype(np.float32)
    up = cv2.remap(flow.reshape(bm.shape), ow.crop_x + mw.margin, ow.crop_y + mw.margin, cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    x0, y0, x1, y1 = ow.roi
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    err = np.abs(got - (np.stack([xs, ys], -1) + up)).max(-1)
    assert np.abs(up).max() > 2 * scale                 # the face moves by more than two crop pixels
    assert err.mean() < 0.05 and np.percentile(err, 99) < 0.35 and (err > 1).mean() < 0.01, (
        err.mean(), np.percentile(err, 99), (err > 1).mean())


def test_output_warp_adds_a_change_only_where_it_is(fm):
    """OutputWarp.add: a crop-level change (the generator's paint over the drawn warp) added at the output's
    resolution, in place, clipped to 0-255; the region untouched elsewhere; an empty change changes nothing."""
    lm, _ = _face(fm)
    mw = g.MeshWarp(lm, 128)
    k = 2
    ow = g.OutputWarp(mw, np.array([[1 / k, 0, 0.5 / k - 0.5], [0, 1 / k, 0.5 / k - 0.5]]), (128 * k, 128 * k))
    rng = np.random.default_rng(0)
    region = rng.integers(0, 255, (128 * k, 128 * k, 3), np.uint8)
    change = np.zeros((128, 128, 3), np.float32)
    change[40:80, 30:60] = 60.0               # a block lighter ...
    change[40:80, 60:90] = -20.0              # ... and one darker
    out = region.copy()
    ow.add(out, change)
    assert np.array_equal(out[100:140, 80:100], np.clip(region[100:140, 80:100].astype(int) + 60, 0, 255))
    assert np.array_equal(out[100:140, 140:160], np.clip(region[100:140, 140:160].astype(int) - 20, 0, 255))
    untouched = np.ones(out.shape[:2], bool)
    untouched[76:164, 56:184] = False         # the blocks and a pixel of interpolation round them
    assert np.array_equal(out[untouched], region[untouched])
    empty = region.copy()
    ow.add(empty, np.zeros((128, 128, 3), np.float32))
    assert np.array_equal(empty, region)


def test_the_drawn_mouth_and_lids_are_drawn_at_the_outputs_pixels(fm):
    """OutputWarp.draw: the drawn layer made at the output's pixels, where it is; the same mouth and lids as
    the crop's layer upsampled, but sharp (upsampled, the crop's 128 px were a blur at 512 px: grey teeth);
    nothing drawn outside them."""
    import cv2
    lm, img = _face(fm)
    mw = g.MeshWarp(lm, 128)
    k = 4
    ow = g.OutputWarp(mw, np.array([[1 / k, 0, 0.5 / k - 0.5], [0, 1 / k, 0.5 / k - 0.5]]), (128 * k, 128 * k))
    dst = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, lips_part=1.0, jaw_open=1.0, eye_close_right=1.0))
    region = np.full((128 * k, 128 * k, 3), 200, np.uint8)
    drawn, upsampled = region.copy(), region.copy()
    ow.draw(drawn, img, dst)
    up = cv2.remap(np.concatenate(mw.drawn_layer(img, dst), -1), ow.crop_x, ow.crop_y, cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    upsampled = np.clip(up[..., :3] + (1 - up[..., 3:]) * upsampled + 0.5, 0, 255).astype(np.uint8)
    changed = np.abs(drawn.astype(int) - region).max(2) > 0
    assert changed.mean() > 0.005                                  # the mouth and an eye drawn
    gap = dst[14, :2] - dst[13, :2]
    assert changed[tuple(np.round((dst[13, 1::-1] + 0.5 * gap[::-1]) * k).astype(int))]   # the opening's middle
    assert not changed[:, :128 * k // 4].any() and not changed[: int(dst[:, 1].min() * k)].any()
    # the same picture: equal once both are blurred to the crop's pixels ...
    blur = lambda x: cv2.GaussianBlur(x.astype(np.float32), (0, 0), k)
    assert np.abs(blur(drawn) - blur(upsampled))[changed].mean() < 4
    # ... and sharper: steeper edges (teeth, lips' line, lash line)
    def steep(x):
        y = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return np.percentile(np.hypot(cv2.Sobel(y, cv2.CV_32F, 1, 0), cv2.Sobel(y, cv2.CV_32F, 0, 1))[changed], 99)
    assert steep(drawn) > 1.5 * steep(upsampled), (steep(drawn), steep(upsampled))


def test_teeth_take_the_portraits_colour_cast_at_their_brightness():
    """engine.geometry.teeth_colour: skin of the daylight hue leaves the teeth as they are; a varnished
    painting's yellow skin makes them ivory (more red than blue), a cold light's bluer, all as bright."""
    daylight = g.teeth_colour([g.SKIN_HUE, g.SKIN_HUE * 0.6])       # the hue counts, not the brightness
    assert np.allclose(daylight, g.TEETH_COLOUR, atol=0.5)
    varnish = g.teeth_colour([[136, 101, 56], [130, 98, 52]])
    cold = g.teeth_colour([[150, 140, 150], [150, 140, 150]])
    assert varnish[0] - varnish[2] > g.TEETH_COLOUR[0] - g.TEETH_COLOUR[2] + 25
    assert cold[2] - cold[0] > g.TEETH_COLOUR[2] - g.TEETH_COLOUR[0] + 10
    for t in (daylight, varnish, cold):
        assert t @ g.LUMA == pytest.approx(g.TEETH_COLOUR @ g.LUMA, abs=0.5)
    # a black and white picture (its skin grey, which reads as a cold cast) has grey teeth; a faint colour some
    rng = np.random.default_rng(0)
    photo = rng.uniform(40, 220, (64, 64, 3)) * [1.0, 0.85, 0.7]
    bw = np.repeat(photo.mean(2, keepdims=True), 3, 2)
    assert g.colourfulness(photo) == 1.0 and g.colourfulness(bw) == 0.0
    assert 0.2 < g.colourfulness(0.97 * bw + 0.03 * photo) < 0.8
    grey = g.teeth_colour([[120, 120, 120], [118, 118, 118]], g.colourfulness(bw))
    assert np.ptp(grey) < 0.5 and grey @ g.LUMA == pytest.approx(g.TEETH_COLOUR @ g.LUMA, abs=0.5)
    assert np.ptp(g.teeth_colour([[120, 120, 120], [118, 118, 118]])) > 20        # as a colour photo's: blue


def test_a_closing_eye_keeps_its_eyeball_and_the_lids_cover_it(fm):
    """engine.geometry.eyeball_values: inside a closing eye's opening the warp shows the source's eyeball moved
    only with the eye's corners (the lids cover it; the fan had squeezed iris and white into the slit); an eye
    opening wider keeps the fan (its opening shows more than the source's)."""
    import cv2
    from engine.blendshapes import RIGHT_EYE_LOOP
    lm, _ = _face(fm)
    mw = g.MeshWarp(lm, 128)
    loop = list(RIGHT_EYE_LOOP)

    def inside(dst):       # grid pixels well inside the target's right eye opening
        zone = np.zeros((mw.grid_size,) * 2, np.uint8)
        cv2.fillPoly(zone, [np.round(dst[loop, :2] + mw.margin).astype(np.int32)], 1)
        return cv2.erode(zone, np.ones((3, 3), np.uint8)) > 0

    def corners_map(dst):  # the similarity taking the target's corners (33, 133) to the source's
        a, b = complex(*dst[33, :2]), complex(*dst[133, :2])
        s = (complex(*lm[133, :2]) - complex(*lm[33, :2])) / (b - a)
        z = complex(*lm[33, :2]) + s * ((mw.grid @ np.array([1.0, 1j])) - a)
        return np.stack([z.real, z.imag], -1)
    half = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, eye_close_left=0.6, eye_close_right=0.6))
    lost = 1 - g._poly_area(half[loop, :2]) / g._poly_area(lm[loop, :2])
    assert g.EYEBALL_RAMP < lost < g.LID_FULL, lost                # half closed
    zone = inside(half)
    assert zone.sum() > 10
    err = np.abs(mw.backward_map(half) - corners_map(half))[zone].max()
    assert err < 0.05, err
    wide = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, eye_close_left=-1.0, eye_close_right=-1.0))
    assert np.abs(mw.backward_map(wide) - corners_map(wide))[inside(wide)].max() > 0.5


def test_the_compiled_warp_runs_where_nothing_is_writable(tmp_path):
    """A read-only install with no writable home: numba cannot cache the kernels on disk, and the
    rasteriser compiles them anew instead of failing (a copy of the module in a folder whose
    __pycache__ is a file, every numba cache folder under a file)."""
    import os
    import shutil
    import subprocess
    import sys
    shutil.copy(g.__file__, tmp_path / "geometry_copy.py")
    (tmp_path / "__pycache__").write_text("")
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(blocked / "numba"), "HOME": str(blocked / "home"),
           "XDG_CACHE_HOME": str(blocked / "cache")}
    code = ("import numpy as np, geometry_copy as g\n"
            "out = np.zeros((16, 2), np.float32)\n"
            "t = np.array([[[0, 0], [3, 0], [0, 3]]], np.float32)\n"
            "g._raster(t, 4, t, out)\n"
            "print(out[5].tolist())\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[1.0, 1.0]"                   # pixel (1, 1) shows source point (1, 1)


def test_closed_mouth_closes_an_open_mouth_with_the_mouth_components(fm):
    """Lip normalisation: an open mouth's p moved the least way that makes the lips meet; mostly by the
    components that open the mouth, within [-1, 1]; a closed mouth's p is left as it is."""
    lm, _ = _face(fm)
    assert abs(g.lip_gap(lm)) < g.CLOSED_GAP
    assert np.array_equal(g.closed_mouth(fm, lm, np.zeros(40)), np.zeros(40))
    own = _p(fm, lips_part=0.9, jaw_open=0.7, smile=0.5, brow_raise_left=0.6)
    open_lm = g.target_landmarks(fm, lm, np.zeros(40), own)
    assert g.lip_gap(open_lm) > 3 * g.CLOSED_GAP
    closed = g.closed_mouth(fm, open_lm, own)
    assert np.abs(closed).max() <= 1.0
    shut = g.target_landmarks(fm, open_lm, own, closed, fix_crossing=False)
    assert abs(g.lip_gap(shut)) < 0.005, g.lip_gap(shut)
    names = fm.param_names
    moved = np.abs(closed - own)
    assert names[int(np.argmax(moved))] == "lips_part", dict(zip(names, moved.round(2)))
    assert moved[names.index("brow_raise_left")] < 0.01     # the brows have nothing to do with it


def test_keep_colour_keeps_the_brightness_of_the_paint_and_the_colour_under_it():
    """engine.geometry.keep_colour: green paint over a brown iris gives a brown of the paint's brightness;
    grey paint over grey is the paint; nothing leaves 0-255."""
    from engine.geometry import LUMA, keep_colour
    under = np.array([[[90.0, 60, 40], [120, 120, 120], [250, 250, 250]]], np.float32)
    paint = np.array([[[20.0, 200, 20], [60, 60, 60], [255, 255, 255]]], np.float32)
    out = keep_colour(paint, under)
    assert np.allclose(out @ LUMA, paint @ LUMA, atol=1e-3)                     # its brightness
    assert np.allclose(np.diff(out[0, 0]), np.diff(under[0, 0]), atol=1e-3)     # the iris's colour
    assert np.allclose(out[0, 1], 60) and out.max() <= 255 and out.min() >= 0
    # in the drawn mouth cavity the paint may darken, not lighten: a dark interior (30) under pale paint
    # (150) stays dark where the cavity is drawn fully, half-way where half; darker paint (10) darkens it
    under = np.full((1, 3, 3), 30.0, np.float32)
    paint = np.array([[[150.0] * 3, [150.0] * 3, [10.0] * 3]], np.float32)
    cavity = np.array([[[1.0], [0.5], [1.0]]], np.float32)
    out = keep_colour(paint, under, cavity)
    assert np.allclose(out[0, :, 0], [30.0, 90.0, 10.0], atol=1e-3)
    assert np.allclose(keep_colour(paint, under, np.zeros_like(cavity)), keep_colour(paint, under))


def test_the_paint_may_lighten_the_drawn_teeth_and_nothing_else_in_the_mouth(fm):
    """engine.geometry.cavity: in a wide-open drawn mouth the darken-only zone is the whole opening but the
    drawn upper teeth (the pixels as bright as the teeth are darken-only at most 0.3); the dark interior below
    them is darken-only in full (under the old rule, a share of the opening's height, the paint greyed it);
    a mouth open too little for teeth is darken-only throughout."""
    lm, img = _face(fm)
    img[:] = (180, 140, 120)
    wide = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, lips_part=1.0, jaw_open=1.0))
    fill, alpha = g.mouth_layer(img, lm, wide)
    zone = g.cavity(alpha, wide)
    inside = alpha[..., 0] > 0.9
    teeth = inside & (fill @ g.LUMA > 0.8 * g.TEETH_COLOUR @ g.LUMA * g.TEETH_OPACITY)
    dark = inside & (fill @ g.LUMA < 60)
    assert teeth.sum() > 10 and dark.sum() > 10, (teeth.sum(), dark.sum())
    assert zone[teeth, 0].max() <= 0.3 and zone[dark, 0].min() > 0.6 and np.percentile(zone[dark, 0], 10) > 0.85
    # rows of the opening's upper half hold cavity below the teeth (the old rule let the paint lighten there)
    gap = wide[14, 1] - wide[13, 1]
    upper_half = np.zeros_like(inside)
    upper_half[int(np.ceil(wide[13, 1] + 0.3 * gap)):int(wide[13, 1] + 0.5 * gap)] = True
    assert (zone[..., 0] > 0.85)[inside & upper_half].any()
    ajar = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, lips_part=0.02))
    _, a = g.mouth_layer(img, lm, ajar)
    assert np.linalg.norm(ajar[14, :2] - ajar[13, :2]) <= g.TEETH_FROM * np.linalg.norm(ajar[78, :2] - ajar[308, :2])
    assert np.allclose(g.cavity(a, ajar), a)


def test_a_wide_open_mouth_shows_teeth_of_a_teeths_height(fm):
    """engine.geometry's drawn upper teeth: TEETH_HEIGHT x the lips' gap, but no taller than TEETH_MAX x the
    mouth's width (uncapped, a mouth open two thirds of its width had a slab of teeth a third of its height)."""
    lm, img = _face(fm, 512)
    img[:] = (180, 140, 120)
    wide = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, lips_part=1.0, jaw_open=1.0))
    gap, width = wide[14, 1] - wide[13, 1], np.linalg.norm(wide[78, :2] - wide[308, :2])
    assert gap > 0.6 * width
    fill, _ = g.mouth_layer(img, lm, wide)
    x = int(round(0.5 * (wide[13, 0] + wide[14, 0])))
    column = fill[:, x] @ g.LUMA
    top = int(np.ceil(wide[13, 1]))
    # the teeth: the rows under the upper lip brighter than half-way from the cavity's dark to the teeth
    rows = column[top:top + int(gap)]
    teeth = rows > 0.5 * (rows.min() + g.TEETH_COLOUR @ g.LUMA * g.TEETH_OPACITY)
    height = int(np.argmin(teeth)) if not teeth.all() else int(gap)
    # the band fades over its last TEETH_EDGE: half-bright about TEETH_EDGE / 2 above its edge (uncapped: 19 px)
    assert 0.5 * g.TEETH_MAX * width < height <= (1 - 0.5 * g.TEETH_EDGE) * g.TEETH_MAX * width + 1.5, (height, width)


def _eyes_image(lm, size=128, skin=(180, 140, 120)):
    """Skin with dark eyes filling the mesh's eye openings (and a little round them, as photographed)."""
    import cv2
    from engine.blendshapes import LEFT_EYE_LOOP, RIGHT_EYE_LOOP
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = skin
    for loop in (RIGHT_EYE_LOOP, LEFT_EYE_LOOP):
        cv2.fillPoly(img, [np.round(lm[list(loop), :2]).astype(np.int32)], (40, 35, 30))
    return img


def test_the_drawn_lash_line_is_antialiased_at_the_outputs_pixels(fm):
    """A closed eye drawn at an output's resolution (no supersampling, as ``OutputWarp`` draws a 512 px frame):
    the lash line along the lid shades its pixels by how much of each it covers. OpenCV antialiases only on
    8-bit canvases: drawn on a float one, the line was two colours, a stepped pen stroke across the lid."""
    lm, _ = _face(fm)
    closed = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, eye_close_left=1.0, eye_close_right=1.0))
    skin = np.array([180.0, 140, 120], np.float32)
    patches = g.lid_patches(lm * 4, closed * 4, [skin, skin], (512, 512), ss=1)
    assert patches and len(patches) == 2
    for _box, fill, alpha in patches:
        shade = fill[..., 0] / skin[0]                  # 1: skin; LASH_DARK: under the lash's core
        lash = shade < 1 - 1e-3
        assert shade.min() < 1 - 0.5 * g.LASH_OPACITY * (1 - g.LASH_DARK)        # a dark line is there
        levels = np.unique(np.round(shade[lash], 3))
        assert len(levels) > 12, levels                  # its edges shaded, not a hard step


def test_a_closing_lid_covers_where_the_eye_and_its_lashes_were(fm):
    """The lid that comes down over a closing eye is drawn over where the source's eye was and its lashes above
    it (``_lid_was``): the warp alone stretches the source's lid, lashes and all, down over the eye, and a closed
    eye showed dark streaks down its lid."""
    import cv2
    from engine.blendshapes import RIGHT_EYE_LOOP
    size = 256
    lm, _ = _face(fm, size)
    img = _eyes_image(lm, size)
    loop, upper = list(RIGHT_EYE_LOOP), list(RIGHT_EYE_LOOP)[:9]
    width = float(np.linalg.norm(lm[upper[0], :2] - lm[upper[-1], :2]))
    lashes = np.concatenate([lm[upper, :2], lm[upper[::-1], :2] - (0, 0.08 * width)])
    cv2.fillPoly(img, [np.round(lashes).astype(np.int32)], (30, 25, 20))     # dark lashes above the upper lid
    mw = g.MeshWarp(lm, size)
    closed = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, eye_close_left=1.0, eye_close_right=1.0))
    drawn, _ = mw.drawn_warp(img, closed)
    plain = mw.warp_crop(img, closed)
    # where the source's eye and lashes were, but for the closed lid's lash line
    zone = np.zeros((size, size), np.uint8)
    for poly in (lashes, lm[loop, :2]):
        cv2.fillPoly(zone, [np.round(poly).astype(np.int32)], 1)
    cv2.polylines(zone, [np.round(closed[upper, :2]).astype(np.int32)], False, 0, int(2 * g.LASH_WIDTH * width) + 3)
    zone = zone > 0
    skin = np.array([180.0, 140, 120])
    dark = lambda x: np.mean(np.abs(x[zone].astype(float) - skin).max(1) > 60)
    assert dark(plain) > 0.1 and dark(drawn) < 0.02, (dark(plain), dark(drawn))


def test_drawn_lids_cover_a_closing_eye_with_the_skin_round_it(fm):
    """engine.geometry.lid_layer: an eye closed fully is painted over with the skin round it (the warp alone
    squeezes the dark eye into the slit), none where an eye closes by less than LID_FROM of its area or
    opens; the layer is part of the drawn warp, and the mouth's cavity ignores it."""
    import cv2
    from engine.blendshapes import RIGHT_EYE_LOOP
    lm, _ = _face(fm)
    img = _eyes_image(lm)
    mw = g.MeshWarp(lm, 128)
    closed = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, eye_close_left=1.0, eye_close_right=1.0))
    loop = list(RIGHT_EYE_LOOP)
    shut = 1 - g._poly_area(closed[loop, :2]) / g._poly_area(lm[loop, :2])
    k = min((shut - g.LID_FROM) / (g.LID_FULL - g.LID_FROM), 1.0)
    assert k > 0.5, shut
    fill, alpha = g.lid_layer(img, lm, closed)
    skin = np.array([180.0, 140, 120])
    assert all(np.abs(c - skin).max() < 2 for c in g.lid_colours(img, lm))
    # over the closing eye: skin, as opaque as the eye is closed (a darker lash line along the lid)
    zone = np.zeros((128, 128), np.uint8)
    cv2.fillPoly(zone, [np.round(lm[loop, :2]).astype(np.int32)], 1)
    inside = zone > 0
    assert alpha[inside, 0].mean() > 0.4 * k and k * g.LID_OPACITY - 0.02 < alpha.max() <= g.LID_OPACITY + 1e-6
    assert np.abs(fill[inside & (alpha[..., 0] > 0.5 * k)] - skin).min(0).max() < 2
    drawn, layer = mw.drawn_warp(img, closed)
    plain = mw.warp_crop(img, closed).astype(np.float32)
    eye_drawn, eye_plain = drawn[inside].mean(0), plain[inside].mean(0)
    assert np.abs(eye_drawn - skin).mean() < 0.6 * np.abs(eye_plain - skin).mean(), (eye_drawn, eye_plain)
    assert np.abs(drawn[~inside & (alpha[..., 0] == 0)] - plain[~inside & (alpha[..., 0] == 0)]).max() < 1e-3
    # a slight closure draws nothing; nor does an eye opening wider
    for p in (_p(fm, eye_close_left=0.1, eye_close_right=0.1), _p(fm, eye_close_left=-1.0, eye_close_right=-1.0)):
        dst = g.target_landmarks(fm, lm, np.zeros(40), p)
        assert g.lid_layer(img, lm, dst) is None and mw.drawn_layer(img, dst) is None
    # an opening mouth with closed eyes: the mouth's cavity is the mouth layer's alone
    both = g.target_landmarks(fm, lm, np.zeros(40), _p(fm, lips_part=1.0, jaw_open=0.8, eye_close_left=1.0,
                                                       eye_close_right=1.0))
    mouth_only = g.mouth_layer(img, lm, both)[1]
    assert np.allclose(g.cavity(mw.drawn_layer(img, both)[1], both), g.cavity(mouth_only, both), atol=1e-5)
    assert g.cavity(mouth_only, both).max() > 0.5


def test_turn_eyes_slides_the_iris_whole_inside_the_openings_only(fm):
    """engine.geometry.turn_eyes: in each eye opening the iris is moved whole by the turn (what it shows at its
    new centre is what the unturned map showed at the old one), the map outside the openings is untouched, the
    irises of the returned landmarks read back as the portrait's own direction plus the turn (gaze_angles),
    and no turn changes nothing."""
    import cv2
    from engine.blendshapes import LEFT_EYE_LOOP, RIGHT_EYE_LOOP
    lm, _ = _face(fm, 256)
    assert lm.shape[0] == 478
    mw = g.MeshWarp(lm, 256)
    bm = mw.backward_map(lm)
    same = bm.copy()
    assert np.array_equal(g.turn_eyes(same, mw.margin, lm, lm, [0.0, 0.0]), lm) and np.array_equal(same, bm)
    turned = bm.copy()
    dst = g.turn_eyes(turned, mw.margin, lm, lm, [15.0, 0.0])
    openings = np.zeros((mw.grid_size,) * 2, np.uint8)
    for loop in (RIGHT_EYE_LOOP, LEFT_EYE_LOOP):
        cv2.fillPoly(openings, [np.round(lm[list(loop), :2] + mw.margin).astype(np.int32)], 1)
    outside = cv2.dilate(openings, np.ones((5, 5), np.uint8)) == 0
    assert np.array_equal(turned[outside], bm[outside])
    assert np.abs(turned - bm)[openings > 0].max() > 1.0              # the openings changed
    np.testing.assert_allclose(g.gaze_angles(dst), g.gaze_angles(lm) + [15.0, 0.0], atol=0.2)
    for iris in (468, 473):
        moved = dst[iris, :2] - lm[iris, :2]
        assert moved[0] > 1.0 and abs(moved[1]) < 0.5 * moved[0]      # towards the image's right
        def at(m, xy):     # the map, bilinear, at grid point xy
            x, y = (np.full((1, 1), v, np.float32) for v in xy + mw.margin)
            return cv2.remap(m, x, y, cv2.INTER_LINEAR)[0, 0]
        np.testing.assert_allclose(at(turned, dst[iris, :2]), at(bm, lm[iris, :2]), atol=0.6)
