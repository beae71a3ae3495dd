"""The geometry-guided generator's data and training: real pairs from one clip (slidergan video-pairs),
the trainer warping every sample along its mesh, and the trained checkpoint through the Animator."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.data import DatasetError, DatasetWriter, open_dataset


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    from tests.conftest import SHARED_DATA
    from trainer.video_pairs import make_video_pairs
    clip = SHARED_DATA / "talking" / "grid_bbaf2n.mp4"
    if not clip.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    out = tmp_path_factory.mktemp("vp") / "pairs"
    info, _skips, stats = make_video_pairs([clip], out, every=2, show_progress=False)
    return info, stats


def test_video_pairs_are_pose_matched_real_pairs(pairs):
    info, stats = pairs
    assert info.paired and info.landmarks and info.count == stats["pairs"] >= 20
    a = info.load_shard(0)
    assert a["landmarks"].shape == (info.count, 478, 3)
    # sources and targets differ in expression (the parameters by at least MIN_PARAM_CHANGE) ...
    from trainer.video_pairs import MIN_PARAM_CHANGE
    assert (np.linalg.norm(a["params"] - a["target_params"], axis=1) >= MIN_PARAM_CHANGE - 1e-6).all()
    # ... but not in framing: both crops under the source's similarity, so the background (the crop's
    # top corners, away from the head) stays put
    corner = (slice(0, 12), slice(0, 12))
    d = np.abs(a["images"][:, corner[0], corner[1]].astype(int) - a["target_images"][:, corner[0], corner[1]])
    assert np.median(d.mean((1, 2, 3))) < 6
    # the landmarks are the source's mesh in crop pixels: the nose tip lies inside the crop's middle
    assert np.all((a["landmarks"][:, 1, :2] > 40) & (a["landmarks"][:, 1, :2] < 90))


def test_warp_profile_trains_resumes_and_animates(pairs, tmp_path):
    from engine.animator import Animator
    from engine.inference import load_models
    from tests.conftest import SHARED_DATA
    from trainer.train import TrainConfig, Trainer
    info, _ = pairs
    cfg = TrainConfig(profile="tiny-warp", paired=[str(info.path)], unpaired=[str(info.path)],
                      val_pairs=str(info.path), out=str(tmp_path / "run"), paired_steps=4, unpaired_steps=4,
                      batch_size=4, n_critic=2, checkpoint_every=4, sample_every=8, log_every=4, no_id=True,
                      workers=0, progress=False, val_count=8, sample_images=1, sample_params=[30], seed=3)
    tr = Trainer(cfg, keep_history=True)
    summary = tr.run(max_steps=4)
    assert all(np.isfinite(v) for h in tr.history for k, v in h.items() if k != "step")
    assert any("G/rec" in h for h in tr.history)                   # the cycle ran through the warp back
    assert 0 < summary["val"]["edit_ratio"] < 2
    # exact resume: 4 more steps after a restart == 8 steps in one go
    Trainer(cfg, resume=True).run()
    one = Trainer(TrainConfig(**{**cfg.to_dict(), "out": str(tmp_path / "one")}))
    one.run()
    from engine.checkpoint import load_checkpoint
    ck_a = load_checkpoint(tmp_path / "run" / "checkpoints" / "step-0000008")
    ck_b = load_checkpoint(tmp_path / "one" / "checkpoints" / "step-0000008")
    for (k, v), (_, w) in zip(ck_a.generator.state_dict().items(), ck_b.generator.state_dict().items()):
        assert torch.equal(v, w), k
    # the checkpoint drives a portrait through the warp path
    anim = Animator(load_models(tmp_path / "run" / "checkpoints" / "step-0000008"), output_size=128)
    src = anim.set_source(str(SHARED_DATA / "portraits" / "s9.jpg"))
    p = src.params.copy()
    p[30] = 1.0                                                      # lips_part
    assert np.abs(anim.animate(p).astype(int) - src.base).mean() > 0.3


def test_a_gan_step_warps_its_batch_to_the_target_once(pairs, tmp_path, monkeypatch):
    """A step's D and G passes warp the same batch to the same p: the geometry (CPU work, a third of a
    step's) is made once, so a step warps twice (to the target, and back for the cycle) where it warped three
    times, and its losses are exactly those of warping again."""
    import engine.geometry as geometry
    from trainer.train import Conditioned, TrainConfig, Trainer
    info, _ = pairs
    cfg = TrainConfig(profile="tiny-warp", paired=[str(info.path)], out=str(tmp_path / "run"), paired_steps=1,
                      unpaired_steps=0, batch_size=4, n_critic=1, no_id=True, workers=0, progress=False, seed=5)
    warps = []
    warp_batch = geometry.warp_batch
    monkeypatch.setattr(geometry, "warp_batch", lambda *a: warps.append(len(a[1])) or warp_batch(*a))

    def step():
        tr = Trainer(cfg)
        return tr.train_step(next(tr._stream("paired", 0)), "paired")
    once = step()
    assert warps == [4, 4]
    inputs = Conditioned.inputs
    monkeypatch.setattr(Conditioned, "inputs", lambda self, x, p: (setattr(self, "_last", None), inputs(self, x, p))[1])
    again = step()
    assert len(warps) == 5 and set(once) == set(again) >= {"D/adv", "G/adv", "G/rec", "G/gen"}
    assert all(once[k] == again[k] for k in once), {k: (once[k], again[k]) for k in once}


def test_geometry_workers_make_the_same_steps(pairs, tmp_path):
    """``geometry_workers``: the per-sample geometry made by worker processes (trainer.train.GeometryPool; the
    default on a GPU, where one core's geometry bounds a step) gives a run the same steps as making it in the
    trainer's process; their shared file is gone when the run ends."""
    from pathlib import Path

    from trainer.train import TrainConfig, Trainer
    info, _ = pairs
    base = dict(profile="tiny-warp", paired=[str(info.path)], paired_steps=2, unpaired_steps=0, batch_size=4,
                n_critic=1, no_id=True, workers=0, progress=False, seed=5, val_count=4, sample_images=1,
                sample_params=[30])
    runs = {}
    for n in (0, 2):
        tr = Trainer(TrainConfig(**base, out=str(tmp_path / f"w{n}"), geometry_workers=n), keep_history=True)
        tr.run()
        runs[n] = tr
    assert runs[0].history == runs[2].history and len(runs[2].history) == 2
    import tempfile
    assert runs[2]._geometry is None
    assert not [f for d in ("/dev/shm", tempfile.gettempdir()) for f in Path(d).glob("slidergan-geometry-*")]
    assert TrainConfig(**base).geometry_workers == -1            # auto: none on this CPU
    assert runs[0]._geometry_pool() is None


def test_warp_profile_needs_landmarks(tmp_path):
    from trainer.train import TrainConfig, Trainer
    d = tmp_path / "plain"
    rng = np.random.default_rng(0)
    with DatasetWriter(d, image_size=64, n_params=40) as w:
        for i in range(4):
            w.add(rng.integers(0, 255, (64, 64, 3), np.uint8), np.zeros(40), i)
    assert not open_dataset(d).landmarks
    with pytest.raises(DatasetError, match="no landmarks"):
        Trainer(TrainConfig(profile="tiny-warp", unpaired=[str(d)], unpaired_steps=1, out=str(tmp_path / "o"),
                            no_id=True, workers=0, progress=False))
