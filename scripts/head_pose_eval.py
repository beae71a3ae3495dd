"""Head motion on held-out self-reenactment clips (issue: the portrait nods, turns and tilts with the driver).

For each held-out talking clip: the source is its first frame with a face; the clip drives it through the
product's own path (FaceDriver: mesh-fit p and head pose relative to the driver's neutral, smoothed); the
portrait is rendered at the frame's own size (framing "full"), so the result's face mesh can be compared
with the real frame's. Rows: copy (the first frame), expression only, expression + head. Figures:

The source frame is the driver's neutral (self-reenactment: motion relative to it).

- pose following: correlation of the result's yaw / pitch / roll (face mesh of the result, relative to
  the source) with the driver's, over frames whose driver pose is within engine.pose.LIMITS, and the
  gain (the slope of the result's angle on the driver's: 1 is as much motion);
- landmark error: mean distance of the 468 mesh points, result against the real frame, in % of the
  source's inter-ocular distance;
- tearing: trainer.motion.seam_ratio of each frame against the unmoved portrait (about 1: no seam);
- a picture of the worst frames (largest turn, largest seam ratio): real | expression only | + head;
- every pose component at minus and plus its limit on the held-out portraits (limits.jpg), with the
  seam ratio of each.

    python scripts/head_pose_eval.py --data ../shared/data --out reports/head [--renderer model]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_clip(anim, path: Path, every: int, max_frames: int):
    from engine import pose as P
    from engine.face import FaceTracker
    from engine.video import read_frames
    from streaming.drivers import FaceDriver
    from trainer.motion import seam_ratio

    frames, times, lms = [], [], []
    with FaceTracker(size=anim.image_size, max_faces=1) as tr:
        for i, (rgb, t) in enumerate(read_frames(path)):
            r = tr.process(rgb, t)
            if i % every == 0 and r.ok:
                frames.append(rgb)
                times.append(t)
                lms.append(r.landmarks)
            if len(frames) >= max_frames:
                break
    h, w = frames[0].shape[:2]
    anim.output_size = max(h, w)
    anim.set_source(frames[0], landmarks=lms[0])
    src_pose = P.measure(lms[0])
    iod = src_pose.iod
    p_raw = anim.fit(np.stack(lms))
    drv = FaceDriver(anim.regress, anim.n_params, anim.image_size, rest=anim.source_params, n_exp=int(anim.models.n_exp), fps=30 / every,
                     params="mesh", fit=anim.fit)
    # self-reenactment: the source frame is the driver's neutral (its motion is relative to that frame)
    drv.set_neutral(p_raw[0], src_pose)
    rows = {"copy": [], "expression": [], "head": []}
    driver_pose, result_pose, seams, pics = [], [], [], []
    base = anim.animate(anim.source_params)
    from engine.face import detect_landmarks
    for k in range(len(frames)):
        p = drv.update(p_raw[k], times[k], head=P.measure(lms[k]))
        pose = drv.pose_value(times[k])
        driver_pose.append(P.relative(P.measure(lms[k]), drv.neutral_pose))
        real = lms[k][:468, :2]
        rows["copy"].append(np.linalg.norm(lms[0][:468, :2] - real, axis=1).mean() / iod * 100)
        outs = {"expression": anim.animate(p), "head": anim.animate(p, pose=pose)}
        got = {}
        for name, out in outs.items():
            found = detect_landmarks(out)
            got[name] = found[0] if found else None
            rows[name].append(np.nan if not found else
                              np.linalg.norm(found[0][:468, :2] - real, axis=1).mean() / iod * 100)
        result_pose.append(P.relative(P.measure(got["head"]), src_pose) if got["head"] is not None
                           else np.full(6, np.nan))
        seams.append(seam_ratio(outs["head"], base))
        pics.append((frames[k], outs["expression"], outs["head"]))
    return rows, np.array(driver_pose), np.array(result_pose), np.array(seams), pics


def corr(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 5 or np.std(a[ok]) < 1e-6 or np.std(b[ok]) < 1e-6:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def limits_sweep(anim, data: Path, path: Path) -> dict:
    """Each pose component at minus and plus its limit on the held-out portraits: the picture
    (rows: portraits; columns: unmoved, then each limit) and each frame's seam ratio."""
    import cv2

    from engine import pose as P
    from trainer.holdout import HELD_OUT_PORTRAITS
    from engine.animator import Animator
    from trainer.motion import seam_ratio
    anim = Animator(anim.models, output_size=256, renderer=anim.renderer)     # square framing: one row each
    rows, seams = [], {}
    for rel in HELD_OUT_PORTRAITS:
        if not (data / rel).exists():
            continue
        anim.set_source(str(data / rel))
        p = anim.source_params
        base = anim.animate(p)
        row = [base]
        for i, name in enumerate(P.POSE_NAMES):
            for sign in (-1, 1):
                pose = np.zeros(P.N_POSE)
                pose[i] = sign * P.LIMITS[i]
                out = anim.animate(p, pose=pose)
                seams[f"{Path(rel).stem} {name} {sign * P.LIMITS[i]:+g}"] = round(seam_ratio(out, base), 3)
                cv2.putText(out, f"{name} {sign * P.LIMITS[i]:+g}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                            (255, 255, 255), 1, cv2.LINE_AA)
                row.append(out)
        rows.append(np.concatenate(row, 1))
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return {"seam_ratio_max": max(seams.values()), "seam_ratio": seams}


def gain(driver, result):
    """The least-squares slope of the result's angle on the driver's (1: as much motion)."""
    ok = np.isfinite(driver) & np.isfinite(result)
    d = driver[ok] - driver[ok].mean()
    return float((d @ (result[ok] - result[ok].mean())) / max(d @ d, 1e-9)) if ok.sum() >= 5 else float("nan")


def main(argv=None) -> int:
    from engine import pose as P
    from engine.animator import Animator
    from trainer.holdout import HELD_OUT_TALKING
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="reports/head")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--renderer", default="model", choices=["model", "warp-only"])
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--max-frames", type=int, default=90)
    args = ap.parse_args(argv)
    import cv2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    anim = Animator.from_checkpoint(args.checkpoint, backend="auto", framing="full", renderer=args.renderer)
    report = {"renderer": args.renderer, "clips": {}, "limits": dict(zip(P.POSE_NAMES, P.LIMITS.tolist()))}
    worst = []
    t0 = time.perf_counter()
    for rel in HELD_OUT_TALKING:
        path = Path(args.data) / rel
        if not path.exists():
            continue
        rows, dp, rp, seams, pics = run_clip(anim, path, args.every, args.max_frames)
        inside = np.all(np.abs(dp[:, :3]) <= P.LIMITS[:3], axis=1)
        clip = {"frames": len(seams),
                "landmark_error_pct_iod": {k: round(float(np.nanmean(v)), 2) for k, v in rows.items()},
                "pose_corr": {n: round(corr(dp[inside, i], rp[inside, i]), 3) for i, n in enumerate(P.POSE_NAMES[:3])},
                "pose_gain": {n: round(gain(dp[inside, i], rp[inside, i]), 3) for i, n in enumerate(P.POSE_NAMES[:3])},
                "driver_pose_std_deg": {n: round(float(np.std(dp[:, i])), 2) for i, n in enumerate(P.POSE_NAMES[:3])},
                "seam_ratio": {"mean": round(float(np.nanmean(seams)), 3), "max": round(float(np.nanmax(seams)), 3)}}
        clip["landmark_vs_copy"] = {k: round(clip["landmark_error_pct_iod"][k] / max(clip["landmark_error_pct_iod"]["copy"], 1e-9), 3)
                                    for k in ("expression", "head")}
        report["clips"][rel] = clip
        print(rel, json.dumps(clip))
        turn = np.abs(dp[:, :3]).max(1)
        for k in {int(np.argmax(turn)), int(np.nanargmax(seams))}:
            worst.append((rel, k, float(turn[k]), float(seams[k]), pics[k]))
    report["limits_sweep"] = limits_sweep(anim, Path(args.data), out / "limits.jpg")
    clips = list(report["clips"].values())
    report["mean"] = {
        "landmark_vs_copy": {k: round(float(np.mean([c["landmark_vs_copy"][k] for c in clips])), 3)
                             for k in ("expression", "head")},
        "pose_corr": {n: round(float(np.nanmean([c["pose_corr"][n] for c in clips])), 3) for n in P.POSE_NAMES[:3]},
        "pose_gain": {n: round(float(np.nanmean([c["pose_gain"][n] for c in clips])), 3) for n in P.POSE_NAMES[:3]},
        "seam_ratio_max": round(float(max(c["seam_ratio"]["max"] for c in clips)), 3)}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report["mean"]))
    (out / "head_pose.json").write_text(json.dumps(report, indent=2))
    cells = []
    for rel, k, turn, seam, (real, expr, head) in worst:
        hh = 256
        row = [cv2.resize(x, (int(round(x.shape[1] * hh / x.shape[0])), hh), interpolation=cv2.INTER_AREA)
               for x in (real, expr, head)]
        row = np.concatenate(row, 1)
        cv2.putText(row, f"{Path(rel).stem} frame {k}: turn {turn:.0f} deg, seam {seam:.2f}", (6, 18),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        cells.append(row)
    wmax = max(c.shape[1] for c in cells)
    cells = [np.pad(c, ((0, 0), (0, wmax - c.shape[1]), (0, 0))) for c in cells]
    cv2.imwrite(str(out / "worst.jpg"), cv2.cvtColor(np.concatenate(cells, 0), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 85])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
