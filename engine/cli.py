"""The ``slidergan`` command. Each subcommand lives in its own module, imported only when used,
so ``slidergan --help`` stays fast. A module provides ``add_arguments(parser)`` and ``main(args)``."""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("trainer.train", "train SliderGAN (tiny, realtime or paper profile)"),
    "synthetic": ("trainer.synthetic", "write a procedural dataset of labelled synthetic faces"),
    "annotate": ("trainer.annotate", "videos and image folders to a labelled dataset"),
    "synth-pairs": ("trainer.synth_pairs", "make 3D-warped paired samples from a dataset"),
    "evaluate": ("trainer.evaluate", "evaluate a checkpoint and write a report"),
    "blendshapes": ("engine.blendshapes_cli", "build or inspect blendshape models"),
    "track": ("engine.tracks_cli", "extract or check parameter tracks"),
    "export": ("exporters.cli", "export a checkpoint to ONNX or TensorRT"),
    "bench": ("exporters.bench", "benchmark inference backends and profiles"),
    "serve": ("streaming.server", "WebRTC server and browser page (127.0.0.1:8080)"),
    "render": ("streaming.render", "render an animated portrait to a video file"),
    "live": ("streaming.live", "local camera-in, window-out puppeteering"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slidergan", description="SliderGAN: animate a portrait by "
                                     "sliding 3D blendshape parameters.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"slidergan {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        return int(module.main(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        # Bad input: one clear line, no traceback (set SLIDERGAN_DEBUG=1 for the traceback).
        import os
        if os.environ.get("SLIDERGAN_DEBUG"):
            raise
        print(f"slidergan {name}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
