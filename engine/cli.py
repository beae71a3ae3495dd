"""The ``slidergan`` command. Each subcommand lives in its own module, imported only when used,
so ``slidergan --help`` stays fast. A module provides ``add_arguments(parser)`` and ``main(args)``.

A failure is one line on stderr, ``slidergan COMMAND: error: WHAT``, and exit status 1 (130 on
Ctrl-C); ``--debug`` (before or after the command) or ``SLIDERGAN_DEBUG=1`` shows the traceback."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("trainer.train", "train SliderGAN (tiny, realtime or paper profile)"),
    "train-audio": ("trainer.audio", "train the audio model (speech parameters from sound)"),
    "train-head": ("trainer.regressor", "train the regression head D_p alone, with webcam augmentations"),
    "synthetic": ("trainer.synthetic", "write a procedural dataset of labelled synthetic faces"),
    "annotate": ("trainer.annotate", "videos and image folders to a labelled dataset"),
    "synth-pairs": ("trainer.synth_pairs", "make 3D-warped paired samples from a dataset"),
    "video-pairs": ("trainer.video_pairs", "make real pairs from two frames of one video"),
    "evaluate": ("trainer.evaluate", "evaluate a checkpoint and write a report"),
    "blendshapes": ("engine.blendshapes_cli", "build or inspect blendshape models"),
    "track": ("engine.tracks_cli", "extract or check parameter tracks"),
    "export": ("exporters.cli", "export a checkpoint to ONNX or TensorRT"),
    "bench": ("exporters.bench", "benchmark inference backends and profiles"),
    "serve": ("streaming.server", "WebRTC server and browser page (127.0.0.1:8080)"),
    "render": ("streaming.render", "render an animated portrait to a video file"),
    "live": ("streaming.live", "local camera-in, window-out puppeteering"),
    "edit": ("streaming.edit", "edit one photo's expression by its sliders, to a picture"),
}

DEBUG_HELP = "on an error, show the full traceback (also SLIDERGAN_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slidergan", description="SliderGAN: animate a portrait by "
                                     "sliding 3D blendshape parameters.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def error_line(e: BaseException) -> str:
    """An exception as one line: its message (with the type for anything but the usual input errors)."""
    msg = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
    if isinstance(e, (ValueError, OSError, RuntimeError)) and msg:
        return msg
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(os.environ.get("SLIDERGAN_DEBUG"))
    while argv and argv[0] == "--debug":  # the global flag, before the command
        debug = True
        argv.pop(0)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    name = argv[0]
    try:
        module = importlib.import_module(COMMANDS[name][0])
        sub = argparse.ArgumentParser(prog=f"slidergan {name}", description=COMMANDS[name][1])
        module.add_arguments(sub)
        rest = argv[1:]
        if not any("--debug" in a.option_strings for a in sub._actions):
            sub.add_argument("--debug", action="store_true", help=DEBUG_HELP)
            # Taken anywhere (also after a nested command such as ``track check``), up to a "--".
            end = rest.index("--") if "--" in rest else len(rest)
            debug = debug or "--debug" in rest[:end]
            rest = [a for a in rest[:end] if a != "--debug"] + rest[end:]
        args = sub.parse_args(rest)
        debug = debug or bool(getattr(args, "debug", False))
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        # A failure: one clear line, no traceback (--debug or SLIDERGAN_DEBUG=1 for the traceback).
        if debug:
            raise
        hint = "" if isinstance(e, (ValueError, OSError, RuntimeError)) else " (--debug shows the traceback)"
        print(f"slidergan {name}: error: {error_line(e)}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
