"""Image files as devices make them -> the edge client's input, exactly as the bundle's manifest says.

::

    file ─► load_image: decode, refuse bombs, apply EXIF orientation, convert to RGB (16-bit grey scaled)
         ─► preprocess: resize to input_size (PIL bilinear) ─► /255 ─► (x - mean) / std ─► NCHW float32

Every step is read from :class:`codec.manifest.Preprocessing`; the schema refuses values this code does
not implement, so nothing here guesses. Training's ``Normalizer`` performs the same arithmetic (a test
checks that both give identical tensors for the same file).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from codec.manifest import Preprocessing

DEFAULT_MAX_PIXELS = 50_000_000
"""Images with more pixels than this are refused before they are decoded (``--max-image-pixels``)."""

_RESAMPLE = {"bilinear": Image.BILINEAR}
_WIDE_GRAY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""16-bit greyscale modes (PNG, TIFF); Pillow's own conversion to RGB would clip every value above 255 to white."""


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB as the model sees it: 16-bit greyscale scaled to 8 bits (``round(v / 257)``, ``I`` read as 16-bit),
    every other mode (palette, CMYK, L, LA, RGBA: alpha dropped) by Pillow's conversion. Training's folder
    data calls this function too."""
    if img.mode in _WIDE_GRAY:
        wide = np.clip(np.asarray(img, dtype=np.float64), 0, 65535)
        img = Image.fromarray(np.rint(wide / 257.0).astype(np.uint8))
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # the same colours, without Pillow's warning for P -> RGB
    return img.convert("RGB")


class ImageError(ValueError):
    """An input image is missing, unreadable or too large; the message names the file."""


def load_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file as RGB, upright as its EXIF orientation says.

    :class:`ImageError` names the file when it is missing, not an image, truncated, or larger than
    ``max_pixels`` (checked from the header, before any pixel is decoded)."""
    p = Path(path)
    if p.is_dir():
        raise ImageError(f"image {p}: a folder, not an image file")
    if not p.is_file():
        raise ImageError(f"image {p}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageError(f"image {p}: {w}x{h} pixels is over the limit of {max_pixels:,} pixels (--max-image-pixels)")
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image {p}: refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"image {p}: not a readable image ({exc})") from None


def image_extensions() -> frozenset[str]:
    """The file suffixes Pillow opens (lower case, with the dot)."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def folder_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` (suffixes Pillow opens, hidden files skipped, sorted by name;
    subfolders are not searched); :class:`ImageError` when there is none."""
    suffixes = image_extensions()
    found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)
    if not found:
        raise ImageError(f"folder {folder}: no image files directly inside it (subfolders are not searched)")
    return found


def preprocess(image: Image.Image, spec: Preprocessing) -> np.ndarray:
    """PIL image -> float32 ``(1, 3, H, W)`` as ``spec`` says."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"preprocess expects a PIL image, got {type(image).__name__}")
    h, w = spec.input_size
    img = image.convert(spec.color)
    if img.size != (w, h):
        img = img.resize((w, h), _RESAMPLE[spec.resize])
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)  # value_range [0, 1], the one the schema admits
    x = (x - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)
