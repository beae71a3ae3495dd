"""Images are checked before they are decoded: hostile headers get a clear error, large photos are
downscaled, and every entry point (render --source, evaluate, annotate) goes through the check."""
import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from engine import face, images


def _png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with almost no pixel data: a decompression bomb's
    header, made without ever holding the pixels (a real bomb differs only in its IDAT)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("w,h", [(40000, 1), (30000, 30000), (16385, 100), (9000, 9000)])
def test_oversized_headers_are_refused_before_decoding(tmp_path, w, h):
    data = _png(w, h)
    assert len(data) < 300
    with pytest.raises(images.ImageTooLargeError, match="too large"):
        images.decode_image(data, "upload.png")
    p = tmp_path / "bomb.png"
    p.write_bytes(data)
    with pytest.raises(images.ImageTooLargeError, match="bomb.png"):
        face.load_image(p)


def test_degenerate_and_garbage_images_get_clear_errors(tmp_path):
    with pytest.raises(images.ImageReadError, match="too small"):
        images.decode_image(_png(16000, 1), "strip.png")
    with pytest.raises(images.ImageReadError, match="not an image"):
        images.decode_image(b"GIF89a" + b"\xff" * 100, "junk.gif")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(images.ImageReadError, match="folder"):
        images.load_image(tmp_path / "dir.png")


def test_large_valid_photos_are_downscaled_on_decode():
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (60, 100, 3), np.uint8)
    big = np.asarray(Image.fromarray(small).resize((6000, 3600), Image.NEAREST))
    for fmt in ("JPEG", "PNG"):
        buf = io.BytesIO()
        Image.fromarray(big).save(buf, fmt)
        out = images.decode_image(buf.getvalue(), "big")
        assert out.shape == (round(3600 * images.DECODE_MAX_SIDE / 6000), images.DECODE_MAX_SIDE, 3)
        assert out.dtype == np.uint8
        # The content is the photo's own, scaled (mean colour kept within JPEG error).
        assert abs(float(out.mean()) - float(big.mean())) < 3.0


def test_exif_orientation_is_applied():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = 255  # left half white
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # rotate 90 CW for display
    buf = io.BytesIO()
    pil.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    out = images.decode_image(buf.getvalue())
    assert out.shape[:2] == (80, 40)  # upright: portrait orientation
    assert out[:30].mean() > 200 and out[-30:].mean() < 50  # the white half is now on top


def test_render_with_a_hostile_source_is_one_line_error(tmp_path, shared_data):
    src = tmp_path / "strip.png"
    src.write_bytes(_png(40000, 1))
    out = tmp_path / "out.mp4"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "render", "--source", str(src),
                        "--driver", str(shared_data / "driving" / "d18.mp4"), "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "too large" in lines[0] and "strip.png" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()
