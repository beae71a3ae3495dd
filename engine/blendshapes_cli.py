"""``slidergan blendshapes``: build blendshape models from videos, or describe a model.

    slidergan blendshapes build VIDEOS... -o DIR [--stills IMAGES...] [--held-out VIDEOS...]
                                [--method slpca|pca] [--n-exp 30 --n-speech 10 --n-identity 8]
    slidergan blendshapes info MODEL          (a model file or a folder of them)

``build`` writes ``expression.npz``, ``speech.npz`` and ``identity.npz`` into DIR (see
``engine.blendshapes`` for what they hold and how they are learned); folders given as inputs are
searched for videos (or, for ``--stills``, images).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="learn expression, speech and identity models from face videos")
    b.add_argument("videos", nargs="+", help="videos (or folders of videos) of faces")
    b.add_argument("-o", "--out", required=True, help="output folder for expression/speech/identity.npz")
    b.add_argument("--stills", nargs="*", default=[], help="still images (or folders) adding identity samples")
    b.add_argument("--held-out", nargs="*", default=[],
                   help="videos not learned from; the share of their motion the models explain is reported "
                        "and written into the provenance")
    b.add_argument("--method", choices=["slpca", "pca"], default="slpca",
                   help="expression components: sparse localized PCA (the paper's) or plain PCA")
    b.add_argument("--speech-method", choices=["pca", "slpca"], default="pca",
                   help="speech components (default pca: the 10 most significant mouth-and-jaw components)")
    b.add_argument("--n-exp", type=int, default=30)
    b.add_argument("--n-speech", type=int, default=10)
    b.add_argument("--n-identity", type=int, default=8)
    b.add_argument("--kappa", type=float, default=2.5, help="|p| = 1 is kappa standard deviations")
    b.add_argument("--lam", type=float, default=0.005, help="SLPCA sparsity weight")
    b.add_argument("--dmin", type=float, default=0.1, help="SLPCA: geodesic radius without penalty")
    b.add_argument("--dmax", type=float, default=0.4, help="SLPCA: geodesic radius of full penalty")
    b.add_argument("--iterations", type=int, default=15, help="SLPCA alternating rounds")
    b.add_argument("--every", type=int, default=1, help="use every N-th video frame")
    b.add_argument("--name", default="default", help="model name prefix")
    b.add_argument("--note", default="", help="free text kept in the provenance (e.g. why a video is held out)")
    b.add_argument("--force", action="store_true", help="replace existing model files in the output folder")
    i = sub.add_parser("info", help="describe a model file or a folder of model files")
    i.add_argument("model", help="a .npz model file or a folder holding expression/speech/identity.npz")


def _expand(paths, exts) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in exts)
            if not found:
                raise ValueError(f"no {'/'.join(sorted(exts))} files in folder {p}")
            out += found
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    return out


def _tracks(paths, every, desc):
    from tqdm import tqdm

    from .blendshapes import extract_track
    from .face import FaceMeshDetector
    from .video import video_info
    total = 0
    for p in paths:
        try:
            total += max(1, video_info(p).frame_count // every) if p.suffix.lower() not in _IMG else 1
        except Exception:
            total += 1
    tracks = []
    with tqdm(total=total, desc=desc, unit="frame", dynamic_ncols=True) as bar:
        for p in paths:
            if p.suffix.lower() in _IMG:
                with FaceMeshDetector(static=True, max_faces=4) as det:
                    tracks.append(extract_track(p, progress=bar, detector=det))
            else:
                tracks.append(extract_track(p, every=every, progress=bar))
            bar.set_postfix_str(f"{p.name}: {int(tracks[-1].valid.sum())}/{len(tracks[-1].landmarks)} faces")
    return tracks


_IMG: set = set()


def _build(args) -> int:
    from tqdm import tqdm

    from .blendshapes import DEFAULT_FILES, IMAGE_EXTS, VIDEO_EXTS, build_models
    _IMG.update(IMAGE_EXTS)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    existing = [out / f for f in DEFAULT_FILES.values() if (out / f).exists()]
    if existing and not args.force:
        raise ValueError(f"{existing[0]} exists (pass --force to replace the models in {out})")
    videos = _expand(args.videos, VIDEO_EXTS)
    stills = _expand(args.stills, IMAGE_EXTS) if args.stills else []
    held = _expand(args.held_out, VIDEO_EXTS) if args.held_out else []
    overlap = {p.resolve() for p in videos} & {p.resolve() for p in held}
    if overlap:
        raise ValueError(f"a held-out video is also a training video: {sorted(map(str, overlap))[0]}")
    tracks = _tracks(videos, args.every, "face mesh (videos)")
    still_tracks = _tracks(stills, 1, "face mesh (stills)") if stills else []
    held_tracks = _tracks(held, args.every, "face mesh (held out)") if held else []
    command = "slidergan blendshapes " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if len(sys.argv) > 2 and sys.argv[1] == "blendshapes" else ""
    rounds = (args.iterations if args.method == "slpca" else 0) + \
        (args.iterations if args.speech_method == "slpca" else 0)
    bar = tqdm(total=max(rounds, 1), desc="learning (SLPCA rounds)", unit="round", dynamic_ncols=True)
    models, report = build_models(
        tracks, still_tracks, method=args.method, speech_method=args.speech_method, n_exp=args.n_exp,
        n_speech=args.n_speech, n_identity=args.n_identity, kappa=args.kappa, lam=args.lam,
        dmin=args.dmin, dmax=args.dmax, iterations=args.iterations, held_out=held_tracks,
        name=args.name, command=command, note=args.note, progress=tqdm.write, step=bar.update)
    bar.update(bar.total - bar.n)
    bar.close()
    out.mkdir(parents=True, exist_ok=True)
    for kind, m in models.items():
        path = m.save(out / DEFAULT_FILES[kind])
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): {m.n_components} {kind} components")
    print(f"trained on {report['frames']} frames of {len(tracks)} video(s); explained variance "
          f"(training): {report['train_explained_variance']:.2%}; identity samples: "
          f"{report['identity_samples']}")
    for name, r in report.get("held_out", {}).items():
        print(f"held out {name}: {r['frames']} frames; explained variance {r['ev_projection']:.2%} "
              f"(projection), {r['ev_fit']:.2%} (fit_sequence, bounded); median residual "
              f"{r['residual_px_median']:.2f} px (128 crop)")
    return 0


def _info(args) -> int:
    from .blendshapes import DEFAULT_FILES, BlendshapeModel, load_face_model
    p = Path(args.model)
    if p.is_dir():
        files = [p / f for f in DEFAULT_FILES.values() if (p / f).exists()]
        if not files:
            raise FileNotFoundError(f"no model files ({', '.join(DEFAULT_FILES.values())}) in {p}")
        for f in files:
            print(f"{f}:")
            print(BlendshapeModel.load(f).summary())
        fm = load_face_model(p)
        print(f"face model: N = {fm.n_params} parameters ({fm.n_exp} expression + {fm.n_speech} speech), "
              f"{fm.n_identity} identity coefficients; {fm.describe()}")
        ho = BlendshapeModel.load(files[0]).provenance.get("held_out_explained_variance")
        if ho:
            for k, v in ho.items():
                print(f"held out {k}: explained variance {v['projection']:.2%} (projection), "
                      f"{v['fit_sequence']:.2%} (fit_sequence)")
    else:
        print(BlendshapeModel.load(p).summary())
    return 0


def main(args) -> int:
    if args.action == "build":
        return _build(args)
    return _info(args)
