"""The embedded default model (engine/assets/default_model) that serve, render and live use when no
model is given: shipped, made for the embedded blendshape models, and trained (its regression head
moves with a held-out real face)."""
from __future__ import annotations

import numpy as np
import pytest

from engine.animator import default_checkpoint
from engine.blendshapes import load_default_face_model
from engine.checkpoint import read_metadata
from engine.inference import load_models


def test_default_model_is_shipped_for_the_embedded_blendshapes():
    md = read_metadata(default_checkpoint())
    fm = load_default_face_model()
    # the geometry-guided generator, at half the realtime widths (distilled from a realtime model)
    assert md["config"].name == "realtime-small" and md["config"].generator == "warp"
    assert (md["config"].n_exp, md["config"].n_speech) == (fm.n_exp, fm.n_speech)
    assert fm.fingerprint() in md["blendshapes"]
    assert md["step"] > 0 and "train_config" in md["meta"]
    assert (default_checkpoint() / "MODEL_CARD.md").exists()


def test_default_model_carries_the_checksum_of_its_weights():
    """Recorded when the checksum was introduced (metadata rewritten, weights untouched): it verifies."""
    from engine.checkpoint import load_checkpoint, tensors_sha256
    from safetensors.torch import load_file
    md = read_metadata(default_checkpoint())
    assert md["sha256"] == tensors_sha256(load_file(str(default_checkpoint() / "model.safetensors")))
    ck = load_checkpoint(default_checkpoint())
    assert ck.step == md["step"]


def test_default_regressor_tracks_the_held_out_video(shared_data):
    """d19 was kept out of training. Drivers use the head relative to the driver's own neutral, so
    what must hold on a new face is that it moves with the face: on the components that this video
    moves most (by the sequence fit), the head's readings correlate with the fitted ones."""
    from trainer.evaluate import to_tensor, video_faces
    models = load_models(default_checkpoint(), backend="onnxruntime", threads=1)
    faces = video_faces(shared_data / "driving" / "d19.mp4", models.image_size, max_frames=48)
    p_fit = load_default_face_model().fit_sequence(faces.landmarks.astype(np.float64)).p
    p_d = models.regress(to_tensor(faces.crops).numpy())
    moving = np.argsort(-p_fit.std(0))[:6]
    corr = [np.corrcoef(p_fit[:, i], p_d[:, i])[0, 1] for i in moving]
    assert np.median(corr) > 0.5, dict(zip([models.param_names[i] for i in moving], np.round(corr, 2)))
