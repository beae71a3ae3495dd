"""slidergan annotate: videos and image folders to the dataset format of trainer.data, with a summary
of what was skipped and why."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine.cli import main as cli
from trainer.annotate import SKIP_NO_FACE, SKIP_UNREADABLE, annotate
from trainer.data import open_dataset


def _bad_inputs(folder):
    import cv2
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "blank.png"), np.full((160, 160, 3), 120, np.uint8))   # no face
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")                       # unreadable
    return folder


def test_only_bad_inputs_give_a_clear_error(tmp_path, capsys):
    bad = _bad_inputs(tmp_path / "bad")
    with pytest.raises(ValueError, match="no usable face") as e:
        annotate([bad], tmp_path / "ds", show_progress=False)
    assert "unreadable file: 1" in str(e.value) and "no face: 1" in str(e.value)
    # through the command: exit status 1 and one line naming the problem, no traceback
    assert cli(["annotate", str(bad), "-o", str(tmp_path / "ds2")]) == 1
    err = capsys.readouterr().err
    assert "no usable face" in err and "Traceback" not in err
    with pytest.raises(FileNotFoundError):
        annotate([tmp_path / "missing.mp4"], tmp_path / "ds3", show_progress=False)
    (tmp_path / "fake.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="unreadable file"):
        annotate([tmp_path / "fake.mp4"], tmp_path / "ds4", show_progress=False)


def test_annotate_video_and_images(tmp_path, shared_data):
    from engine.blendshapes import load_default_face_model
    fm = load_default_face_model()
    imgs = _bad_inputs(tmp_path / "imgs")
    for name in ("s0.jpg", "d30.jpg"):
        shutil.copy(shared_data / "portraits" / name, imgs / name)
    out = tmp_path / "ds"
    info, skips = annotate([shared_data / "driving" / "d19.mp4", imgs], out, every=5, max_frames=12,
                           show_progress=False)
    again = open_dataset(out, n_params=40)        # what the trainer does
    assert again.count == info.count == 12 + 2
    assert again.param_names == fm.param_names and again.blendshapes == fm.describe()
    assert set(again.sequences) == {"d19", "s0", "d30"}
    assert skips.counts[SKIP_NO_FACE] == 1 and skips.counts[SKIP_UNREADABLE] == 1
    assert again.meta["skipped"][SKIP_UNREADABLE]["count"] == 1
    shard = again.load_shard(0)
    assert shard["images"].shape == (14, 128, 128, 3) and shard["images"].dtype == np.uint8
    p = shard["params"]
    assert np.all(np.isfinite(p)) and np.abs(p).max() <= 1.0
    # the video's frames are one sequence, labelled by the sequence fit: its calm frames near 0
    vid = p[shard["seq"] == again.sequences.index("d19")]
    assert len(vid) == 12 and np.abs(vid).mean() < 0.3
    # the crop is the aligned face: its centre is skin-coloured, not background
    centre = shard["images"][:, 54:74, 54:74].reshape(14, -1, 3).mean(1)
    assert np.all(centre.max(1) > 60)


def test_annotate_cli_group_by_folder(tmp_path, shared_data):
    person = tmp_path / "people" / "one"
    person.mkdir(parents=True)
    for name in ("s0.jpg", "s3.jpg"):
        shutil.copy(shared_data / "portraits" / name, person / name)
    out = tmp_path / "ds"
    assert cli(["annotate", str(tmp_path / "people"), "-o", str(out), "--group-images", "folder"]) == 0
    info = open_dataset(out)
    assert info.count == 2 and info.sequences == ["one"]
