"""The driver's own mouth interior, drawn into the portrait's opening.

A video driver shows in every frame what the drawn interior (``engine.geometry.mouth_patch``: a dark cavity,
a flat band of upper teeth, a tongue's tip) can only suggest: teeth, lower teeth, tongue and the shadows
between them, moving with the speech. The drive stage cuts the frame's mouth (``cut_mouth``: a small image
round the inner lips, the mouth at most MOUTH_WIDTH pixels wide); the output frame draws it into the target's
opening at the output's pixels (``paste_mouth``), after the drawn interior and the generator's paint:

- its place: the driver's inner-lip corners onto the target's, its opening's height onto the target's (a map
  along and across the mouth, so a driver's tilted head or a wider target opening still fits);
- its light: from the skin round the driver's mouth towards the skin round the portrait's (``recolour``: a
  painting's varnish, a dim photo's exposure), with as much colour as the portrait has;
- its extent: inside the opening, fading in from its edge (the portrait's lips keep their edge), the driver's
  lip-coloured pixels shaded as deep as the drawn cavity (in a wide-open mouth less: its tongue shows), and only
  while the driver's own mouth is open enough to show an inside (a closed driver mouth has none: the drawn
  interior stays).

Without a driver frame (a parameter track, sound, sliders) the drawn interior stays as it was.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .blendshapes import INNER_LIP_LOOP, OUTER_LIP_LOOP

MOUTH_WIDTH = 96           # the cut's inner-lip corners this far apart (px) at most; smaller mouths kept at their size
CUT_MARGIN = 0.35          # the cut's margin round the outer lips, times the mouth's width (room for the skin ring)
SKIN_RING = (0.1, 0.3)     # the skin sampled round the outer lips: from / to, times the mouth's width
OPEN_FROM, OPEN_FULL = 0.06, 0.12   # the driver's opening (inner-lip gap / mouth width): pasted from, fully from
STRETCH = (0.5, 2.0)       # the cut's opening stretched to the target's by at most this (else the drawn interior) ...
STRETCH_FADE = (0.15, 0.5)  # ... fading out over this much of the stretch before each bound (no pop as it crosses)
SKIN_Y = (20.0, 245.0)     # skin brightness taken as within these (a black or blown-out ring measures nothing)
CURVE = (1.0, 1.4)         # the brightness curve's power: a darker portrait's mouth darkened, a lighter one's not lit
EDGE = 3.0                 # the paste fades in over EDGE x the drawn mouth's blur from the opening's outline
LIP_NEAR, LIP_FAR, LIP_SHADE = 0.15, 0.7, 0.3    # lip-coloured pixels inside: their shade (see paste_mouth)
LIP_WIDE, WIDE_SHADE = (0.15, 0.35), 0.65   # ... and less as the driver's opening goes from / to this: a tongue shows
SKIN_SMOOTH = 0.5          # s: a driver's skin colour smoothed over this long (MouthCutter)

_INNER, _OUTER = list(INNER_LIP_LOOP), list(OUTER_LIP_LOOP)
_CORNERS, _MID = (78, 308), (13, 14)      # inner-lip corners; the middle of the upper and lower inner lip


@dataclass(frozen=True)
class DriverMouth:
    """One driver frame's mouth: ``image`` (h, w, 3) uint8 RGB round it; ``corners`` (2, 2) and ``mid`` (2, 2)
    float64, the inner lips' corners (right, left) and middles (upper, lower) in the image's pixels; ``skin``
    (3,) float64, the colour of the driver's skin round its mouth (``skin_colour``); ``lips`` (3,), its lips'
    (``engine.geometry.lip_colour``)."""
    image: np.ndarray
    corners: np.ndarray
    mid: np.ndarray
    skin: np.ndarray
    lips: np.ndarray

    @property
    def opening(self) -> float:
        """The inner-lip gap over the mouth's width."""
        return _gap(self.corners, self.mid) / max(_width(self.corners), 1e-6)


def _width(corners: np.ndarray) -> float:
    return float(np.linalg.norm(corners[1] - corners[0]))


def _gap(corners: np.ndarray, mid: np.ndarray) -> float:
    """The inner-lip gap across the mouth (along the normal of the corners' line)."""
    along = (corners[1] - corners[0]) / max(_width(corners), 1e-6)
    normal = np.array([-along[1], along[0]])
    return float(abs((mid[1] - mid[0]) @ normal))


def skin_colour(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """The colour (3,) of the skin round the mouth in ``image``: sampled outwards from each outer-lip point
    (away from the lips' centre) over SKIN_RING, the mean of the samples between the 25th and 75th percentiles of
    brightness (a beard's, a nostril's and a highlight's left out). None where too few samples fall in the image."""
    lm = np.asarray(landmarks, np.float64)[:, :2]
    width = _width(lm[list(_CORNERS)])
    outer = lm[_OUTER]
    away = outer - outer.mean(0)
    away /= np.maximum(np.linalg.norm(away, axis=1, keepdims=True), 1e-6)
    reach = np.linspace(*SKIN_RING, 4) * width
    xy = np.round(outer[:, None] + away[:, None] * reach[None, :, None]).reshape(-1, 2).astype(int)
    h, w = image.shape[:2]
    xy = xy[(xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] < w) & (xy[:, 1] < h)]
    if len(xy) < 16:
        return None
    from .geometry import LUMA
    px = np.asarray(image)[xy[:, 1], xy[:, 0]].astype(np.float32)
    y = px @ LUMA
    lo, hi = np.percentile(y, [25, 75])
    keep = (y >= lo) & (y <= hi)
    return (px[keep] if keep.any() else px).mean(0, dtype=np.float64)


def cut_mouth(frame, landmarks: np.ndarray) -> DriverMouth | None:
    """The mouth of a driver frame (an (H, W, 3) uint8 RGB array, or an ``engine.video.DecodedFrame``: only
    the mouth's region is converted) with its face mesh ``landmarks`` (478, 2+) in the frame's pixels; None
    where the mouth is closed (under OPEN_FROM: nothing inside to show, and nothing cut), too small to show
    anything or leaves the frame."""
    import cv2
    lm = np.asarray(landmarks, np.float64)[:, :2]
    corners, mid = lm[list(_CORNERS)], lm[list(_MID)]
    width = _width(corners)
    if not np.isfinite(lm).all() or width < 6 or _gap(corners, mid) < OPEN_FROM * width:
        return None
    fh, fw = (frame.height, frame.width) if hasattr(frame, "region") else frame.shape[:2]
    outer = lm[_OUTER]
    pad = CUT_MARGIN * width
    x0, y0 = np.maximum(np.floor(outer.min(0) - pad).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(outer.max(0) + pad).astype(int) + 1, (fw, fh))
    if x1 - x0 < 8 or y1 - y0 < 8 or not (outer.min(0) >= 0).all() or not (outer.max(0) < (fw, fh)).all():
        return None
    image = frame.region(x0, y0, x1, y1) if hasattr(frame, "region") else frame[y0:y1, x0:x1]
    s = min(1.0, MOUTH_WIDTH / width)
    if s < 1.0:
        image = cv2.resize(image, (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s))),
                           interpolation=cv2.INTER_AREA)
    image = np.ascontiguousarray(image, np.uint8)
    to_cut = lambda p: (p - (x0, y0)) * s    # noqa: E731
    from .geometry import lip_colour
    skin = skin_colour(image, to_cut(lm))
    if skin is None:
        return None
    return DriverMouth(image, to_cut(corners), to_cut(mid), skin, lip_colour(image, to_cut(lm)))


class MouthCutter:
    """``cut_mouth`` over one driver's frames in time order, the colour of its skin smoothed exponentially over
    SKIN_SMOOTH seconds (a gap of seconds forgets the old light by itself): the ring round a moving mouth samples
    moving skin (the chin's shadow as it opens), 2 grey levels a frame on a talking clip, and an inside drawn in a
    flickering light flickers."""

    def __init__(self, seconds: float = SKIN_SMOOTH):
        self.seconds = float(seconds)
        self.skin: np.ndarray | None = None
        self.t: float | None = None

    def __call__(self, frame, landmarks: np.ndarray, t: float) -> DriverMouth | None:
        mouth = cut_mouth(frame, landmarks)
        if mouth is None:
            return None
        t = float(t)
        if self.skin is None or t < self.t:
            self.skin = mouth.skin.copy()
        else:
            self.skin += (1.0 - math.exp(-(t - self.t) / self.seconds)) * (mouth.skin - self.skin)
        self.t = t
        return replace(mouth, skin=self.skin.copy())


def recolour(image: np.ndarray, skin_from: np.ndarray, skin_to: np.ndarray) -> np.ndarray:
    """``image`` (h, w, 3) uint8 in the light of ``skin_to`` where it was in that of ``skin_from`` (skin colours
    (3,)), float32 0-255: its brightness by a power curve that takes the one skin's brightness towards the other's
    (black stays black and white white: teeth are not blown out on a lighter face; the power within CURVE: a pale
    portrait's mouth is not lit, its depth stays dark), its colour cast by the square
    root of the two skins' hue ratio (as ``engine.geometry.teeth_colour``: a varnish's yellow, not a green)."""
    from .geometry import LUMA
    s_from, s_to = np.maximum(np.asarray(skin_from, np.float64), 1.0), np.maximum(np.asarray(skin_to, np.float64), 1.0)
    y_from, y_to = (float(np.clip(s @ LUMA, *SKIN_Y)) for s in (s_from, s_to))
    k = np.float32(np.clip(np.log(y_to / 255.0) / np.log(y_from / 255.0), *CURVE))
    cast = np.sqrt((s_to / (s_to @ LUMA)) / (s_from / (s_from @ LUMA)))
    cast = (cast / (cast @ LUMA)).astype(np.float32)
    x = image.astype(np.float32)
    y = np.maximum(x @ LUMA, np.float32(0.5))
    scale = (np.float32(255.0) * (y * np.float32(1.0 / 255.0)) ** k) / y
    return np.clip(x * scale[..., None] * cast, 0, 255)


def _mouth_frame(corners: np.ndarray, mid: np.ndarray):
    """(origin, along, across): the mouth's centre, and unit vectors along the corners' line and across it."""
    along = (corners[1] - corners[0]) / max(_width(corners), 1e-6)
    across = np.array([-along[1], along[0]])
    return 0.5 * (corners.mean(0) + mid.mean(0)), along, across


def placement(mouth: DriverMouth, dst: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The 2x3 matrix from the cut's pixels to those of the target landmarks ``dst`` (478, 2+): the corners'
    line onto the target's (its length scaled), the opening's height onto the target's; and how far the cut may
    show so stretched, 1 down to 0 at the bounds of STRETCH (past them: None)."""
    d_corners, d_mid = np.asarray(dst, np.float64)[list(_CORNERS), :2], np.asarray(dst, np.float64)[list(_MID), :2]
    sx = _width(d_corners) / max(_width(mouth.corners), 1e-6)
    sy = _gap(d_corners, d_mid) / max(_gap(mouth.corners, mouth.mid), 1e-6)
    stretch = sy / sx
    if not STRETCH[0] < stretch < STRETCH[1]:
        return None
    from .geometry import _smooth
    fit = float(_smooth((stretch - STRETCH[0]) / STRETCH_FADE[0]) * _smooth((STRETCH[1] - stretch) / STRETCH_FADE[1]))
    o1, u1, v1 = _mouth_frame(mouth.corners, mouth.mid)
    o2, u2, v2 = _mouth_frame(d_corners, d_mid)
    # cut -> (u, v) in the driver's mouth frame -> scaled -> the target's mouth frame
    lin = np.stack([u2, v2], 1) @ np.diag([sx, sy]) @ np.stack([u1, v1], 0)
    return np.hstack([lin, (o2 - lin @ o1)[:, None]]), fit


def paste_mouth(region: np.ndarray, mouth: DriverMouth, src: np.ndarray, dst: np.ndarray, skin: np.ndarray,
                colour: float = 1.0, ss: int = 1) -> bool:
    """Draw ``mouth`` into the target's mouth opening on ``region`` (uint8 RGB, in place). ``src``, ``dst``:
    the portrait's landmarks at rest and the target's (478, 2+) in ``region``'s pixels; ``skin``: the colour
    of the skin round the portrait's mouth (``skin_colour``); ``colour``: how much colour the portrait has
    (``engine.geometry.colourfulness``); ``ss``: the outline's supersampling. Drawn, as the drawn interior,
    only where the target's opening is wider than the source's, and there with the same share of it new;
    False where nothing was drawn."""
    import cv2

    from .geometry import LUMA, _aa_canvas, _blend_kernel, _fixed_point, _mouth_window, _poly_area, _smooth
    src, dst = np.asarray(src, np.float64)[:, :2], np.asarray(dst, np.float64)[:, :2]
    a_src, a_dst = _poly_area(src[_INNER]), _poly_area(dst[_INNER])
    show = float(_smooth((mouth.opening - OPEN_FROM) / (OPEN_FULL - OPEN_FROM)))
    if a_dst <= 1.0 or a_dst <= a_src * 1.05 or show <= 0:
        return False
    placed = placement(mouth, dst)
    if placed is None:
        return False
    m, fit = placed
    h, w = region.shape[:2]
    (x0, y0, x1, y1), sigma = _mouth_window(dst, h, w)
    if x1 <= x0 or y1 <= y0:
        return False
    ww, wh = x1 - x0, y1 - y0
    poly = _fixed_point(dst[_INNER] - (x0, y0), ss)
    inside = _aa_canvas((wh * ss, ww * ss), lambda c, v: cv2.fillPoly(c, [poly], v, cv2.LINE_AA, 4))
    if ss > 1:
        inside = cv2.resize(inside, (ww, wh), interpolation=cv2.INTER_AREA)
    # fading in from the outline, by the distance inside it: over EDGE blur widths, or half the opening's depth
    # where it is thinner (teeth bared through a narrow gap show whole, not greyed by the cavity under them)
    depth = cv2.distanceTransform((inside > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    ramp = min(EDGE * sigma, max(1.0, 0.5 * float(depth.max())))
    new = min(max((a_dst - a_src) / a_dst, 0.0), 1.0)
    alpha = np.clip((depth - 0.5) * np.float32(1.0 / ramp), 0, 1) * np.float32(new * show * fit)
    m = m.copy()
    m[:, 2] -= (x0, y0)
    cut = cv2.warpAffine(mouth.image, m, (ww, wh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # The mesh's inner-lip outline runs a little outside the real opening, and a nearly closed mouth shows its lips'
    # insides and the tongue: pixels of the driver's lip colour are shaded as deep in the mouth as the drawn cavity
    # (else a small opening filled with lip reads as closed lips); teeth and the dark inside keep their light. A wide
    # opening's are mostly its tongue: shaded to WIDE_SHADE only (at LIP_SHADE a black hole had replaced it).
    lipness = np.linalg.norm(cut.astype(np.float32) - mouth.lips.astype(np.float32), axis=2)
    lipness *= np.float32(1.0 / max(float(np.linalg.norm(mouth.lips)), 1.0))
    wide = float(_smooth((mouth.opening - LIP_WIDE[0]) / (LIP_WIDE[1] - LIP_WIDE[0])))
    deep = LIP_SHADE + (WIDE_SHADE - LIP_SHADE) * wide
    shade = deep + (1.0 - deep) * _smooth((lipness - LIP_NEAR) * np.float32(1.0 / (LIP_FAR - LIP_NEAR)))
    fill = recolour(cut, mouth.skin, skin) * shade[..., None]
    if colour < 1.0:
        grey = (fill @ LUMA)[..., None]
        fill = grey + np.float32(colour) * (fill - grey)
    a = alpha[..., None]
    _blend_kernel()(region[y0:y1, x0:x1], np.concatenate([np.clip(fill, 0, 255) * a, a], -1))
    return True


INTERIORS = ("driver", "drawn")     # --mouth-interior: what a video driver's portrait shows inside its open mouth


def check_interior(value: str) -> str:
    """``value`` if it is one of INTERIORS, else a ValueError that names the choices."""
    if value not in INTERIORS:
        raise ValueError(f"mouth interior must be one of {', '.join(INTERIORS)}, not {value!r}")
    return value


def add_interior_argument(p) -> None:
    p.add_argument("--mouth-interior", choices=INTERIORS, default="driver",
                   help="inside the portrait's open mouth, with a driver video: 'driver' (default: the driver's own "
                        "teeth and tongue, in the portrait's colours) or 'drawn' (a drawn cavity and teeth, as "
                        "tracks and sound get)")
