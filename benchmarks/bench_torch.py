"""Per-frame time and FLOPs of the generator and the regressor for each profile, in eager PyTorch.

    python benchmarks/bench_torch.py [--profiles paper realtime tiny tiny-resnet] [--json bench_torch.json]

A benchmark script, not a test: it runs ``slidergan bench`` with the torch backend only (random
weights; speed does not depend on them) and prints the same table: generator per frame after source
caching (plus the encoder once, for "cached" generators), regressor, median and p95 ms at batch 1,
throughput at batch 8, peak RSS, FLOPs per frame (torch.utils.flop_counter) and the machine limit.
"""
from __future__ import annotations

import argparse
import json
import sys

from engine.atomic import write_text_atomic
from engine.config import PROFILES
from exporters.bench import PEAK_GFLOPS, bench, format_table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES))
    ap.add_argument("--threads", type=int, help="intra-op threads (default: physical cores)")
    ap.add_argument("--peak-gflops", type=float, default=PEAK_GFLOPS)
    ap.add_argument("--quick", action="store_true", help="few iterations (smoke test)")
    ap.add_argument("--json", default="bench_torch.json", help="report file (default %(default)s)")
    args = ap.parse_args(argv)
    report = bench(args.profiles, ["torch"], threads=args.threads, peak_gflops=args.peak_gflops, quick=args.quick)
    print(format_table(report))
    write_text_atomic(args.json, json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
