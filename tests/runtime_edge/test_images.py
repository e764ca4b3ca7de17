"""Images as devices make them: EXIF orientation, decompression bombs, 16-bit, CMYK, palette, alpha, tiny and
extreme aspect ratios; and training's folder loader reads every such file exactly as the edge runtime does."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from codec.manifest import Preprocessing
from runtime_edge import run as edge_cli
from runtime_edge.preprocess import ImageError, load_image, preprocess
from training.data.common import Normalizer, preprocessing_meta
from training.data.folder import FolderMultiTask, load_task_map

PRE = {
    "input_size": [24, 32],
    "mean": [0.4, 0.5, 0.6],
    "std": [0.2, 0.25, 0.3],
    "color": "RGB",
    "value_range": [0.0, 1.0],
    "resize": "bilinear",
    "layout": "NCHW",
}
SPEC = Preprocessing.from_dict(PRE)
EXIF_ORIENTATION = 0x0112


def _upright() -> Image.Image:
    """60 high, 30 wide: red top half, blue bottom half."""
    a = np.zeros((60, 30, 3), np.uint8)
    a[:30, :, 0] = 255
    a[30:, :, 2] = 255
    return Image.fromarray(a)


def _rotated_jpeg(path: Path) -> Path:
    """The upright image as a camera held sideways stores it: pixels turned 90 degrees counter-clockwise and the
    EXIF orientation tag 6 ("rotate 90 degrees clockwise to display")."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    _upright().transpose(Image.Transpose.ROTATE_90).save(path, "JPEG", quality=95, exif=exif)
    return path


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` pixels with almost no data: a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def test_exif_orientation_reaches_the_model_upright(tmp_path: Path) -> None:
    path = _rotated_jpeg(tmp_path / "sideways.jpg")
    with Image.open(path) as raw:
        assert raw.size == (60, 30)  # stored sideways
    img = load_image(path)
    assert img.size == (30, 60) and img.mode == "RGB"
    x = preprocess(img, SPEC)[0]  # (3, 24, 32), normalised
    top, bottom = x[:, :10], x[:, 14:]
    assert top[0].mean() > top[2].mean() + 2 and bottom[2].mean() > bottom[0].mean() + 2  # red over blue


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    large = _png_header_only(tmp_path / "large.png", 9_000, 9_000)  # over the default limit, under Pillow's
    with pytest.raises(ImageError, match=r"large.png: 9000x9000 pixels is over the limit of 50,000,000 pixels"):
        load_image(large)
    bomb = _png_header_only(tmp_path / "bomb.png", 100_000, 100_000)  # Pillow refuses it when it opens it
    with pytest.raises(ImageError, match=r"bomb.png: refused as a decompression bomb"):
        load_image(bomb)
    # the CLI checks every image before it loads the bundle: exit status 2, each file named
    code = edge_cli.main(["--artifacts", str(tmp_path / "no-bundle"), "--save", str(tmp_path / "out"), str(large), str(bomb)])
    err = capsys.readouterr().err
    assert code == 2 and "large.png: 9000x9000" in err and "bomb.png: refused as a decompression bomb" in err
    assert not (tmp_path / "out").exists()


def test_pixel_limit_is_configurable(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "big.png"
    Image.new("L", (2000, 1000), 128).save(path)
    assert load_image(path, max_pixels=2_000_000).size == (2000, 1000)
    with pytest.raises(ImageError, match="2000x1000 pixels is over the limit of 1,999,999"):
        load_image(path, max_pixels=1_999_999)
    assert edge_cli.main(["--artifacts", str(tmp_path / "b"), "--save", str(tmp_path / "o"), "--max-image-pixels", "1000", str(path)]) == 2
    assert "big.png: 2000x1000 pixels is over the limit of 1,000 pixels" in capsys.readouterr().err


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    wide = (np.arange(40 * 50, dtype=np.uint32).reshape(40, 50) * 32).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(wide).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    rgb = np.asarray(load_image(path))
    expected = np.rint(wide / 257.0).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], expected)
    assert rgb.max() == expected.max() < 255  # Pillow's own conversion would have turned most of it white


def test_cmyk_palette_alpha_and_greyscale_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (33, 47, 3), dtype=np.uint8))
    cases = {
        "cmyk.jpg": base.convert("CMYK"),
        "palette.png": base.convert("P"),
        "grey.png": base.convert("L"),
        "alpha.png": Image.merge("RGBA", (*base.split(), Image.fromarray(rng.integers(0, 256, (33, 47), dtype=np.uint8)))),
    }
    pal = base.convert("P")
    pal.info["transparency"] = 0
    cases["palette_transparent.png"] = pal
    for name, img in cases.items():
        path = tmp_path / name
        img.save(path, transparency=0) if name == "palette_transparent.png" else img.save(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no Pillow warnings on stderr for ordinary files
            got = load_image(path)
        assert got.mode == "RGB" and got.size == (47, 33), name
        with Image.open(path) as raw:
            reference = raw.convert("RGBA").convert("RGB") if raw.mode == "P" else raw.convert("RGB")
            np.testing.assert_array_equal(np.asarray(got), np.asarray(reference), err_msg=name)
    # alpha is dropped: the stored colours reach the model, whatever their transparency
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "alpha.png")), np.asarray(base))


@pytest.mark.parametrize("size", [(1, 1), (4000, 2), (3, 2500)])
def test_tiny_and_extreme_aspect_ratio(tmp_path: Path, size: tuple[int, int]) -> None:
    path = tmp_path / "odd.png"
    Image.new("RGB", size, (10, 200, 30)).save(path)
    x = preprocess(load_image(path), SPEC)
    assert x.shape == (1, 3, 24, 32) and np.all(np.isfinite(x))
    expected = (np.array([10, 200, 30], np.float32) / np.float32(255.0) - np.array(PRE["mean"], np.float32)) / np.array(
        PRE["std"], np.float32
    )
    np.testing.assert_allclose(x[0, :, 12, 16], expected, rtol=1e-6)


def test_training_folder_reads_files_exactly_as_the_edge_runtime(tmp_path: Path) -> None:
    """Training's preprocessing (FolderMultiTask + Normalizer) and the edge's (load_image + preprocess) give
    identical tensors for the same files, EXIF rotation, 16-bit, palette, CMYK and alpha included."""
    cls = tmp_path / "data" / "train" / "n0001"
    cls.mkdir(parents=True)
    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 256, (41, 57, 3), dtype=np.uint8))
    _rotated_jpeg(cls / "a_sideways.jpg")
    Image.fromarray((rng.integers(0, 65536, (30, 20))).astype(np.uint16)).save(cls / "b_grey16.png")
    base.convert("P").save(cls / "c_palette.png", transparency=3)
    base.convert("CMYK").save(cls / "d_cmyk.jpg")
    base.convert("RGBA").save(cls / "e_alpha.png")
    (cls.parent / "n0002").mkdir()
    base.save(cls.parent / "n0002" / "f_photo.jpg", quality=90)
    task_map = tmp_path / "tasks.yaml"
    task_map.write_text("tasks:\n  - name: t\n    classes: [n0001, n0002]\n")
    normalizer = Normalizer(preprocessing_meta(PRE["input_size"], PRE["mean"], PRE["std"]))
    data = FolderMultiTask(cls.parent, load_task_map(task_map), normalizer)
    assert len(data) == 6
    for i in range(len(data)):
        path = data.samples[i][0]
        edge = preprocess(load_image(path), SPEC)[0]
        np.testing.assert_array_equal(edge, normalizer(data.pil(i)).numpy(), err_msg=str(path))
