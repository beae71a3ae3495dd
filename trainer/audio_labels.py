"""Labels for the audio model: every talking clip with audio in the shared data, as a parameter
track fitted from its video (``engine.tracks.extract_track``: face mesh per frame, blendshape fit,
p = [p_exp, p_speech]) with its soundtrack copied next to it as 16-bit PCM wav.

    python -m trainer.audio_labels ../shared/data -o runs/audio-labels

Resumable: a clip whose track and audio are already there is skipped. ``manifest.json`` lists the
clips, which are held out (``trainer.holdout``) and why any was skipped. A clip whose soundtrack is
silent (under ``SOUND_SHARE`` of its 100 ms windows above -45 dBFS: LivePortrait's d3, d9, d18 and d19
carry a silent AAC track) is left out: its mouth moves to no sound, and it would teach the model to
open the mouth in silence.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)
SOUND_SHARE = 0.1
SOUND_DBFS = -45.0
MAX_LAG_S = 0.4
CLEAR_LAG_CORR = 0.3    # below it a clip's loudness says too little about its lips to time them


def sound_share(wave) -> float:
    """The share of 100 ms windows of a 16 kHz signal whose level is above SOUND_DBFS."""
    import numpy as np
    n = len(wave) // 1600
    if n == 0:
        return 0.0
    w = np.asarray(wave[:n * 1600], np.float64).reshape(n, 1600)
    return float((10 * np.log10((w ** 2).mean(1) + 1e-12) > SOUND_DBFS).mean())


def loudness(wave):
    """The sound's log energy per 10 ms feature frame (``engine.audio.log_mel`` summed over its bands)."""
    import numpy as np
    from engine.audio import log_mel
    return np.log(np.exp(log_mel(np.asarray(wave, np.float32))).sum(1) + 1e-6)


def av_lag(wave, times, lips, max_lag_s: float = MAX_LAG_S) -> tuple[float, float]:
    """How much later the sound comes than the lips: the shift (s, -max_lag_s..+max_lag_s, 10 ms
    steps) of the ``loudness`` that correlates best with the fitted lip opening ``lips`` at ``times``
    (audio clock); and that correlation. Positive: the lips lead the sound.

    The sources disagree: on the shared data's training clips whose lag is clear, from -0.19 to +0.21 s
    (median 25 ms; GRID's six alone span that range), on the three held-out clips 0.15-0.16 s."""
    import numpy as np
    from engine.audio import FRAME_RATE
    from trainer.audio import _corr
    e = loudness(wave)
    te = (np.arange(len(e)) + 1) / FRAME_RATE
    lips = np.asarray(lips, np.float64)
    best = (0.0, -np.inf)
    for lag in np.arange(-max_lag_s, max_lag_s + 1e-9, 1.0 / FRAME_RATE):
        t = np.asarray(times) + lag
        inside = (t >= te[0]) & (t <= te[-1])
        if inside.sum() < 10:
            continue
        c = _corr(np.interp(t[inside], te, e), lips[inside])
        if c > best[1]:
            best = (float(round(lag, 3)), c)
    return best


def clear_lag(lag: float, corr: float) -> bool:
    """Whether ``av_lag``'s answer times the clip: a clear correlation, not at the searched range's end."""
    return corr >= CLEAR_LAG_CORR and abs(lag) < MAX_LAG_S


def audio_clips(data: str | Path) -> list[Path]:
    """Every video of talking/ and driving/ that has an audio stream, sorted."""
    from engine.video import video_info
    data = Path(data)
    clips = sorted(p for sub in ("talking", "driving") for p in (data / sub).glob("*.mp4"))
    return [p for p in clips if video_info(p).has_audio]


def label_name(clip: Path, data: Path) -> str:
    """``talking/grid_bbaf2n.mp4`` -> ``talking__grid_bbaf2n``."""
    rel = clip.resolve().relative_to(data.resolve())
    return "__".join(rel.with_suffix("").parts)


def build_labels(data: str | Path, out: str | Path, progress: bool = True) -> dict:
    """Fit every audio clip under ``data`` (skipping those done) and write ``out/manifest.json``."""
    from engine.atomic import write_text_atomic
    from engine.audio import read_audio
    from engine.tracks import extract_track
    from trainer.holdout import is_held_out
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entries, skipped = [], {}
    clips = audio_clips(data)
    for i, clip in enumerate(clips):
        name = label_name(clip, data)
        track_path, audio_path = out / f"{name}.npz", out / f"{name}.wav"
        if not (track_path.exists() and audio_path.exists()):
            t0 = time.time()
            try:
                extract_track(clip, track_path, audio="wav", progress=progress)
            except ValueError as e:     # no usable face, undecodable: say so and go on
                skipped[str(clip.relative_to(data))] = str(e)
                log.warning("skipped %s: %s", clip, e)
                continue
            print(f"[{i + 1}/{len(clips)}] {name}: {time.time() - t0:.1f} s", flush=True)
        share = sound_share(read_audio(audio_path))
        if share < SOUND_SHARE:
            skipped[str(clip.relative_to(data))] = (f"silent soundtrack ({100 * share:.0f}% of 100 ms windows "
                                                    f"above {SOUND_DBFS:g} dBFS)")
            continue
        entries.append({"name": name, "clip": str(clip.relative_to(data)), "track": track_path.name,
                        "audio": audio_path.name, "held_out": is_held_out(clip, data)})
    manifest = {"data": str(data.resolve()), "clips": entries, "skipped": skipped}
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=1))
    return manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.audio_labels", description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="?", default="../shared/data")
    p.add_argument("-o", "--output", default="runs/audio-labels")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    m = build_labels(a.data, a.output, progress=not a.quiet)
    print(f"{len(m['clips'])} clips labelled ({sum(c['held_out'] for c in m['clips'])} held out), "
          f"{len(m['skipped'])} skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
