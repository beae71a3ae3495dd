"""``slidergan export CHECKPOINT --format onnx|tensorrt -o OUTDIR``.

ONNX: writes the encoder (cached generators), the per-frame generator and the regressor with their
metadata, checks them with onnx.checker, runs them in onnxruntime against PyTorch and prints the
differences (also stored in OUTDIR/export.json). TensorRT: the same ONNX export, then one FP16
engine per model (NVIDIA GPU only).
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint folder (model.safetensors inside)")
    p.add_argument("--format", choices=("onnx", "tensorrt"), default="onnx")
    p.add_argument("-o", "--out", required=True, help="output folder (replaced whole if it holds a previous export)")
    p.add_argument("--images", help="folder of real images (jpg/png) for the verification, besides random inputs")
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx exporter (dynamo needs onnxscript); default %(default)s")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 20)")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch check")
    p.add_argument("--int8", action="store_true", help="also write int8-quantised copies (<role>.int8.onnx) for "
                   "CPU speed, calibrated on --images when given; the difference to fp32 is reported")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="TensorRT precision")
    p.add_argument("--max-batch", type=int, default=8, help="TensorRT optimisation profile: batch 1..N")


def main(args) -> int:
    from .onnx import OPSET, ExportError, export_onnx, format_report
    try:
        if args.format == "onnx":
            manifest = export_onnx(args.checkpoint, args.out, opset=args.opset or OPSET, exporter=args.exporter,
                                   images=args.images, verify=not args.no_verify, int8=args.int8)
            print(format_report(manifest))
        else:
            from .tensorrt import export_tensorrt
            manifest = export_tensorrt(args.checkpoint, args.out, fp16=args.precision == "fp16",
                                       batch=(1, 1, args.max_batch), images=args.images,
                                       verify=not args.no_verify)
            print(format_report(manifest))
            v = manifest["tensorrt"].get("verification")
            if v:
                for case, r in v["cases"].items():
                    print(f"  TensorRT {case:<10} batch {r['batch']}: max abs diff generator "
                          f"{r['generator']:.2e}, regressor {r['regressor']:.2e}")
                print("  TensorRT " + ("PASSED" if v["passed"] else "FAILED") + f" (atol {v['tolerance']['atol']})")
    except ExportError as e:
        print(f"slidergan export: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0
