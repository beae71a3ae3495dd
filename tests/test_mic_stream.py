"""The microphone route of ``slidergan serve``: an aiortc client sends sound as its audio track (a
microphone stand-in), the server's audio model moves the lips; silence closes them, a dropout never
freezes the stream. In-process server, tiny random generator, the shipped audio model."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from tests import streamkit as kit
from tests.test_audio import DEFAULT_AUDIO
from tests.test_streaming import serving

pytest.importorskip("aiortc")
pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    if not DEFAULT_AUDIO.exists():
        pytest.skip("no audio model in the default model folder")
    import cv2

    from streaming.server import Engine, configure_ice
    configure_ice("loopback")
    d = tmp_path_factory.mktemp("mic")
    ck = kit.tiny_checkpoint(d / "ck")
    cv2.imwrite(str(d / "portrait.png"), kit.synth_portrait(0)[:, :, ::-1])
    eng = Engine(kit.load_tiny(ck), output_size=128, max_sessions=1, checkpoint=ck)
    eng.add_portrait_file(d / "portrait.png")
    eng.prepare(eng.portraits["portrait"])
    yield eng
    eng.close()


async def _sample(session, seconds: float, index: int) -> np.ndarray:
    out = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        out.append(float(session.params[index]))
        await asyncio.sleep(0.04)
    return np.array(out)


def test_microphone_moves_the_lips_and_silence_closes_them(engine, shared_data):
    from engine.audio import read_audio
    from streaming.client import SoundSource, StreamClient
    speech = read_audio(shared_data / "talking" / "tpsmm_driving.mp4", rate=48000, max_seconds=4.0)
    sound = SoundSource(np.concatenate([speech, np.zeros(48000 * 6, np.float32)]), rate=48000)
    lips = engine.n_exp + engine.audio_net.cfg.out_names.index("lips_part")

    async def run():
        async with serving(engine) as url:
            async with StreamClient(url, speech="mic", exp="sliders", sound=sound) as c:
                await c.wait_frames(5)
                session = engine.sessions[c.session]
                talking = await _sample(session, 3.3, lips)             # the 4 s of speech
                # the silence after it, from 1 s on (transport, the look-ahead and the model's 0.31 s of
                # context keep the last of the speech in view that long)
                await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - sound._t0)))
                quiet = await _sample(session, 1.0, lips)
                mic = session.mic
                stats = session.status()["mic"]
                buffers = [t.receiver._RTCRtpReceiver__jitter_buffer for t in session.pc.getTransceivers()
                           if t.receiver.track is session.mic_track]
                sound.pause()                                          # a dropout: no packets at all
                n0 = len(c.frame_times)
                await asyncio.sleep(1.0)
                frames_in_dropout = len(c.frame_times) - n0
                eased = float(session.params[lips])
                return talking, quiet, mic, stats, frames_in_dropout, eased, buffers

    talking, quiet, mic, stats, frames_in_dropout, eased, buffers = asyncio.run(run())
    assert mic is not None and mic.frames > 100 and stats["heard"]
    # the microphone's sound is not held back for a smooth playout (aiortc's default: 4 frames, 80 ms)
    from streaming.rtp import MIC_PREFETCH
    assert [b._prefetch for b in buffers] == [MIC_PREFETCH]
    assert talking.std() > 0.04 and talking.max() > 0.15, talking
    assert np.abs(quiet).max() < 0.15, quiet
    assert frames_in_dropout >= 10            # the stream goes on without sound
    assert abs(eased) < 0.05
