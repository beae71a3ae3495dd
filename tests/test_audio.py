"""The audio model (engine/audio.py): decoding any format, causal features and streaming, the model
file, bad input, silence closing the mouth, ``track from-audio`` and ``render --driver speech.wav``,
and ``train-audio``'s exact resume."""
from __future__ import annotations

import fractions
import json
from pathlib import Path

import numpy as np
import pytest

from tests import streamkit as kit

pytestmark = pytest.mark.timeout(240)

DEFAULT_AUDIO = Path(__file__).resolve().parents[1] / "engine" / "assets" / "default_model" / "audio.safetensors"


def write_audio(path: Path, seconds: float = 1.0, rate: int = 44100, channels: int = 2, freq: float = 440.0,
                amp: float = 0.3) -> Path:
    """A sine in any container/codec PyAV writes (chosen by the suffix)."""
    import av
    codec, fmt, sfmt = {".wav": ("pcm_s16le", "wav", "s16"), ".mp3": ("libmp3lame", "mp3", "fltp"),
                        ".m4a": ("aac", "ipod", "fltp"), ".ogg": ("libopus", "ogg", "flt"),
                        ".flac": ("flac", "flac", "s16")}[path.suffix]
    if codec == "libopus":
        rate = 48000
    t = np.arange(int(seconds * rate)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    layout = "stereo" if channels == 2 else "mono"
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream(codec, rate=rate)
        s.layout = layout
        n = 960 if codec == "libopus" else 1152 if codec == "libmp3lame" else 1024
        for i in range(0, len(x), n):
            chunk = x[i:i + n]
            if len(chunk) < n and codec in ("libopus", "libmp3lame", "aac"):
                chunk = np.pad(chunk, (0, n - len(chunk)))
            data = np.stack([chunk] * channels)
            if sfmt == "s16":
                arr = (data.T.reshape(1, -1) * 32767).astype(np.int16)
            elif sfmt == "flt":
                arr = np.ascontiguousarray(data.T.reshape(1, -1))
            else:
                arr = np.ascontiguousarray(data)
            f = av.AudioFrame.from_ndarray(arr, format=sfmt, layout=layout)
            f.sample_rate, f.pts, f.time_base = rate, i, fractions.Fraction(1, rate)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def tiny_net(seed: int = 0, lookahead: int = 3):
    import torch

    from engine.audio import AudioConfig, build_audio_net
    torch.manual_seed(seed)
    cfg = AudioConfig(channels=16, dilations=(1, 2, 4), lookahead_frames=lookahead,
                      out_names=[f"speech{i:02d}" for i in range(10)])
    return build_audio_net(cfg).eval()


@pytest.fixture(scope="module")
def shipped():
    if not DEFAULT_AUDIO.exists():
        pytest.skip("no audio model in the default model folder")
    from engine.audio import load_audio_model
    return load_audio_model()


# ----------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("suffix,rate,channels", [(".wav", 44100, 2), (".wav", 8000, 1), (".mp3", 22050, 2),
                                                  (".m4a", 48000, 2), (".ogg", 48000, 1), (".flac", 32000, 2)])
def test_any_format_rate_and_layout_decodes_to_16k_mono(tmp_path, suffix, rate, channels):
    from engine.audio import SAMPLE_RATE, read_audio
    f = write_audio(tmp_path / f"tone{suffix}", seconds=1.0, rate=rate, channels=channels, freq=500.0)
    x = read_audio(f)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) / SAMPLE_RATE - 1.0) < 0.1                  # codec padding/priming at most
    spec = np.abs(np.fft.rfft(x[2000:2000 + 8000]))
    assert abs(np.argmax(spec) * SAMPLE_RATE / 8000 - 500.0) <= 4    # the tone survives resampling
    assert 0.15 < np.abs(x).max() < 0.4


def test_chunks_stream_a_file_in_pieces(tmp_path):
    from engine.audio import audio_chunks, read_audio
    f = write_audio(tmp_path / "long.wav", seconds=3.0, rate=22050)
    chunks = list(audio_chunks(f, chunk_s=0.5))
    assert len(chunks) == 6 and all(len(c) == 8000 for c in chunks)
    assert np.array_equal(np.concatenate(chunks), read_audio(f))
    assert len(read_audio(f, max_seconds=1.25)) == 20000


def test_bad_audio_inputs_are_clear_errors(tmp_path):
    from engine.audio import AudioError, predict_file, read_audio
    with pytest.raises(FileNotFoundError, match="audio not found"):
        read_audio(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="a folder"):
        read_audio(tmp_path)
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"this is not audio at all" * 50)
    with pytest.raises(AudioError, match="cannot read audio .*unsupported"):
        read_audio(junk)
    vid = kit.write_video(tmp_path / "silent_video.mp4", [np.zeros((64, 64, 3), np.uint8)] * 5)
    with pytest.raises(AudioError, match="no audio stream"):
        read_audio(vid)
    empty = kit.write_wav(tmp_path / "empty.wav", np.zeros((0, 2), np.int16))
    with pytest.raises(AudioError, match="empty"):
        read_audio(empty)
    quiet = kit.write_wav(tmp_path / "quiet.wav", np.zeros((48000, 2), np.int16))
    with pytest.raises(AudioError, match="silent"):
        predict_file(quiet, tiny_net())
    cut = tmp_path / "cut.flac"
    data = write_audio(tmp_path / "whole.flac", seconds=2.0).read_bytes()
    cut.write_bytes(data[:60])                                   # a header and nothing else
    with pytest.raises(AudioError):
        read_audio(cut)


# ----------------------------------------------------------------------------------- features, net
def test_log_mel_is_causal_and_streams_exactly():
    from engine.audio import HOP, MelStream, log_mel
    rng = np.random.default_rng(0)
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    whole = log_mel(x)
    assert whole.shape == (100, 64)
    y = x.copy()
    y[5000:] = 0.0                                              # later sound never changes earlier frames
    assert np.array_equal(log_mel(y)[:5000 // HOP], whole[:5000 // HOP])
    s, parts, i = MelStream(), [], 0
    while i < len(x):
        n = int(rng.integers(1, 900))
        parts.append(s.push(x[i:i + n]))
        i += n
    assert np.abs(np.concatenate(parts) - whole).max() < 1e-4


def test_stream_equals_whole_run_and_respects_the_lookahead():
    import torch

    from engine.audio import FRAME_RATE, AudioStream, log_mel
    net = tiny_net(lookahead=3)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(8000).astype(np.float32) * 0.1
    with torch.inference_mode():
        pad = np.full((net.cfg.receptive_field - 1, 64), np.log(1e-6), np.float32)
        ref = net(torch.from_numpy(np.concatenate([pad, log_mel(x)])[None]))[0, len(pad):].numpy()
    st, ts, ps, i = AudioStream(net), [], [], 0
    while i < len(x):
        n = int(rng.integers(50, 1500))
        t, p = st.push(x[i:i + n])
        ts.append(t)
        ps.append(p)
        i += n
    t, p = np.concatenate(ts), np.concatenate(ps)
    assert np.abs(p - ref).max() < 1e-4
    assert np.allclose(t, (np.arange(len(t)) + 1) / FRAME_RATE - 0.03)     # stamped lookahead earlier


def test_model_file_round_trip_and_corruption(tmp_path):
    import torch

    from engine.audio import load_audio_model, save_audio_model
    from engine.checkpoint import CheckpointError
    net = tiny_net()
    f = save_audio_model(tmp_path, net, meta={"note": "test"})
    back = load_audio_model(tmp_path)
    x = torch.randn(1, 40, 64)
    assert torch.allclose(net(x), back(x)) and back.cfg == net.cfg and back.meta["note"] == "test"
    raw = bytearray(f.read_bytes())
    raw[-8:] = b"\x7f" * 8                                     # flip weight bytes
    f.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt|not finite"):
        load_audio_model(f)
    with pytest.raises(CheckpointError, match="no audio model"):
        load_audio_model(tmp_path / "nowhere")


def test_mic_driver_holds_then_eases_closed_on_a_dropout():
    """MicDriver: the newest prediction while sound comes; after a dropout it holds ``hold_s`` and then
    eases to the closed mouth (p_speech = 0); an ``av.AudioFrame`` of any rate/layout is taken as is;
    in the mix it sets the speech group only."""
    import fractions

    import av

    from streaming.drivers import DriverMix, MicDriver
    now = [100.0]
    net = tiny_net()
    with __import__("torch").no_grad():
        net.out.bias.fill_(0.5)
    mic = MicDriver(net, 30, 40, hold_s=0.2, ease_s=0.1, clock=lambda: now[0])
    assert np.all(mic.value() == 0)                            # nothing heard yet: closed
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 1920)) * 3000).astype(np.int16)
    f = av.AudioFrame.from_ndarray(x.T.reshape(1, -1).copy(), format="s16", layout="stereo")
    f.sample_rate, f.pts, f.time_base = 48000, 0, fractions.Fraction(1, 48000)
    mic.push_frame(f)        # 40 ms at 48 kHz stereo -> 4 feature frames (the resampler keeps a few samples back)
    v = mic.value()
    assert mic.stream.frames >= 3 and np.all(v[:30] == 0) and np.abs(v[30:]).max() > 0.1
    now[0] += 0.15
    assert np.array_equal(mic.value(), v)                      # within the hold: held
    now[0] += 0.35                                             # 0.3 s past the hold: 3 time constants
    assert np.abs(mic.value()).max() < np.abs(v).max() * 0.06
    mix = DriverMix(30, 40, rest=np.full(40, 0.3, np.float32))
    mix.set_driver("mic", mic)
    mix.route("speech", "mic")
    mix.route("exp", "rest")
    now[0] = 100.0
    out = mix.value(0.0)
    assert np.allclose(out[:30], 0.3) and np.allclose(out[30:], np.clip(v[30:], -1, 1))


# -------------------------------------------------------------------------------- the shipped model
def test_silence_closes_the_mouth(shipped):
    """Digital silence and faint room noise (-70 dBFS) give a closed mouth: lips_part and jaw_open
    near the neutral, and the mesh's lip gap no wider than the neutral's by more than a pixel."""
    from engine.audio import predict_samples
    from engine.blendshapes import load_default_face_model
    from engine.geometry import mouth_opening
    names = shipped.cfg.out_names
    lips, jaw = names.index("lips_part"), names.index("jaw_open")
    fm = load_default_face_model()
    rng = np.random.default_rng(0)
    neutral = mouth_opening(fm.instantiate(np.zeros(fm.n_params)))
    for x in (np.zeros(32000, np.float32), rng.standard_normal(32000).astype(np.float32) * 10 ** (-70 / 20)):
        t, p = predict_samples(x, shipped)
        assert np.abs(p[:, [lips, jaw]]).max() < 0.15, p[:, [lips, jaw]].max(0)
        full = np.zeros(fm.n_params)
        full[fm.n_exp:] = p.mean(0)
        assert mouth_opening(fm.instantiate(full)) - neutral < 1.0


def test_speech_opens_the_mouth_and_silence_closes_it_again(shipped, shared_data):
    """Held-out speech (a held-out talking clip's sound) moves lips_part; the silence appended after it
    brings it back."""
    from engine.audio import predict_samples, read_audio
    x = read_audio(shared_data / "talking" / "tpsmm_driving.mp4", max_seconds=4.0)
    x = np.concatenate([x, np.zeros(16000, np.float32)])
    t, p = predict_samples(x, shipped)
    lips = p[:, shipped.cfg.out_names.index("lips_part")]
    speaking, after = lips[t < 3.5], lips[t > 4.6]
    assert speaking.std() > 0.05
    assert np.abs(after).max() < 0.15 and speaking.max() > np.abs(after).max() + 0.1


def test_track_from_audio_cli(shipped, shared_data, tmp_path):
    from engine.cli import main
    from engine.tracks import load_track
    wav = shared_data / "audio" / "dreamtalk_German1.wav"
    out = tmp_path / "speech.npz"
    assert main(["track", "from-audio", str(wav), "-o", str(out), "--fps", "30", "--max-seconds", "3",
                 "--quiet"]) == 0
    tr = load_track(out)
    assert tr.fps == 30 and tr.n_speech == 10 and tr.expression is None and abs(len(tr) - 90) <= 1
    assert tr.audio_path.resolve() == wav.resolve() and tr.speech_names == list(shipped.cfg.out_names)
    assert tr.speech[:, 0].std() > 0.03                       # the lips move with the speech
    assert main(["track", "from-audio", str(tmp_path / "nope.wav"), "-o", str(out)]) == 1


def test_render_from_a_sound_file(tmp_path):
    """``render --driver speech.wav`` (a tiny random generator, a tiny random audio model placed in its
    folder): frames at the asked fps, the sound in the output, the mouth parameters moving."""
    import cv2

    from engine.audio import save_audio_model
    from streaming.render import render
    ck = kit.tiny_checkpoint(tmp_path / "ck")
    net = tiny_net()
    with __import__("torch").no_grad():
        net.out.weight.mul_(20.0)                               # visible motion from a random net
    save_audio_model(ck, net)
    portrait = tmp_path / "portrait.png"
    cv2.imwrite(str(portrait), kit.synth_portrait(0)[:, :, ::-1])
    rng = np.random.default_rng(0)
    envelope = (np.sin(np.linspace(0, 6 * np.pi, 48000 * 2)) > 0)
    pcm = (rng.standard_normal(48000 * 2) * 8000 * envelope).astype(np.int16)
    wav = kit.write_wav(tmp_path / "speech.wav", np.stack([pcm, pcm], 1))
    out = tmp_path / "talk.mp4"
    res = render(portrait, wav, out, checkpoint=ck, models=kit.load_tiny(ck), size=128, fps=25, progress=False)
    assert res.frames == 50 and res.audio_duration is not None and abs(res.audio_duration - 2.0) < 0.05
    from engine.video import read_frames
    frames = [f.astype(float) for f, _ in read_frames(out)]
    assert max(np.abs(frames[i] - frames[i + 5]).mean() for i in range(0, 40, 5)) > 0.3
    silent = kit.write_wav(tmp_path / "silent.wav", np.zeros((48000, 2), np.int16))
    from engine.audio import AudioError
    with pytest.raises(AudioError, match="silent"):
        render(portrait, silent, tmp_path / "x.mp4", checkpoint=ck, models=kit.load_tiny(ck), size=128,
               progress=False)
    assert not (tmp_path / "x.mp4").exists()


# ------------------------------------------------------------------------------------------ training
def _labels(folder: Path, rng, clips=((False, 0.0), (True, 0.0)), blocks: int = 12) -> Path:
    """A labels folder like trainer.audio_labels': clips of (held out, how far in s the lips lead their
    loudness, or None: lips that ignore the sound)."""
    from engine.tracks import ParamTrack, save_track
    folder.mkdir()
    entries = []
    for k, (held, lead) in enumerate(clips):
        env = np.repeat(rng.random(blocks) > 0.5, 4000).astype(np.float32)
        x = (rng.standard_normal(len(env)) * 0.2 * env).astype(np.float32)
        wav = kit.write_wav(folder / f"c{k}.wav", np.stack([(x * 32767).astype(np.int16)] * 2, 1), rate=16000)
        t = np.arange(0, len(env) / 16000, 0.04)
        sp = np.zeros((len(t), 10), np.float32)
        sp[:, 0] = (rng.random(len(t)) if lead is None else
                    env[np.minimum(((t + lead) * 16000).astype(int), len(env) - 1)])
        save_track(ParamTrack(times=t, speech=sp, fps=25, speech_names=["lips_part", "b", "c", "jaw_open"] +
                              [f"s{i}" for i in range(6)], audio=str(wav)), folder / f"c{k}.npz")
        entries.append({"name": f"c{k}", "clip": f"c{k}", "track": f"c{k}.npz", "audio": f"c{k}.wav",
                        "held_out": held})
    (folder / "manifest.json").write_text(json.dumps({"clips": entries, "skipped": {}}))
    return folder


def test_av_lag_measures_how_far_the_lips_lead_the_sound(tmp_path):
    from trainer.audio import load_clips
    from trainer.audio_labels import av_lag, clear_lag
    labels = _labels(tmp_path / "labels", np.random.default_rng(3), blocks=40,
                     clips=((False, 0.0), (False, 0.16), (True, -0.08), (False, None)))
    lags = [av_lag(c.wave, c.times, c.speech[:, 0]) for c in load_clips(labels)[0]]
    assert [lag for lag, _ in lags[:3]] == pytest.approx([0.0, 0.16, -0.08], abs=0.021)
    assert [clear_lag(*x) for x in lags] == [True, True, True, False]     # the last one's lips ignore the sound


def test_align_lags_moves_each_clip_to_the_median_lag(tmp_path):
    from trainer.audio import align_lags, load_clips
    from trainer.audio_labels import av_lag
    labels = _labels(tmp_path / "labels", np.random.default_rng(3), blocks=40,
                     clips=((False, 0.0), (False, 0.16), (False, 0.04), (False, None)))
    clips, names = load_clips(labels)
    before = [c.times.copy() for c in clips]
    shifts = align_lags(clips, names)
    assert sorted(shifts) == ["c0", "c1", "c2"]               # the lips that ignore the sound are left alone
    assert np.array_equal(clips[3].times, before[3])
    assert [av_lag(c.wave, c.times, c.speech[:, 0])[0] for c in clips[:3]] == pytest.approx([0.04] * 3, abs=0.021)


def test_train_audio_resumes_exactly(tmp_path):
    from trainer.audio import AudioTrainConfig, train
    from engine.audio import load_audio_model
    labels = _labels(tmp_path / "labels", np.random.default_rng(0))
    base = dict(labels=str(labels), data=str(tmp_path), noise=[], steps=4, batch_size=2, window_s=0.5,
                channels=8, checkpoint_every=2, val_every=2, threads=1)
    a = train(AudioTrainConfig(out=str(tmp_path / "a"), **base), progress=False)
    assert a["steps"] == 4 and a["validation"]["lips_part"]["corr"] == a["validation"]["lips_part"]["corr"]
    # a second run, stopped after step 2 (its last checkpoint removed), then resumed
    import shutil
    train(AudioTrainConfig(out=str(tmp_path / "b"), **base), progress=False)
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-0000004")
    train(AudioTrainConfig(out=str(tmp_path / "b"), **base), resume=True, progress=False)
    wa = load_audio_model(tmp_path / "a" / "checkpoints" / "step-0000004" / "audio.safetensors").state_dict()
    wb = load_audio_model(tmp_path / "b" / "checkpoints" / "step-0000004" / "audio.safetensors").state_dict()
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)
    assert (tmp_path / "a" / "tb").is_dir() and json.loads((tmp_path / "a" / "summary.json").read_text())["steps"] == 4


def test_audio_onnx_export_matches_torch(tmp_path):
    """exporters.onnx.export_audio: the ONNX graph gives PyTorch's output (random and tonal inputs,
    lengths 1..400), carries its config, and streams the same as the torch network."""
    from engine.audio import AudioStream, load_audio_model, save_audio_model
    from exporters.onnx import export_audio
    net = tiny_net()
    save_audio_model(tmp_path / "m", net)
    rec = export_audio(tmp_path / "m", tmp_path / "m" / "audio.onnx")
    assert rec["verification"]["passed"] and rec["verification"]["max_abs_diff"] < 1e-4
    (tmp_path / "m" / "audio.safetensors").unlink()          # an export folder: audio.onnx only
    onx = load_audio_model(tmp_path / "m")
    assert type(onx).__name__ == "OnnxAudioNet" and onx.cfg == net.cfg
    x = np.random.default_rng(3).standard_normal(6000).astype(np.float32) * 0.1
    a, b = AudioStream(net), AudioStream(onx)
    for i in range(0, 6000, 640):
        ta, pa = a.push(x[i:i + 640])
        tb, pb = b.push(x[i:i + 640])
        assert np.array_equal(ta, tb) and np.abs(pa - pb).max() < 1e-4


def test_the_audio_networks_onnx_graph_is_cached(tmp_path, monkeypatch):
    """to_onnxruntime converts a network once: the next load reads the cached graph and computes the same;
    another network's weights are converted anew."""
    import engine.audio as audio
    import engine.onnx_graph as og
    monkeypatch.setenv(og.CACHE_ENV, str(tmp_path / "cache"))
    built = []
    convert = audio.audio_onnx_bytes
    monkeypatch.setattr(audio, "audio_onnx_bytes", lambda net: built.append(1) or convert(net))
    net = tiny_net()
    mel = np.random.default_rng(0).standard_normal((1, 30, net.cfg.n_mels)).astype(np.float32)
    first = audio.to_onnxruntime(net).run_numpy(mel)
    np.testing.assert_array_equal(audio.to_onnxruntime(net).run_numpy(mel), first)
    assert len(built) == 1
    audio.to_onnxruntime(tiny_net(seed=1))
    assert len(built) == 2


def test_a_long_file_is_streamed_in_chunks(tmp_path, monkeypatch):
    """``predict_file`` (what ``track from-audio`` and ``render`` use) never holds more than one chunk of
    the decoded sound: a 60 s file in 2 s chunks gives predictions over all of it."""
    import engine.audio as ea
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(8000 * 60) * 3000).astype(np.int16)
    wav = kit.write_wav(tmp_path / "long.wav", pcm[:, None], rate=8000)
    seen = []
    real = ea.audio_chunks

    def spy(*a, **k):
        for c in real(*a, **{**k, "chunk_s": 2.0}):
            seen.append(len(c))
            yield c
    monkeypatch.setattr(ea, "audio_chunks", spy)
    t, p, dur = ea.predict_file(wav, tiny_net())
    assert abs(dur - 60.0) < 0.01 and len(seen) == 30 and max(seen) == 32000
    assert t[0] >= 0 and t[-1] > 59.9 and len(p) == len(t) and abs(len(t) - 6000) <= 2
