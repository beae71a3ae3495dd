"""`slidergan render` (tiny random model, synthetic faces, tracks with audio) and the drivers."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests import streamkit as kit

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import cv2
    d = tmp_path_factory.mktemp("render")
    ck = kit.tiny_checkpoint(d / "ck")
    models = kit.load_tiny(ck)
    portrait = d / "portrait.png"
    cv2.imwrite(str(portrait), kit.synth_portrait(0)[:, :, ::-1])
    return {"dir": d, "ck": ck, "models": models, "portrait": portrait}


def _streams(path):
    import av
    with av.open(str(path)) as c:
        out = {}
        for s in c.streams:
            dur = float(s.duration * s.time_base) if s.duration is not None else None
            n = s.frames
            if s.type == "video":
                out["video"] = {"duration": dur, "frames": n, "rate": float(s.average_rate),
                                "size": (s.codec_context.width, s.codec_context.height)}
            elif s.type == "audio":
                out["audio"] = {"duration": dur, "rate": s.rate}
        return out


def test_track_with_audio_renders_in_sync(env, tmp_path):
    """A 25 fps speech track with a 2 s audio file, rendered at 30 fps: audio and video durations
    agree within one frame, the frame count follows the track's duration, nothing is left over."""
    from streaming.render import render
    wav = kit.write_wav(tmp_path / "speech.wav", kit.tone(2.3))   # longer audio is cut to the track
    tr = kit.speech_track(tmp_path / "speech.npz", seconds=2.0, fps=25, audio=wav)
    out = tmp_path / "out" / "talk.mp4"
    res = render(env["portrait"], tr, out, models=env["models"], size=256, fps=30, progress=False)
    assert out.exists() and res.frames == 60
    s = _streams(out)
    assert s["video"]["frames"] == 60 and s["video"]["size"] == (256, 256)
    assert abs(s["video"]["duration"] - 2.0) < 1e-6
    assert abs(s["audio"]["duration"] - s["video"]["duration"]) <= 1 / 30, s
    assert abs(res.audio_duration - res.duration) < 1e-6
    assert sorted(p.name for p in out.parent.iterdir()) == ["talk.mp4"]   # no temp file left
    # the face moves with the speech parameters: frames differ from each other
    from engine.video import read_frames
    frames = [f for f, _ in read_frames(out)]
    assert len(frames) == 60
    diffs = [np.abs(frames[i].astype(float) - frames[i + 7]).mean() for i in range(0, 50, 7)]
    assert max(diffs) > 0.5


def test_video_driver_side_by_side_keeps_its_audio(env, tmp_path):
    from streaming.render import render
    frames = kit.synth_driving_frames(45, w=320, h=240, face=200)
    drv = kit.write_video(tmp_path / "drive.mp4", frames, fps=30, audio=kit.tone(1.5))
    out = tmp_path / "sbs.mp4"
    res = render(env["portrait"], drv, out, models=env["models"], size=256, side_by_side=True,
                 mode="relative", progress=False)
    s = _streams(out)
    assert s["video"]["size"] == (256 + 342, 256) and s["video"]["frames"] == 45
    assert abs(s["audio"]["duration"] - s["video"]["duration"]) <= 1 / 30
    assert res.faces_missing == 0


def test_expression_scale_zero_renders_the_portrait_still(env, tmp_path, capsys):
    """render --expression-scale 0: a speech track no longer moves the face (the same track moves it at
    1, test_track_with_audio_renders_in_sync); a scale out of range is one clear line."""
    from engine.cli import main
    from engine.video import read_frames
    from streaming.render import render
    tr = kit.speech_track(tmp_path / "speech.npz", seconds=1.0, fps=25)
    out = tmp_path / "still.mp4"
    # (x264's superfast preset lets a still, noisy frame drift by 1-2 grey levels over a second; medium not)
    render(env["portrait"], tr, out, models=env["models"], size=128, progress=False, no_audio=True,
           preset="medium", expression_scale=0.0)
    frames = [f.astype(float) for f, _ in read_frames(out)]
    moved = render(env["portrait"], tr, tmp_path / "moved.mp4", models=env["models"], size=128, progress=False,
                   no_audio=True, preset="medium").path
    moving = [f.astype(float) for f, _ in read_frames(moved)]
    still = max(np.abs(f - frames[0]).mean() for f in frames)
    assert still < 0.3 < max(np.abs(f - moving[0]).mean() for f in moving), still
    with pytest.raises(SystemExit):
        main(["render", "--source", str(env["portrait"]), "--driver", str(tr), "-o", str(tmp_path / "x.mp4"),
              "--expression-scale", "4"])
    assert "expression scale must be a number from 0 (no motion) to 3" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_neutral_at_takes_the_drivers_neutral_from_that_time(env, tmp_path, capsys):
    """--neutral-at T: the driver's neutral from its faces from T s on, not its first second; 'auto': from its
    relaxed faces over the whole video. A driver that smiles with its mouth open through its first 1.3 s, then
    talks: calibrated at 0 s the render is the default's (the same frames make the same neutral), at 1.5 s
    another, auto near that one; bad uses are one line each."""
    import av

    from engine.cli import main
    held = kit.synth_driving_frames(2, period=4)[1]            # mouth open and smiling (k = 1)
    frames = [held] * 40 + kit.synth_driving_frames(50, period=30)
    drv = kit.write_video(tmp_path / "drive.mp4", frames, fps=30)

    def args(driver, out, *extra):
        # lossless H.264: frames one grey level apart in a few pixels (float noise of two calibrations) stay
        # that close, where the lossy encoder's rate control carries them through the clip
        return ["render", "--source", str(env["portrait"]), "--driver", str(driver), "-o", str(out), "--checkpoint",
                str(env["ck"]), "--backend", "torch", "--size", "128", "--quiet", "--motion", "expression",
                "--crf", "0", *extra]

    def rendered(name, *extra):
        out = tmp_path / f"{name}.mp4"
        assert main(args(drv, out, *extra)) == 0, capsys.readouterr().err
        with av.open(str(out)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)

    first, at0, later = rendered("first"), rendered("at0", "--neutral-at", "0"), rendered("later", "--neutral-at", "1.5")
    auto = rendered("auto", "--neutral-at", "auto")
    assert first.shape == at0.shape == later.shape == auto.shape and len(first) == 90
    assert np.abs(at0 - first).mean() < 0.05                     # the same neutral: the same video
    assert np.abs(later - first).mean() > 10 * np.abs(at0 - first).mean() + 0.2   # another neutral
    # auto: the relaxed faces of the whole video, which talks after its first 1.3 s: near the later neutral
    assert np.abs(auto - later).mean() < 0.6 * np.abs(auto - first).mean()
    for bad, needles in ((["--neutral-at", "9"], ("--neutral-at 9 is past the end", "drive.mp4")),
                          (["--neutral-at", "-1"], ("--neutral-at must be a time", "or 'auto'")),
                          (["--neutral-at", "soon"], ("--neutral-at must be a time", "'soon'")),
                          (["--neutral-at", "1", "--mode", "absolute"], ("needs --mode relative",))):
        out = tmp_path / "bad.mp4"
        _one_line_error(main(args(drv, out, *bad)), capsys.readouterr().err, *needles)
        assert not out.exists()
    tr = kit.speech_track(tmp_path / "t.npz", seconds=0.5, fps=30)
    _one_line_error(main(args(tr, tmp_path / "bad.mp4", "--neutral-at", "0.2")), capsys.readouterr().err,
                    "t.npz is a parameter track")
    # no face at the chosen moment (the video ends on 2.5 s of an empty room): said, nothing written
    away = kit.write_video(tmp_path / "away.mp4", frames[:45] + [np.full_like(held, 200)] * 75, fps=30)
    out = tmp_path / "away-out.mp4"
    rc = main(args(away, out, "--neutral-at", "2"))
    _one_line_error(rc, capsys.readouterr().err, "no face in the", "from 2 s of", "another --neutral-at")
    assert not out.exists()


def test_neutral_from_takes_the_drivers_neutral_from_a_photo_or_a_video(env, tmp_path, capsys):
    """--neutral-from FILE: the driver's neutral expression from a photo or a video of its face at rest, for a
    driver that holds an expression from its first frame (a smile with the mouth open through its first 1.3 s):
    calibrated on its first second the portrait shows none of that smile and an odd face when the driver is
    calm; calibrated on the calm face, the smile shows and the calm driver gives the portrait at rest. The head's
    neutral pose is still the video's (a photo framed otherwise moves no head); bad uses are one line each."""
    import av
    import cv2

    from engine.cli import main
    held = kit.synth_driving_frames(2, period=4)[1]            # mouth open and smiling (k = 1)
    talk = kit.synth_driving_frames(50, period=30)             # frames 0, 15, 30, 45: calm (k = 0)
    drv = kit.write_video(tmp_path / "drive.mp4", [held] * 40 + talk, fps=30)
    calm = talk[0]
    photo, moved = tmp_path / "calm.png", tmp_path / "moved.png"
    cv2.imwrite(str(photo), calm[:, :, ::-1])
    cv2.imwrite(str(moved), np.roll(calm, 60, axis=1)[:, :, ::-1])     # the same face elsewhere in the picture
    video = kit.write_video(tmp_path / "calm.mp4", [calm] * 20, fps=30)

    def args(driver, out, *extra):
        return ["render", "--source", str(env["portrait"]), "--driver", str(driver), "-o", str(out), "--checkpoint",
                str(env["ck"]), "--backend", "torch", "--size", "128", "--quiet", "--crf", "0", *extra]

    def rendered(name, *extra):
        out = tmp_path / f"{name}.mp4"
        assert main(args(drv, out, *extra)) == 0, capsys.readouterr().err
        with av.open(str(out)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)

    def gap(a, b):
        return float(np.abs(a - b).mean())

    first = rendered("first", "--motion", "expression")
    from_photo = rendered("photo", "--motion", "expression", "--neutral-from", str(photo))
    from_video = rendered("video", "--motion", "expression", "--neutral-from", str(video))
    rest, calm_at = first[5], [40, 55, 70, 85]     # the held smile calibrated as the neutral: the portrait at rest
    held_first, held_photo = gap(first[10:40], rest), gap(from_photo[10:40], rest)
    calm_first, calm_photo = (np.mean([gap(r[i], rest) for i in calm_at]) for r in (first, from_photo))
    assert held_first < 0.1 * held_photo               # the smile shows only from the calm face's neutral
    assert calm_photo < 0.6 * calm_first               # the calm driver: nearer the portrait at rest
    assert gap(from_video, from_photo) < 0.7 * gap(from_video, first)   # a video of the face at rest: as the photo
    # the head's neutral pose from the driver video: the same face photographed elsewhere turns no head
    head = rendered("head", "--renderer", "warp-only", "--neutral-from", str(photo))
    head_moved = rendered("head-moved", "--renderer", "warp-only", "--neutral-from", str(moved))
    # (taken from the photo instead: 19.9 against 8.4 between the first two)
    assert gap(head_moved, head) < 0.3 * gap(head, rendered("head-first", "--renderer", "warp-only"))
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\x00not an image, not a video" * 40)
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.full((240, 320, 3), 200, np.uint8))
    tr = kit.speech_track(tmp_path / "t.npz", seconds=0.5, fps=30)
    for driver, bad, needles in (
            (drv, ["--neutral-from", str(tmp_path / "nobody.png")], ("--neutral-from: no such file", "nobody.png")),
            (drv, ["--neutral-from", str(photo), "--neutral-at", "1"], ("--neutral-from and --neutral-at", "give one")),
            (drv, ["--neutral-from", str(photo), "--mode", "absolute"], ("needs --mode relative",)),
            (drv, ["--neutral-from", str(garbage)],
             ("--neutral-from", "garbage.jpg is neither an image", "nor a video")),
            (drv, ["--neutral-from", str(empty)], ("no face in the 1 frames", "empty.png")),
            (tr, ["--neutral-from", str(photo)], ("--neutral-from calibrates", "t.npz is a parameter track"))):
        out = tmp_path / "bad.mp4"
        _one_line_error(main(args(driver, out, *bad)), capsys.readouterr().err, *needles)
        assert not out.exists()


def test_webm_and_gif_outputs(env, tmp_path, capsys):
    """A .webm is VP9 + Opus (a browser plays it) with the sound as long as the picture; a .gif has every frame
    (their delays adding up to the track's length) and no sound; both show the frames the .mp4 shows. Codec
    options that do not fit the format, and a format render cannot write, are one line and no file."""
    import av

    from engine.cli import main
    from engine.video import read_frames
    from streaming.render import render
    wav = kit.write_wav(tmp_path / "speech.wav", kit.tone(1.2))
    tr = kit.speech_track(tmp_path / "speech.npz", seconds=1.2, fps=25, audio=wav)
    made = {}
    for ext in (".mp4", ".webm", ".gif"):
        res = render(env["portrait"], tr, tmp_path / f"talk{ext}", models=env["models"], size=128, progress=False,
                     crf=0 if ext == ".mp4" else None)
        assert res.frames == 30, ext
        made[ext] = np.stack([f for f, _ in read_frames(res.path)]).astype(np.float32)
        assert made[ext].shape == (30, 128, 128, 3), ext
    with av.open(str(tmp_path / "talk.webm")) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name) == ("vp9", "opus")
        sound = sum(f.samples for f in c.decode(audio=0)) / a.rate
    assert abs(sound - 1.2) <= 0.03, sound
    with av.open(str(tmp_path / "talk.gif")) as c:
        assert [st.type for st in c.streams] == ["video"]
        times = [float(f.time) for f in c.decode(video=0)]
    assert times[0] == 0 and abs(times[-1] - 29 / 25) < 0.011
    # the same frames, in order: each one's change from the first follows the lossless .mp4's (a GIF's 255
    # colours and dither cost a few grey levels on the tiny model's noisy faces)
    ref = made[".mp4"]
    change = np.abs(ref - ref[:1]).mean(axis=(1, 2, 3))
    for ext in (".webm", ".gif"):
        err = np.abs(made[ext] - ref).mean(axis=(1, 2, 3))
        own = np.abs(made[ext] - made[ext][:1]).mean(axis=(1, 2, 3))
        assert err.max() < 8 and np.corrcoef(own, change)[0, 1] > 0.9, (ext, err.max(), own, change)

    def fails(out, *extra):
        rc = main(["render", "--source", str(env["portrait"]), "--driver", str(tr), "--checkpoint", str(env["ck"]),
                   "--backend", "torch", "--size", "128", "--quiet", "-o", str(out), *extra])
        err = capsys.readouterr().err
        assert rc == 1 and len(err.strip().splitlines()) == 1 and not out.exists(), err
        return err
    assert "a .gif holds no sound" in fails(tmp_path / "x.gif", "--audio", str(wav))
    assert "--crf must be 0 (best) to 63 for libvpx-vp9, not 70" in fails(tmp_path / "x.webm", "--crf", "70")
    assert "--crf must be 0 (best) to 51 for libx264, not -3" in fails(tmp_path / "x.mp4", "--crf", "-3")
    assert "--preset is x264's" in fails(tmp_path / "x.webm", "--preset", "medium")
    assert "output must end in .mp4, .mov, .mkv, .webm or .gif, got x.avi" in fails(tmp_path / "x.avi")


def test_a_portrait_with_several_faces_animates_the_one_asked_for(env, tmp_path, capsys, caplog):
    """Two faces in one photo: the largest by default (the command's warning says where each is and how to choose
    another), --source-face X,Y the one at that pixel, or the nearest where none holds it; a bad pixel is one line."""
    import cv2

    from engine.animator import Animator
    from engine.cli import main
    large, small = kit.synth_portrait(0, size=320), kit.synth_portrait(3, size=240)
    photo = np.full((320, 600, 3), 200, np.uint8)
    photo[:, :320], photo[40:280, 340:580] = large, small
    path = tmp_path / "two.png"
    cv2.imwrite(str(path), photo[:, :, ::-1])
    anim = Animator(env["models"], output_size=128)

    def centre_x(**kw):
        info = anim.set_source(path, **kw)
        assert info.n_faces == 2
        said.append(info.message)
        return float(info.landmarks[:, 0].mean())
    said = []
    assert centre_x() < 320                                     # the largest, said with where each face is
    assert re.search(r"2 faces in .*two.png, centred at 1\d\d,\d+ and 4\d\d,\d+ \(x,y\); aligned the largest",
                     said[0]), said
    assert centre_x(face=(460, 160)) > 340                      # the one at that pixel
    assert centre_x(face=(595, 5)) > 340 and centre_x(face=(5, 5)) < 320   # the nearest
    base = ["render", "--source", str(path), "--checkpoint", str(env["ck"]), "--backend", "torch", "--size", "128",
            "--quiet", "--driver", str(kit.speech_track(tmp_path / "t.npz", seconds=0.3, fps=25)), "-o"]
    caplog.clear()
    assert main(base + [str(tmp_path / "a.mp4")]) == 0          # the command says how to choose another
    assert "aligned the largest: --source-face X,Y animates the one at that pixel" in caplog.text, caplog.text
    caplog.clear()
    assert main(base + [str(tmp_path / "b.mp4"), "--source-face", "460,160"]) == 0
    assert "aligned the one at 460,160" in caplog.text and "--source-face X,Y" not in caplog.text, caplog.text
    from engine.video import read_frames
    first = [next(iter(read_frames(tmp_path / f"{n}.mp4")))[0].astype(float) for n in "ab"]
    assert np.abs(first[0] - first[1]).mean() > 10              # another face
    assert main(base + [str(tmp_path / "c.mp4"), "--source-face=-1,2"]) == 1
    assert "--source-face wants a pixel of the portrait" in capsys.readouterr().err


def test_render_fails_cleanly(env, tmp_path):
    from streaming.render import render
    blank = [np.full((240, 320, 3), 120, np.uint8)] * 10
    drv = kit.write_video(tmp_path / "noface.mp4", blank, fps=30)
    out = tmp_path / "x.mp4"
    with pytest.raises(ValueError, match="no face"):
        render(env["portrait"], drv, out, models=env["models"], size=128, progress=False)
    assert list(tmp_path.glob("*x.mp4*")) == []   # neither output nor temporary
    with pytest.raises(FileNotFoundError):
        render(env["portrait"], tmp_path / "missing.mp4", out, models=env["models"], progress=False)
    with pytest.raises(ValueError, match=".mp4"):
        render(env["portrait"], drv, tmp_path / "x.gif", models=env["models"], progress=False)


def test_generation_workers_put_the_frames_back_in_order_and_stop_on_a_failure(env, tmp_path, monkeypatch):
    """Two workers generate batches side by side; the batches that finish first (here every other one is slowed)
    are written in the driver's order all the same: the same video, frame for frame, as one worker writes. A
    worker that fails stops the render with its error at once, and leaves no output, whether the other worker is
    busy or waiting for the driver."""
    import os
    import threading
    import time

    import engine.animator as animator
    import streaming.render as R
    from engine.video import read_frames
    tr = kit.speech_track(tmp_path / "speech.npz", seconds=1.0, fps=30)
    base = animator.Animator.animate_batch
    calls, lock = [0], threading.Lock()

    def uneven(self, params, poses=None, mouths=None):
        with lock:
            calls[0] += 1
            k = calls[0]
        if k % 2:
            time.sleep(0.05)       # the odd batches finish after the even ones that follow them
        return base(self, params, poses, mouths)
    outs = {}
    for workers in (1, 2):
        monkeypatch.setattr(R, "GENERATION_WORKERS", workers)
        monkeypatch.setattr(animator.Animator, "animate_batch", uneven if workers == 2 else base)
        out = tmp_path / f"w{workers}.mp4"
        res = R.render(env["portrait"], tr, out, models=env["models"], size=128, batch=2, progress=False,
                       no_audio=True)
        assert res.frames == 30
        outs[workers] = [f for f, _ in read_frames(out)]
    assert R.generation_workers() == min(2, len(os.sched_getaffinity(0)))
    assert calls[0] == 15 and len(outs[2]) == 30
    assert all(np.array_equal(a, b) for a, b in zip(outs[1], outs[2]))
    assert any(not np.array_equal(outs[1][i], outs[1][i + 1]) for i in range(29))   # the order shows

    def failing(self, params, poses=None, mouths=None):
        with lock:
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("generator failed")
        return base(self, params, poses, mouths)
    monkeypatch.setattr(animator.Animator, "animate_batch", failing)
    from streaming.drivers import DriverMix
    mix_value = DriverMix.value

    def slow_value(self, t):
        time.sleep(0.01)           # a driver slower than generation: the other worker waits on an empty queue
        return mix_value(self, t)
    for slow in (False, True):
        monkeypatch.setattr(DriverMix, "value", slow_value if slow else mix_value)
        calls[0] = 0
        raised = []

        def run():
            try:
                R.render(env["portrait"], tr, tmp_path / "f.mp4", models=env["models"], size=128, batch=2,
                         progress=False, no_audio=True)
            except Exception as e:
                raised.append(e)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(30)
        assert not t.is_alive(), "the render waits for ever after a worker failed"
        assert len(raised) == 1 and "generator failed" in str(raised[0]), raised
        assert not list(tmp_path.glob("*f.mp4*"))


def test_full_framing_keeps_the_whole_photo_and_moves_its_face(env, tmp_path, capsys):
    """--framing full: the whole photo, its aspect kept, at its own size (odd sides made even for H.264) or
    with --size as its long side; far from the face the photo's pixels as they were, the face moving; a
    size out of range is one line before anything loads."""
    import cv2

    from engine.cli import main
    from engine.video import read_frames
    from streaming.render import render
    face = kit.synth_portrait(0, size=240)
    photo = np.zeros((331, 301, 3), np.uint8)                     # odd sides, taller than wide
    photo[:] = np.linspace(40, 220, 301)[None, :, None].astype(np.uint8)   # a background with structure
    photo[30:270, 30:270] = face
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), photo[:, :, ::-1])
    tr = kit.speech_track(tmp_path / "speech.npz", seconds=1.0, fps=25)
    out = render(path, tr, tmp_path / "full.mp4", models=env["models"], framing="full", progress=False,
                 no_audio=True, preset="medium").path
    assert _streams(out)["video"]["size"] == (300, 330)
    frames = [f.astype(float) for f, _ in read_frames(out)]
    ref = cv2.resize(photo, (300, 330), interpolation=cv2.INTER_AREA).astype(float)
    below = (slice(290, 330), slice(0, 300))                       # the strip under the face, far from it
    assert np.abs(frames[0][below] - ref[below]).mean() < 3.0
    assert max(np.abs(f[below] - frames[0][below]).mean() for f in frames) < 0.5
    moved = max(np.abs(f[60:240, 60:240] - frames[0][60:240, 60:240]).mean() for f in frames)
    assert moved > 0.5, moved
    out = render(path, tr, tmp_path / "small.mp4", models=env["models"], framing="full", size=160,
                 progress=False, no_audio=True).path
    assert _streams(out)["video"]["size"] == (144, 160)      # 301 x 160 / 331 = 145.5 -> 145, made even
    rc = main(["render", "--source", str(path), "--driver", str(tr), "-o", str(tmp_path / "x.mp4"),
               "--checkpoint", str(tmp_path / "no-such-model"), "--framing", "full", "--size", "90000"])
    _one_line_error(rc, capsys.readouterr().err, "the output size must be 16 to 4096 pixels, not 90000")
    assert not (tmp_path / "x.mp4").exists()


def test_render_cli(env, tmp_path):
    from engine.cli import main
    tr = kit.speech_track(tmp_path / "t.npz", seconds=0.5, fps=30)
    out = tmp_path / "cli.mp4"
    rc = main(["render", "--source", str(env["portrait"]), "--driver", str(tr), "-o", str(out),
               "--checkpoint", str(env["ck"]), "--backend", "torch", "--size", "128", "--quiet",
               "--source-mouth", "own"])
    assert rc == 0 and _streams(out)["video"]["frames"] == 15 and "audio" not in _streams(out)
    rc = main(["render", "--source", str(tmp_path / "nope.png"), "--driver", str(tr), "-o", str(out),
               "--checkpoint", str(env["ck"]), "--backend", "torch"])
    assert rc == 1


def _raw_track(path, times, fps, n_speech=10):
    """A track file written directly, past ParamTrack's checks, as a foreign or damaged file would be."""
    from engine.tracks import FORMAT
    n = len(times)
    np.savez(path, format=np.array(FORMAT), version=np.array(1), fps=np.array(float(fps)),
             times=np.asarray(times, np.float64), speech=np.zeros((n, n_speech), np.float32),
             speech_names=np.array([f"s{i}" for i in range(n_speech)]), n_expression=np.array(30),
             audio=np.array(""), audio_offset=np.array(0.0), meta=np.array("{}"))
    return path


def _damage_weights(ck_dir):
    """Overwrite a checkpoint's tensor bytes with 0xFF (NaN in every float)."""
    import struct
    f = ck_dir / "model.safetensors"
    with open(f, "r+b") as h:
        start = 8 + struct.unpack("<Q", h.read(8))[0]
        h.seek(start)
        h.write(b"\xff" * (f.stat().st_size - start))


def test_render_cli_runs_an_exports_int8_copies(env, tmp_path, capsys):
    """--precision int8: the quantised copies of an export made with --int8 render the same frames (close,
    not exact); asked of a folder without them, one line that says how to make them, and no output."""
    from engine.cli import main
    import av

    from exporters.onnx import export_onnx
    export_onnx(env["ck"], tmp_path / "export", verify=False, int8=True)
    tr = kit.speech_track(tmp_path / "t.npz", seconds=0.5, fps=30)
    base = ["render", "--source", str(env["portrait"]), "--driver", str(tr), "--size", "128", "--quiet"]
    frames = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / f"{precision}.mp4"
        assert main(base + ["-o", str(out), "--checkpoint", str(tmp_path / "export"), "--precision", precision]) == 0
        with av.open(str(out)) as c:
            frames[precision] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames["int8"]) == len(frames["fp32"]) == 15
    diff = np.abs(np.stack(frames["int8"]).astype(int) - np.stack(frames["fp32"])).mean()
    assert 0 < diff < 8, diff          # the quantised copies ran: close, not the same
    out = tmp_path / "none.mp4"
    rc = main(base + ["-o", str(out), "--checkpoint", str(env["ck"]), "--precision", "int8"])
    _one_line_error(rc, capsys.readouterr().err, "int8")
    assert not out.exists()


def _one_line_error(rc, err, *needles, command="render"):
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1, err
    assert lines[0].startswith(f"slidergan {command}: error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, err)


def test_render_cli_failures_are_one_line_and_write_nothing(env, tmp_path, capsys):
    """Bad tracks, a bad --fps, an unwritable output, a damaged checkpoint, a failure half-way: one line
    on stderr saying what and where, exit 1, no output and no temporary file, an existing output kept."""
    import shutil

    from engine.cli import main
    base = ["render", "--source", str(env["portrait"]), "--checkpoint", str(env["ck"]), "--backend", "torch",
            "--size", "128", "--quiet"]
    out = tmp_path / "out" / "talk.mp4"
    out.parent.mkdir()
    out.write_bytes(b"precious")  # an earlier result: a failing run must leave it as it is
    ok = kit.speech_track(tmp_path / "ok.npz", seconds=0.5, fps=25)
    wav = kit.write_wav(tmp_path / "a.wav", kit.tone(0.5))

    def run(*args):
        rc = main(base + list(args))
        return rc, capsys.readouterr().err

    slow = _raw_track(tmp_path / "slow.npz", [0.0, 1.0], 1e-9)  # fps 1e-9: used to divide by ~0
    _one_line_error(*run("--driver", str(slow), "-o", str(out)), "slow.npz", "fps 1e-09 is outside 1..240")
    _one_line_error(*run("--driver", str(ok), "--fps", "1e-9", "-o", str(out)), "--fps is 1e-09 fps", "1 to 240")
    # A track spanning 1e6 s, with --audio: refused before the 179 GiB of audio were allocated.
    long = _raw_track(tmp_path / "long.npz", [0.0, 1e6], 25.0)
    _one_line_error(*run("--driver", str(long), "--audio", str(wav), "-o", str(out)),
                    "long.npz", "span 1e+06 s", "at most 86400 s")
    # Outputs that cannot be written: said before any work, no folder left behind.
    if Path("/proc/self").exists():
        _one_line_error(*run("--driver", str(ok), "-o", "/proc/x/out.mp4"), "cannot write the output /proc/x/out.mp4")
        assert not Path("/proc/x").exists()
    (tmp_path / "afile").write_text("x")
    _one_line_error(*run("--driver", str(ok), "-o", str(tmp_path / "afile" / "new" / "o.mp4")), "afile is not a folder")
    (tmp_path / "folder.mp4").mkdir()
    _one_line_error(*run("--driver", str(ok), "-o", str(tmp_path / "folder.mp4")), "folder.mp4 is a folder")
    # A checkpoint whose weights were overwritten (it used to render garbage and exit 0).
    bad = tmp_path / "bad-ck"
    shutil.copytree(env["ck"], bad)
    _damage_weights(bad)
    _one_line_error(*run("--driver", str(ok), "-o", str(out), "--checkpoint", str(bad)),
                    "bad-ck/model.safetensors is corrupt")
    # Failing half-way (no face in the driver video): the temporary is removed, the old output kept.
    drv = kit.write_video(tmp_path / "noface.mp4", [np.full((240, 320, 3), 120, np.uint8)] * 10, fps=30)
    _one_line_error(*run("--driver", str(drv), "-o", str(out)), "no face")
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in out.parent.iterdir()) == ["talk.mp4"]
    assert not list(tmp_path.glob("**/.*.tmp")) and not list(tmp_path.glob("**/.*.probe"))
    # --debug (global, or after the command) shows the traceback instead.
    from engine.tracks import TrackError
    with pytest.raises(TrackError, match="outside 1..240"):
        main(["--debug"] + base + ["--driver", str(slow), "-o", str(out)])
    with pytest.raises(TrackError, match="outside 1..240"):
        main(base + ["--driver", str(slow), "-o", str(out), "--debug"])
    assert out.read_bytes() == b"precious"


def test_render_length_is_checked_before_audio_is_allocated(env, tmp_path, monkeypatch):
    """The render's length is bounded (MAX_SECONDS, here lowered to 2 s) before frames or audio are
    sized; --max-seconds renders a part, and only that part's audio is decoded."""
    import streaming.media as media
    import streaming.render as R
    monkeypatch.setattr(R, "MAX_SECONDS", 2.0)
    asked = []
    real = media.load_audio

    def spy(path, rate=48000, channels=2, start=0.0, duration=None):
        asked.append(duration)
        return real(path, rate, channels, start, duration)

    monkeypatch.setattr(media, "load_audio", spy)
    wav = kit.write_wav(tmp_path / "a.wav", kit.tone(5.0))
    tr = kit.speech_track(tmp_path / "t.npz", seconds=4.0, fps=25)
    out = tmp_path / "o.mp4"
    with pytest.raises(ValueError, match=r"t\.npz lasts 4 s; render writes at most 2 s .*--max-seconds"):
        R.render(env["portrait"], tr, out, audio=wav, models=env["models"], size=128, progress=False)
    assert asked == [] and not out.exists()
    res = R.render(env["portrait"], tr, out, audio=wav, models=env["models"], size=128, progress=False,
                   max_seconds=0.5)
    assert res.frames == 12 and asked == [pytest.approx(res.duration)]
    assert res.audio_duration == pytest.approx(res.duration)
    for bad in (float("nan"), -1.0, 0.0):
        with pytest.raises(ValueError, match="--max-seconds must be a positive"):
            R.render(env["portrait"], tr, out, models=env["models"], progress=False, max_seconds=bad)


# ---------------------------------------------------------------------------------------- drivers
class _FakeTracker:
    """Stands in for FaceTracker: frames are dicts saying whether there is a face."""

    def __init__(self, size):
        self.size = size

    def process(self, frame, t):
        from engine.face import STATUS_NO_FACE, STATUS_OK, AlignedFace
        if frame is None:
            return AlignedFace(None, None, None, None, self.size, 0, status=STATUS_NO_FACE, t=t)
        crop = np.full((self.size, self.size, 3), int(frame), np.uint8)
        return AlignedFace(crop, None, None, np.eye(2, 3), self.size, status=STATUS_OK, t=t)

    def close(self):
        pass


def _driver(mode="absolute", **kw):
    from streaming.drivers import FaceDriver
    n = 4

    def regress(crop):           # a crop's grey level -> p
        return np.full(n, crop[0, 0, 0] / 255.0, np.float32)
    kw.setdefault("person_check", False)     # flat grey crops are nobody: the tests that want one give their own
    return FaceDriver(regress, n, 8, mode=mode, rest=np.array([0.1, 0.2, 0.3, 0.4]), tracker=_FakeTracker(8),
                      **kw)


def test_the_neutral_is_taken_from_the_calm_frames():
    """A driver that talks from its first frame: the neutral comes from the frames whose mouth is
    least open, not from the median of all (which would be half open), and calibration waits for
    calib_s seconds of faces."""
    from streaming.drivers import neutral_of
    rng = np.random.default_rng(0)
    mouth = rng.uniform(0.0, 0.4, 40)
    p = np.stack([mouth * 2, np.full(40, 0.3)], 1)          # p[0] follows the mouth, p[1] constant
    n = neutral_of(p, mouth)
    assert n[0] < np.quantile(p[:, 0], 0.3) + 1e-6 and n[0] < 0.5 * np.median(p[:, 0])
    assert n[1] == pytest.approx(0.3)
    assert neutral_of(p[:2], [np.nan, 0.1]).shape == (2,)   # few frames, unknown openings: still a value
    d = _driver("relative", calib_frames=3, calib_s=0.5, min_cutoff=1000.0, beta=0.0)
    for i in range(10):                                     # 3 faces but only 0.3 s: still calibrating
        d.push(102, i / 30)
    assert d.neutral is None and d.state.calibrating
    for i in range(10, 20):
        d.push(102, i / 30)
    assert d.neutral is not None and not d.state.calibrating


def test_a_driver_that_starts_mid_word_gets_a_closed_mouth_neutral():
    """Every calm frame of the calibration has the lips apart (the driver talks from its first frame):
    with the face model, the neutral's lips are closed (neutral_mouth "closed", as the portrait's rest),
    so the driver's open mouth opens the portrait's by as much; "own" keeps the neutral as calibrated;
    switching needs no new calibration."""
    from engine import geometry as g
    from engine.blendshapes import load_default_face_model
    from streaming.drivers import FaceDriver, neutral_of
    from tests.test_synth_pairs import _face_and_image, _p
    fm = load_default_face_model()
    lm, _ = _face_and_image(fm, 128)
    half = _p(fm, lips_part=0.5, jaw_open=0.3)
    half_lm = g.target_landmarks(fm, lm, np.zeros(40), half)
    assert g.lip_gap(half_lm) > 2 * g.CLOSED_GAP
    li = fm.param_names.index("lips_part")
    shut = neutral_of(np.stack([half] * 4), [0.2] * 4, [half_lm] * 4, fm)
    assert shut[li] < half[li] - 0.2 and abs(g.lip_gap(g.target_landmarks(fm, half_lm, half, shut))) < 0.01
    assert np.array_equal(neutral_of(np.zeros((4, 40)), [0.0] * 4, [lm] * 4, fm), np.zeros(40))  # closed: as is
    d = FaceDriver(None, 40, 128, rest=np.zeros(40), calib_frames=4, calib_s=0.0, min_cutoff=1000.0, beta=0.0,
                   face_model=fm)
    for i in range(4):
        d.update(half, i / 30, crop_landmarks=half_lm, mouth=g.mouth_opening(half_lm))
    assert np.allclose(d.neutral, shut, atol=1e-5)
    v = d.update(half, 5 / 30, crop_landmarks=half_lm)
    assert v[li] == pytest.approx(half[li] - shut[li], abs=1e-3) and v[li] > 0.2   # the driver's opening, whole
    d.neutral_mouth = "own"
    assert np.allclose(d.neutral, half) and abs(d.update(half, 6 / 30)[li]) < 0.02
    with pytest.raises(ValueError, match="closed"):
        d.neutral_mouth = "open"


def test_a_blink_in_the_calibration_does_not_shut_the_neutrals_eyes():
    """People close their lips as they blink: the calibration's least open mouths are here its two blinks. The
    neutral comes from calm frames whose eyes are open, so a later open-eyed frame leaves the portrait's eyes as
    they are (they would stare, opened by the whole blink, had the neutral's eyes been shut)."""
    from engine import geometry as g
    from engine.blendshapes import load_default_face_model
    from streaming.drivers import FaceDriver
    from tests.test_synth_pairs import _face_and_image, _p
    fm = load_default_face_model()
    lm, _ = _face_and_image(fm, 128)
    blink = _p(fm, eye_close_left=1.0, eye_close_right=1.0)
    talk = [_p(fm, lips_part=0.2 + 0.05 * i, jaw_open=0.1) for i in range(8)]
    frames = [blink, blink] + talk
    lms = [g.target_landmarks(fm, lm, np.zeros(40), p) for p in frames]
    assert g.eye_opening(lms[0]) < 0.8 * g.eye_opening(lms[2])          # the blink shuts the eyes
    assert g.mouth_opening(lms[0]) < min(g.mouth_opening(x) for x in lms[2:])   # with the lips closest
    d = FaceDriver(None, 40, 128, rest=np.zeros(40), calib_frames=len(frames), calib_s=0.0, min_cutoff=1000.0,
                   beta=0.0, face_model=fm)
    for i, (p, x) in enumerate(zip(frames, lms)):
        d.update(p, i / 30, crop_landmarks=x, mouth=g.mouth_opening(x))
    assert d.neutral is not None
    eyes = [fm.param_names.index("eye_close_left"), fm.param_names.index("eye_close_right")]
    assert np.abs(d.neutral[eyes]).max() < 0.05, d.neutral[eyes]
    d.update(talk[0], 1.0, crop_landmarks=lms[2], mouth=g.mouth_opening(lms[2]))
    target = g.target_landmarks(fm, lm, np.zeros(40), d.target[:40])
    assert g.eye_opening(target) == pytest.approx(g.eye_opening(lm), rel=0.05)


def test_a_turned_heads_far_eye_blinks_with_the_near_one():
    """The face mesh reads a turned head's far eye unreliably (foreshortened): its lids follow the near eye's,
    wholly from EYE_TURN[1] degrees of yaw (``engine.pose.link_far_eye``), so a blink read on one eye of a turned
    driver is no wink on the portrait; a frontal driver's wink is its own. A batch of frames, each its own yaw, the
    same as one by one (an extracted track's)."""
    from engine.blendshapes import load_default_face_model
    from engine.pose import EYE_TURN, HeadPose, link_far_eye, rotation
    from streaming.drivers import FaceDriver
    from tests.test_synth_pairs import _face_and_image, _p
    fm = load_default_face_model()
    lm, _ = _face_and_image(fm, 128)

    def head(yaw):
        return HeadPose(orientation=rotation(yaw, 0.0, 0.0), centre=np.zeros(3), iod=60.0, size=1.0, eyes_open=0.3)
    d = FaceDriver(None, 40, 128, rest=np.zeros(40), calib_frames=3, calib_s=0.0, min_cutoff=1000.0, beta=0.0,
                   face_model=fm)
    for i in range(3):
        d.update(np.zeros(40), i / 30, crop_landmarks=lm, mouth=0.0, head=head(0.0))
    wink = _p(fm, eye_close_right=1.0)                       # the right eye (lid_moves' first) reads closed
    closing = fm.lid_moves(wink)
    assert closing[0] < -0.5 * abs(closing).max() and abs(closing[1]) < 0.2 * abs(closing[0])

    def moves(yaw):
        d.update(wink, 1.0, crop_landmarks=lm, head=head(yaw))
        return fm.lid_moves(d.target[:40] - d.rest_params)
    assert np.allclose(moves(0.0), closing, atol=1e-4)                   # frontal: a wink
    assert np.allclose(moves(EYE_TURN[0] - 1), closing, atol=1e-4)
    far_right = moves(-EYE_TURN[1] - 5)                      # the right eye turned away: it follows the left
    assert abs(far_right[0] - far_right[1]) < 1e-4 and abs(far_right[0]) < 0.2 * abs(closing[0])
    far_left = moves(EYE_TURN[1] + 5)                        # the left eye turned away: it blinks with the right
    assert abs(far_left[0] - far_left[1]) < 1e-4 and far_left[1] < 0.9 * closing[0]
    half = moves(-(EYE_TURN[0] + EYE_TURN[1]) / 2)
    assert closing[0] < half[0] < far_right[0]
    yaws = np.array([0.0, -40.0, 40.0, -20.0])
    batch = link_far_eye(fm, np.stack([wink] * 4), yaws)
    assert np.allclose(batch, np.stack([link_far_eye(fm, wink, y) for y in yaws]), atol=1e-6)
    assert np.allclose(fm.lid_moves(batch[1]), far_right, atol=1e-4)


def test_a_blink_read_unevenly_shuts_both_eyes_alike_and_a_wink_stays_a_wink():
    """The face mesh reads a blink's two eyes unevenly (a blurred lid): once both eyes have read at least
    BLINK_BOTH shut in one frame, their lids move alike (the mean of their moves) until both are open again
    (``engine.pose.BlinkPairing``); a wink, whose open eye never shuts that far, is its own. Through a face driver
    as through the pairing alone."""
    from engine.blendshapes import load_default_face_model
    from engine.pose import BLINK_BOTH, BLINK_MAX_S, BLINK_OPEN, BlinkPairing
    from streaming.drivers import FaceDriver
    from tests.test_synth_pairs import _face_and_image
    fm = load_default_face_model()
    lm, _ = _face_and_image(fm, 128)
    gaps = fm.lid_gaps(fm.instantiate(np.zeros(40)))

    def eyes(right, left, g=gaps):               # a motion whose lids read these shares of the gaps g shut
        return fm.with_lid_moves(np.zeros(40), -np.array([right, left]) * g)

    def shut(motion, g=gaps):
        return -fm.lid_moves(motion) / g
    pairing = BlinkPairing(fm, gaps)
    wink = [pairing.pair(eyes(0.9, 0.1 + 0.1 * k), k / 30) for k in range(4)]   # the open eye narrows a little
    assert all(np.allclose(shut(m), [0.9, 0.1 + 0.1 * k], atol=1e-6) for k, m in enumerate(wink))
    blink = [(0.3, 0.2), (0.6, BLINK_BOTH + 0.05), (0.75, 0.25), (0.5, 0.1), (BLINK_OPEN - 0.05, 0.05), (0.7, 0.2)]
    out = [fm.lid_moves(pairing.pair(eyes(*e), 1 + k / 30)) for k, e in enumerate(blink)]
    assert np.allclose(out[0], -np.array(blink[0]) * gaps, atol=1e-6)            # before both shut: as read
    for k in (1, 2, 3):                                                        # the blink: alike, the mean move
        assert out[k][0] == pytest.approx(out[k][1], abs=1e-6)
        assert out[k][0] == pytest.approx(np.mean(-np.array(blink[k]) * gaps), abs=1e-6)
    for k in (4, 5):                                                           # both open again: as read
        assert np.allclose(out[k], -np.array(blink[k]) * gaps, atol=1e-6)
    pairing.pair(eyes(0.6, 0.6), 2.0)
    late = shut(pairing.pair(eyes(0.8, 0.3), 2.0 + BLINK_MAX_S + 0.1))   # a "blink" held past BLINK_MAX_S: not one
    assert np.allclose(late, [0.8, 0.3], atol=1e-6)
    assert np.allclose(BlinkPairing(fm, None).pair(eyes(0.6, 0.6), 0.0), eyes(0.6, 0.6))

    d = FaceDriver(None, 40, 128, rest=np.zeros(40), calib_frames=3, calib_s=0.0, min_cutoff=1000.0, beta=0.0,
                   face_model=fm)
    for i in range(3):
        d.update(np.zeros(40), i / 30, crop_landmarks=lm, mouth=0.0)

    def target(right, left, t):
        d.update(eyes(right, left, d._lids), t, crop_landmarks=lm)
        return fm.lid_moves(d.target[:40] - d.rest_params)
    assert np.allclose(target(0.9, 0.15, 1.0), -np.array([0.9, 0.15]) * d._lids, atol=1e-4)   # a wink
    target(0.7, 0.7, 1.1)
    uneven = target(0.8, 0.2, 1.15)                                             # a blink read unevenly
    assert uneven[0] == pytest.approx(uneven[1], abs=1e-4)
    assert uneven[0] == pytest.approx(np.mean(-np.array([0.8, 0.2]) * d._lids), abs=1e-4)


def test_a_portrait_nothing_drives_the_expression_of_blinks_as_people_do(env, tmp_path):
    """Sound or a speech-only track leaves the expression at rest, and the portrait stared: ``IdleBlinks`` shuts its
    lids (its own lid gaps) in blinks about every IDLE_BLINK_EVERY_S, never closer than IDLE_BLINK_MIN_S, the same
    ones every time, shutting faster than they open; only while nothing drives the expression (routed to "rest", or
    to sliders none of whose expression sliders is set; a face, a track with expression, an expression slider set by
    hand or motion "speech" keep theirs), and a render from a speech track has them unless ``blinks`` is False."""
    from engine.blendshapes import load_default_face_model
    from streaming.drivers import (IDLE_BLINK_EVERY_S, IDLE_BLINK_MIN_S, IDLE_BLINK_SHAPE, DriverMix, IdleBlinks,
                                   SlidersDriver)
    from streaming.render import _TrackJob
    fm = load_default_face_model()
    lids = fm.lid_gaps(fm.instantiate(np.zeros(40)))
    a, b = IdleBlinks(fm, lids), IdleBlinks(fm, lids)
    ts = np.arange(0.0, 120.0, 0.01)
    shut = np.array([a.shut(t) for t in ts])
    assert np.array_equal(shut, [b.shut(t) for t in ts])                       # the same blinks every time
    starts = np.array([s for s in a._starts if s < 120.0])
    assert np.diff(starts).min() >= IDLE_BLINK_MIN_S
    assert 0.6 * 120 / IDLE_BLINK_EVERY_S <= len(starts) <= 1.5 * 120 / IDLE_BLINK_EVERY_S
    close, hold, opening = IDLE_BLINK_SHAPE
    s0 = starts[0]
    assert a.shut(s0 - 0.01) == 0 and a.shut(s0 + close + hold / 2) == 1 and a.shut(s0 + close + hold + opening) == 0
    assert a.shut(s0 + close / 2) == pytest.approx(0.5) and a.shut(s0 + close + hold + opening / 2) == pytest.approx(0.5)
    rest = np.zeros(40, np.float32)
    rest[30] = 0.3
    shut_p = a.apply(rest, s0 + close + hold / 2, rest)
    assert np.allclose(fm.lid_moves(shut_p - rest), -lids, atol=1e-6)         # shut: the lids' whole gap
    assert shut_p[30] == pytest.approx(0.3, abs=1e-6)                          # the mouth as it was
    assert a.apply(rest, s0 - 0.01, rest) is rest
    assert not IdleBlinks(fm, None).enabled and IdleBlinks(None, lids).apply(rest, s0 + 0.1, rest) is rest

    mix = DriverMix(30, 40, rest, SlidersDriver(40, rest))
    mix.idle = IdleBlinks(fm, lids)
    peak = s0 + close + hold / 2
    mix.route("exp", "rest")
    assert np.allclose(fm.lid_moves(mix.value(peak) - rest), -lids, atol=1e-5)
    mix.hold_expression = True                                                 # motion "speech": the expression kept
    assert np.allclose(mix.value(peak), rest)
    mix.hold_expression = False
    mix.route("exp", "sliders")                                                # sliders none of which is set: blinks
    assert np.allclose(fm.lid_moves(mix.value(peak) - rest), -lids, atol=1e-5)
    mix.sliders.set(3, 0.5)                                                   # an expression set by hand: its own
    held = mix.value(peak)
    assert held[3] == pytest.approx(0.5) and np.allclose(np.delete(held, 3), np.delete(rest, 3))
    mix.route("exp", "face")                                                   # a driver (absent here): no blink
    mix.sliders.release()
    assert np.allclose(mix.value(peak), rest)

    from engine.animator import Animator
    anim = Animator(env["models"], output_size=128)
    anim.set_source(env["portrait"])
    track = kit.speech_track(tmp_path / "speech.npz", seconds=4.0, fps=25)
    moves = {}
    for blinks in (True, False):
        job = _TrackJob(anim, track, 30, None, None, True, None, False, blinks=blinks)
        p = np.stack([job.mix.value(i / 25) for i in range(100)])
        moves[blinks] = fm.lid_moves(p - anim.rest_params)
    assert anim.face_model is not None and anim.source.lids is not None       # the synthetic face has its eyes
    assert moves[True].min() < -0.9 * anim.source.lids.min()
    assert np.abs(moves[False] - moves[False][0]).max() < 1e-7 and np.abs(moves[False]).max() < 1e-4   # no blink


def test_a_mesh_driver_reads_its_frames_against_its_own_neutral_mesh():
    """Relative mode, params "mesh": the calibration fits the driver's neutral mesh once (as a track's
    sequence neutral) and every later frame's p is read against it, not fitted with an identity of its
    own; the driver's opening reaches the portrait whole. Absolute mode reads each face alone."""
    from engine import geometry as g
    from engine.blendshapes import align_many, estimate_neutral, load_default_face_model
    from streaming.drivers import FaceDriver
    from tests.test_synth_pairs import _p
    fm = load_default_face_model()
    rng = np.random.default_rng(3)
    ident = rng.normal(0.0, 1.0, fm.n_identity)

    def frame(p):    # a face of this person, in pixels of a crop
        return fm.instantiate(p, ident) * 90.0 + np.array([64.0, 60.0, 0.0])

    def alone(lm):
        lm = np.asarray(lm, np.float64)
        return np.stack([f.p for f in fm.fit_many(lm.reshape(-1, 478, 3))]).reshape(*lm.shape[:-2], -1)
    calm = [frame(rng.normal(0.0, 0.05, 40)) for _ in range(6)]
    d = FaceDriver(None, 40, 128, rest=np.zeros(40), calib_frames=6, calib_s=0.0, min_cutoff=1000.0, beta=0.0,
                   params="mesh", fit=alone, face_model=fm, neutral_mouth="own")
    assert np.allclose(d.read_mesh(calm[0]), alone(calm[0]))          # not calibrated: each face alone
    for i, lm in enumerate(calm):
        d.update(d.read_mesh(lm), i / 30, crop_landmarks=lm, mouth=g.mouth_opening(lm))
    assert d.neutral is not None
    shape = estimate_neutral(align_many(np.stack(calm)))[0]
    talk = _p(fm, lips_part=0.8, jaw_open=0.5)
    open_lm = frame(talk)
    want = fm.fit_sequence(np.stack(calm + [open_lm]), neutral=shape).p[-1]
    assert np.allclose(d.read_mesh(open_lm), want, atol=1e-5)
    assert np.allclose(d.read_mesh(np.stack([open_lm, calm[0]]))[0], want, atol=1e-5)   # batched alike
    li = fm.param_names.index("lips_part")
    v = d.update(d.read_mesh(open_lm), 7 / 30, crop_landmarks=open_lm)
    assert v[li] == pytest.approx(0.8, abs=0.06)
    d.set_mode("absolute")
    assert np.allclose(d.read_mesh(open_lm), alone(open_lm))


class _MeshTracker:
    """Stands in for FaceTracker: frames are face meshes (478, 3) in pixels."""

    def process(self, frame, t):
        from engine.face import AlignedFace
        return AlignedFace(np.zeros((8, 8, 3), np.uint8), frame, frame, np.eye(2, 3), 8, t=t)

    def close(self):
        pass


def test_a_mesh_driver_calibrates_again_when_someone_else_takes_the_camera():
    """Read against the first person's neutral mesh, a second person's face would drive a grimace: the
    driver notices that the face no longer fits its neutral (better alone) and calibrates on the new one.
    The first person talking does not set it off."""
    from engine.blendshapes import load_default_face_model
    from streaming.drivers import FaceDriver
    from tests.test_synth_pairs import _p
    fm = load_default_face_model()
    rng = np.random.default_rng(5)
    noise = np.sqrt(fm.sigma2) * 90.0

    def person(spread):    # an identity, the shape of a real face beyond the model's identity basis, noise
        ident, own = rng.normal(0.0, spread, fm.n_identity), rng.normal(0.0, 2 * noise, (478, 3))
        return lambda p: (fm.instantiate(p, ident) * 90.0 + np.array([64.0, 60.0, 0.0]) + own
                          + rng.normal(0.0, noise / 3, (478, 3)))
    a, b = person(1.0), person(3.0)     # b: a face far from a's
    d = FaceDriver(None, 40, 8, rest=np.zeros(40), min_cutoff=1000.0, beta=0.0, params="mesh",
                   fit=lambda lm: np.stack([f.p for f in fm.fit_many(np.reshape(lm, (-1, 478, 3)))]).squeeze(0),
                   face_model=fm, tracker=_MeshTracker(), neutral_mouth="own",
                   person_check=False)      # the mesh's residual alone (face recognition: the test below)
    t, still = 0.0, np.zeros(40)
    for _ in range(40):
        d.push(a(still), t)
        t += 1 / 30
    first = d.neutral
    assert first is not None and not d.state.calibrating
    li = fm.param_names.index("lips_part")
    for k in range(60):                                   # a talks: still the same face
        v = d.push(a(_p(fm, lips_part=0.4 + 0.4 * np.sin(k / 3), jaw_open=0.3)), t)
        t += 1 / 30
    assert d.neutral is first and v[li] > 0.1
    calibrating = False
    for _ in range(40):                                   # b sits down
        d.push(b(still), t)
        calibrating |= d.state.calibrating
        t += 1 / 30
    assert calibrating and d.neutral is not None and d.neutral is not first
    v = d.push(b(_p(fm, lips_part=0.6)), t)
    assert v[li] == pytest.approx(0.6, abs=0.1) and np.abs(np.delete(v, li)).max() < 0.25


def test_a_driver_calibrates_again_when_the_face_is_someone_elses():
    """Relative mode: a face that face recognition tells from the calibration's person (a cut to someone else, a
    new webcam user) sets off a new calibration, within PERSON_CHECKS comparisons PERSON_EVERY_S apart; the same
    person moving does not. Here a crop's grey level is both its reading (p) and, by tens, its person."""
    from streaming.drivers import PERSON_CHECKS, PERSON_EVERY_S

    def embed(crops):           # greys 100-119 one person, 200-219 another
        return np.stack([[float(c[0, 0, 0] // 100), 0.0] for c in crops])
    rest = np.array([0.1, 0.2, 0.3, 0.4])
    for check, expected in ((embed, "again"), (False, "never")):
        d = _driver("relative", calib_frames=3, calib_s=0.5, min_cutoff=1000.0, beta=0.0, person_check=check)
        t = 0.0
        for i in range(90):                                   # calibrates on 100, then talks: 100-119
            v = d.push(100 + (i % 20 if i > 30 else 0), t)
            if d._person is not None:
                d._person.wait(5.0)
            t += 1 / 30
        first = d.neutral
        assert first is not None and np.allclose(first, 100 / 255) and not d.state.calibrating
        seen_calibrating = False
        for _ in range(int(30 * (PERSON_CHECKS * PERSON_EVERY_S + 1.0))):   # someone else, still
            v = d.push(200, t)
            if d._person is not None:
                d._person.wait(5.0)     # push compares on a thread of its own: its answer comes with the next frame
            seen_calibrating |= d.state.calibrating
            t += 1 / 30
        if expected == "again":
            assert seen_calibrating and np.allclose(d.neutral, 200 / 255)
            assert np.allclose(v, rest, atol=1e-3)          # their own neutral: the portrait at rest
        else:
            assert not seen_calibrating and d.neutral is first
            assert np.allclose(v, rest + 100 / 255, atol=1e-3)  # read against the first person's neutral


def test_the_person_check_cuts_a_crop_only_when_it_compares():
    """``PersonCheck.changed`` takes a function that cuts the frame's crop (a lazy tracker's): it is called for
    the comparisons only, one every PERSON_EVERY_S, not on every frame."""
    from streaming.drivers import PERSON_EVERY_S, PersonCheck
    check = PersonCheck(8, embed=lambda crops: np.stack([[float(c[0, 0, 0]), 0.0] for c in crops]))
    check.remember([np.full((8, 8, 3), 100, np.uint8)] * 3)
    cuts = []

    def cut():
        cuts.append(1)
        return np.full((8, 8, 3), 100, np.uint8)
    frames = 60
    for i in range(frames):
        assert not check.changed(cut, i / 30)
    assert len(cuts) == int(np.ceil(frames / 30 / PERSON_EVERY_S)) < frames


def test_render_calibrates_again_when_the_driver_cuts_to_someone_else(env, tmp_path):
    """A driver video that cuts from one person (a training clip's, 2 s) to another's (2.5 s): the render
    notices the new person within about a second and calibrates on them; the first person talking does not
    set it off. Real faces (face recognition cannot tell the synthetic ones apart): ../shared/data."""
    from tests.conftest import SHARED_DATA
    if not (SHARED_DATA / "talking").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    import cv2

    from engine.video import read_frames
    from streaming.render import render

    def clip(name, seconds):
        out = []
        for f, _ in read_frames(SHARED_DATA / name, max_frames=int(30 * seconds)):
            h, w = f.shape[:2]
            s = 256 / max(h, w)
            canvas = np.zeros((256, 256, 3), np.uint8)
            g = cv2.resize(f, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA)
            canvas[:g.shape[0], :g.shape[1]] = g
            out.append(canvas)
        return out
    drv = kit.write_video(tmp_path / "cut.mp4", clip("driving/d3.mp4", 2.0) + clip("talking/pcavs_audio_00015.mp4", 2.5),
                          fps=30)
    res = render(env["portrait"], drv, tmp_path / "out.mp4", models=env["models"], size=128, progress=False,
                 motion="expression")
    assert len(res.recalibrated) == 1 and 2.0 <= res.recalibrated[0] <= 3.5, res.recalibrated
    assert "someone else's at" in res.summary()


def test_face_lost_holds_then_eases_to_rest():
    d = _driver("absolute", hold_s=0.5, ease_s=0.2, min_cutoff=1000.0, beta=0.0)
    for i in range(10):
        v = d.push(204, i / 30)              # face: p = 0.8
    assert np.allclose(v, 0.8, atol=1e-3)
    t_lost = 10 / 30
    held = d.push(None, t_lost)
    assert np.allclose(held, v) and d.state.holding and d.state.status == "no_face"
    assert np.allclose(d.push(None, t_lost + 0.45), v)            # still held inside hold_s
    late = d.push(None, t_lost + 0.5 + 3.0)                        # 15 time constants later
    assert np.allclose(late, 0.0, atol=1e-3)                       # absolute mode rests at p = 0
    mid = d.value(9 / 30 + 0.5 + 0.2)                             # hold counts from the last face
    assert np.allclose(mid, 0.8 * np.exp(-1), atol=0.02)
    back = d.push(51, t_lost + 4.0)                                # face again: no jump
    assert np.abs(back - late).max() < 0.3


def test_relative_mode_calibrates_and_adds_the_change():
    d = _driver("relative", calib_frames=5, calib_s=0.0, min_cutoff=1000.0, beta=0.0)
    rest = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    for i in range(5):
        v = d.push(102, i / 30)              # neutral of the driver: 0.4
    assert np.allclose(v, rest)                                   # calibrating: the portrait's own
    assert np.allclose(d.neutral, 0.4, atol=1e-6)
    v = d.push(153, 6 / 30)                                       # driver +0.2
    assert np.allclose(v, rest + 0.2, atol=1e-3)
    d.calibrate()
    for i in range(5):
        d.push(153, (7 + i) / 30)
    assert np.allclose(d.push(153, 13 / 30), rest, atol=1e-3)     # new neutral: no change


def test_relative_mode_keeps_the_drivers_motion_beyond_the_fits_bounds():
    """The portrait's own p plus the driver's whole change, up to engine.animator.P_LIMIT (a portrait
    fitted near a bound keeps the driver's motion); absolute mode stays in [-1, 1]."""
    from engine.animator import P_LIMIT
    from streaming.drivers import FaceDriver
    d = _driver("relative", calib_frames=3, calib_s=0.0, min_cutoff=1000.0, beta=0.0)
    for i in range(3):
        d.push(0, i / 30)                                         # the driver's neutral: 0
    assert np.allclose(d.push(255, 4 / 30), [1.1, 1.2, 1.3, 1.4], atol=1e-3)    # +1 on the rest
    near = FaceDriver(lambda crop: np.full(4, crop[0, 0, 0] / 255.0, np.float32), 4, 8, mode="relative",
                      rest=np.full(4, 0.9), tracker=_FakeTracker(8), calib_frames=3, calib_s=0.0,
                      min_cutoff=1000.0, beta=0.0)
    for i in range(3):
        near.push(0, i / 30)
    assert np.allclose(near.push(255, 4 / 30), P_LIMIT, atol=1e-3)
    a = _driver("absolute", min_cutoff=1000.0, beta=0.0)
    assert np.abs(a.push(255, 0.0)).max() <= 1.0


def test_a_relative_driver_scales_its_blinks_to_the_portraits_eyes():
    """FaceDriver.lids_ratio: a driver whose eyes are open half as wide as the portrait's (its neutral,
    calibrated from its crop landmarks) closes the portrait's lids twice as far per blink (within LIDS_RATIO),
    its mouth as before, but opens them wider no further than its own; without the portrait's lids (or with
    equal eyes) the motion is the driver's own."""
    from engine.blendshapes import load_default_face_model, rigid_align
    from streaming.drivers import LIDS_RATIO, FaceDriver
    fm = load_default_face_model()
    names = fm.param_names
    squint = np.zeros(40)
    squint[[names.index("eye_close_left"), names.index("eye_close_right")]] = 0.7
    neutral = fm.instantiate(squint).astype(np.float64) * 128          # the driver's face, crop pixels
    portrait = fm.lid_gaps(fm.instantiate(np.zeros(40)))
    blink = squint.copy()
    blink[[names.index("eye_close_left"), names.index("eye_close_right"), names.index("lips_part")]] = [1.0, 1.0, 0.4]
    rest = np.zeros(40, np.float32)

    def motion(lids, frame=blink):
        d = FaceDriver(None, 40, 0, mode="relative", rest=rest, face_model=fm, rest_lids=lids,
                       min_cutoff=1000.0, beta=0.0)
        d.calibrate_on(np.tile(squint, (8, 1)), np.zeros(8), None, [neutral] * 8)
        for i in range(3):
            out = d.update(frame.astype(np.float32), i / 30)
        return d, out - rest
    own_d, own = motion(None)
    assert own_d.lids_ratio is None and np.allclose(own, blink - squint, atol=1e-4)
    d, scaled = motion(portrait)
    k = d.lids_ratio
    want = fm.lid_gaps(fm.instantiate(np.zeros(40))) / fm.lid_gaps(fm.instantiate(squint))
    assert np.all(want > 1.3) and np.allclose(k, np.clip(want, *LIDS_RATIO), rtol=5e-3)

    lid_move = fm.lid_moves
    assert np.allclose(lid_move(scaled), k * lid_move(own), rtol=1e-3)
    assert fm._gap_p @ scaled == pytest.approx(fm._gap_p @ own, rel=0.05)     # the mouth as driven
    wide = squint.copy()
    wide[[names.index("eye_close_left"), names.index("eye_close_right")]] = 0.2      # wider than its neutral
    assert np.all(lid_move(motion(None, wide)[1]) > 0)
    assert np.allclose(motion(portrait, wide)[1], motion(None, wide)[1], atol=1e-4)
    same_d, same = motion(fm.lid_gaps(rigid_align(neutral)[0]))          # a portrait with the driver's eyes
    assert np.allclose(same_d.lids_ratio, 1.0, atol=1e-3) and np.allclose(same, own, atol=1e-3)


def test_a_track_scales_its_blinks_to_the_portraits_eyes():
    """TrackDriver: a track that knows its driver's lid gaps (ParamTrack.lids, from its neutral) closes the
    portrait's lids as far per blink as the face driver would (lids_ratio: the driver's eyes half as wide as
    the portrait's close them further), its mouth as recorded, wider eyes no further than the driver's; an
    older track without lids, or no portrait lids, plays as recorded; a new portrait changes the ratio."""
    from engine.blendshapes import load_default_face_model
    from engine.tracks import ParamTrack
    from streaming.drivers import LIDS_RATIO, DriverMix, TrackDriver, lids_ratio
    fm = load_default_face_model()
    names = fm.param_names
    eyes = [names.index("eye_close_left"), names.index("eye_close_right")]
    p = np.zeros((3, 40), np.float32)
    p[1, eyes + [names.index("lips_part")]] = [0.9, 0.9, 0.4]     # a blink while talking
    p[2, eyes] = -0.5                                              # eyes opened wider than the neutral
    squint = np.zeros(40)
    squint[eyes] = 0.6
    driver_lids = fm.lid_gaps(fm.instantiate(squint))              # a driver with narrow eyes
    portrait = fm.lid_gaps(fm.instantiate(np.zeros(40)))

    def track(lids):
        return ParamTrack(times=[0.0, 0.04, 0.08], speech=p[:, 30:], expression=p[:, :30], fps=25.0, lids=lids)
    plain = TrackDriver(track(None), 30, 40, loop=False, face_model=fm, rest_lids=portrait)
    d = TrackDriver(track(driver_lids), 30, 40, loop=False, face_model=fm, rest_lids=portrait)
    assert plain.lids_ratio is None and np.allclose(plain.value(0.04), p[1], atol=1e-6)
    k = d.lids_ratio
    assert np.all(k > 1.3) and np.allclose(k, np.clip(portrait / driver_lids, *LIDS_RATIO))
    blink = d.value(0.04)
    assert np.allclose(fm.lid_moves(blink), k * fm.lid_moves(p[1]), rtol=1e-3)
    assert fm._gap_p @ blink == pytest.approx(fm._gap_p @ p[1], rel=0.05)
    assert np.allclose(d.value(0.08), p[2], atol=1e-4)            # wider: as the driver's own
    mix = DriverMix(30, 40, rest=np.zeros(40, np.float32))         # past the fit's bound, as a face driver's
    mix.set_driver("track", d)
    mix.route("exp", "track")
    mix.route("speech", "track")
    assert np.allclose(mix.value(0.04), blink) and blink.max() > 1.0
    assert np.allclose(TrackDriver(track(driver_lids), 30, 40, face_model=fm).value(0.04), p[1], atol=1e-6)
    d.set_rest_lids(driver_lids)                                   # a portrait with the driver's eyes
    assert np.allclose(d.lids_ratio, 1.0) and np.allclose(d.value(0.04), p[1], atol=1e-4)
    assert lids_ratio(portrait, None) is None and lids_ratio(portrait, np.zeros(2)) is None


def test_expression_scale_multiplies_the_drivers_motion(tmp_path):
    """--expression-scale: a relative face driver gives the portrait's own p plus S times the driver's
    change, an absolute one S times its reading, a track S times its values; a mix passes its scale to
    the drivers it holds and to those set later; a bad scale changes nothing."""
    from engine.animator import P_LIMIT
    from engine.tracks import load_track
    from streaming.drivers import DriverMix, TrackDriver
    rest = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    d = _driver("relative", calib_frames=3, calib_s=0.0, min_cutoff=1000.0, beta=0.0, expression_scale=2.0)
    for i in range(3):
        d.push(102, i / 30)                                       # the driver's neutral: 0.4
    assert np.allclose(d.push(153, 4 / 30), rest + 2 * 0.2, atol=1e-3)
    d.expression_scale = 0.0
    d.push(204, 5 / 30)
    assert np.allclose(d.push(204, 6 / 30), rest, atol=1e-3)     # no motion: the portrait's own
    a = _driver("absolute", min_cutoff=1000.0, beta=0.0, expression_scale=0.5)
    assert np.allclose(a.push(204, 0.0), 0.5 * 0.8, atol=1e-3)
    with pytest.raises(ValueError, match="expression scale"):
        _driver("relative", expression_scale=-1)
    tr = load_track(kit.speech_track(tmp_path / "t.npz", seconds=1.0, fps=25))
    half = TrackDriver(tr, 30, 40, expression_scale=0.5)
    assert np.allclose(half.value(0.3), 0.5 * tr.at(0.3), atol=1e-6)
    assert np.abs(tr.at(0.3)[30:]).max() > 0.05                   # the track moves: the scale shows
    mix = DriverMix(30, 40, rest=np.full(40, 0.25, np.float32))
    mix.expression_scale = 0.0
    mix.set_driver("track", TrackDriver(tr, 30, 40))             # set later: gets the mix's scale
    mix.route("speech", "track")
    assert np.allclose(mix.value(0.3)[30:], 0.0) and np.allclose(mix.value(0.3)[:30], 0.25)
    mix.expression_scale = 2
    assert np.allclose(mix.value(0.3)[30:], np.clip(2 * tr.at(0.3)[30:], -P_LIMIT, P_LIMIT), atol=1e-6)
    with pytest.raises(ValueError):
        mix.expression_scale = float("inf")
    assert mix.expression_scale == 2.0 and mix.drivers["track"].expression_scale == 2.0


def test_lips_only_holds_the_expression_at_rest():
    """DriverMix.hold_expression (motion "speech"): the expression group stays at rest whatever drives it,
    the speech group follows its driver, a pinned expression slider still applies."""
    from streaming.drivers import DriverMix, check_motion

    class Steady:                 # a driver that always says 0.7
        def value(self, t):
            return np.full(40, 0.7, np.float32)
    mix = DriverMix(30, 40, rest=np.full(40, 0.25, np.float32))
    mix.set_driver("face", Steady())
    mix.route("exp", "face")
    mix.route("speech", "face")
    assert np.allclose(mix.value(0.0), 0.7)
    mix.hold_expression = True
    v = mix.value(0.0)
    assert np.allclose(v[:30], 0.25) and np.allclose(v[30:], 0.7)
    mix.sliders.set(3, -0.5)
    assert mix.value(0.0)[3] == pytest.approx(-0.5)
    check_motion("speech")
    with pytest.raises(ValueError, match="'speech': the lips and jaw only"):
        check_motion("lips")


def test_track_driver_resamples_and_loops(tmp_path):
    from engine.tracks import load_track
    from streaming.drivers import DriverMix, TrackDriver
    tr = load_track(kit.speech_track(tmp_path / "t.npz", seconds=1.0, fps=25))
    d = TrackDriver(tr, 30, 40, loop=True)
    assert d.groups() == ["speech"] and d.present[30:].all() and not d.present[:30].any()
    # between frames 2 and 3 of the 25 fps track, at 30 fps output times: linear interpolation
    t = 0.1
    want = tr.at(t)
    assert np.allclose(d.value(t), want, atol=1e-6)
    assert np.allclose(d.value(t + d.duration), want, atol=1e-5)   # loops
    # a stream loads the track 2.5 s into its session: the track plays from there
    late = TrackDriver(tr, 30, 40, loop=True, started_at=2.5)
    assert np.allclose(late.value(2.5 + t), want, atol=1e-5)
    mix = DriverMix(30, 40, rest=np.full(40, 0.25, np.float32))
    mix.set_driver("track", d)
    mix.route("speech", "track")
    mix.route("exp", "rest")
    v = mix.value(t)
    assert np.allclose(v[:30], 0.25) and np.allclose(v[30:], want[30:], atol=1e-6)
    mix.sliders.set(31, -0.9)           # a pinned slider overrides the track
    assert mix.value(t)[31] == pytest.approx(-0.9)
    mix.sliders.release()
    assert mix.value(t)[31] == pytest.approx(want[31], abs=1e-6)
    with pytest.raises(ValueError):
        mix.route("speech", "nothing")


def test_presets_from_the_blendshape_model():
    from engine.animator import face_model_for
    from streaming.presets import EXPRESSIONS, make_presets

    class M:
        n_params, n_exp, blendshapes = 40, 30, ""
    fm = face_model_for(M())
    if fm is None:
        pytest.skip("no default blendshape model")
    pre = make_presets(fm.param_names, fm.n_exp, fm)
    assert set(pre) == {"neutral", *EXPRESSIONS}
    from streaming.presets import motion_features
    for name, spec in EXPRESSIONS.items():
        p = pre[name]
        assert np.abs(p).max() <= 1.0 and np.abs(p).max() > 0.5
        f = motion_features(fm.displacement(p))
        main = max(spec, key=spec.get)
        assert f[main] > 0, (name, main, f[main])


# ------------------------------------------------------------------------------------------ live
def test_live_import_safe_and_records_from_a_file_camera(env, tmp_path, monkeypatch, capsys):
    import streaming.live as live   # importing opens no camera, window or audio device
    from engine.cli import main
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    ok, why = live.gui_available()
    assert not ok and why
    args = ["live", "--source", str(env["portrait"]), "--checkpoint", str(env["ck"]), "--backend", "torch",
            "--size", "128"]
    assert main(args + ["--camera", "0"]) == 1
    assert "nowhere to show the result" in capsys.readouterr().err
    cam = kit.write_video(tmp_path / "cam.mp4", kit.synth_driving_frames(20, w=320, h=240, face=200))
    out = tmp_path / "live.mp4"
    assert main(args + ["--camera", str(cam), "--record", str(out), "--expression-scale", "0.5"]) == 0
    assert "frames" in capsys.readouterr().out
    assert _streams(out)["video"]["frames"] >= 5
    assert main(args + ["--camera", str(tmp_path / "nope.mp4"), "--record", str(out)]) == 1
    # The recording appears whole under its name when the session ends: Ctrl-C stops it as q does (kept);
    # an error keeps the earlier file as it was; no temporary is left either way.
    from engine.animator import Animator
    animate, calls = Animator.animate, []

    def interrupted_at_6(self, *a, **kw):
        calls.append(1)
        if len(calls) == 6:
            raise interruption
        return animate(self, *a, **kw)
    monkeypatch.setattr(Animator, "animate", interrupted_at_6)
    interruption = KeyboardInterrupt()
    assert main(args + ["--camera", str(cam), "--record", str(out)]) == 0
    assert "stopped by Ctrl-C" in capsys.readouterr().out
    assert _streams(out)["video"]["frames"] == 5
    before, calls[:] = out.read_bytes(), []
    interruption = RuntimeError("the engine broke")
    assert main(args + ["--camera", str(cam), "--record", str(out)]) == 1
    assert "the engine broke" in capsys.readouterr().err
    assert out.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.setattr(Animator, "animate", animate)
    gif = tmp_path / "live.gif"       # any format render writes
    assert main(args + ["--camera", str(cam), "--record", str(gif)]) == 0
    assert _streams(gif)["video"]["frames"] >= 5 and "audio" not in _streams(gif)
    capsys.readouterr()
    assert main(args + ["--camera", str(cam), "--record", str(tmp_path / "live.avi")]) == 1
    assert "output must end in .mp4, .mov, .mkv, .webm or .gif" in capsys.readouterr().err
    # --framing full records the whole photo, its aspect kept
    import cv2
    wide = tmp_path / "wide.png"
    cv2.imwrite(str(wide), np.pad(cv2.imread(str(env["portrait"])), ((0, 0), (96, 96), (0, 0)), mode="edge"))
    args[2], args[-1] = str(wide), "192"
    assert main(args + ["--camera", str(cam), "--record", str(out), "--framing", "full"]) == 0
    assert _streams(out)["video"]["size"] == (192, 128)


def test_live_neutral_from_a_photo_of_the_camera_face_at_rest(env, tmp_path, monkeypatch, capsys):
    """live --neutral-from FILE, as render's: a camera face that holds a smile from its first frame, calibrated on
    its first second, drives no smile; calibrated on a photo of the same face at rest, it does, from the first
    frame. The head's neutral pose is the camera's (the face photographed elsewhere moves no head); bad uses are one
    line each."""
    import av
    import cv2

    from engine.cli import main
    monkeypatch.delenv("DISPLAY", raising=False)
    held = kit.synth_driving_frames(2, period=4)[1]            # mouth open and smiling
    calm = kit.synth_driving_frames(1, period=30)[0]
    cam = kit.write_video(tmp_path / "cam.mp4", [held] * 45, fps=30)
    photo, moved = tmp_path / "calm.png", tmp_path / "moved.png"
    cv2.imwrite(str(photo), calm[:, :, ::-1])
    cv2.imwrite(str(moved), np.roll(calm, 60, axis=1)[:, :, ::-1])
    args = ["live", "--source", str(env["portrait"]), "--checkpoint", str(env["ck"]), "--backend", "torch",
            "--size", "128", "--camera", str(cam)]

    def recorded(name, *extra):
        out = tmp_path / f"{name}.mp4"
        assert main(args + ["--record", str(out), *extra]) == 0, capsys.readouterr().err
        with av.open(str(out)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)]).astype(np.float32)

    first = recorded("first", "--motion", "expression")
    from_photo = recorded("photo", "--motion", "expression", "--neutral-from", str(photo))
    assert "the neutral expression from 1 face of" in capsys.readouterr().out
    rest = first[-1]                                  # calibrated on the smile: the portrait at rest
    held_first = np.abs(first[-10:] - rest).mean()
    held_photo = np.abs(from_photo[-10:] - rest).mean()
    assert held_first < 0.2 * held_photo, (held_first, held_photo)
    assert np.abs(from_photo[1] - rest).mean() > 0.5 * held_photo          # from the first frames on
    head = recorded("head", "--renderer", "warp-only", "--neutral-from", str(photo))
    head_moved = recorded("head-moved", "--renderer", "warp-only", "--neutral-from", str(moved))
    assert np.abs(head_moved[-10:] - head[-10:]).mean() < 0.3 * np.abs(head[-10:] - rest).mean()
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), np.full((240, 320, 3), 200, np.uint8))
    for bad, needles in ((["--neutral-from", str(tmp_path / "nobody.png")], ("--neutral-from: no such file",)),
                         (["--neutral-from", str(photo), "--mode", "absolute"], ("needs --mode relative",)),
                         (["--neutral-from", str(empty)], ("--neutral-from: no face in the 1 frames", "empty.png"))):
        out = tmp_path / "bad.mp4"
        _one_line_error(main(args + ["--record", str(out), *bad]), capsys.readouterr().err, *needles,
                        command="live")
        assert not out.exists()
    _one_line_error(main(args[:-2] + ["--camera", "none", "--track", "x.npz", "--record", str(out), "--neutral-from",
                                      str(photo)]),
                    capsys.readouterr().err, "--neutral-from", "needs a camera", command="live")


def test_output_has_ordinary_permissions(env, tmp_path):
    import os
    from streaming.render import render
    tr = kit.speech_track(tmp_path / "t.npz", seconds=0.3, fps=30)
    out = tmp_path / "perm.mp4"
    render(env["portrait"], tr, out, models=env["models"], size=64, progress=False)
    mask = os.umask(0)
    os.umask(mask)
    assert (out.stat().st_mode & 0o777) == (0o666 & ~mask)


def test_live_with_a_track(env, tmp_path, monkeypatch, capsys):
    """A track drives the lips in live mode; without a sound device it plays silently."""
    from engine.cli import main
    monkeypatch.delenv("DISPLAY", raising=False)
    wav = kit.write_wav(tmp_path / "a.wav", kit.tone(1.0))
    tr = kit.speech_track(tmp_path / "t.npz", seconds=1.0, fps=25, audio=wav)
    cam = kit.write_video(tmp_path / "cam.mp4", kit.synth_driving_frames(15, w=320, h=240, face=200))
    out = tmp_path / "live.mp4"
    rc = main(["live", "--source", str(env["portrait"]), "--checkpoint", str(env["ck"]), "--backend", "torch",
               "--size", "128", "--camera", str(cam), "--track", str(tr), "--record", str(out)])
    assert rc == 0 and out.exists()


def test_neutral_from_someone_else_is_refused(env, shared_data, tmp_path, capsys):
    """A --neutral-from photo of another person than the driver video's would read every frame of the driver against
    a stranger's face (a grimace): dlib's face recognition tells them apart before anything renders (the held-out
    W011 against the held-out photo d30: 0.65; against her own clip at rest 0.32), one line, no file."""
    from engine.cli import main
    driver = shared_data / "expressions" / "W011_front_angry_level3_001.mp4"

    def run(neutral, out):
        return main(["render", "--source", str(env["portrait"]), "--driver", str(driver), "-o", str(out),
                     "--checkpoint", str(env["ck"]), "--backend", "torch", "--size", "128", "--quiet",
                     "--max-seconds", "1.5", "--neutral-from", str(neutral)])
    out = tmp_path / "stranger.mp4"
    _one_line_error(run(shared_data / "portraits" / "d30.jpg", out), capsys.readouterr().err,
                    "--neutral-from", "d30.jpg shows someone else than", "W011_front_angry_level3_001.mp4")
    assert not out.exists()
    assert run(shared_data / "expressions" / "W011_front_neutral_level1_001.mp4", tmp_path / "hers.mp4") == 0
