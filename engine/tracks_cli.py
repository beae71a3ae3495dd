"""``slidergan track``: extract a parameter track from a video, or check a track file.

    slidergan track extract VIDEO -o TRACK.npz [--audio m4a|wav|none] [--start S] [--end S] [--smooth]
                                               [--neutral-from PHOTO|VIDEO]
    slidergan track from-audio SPEECH.wav -o TRACK.npz [--fps 25] [--model DIR] [--max-seconds S]
    slidergan track check TRACK.npz [--speech N] [--expression N]
"""
from __future__ import annotations

import argparse

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = sub.add_parser("extract", help="fit every frame of a video; write the track and its audio")
    e.add_argument("video", help="input video (any format PyAV reads)")
    e.add_argument("-o", "--output", required=True, help="track file to write (.npz)")
    e.add_argument("--audio", choices=["m4a", "wav", "none"], default="m4a",
                   help="copy the video's audio next to the track as .m4a (AAC, unchanged) or .wav "
                        "(default m4a)")
    e.add_argument("--start", type=float, default=0.0, help="first second to use")
    e.add_argument("--end", type=float, default=None, help="second to stop at")
    e.add_argument("--smooth", action="store_true",
                   help="One Euro filter over the parameters (the head's pose without its lag)")
    e.add_argument("--neutral-from", default=None, metavar="FILE",
                   help="p = 0 is this photo or video of the same face at rest instead of the video's own calmest "
                        "frames: a video that holds an expression all through keeps it in the track")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    a = sub.add_parser("from-audio", help="speech parameters from a sound file (the audio model); the track "
                                          "references the audio")
    a.add_argument("audio", help="sound file: wav, mp3, m4a, ogg, flac, ... (any rate, mono or stereo)")
    a.add_argument("-o", "--output", required=True, help="track file to write (.npz)")
    a.add_argument("--fps", type=float, default=25.0, help="track frame rate (default 25)")
    a.add_argument("--model", default=None, help="model folder with audio.safetensors (default: the embedded "
                                                 "default model's)")
    a.add_argument("--max-seconds", type=float, default=None, help="use at most this many seconds")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    c = sub.add_parser("check", help="validate a track file and print a summary")
    c.add_argument("track")
    c.add_argument("--speech", type=int, default=None, help="expected number of speech parameters")
    c.add_argument("--expression", type=int, default=None,
                   help="expected number of expression parameters")


def _summary(track) -> str:
    p = track.params
    lines = [
        f"{track.path}: {len(track)} frames, {track.fps:.3f} fps, {track.duration:.2f} s",
        f"  speech: {track.n_speech} parameters ({', '.join(track.speech_names[:3])}"
        f"{', ...' if track.n_speech > 3 else ''})",
        f"  expression: {track.n_expression} parameters" if track.expression is not None
        else f"  expression: none (zeros, width {track.n_expression})",
        f"  audio: {track.audio_path} (offset {track.audio_offset:.3f} s)" if track.audio
        else "  audio: none",
        f"  values: min {p.min():.3f}, max {p.max():.3f}, mean |p| {np.abs(p).mean():.3f}",
    ]
    out = float((np.abs(p) > 1.0).mean())
    if out > 0:
        lines.append(f"  note: {100 * out:.1f}% of the values lie outside [-1, 1]")
    missing = track.meta.get("frames_without_face")
    if missing:
        lines.append(f"  frames without a face (interpolated): {len(missing)}")
    if "fit_residual_px_mean" in track.meta:
        lines.append(f"  fit residual (128-crop px, RMS per point): mean "
                     f"{track.meta['fit_residual_px_mean']:.3f}, max {track.meta['fit_residual_px_max']:.3f}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from .tracks import extract_track, load_track
    if args.action == "extract":
        track = extract_track(args.video, args.output, audio=None if args.audio == "none" else args.audio,
                              start=args.start, end=args.end, smooth=args.smooth,
                              neutral_from=args.neutral_from, progress=not args.quiet)
        print(_summary(track))
        return 0
    if args.action == "from-audio":
        from .audio import audio_model_for, track_from_audio
        track = track_from_audio(args.audio, args.output, fps=args.fps, net=audio_model_for(args.model),
                                 max_seconds=args.max_seconds, progress=not args.quiet)
        print(_summary(track))
        return 0
    track = load_track(args.track)
    track.check_widths(args.speech, args.expression)
    print(_summary(track))
    print("ok")
    return 0
