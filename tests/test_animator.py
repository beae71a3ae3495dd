"""engine.animator: source preparation, per-step generation and the precomputed paste-back."""
from __future__ import annotations

import numpy as np
import pytest

from tests import streamkit as kit


@pytest.fixture(scope="module")
def anim(tmp_path_factory):
    from engine.animator import Animator
    d = tmp_path_factory.mktemp("anim")
    models = kit.load_tiny(kit.tiny_checkpoint(d / "ck"))
    a = Animator(models, output_size=256)
    a.set_source(kit.synth_portrait(0, 384))
    return a


def test_source_and_frames(anim):
    info = anim.source
    assert info.base.shape == (256, 256, 3) and info.crop.shape == (64, 64, 3)
    assert info.params.shape == (40,) and np.all(np.abs(info.params) <= 1)
    f0 = anim.animate(np.zeros(40))
    f1 = anim.animate(np.ones(40))
    assert f0.shape == (256, 256, 3) and f0.dtype == np.uint8
    x0, y0, x1, y1 = anim._src.roi
    assert np.abs(f0.astype(float) - f1).mean() > 1.0               # the face changes with p
    outside = np.ones((256, 256), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(f0[outside], info.base[outside])            # nothing else does
    batch = anim.animate_batch(np.stack([np.zeros(40), np.ones(40)]))
    assert np.abs(batch[1].astype(float) - f1).max() <= 1             # batched == one by one
    with pytest.raises(ValueError, match="40 parameters"):
        anim.animate(np.zeros(7))


def test_unchanged_crop_gives_the_portrait_back(anim):
    src = anim._src
    out = anim.paste(src.crop_f.copy())
    assert np.abs(out.astype(int) - src.info.base).max() <= 1


def test_paste_matches_the_face_front_end(anim):
    """The precomputed paste-back agrees with engine.face.paste_back on the framed portrait."""
    from engine.face import paste_back
    src = anim._src
    gen = anim.generate_crop(np.full(40, 0.8))
    ours = anim.paste(gen)
    ref = paste_back(src.info.base, np.clip(gen + 0.5, 0, 255).astype(np.uint8), src.info.matrix)
    x0, y0, x1, y1 = src.roi
    d = np.abs(ours[y0:y1, x0:x1].astype(float) - ref[y0:y1, x0:x1])
    assert d.mean() < 2.0, d.mean()


def test_portrait_without_a_face(anim):
    from engine.animator import NoFaceError
    with pytest.raises(NoFaceError, match="no face"):
        anim.prepare(np.full((200, 200, 3), 77, np.uint8), name="wall.png")


def test_default_checkpoint_message(monkeypatch, tmp_path):
    import engine.animator as am
    monkeypatch.setattr(am, "DEFAULT_MODEL_DIR", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        am.default_checkpoint()


@pytest.fixture(scope="module")
def warp_anims(tmp_path_factory):
    """The geometry-guided path on a real portrait: a random tiny "warp" generator, and warp-only."""
    from engine.animator import Animator
    from tests.conftest import SHARED_DATA as shared_data
    if not (shared_data / "portraits").is_dir():
        pytest.skip(f"shared data not found at {shared_data}")
    d = tmp_path_factory.mktemp("warp")
    models = kit.load_tiny(kit.tiny_checkpoint(d / "ck", profile="tiny-warp"))
    portrait = str(shared_data / "portraits" / "s5.jpg")
    out = {}
    for renderer in ("model", "warp-only"):
        a = Animator(models, output_size=320, renderer=renderer)
        a.set_source(portrait)
        out[renderer] = a
    return out


def _with(anim, **kw):
    p = anim.source.params.copy()
    names = anim.face_model.param_names   # the test checkpoint's own names are exp00...
    for k, v in kw.items():
        p[names.index(k)] = v
    return p


def test_warp_path_moves_the_face_at_full_resolution(warp_anims):
    """The portrait's own pixels are warped at the output's resolution: no motion gives the portrait
    back exactly, an open jaw moves the chin down, and nothing outside the warp's region changes."""
    import cv2
    for renderer, anim in warp_anims.items():
        info, w = anim.source, anim._src.warp
        still = anim.animate(info.params).astype(int) - info.base
        if renderer == "warp-only":
            assert not still.any()
        else:  # an untrained attention of about 0.002 blends a trace of random colour
            assert np.abs(still).mean() < 1.0, np.abs(still).mean()
        f = anim.animate(_with(anim, jaw_open=1.0, lips_part=1.0))
        x0, y0, x1, y1 = w.out.roi
        outside = np.ones(f.shape[:2], bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(f[outside], info.base[outside]), renderer
        # the chin (landmark 152) moves down: the frame changes below the mouth, in the output's pixels
        inv = cv2.invertAffineTransform(info.matrix)
        chin = inv[:, :2] @ w.mesh.src[152, :2] + inv[:, 2]
        cx, cy = int(chin[0]), int(chin[1])
        patch = (slice(cy - 12, cy + 12), slice(cx - 20, cx + 20))
        assert np.abs(f[patch].astype(int) - info.base[patch]).mean() > 4, renderer
        # batched == one by one
        pair = anim.animate_batch(np.stack([info.params, _with(anim, jaw_open=1.0, lips_part=1.0)]))
        assert np.abs(pair[1].astype(int) - f).max() <= 1


def test_a_black_and_white_portrait_stays_black_and_white(warp_anims, tmp_path):
    """A grey photo (44 of the 293 shared portraits and stills) opened wide: the drawn teeth, cavity and tongue and the
    network's paint are grey too (the teeth had come out blue: grey skin read as a blue cast)."""
    import cv2
    from engine.animator import Animator
    from tests.conftest import SHARED_DATA as shared_data
    grey = cv2.cvtColor(cv2.imread(str(shared_data / "portraits" / "s5.jpg")), cv2.COLOR_BGR2GRAY)
    path = tmp_path / "grey.png"
    cv2.imwrite(str(path), grey)
    for renderer, colour in warp_anims.items():
        anim = Animator(colour.models, output_size=320, renderer=renderer)
        anim.set_source(str(path))
        f = anim.animate(_with(anim, jaw_open=1.0, lips_part=1.0)).astype(int)
        assert np.abs(f - anim.source.base).max() > 60, renderer          # the mouth opened
        assert (f.max(2) - f.min(2)).max() <= 2, renderer                 # and nothing took a colour


def test_parameters_beyond_one_move_the_mesh_further_and_the_network_sees_them_clipped(warp_anims):
    """A relative driver's p may pass the fit's [-1, 1] (engine.animator.P_LIMIT): the warp moves the
    mesh by all of it, the generator (trained on [-1, 1]) is given p clipped there."""
    import cv2
    anim = warp_anims["warp-only"]
    base = anim.source.base.astype(int)
    inv = cv2.invertAffineTransform(anim.source.matrix)
    chin = inv[:, :2] @ anim._src.warp.mesh.src[152, :2] + inv[:, 2]
    patch = (slice(int(chin[1]) - 20, int(chin[1]) + 20), slice(int(chin[0]) - 25, int(chin[0]) + 25))
    moved = [np.abs(anim.animate(_with(anim, jaw_open=v)).astype(int)[patch] - base[patch]).mean()
             for v in (1.0, 1.5)]
    assert moved[1] > 1.1 * moved[0], moved
    model = warp_anims["model"]
    seen = []
    generate = model.models.generate

    def spy(feats, p, **kw):
        seen.append(np.array(p))
        return generate(feats, p, **kw)
    model.models.generate = spy
    try:
        model.animate(_with(model, jaw_open=1.5))
    finally:
        model.models.generate = generate
    assert np.abs(seen[0]).max() <= 1.0 and seen[0].max() == pytest.approx(1.0)


def test_the_target_mesh_is_the_portraits_own_moved_by_p(warp_anims, anim):
    """``Animator.target_mesh``: the mesh the warp is asked to draw (evaluate's "asked" figures). The
    portrait's own p gives its own crop mesh; parting the lips opens the inner lips and leaves the eyes;
    a renderer without a warp (the paper's generator) has none."""
    from engine.geometry import eye_opening, mouth_opening
    a = warp_anims["warp-only"]
    own = a.target_mesh(a.source.params)
    assert own.shape == (478, 3) and np.allclose(own, a._src.warp.mesh.src, atol=0.01)   # lips met (uncross)
    parted = a.target_mesh(_with(a, lips_part=1.0))
    assert mouth_opening(parted) > mouth_opening(own) + 0.05
    assert eye_opening(parted) == pytest.approx(eye_opening(own), abs=0.01)
    assert anim.target_mesh(anim.source.params) is None


def test_untrained_warp_generator_returns_the_warp(warp_anims):
    """Attention starts at about 0: an untrained geometry-guided model shows the warp, and its crop is
    the warp-only crop but for the drawn mouth interior."""
    p = _with(warp_anims["model"], smile=1.0, brow_raise_left=1.0)
    model = warp_anims["model"].generate_crop(p)
    warp = warp_anims["warp-only"].generate_crop(p)
    assert np.abs(model - warp).mean() < 2.0
    assert np.abs(model - warp_anims["model"].source.crop).mean() > 0.5


def test_the_generator_paints_the_openings_only_where_they_change(warp_anims):
    """engine.geometry.attention_gate: a generator that paints everything (A = 1, pure green) leaves the
    portrait's own mouth and eyes where the target's are as the source's, and paints inside the mouth
    once the target opens it, and over an eye once it closes; the rest of the crop it paints (the gate
    is on the openings only; the real generator's attention is confined to them). What it paints has the
    paint's brightness and the colour of what it covers (engine.geometry.keep_colour: dark green nowhere);
    in the drawn mouth below the upper teeth it may darken, not lighten. The output frame draws the mouth
    and lids at its own pixels and adds the paint's change of brightness over the crop's drawn ones."""
    import cv2
    from engine.geometry import LUMA, target_landmarks
    anim = warp_anims["model"]
    generate = anim.models.generate

    paint = [np.array([-1.0, 0.0, -1.0], np.float32)]        # (0, 127.5, 0), dark green

    def paint_all(feats, p, frame=None):                     # I_gen = A C with A = 1
        return np.broadcast_to(paint[0][None, :, None, None], (len(p), 3, *frame.shape[2:])).copy()
    inv = cv2.invertAffineTransform(anim.source.matrix)
    w = anim._src.warp
    wide = _with(anim, jaw_open=1.0, lips_part=1.0)
    shut = _with(anim, eye_close_right=1.0)
    params = np.stack([anim.source.params, wide, shut])

    def at(frame, xy):   # the output pixel of a crop point
        x, y = np.round(inv[:, :2] @ xy + inv[:, 2]).astype(int)
        return frame[y, x].astype(int)

    def painted(under):  # green's brightness, the colour under it
        return np.clip(under + 127.5 * LUMA[1] - under @ LUMA, 0, 255)
    anim.models.generate = paint_all
    try:
        still, opened, closed = anim.animate_batch(params)
        paint[0] = np.full(3, -1.0, np.float32)              # black
        opened_black = anim.animate(wide)
        paint[0] = np.full(3, -0.7, np.float32)              # dark grey (38): darker than the lid, no channel clipped
        closed_dark = anim.animate(shut)
        paint[0] = np.ones(3, np.float32)                    # white: brighter than the drawn teeth
        opened_bright = anim.animate(wide)
    finally:
        anim.models.generate = generate
    under = warp_anims["warp-only"].animate_batch(params)     # the warp and drawn mouth, unpainted
    base, lm = anim.source.base, w.mesh.src
    lips = (lm[13, :2] + lm[14, :2]) / 2
    assert np.abs(at(still, lips) - at(base, lips)).max() <= 2                  # the portrait's own lips
    assert np.abs(at(still, lm[468, :2]) - at(base, lm[468, :2])).max() <= 2    # ... and iris
    nose = at(still, lm[1, :2])                                                 # the nose tip: no gate
    assert np.abs(nose - painted(at(under[0], lm[1, :2]))).max() <= 3
    assert np.abs(nose - at(base, lm[1, :2])).min() > 40 and nose[1] - nose[0] < 0   # painted, not green
    # the opening and the closing right eye's lid: the paint is a shading of the crop's drawn mouth and lids
    # (its brightness there, the colour under it kept: the same shift in every channel), added to the output's
    # own (drawn at its pixels)
    dst = target_landmarks(anim.face_model, lm, w.p_src, wide)
    # points at 0.65 (above the tongue) and 0.08 of the opening's height (in the drawn teeth, whose band is
    # at most TEETH_MAX x the mouth's width: a few pixels at the crop's 128)
    deep, teeth = (dst[13, :2] + f * (dst[14, :2] - dst[13, :2]) for f in (0.65, 0.08))
    shut_dst = target_landmarks(anim.face_model, lm, w.p_src, shut)
    lid = (shut_dst[159, :2] + shut_dst[145, :2]) / 2           # the closed eye's middle
    crops = warp_anims["warp-only"].generate_crops(params)

    def shading(i, frame, xy, luma):       # (the output's change, the paint's brightness over the crop's drawn)
        crop = cv2.getRectSubPix(crops[i], (1, 1), tuple(np.float32(xy)))[0, 0]
        return at(frame, xy) - at(under[i], xy), luma - crop @ LUMA
    for i, frame, xy, luma in ((2, closed_dark, lid, 0.3 * 127.5), (1, opened, teeth, 127.5 * LUMA[1])):
        got, shift = shading(i, frame, xy, luma)
        assert abs(shift) > 20 and got @ LUMA == pytest.approx(shift, abs=6) and np.ptp(got) <= 3, (i, got, shift)
    # deep in the opening the drawn cavity (dark: luma < 75) stays as drawn under the lighter paint, and
    # black paint darkens it; under the upper lip (the teeth) the paint lightens or darkens
    cavity = at(under[1], deep)
    assert cavity @ LUMA < 127.5 * LUMA[1] - 20 and np.abs(at(opened, deep) - cavity).max() <= 6
    assert at(opened_black, deep) @ LUMA < cavity @ LUMA - 5
    assert at(opened_bright, teeth) @ LUMA > at(under[1], teeth) @ LUMA + 30     # white paint lightens the teeth
    assert at(opened_bright, deep) @ LUMA < cavity @ LUMA + 15         # ... and left the cavity dark (255 unkept)


def test_warp_needs_a_fit(tmp_path, shared_data):
    from engine.animator import Animator
    models = kit.load_tiny(kit.tiny_checkpoint(tmp_path / "ck", profile="tiny-warp"))
    from engine.animator import NoFaceError
    a = Animator(models, output_size=128, source_params="regress")
    with pytest.raises(NoFaceError, match="could not be fitted"):
        a.set_source(str(shared_data / "portraits" / "s5.jpg"))
    with pytest.raises(ValueError, match="renderer"):
        Animator(models, renderer="paint")
    with pytest.raises(ValueError, match="blendshape model"):
        Animator(models, blendshapes=False)


def test_a_relative_driver_starts_from_the_portraits_mouth_closed(tmp_path, shared_data):
    """A portrait photographed with its mouth open (held-out d9, mid-scream): the relative mode's rest
    is its p with the mouth closed (lip normalisation, the default), or its own with source_mouth "own";
    animated at that rest, the warped face's mouth is closed."""
    from engine.animator import Animator
    from engine.face import FaceMeshDetector
    from engine.geometry import lip_gap
    models = kit.load_tiny(kit.tiny_checkpoint(tmp_path / "ck", profile="tiny-warp"))
    portrait = str(shared_data / "portraits" / "d9.jpg")
    own = Animator(models, output_size=256, renderer="warp-only", source_mouth="own")
    own.set_source(portrait)
    assert np.array_equal(own.rest_params, own.source_params)
    closed = Animator(models, output_size=256, renderer="warp-only")
    closed.set_source(portrait)
    assert closed.source_mouth == "closed"
    names = closed.face_model.param_names   # the test checkpoint's own names are exp00...
    dp = closed.rest_params - closed.source_params
    assert dp[names.index("lips_part")] < -0.5, dict(zip(names, dp.round(2)))
    det = FaceMeshDetector(static=True, max_faces=1)
    try:
        gaps = [lip_gap(det.detect(a.animate(a.rest_params))[0]) for a in (own, closed)]
    finally:
        det.close()
    assert gaps[0] > 0.2 and gaps[1] < 0.7 * gaps[0], gaps     # (a scream: the tongue stays in sight)
    with pytest.raises(ValueError, match="source_mouth"):
        Animator(models, renderer="warp-only", source_mouth="open")
