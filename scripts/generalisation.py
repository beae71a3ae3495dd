"""Do a checkpoint's generator and regression head work on identities they were not trained on?
The same two figures on training data and on held-out data (README, Training, "Known defect"):

- ``edit``: trainer.train.edit_ratio on pairs (1: G copies its input, 0: exact edits);
- ``head``: the regression head's relative error ||p - D_p(I)|| / ||p|| on crops, rows with
  ||p|| >= 0.1 (as in the evaluation report; near-neutral rows make the ratio explode).

    python scripts/generalisation.py runs/default-mix/checkpoints/step-0004000 [CHECKPOINT ...] \\
        --train-pairs runs/data/pairs --held-out-pairs runs/data/val-pairs \\
        --train runs/data/faces --held-out runs/data/val [--json report.json]
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from engine.checkpoint import load_checkpoint
from trainer.data import ShardStream, open_dataset
from trainer.train import edit_ratio


def sample(path: str, cfg, count: int, seed: int = 5) -> dict[str, torch.Tensor]:
    """``count`` rows spread over the whole dataset (shuffled with a fixed seed)."""
    info = open_dataset(path, cfg.n_params, cfg.name)
    st = ShardStream(info, min(count, info.count), cfg.image_size, shuffle=True, repeat=False, seed=seed,
                     shuffle_buffer=info.count)
    return next(iter(st))


@torch.no_grad()
def head_rel_error(D, batch: dict[str, torch.Tensor]) -> float:
    """Table 4's relative error (``trainer.evaluate.regression_summary``: near-neutral rows left out)."""
    from trainer.evaluate import regression_summary
    pred = D.regress(batch["image"]).detach().numpy().astype(np.float64)
    return regression_summary(batch["params"].numpy().astype(np.float64), pred)["mean"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--train-pairs", required=True)
    ap.add_argument("--held-out-pairs", required=True)
    ap.add_argument("--train", required=True, help="unpaired training crops")
    ap.add_argument("--held-out", required=True, help="unpaired held-out crops")
    ap.add_argument("--pairs", type=int, default=63, help="pairs from each pair dataset")
    ap.add_argument("--crops", type=int, default=256, help="crops from each crop dataset")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    rows = []
    print(f"{'checkpoint':60s} {'edit train':>10s} {'edit held':>10s} {'head train':>10s} {'head held':>10s}")
    for path in args.checkpoints:
        ck = load_checkpoint(path, map_location="cpu")
        G, D, cfg = ck.generator.eval(), ck.discriminator.eval(), ck.config
        row = {"checkpoint": str(path)}
        for split, pairs, crops in (("train", args.train_pairs, args.train),
                                    ("held_out", args.held_out_pairs, args.held_out)):
            vp = sample(pairs, cfg, args.pairs)
            row[f"edit_{split}"] = edit_ratio(G, vp["image"], vp["target_params"], vp["target_image"])
            row[f"head_{split}"] = head_rel_error(D, sample(crops, cfg, args.crops))
        rows.append(row)
        print(f"{str(path):60s} {row['edit_train']:10.3f} {row['edit_held_out']:10.3f} "
              f"{row['head_train']:10.3f} {row['head_held_out']:10.3f}")
    if args.json:
        from engine.atomic import write_text_atomic
        write_text_atomic(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
