"""Blendshape models: the file format, fitting, the 3D preview, and (on ../shared/data) how well the
embedded default models explain a held-out video and how stable fitting is.

Figures asserted here (measured values when the defaults were built, in brackets):
- held-out d19: the 40 components explain >= 95 % of its frames' motion by projection [98.0 %] and
  >= 95 % through the bounded ``fit_sequence`` [97.8 %];
- fit -> instantiate -> fit on real frames of d19: max |p - p'| <= 0.05 [single-image fit: 0.017];
  the same through ``fit_sequence`` with the sequence's neutral kept: <= 0.05 [0.013].
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine import blendshapes as bs
from engine.blendshapes import BlendshapeError, BlendshapeModel


@pytest.fixture(scope="module")
def fm():
    return bs.load_default_face_model()


def _random_similarity(rng, mesh):
    """A frame-coordinate version of a canonical mesh: rotated (a few degrees), scaled, moved."""
    ang = np.radians(rng.uniform(-8, 8, 3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    s = rng.uniform(200, 400)
    return (s * mesh.astype(np.float64) @ (rz @ ry @ rx).T + rng.uniform(50, 300, 3)).astype(np.float32)


# ------------------------------------------------------------------------------- no shared data

def test_embedded_provenance_names_commands_a_user_can_run():
    """The note kept in the embedded models (and the README's rebuild command, which writes it) names
    `slidergan evaluate`, not an internal placeholder; the models' numbers are those they were built with."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    for f in sorted((root / "engine" / "assets" / "blendshapes").glob("*.npz")):
        pv = BlendshapeModel.load(f).provenance
        assert "helper EVAL" not in json.dumps(pv), f
        assert "slidergan evaluate" in pv["note"] and pv["note"] in pv["command"], f
    assert bs.load_default_face_model().expression.fingerprint() == "f3744cf54b06"  # unchanged components
    readme = (root / "README.md").read_text()
    assert "helper EVAL" not in readme and "slidergan evaluate uses it as its held-out video" in readme
def test_mesh_topology():
    tri = bs.mesh_triangles()
    assert tri.shape == (852, 3)
    edges = {}
    for t in tri:
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            edges[tuple(sorted((a, b)))] = edges.get(tuple(sorted((a, b))), 0) + 1
    assert max(edges.values()) == 2             # a manifold: every edge in one or two triangles
    mj = bs.mouth_jaw_points()
    assert 13 in mj and 14 in mj and 152 in mj and 10 not in mj and 159 not in mj


def test_default_models_are_consistent(fm):
    assert (fm.n_exp, fm.n_speech, fm.n_params) == (30, 10, 40)
    names = fm.param_names
    assert len(set(names)) == 40 and all(n.replace("_", "").isalnum() for n in names)
    assert fm.expression.points.tolist() == list(range(468))
    assert set(fm.speech.points) == set(bs.mouth_jaw_points())
    pv = fm.expression.provenance
    assert any("d19" in h for h in pv["held_out"]) and not any("d19" in i["name"] for i in pv["inputs"])
    assert pv["method"] == "slpca" and "slidergan blendshapes build" in pv["command"]
    # p = 0 is the neutral; the identity basis cannot produce any expression or speech motion
    assert np.allclose(fm.instantiate(np.zeros(40))[:468], fm.mean, atol=1e-6)
    q, _ = np.linalg.qr(fm._u)
    assert np.abs(q.T @ fm._uid).max() < 1e-4 * np.abs(fm._uid).max()


def test_refit_synthetic_faces(fm):
    """instantiate(p, identity) under a random pose -> fit gives p back (no bound active)."""
    rng = np.random.default_rng(0)
    errs = []
    for _ in range(20):
        p = rng.uniform(-0.6, 0.6, 40) * (rng.random(40) < 0.4)
        a = rng.normal(0, 1, fm.n_identity)
        lm = _random_similarity(rng, fm.instantiate(p, a))
        r = fm.fit(lm)
        errs.append(np.abs(r.p - p).max())
        assert r.residual_px < 0.05
        assert np.all(np.abs(r.p) <= 1.0)
    assert max(errs) < 0.05, max(errs)


def test_fit_clips_to_bounds(fm):
    p = np.zeros(40)
    p[30] = 1.6      # the strongest speech component beyond its range
    r = fm.fit(fm.instantiate(p), aligned=True)
    assert r.p[30] == pytest.approx(1.0) and r.clipped[30]
    assert np.all(np.abs(r.p) <= 1.0)
    assert r.residual_px > 0.1     # the part beyond the bound is left in the residual


def test_fit_against_a_neutral_keeps_the_lips_gap(fm):
    """fit_many(neutral=): the fitted mesh's inner-lip gap is the face's, also where the face opens its
    mouth in a way no component makes exactly (the lower inner lip moved alone) and the prior would
    shrink it; a face the model spans is fitted as before."""
    from engine.geometry import LIP_PAIRS
    neutral = fm.instantiate(np.zeros(40))
    lower = [b for _, b in LIP_PAIRS]
    p = np.zeros(40)
    p[fm.param_names.index("smile")] = 0.3
    face = fm.instantiate(p)
    opened = face.copy()
    opened[lower, 1] += 0.35 * (face[lower, 1] - face[[a for a, _ in LIP_PAIRS], 1]).mean() + 0.02 * np.ptp(face[:, 1])

    def gap(x):
        return float(np.mean([x[b, 1] - x[a, 1] for a, b in LIP_PAIRS]))
    spanned, wide = fm.fit_many(np.stack([face, opened]), aligned=True, neutral=neutral)
    assert np.abs(spanned.p - p).max() < 0.05
    fitted = fm.instantiate(wide.p, neutral=neutral[:468])
    assert gap(fitted) - gap(neutral) == pytest.approx(gap(opened) - gap(neutral), rel=1e-3)
    assert abs(gap(opened) - gap(face)) > 0.01 * np.ptp(face[:, 1])       # it did open
    # the residual is the model's own fit's (a driver's check that the same face is still there reads it),
    # not that of the mesh the gap's step makes
    assert wide.residual < 0.9 * np.sqrt(((opened[:468] - fitted[:468]) ** 2).sum(-1).mean())


def test_scale_lids_moves_each_eyes_lids_so_much_further_and_nothing_else(fm):
    """FaceModel.scale_lids: each eye's lid gap moves k times as far (the left eye twice, the right half
    as far); the lips' gap moves as before; k = 1 changes nothing."""
    names = fm.param_names
    dp = np.zeros(40)
    for n, v in (("eye_close_left", 0.6), ("eye_close_right", 0.6), ("lips_part", 0.5)):
        dp[names.index(n)] = v
    neutral = fm.instantiate(np.zeros(40))

    def moved(q):
        return fm.lid_gaps(fm.instantiate(q)) - fm.lid_gaps(neutral)
    lids = moved(dp)
    assert np.all(lids < 0)                                                  # both eyes close
    k = np.array([0.5, 2.0])
    scaled = fm.scale_lids(dp, k)
    assert np.allclose(moved(scaled), k * lids, rtol=1e-6, atol=1e-9)
    lips = fm._gap_row @ (fm.instantiate(dp)[:468] - neutral[:468]).reshape(-1)
    assert fm._gap_row @ (fm.instantiate(scaled)[:468] - neutral[:468]).reshape(-1) == pytest.approx(lips, rel=0.05)
    assert np.allclose(fm.scale_lids(dp, np.ones(2)), dp)
    assert fm.scale_lids(np.stack([dp, dp]), k).shape == (2, 40)


def test_bad_landmarks_are_refused(fm):
    with pytest.raises(ValueError, match="478"):
        fm.fit(np.zeros((468, 3)))
    bad = fm.instantiate(np.zeros(40)).copy()
    bad[5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fm.fit(bad)
    with pytest.raises(ValueError, match="40 parameters"):
        fm.instantiate(np.zeros(12))
    with pytest.raises(ValueError, match="no frame"):
        fm.fit_sequence(np.full((3, 478, 3), np.nan))


def test_model_file_roundtrip_and_errors(tmp_path, fm):
    m = fm.speech
    path = m.save(tmp_path / "speech.npz")
    back = BlendshapeModel.load(path, "speech")
    assert back.names == m.names and np.array_equal(back.components, m.components)
    assert back.provenance == m.provenance and back.fingerprint() == m.fingerprint()
    with pytest.raises(BlendshapeError, match="expected a expression model|holds a speech model"):
        BlendshapeModel.load(path, "expression")
    # another format version
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["version"] = np.array(99)
    np.savez(tmp_path / "v99.npz", **arrays)
    with pytest.raises(BlendshapeError, match="version 99"):
        BlendshapeModel.load(tmp_path / "v99.npz")
    # another file format altogether
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(BlendshapeError, match="not a SliderGAN blendshape model"):
        BlendshapeModel.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(BlendshapeError, match="not a readable"):
        BlendshapeModel.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        BlendshapeModel.load(tmp_path / "missing.npz")
    # shapes that do not fit together
    arrays = {k: v for k, v in np.load(path, allow_pickle=False).items()}
    arrays["eigenvalues"] = arrays["eigenvalues"][:3]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(BlendshapeError, match="eigenvalues"):
        BlendshapeModel.load(tmp_path / "bad.npz")


def test_face_model_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        bs.load_face_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        bs.load_face_model(tmp_path)           # a folder without model files


def test_pca_and_slpca_on_local_motions():
    """Two independent local motions on a small patch: both methods explain them; SLPCA's
    components stay local (no motion far from their centre)."""
    rng = np.random.default_rng(1)
    p = 60
    pos = np.stack([np.arange(p) / p, np.zeros(p), np.zeros(p)], 1)
    geo = np.abs(pos[:, None, 0] - pos[None, :, 0])
    a = np.zeros((p, 3))
    a[5:12, 1] = 1.0
    b = np.zeros((p, 3))
    b[40:50, 0] = 1.0
    w = rng.uniform(0, 1, (400, 2))
    d = w @ np.stack([a.ravel(), b.ravel()]) + 0.01 * rng.normal(size=(400, p * 3))
    for method in ("pca", "slpca"):
        if method == "pca":
            c, ev = bs.pca(d, 2)
        else:
            c, ev = bs.slpca(d, 2, geo, lam=0.02, dmin=0.1, dmax=0.3, iterations=10)
        assert bs.explained_variance(d, c.T) > 0.99
        if method == "slpca":
            for comp in c.reshape(2, p, 3):
                mag = np.linalg.norm(comp, axis=1)
                centre = int(np.argmax(mag))
                assert mag[geo[centre] > 0.3].max() < 1e-6 * mag.max() + 1e-9


def test_estimate_neutral_prefers_closed_mouth_frames(fm):
    rng = np.random.default_rng(2)
    base = fm.instantiate(np.zeros(40)).astype(np.float64)
    frames = []
    for i in range(60):
        p = np.zeros(40)
        if i % 3:                       # two thirds of the frames talk
            p[30] = rng.uniform(0.3, 0.9)
        frames.append(fm.instantiate(p) + rng.normal(0, 1e-4, (478, 3)))
    neutral, idx = bs.estimate_neutral(np.stack(frames))
    assert all(i % 3 == 0 for i in idx)
    assert np.abs(neutral - base).max() < 1e-3


def test_preview_renders_motion(fm):
    from engine.preview import render_params, sweep_strip
    img0 = render_params(fm, np.zeros(40), size=96)
    assert img0.shape == (96, 96, 3) and img0.dtype == np.uint8
    assert (img0.astype(int).sum(-1) < 700).mean() > 0.3        # a face covers a good part
    p = np.zeros(40)
    p[30] = 1.0
    img1 = render_params(fm, p, size=96)
    assert np.abs(img1.astype(int) - img0).mean() > 0.5         # the mouth moved
    strip = sweep_strip(fm, 30, size=48)
    assert strip.shape == (48, 48 * 11, 3)
    with pytest.raises(ValueError):
        render_params(fm, np.zeros(3))


# ---------------------------------------------------------------------------------- shared data
@pytest.fixture(scope="module")
def d19_track():
    from tests.conftest import SHARED_DATA
    path = SHARED_DATA / "driving" / "d19.mp4"
    if not path.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return bs.extract_track(path)


def test_held_out_video_is_explained(fm, d19_track):
    r = fm.evaluate_track(d19_track)
    print(json.dumps(r))
    assert r["frames"] >= 240
    assert r["ev_projection"] >= 0.95
    assert r["ev_fit"] >= 0.95
    assert r["residual_px_median"] < 0.5


def test_refit_real_frames(fm, d19_track):
    lm = d19_track.landmarks[d19_track.valid][::10]
    fits = fm.fit_many(lm)
    p = np.stack([f.p for f in fits])
    again = fm.fit_many(np.stack([fm.instantiate(f.p, f.identity) for f in fits]), aligned=True)
    err = np.abs(np.stack([f.p for f in again]) - p).max()
    print("single-image refit max |dp|", err)
    assert err <= 0.05
    sf = fm.fit_sequence(d19_track.landmarks)
    inst = np.stack([fm.instantiate(q, neutral=sf.neutral) for q in sf.p])
    sf2 = fm.fit_sequence(inst, aligned=True, neutral=sf.neutral)
    err = np.nanmax(np.abs(sf2.p - sf.p))
    print("sequence refit max |dp|", err)
    assert err <= 0.05


def test_every_component_has_a_readable_label():
    """What the page calls each slider: a name in words, or the motion it makes (which part of the
    face, which way, which side); a repeated motion says which one it repeats. Fails if a component is
    left as exp07 / speech05."""
    import re

    from engine.blendshapes import component_labels, load_default_face_model, motion_label
    fm = load_default_face_model()
    labels = fm.param_labels
    assert len(labels) == fm.n_params and len(set(labels)) == len(labels)
    for name, label in zip(fm.param_names, labels):
        assert not re.search(r"(exp|speech)\d", label) and "_" not in label, (name, label)
    # the motion is read correctly: a displacement moving the chin down reads "chin down"
    d = np.zeros((468, 3))
    d[[152, 148, 377, 175, 199], 1] = 1.0                      # chin points, y down
    assert motion_label(d) == "chin down"
    d = np.zeros((468, 3))
    d[[105, 66, 107, 65, 52], 1] = -1.0                          # the subject's right brow up (x < 0 side)
    assert motion_label(d).startswith(("left", "right")) and motion_label(d).endswith("up")
    assert component_labels(["lips_part", "lips_part_2"], np.zeros((2, 468, 3)))[1].startswith(
        "lips part (2, the same motion as lips part")
    # a repeated name whose motion is another says so, with that motion; components whose motions read
    # alike are told apart by what else they move
    chin, brow = np.zeros((468, 3)), np.zeros((468, 3))
    chin[[152, 148, 377, 175, 199], 1] = 1.0
    brow[[105, 66, 107, 65, 52], 1] = -0.4          # under half the chin's: the chin is the main motion
    aside = np.zeros((468, 3))
    aside[[152, 148, 377, 175, 199], 0] = 1.0                    # the chin to the subject's left
    labels = component_labels(["jaw_open", "jaw_open_2", "exp02", "exp03"],
                              np.stack([chin, aside, chin, chin + brow]))
    assert labels[1] == "jaw open 2 (chin left)" and labels[2] == "chin down", labels
    assert labels[3].startswith("chin down, ") and labels[3].endswith("brow up"), labels
    # the same sideways motion of either brow: told apart by the side
    left_brow, right_brow = np.zeros((468, 3)), np.zeros((468, 3))
    left_brow[[334, 296, 336, 295, 282], 0] = 1.0              # x > 0: the subject's left
    right_brow[[105, 66, 107, 65, 52], 0] = 1.0
    assert motion_label(left_brow) == motion_label(right_brow) == "brow left"
    assert component_labels(["exp02", "exp03"], np.stack([left_brow, right_brow])) == [
        "brow left (left side)", "brow left (right side)"]
