"""``slidergan edit``: one photo edited by its sliders, written as a picture (SliderGAN's own use: a face's
expression and speech set to chosen values, its identity kept).

    slidergan edit --source me.jpg -o smile.png --preset happy
    slidergan edit --source me.jpg -o open.png --set jaw_open=0.6,lips_part=0.5
    slidergan edit --source me.jpg -o like.png --like her.jpg          # her expression on my face
    slidergan edit --source me.jpg -o turn.png --head yaw=15,pitch=-5  # and the head (degrees; engine.pose)
    slidergan edit --source me.jpg -o side.png --head gaze_yaw=20      # and where the eyes look
    slidergan edit --source me.jpg -o sweep.png --sweep smile          # smile from -1 to +1, side by side

The parameters start from the portrait's own (its blendshape fit), so an edit changes only what it names:
``--like`` takes a reference photo's expression and speech (absolute: its fitted parameters, its identity
left out by the fit), ``--preset`` one of the page's presets, ``--set`` single components (by name, e.g.
``smile`` or ``exp02``; applied last). The output's suffix picks the format (.png, .jpg, .webp); it is
written whole or not at all.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg", ".webp")


def parse_assignments(values, names, what: str) -> dict[str, float]:
    """``["a=0.5,b=-1", "c=0.2"]`` -> {name: value}; every name one of ``names``."""
    out = {}
    for item in (v for value in values or () for v in str(value).split(",") if v.strip()):
        name, eq, number = item.partition("=")
        name = name.strip()
        try:
            value = float(number)
        except ValueError:
            value = float("nan")
        if not eq or not np.isfinite(value):
            raise ValueError(f"{what} wants NAME=VALUE (e.g. {names[0]}=0.5), got {item.strip()!r}")
        if name not in names:
            raise ValueError(f"{what}: no component {name!r}; the names are {', '.join(names)}")
        out[name] = value
    return out


def edit(source, out, *, checkpoint=None, backend: str = "auto", models=None, set_values=(), like=None,
         preset: str | None = None, head=(), sweep: str | None = None, steps: int = 5, size: int | None = None,
         framing: str = "square", renderer: str = "model", source_face=None, mouth_interior: str = "driver") -> str:
    """Write ``source`` edited to ``out``; returns the summary line. ``mouth_interior``: with ``like``, "driver"
    (the reference photo's own teeth and tongue inside the portrait's open mouth, engine.mouth) or "drawn"."""
    import cv2

    from engine.animator import Animator, check_framing, load_models
    from engine.atomic import write_bytes_atomic
    from engine.pose import LIMITS, N_HEAD, N_POSE, POSE_NAMES, POSE_UNITS

    from .render import say_faces
    out = Path(out)
    if out.suffix.lower() not in IMAGE_OUTPUTS:
        raise ValueError(f"output must end in {', '.join(IMAGE_OUTPUTS)}, not {out.name!r}")
    check_framing(framing, size)
    from engine.mouth import check_interior
    check_interior(mouth_interior)
    if sweep is not None and not 2 <= steps <= 21:
        raise ValueError(f"--steps must be 2 to 21, not {steps}")
    if like is not None and not Path(like).exists():
        raise FileNotFoundError(f"--like: not found: {like}")
    pose_values = parse_assignments(head, list(POSE_NAMES), "--head")
    for name, v in pose_values.items():
        k = POSE_NAMES.index(name)
        if abs(v) > LIMITS[k]:
            what = "the eyes turn" if k >= N_HEAD else "the head moves"
            raise ValueError(f"--head {name}={v:g}: {what} at most ±{LIMITS[k]:g} {POSE_UNITS[k]} there "
                             f"(engine.pose.LIMITS)")
    if models is None:
        models = load_models(checkpoint, backend=backend)
    anim = Animator(models, output_size=size, framing=framing, renderer=renderer, source_mouth="own")
    names = anim.param_names
    values = parse_assignments(set_values, names, "--set")
    if sweep is not None and sweep not in names:
        raise ValueError(f"--sweep: no component {sweep!r}; the names are {', '.join(names)}")
    if pose_values:
        anim.require_head_motion()
    info = anim.set_source(source, face=source_face)
    say_faces(info, source_face)
    p = info.params.astype(np.float32).copy()
    said = []
    mouth = None
    if like is not None:
        from engine.face import detect_and_align
        from engine.images import load_image
        if anim.face_model is None:
            raise ValueError("--like fits the reference's face mesh, and this model has no blendshape model")
        photo = load_image(like)
        ref = detect_and_align(photo, size=anim.image_size, name=str(like))
        p = anim.fit(ref.landmarks)
        said.append(f"the expression of {Path(like).name}")
        if mouth_interior == "driver":
            from engine.mouth import cut_mouth
            mouth = cut_mouth(photo, ref.landmarks)     # its teeth and tongue, where its mouth is open
    if preset is not None:
        from .presets import make_presets
        presets = make_presets(names, int(models.n_exp), anim.face_model)
        if preset not in presets:
            raise ValueError(f"--preset: no preset {preset!r}; this model has {', '.join(sorted(presets))}")
        p = presets[preset].copy()
        said.append(f"preset {preset}")
    for name, v in values.items():
        p[names.index(name)] = np.clip(v, -1.0, 1.0)
        said.append(f"{name} {v:+.2f} (own {info.params[names.index(name)]:+.2f})")
    pose = None
    if pose_values:
        pose = np.zeros(N_POSE)
        for name, v in pose_values.items():
            pose[POSE_NAMES.index(name)] = v
        said.append("head " + ", ".join(f"{k} {v:+g}" for k, v in pose_values.items()))
    if sweep is None:
        picture = anim.animate(p, pose=pose, mouth=mouth)
    else:
        k = names.index(sweep)
        batch = np.repeat(p[None], steps, 0)
        batch[:, k] = np.linspace(-1.0, 1.0, steps, dtype=np.float32)
        frames = anim.animate_batch(batch, None if pose is None else np.repeat(pose[None], steps, 0),
                                    None if mouth is None else [mouth] * steps)
        picture = np.hstack(frames)
        said.append(f"{sweep} from -1 to +1 in {steps} steps")
    ok, data = cv2.imencode(out.suffix.lower(), picture[:, :, ::-1])
    if not ok:
        raise ValueError(f"OpenCV cannot write {out.suffix} here")
    write_bytes_atomic(out, data.tobytes())
    h, w = picture.shape[:2]
    return f"wrote {out} ({w}x{h}): " + ("; ".join(said) if said else "the portrait as it is (nothing set)")


def add_arguments(p) -> None:
    from engine.animator import add_framing_arguments

    from .presets import EXPRESSIONS
    from .render import add_source_face_argument
    p.add_argument("--source", required=True, help="the photo to edit (an image with a face)")
    add_source_face_argument(p)
    p.add_argument("-o", "--output", required=True, help="the edited picture: .png, .jpg or .webp")
    p.add_argument("--set", dest="set_values", action="append", default=[], metavar="NAME=VALUE[,...]",
                   help="set components, -1 to 1 (repeatable; names as the page's sliders: smile, jaw_open, exp02 "
                        "...); the others stay the photo's own")
    p.add_argument("--like", default=None, metavar="PHOTO",
                   help="take the expression and speech of the face in this photo (its fitted parameters)")
    p.add_argument("--preset", default=None,
                   help="a preset expression (the page's): neutral, " + ", ".join(EXPRESSIONS))
    p.add_argument("--head", action="append", default=[], metavar="NAME=VALUE[,...]",
                   help="turn the head: yaw, pitch, roll (degrees), x, y (inter-ocular distances), scale (ln); "
                        "and the eyes: gaze_yaw (degrees, > 0 right), gaze_pitch (> 0 down); the geometry-guided "
                        "model only")
    p.add_argument("--sweep", default=None, metavar="NAME",
                   help="write this component from -1 to +1, side by side, instead of one picture")
    p.add_argument("--steps", type=int, default=5, help="pictures in a --sweep (default 5)")
    p.add_argument("--checkpoint", "--model", dest="checkpoint", default=None,
                   help="model folder (default: the embedded default model)")
    p.add_argument("--backend", default="auto", help="inference backend: auto, torch, onnxruntime, tensorrt")
    p.add_argument("--renderer", choices=["model", "warp-only"], default="model",
                   help="'model' (the generator) or 'warp-only' (no network: the portrait warped along its mesh)")
    add_framing_arguments(p)
    from engine.mouth import add_interior_argument
    add_interior_argument(p)


def main(args) -> int:
    from .render import face_point
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    source_face = None if args.source_face is None else face_point(args.source_face, "--source-face", "the portrait")
    print(edit(args.source, args.output, checkpoint=args.checkpoint, backend=args.backend, set_values=args.set_values,
               like=args.like, preset=args.preset, head=args.head, sweep=args.sweep, steps=args.steps,
               size=args.size, framing=args.framing, renderer=args.renderer, source_face=source_face,
               mouth_interior=args.mouth_interior))
    return 0
