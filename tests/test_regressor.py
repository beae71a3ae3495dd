"""``slidergan train-head`` (trainer/regressor.py): the regression head trained alone, identity-balanced,
with webcam augmentations; it learns, resumes exactly and leaves the generator untouched."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests import streamkit as kit


def _face(p: np.ndarray, person: int) -> np.ndarray:
    """A face whose first parameters are readable from the image: a bright disc whose position and size
    are p[0], p[1] and p[2]; 4 'identities' by background colour."""
    import cv2
    img = np.full((64, 64, 3), 40 + 30 * (person % 4), np.uint8)
    cv2.circle(img, (int(32 + 14 * p[0]), int(32 + 14 * p[1])), int(9 + 5 * p[2]), (230, 220, 200), -1)
    return img


def _dataset(path, n: int, seed: int, n_params: int = 40, paired: bool = False, landmarks: bool = False):
    """``n`` faces (``_face``; the parameters past the third 0). ``paired``: a synth-pairs dataset whose
    sources are blank and whose targets are the faces. ``landmarks``: with a face mesh per crop (the
    template, jittered: what ``--mirror`` fits)."""
    from engine.face import template_points
    from trainer.data import DatasetWriter
    rng = np.random.default_rng(seed)
    with DatasetWriter(path, image_size=64, n_params=n_params, paired=paired, landmarks=landmarks) as w:
        for i in range(n):
            p = np.zeros(n_params, np.float32)
            p[:3] = rng.uniform(-1, 1, 3)
            lm = template_points(64) + rng.normal(0, 0.3, (478, 3)) if landmarks else None
            if paired:
                w.add(np.zeros((64, 64, 3), np.uint8), np.zeros(n_params), seq=f"photo{i % 16}",
                      target_image=_face(p, i), target_params=p)
            else:
                w.add(_face(p, i), p, seq=f"person{i % 4}", landmarks=lm)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("head")
    ck = kit.tiny_checkpoint(d / "ck")
    return ck, _dataset(d / "train", 160, 0, landmarks=True), _dataset(d / "val", 48, 1), d


def _cfg(setup, out, **kw):
    from trainer.regressor import HeadConfig
    ck, train, val, _ = setup
    base = dict(init=str(ck), data=[str(train)], val=str(val), out=str(out), steps=8, batch_size=8,
                checkpoint_every=4, lr=1e-3, seed=0)
    return HeadConfig(**{**base, **kw})


def test_the_head_learns_and_the_generator_is_kept(setup, tmp_path):
    from engine.checkpoint import load_checkpoint
    from trainer.regressor import head_metrics, load_arrays, regress_all, train
    ck, _, val, _ = setup
    start = load_checkpoint(ck)
    images, params, _ = load_arrays([val])
    before = head_metrics(params, regress_all(start.discriminator, images), k=3)
    summary = train(_cfg(setup, tmp_path / "run", steps=300, augment=False), progress=False)
    assert summary["relative_error"] < 0.7 * before["relative_error"], (before, summary)
    assert summary["corr_strongest_mean"] > 0.6, summary
    out = load_checkpoint(tmp_path / "run" / "checkpoints" / "step-0000300")
    for a, b in zip(start.generator.state_dict().values(), out.generator.state_dict().values()):
        assert torch.equal(a, b)
    assert out.meta["head"]["val"]["relative_error"] == pytest.approx(summary["relative_error"])
    # the D is this run's own: an installer (scripts/make_default_model.py) names this run as its origin
    assert "discriminator_from" not in out.meta and out.meta["head"]["started_from"]["path"] == str(ck)


def test_the_head_learns_from_warped_faces_their_target_parameters(setup, tmp_path):
    """``--warped``: the targets of a paired dataset are read (image and parameters), not its sources;
    with the whole batch from them the head learns what the real crops' validation measures."""
    from trainer.regressor import HeadConfig, train
    ck, train_set, val, d = setup
    warped = _dataset(d / "warped", 160, 2, paired=True)
    summary = train(_cfg(setup, tmp_path / "run", steps=300, augment=False, warped=[str(warped)],
                         warped_share=1.0), progress=False)
    assert summary["corr_strongest_mean"] > 0.6, summary
    with pytest.raises(ValueError, match="not a paired dataset"):
        train(_cfg(setup, tmp_path / "bad", warped=[str(train_set)], warped_share=0.5), progress=False)
    with pytest.raises(ValueError, match="--warped"):
        HeadConfig(init="x", warped_share=0.3)
    with pytest.raises(ValueError, match="--warped-share"):
        HeadConfig(init="x", warped=["w"])
    with pytest.raises(ValueError, match="warped_share"):
        HeadConfig(init="x", warped=["w"], warped_share=1.5)


def test_resume_is_exact(setup, tmp_path):
    """With the within-clip term too (its pairs drawn from the same generator) and the lr's decay (a
    function of the step: a resumed run takes up the schedule where it stopped)."""
    from engine.checkpoint import load_checkpoint
    from trainer.regressor import train
    kw = dict(relative=0.5, lr_decay=0.5, mirror=0.5)
    train(_cfg(setup, tmp_path / "a", steps=8, **kw), progress=False)
    shutil.rmtree(tmp_path / "a" / "checkpoints" / "step-0000008")    # as if stopped after step 4
    train(_cfg(setup, tmp_path / "a", steps=8, **kw), resume=True, progress=False)
    train(_cfg(setup, tmp_path / "b", steps=8, **kw), progress=False)
    train(_cfg(setup, tmp_path / "nodecay", steps=8, relative=0.5), progress=False)
    nodecay = load_checkpoint(tmp_path / "nodecay" / "checkpoints" / "step-0000008").discriminator.state_dict()
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "step-0000008").discriminator.state_dict()
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "step-0000008").discriminator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], nodecay[k]) for k in a)      # the decay (and mirror) changed the steps
    # the newest three only (keep_checkpoints): a run that kept every checkpoint filled its disk
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == ["step-0000004", "step-0000008"]
    train(_cfg(setup, tmp_path / "a", steps=24, relative=0.5), resume=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()) == [
        "step-0000016", "step-0000020", "step-0000024"]
    with pytest.raises(FileExistsError, match="--resume"):
        train(_cfg(setup, tmp_path / "b", steps=8), progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_cfg(setup, tmp_path / "c", steps=8), resume=True, progress=False)


def test_augmentations_change_the_look_not_the_face():
    """Each augmented crop differs from its original but stays the same face: same size and type,
    a similar picture (the jitter is small, the eyes and mouth never covered)."""
    from trainer.regressor import augment
    rng = np.random.default_rng(0)
    img = np.zeros((4, 64, 64, 3), np.uint8)
    img[:, 20:44, 20:44] = 200
    out = augment(img, rng)
    assert out.shape == img.shape and out.dtype == np.uint8
    d = np.abs(out.astype(int) - img).mean((1, 2, 3))
    assert np.all(d > 0.5) and np.all(d < 60), d
    centre = out[:, 28:36, 28:36].mean((1, 2, 3))
    assert np.all(centre > 90), centre                  # the middle of the face still shows


def test_mesh_loss_weighs_a_parameter_error_by_the_motion_it_makes(setup, tmp_path):
    """``--loss mesh``: d^T M d is the squared mesh motion of the parameter difference d (scaled so that
    M's trace is the parameter count); two components that move the same points make errors that can
    cancel. Training with it runs, checkpoints and reports the mouth- and eye-opening correlations."""
    from engine.blendshapes import load_default_face_model
    from trainer.regressor import HeadConfig, mesh_metric, train
    fm = load_default_face_model()
    m = mesh_metric(fm, 40).double().numpy()
    assert np.trace(m) == pytest.approx(40) and np.allclose(m, m.T)
    u2 = sum(float((fm.displacement(np.eye(40)[k]) ** 2).sum()) for k in range(40))
    d = np.random.default_rng(0).normal(size=40)
    assert d @ m @ d == pytest.approx(float((fm.displacement(d) ** 2).sum()) / (u2 / 40), rel=1e-4)
    # the most overlapping pair of components: an error in one is partly undone by the other
    c = m / np.sqrt(np.outer(np.diag(m), np.diag(m)))
    np.fill_diagonal(c, 0)
    i, j = np.unravel_index(np.abs(c).argmax(), c.shape)
    e = np.zeros(40)
    e[i], e[j] = 1.0, -np.sign(c[i, j])
    assert e @ m @ e < m[i, i] + m[j, j]
    summary = train(_cfg(setup, tmp_path / "mesh", steps=8, loss="mesh"), progress=False)
    assert (tmp_path / "mesh" / "checkpoints" / "step-0000008").is_dir()
    assert np.isfinite(summary["mouth_corr"]) and np.isfinite(summary["eye_corr"])
    with pytest.raises(ValueError, match="loss"):
        HeadConfig(init="x", loss="pixels")


def test_the_within_clip_term_pairs_frames_of_one_video_and_is_scored_within_clips():
    """``--relative``: pairs are two frames of one video; ``head_metrics`` given the sequences scores
    the openings with each sequence's mean removed: a reading off by a constant per person (what a
    relative driver's calibration removes) is perfect within clips and not pooled."""
    from engine.blendshapes import load_default_face_model
    from trainer.regressor import HeadConfig, clip_pairs, head_metrics
    clips = [np.arange(0, 30), np.arange(30, 40), np.arange(40, 100)]
    a, b = clip_pairs(clips, 500, np.random.default_rng(0))
    which = np.searchsorted([30, 40, 100], a, side="right")
    assert np.array_equal(which, np.searchsorted([30, 40, 100], b, side="right"))
    assert set(which) == {0, 1, 2} and np.mean(a != b) > 0.8
    fm = load_default_face_model()
    rng = np.random.default_rng(1)
    seqs = np.repeat(np.arange(4), 12)
    p = np.zeros((48, 40))
    lips = fm.param_names.index("lips_part")
    p[:, lips] = rng.uniform(0.3, 0.8, 48)
    off = np.zeros((48, 40))
    off[:, lips] = np.repeat([0.0, 0.3, 0.1, 0.5], 12)       # each person read with an offset
    m = head_metrics(p, p + off, face_model=fm, seqs=seqs)
    assert m["mouth_corr_within"] > 0.99 and m["mouth_corr"] < 0.9, m
    with pytest.raises(ValueError, match="relative"):
        HeadConfig(init="x", relative=-1)


def test_batches_take_the_videos_and_the_stills_people_in_the_asked_shares():
    from trainer.regressor import balanced_batch
    rng = np.random.default_rng(0)
    clips = [np.arange(0, 500), np.arange(500, 520)]           # a long and a short video
    people = [np.array([520 + k]) for k in range(300)]          # one photo each
    idx = np.concatenate([balanced_batch(clips, people, 32, 0.5, rng) for _ in range(200)])
    from_clips = idx < 520
    assert abs(from_clips.mean() - 0.5) < 0.03
    # the videos equally often, whatever their length
    assert abs((idx[from_clips] >= 500).mean() - 0.5) < 0.05
    assert len(np.unique(idx[~from_clips])) > 250             # the people spread out
    assert (balanced_batch(clips, [], 16, 0.2, rng) < 520).all()  # one kind only: all from it
    # warped photos (--warped): their share of the batch, each photo equally often whatever its targets
    warped = [np.arange(820, 830), np.arange(830, 832)]
    idx = np.concatenate([balanced_batch(clips, people, 32, 0.5, rng, warped, 0.25) for _ in range(200)])
    w = idx >= 820
    assert abs(w.mean() - 0.25) < 0.03 and abs((idx[w] >= 830).mean() - 0.5) < 0.06
    assert abs((idx[~w] < 520).mean() - 0.5) < 0.04


def test_lr_scale_falls_linearly_over_the_last_share_of_the_steps():
    from trainer.regressor import HeadConfig
    from trainer.train import lr_scale
    assert [lr_scale(s, 10, 0.0) for s in (0, 9)] == [1.0, 1.0]
    assert [round(lr_scale(s, 10, 0.5), 2) for s in (0, 4, 5, 6, 9, 10)] == [1.0, 1.0, 1.0, 0.8, 0.2, 0.0]
    with pytest.raises(ValueError, match="lr_decay"):
        HeadConfig(init="x", lr_decay=1.5)


def test_mirrored_faces_are_labelled_with_the_fit_of_their_mirrored_mesh():
    """``mirrored_params``: a left eye closing (and the mouth pulled right) read as the right eye closing,
    fitted as annotate fitted (a sequence together, a lone photo alone); mirrored twice, the original."""
    from engine.blendshapes import load_default_face_model
    from engine.face import mirror_landmarks
    from trainer.regressor import mirrored_params
    fm = load_default_face_model()
    p = np.zeros((4, fm.n_params))
    p[:, fm.param_names.index("eye_close_left")] = [0, 0.3, 0.6, 0.9]
    p[:, fm.param_names.index("mouth_right")] = [0, 0.2, 0.4, 0.6]
    lm = np.stack([fm.instantiate(q) for q in p]) * 40 + 64       # crop pixels of a 128 px crop
    seqs = np.array([0, 0, 0, 1])                                  # a clip of three frames, a photo
    q = mirrored_params(lm, seqs, 128, fm)
    for a, b in zip(p, q):
        np.testing.assert_allclose(fm.lid_gaps(fm.instantiate(b))[::-1], fm.lid_gaps(fm.instantiate(a)), atol=0.003)
    assert q[3, fm.param_names.index("mouth_right")] < -0.2       # pulled the other way
    np.testing.assert_allclose(mirrored_params(mirror_landmarks(lm, 128), seqs, 128, fm), p, atol=0.05)


def test_mirror_batch_flips_crops_and_labels_pairs_together_and_only_faces_with_a_mirrored_fit():
    from trainer.regressor import mirror_batch
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
    params = rng.normal(size=(12, 5)).astype(np.float32)
    mirror = -params
    mirror[10:] = np.nan                               # no face mesh to mirror (an older synth-pairs dataset)
    idx = np.array([0, 1, 10, 11, 2, 3, 4, 5])      # 4 single samples, then pairs 2-4, 3-5
    x, y = mirror_batch(images[idx], params[idx], idx, 4, 1.0, mirror, rng)
    np.testing.assert_array_equal(x[[0, 1, 4, 5, 6, 7]], images[idx][[0, 1, 4, 5, 6, 7]][:, :, ::-1])
    np.testing.assert_array_equal(y[[0, 1, 4, 5, 6, 7]], mirror[idx][[0, 1, 4, 5, 6, 7]])
    np.testing.assert_array_equal(x[2:4], images[[10, 11]])          # no mirrored fit: not flipped
    np.testing.assert_array_equal(y[2:4], params[[10, 11]])
    flips = []
    for _ in range(50):
        x, y = mirror_batch(images[idx], params[idx], idx, 4, 0.5, mirror, rng)
        f = np.all(y == mirror[idx], axis=1)
        assert np.array_equal(f[4:6], f[6:8])                         # a pair flips together
        assert np.array_equal(f, np.all(x == images[idx][:, :, ::-1], axis=(1, 2, 3)))
        flips.append(f[[0, 1, 4, 5]])
    assert 0.3 < np.mean(flips) < 0.7


def test_warped_faces_are_mirrored_from_their_sources_meshes_moved_to_the_target(tmp_path):
    """``mirrored_targets``: a warped face whose target closes the left eye reads, flipped, as the right eye
    closing; a paired dataset without its sources' meshes gives NaN rows (not flipped)."""
    from engine.blendshapes import load_default_face_model
    from trainer.data import DatasetWriter
    from trainer.regressor import mirrored_targets
    fm = load_default_face_model()
    src = fm.instantiate(np.zeros(fm.n_params)) * 40 + 64                 # crop pixels of a 128 px crop
    targets = np.zeros((3, fm.n_params), np.float32)
    targets[:, fm.param_names.index("eye_close_left")] = [0.2, 0.5, 0.8]
    for name, marks in (("with", True), ("without", False)):
        with DatasetWriter(tmp_path / name, image_size=128, n_params=fm.n_params, paired=True, landmarks=marks) as w:
            for t in targets:
                w.add(np.zeros((128, 128, 3), np.uint8), np.zeros(fm.n_params), seq="photo",
                      target_image=np.zeros((128, 128, 3), np.uint8), target_params=t,
                      landmarks=src if marks else None)
    q = mirrored_targets([tmp_path / "with", tmp_path / "without"], fm)
    assert q.shape == (6, fm.n_params) and np.isnan(q[3:]).all() and np.isfinite(q[:3]).all()
    for t, m in zip(targets, q[:3]):
        np.testing.assert_allclose(fm.lid_gaps(fm.instantiate(m))[::-1], fm.lid_gaps(fm.instantiate(t)), atol=0.003)


def test_mirror_needs_the_face_meshes_of_the_crops(setup, tmp_path):
    from trainer.regressor import HeadConfig, train
    _, _, val, _ = setup
    with pytest.raises(ValueError, match="no face-mesh landmarks"):
        train(_cfg(setup, tmp_path / "run", data=[str(val)], mirror=0.5), progress=False)
    with pytest.raises(ValueError, match="mirror"):
        HeadConfig(init="x", mirror=1.5)
