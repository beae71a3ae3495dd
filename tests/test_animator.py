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
