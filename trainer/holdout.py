"""The identities no model is trained on: one list, used by training (to leave them out), by
evaluation (to measure only on them) and by the model cards (to name them).

Paths are relative to the shared data folder (``../shared/data``); globs allowed. Chosen so that
each held-out identity appears nowhere else in the data (**(choice)**: PC-AVS has people appearing
twice and the GRID samples may share speakers, so none of those are held out; they train):
- ``driving/d19``: the LivePortrait clip held out since the first model (a woman talking).
- ``talking/sadtalker_wda_aoc``: an HDTF speech (a woman, 8 s).
- ``talking/tpsmm_driving``: a man talking (6.8 s).
- ``talking/aniportrait_pose_ref``: a speech (5 s).
- ``expressions/W011_*``: one MEAD actress, 8 posed emotions (blinks, brows, smiles).
Portraits for cross-identity driving: ``portraits/s5``, ``s9``, ``d30`` (stills; by their names, of people in
no clip).
"""
from __future__ import annotations

from pathlib import Path

HELD_OUT_CLIPS = ("driving/d19.mp4", "talking/sadtalker_wda_aoc.mp4", "talking/tpsmm_driving.mp4",
                  "talking/aniportrait_pose_ref.mp4", "expressions/W011_*.mp4")
HELD_OUT_TALKING = ("talking/sadtalker_wda_aoc.mp4", "talking/tpsmm_driving.mp4",
                    "talking/aniportrait_pose_ref.mp4", "driving/d19.mp4")
HELD_OUT_PORTRAITS = ("portraits/s5.jpg", "portraits/s9.jpg", "portraits/d30.jpg")


def held_out_files(data: str | Path, patterns=HELD_OUT_CLIPS + HELD_OUT_PORTRAITS) -> list[Path]:
    """The held-out files that exist under ``data``, sorted."""
    data = Path(data)
    return sorted({p for pat in patterns for p in data.glob(pat)})


def is_held_out(path: str | Path, data: str | Path) -> bool:
    """Whether a media file under ``data`` belongs to a held-out identity."""
    path = Path(path).resolve()
    return path in {p.resolve() for p in held_out_files(data)}


def training_clips(data: str | Path) -> list[Path]:
    """Every video of driving/, talking/ and expressions/ that is not held out."""
    data = Path(data)
    held = {p.resolve() for p in held_out_files(data)}
    return sorted(p for sub in ("driving", "talking", "expressions") for p in (data / sub).glob("*.mp4")
                  if p.resolve() not in held)
