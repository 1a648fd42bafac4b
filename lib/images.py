"""Image files → uint8 arrays at a square size: decoding, resizing, and which files count as images.

Shared by the imagefolder source and by `lib.predict`, so a new image is read exactly as the training
images were.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lib.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "F")  # 16-bit or float scans: rescaled to 8 bit, not clipped


def is_image_file(path: Path) -> bool:
    """Hidden files (`.DS_Store`, macOS `._x.png` forks) are never data, whatever their suffix."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path, size: int) -> np.ndarray:
    """One image file → uint8 RGB (size, size, 3); an unreadable file is a UserError naming it."""
    try:
        with Image.open(path) as img:
            if img.mode in WIDE_MODES:
                pixels = np.asarray(img, dtype=np.float64)
                top = 65535.0 if img.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
                img = Image.fromarray(np.clip(np.rint(pixels * 255.0 / top), 0, 255).astype(np.uint8), "L")
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise UserError(f"cannot read image {path}: {err}; remove or replace the file") from err


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 NHWC images to size × size (bilinear), leaving the right size untouched."""
    if images.shape[1:3] == (size, size):
        return images
    mode = "L" if images.shape[-1] == 1 else "RGB"
    out = [np.asarray(Image.fromarray(img.squeeze(-1) if mode == "L" else img, mode)
                      .resize((size, size), Image.Resampling.BILINEAR)) for img in images]
    return np.stack(out).reshape(len(images), size, size, images.shape[-1])
