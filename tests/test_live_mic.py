"""``slidergan live --mic``: a clear message when there is no microphone (this machine has none: the
real PortAudio answer), and the lips following a microphone whose sounddevice stream is replaced at
the boundary by one that plays a sound file in real time."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests import streamkit as kit
from tests.test_audio import tiny_net

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import cv2
    import torch

    from engine.audio import save_audio_model
    d = tmp_path_factory.mktemp("livemic")
    ck = kit.tiny_checkpoint(d / "ck")
    net = tiny_net()
    with torch.no_grad():
        net.out.weight.mul_(20.0)                 # a random net that visibly moves with the sound
    save_audio_model(ck, net)
    cv2.imwrite(str(d / "portrait.png"), kit.synth_portrait(0)[:, :, ::-1])
    return {"ck": ck, "portrait": d / "portrait.png"}


def _args(env, out, *extra):
    return ["live", "--source", str(env["portrait"]), "--checkpoint", str(env["ck"]), "--backend", "torch",
            "--size", "128", "--camera", "none", "--no-window", "--record", str(out), *extra]


def test_no_microphone_is_a_clear_message(env, tmp_path, capsys):
    sd = pytest.importorskip("sounddevice", reason="sounddevice/PortAudio not installed")
    try:
        sd.query_devices(kind="input")
        pytest.skip("this machine has a microphone")
    except (sd.PortAudioError, ValueError):
        pass
    from engine.cli import main
    out = tmp_path / "x.mp4"
    assert main(_args(env, out, "--mic", "--max-seconds", "1")) == 1
    err = capsys.readouterr().err
    assert "no microphone" in err and "does not exist" in err and "Traceback" not in err
    assert main(_args(env, out, "--mic", "no-such-device", "--max-seconds", "1")) == 1
    assert "input device 'no-such-device' does not exist" in capsys.readouterr().err
    assert not out.exists()


class FakeInputStream:
    """sounddevice.InputStream's interface, feeding ``SOUND`` (float32 mono at the asked rate) to the
    callback in real time in its blocks from a thread, as PortAudio does."""
    SOUND = np.zeros(0, np.float32)

    def __init__(self, device=None, channels=1, samplerate=16000, dtype="float32", blocksize=320, callback=None):
        self.rate, self.block, self.callback = samplerate, blocksize, callback
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()

    def _run(self):
        t0, i = time.monotonic(), 0
        while not self._stop.is_set():
            a = i * self.block
            x = self.SOUND[a:a + self.block]
            x = np.pad(x, (0, self.block - len(x)))[:, None]
            self.callback(x, self.block, None, None)
            i += 1
            time.sleep(max(0.0, t0 + i * self.block / self.rate - time.monotonic()))

    def stop(self):
        self._stop.set()
        self._t.join(timeout=2)

    def close(self):
        pass


def test_live_mic_moves_the_lips(env, tmp_path, monkeypatch, capsys):
    sd = pytest.importorskip("sounddevice", reason="sounddevice/PortAudio not installed")
    from engine.cli import main
    from engine.video import read_frames
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 3) / 16000
    FakeInputStream.SOUND = (rng.standard_normal(len(t)) * 0.2 * (np.sin(2 * np.pi * 1.5 * t) > 0)).astype(np.float32)
    monkeypatch.setattr(sd, "query_devices", lambda device=None, kind=None: {
        "name": "fake mic", "max_input_channels": 1, "default_samplerate": 16000.0})
    monkeypatch.setattr(sd, "check_input_settings", lambda *a, **k: None)
    monkeypatch.setattr(sd, "InputStream", FakeInputStream)
    out = tmp_path / "mic.mp4"
    assert main(_args(env, out, "--mic", "--max-seconds", "2.5")) == 0
    said = capsys.readouterr().out
    assert "microphone blocks" in said and int(said.split("microphone blocks ")[1].split()[0]) > 50
    frames = [f.astype(np.float32) for f, _ in read_frames(out)]
    assert len(frames) > 20
    diffs = [np.abs(frames[i] - frames[i + 5]).mean() for i in range(0, len(frames) - 5, 5)]
    assert max(diffs) > 0.3, diffs
