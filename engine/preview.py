"""A small shaded rendering of a blendshape model's face mesh (the paper's Fig. 1, rows 1 and 3).

    from engine.blendshapes import load_default_face_model
    from engine.preview import render_params, render_mesh
    img = render_params(load_default_face_model(), p, size=128)     # (128, 128, 3) uint8 RGB
    img = render_mesh(mesh_478x3_canonical, size=128)

Pure NumPy + OpenCV, no GPU, a few milliseconds at 128 px: the mesh is posed (optional yaw/pitch
about the face centre), its triangles (``engine.blendshapes.mesh_triangles``, derived from
MediaPipe's tessellation) are drawn far-to-near into a triangle-id buffer (painter's algorithm,
correct for the convex-ish, near-frontal face), and each pixel is shaded by Gouraud-interpolated
Lambert lighting of per-vertex normals, rendered at 2x and downsampled (antialiasing). The holes
of the mesh are filled behind the face: the eyes in off-white with a grey iris disc, the mouth
interior dark red, so blinks and mouth opening read at a glance.
"""
from __future__ import annotations

import numpy as np

__all__ = ["render_mesh", "render_params", "sweep_strip", "motion_colors"]

_SKIN = np.array([0.80, 0.74, 0.70])
_BACKGROUND = (255, 255, 255)
_MOUTH = (70, 25, 30)
_EYE = (235, 235, 230)
_IRIS = (90, 90, 100)


def _rotation(yaw: float, pitch: float) -> np.ndarray:
    cy, sy = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    cp, sp = np.cos(np.radians(pitch)), np.sin(np.radians(pitch))
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return rx @ ry


def render_mesh(mesh: np.ndarray, size: int = 128, yaw: float = 0.0, pitch: float = 0.0,
                light=(-0.35, -0.45, -1.0), background=_BACKGROUND, color=None,
                supersample: int = 2, zoom: float = 1.0, vertex_colors=None) -> np.ndarray:
    """Render a canonical-frame face mesh ((468 | 478, 3), ``engine.face`` unit crop coordinates:
    x right, y down, z away from the camera) to a (size, size, 3) uint8 RGB image.

    ``yaw``/``pitch`` in degrees turn the head about its centre; ``zoom`` > 1 magnifies about the
    crop centre; ``light`` points from the surface towards the light; ``color`` an RGB 0..1 skin tone;
    ``vertex_colors`` (468|478, 3) RGB 0..1 per point instead (e.g. a motion heat map)."""
    import cv2
    from .blendshapes import (INNER_LIP_LOOP, LEFT_EYE_LOOP, LEFT_IRIS, RIGHT_EYE_LOOP, RIGHT_IRIS,
                              mesh_triangles)
    v = np.asarray(mesh, np.float64)
    if v.ndim != 2 or v.shape[0] not in (468, 478) or v.shape[1] != 3:
        raise ValueError(f"render_mesh expects a (468, 3) or (478, 3) mesh, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError("render_mesh: the mesh holds NaN or inf")
    ss = max(1, int(supersample))
    big = size * ss
    centre = np.array([0.5, 0.5, float(v[:468, 2].mean())])
    v = (v - centre) @ _rotation(yaw, pitch).T * zoom + centre
    xy = v[:, :2] * big
    tri = mesh_triangles()
    # normals (outward = towards the camera for the frontal face: negative z)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    fn = -np.cross(b - a, c - a)
    vn = np.zeros((len(v), 3))
    for k in range(3):
        np.add.at(vn, tri[:, k], fn)
    vn /= np.linalg.norm(vn, axis=1, keepdims=True) + 1e-12
    ldir = np.asarray(light, np.float64)
    ldir = ldir / np.linalg.norm(ldir)
    view = np.array([0.0, 0.0, -1.0])
    half = (ldir + view) / np.linalg.norm(ldir + view)
    diffuse = np.clip(vn @ ldir, 0, 1)
    spec = np.clip(vn @ half, 0, 1) ** 24
    shade = 0.30 + 0.70 * diffuse            # (V,)
    skin = _SKIN if color is None else np.asarray(color, np.float64)

    img = np.empty((big, big, 3), np.uint8)
    img[:] = background
    # holes first (behind the face)
    for loop, iris in ((RIGHT_EYE_LOOP, RIGHT_IRIS), (LEFT_EYE_LOOP, LEFT_IRIS)):
        poly = np.round(xy[list(loop)] * 16).astype(np.int32)
        cv2.fillPoly(img, [poly], _EYE, lineType=cv2.LINE_AA, shift=4)
        if len(v) == 478:
            ctr = xy[iris[0]]
            rad = np.linalg.norm(xy[list(iris[1:])] - ctr, axis=1).mean()
            cv2.circle(img, tuple(np.round(ctr * 16).astype(int)), int(round(rad * 16)), _IRIS, -1,
                       lineType=cv2.LINE_AA, shift=4)
    poly = np.round(xy[list(INNER_LIP_LOOP)] * 16).astype(np.int32)
    cv2.fillPoly(img, [poly], _MOUTH, lineType=cv2.LINE_AA, shift=4)
    # triangle ids, far to near
    ids = np.full((big, big), -1.0, np.float32)
    depth = v[tri, 2].mean(1)
    for t in np.argsort(-depth):
        pts = np.round(xy[tri[t]] * 16).astype(np.int32)
        cv2.fillConvexPoly(ids, pts, float(t), lineType=cv2.LINE_8, shift=4)
    yy, xx = np.nonzero(ids >= 0)
    if len(yy):
        t = ids[yy, xx].astype(np.int64)
        p0, p1, p2 = xy[tri[t, 0]], xy[tri[t, 1]], xy[tri[t, 2]]
        px = np.stack([xx + 0.5, yy + 0.5], 1)
        den = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p2[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1])
        den = np.where(np.abs(den) < 1e-9, 1e-9, den)
        w1 = ((px[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p2[:, 0] - p0[:, 0]) * (px[:, 1] - p0[:, 1])) / den
        w2 = ((p1[:, 0] - p0[:, 0]) * (px[:, 1] - p0[:, 1]) - (px[:, 0] - p0[:, 0]) * (p1[:, 1] - p0[:, 1])) / den
        w1 = np.clip(w1, 0, 1)
        w2 = np.clip(w2, 0, 1 - w1)
        w0 = 1 - w1 - w2
        s = w0 * shade[tri[t, 0]] + w1 * shade[tri[t, 1]] + w2 * shade[tri[t, 2]]
        h = w0 * spec[tri[t, 0]] + w1 * spec[tri[t, 1]] + w2 * spec[tri[t, 2]]
        if vertex_colors is None:
            base = skin[None]
        else:
            vc = np.asarray(vertex_colors, np.float64)
            base = (w0[:, None] * vc[tri[t, 0]] + w1[:, None] * vc[tri[t, 1]] + w2[:, None] * vc[tri[t, 2]])
        col = s[:, None] * base + 0.25 * h[:, None]
        img[yy, xx] = np.clip(col * 255, 0, 255).astype(np.uint8)
    if ss > 1:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def render_params(face_model, p=None, identity=None, size: int = 128, **kw) -> np.ndarray:
    """Render ``face_model.instantiate(p, identity)`` (p: the N = 40 parameters, default 0)."""
    mesh = face_model.instantiate(np.zeros(face_model.n_params) if p is None else p, identity)
    return render_mesh(mesh, size=size, **kw)


def sweep_strip(face_model, index: int, values=None, size: int = 96, **kw) -> np.ndarray:
    """One parameter swept over ``values`` (default -1 .. 1 in steps of 0.2, SPEC section 6), the
    rest 0: a (size, len(values) * size, 3) strip."""
    values = np.round(np.arange(-1.0, 1.0001, 0.2), 2) if values is None else values
    tiles = []
    for val in values:
        p = np.zeros(face_model.n_params)
        p[index] = val
        tiles.append(render_params(face_model, p, size=size, **kw))
    return np.concatenate(tiles, axis=1)


def motion_colors(displacement: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """Per-point colours (P, 3) in 0..1 for a displacement field (P, 3): skin where nothing moves,
    towards red where the motion is largest (or reaches ``vmax``)."""
    mag = np.linalg.norm(np.asarray(displacement, np.float64), axis=1)
    t = np.clip(mag / (vmax if vmax else max(mag.max(), 1e-12)), 0, 1)[:, None]
    return (1 - t) * _SKIN[None] + t * np.array([0.95, 0.15, 0.10])[None]
