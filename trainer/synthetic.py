"""Procedural, labelled synthetic faces: a dataset that needs no outside data.

A cartoon face is drawn with OpenCV (4x supersampled, then area-downsampled: antialiased) from two
things: a random *identity* (skin, hair, eye and lip colours, face width and height, eye spacing,
background gradient, a small placement jitter, a fixed grain pattern) and a parameter vector ``p``
in [-1, 1]^N that moves the face's parts in a known way. Paired samples are one identity under two
parameter vectors (like the 3D-warped pairs of SPEC section 5), unpaired samples one identity each
(``per_identity`` samples share an identity and a sequence id, like frames of one video).

What each parameter does (``EFFECTS``). The first dozen have large, clearly visible effects, so that
a tiny model learns them in a few hundred steps; the rest act more subtly (a few pixels, or a faint
colour), as real blendshape components beyond the first few do. Parameters past the 40th, if a
profile has more, draw nothing.
"""
from __future__ import annotations

import argparse
import logging

import cv2
import numpy as np

log = logging.getLogger(__name__)

SS = 4  # supersampling factor (2 from 128 px up)

# index -> (name, what it does). Indices 0-29 are "expression", 30-39 "speech" (mouth and jaw).
EFFECTS = [
    ("mouth_open", "opens the mouth (dark opening grows downwards)"),
    ("smile", "lifts (+) or drops (-) both mouth corners"),
    ("mouth_wide", "widens (+) or narrows (-) the mouth"),
    ("brows_up", "raises (+) or lowers (-) both eyebrows"),
    ("frown", "pulls the inner ends of the brows down (+) or up (-)"),
    ("eyes_open", "opens (+) or closes (-) both eyes"),
    ("left_eye", "opens/closes the eye on the image's left"),
    ("right_eye", "opens/closes the eye on the image's right"),
    ("jaw_drop", "lengthens the lower face and lowers the mouth"),
    ("mouth_shift", "moves the mouth sideways"),
    ("cheek_puff", "widens the lower face"),
    ("pucker", "rounds and narrows the lips"),
    ("gaze_x", "moves the irises sideways"),
    ("gaze_y", "moves the irises up and down"),
    ("nose_wrinkle", "draws wrinkle lines beside the nose"),
    ("left_brow", "raises the brow on the image's left"),
    ("right_brow", "raises the brow on the image's right"),
    ("left_corner", "lifts the mouth corner on the image's left"),
    ("right_corner", "lifts the mouth corner on the image's right"),
    ("upper_lip", "raises the upper lip"),
    ("lower_lip", "lowers the lower lip"),
    ("brow_tilt", "tilts both brows the same way"),
    ("squint", "raises the lower eyelids"),
    ("nostrils", "widens the nose base"),
    ("chin_shift", "moves the chin sideways"),
    ("teeth", "shows the upper teeth in the opening"),
    ("tongue", "shows the tongue"),
    ("blush", "reddens the cheeks (faint)"),
    ("forehead_lines", "draws forehead lines (faint)"),
    ("dimples", "draws dimples beside the mouth corners (faint)"),
    # speech
    ("jaw_open", "opens the jaw: mouth opening and chin together"),
    ("lip_round", "rounds the lips"),
    ("lip_spread", "spreads the lips"),
    ("upper_lip_up", "lifts the upper lip (small)"),
    ("lower_lip_down", "drops the lower lip (small)"),
    ("corner_stretch", "stretches the mouth corners down and out"),
    ("lip_press", "thins (+) or thickens (-) the lips"),
    ("jaw_side", "moves jaw and mouth sideways (small)"),
    ("mouth_y", "moves the mouth up and down (small)"),
    ("teeth_lower", "shows the lower teeth"),
]
N_EFFECTS = len(EFFECTS)


def param_names(n_params: int = 40) -> list[str]:
    return [EFFECTS[i][0] if i < N_EFFECTS else f"unused{i:02d}" for i in range(n_params)]


def random_identity(rng: np.random.Generator) -> dict:
    tone = rng.uniform(0, 1)  # from dark to light skin, with a little random tint
    skin = (1 - tone) * np.array([95.0, 62.0, 45.0]) + tone * np.array([245.0, 212.0, 185.0])
    skin = skin + rng.uniform(-15, 15, 3)
    return {
        "skin": skin,
        "hair": rng.uniform(10, 140, 3) * np.array([1.0, 0.8, 0.6]),
        "iris": rng.uniform(20, 150, 3),
        "lips": np.clip(skin * np.array([1.0, 0.55, 0.6]) + rng.uniform(-20, 20, 3), 0, 255),
        "bg_top": rng.uniform(30, 230, 3),
        "bg_bottom": rng.uniform(30, 230, 3),
        "face_w": rng.uniform(0.29, 0.35),
        "face_h": rng.uniform(0.39, 0.44),
        "eye_dx": rng.uniform(0.115, 0.14),
        "eye_size": rng.uniform(0.062, 0.075),
        "hair_len": rng.uniform(0.0, 1.0),
        "jitter": rng.uniform(-0.02, 0.02, 2),
        "scale": rng.uniform(1.08, 1.18),
        "grain_seed": int(rng.integers(0, 2 ** 31)),
    }


def sample_params(rng: np.random.Generator, n: int, n_params: int = 40) -> np.ndarray:
    """Parameters in [-1, 1]: uniform, each zeroed with probability 0.3 (sparse, like expressions)."""
    p = rng.uniform(-1, 1, (n, n_params))
    p *= rng.random((n, n_params)) > 0.3
    return p.astype(np.float32)


def _c(rgb) -> tuple[int, int, int]:
    return tuple(int(round(float(v))) for v in np.clip(rgb, 0, 255))


def _blend(canvas: np.ndarray, draw, alpha: float) -> None:
    """Draw on a copy and blend it in with ``alpha`` (faint effects)."""
    if alpha <= 0.01:
        return
    layer = canvas.copy()
    draw(layer)
    cv2.addWeighted(layer, alpha, canvas, 1 - alpha, 0, dst=canvas)


def _paste(canvas: np.ndarray, layer: np.ndarray, mask: np.ndarray) -> None:
    """canvas = a * layer + (1 - a) * canvas with a = mask / 255, inside the mask's bounding box only."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return
    a = (mask[y:y + h, x:x + w].astype(np.float32) / 255)[..., None]
    c = canvas[y:y + h, x:x + w]
    c[:] = (a * layer[y:y + h, x:x + w] + (1 - a) * c).astype(np.uint8)


def render_face(identity: dict, p: np.ndarray, size: int = 128) -> np.ndarray:
    """One face: uint8 (size, size, 3) RGB. ``p``: the parameter vector (values past 40 are ignored)."""
    q = np.zeros(N_EFFECTS, np.float64)
    p = np.asarray(p, np.float64).reshape(-1)[:N_EFFECTS]
    q[:len(p)] = np.clip(p, -1, 1)
    S = size * (SS if size < 128 else 2)
    idt = identity
    sc = idt["scale"]
    ox, oy = idt["jitter"]

    def P(x, y):  # normalised face coordinates -> canvas pixels (int, 4 bits of sub-pixel shift)
        return (int(round(((0.5 + ox) + (x - 0.5) * sc) * S * 16)),
                int(round(((0.5 + oy) + (y - 0.5) * sc) * S * 16)))

    def L(v):  # normalised length -> pixels * 16
        return max(1, int(round(v * sc * S * 16)))

    def T(v):  # line thickness in canvas pixels
        return max(1, int(round(v * S)))

    sh = 4  # cv2 shift bits
    # Background: a vertical gradient.
    t = np.linspace(0, 1, S)[:, None, None]
    canvas = ((1 - t) * idt["bg_top"] + t * idt["bg_bottom"]).repeat(S, axis=1).astype(np.uint8).copy()
    skin, dark = idt["skin"], idt["skin"] * 0.55

    cx, cy = 0.5, 0.52
    fw, fh = idt["face_w"], idt["face_h"]
    jaw = 0.5 * q[8] + 0.5 * q[30]
    # Hair behind the face, and the neck.
    cv2.ellipse(canvas, P(cx, cy - 0.04), (L(fw + 0.05), L(fh * (0.95 + 0.25 * idt["hair_len"]))), 0, 0, 360,
                _c(idt["hair"]), -1, cv2.LINE_AA, sh)
    neck = np.array([P(cx - 0.11, cy + 0.2), P(cx + 0.11, cy + 0.2), P(cx + 0.13, 1.1), P(cx - 0.13, 1.1)])
    cv2.fillPoly(canvas, [neck], _c(skin * 0.8), cv2.LINE_AA, sh)
    # Face oval: lower half widened by cheek puff, lengthened by the jaw, chin moved sideways.
    ang = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    lower = np.clip(np.sin(ang), 0, 1)
    xs = cx + np.cos(ang) * fw * (1 + 0.25 * q[10] * lower) + 0.05 * q[24] * lower ** 3
    ys = cy + np.sin(ang) * fh * (1 + 0.2 * jaw * lower)
    cv2.fillPoly(canvas, [np.array([P(x, y) for x, y in zip(xs, ys)])], _c(skin), cv2.LINE_AA, sh)
    # Hair fringe on the forehead.
    cv2.ellipse(canvas, P(cx, cy - fh * 0.95), (L(fw * 0.95), L(fh * (0.15 + 0.2 * idt["hair_len"]))), 0, 0, 180,
                _c(idt["hair"]), -1, cv2.LINE_AA, sh)

    # Faint effects on the skin: blush, forehead lines.
    _blend(canvas, lambda c: [cv2.circle(c, P(cx + s * fw * 0.6, cy + 0.08), L(0.06), (235, 60, 70), -1,
                                         cv2.LINE_AA, sh) for s in (-1, 1)], 0.45 * max(0.0, q[27]))
    _blend(canvas, lambda c: [cv2.line(c, P(cx - 0.12, cy - 0.2 + 0.025 * k), P(cx + 0.12, cy - 0.2 + 0.025 * k),
                                       _c(dark), T(0.006), cv2.LINE_AA, sh) for k in range(3)],
           0.7 * max(0.0, q[28]))

    # Eyes.
    ex, ey, es = idt["eye_dx"], cy - 0.06, idt["eye_size"]
    for side, own, brow_own, sign in ((-1, q[6], q[15], -1), (1, q[7], q[16], 1)):
        x0 = cx + side * ex
        openness = np.clip(0.6 + 0.3 * q[5] + 0.3 * own, 0.05, 1.0)
        h = es * 0.7 * openness
        lower_lid = 0.35 * max(0.0, q[22])  # squint: the lower lid rises
        mask = np.zeros((S, S), np.uint8)
        cv2.ellipse(mask, P(x0, ey), (L(es), L(h)), 0, 0, 360, 255, -1, cv2.LINE_AA, sh)
        if lower_lid > 0:
            cv2.rectangle(mask, P(x0 - es * 1.1, ey + h * (1 - lower_lid * 2)), P(x0 + es * 1.1, ey + h * 1.2),
                          0, -1, cv2.LINE_AA, sh)
        eye = np.full_like(canvas, 245)
        ix, iy = x0 + 0.6 * es * q[12], ey + 0.4 * es * q[13]
        cv2.circle(eye, P(ix, iy), L(es * 0.5), _c(idt["iris"]), -1, cv2.LINE_AA, sh)
        cv2.circle(eye, P(ix, iy), L(es * 0.22), (15, 15, 15), -1, cv2.LINE_AA, sh)
        _paste(canvas, eye, mask)
        cv2.ellipse(canvas, P(x0, ey), (L(es), L(h)), 0, 0, 360, _c(dark * 0.6), T(0.006), cv2.LINE_AA, sh)
        # Brow: three points; raise, frown (inner end), tilt, one-sided raise.
        by = ey - es * 1.4 - 0.06 * q[3] - 0.04 * brow_own
        inner = by + 0.05 * q[4] + 0.02 * q[21] * sign
        outer = by - 0.02 * q[21] * sign
        pts = np.array([P(x0 - side * es * 1.2, inner), P(x0, by - 0.008), P(x0 + side * es * 1.3, outer + 0.008)])
        cv2.polylines(canvas, [pts], False, _c(idt["hair"] * 0.7), T(0.018), cv2.LINE_AA, sh)

    # Nose.
    nw = 0.035 * (1 + 0.5 * q[23])
    ny = cy + 0.09
    cv2.line(canvas, P(cx, cy - 0.02), P(cx - 0.01, ny - 0.01), _c(dark), T(0.006), cv2.LINE_AA, sh)
    cv2.ellipse(canvas, P(cx, ny), (L(nw), L(0.015)), 0, 0, 180, _c(dark), T(0.007), cv2.LINE_AA, sh)
    _blend(canvas, lambda c: [cv2.line(c, P(cx + s * 0.03, cy + 0.0), P(cx + s * 0.045, cy + 0.05), _c(dark * 0.8),
                                       T(0.006), cv2.LINE_AA, sh) for s in (-1, 1)], 0.9 * max(0.0, q[14]))

    # Mouth: corners, upper and lower lip curves, the opening, teeth and tongue.
    mx = cx + 0.08 * q[9] + 0.02 * q[37]
    my = cy + 0.2 + 0.06 * jaw + 0.015 * q[38]
    mw = 0.1 * (1 + 0.5 * q[2] - 0.4 * max(0.0, q[11]) - 0.2 * max(0.0, q[31]) + 0.15 * q[32]
                  + 0.08 * q[35])
    lip = 0.022 * (1 - 0.4 * q[36]) * (1 + 0.6 * max(0.0, q[11]) + 0.3 * max(0.0, q[31]))
    opening = 0.15 * np.clip(0.25 + 0.45 * q[0] + 0.35 * q[30] + 0.1 * max(0.0, q[31]), 0, 1)
    corner_l = my - 0.08 * q[1] - 0.035 * q[17] + 0.01 * q[35]
    corner_r = my - 0.08 * q[1] - 0.035 * q[18] + 0.01 * q[35]
    up = 0.02 * q[19] + 0.008 * q[33]
    down = 0.02 * q[20] + 0.008 * q[34]
    u = np.linspace(-1, 1, 25)
    bump = 1 - u ** 2
    corners_y = np.interp(u, [-1, 1], [corner_l, corner_r])
    x = mx + u * mw
    inner_top = corners_y - bump * (0.3 * opening + up * 0.5)
    inner_bot = corners_y + bump * (0.7 * opening + down)
    outer_top = inner_top - bump * lip - up
    outer_bot = inner_bot + bump * lip * 1.2
    outer = np.array([P(a, b) for a, b in zip(np.r_[x, x[::-1]], np.r_[outer_top, outer_bot[::-1]])])
    cv2.fillPoly(canvas, [outer], _c(idt["lips"]), cv2.LINE_AA, sh)
    if opening + up + down > 0.004:
        inner = np.array([P(a, b) for a, b in zip(np.r_[x, x[::-1]], np.r_[inner_top, inner_bot[::-1]])])
        mouth = np.zeros((S, S), np.uint8)
        cv2.fillPoly(mouth, [inner], 255, cv2.LINE_AA, sh)
        inside = np.full_like(canvas, 0)
        inside[:] = (60, 15, 20)
        top = float(np.min(inner_top))
        if q[25] > 0:  # upper teeth
            cv2.rectangle(inside, P(mx - mw, top - 0.02), P(mx + mw, top + 0.022 * q[25]), (240, 240, 230), -1,
                          cv2.LINE_AA, sh)
        if q[39] > 0:  # lower teeth
            bot = float(np.max(inner_bot))
            cv2.rectangle(inside, P(mx - mw, bot - 0.018 * q[39]), P(mx + mw, bot + 0.02), (225, 225, 215), -1,
                          cv2.LINE_AA, sh)
        if q[26] > 0:  # tongue
            cv2.ellipse(inside, P(mx, float(np.max(inner_bot))), (L(mw * 0.6), L(0.03 * q[26])), 0, 180, 360,
                        (200, 70, 80), -1, cv2.LINE_AA, sh)
        _paste(canvas, inside, mouth)
    _blend(canvas, lambda c: [cv2.circle(c, P(mx + s * (mw + 0.02), (corner_l if s < 0 else corner_r) + 0.005),
                                         L(0.006), _c(dark * 0.7), -1, cv2.LINE_AA, sh) for s in (-1, 1)],
           0.9 * max(0.0, q[29]))

    img = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    grain = np.random.default_rng(idt["grain_seed"]).normal(0, 3.0, (size, size, 1))
    return np.clip(img + grain, 0, 255).astype(np.uint8)


def synthetic_arrays(count: int, size: int = 64, n_params: int = 40, seed: int = 0, paired: bool = False,
                     per_identity: int = 1) -> dict[str, np.ndarray]:
    """``count`` samples in memory: images, params, seq (and target_images, target_params if paired)."""
    out: dict[str, list] = {"images": [], "params": [], "seq": []}
    if paired:
        out.update(target_images=[], target_params=[])
    for i, s in enumerate(_samples(count, size, n_params, seed, paired, per_identity)):
        for k, v in s.items():
            out[k].append(v)
    return {k: np.stack(v) for k, v in out.items()}


def _samples(count, size, n_params, seed, paired, per_identity):
    rng = np.random.default_rng(seed)
    idt = None
    for i in range(count):
        if i % max(1, per_identity) == 0 or paired:
            idt = random_identity(rng)
        p = sample_params(rng, 1, n_params)[0]
        s = {"images": render_face(idt, p, size), "params": p, "seq": i // max(1, per_identity) if not paired else i}
        if paired:
            pt = sample_params(rng, 1, n_params)[0]
            s["target_images"] = render_face(idt, pt, size)
            s["target_params"] = pt
        yield s


def write_synthetic(path, count: int, size: int = 128, n_params: int = 40, seed: int = 0, paired: bool = False,
                    per_identity: int = 4, shard_size: int = 1000, overwrite: bool = False, progress: bool = False):
    """Write a synthetic dataset through DatasetWriter; returns the opened DatasetInfo."""
    from .data import DatasetWriter, open_dataset
    meta = {"source": "synthetic", "seed": seed, "per_identity": 1 if paired else per_identity}
    it = _samples(count, size, n_params, seed, paired, per_identity)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=count, desc="synthetic", unit="img")
    with DatasetWriter(path, image_size=size, param_names=param_names(n_params), paired=paired,
                       shard_size=shard_size, meta=meta, blendshapes="synthetic-v1", overwrite=overwrite) as w:
        for s in it:
            w.add(s["images"], s["params"], s["seq"], s.get("target_images"), s.get("target_params"))
    return open_dataset(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--out", required=True, help="dataset folder to write")
    parser.add_argument("--count", type=int, default=1000, help="number of samples (pairs, with --paired)")
    parser.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    parser.add_argument("--paired", action="store_true", help="write pairs: one identity, two parameter vectors")
    parser.add_argument("--n-params", type=int, default=40, help="parameter vector width (default 40)")
    parser.add_argument("--per-identity", type=int, default=4,
                        help="unpaired: consecutive samples sharing an identity and sequence id (default 4)")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")


def main(args) -> int:
    info = write_synthetic(args.out, args.count, args.size, args.n_params, args.seed, args.paired,
                           args.per_identity, args.shard_size, args.overwrite, progress=True)
    print(f"wrote {info.count} {'paired' if info.paired else 'unpaired'} samples ({info.image_size} px, "
          f"{info.n_params} parameters, {len(info.shards)} shard(s)) to {info.path}")
    return 0
