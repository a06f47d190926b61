"""Uploads: checked before they are decoded, then preprocessed the way MNIST was made.

An upload must be PNG or JPEG by its **content** (magic bytes, not its name or declared
type), at most :data:`MAX_SIDE` pixels a side and :data:`MAX_PIXELS` in all, read from the
header before any pixel is decoded (a decompression bomb is refused without being
expanded). Preprocessing follows LeCun's MNIST recipe, so a drawing looks to the model like
its training data: grey levels, light strokes on a dark background (inverted if the
picture is mostly light), cropped to the strokes, the longer side scaled to 20/28 of the
input, and centred by its centre of mass.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

MAX_BYTES = 2 * 1024 * 1024
MAX_SIDE = 4096
MAX_PIXELS = 4096 * 4096
MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


class ImageError(ValueError):
    """An upload that is not an acceptable image (the message says why)."""


def decode(data: bytes) -> np.ndarray:
    """Validate and decode an upload to ``(H, W)`` float32 grey levels in [0, 1]."""
    from PIL import Image

    if not data:
        raise ImageError("the image is empty")
    if len(data) > MAX_BYTES:
        raise ImageError(f"the image is {len(data)} bytes; at most {MAX_BYTES} are accepted")
    kind = next((k for magic, k in MAGIC.items() if data.startswith(magic)), None)
    if kind is None:
        raise ImageError("the upload is not a PNG or JPEG image (by its content)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))  # reads the header only
            if getattr(img, "format", None) != kind:
                raise ImageError(f"the upload starts like a {kind} but is {img.format}")
            w, h = img.size
            if w < 1 or h < 1 or w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
                raise ImageError(f"the image is {w}x{h}; at most {MAX_SIDE} pixels a side "
                                 f"and {MAX_PIXELS} pixels in all are accepted (refused "
                                 f"before decoding)")
            img.load()
            if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
                # Transparent pixels are background: composite onto black.
                rgba = img.convert("RGBA")
                back = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                img = Image.alpha_composite(back, rgba)
            grey = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("the image declares more pixels than the decompression-bomb limit "
                         f"({MAX_PIXELS}; refused before decoding)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(f"the image cannot be decoded ({type(e).__name__}: {e})") from None
    return grey


def preprocess(grey: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """``(H, W)`` grey levels -> the ``(C, H', W')`` input the model sees (see the module)."""
    c, out_h, out_w = shape
    from PIL import Image

    if grey.mean() > 0.5:  # dark strokes on paper: MNIST is light strokes on black
        grey = 1.0 - grey
    ink = grey > 0.1
    canvas = np.zeros((out_h, out_w), dtype=np.float32)
    if ink.any():
        rows, cols = np.nonzero(ink)
        crop = grey[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        box = max(1, round(min(out_h, out_w) * 20 / 28))
        scale = box / max(crop.shape)
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        small = np.asarray(Image.fromarray((crop * 255).astype(np.uint8)).resize(
            size, Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
        total = small.sum()
        cy, cx = ((np.indices(small.shape) * small).reshape(2, -1).sum(1) / total
                  if total > 0 else (small.shape[0] / 2, small.shape[1] / 2))
        top = round(float(out_h / 2 - cy))
        left = round(float(out_w / 2 - cx))
        top = min(max(top, 0), out_h - small.shape[0])
        left = min(max(left, 0), out_w - small.shape[1])
        canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    # Lanczos resampling can overshoot [0, 1] by a little: our own arithmetic, not user data.
    x = torch.from_numpy(np.clip(canvas, 0.0, 1.0))
    return x.unsqueeze(0).expand(c, -1, -1).contiguous()


__all__ = ["MAX_BYTES", "MAX_PIXELS", "MAX_SIDE", "ImageError", "decode", "preprocess"]
