"""Images entering the engine: the header is checked before anything is decoded, and large photos are
downscaled on decode, so that a small hostile file (a 40000x1 PNG, a 30000x30000 decompression bomb)
gets a clear error instead of aborting the process or taking gigabytes.

Every way an image enters (uploads, ``serve --portraits``, ``render --source``, ``evaluate``,
``annotate``) goes through ``load_image`` (a file) or ``decode_image`` (bytes).
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = ["ImageReadError", "ImageTooLargeError", "MAX_SIDE", "MAX_PIXELS", "DECODE_MAX_SIDE",
           "MIN_SIDE", "image_size", "decode_image", "load_image"]

MAX_SIDE = 16384            # larger sides are refused (OpenCV's remap, used by the face mesh, asserts near 32767)
MAX_PIXELS = 50_000_000     # about 40-50 megapixels: admits 48 and 50 MP phone photos, 150 MB decoded at most
DECODE_MAX_SIDE = 4096      # larger (valid) photos are downscaled on decode: plenty for a 512 px face crop
MIN_SIDE = 16               # smaller images cannot hold a face the mesh can find


class ImageReadError(ValueError):
    """An image exists but cannot be read (not an image, corrupt, or refused by the size checks)."""


class ImageTooLargeError(ImageReadError):
    """The image's header declares dimensions over the limits; nothing was decoded."""


def image_size(data: bytes, name: str = "image") -> tuple[int, int]:
    """(width, height) from the header alone. Raises ImageReadError / ImageTooLargeError."""
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # lazy: reads the header, decodes nothing
                w, h = im.size
    except Image.DecompressionBombError:
        raise ImageTooLargeError(f"{name} is too large: over {MAX_PIXELS / 1e6:.0f} megapixels "
                                 f"(the limit; sides up to {MAX_SIDE} px)") from None
    except Exception:
        raise ImageReadError(f"cannot read {name}: not an image or the file is corrupt "
                             "(JPEG, PNG, WebP, BMP, TIFF or GIF)") from None
    if max(w, h) > MAX_SIDE or w * h > MAX_PIXELS:
        raise ImageTooLargeError(f"{name} is too large: {w}x{h} px (limits: {MAX_SIDE} px a side, "
                                 f"{MAX_PIXELS / 1e6:.0f} megapixels)")
    if min(w, h) < MIN_SIDE:
        raise ImageReadError(f"{name} is too small to hold a face: {w}x{h} px (at least {MIN_SIDE} px a side)")
    return w, h


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode image bytes as RGB uint8 (H, W, 3), EXIF orientation applied, at most DECODE_MAX_SIDE a
    side. The header is checked first (image_size)."""
    import cv2
    w, h = image_size(data, name)
    # JPEGs are reduced by 2/4/8 inside the decoder (less memory and time); the rest after decoding.
    flag, k = cv2.IMREAD_COLOR, 1
    for f, r in ((cv2.IMREAD_REDUCED_COLOR_8, 8), (cv2.IMREAD_REDUCED_COLOR_4, 4), (cv2.IMREAD_REDUCED_COLOR_2, 2)):
        if max(w, h) // r >= DECODE_MAX_SIDE:
            flag, k = f, r
            break
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flag if k > 1 else cv2.IMREAD_COLOR)
    if img is None:
        img = _decode_with_pillow(data, name)
    else:
        img = np.ascontiguousarray(img[:, :, ::-1])
    side = max(img.shape[:2])
    if side > DECODE_MAX_SIDE:
        s = DECODE_MAX_SIDE / side
        img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                         interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def _decode_with_pillow(data: bytes, name: str) -> np.ndarray:
    """Formats OpenCV lacks (some WebP, GIF): Pillow, with the EXIF orientation applied."""
    from PIL import Image, ImageOps
    try:
        with Image.open(io.BytesIO(data)) as im:
            if max(im.size) > DECODE_MAX_SIDE:
                im.draft("RGB", (DECODE_MAX_SIDE, DECODE_MAX_SIDE))
            return np.asarray(ImageOps.exif_transpose(im).convert("RGB"), dtype=np.uint8)
    except Exception:
        raise ImageReadError(f"cannot read {name}: not an image or the file is corrupt") from None


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3). Missing file -> FileNotFoundError; anything that is
    not a readable image of a sane size -> ImageReadError (a ValueError), both naming the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if path.is_dir():
        raise ImageReadError(f"not an image file (a folder): {path}")
    limit = 256 << 20  # an honest 40 MP photo is well under this; a file bigger is refused unread
    if path.stat().st_size > limit:
        raise ImageTooLargeError(f"image file {path} is {path.stat().st_size >> 20} MB (limit {limit >> 20} MB)")
    return decode_image(path.read_bytes(), str(path))
