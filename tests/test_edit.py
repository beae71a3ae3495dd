"""``slidergan edit``: one photo edited by its sliders (the embedded default model, a synthetic face)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.geometry import mouth_opening
from tests import streamkit as kit


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    d = tmp_path_factory.mktemp("edit")
    path = d / "me.png"
    cv2.imwrite(str(path), kit.synth_portrait(0)[:, :, ::-1])
    return path


def _mouth(path) -> float:
    from engine.face import detect_and_align
    return mouth_opening(detect_and_align(str(path)).landmarks)


def test_edit_sets_the_named_sliders_and_keeps_the_rest(photo, tmp_path, capsys):
    """--set opens the mouth the face mesh then reads (the photo as it is does not); --sweep writes its steps
    side by side, the mouth opening along them; --like another photo's open mouth opens this one; bad names,
    values and outputs are one line each, before any file is written."""
    from engine.cli import main
    base = ["edit", "--source", str(photo), "--size", "256", "-o"]
    assert main(base + [str(tmp_path / "as_is.png")]) == 0
    assert "nothing set" in capsys.readouterr().out
    assert main(base + [str(tmp_path / "open.png"), "--set", "jaw_open=0.9,lips_part=0.9"]) == 0
    assert "jaw_open +0.90 (own" in capsys.readouterr().out
    closed, opened = _mouth(tmp_path / "as_is.png"), _mouth(tmp_path / "open.png")
    assert opened > closed + 0.05, (closed, opened)
    assert main(base + [str(tmp_path / "sweep.png"), "--sweep", "lips_part", "--steps", "3"]) == 0
    sweep = cv2.imread(str(tmp_path / "sweep.png"))
    assert sweep.shape[:2] == (256, 768)
    steps = []
    for k in range(3):
        cv2.imwrite(str(tmp_path / f"step{k}.png"), sweep[:, 256 * k:256 * (k + 1)])
        steps.append(_mouth(tmp_path / f"step{k}.png"))
    assert steps[2] > steps[0] + 0.05, steps
    assert main(base + [str(tmp_path / "like.png"), "--like", str(tmp_path / "open.png")]) == 0
    assert _mouth(tmp_path / "like.png") > closed + 0.05
    # the reference's own mouth inside (engine.mouth), or the drawn one: the pictures differ there only
    assert main(base + [str(tmp_path / "drawn.png"), "--like", str(tmp_path / "open.png"), "--mouth-interior",
                        "drawn"]) == 0
    diff = np.abs(cv2.imread(str(tmp_path / "like.png")).astype(int) - cv2.imread(str(tmp_path / "drawn.png"))).max(2)
    ys, xs = np.nonzero(diff > 12)
    assert len(ys) > 20 and np.ptp(xs) < 0.3 * 256 and np.ptp(ys) < 0.2 * 256, (len(ys), np.ptp(xs), np.ptp(ys))
    capsys.readouterr()
    for extra, why in ((["--set", "grin=1"], "no component 'grin'"), (["--set", "smile=lots"], "NAME=VALUE"),
                       (["--head", "yaw=90"], "at most ±20"), (["--preset", "bored"], "no preset 'bored'")):
        assert main(base + [str(tmp_path / "bad.png")] + extra) == 1
        assert why in capsys.readouterr().err
    assert main(base + [str(tmp_path / "bad.gif")]) == 1
    assert "output must end in .png" in capsys.readouterr().err
    assert not list(tmp_path.glob("bad*")) and not list(tmp_path.glob(".*.tmp"))
