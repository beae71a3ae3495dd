"""Motion metrics (trainer/motion.py): the metric on synthetic series and landmarks, and a tiny end-to-end
run of ``slidergan evaluate --motion-only`` on a few frames of one held-out clip."""
import json
import math

import numpy as np
import pytest

from engine import geometry as geo
from trainer import motion as mo


def _face(gap: float = 2.0, lid: float = 1.0, iod: float = 10.0) -> np.ndarray:
    """A synthetic (478, 3) landmark array: outer eye corners ``iod`` apart, every inner-lip pair
    ``gap`` apart and every eyelid pair ``lid`` apart (vertically)."""
    lm = np.zeros((478, 3))
    lm[geo.EYE_CORNERS[0], :2] = (0.0, 0.0)
    lm[geo.EYE_CORNERS[1], :2] = (iod, 0.0)
    for k, (a, b) in enumerate(geo.LIP_PAIRS):
        lm[a, :2] = (2.0 + k * 0.5, 8.0)
        lm[b, :2] = (2.0 + k * 0.5, 8.0 + gap)
    for k, (a, b) in enumerate(geo.LID_PAIRS):
        lm[a, :2] = (k * 0.7, -0.5 * lid)
        lm[b, :2] = (k * 0.7, 0.5 * lid)
    return lm


def test_openings_of_synthetic_landmarks():
    assert mo.mouth_opening(_face(gap=2.0)) == pytest.approx(0.2)
    assert mo.mouth_opening(_face(gap=4.0)) > mo.mouth_opening(_face(gap=2.0))
    assert mo.eye_opening(_face(lid=1.5)) == pytest.approx(0.15)
    # divided by the inter-ocular distance: the same face twice as large measures the same
    assert mo.mouth_opening(_face(4.0, 2.0, 20.0)) == pytest.approx(mo.mouth_opening(_face(2.0, 1.0, 10.0)))
    assert mo.eye_opening(_face(4.0, 2.0, 20.0)) == pytest.approx(mo.eye_opening(_face(2.0, 1.0, 10.0)))
    assert np.allclose(mo.openings(_face(3.0, 0.5)), [0.3, 0.05])
    assert np.isnan(mo.openings(None)).all()


def test_mouth_opened_on_a_real_mesh_measures_larger():
    from engine.face import canonical_mesh
    lm = np.asarray(canonical_mesh(), np.float64)
    if lm.shape[0] < 478:  # irises: not used by the metric
        lm = np.concatenate([lm, np.zeros((478 - lm.shape[0], 3))])
    opened = lm.copy()
    lower = [b for _, b in geo.LIP_PAIRS]
    iod = mo.inter_ocular(lm)
    down = np.sign(lm[152, 1] - lm[10, 1])                 # forehead (10) to chin (152)
    opened[lower, 1] += 0.1 * iod * down                   # the lower inner lip moved towards the chin
    assert mo.mouth_opening(opened) > mo.mouth_opening(lm) + 0.05
    assert mo.eye_opening(opened) == pytest.approx(mo.eye_opening(lm))


def _series(mouth, eye):
    return np.stack([np.asarray(mouth, float), np.asarray(eye, float)], 1)


def test_follow_identical_constant_scaled_and_missing_frames():
    t = np.arange(30)
    mouth = 0.2 + 0.1 * np.sin(t / 3.0)
    eye = np.full(30, 0.3)
    eye[[7, 8, 20]] = 0.1                                  # blinks: dips below 60 % of the median
    d = _series(mouth, eye)
    same = mo.follow(d, d.copy())
    assert same["mouth_corr"] == pytest.approx(1.0) and same["mouth_ratio"] == pytest.approx(1.0)
    assert same["blink"] and same["eye_corr"] == pytest.approx(1.0) and same["eye_ratio"] == pytest.approx(1.0)
    assert same["frames"] == 30 and same["skipped"] == 0

    still = mo.follow(d, _series(np.full(30, 0.25), np.full(30, 0.3)))   # the copy row: does not move
    assert still["mouth_corr"] == 0.0 and still["mouth_ratio"] == 0.0
    assert still["eye_corr"] == 0.0 and still["eye_ratio"] == 0.0

    half = mo.follow(d, _series(0.05 + 0.5 * mouth, eye))
    assert half["mouth_corr"] == pytest.approx(1.0) and half["mouth_ratio"] == pytest.approx(0.5)
    assert mo.follow(d, _series(0.6 - mouth, eye))["mouth_corr"] == pytest.approx(-1.0)

    r = d.copy()
    r[[1, 2]] = np.nan                                     # no face in two result frames
    dd = d.copy()
    dd[5, 0] = np.nan                                      # nor in one driver frame
    gaps = mo.follow(dd, r)
    assert gaps["frames"] == 27 and gaps["skipped"] == 3 and gaps["mouth_corr"] == pytest.approx(1.0)

    calm = mo.follow(_series(mouth, np.full(30, 0.3) + 0.01 * np.sin(t)), d)
    assert not calm["blink"] and calm["eye_corr"] is None and calm["eye_ratio"] is None
    with pytest.raises(ValueError, match="length"):
        mo.follow(d, d[:10])


def test_blink_criterion_and_pearson_edge_cases():
    assert mo.blinks([0.3, 0.3, 0.29, 0.17, 0.31])          # 0.17 < 0.6 * 0.3
    assert not mo.blinks([0.3, 0.3, 0.29, 0.19, 0.31])      # 0.19 > 0.18
    assert not mo.blinks([0.3, np.nan])                     # too short to say
    assert math.isnan(mo.pearson([1, 2], [1, 2]))
    assert mo.pearson([1, 2, 3, 4], [5, 5, 5, 5]) == 0.0
    assert math.isnan(mo.amplitude_ratio([1, 1, 1], [1, 2, 3]))   # a still driver: no ratio


def test_asked_figures_are_the_amplitude_of_the_target_mesh_against_the_drivers():
    drv = _series([0.1, 0.3, 0.2, 0.5], [0.3, 0.1, 0.3, 0.3])
    asked = _series([0.05, 0.15, 0.10, 0.25], [0.3, 0.3, 0.3, 0.3])     # half the mouth's motion, still eyes
    f = mo.asked_figures(drv, asked, blink=True)
    assert f["asked_mouth_ratio"] == pytest.approx(0.5) and f["asked_eye_ratio"] == 0.0
    assert mo.asked_figures(drv, asked, blink=False)["asked_eye_ratio"] is None
    assert mo.asked_figures(drv, None, blink=True) == {"asked_mouth_ratio": None, "asked_eye_ratio": None}


def test_summary_averages_mouth_over_talking_clips_and_eyes_over_blinks():
    def pair(kind, talking, corr, ratio, blink, eye=None, source="clip frame 0"):
        return {"kind": kind, "talking": talking, "source": source, "rows": {"r": {
            "mouth_corr": corr, "mouth_ratio": ratio, "blink": blink, "eye_corr": eye,
            "eye_ratio": eye, "frames": 10, "skipped": 1, "asked_mouth_ratio": None if source == "d30" else 0.9,
            "asked_eye_ratio": 0.8 if blink else None}}}
    pairs = [pair("self", True, 0.8, 0.5, False), pair("cross", True, 0.4, 0.3, True, 0.6, "s5"),
             pair("cross", False, -1.0, 9.0, True, 0.2, "s5"), pair("cross", True, 0.9, 1.0, False, None, "d30")]
    s = mo.summarise(pairs, ["r"])
    # each held-out portrait on its own as well
    assert s["portrait s5"]["r"]["mouth_corr"] == pytest.approx(0.4) and s["portrait s5"]["r"]["blink_pairs"] == 2
    assert s["portrait d30"]["r"]["mouth_corr"] == pytest.approx(0.9) and s["portrait d30"]["r"]["pairs"] == 1
    pairs = pairs[:3]
    s = mo.summarise(pairs, ["r"])
    assert s["cross"]["r"]["mouth_corr"] == pytest.approx(0.4)       # the expression clip: eyes only
    assert s["cross"]["r"]["eye_corr"] == pytest.approx(0.4) and s["cross"]["r"]["blink_pairs"] == 2
    assert s["all"]["r"]["mouth_corr"] == pytest.approx(0.6) and s["all"]["r"]["pairs"] == 2
    assert s["all"]["r"]["mouth_corr_min"] == pytest.approx(0.4)
    assert s["self"]["r"]["blink_pairs"] == 0 and s["all"]["r"]["frames"] == 30 and s["all"]["r"]["skipped"] == 3
    lines = "\n".join(mo.report_lines({"protocol": mo.protocol(mo.MotionOptions(data="."), [], []),
                                       "summary": s, "figures": {}}, None))
    assert "no blink" in lines and "| r | 0.80" in lines and "portrait `s5` alone" in lines
    assert s["cross"]["r"]["asked_mouth_ratio"] == pytest.approx(0.9) and s["cross"]["r"]["asked_eye_ratio"] == 0.8
    assert "| 0.90 / 0.80 |" in lines and "| 0.90 / – |" in lines     # self: no blink


def test_a_run_on_training_clips_or_portraits_says_so(tmp_path):
    """``--motion-clips``/``--motion-portraits`` may name any media: a talking/ or driving/ clip counts as
    talking (its mouth is measured), and a report over identities the model trained on says so instead
    of calling them held out."""
    for rel in ("talking/sadtalker_wda_aoc.mp4", "talking/other.mp4", "driving/d3.mp4", "expressions/M030_x.mp4",
                "portraits/s5.jpg", "portraits/s0.jpg"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    clips = mo.driver_clips(tmp_path, ["talking/*.mp4", "driving/d3.mp4", "expressions/*.mp4"])
    assert [(p.name, t) for p, t in clips] == [("other.mp4", True), ("sadtalker_wda_aoc.mp4", True),
                                              ("d3.mp4", True), ("M030_x.mp4", False)]
    portraits = [(n, tmp_path / "portraits" / f"{n}.jpg", None, None) for n in ("s5", "s0")]
    opts = mo.MotionOptions(data=tmp_path)
    proto = mo.protocol(opts, clips, portraits)
    assert proto["training_identities"] == ["talking/other.mp4", "driving/d3.mp4", "expressions/M030_x.mp4",
                                            "portraits/s0"]
    self_re = {"protocol": "p", "identity": "i", "rows": {}}
    lines = "\n".join(mo.report_lines({"protocol": proto, "summary": {}, "figures": {}}, self_re))
    assert "NOT all held out" in lines and "`portraits/s0`" in lines and "held-out portraits" not in lines
    assert "## Self-reenactment (the driver clips" in lines and "held-out clips" not in lines
    held = mo.protocol(opts, clips[1:2], portraits[:1])
    assert held["training_identities"] == []
    assert "(held-out identities)" in "\n".join(mo.report_lines({"protocol": held, "summary": {}, "figures": {}},
                                                                  None))


@pytest.mark.slow
def test_evaluate_motion_only_on_a_few_frames(shared_data, tmp_path):
    """``slidergan evaluate --motion-only`` on 12 frames (every 3rd) of a held-out talking clip, self-driven
    and driving one held-out portrait, with the embedded default model."""
    from engine.animator import default_checkpoint
    from trainer import evaluate as ev
    from trainer.holdout import HELD_OUT_PORTRAITS, HELD_OUT_TALKING
    clip, portrait = "talking/sadtalker_wda_aoc.mp4", "portraits/s5.jpg"
    assert clip in HELD_OUT_TALKING and portrait in HELD_OUT_PORTRAITS
    models = [ev.load_models(default_checkpoint(), backend="auto", label="default")]
    out = tmp_path / "report"
    opts = ev.EvalOptions(data=shared_data, out=out, motion=True, motion_only=True, motion_frames=12,
                          motion_every=3, motion_size=192, motion_clips=[clip], motion_portraits=[portrait])
    metrics = ev.evaluate(models, ev.FaceModel, opts, log=lambda *a: None)

    saved = json.loads((out / "metrics.json").read_text())
    assert {"motion", "self_reenactment"} <= set(saved) and "transfer" not in saved
    mot = saved["motion"]
    assert mot["rows"] == ["copy", "warp-only, head p", "warp-only, mesh p", "default, head p", "default, mesh p"]
    assert [(p["kind"], p["source"]) for p in mot["pairs"]] == [("self", "sadtalker_wda_aoc frame 0"),
                                                                 ("cross", "s5")]
    for p in mot["pairs"]:
        rows = p["rows"]
        assert rows["copy"]["frames"] == 12 and rows["copy"]["skipped"] == 0
        # the source unchanged does not move: corr 0 by definition, ratio 0
        assert rows["copy"]["mouth_corr"] == 0.0 and rows["copy"]["mouth_ratio"] == 0.0
        # The warp along the mesh-fit p follows the driver's mouth. Measured (sadtalker, 12 frames, every
        # 3rd): corr 0.93 self / 0.85 cross at 192 px (0.91 / 0.83 at 256), ratio 0.55 / 0.58 (0.54 /
        # 0.63); the bounds 0.3 and 0.15 leave margins of > 0.5 and > 0.35 for other machines, mediapipe
        # builds and changes to the warp.
        warp = rows["warp-only, mesh p"]
        assert warp["mouth_corr"] > 0.3 and warp["mouth_ratio"] > 0.15, (p["kind"], warp)
        # what the renderer is asked to draw: nothing for the copy; the same mesh for both renderers of one p
        assert rows["copy"]["asked_mouth_ratio"] is None and warp["asked_mouth_ratio"] > 0.15
        assert rows["default, mesh p"]["asked_mouth_ratio"] == pytest.approx(warp["asked_mouth_ratio"])
        assert len(warp["result"]) == len(p["driver"]) == warp["frames"]
    summ = mot["summary"]
    assert summ["self"]["warp-only, mesh p"]["mouth_corr"] > 0.3 and summ["cross"]["copy"]["mouth_ratio"] == 0.0
    for name, fname in mot["figures"].items():
        assert (out / fname).is_file() and (out / fname).stat().st_size > 1000, name
    sr = saved["self_reenactment"]["rows"]
    assert sr["copy"]["ied"]["n"] == 11 and sr["copy"]["landmark_px"]["mean"] > 0   # the source frame left out
    assert sr["warp-only, mesh p"]["ied"]["mean"] >= 0 and sr["copy"]["ied_face"]["n"] == 11
    readme = (out / "README.md").read_text()
    assert "## Motion following" in readme and "## Self-reenactment" in readme
    assert "| warp-only, mesh p |" in readme and "](motion_copy.jpg)" in readme
    assert "## Same-video transfer" not in readme
    assert metrics["motion"]["summary"].keys() == saved["motion"]["summary"].keys()


def test_cli_parses_motion_options():
    import argparse

    from trainer import evaluate as ev
    p = argparse.ArgumentParser()
    ev.add_arguments(p)
    a = p.parse_args(["ck", "--data", "d", "-o", "r", "--motion", "--motion-frames", "5", "--motion-every", "2"])
    assert a.motion and not a.motion_only and a.motion_frames == 5 and a.motion_every == 2
    b = p.parse_args(["ck", "--data", "d", "-o", "r"])
    assert not b.motion and b.motion_every == 3 and b.motion_clips is None


def test_drive_params_gives_the_drivers_head_pose_relative_to_its_calibration():
    """The evaluation drives as render does: with the driver's head poses, the portrait's head follows
    the driver's turn from its calibration (its first second), not the driver's absolute pose."""
    from engine import pose as P
    from engine.face import canonical_mesh
    lm = canonical_mesh().astype(np.float64) * 220.0 + [160.0, 140.0, 0.0]
    h0 = P.measure(lm)
    fps, n = 30.0, 90
    times = np.arange(n) / fps
    yaw = np.where(times < 1.2, 6.0, 6.0 + 10.0)            # turned 6 deg throughout, 10 deg more after 1.2 s
    heads = [P.measure(P.apply_pose(lm, np.array([y, 0, 0, 0, 0, 0]), h0.centre, h0.iod, depth_gain=1.0))
             for y in yaw]
    raw = np.zeros((n, 4), np.float32)
    rest = np.full(4, 0.25, np.float32)
    p_only, none = mo.drive_params(raw, times, rest, fps)
    assert none is None and np.allclose(p_only, rest)
    p, poses = mo.drive_params(raw, times, rest, fps, heads=heads)
    assert poses.shape == (n, P.N_POSE) and np.allclose(p, rest)
    assert np.abs(poses[:30]).max() < 0.5                  # the calibration's own pose reads as unturned
    assert poses[-1, 0] == pytest.approx(10.0, abs=1.0)    # the turn after it: 10 deg of yaw
    assert np.abs(poses[-1, 1:3]).max() < 1.0


def test_blink_strips_show_the_drivers_deepest_blink_round_the_eyes():
    """The report's blink strips: the frames round the driver's deepest eye-opening dip, in time order and within
    the series; each frame cut to a square round the eyes (the whole frame where no face was found)."""
    eye = np.array([0.3, 0.31, 0.29, 0.3, 0.05, 0.1, 0.3, 0.3])
    picks = mo.blink_picks(eye, 5)
    assert picks == [2, 3, 4, 5, 6] and mo.blink_picks(eye[3:], 5) == [0, 1, 2, 3, 4]
    assert mo.blink_picks(np.full(3, np.nan)) == [] and mo.blink_picks(eye, 3) == [3, 4, 5]
    lm = np.zeros((478, 3))
    lm[33, :2], lm[263, :2] = (40, 50), (80, 50)
    frame = np.zeros((100, 120, 3), np.uint8)
    crop = mo.eye_crop(frame, lm)
    assert crop.shape[:2] == (56, 56)                       # 1.4 x the eye distance, centred between the eyes
    assert mo.eye_crop(frame, None) is frame


def test_an_expression_held_through_a_clip_shows_with_a_neutral_from_its_clip_at_rest(shared_data, tmp_path):
    """The held-expression table: the held-out ``W011_front_angry`` frowns from its first frame; calibrated on its
    first second the portrait (``d30``) shows little of the frown, calibrated on the same woman's clip at rest
    (render's ``--neutral-from``) it does: the brows' and eyes' shift points the driver's way. Absolute mode shows
    it too, and moves the portrait's brows and eyes when the driver is at rest. (Measured on these 10 sampled
    frames: cosine -0.25 / 0.67 / 0.65, length ratio 0.17 / 0.56 / 0.75; driven by the clip at rest, a shift of
    0.051 / 0.051 / 0.106 eye distances.)"""
    from engine.animator import default_checkpoint, face_model_for, load_models
    clip = shared_data / "expressions" / "W011_front_angry_level3_001.mp4"
    assert mo.neutral_clip_of(clip).name == "W011_front_neutral_level1_001.mp4"
    assert mo.neutral_clip_of(mo.neutral_clip_of(clip)) is None
    models = load_models(default_checkpoint())
    opts = mo.MotionOptions(data=shared_data, max_frames=10, output_size=192)
    portraits = mo._portrait_sources(shared_data, ["portraits/d30.jpg"])
    held = mo.run_held_expression(models, face_model_for(models), opts, [(clip, False)], portraits, tmp_path,
                                  log=lambda *a: None)
    first, at_rest, absolute = (held["summary"][row] for row in mo.HELD_ROWS)
    print("held", first, at_rest, absolute)
    assert first["pairs"] == at_rest["pairs"] == absolute["pairs"] == 1
    assert at_rest["cos"] > 0.5 and at_rest["cos"] > first["cos"] + 0.3
    assert at_rest["ratio"] > 1.5 * first["ratio"]
    assert absolute["at_rest_shift"] > 1.3 * at_rest["at_rest_shift"]
    # what the warp was asked to draw points the driver's way too, and only with a neutral at rest
    assert at_rest["asked_cos"] > 0.5 and at_rest["asked_cos"] > first["asked_cos"] + 0.3
    assert at_rest["asked_ratio"] > 1.5 * first["asked_ratio"]
    assert (tmp_path / held["figure"]).stat().st_size > 1000
    lines = "\n".join(mo.held_expression_lines(held))
    assert "| neutral: the clip at rest (--neutral-from) |" in lines and "| no neutral (--mode absolute) |" in lines
    assert "held_expression.jpg" in lines
