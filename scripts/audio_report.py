"""Evaluate the audio model on the held-out talking clips; write ``reports/audio/README.md`` and
``metrics.json``.

    python scripts/audio_report.py [--model engine/assets/default_model] [--labels runs/audio-labels]
        [--render-seconds 6] [-o reports/audio]

1. Parameters: the clip's soundtrack streamed through the model (``engine.audio``, exactly as
   ``track from-audio`` does) against the speech parameters fitted to its video frames
   (``trainer.audio_labels``): Pearson correlation and amplitude ratio (std predicted / std fitted) of
   ``lips_part`` (the component that opens the lips: 0.87 correlation with the mesh's lip gap) and
   ``jaw_open``, per clip and pooled (each clip's mean removed). Baseline: the sound's loudness (log
   energy) scaled to the fitted lips by least squares on the training clips, at the same look-ahead.
2. Rendered: the embedded default model renders the held-out portraits (the photo d30, the painting
   s9) driven by the predicted track (``streaming.render``, 256 px); the face mesh measures the mouth
   opening of each rendered frame and of the real video's frame at the same time (``trainer.motion``):
   correlation and amplitude ratio.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def loudness_baseline(train, val, names, lookahead_frames):
    """The sound's log energy, scaled by least squares to the training clips' lips_part."""
    from engine.audio import FRAME_RATE
    from trainer.audio import frame_labels
    from trainer.audio_labels import loudness
    i = names.index("lips_part")
    xs, ys = [], []
    for c in train:
        e = loudness(c.wave)
        y, v = frame_labels(c, len(e), 0.0, lookahead_frames)
        xs.append(e[v])
        ys.append(y[v, i])
    x, y = np.concatenate(xs), np.concatenate(ys)
    a, b = np.polyfit(x, y, 1)
    out = {}
    for c in val:
        e = loudness(c.wave)
        t = (np.arange(len(e)) + 1) / FRAME_RATE - lookahead_frames / FRAME_RATE
        out[c.name] = np.interp(c.times, t, a * e + b)
    return out


def render_rows(net, clips, portrait: Path, seconds: float, size: int) -> dict:
    from engine.animator import load_models
    from engine.audio import track_from_audio
    from engine.video import read_frames
    from streaming.render import render
    from trainer.motion import OpeningMeter, amplitude_ratio, pearson
    models = load_models(None)
    meter = OpeningMeter()
    rows = {}
    try:
        with tempfile.TemporaryDirectory() as d:
            for c in clips:
                tr = Path(d) / f"{c.name}.npz"
                track_from_audio(c.audio, tr, fps=25.0, net=net, max_seconds=seconds)
                out = Path(d) / f"{c.name}.mp4"
                render(portrait, tr, out, models=models, size=size, progress=False, no_audio=True)
                rendered = [(t, f) for f, t in read_frames(out)]     # rendered time = audio time
                rt = np.array([t for t, _ in rendered])
                real, res = [], []
                for i, (f, t) in enumerate(read_frames(SHARED / c.clip, end=seconds)):
                    if i % 3:
                        continue
                    j = int(np.argmin(np.abs(rt - (t + c.audio_offset))))   # video time -> audio time
                    if abs(rt[j] - (t + c.audio_offset)) > 0.021:
                        continue
                    real.append(meter(f)[0])
                    res.append(meter(rendered[j][1])[0])
                rows[c.name] = {"frames": len(real), "mouth_corr": pearson(real, res),
                                "mouth_ratio": amplitude_ratio(real, res)}
    finally:
        meter.close()
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder or audio.safetensors (default: the embedded one)")
    ap.add_argument("--labels", default="runs/audio-labels")
    ap.add_argument("--portraits", nargs="+",
                    default=[str(SHARED / "portraits" / f"{n}.jpg") for n in ("d30", "s9")],
                    help="held-out portraits to render (default: the photo d30 and the painting s9)")
    ap.add_argument("--render-seconds", type=float, default=6.0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("-o", "--out", default="reports/audio")
    args = ap.parse_args(argv)
    from engine.atomic import write_text_atomic
    from engine.audio import load_audio_model
    from trainer.audio import _corr, evaluate_clips, load_clips
    from trainer.audio_labels import av_lag, clear_lag
    net = load_audio_model(args.model)
    clips, names = load_clips(args.labels)
    manifest = json.loads((Path(args.labels) / "manifest.json").read_text())
    by_name = {e["name"]: e for e in manifest["clips"]}
    train = [c for c in clips if not c.held_out]
    val = [c for c in clips if c.held_out]
    model = Path(net.file).resolve()
    metrics = {"model": str(model.relative_to(ROOT) if model.is_relative_to(ROOT) else model),
               "lookahead_ms": round(net.cfg.lookahead_s * 1000),
               "held_out": [by_name[c.name]["clip"] for c in val], "skipped": manifest.get("skipped", {})}
    metrics["params"] = evaluate_clips(net, val, names)
    # Timing: the same with each held-out clip's labels moved to the training clips' median lag of sound
    # behind lips (av_lag, clips with a clear lag); its own lag is estimated from loudness: optimistic.
    li = names.index("lips_part")
    lags = {c.name: av_lag(c.wave, c.times, c.speech[:, li]) for c in clips}
    ref = float(np.median([lags[c.name][0] for c in train if clear_lag(*lags[c.name])]))
    metrics["lags"] = {"training_median_s": ref, "held_out_s": {c.name: lags[c.name][0] for c in val}}
    synced = [dataclasses.replace(c, times=c.times + (lags[c.name][0] - ref)) for c in val]
    metrics["params_synced"] = evaluate_clips(net, synced, names)
    base = loudness_baseline(train, val, names, net.cfg.lookahead_frames)
    metrics["loudness_baseline"] = {c.name: {"corr": _corr(base[c.name], c.speech[:, li]),
                                             "amplitude": float(base[c.name].std() / c.speech[:, li].std())}
                                    for c in val}
    a = np.concatenate([base[c.name] - base[c.name].mean() for c in val])
    b = np.concatenate([c.speech[:, li] - c.speech[:, li].mean() for c in val])
    metrics["loudness_baseline_pooled"] = {"corr": _corr(a, b), "amplitude": float(a.std() / b.std())}
    for c in val:
        c.clip = by_name[c.name]["clip"]
        c.audio = Path(args.labels) / by_name[c.name]["audio"]
        from engine.tracks import load_track
        c.audio_offset = load_track(Path(args.labels) / by_name[c.name]["track"], check_audio=False).audio_offset
    try:
        metrics["rendered"] = {Path(f).stem: render_rows(net, val, Path(f), args.render_seconds, args.size)
                               for f in args.portraits}
    except Exception as e:      # the parameter figures stand on their own
        metrics["rendered_error"] = f"{type(e).__name__}: {e}"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=1))
    p = metrics["params"]
    lines = ["# The audio model on held-out talking clips", "",
             f"Model `{metrics['model']}` (look-ahead {metrics['lookahead_ms']} ms); held-out clips: "
             + ", ".join(f"`{h}`" for h in metrics["held_out"]) + ". Made by `python scripts/audio_report.py`.", "",
             "| clip | lips_part corr | lips_part amplitude | jaw_open corr | jaw_open amplitude "
             "| loudness baseline lips corr |",
             "|---|---|---|---|---|---|"]
    for c in val:
        r = p["clips"][c.name]
        lines.append(f"| {c.name} | {r['lips_part']['corr']:.2f} | {r['lips_part']['amplitude']:.2f} | "
                     f"{r['jaw_open']['corr']:.2f} | {r['jaw_open']['amplitude']:.2f} | "
                     f"{metrics['loudness_baseline'][c.name]['corr']:.2f} |")
    lines.append(f"| **pooled** | **{p['lips_part']['corr']:.2f}** | **{p['lips_part']['amplitude']:.2f}** | "
                 f"{p['jaw_open']['corr']:.2f} | {p['jaw_open']['amplitude']:.2f} | "
                 f"{metrics['loudness_baseline_pooled']['corr']:.2f} |")
    q = metrics["params_synced"]
    lines += ["", f"The held-out clips' sound comes later than their lips by "
              + ", ".join(f"{metrics['lags']['held_out_s'][c.name] * 1000:.0f}" for c in val)
              + f" ms (`trainer.audio_labels.av_lag`; the training clips' median: "
              f"{metrics['lags']['training_median_s'] * 1000:.0f} ms). With each held-out clip's labels moved to "
              f"the training clips' lag (its lag estimated from the sound itself: an optimistic figure), pooled "
              f"lips_part correlation {q['lips_part']['corr']:.2f}, amplitude {q['lips_part']['amplitude']:.2f}; "
              f"jaw_open {q['jaw_open']['corr']:.2f} / {q['jaw_open']['amplitude']:.2f}."]
    if metrics.get("rendered"):
        lines += ["", f"Rendered (default model, {args.size} px, first {args.render_seconds:g} s of each clip): "
                  "mouth opening of the result against the real video's, by the face mesh.",
                  "", "| portrait | clip | frames | mouth corr | mouth amplitude |", "|---|---|---|---|---|"]
        for portrait, rows in metrics["rendered"].items():
            for k, r in rows.items():
                lines.append(f"| {portrait} | {k} | {r['frames']} | {r['mouth_corr']:.2f} "
                             f"| {r['mouth_ratio']:.2f} |")
    if metrics.get("rendered_error"):
        lines += ["", f"Rendered figures failed: {metrics['rendered_error']}"]
    lines += ["", "Clips left out of the labels: " + "; ".join(f"`{k}`: {v}" for k, v in metrics["skipped"].items())]
    write_text_atomic(out / "README.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
