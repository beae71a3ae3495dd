"""Named parameter presets for the sliders: "neutral" and the paper's discrete expressions.

The expressions are made from the blendshape model itself, so they stay right whatever model a user
builds: each is a description in terms of face motions measured on the mesh (mouth corners up,
jaw open, brows raised, eyes widened...), e.g. happiness = smile + cheeks up + lips a little apart,
and its parameter vector is the smallest p whose mesh motion ``U p`` has those measurements
(ridge least squares over all N components, motions not named held near zero), clipped to
[-1, 1]. Without a blendshape model only "neutral" exists.
"""
from __future__ import annotations

import numpy as np

__all__ = ["make_presets", "motion_features", "EXPRESSIONS"]

RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)

# Each expression: target values of signed motion measurements (``motion_features``), in units of
# the largest value one parameter at 1 reaches; measurements not named are held at 0 (weight 0.5).
EXPRESSIONS: dict[str, dict[str, float]] = {
    "happy": {"corners_up": 1.0, "mouth_width": 0.6, "lips_part": 0.2, "eyes_open": -0.3},
    "sad": {"corners_up": -0.8, "brow_inner_up": 0.8, "lips_part": -0.1},
    "surprise": {"brows_up": 1.0, "eyes_open": 0.8, "jaw_open": 0.8},
    "anger": {"brows_up": -1.0, "brow_inner_up": -0.5, "lips_part": -0.4, "eyes_open": 0.3},
    "disgust": {"upper_lip_raise": 1.0, "brows_up": -0.5, "corners_up": -0.3, "eyes_open": -0.3},
    "fear": {"brows_up": 0.7, "brow_inner_up": 0.6, "eyes_open": 1.0, "mouth_width": 0.7, "jaw_open": 0.3},
    "speak_a": {"jaw_open": 1.0, "lips_part": 0.6},
    "speak_o": {"lips_forward": 1.0, "mouth_width": -0.6, "jaw_open": 0.5, "lips_part": 0.3},
}


def motion_features(d: np.ndarray) -> dict[str, float]:
    """Signed, independent measurements of a mesh displacement d (468, 3) in the canonical frame
    (x to the subject's left, y down, z away from the camera)."""
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    brows = -(y[list(RIGHT_BROW)].mean() + y[list(LEFT_BROW)].mean()) / 2
    inner = -(y[[55, 65, 107, 66]].mean() + y[[285, 295, 336, 296]].mean()) / 2
    eyes = ((y[145] - y[159]) + (y[153] - y[158]) + (y[374] - y[386]) + (y[380] - y[385])) / 4
    return {
        "jaw_open": y[152],                            # chin down
        "lips_part": y[14] - y[13],                    # lips apart (negative: pressed)
        "corners_up": -(y[61] + y[291]) / 2,           # smile (negative: frown)
        "mouth_width": (x[291] - x[61]) / 2,           # stretched (negative: narrowed)
        "lips_forward": -(z[0] + z[17]) / 2,           # pucker
        "upper_lip_raise": -y[0],
        "brows_up": brows,                             # negative: lowered
        "brow_inner_up": inner - brows,                # inner ends against the whole brow
        "eyes_open": eyes,                             # negative: closing
    }


def make_presets(param_names: list[str], n_exp: int, face_model=None) -> dict[str, np.ndarray]:
    """{"neutral": 0, and each of EXPRESSIONS when a blendshape model with the same parameters is
    given}."""
    n = len(param_names)
    out = {"neutral": np.zeros(n, np.float32)}
    if face_model is None or face_model.n_params != n:
        return out
    eye = np.eye(n)
    cols = [motion_features(face_model.displacement(eye[j])) for j in range(n)]
    names = list(cols[0])
    a = np.array([[c[f] for c in cols] for f in names])          # (F, N)
    reach = np.abs(a).max(axis=1) + 1e-12                         # per feature, one parameter at 1
    a = a / reach[:, None]
    lam = 0.05
    for label, spec in EXPRESSIONS.items():
        t = np.array([spec.get(f, 0.0) for f in names])
        w = np.array([1.0 if f in spec else 0.5 for f in names])
        aw = a * w[:, None]
        p = np.linalg.solve(aw.T @ aw + lam * np.eye(n), aw.T @ (t * w))
        out[label] = np.clip(p, -1.0, 1.0).astype(np.float32)
    return out
