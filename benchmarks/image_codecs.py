"""Image codecs the bitstream is compared with: JPEG and WebP through Pillow, at its strongest settings.

The bytes of a compressed image are ``len()`` of the file Pillow writes; nothing is added or removed.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}
# Pillow's strongest settings, so the baselines are as small as these codecs get: optimised Huffman
# tables for JPEG, the slowest (best) method for WebP.
ENCODER_OPTIONS: dict[str, dict[str, Any]] = {"jpeg": {"optimize": True}, "webp": {"method": 6}}


@dataclass
class Compressed:
    data: bytes
    encode_ms: float


def compress(image: Image.Image, fmt: str, quality: int) -> Compressed:
    """Encode ``image`` with Pillow as ``fmt`` (``jpeg`` or ``webp``) at ``quality``; times the encoding."""
    buf = io.BytesIO()
    start = time.perf_counter()
    image.save(buf, format=FORMATS[fmt], quality=int(quality), **ENCODER_OPTIONS[fmt])
    return Compressed(buf.getvalue(), (time.perf_counter() - start) * 1000.0)


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.convert("RGB")
