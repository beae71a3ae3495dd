"""Slider sweeps: every parameter from -1 to +1 on held-out portraits, through the product's animator.

For each held-out portrait (trainer.holdout.HELD_OUT_PORTRAITS) one picture: a row per component
(its readable label), columns at -1, -0.5, the portrait's own value, +0.5, +1, the other parameters
at the portrait's own values; and a table of how much each component moves each portrait (mean
the 99th percentile of the absolute change of the face's pixels between -1 and +1, grey levels: a
blink changes few pixels a lot) so that a component that
does not move shows up.

    python scripts/slider_sweeps.py --data ../shared/data --out reports/sweeps [--checkpoint DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = (-1.0, -0.5, None, 0.5, 1.0)      # None: the portrait's own value
STILL = 12.0                               # grey levels: a component moving less than this is "still"


def main(argv=None) -> int:
    import cv2

    from engine.animator import Animator
    from trainer.holdout import HELD_OUT_PORTRAITS
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="reports/sweeps")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--size", type=int, default=192, help="output size of each cell (px)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    anim = Animator.from_checkpoint(args.checkpoint, backend="auto", output_size=args.size, framing_scale=1.3)
    labels = anim.face_model.param_labels if anim.face_model is not None else anim.param_names
    moves: dict[str, list[float]] = {}
    portraits = []
    for rel in HELD_OUT_PORTRAITS:
        path = Path(args.data) / rel
        if not path.exists():
            continue
        name = path.stem
        portraits.append(name)
        anim.set_source(str(path))
        own = anim.source_params
        h, w = anim.output_shape
        face = (w // 8, h // 8, 7 * w // 8, 7 * h // 8)     # the face (the framing is 1.3 x its size)
        rows = []
        for c in range(anim.n_params):
            P = np.repeat(own[None], len(STEPS), 0)
            for k, v in enumerate(STEPS):
                if v is not None:
                    P[k, c] = v
            frames = anim.animate_batch(P)
            x0, y0, x1, y1 = face
            diff = np.abs(frames[-1][y0:y1, x0:x1].astype(np.float32) - frames[0][y0:y1, x0:x1]).max(-1)
            change = float(np.percentile(diff, 99))
            moves.setdefault(anim.param_names[c], []).append(round(change, 2))
            cells = [f.copy() for f in frames]
            for f, v in zip(cells, STEPS):
                cv2.putText(f, "own" if v is None else f"{v:+.1f}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                            (255, 255, 255), 1, cv2.LINE_AA)
            head = np.zeros((args.size, 220, 3), np.uint8)
            for i, line in enumerate([labels[c][:32], labels[c][32:64], f"{anim.param_names[c]}  {change:.1f}"]):
                cv2.putText(head, line, (4, 20 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1,
                            cv2.LINE_AA)
            rows.append(np.concatenate([head] + cells, 1))
        img = np.concatenate(rows, 0)
        cv2.imwrite(str(out / f"sweep_{name}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
        print(f"{name}: {len(rows)} components", flush=True)
    lines = ["# Slider sweeps on the held-out portraits", "",
             f"`python scripts/slider_sweeps.py --data ../shared/data --out {args.out}` "
             f"(model: {args.checkpoint or 'the embedded default'}). Each picture: a row per component, "
             "columns -1, -0.5, the portrait's own value, +0.5, +1 (the other parameters at the portrait's own "
             "values). Movement: the 99th percentile of the absolute change of the face's pixels between -1 and "
             f"+1 (grey levels); under {STILL:g} is marked still.", "",
             "| component | label | " + " | ".join(portraits) + " |", "|---|---|" + "---|" * len(portraits)]
    for c, n in enumerate(anim.param_names):
        vals = moves[n]
        cells = [f"{v:.1f}" + (" (still)" if v < STILL else "") for v in vals]
        lines.append(f"| `{n}` | {labels[c]} | " + " | ".join(cells) + " |")
    still = [n for n, v in moves.items() if min(v) < STILL]
    lines += ["", f"Components still on some portrait: {', '.join(still) if still else 'none'}.", ""]
    lines += [f"![{p}](sweep_{p}.jpg)" for p in portraits]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    (out / "moves.json").write_text(json.dumps(moves, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
