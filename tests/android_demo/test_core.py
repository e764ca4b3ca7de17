"""The Android app's plain-Java core (android_demo/core) on the JVM: wire constants against codec/wire.json,
preprocessing against runtime_edge.preprocess, manifest and bundle checks against codec/manifest.py and codec/bundle.py, the
KServe client end to end against a real serve.py on loopback, and every server error it must explain."""

from __future__ import annotations

import copy
import hashlib
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image

import codec
from codec import wire
from codec.bundle import BundleError, file_sha256, load_bundle
from codec.manifest import Manifest, ManifestError, Preprocessing
from runtime_edge.client import EdgeRuntime
from runtime_edge.predict import request_predictions
from runtime_edge.preprocess import load_image, preprocess
from runtime_edge.transport.http import KServeClient
from runtime_server.process import LOOPBACK, ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
ANDROID = ROOT / "android_demo"
VECTORS = Path(__file__).resolve().parents[1] / "vectors"
RUNNER = "ai.mantis.core.CoreTests"
TOKEN = "s3cret-token"
HELD_OUT = 240


def app_executorch_version() -> str:
    """The app's ExecuTorch runtime version, from the one file that defines it."""
    props = ANDROID / "app" / "src" / "main" / "assets" / "executorch.properties"
    values = dict(line.split("=", 1) for line in props.read_text().splitlines() if line and not line.startswith("#"))
    return values["executorch"].strip()


RUNTIME = app_executorch_version()

pytestmark = pytest.mark.skipif(
    shutil.which("javac") is None or shutil.which("java") is None,
    reason="javac/java not found: install a JDK (Debian/Ubuntu: apt-get install default-jdk-headless)",
)


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("core-classes")
    sources = sorted(str(p) for d in ("codec/src/main", "core/src") for p in (ANDROID / d).rglob("*.java"))
    proc = subprocess.run(
        ["javac", "--release", "11", "-Xlint:all", "-Werror", "-encoding", "UTF-8", "-d", str(out), *sources],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def java(classes: Path, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run(["java", "-cp", str(classes), RUNNER, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


# -- wire contract ---------------------------------------------------------------------------------------------


def test_java_wire_constants_are_wire_json(classes: Path) -> None:
    got = json.loads(java(classes, "wire"))
    spec = wire.SPEC
    assert got == {
        "protocol": spec["protocol"],
        "bitstream": wire.BITSTREAM_INPUT,
        "bitstream_datatype": spec["inputs"]["bitstream"]["datatype"],
        "logits_prefix": wire.LOGITS_PREFIX,
        "logits_datatype": spec["outputs"]["logits"]["datatype"],
        "labels_prefix": wire.LABELS_PREFIX,
        "labels_datatype": spec["outputs"]["labels"]["datatype"],
        "active_tasks": wire.ACTIVE_TASKS_OUTPUT,
        "active_tasks_datatype": spec["outputs"]["active_tasks"]["datatype"],
        "top_k": wire.TOP_K_PARAMETER,
        "top_k_default": wire.TOP_K_DEFAULT,
        "top_k_minimum": spec["parameters"]["top_k"]["minimum"],
        "header_length": wire.HEADER_LENGTH,
        "binary_data_size": wire.BINARY_DATA_SIZE,
        "binary_data": wire.BINARY_DATA,
        "binary_data_output": wire.BINARY_DATA_OUTPUT,
        "bytes_element_prefix": spec["binary_extension"]["bytes_element_prefix"],
        "auth_header": wire.AUTH_HEADER,
        "auth_scheme": wire.AUTH_SCHEME,
        "token_env": wire.TOKEN_ENV,
        "errors": {k: {"http": e.http, "grpc": e.grpc} for k, e in wire.ERRORS.items()},
    }


# -- preprocessing ---------------------------------------------------------------------------------------------


def _test_images(out: Path) -> list[Path]:
    """Image files of several sizes, formats and modes (all decoded and converted to RGB by load_image)."""
    rng = np.random.default_rng(7)
    cases = [  # (w, h, mode, format)
        (32, 32, "RGB", "PNG"), (7, 5, "RGB", "PNG"), (64, 48, "RGB", "PNG"), (100, 30, "RGB", "JPEG"),
        (31, 33, "L", "PNG"), (257, 193, "RGB", "JPEG"), (1, 1, "RGB", "PNG"), (33, 640, "RGBA", "PNG"),
        (90, 90, "P", "PNG"), (48, 20, "LA", "PNG"), (120, 80, "CMYK", "JPEG"), (45, 61, "L", "JPEG"),
        (16, 300, "RGB", "PNG"), (640, 480, "RGB", "JPEG"),
    ]
    paths = []
    for i, (w, h, mode, fmt) in enumerate(cases):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) * 7) % 256], axis=-1)
        noisy = np.clip(base + rng.integers(-40, 41, size=base.shape), 0, 255).astype(np.uint8)
        img = Image.fromarray(noisy, "RGB")
        if mode == "P":
            img = img.quantize(colors=64)
        elif mode in ("RGBA", "LA"):
            alpha = Image.fromarray(rng.integers(0, 256, size=(h, w), dtype=np.uint8), "L")
            img = img.convert(mode[:-1]) if mode == "LA" else img
            img.putalpha(alpha)
        elif mode != "RGB":
            img = img.convert(mode)
        path = out / f"img{i}_{w}x{h}_{mode}.{fmt.lower().replace('jpeg', 'jpg')}"
        img.save(path, fmt, **({"quality": 80} if fmt == "JPEG" else {}))
        paths.append(path)
    # A phone photo lying on its side: EXIF orientation 6, applied by load_image (and by the app before Preprocess).
    rotated = out / "exif_rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, size=(40, 70, 3), dtype=np.uint8), "RGB").save(rotated, "JPEG", exif=exif)
    paths.append(rotated)
    return paths


@pytest.mark.parametrize(
    "spec",
    [
        Preprocessing(input_size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        Preprocessing(input_size=(24, 40), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ],
    ids=["32x32", "24x40-imagenet"],
)
def test_java_preprocessing_equals_python(classes: Path, tmp_path: Path, spec: Preprocessing) -> None:
    """The JVM gets the RGB pixels Pillow decoded (on a phone BitmapFactory decodes); from there on the Java
    resize and normalisation must give runtime_edge.preprocess's tensor."""
    lines, expected = [], {}
    for path in _test_images(tmp_path):
        img = load_image(path)
        name = path.stem
        (tmp_path / f"{name}.rgb").write_bytes(np.asarray(img, dtype=np.uint8).tobytes())
        lines.append(f"{name} {img.width} {img.height}\n")
        expected[name] = preprocess(img, spec)
    (tmp_path / "cases.txt").write_text("".join(lines))
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    assert java(classes, "preprocess", str(tmp_path / "spec.json"), str(tmp_path)).strip() == f"{len(lines)} images"
    h, w = spec.input_size
    for name, want in expected.items():
        got = np.fromfile(tmp_path / f"{name}.java.f32", dtype="<f4").reshape(1, 3, h, w)
        assert np.max(np.abs(got - want)) <= 1e-5, name


def test_java_resize_equals_pillow_on_random_sizes(classes: Path, tmp_path: Path) -> None:
    """Pillow's pass order depends on the sizes (Preprocess.resizeBilinear); random sizes up, down and mixed,
    compared as uint8 (mean 0, std 1: the tensor is the resized pixels / 255)."""
    rng = np.random.default_rng(11)
    spec = Preprocessing(input_size=(24, 40), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    lines, expected = [], {}
    for i in range(200):
        w, h = (int(v) for v in rng.integers(1, 130, size=2))
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        (tmp_path / f"r{i}.rgb").write_bytes(pixels.tobytes())
        lines.append(f"r{i} {w} {h}\n")
        img = Image.fromarray(pixels, "RGB")
        expected[f"r{i}"] = np.asarray(img if (w, h) == (40, 24) else img.resize((40, 24), Image.BILINEAR))
    (tmp_path / "cases.txt").write_text("".join(lines))
    (tmp_path / "spec.json").write_text(json.dumps(spec.to_dict()))
    java(classes, "preprocess", str(tmp_path / "spec.json"), str(tmp_path))
    for name, want in expected.items():
        got = np.fromfile(tmp_path / f"{name}.java.f32", dtype="<f4").reshape(3, 24, 40).transpose(1, 2, 0)
        np.testing.assert_array_equal(np.rint(got * 255).astype(np.uint8), want, err_msg=name)


# -- manifest and bundle ---------------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def apply(doc: dict) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return apply


_DELETE = object()

MUTATIONS: dict[str, Callable[[dict], None]] = {
    "intact": lambda d: None,
    "unknown_key": _set("colour", "RGB"),
    "format": _set("format", "mantis-bundle/2"),
    "resize_nearest": _set("preprocessing.resize", "nearest"),
    "color_bgr": _set("preprocessing.color", "BGR"),
    "layout_nhwc": _set("preprocessing.layout", "NHWC"),
    "value_range_255": _set("preprocessing.value_range", [0.0, 255.0]),
    "mean_two": _set("preprocessing.mean", [0.5, 0.5]),
    "std_zero": _set("preprocessing.std", [1.0, 0.0, 1.0]),
    "input_size_one": _set("preprocessing.input_size", [32]),
    "input_size_float": _set("preprocessing.input_size", [32.0, 32]),
    "input_size_bool": _set("preprocessing.input_size", [32, True]),
    "preprocessing_extra": _set("preprocessing.interpolation", "bicubic"),
    "mask_rule": _set("task_mask_rule", "argmax"),
    "edge_runtime_tflite": _set("edge.runtime", "tflite"),
    "edge_runtime_suffix": _set("edge.runtime", "onnxruntime"),
    "edge_input_name": _set("edge.inputs.0.name", "pixels"),
    "edge_outputs_swapped": lambda d: d["edge"].__setitem__("outputs", d["edge"]["outputs"][::-1]),
    "edge_quantization_list": _set("edge.quantization", []),
    "latent_zero": _set("latent.channels", 0),
    "latent_string": _set("latent.height", "4"),
    "table_id_empty": _set("tables.table_id", ""),
    "no_tasks": _set("tasks", []),
    "duplicate_tasks": lambda d: d["tasks"].append(copy.deepcopy(d["tasks"][0])),
    "more_edge_tasks_than_a_mask_names": lambda d: d["tasks"].extend({"name": f"extra{i}", "labels": ["x", "y"]} for i in range(9 - len(d["tasks"]))),
    "duplicate_labels": lambda d: d["tasks"][0].__setitem__("labels", d["tasks"][0]["labels"][:1] * 2),
    "task_extra_key": _set("tasks.0.description", "x"),
    "file_outside": lambda d: d["files"].__setitem__("../escape", "00"),
    "edge_not_hashed": lambda d: d["files"].pop(d["edge"]["file"]),
    "server_output_name": _set("server.onnx.outputs.0.name", "logits"),
    "server_unknown": _set("server.tflite", {"file": "x"}),
    "model_name_int": _set("model_name", 5),
    "model_name_missing": _set("model_name", _DELETE),
    "model_name_unsafe": _set("model_name", "pets v2/../x"),
    "version_string": _set("bitstream_version", "2"),
    "producer_int": _set("producer.torch", 2),
    "source_extra": _set("source_checkpoint.step", "1"),
    "files_missing": _set("files", _DELETE),
    "shape_negative": _set("edge.inputs.0.shape", [1, 3, -32, 32]),
}


def test_java_manifest_reader_accepts_and_refuses_what_python_does(classes: Path, executorch_bundle: Path, tmp_path: Path) -> None:
    base = json.loads((executorch_bundle / "manifest.json").read_text())
    python: dict[str, str | None] = {}
    for name, mutate in MUTATIONS.items():
        doc = copy.deepcopy(base)
        mutate(doc)
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
        try:
            Manifest.from_dict(doc)
            python[name] = None
        except ManifestError as exc:
            python[name] = str(exc)
    assert python["intact"] is None and sum(v is not None for v in python.values()) == len(MUTATIONS) - 1
    lines = java(classes, "manifests", str(tmp_path)).splitlines()
    got = {line.split(" ", 1)[0]: line.split(" ", 2)[1:] for line in lines}
    assert set(got) == set(MUTATIONS)
    for name, py in python.items():
        if py is None:
            assert got[name] == ["OK"], name
        else:
            assert got[name][0] == "ERR", (name, py)
            # the same key path, as codec/manifest.py names it, starts both messages
            assert got[name][1].split(": ", 1)[0] == py.split(": ", 1)[0], (name, got[name][1], py)


def _copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite_manifest(root: Path, edit: Callable[[dict], None]) -> None:
    doc = json.loads((root / "manifest.json").read_text())
    edit(doc)
    (root / "manifest.json").write_text(json.dumps(doc, indent=2))


def _flip_byte(path: Path, offset: int = -1) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_java_bundle_check_refuses_tampered_and_wrong_bundles(classes: Path, executorch_bundle: Path, tmp_path: Path) -> None:
    table_id = load_bundle(executorch_bundle).tables.table_id.hex()
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, expect: str) -> Path:
        root = _copy_bundle(executorch_bundle, tmp_path / name)
        cases[name] = (root, expect)
        return root

    case("intact", f"OK {table_id}")
    # the server half's files are the server's: a phone neither needs nor hashes them
    root = case("server_file_missing", f"OK {table_id}")
    (root / "server.onnx").unlink()
    _flip_byte(case("server_file_tampered", f"OK {table_id}") / "server.pt2")
    root = case("manifest_hash_edited", "file edge.pte is corrupted or was replaced")
    _rewrite_manifest(root, lambda d: d["files"].__setitem__("edge.pte", "0" * 64))
    root = case("manifest_value_edited", "manifest.json.preprocessing.resize: unsupported value 'nearest'")
    _rewrite_manifest(root, lambda d: d["preprocessing"].__setitem__("resize", "nearest"))
    root = case("manifest_not_json", "manifest.json: not valid JSON")
    (root / "manifest.json").write_text('{"format": "mantis-bundle/1",')
    root = case("tables_flipped_byte", "file tables.safetensors is corrupted or was replaced")
    _flip_byte(root / "tables.safetensors")
    # Other valid tables, and the manifest's hash of them updated to match: the table id still gives it away.
    root = case("tables_swapped_rehashed", "tables.safetensors has table_id")
    shutil.copy(VECTORS / "tables.safetensors", root / "tables.safetensors")
    _rewrite_manifest(root, lambda d: d["files"].__setitem__("tables.safetensors", file_sha256(root / "tables.safetensors")))
    root = case("edge_program_replaced", "file edge.pte is corrupted or was replaced")
    shutil.copy(root / "server.pt2", root / "edge.pte")
    root = case("tables_missing", "file tables.safetensors is missing")
    (root / "tables.safetensors").unlink()
    # A consistent bundle whose edge client is for another runtime: valid for Python, not for this app.
    root = case("onnxruntime_edge", "this app runs executorch programs")
    (root / "edge.pte").rename(root / "edge.onnx")

    def to_onnx(d: dict) -> None:
        d["edge"].update(runtime="onnxruntime", file="edge.onnx", target="onnx")
        d["files"]["edge.onnx"] = d["files"].pop("edge.pte")

    _rewrite_manifest(root, to_onnx)
    for name, (root, expect) in cases.items():
        out = java(classes, "bundle", str(root), RUNTIME).strip()
        if expect.startswith("OK"):
            assert out.rsplit(" ", 1)[0] == expect, (name, out)
            assert out.rsplit(" ", 1)[1] == hashlib.sha256((root / "manifest.json").read_bytes()).hexdigest()
            continue
        assert out.startswith("ERR ") and expect in out, (name, out)
        if name != "onnxruntime_edge":
            with pytest.raises(BundleError):
                load_bundle(root)


def _set_producer(root: Path, version: str | None) -> None:
    def edit(d: dict) -> None:
        if version is None:
            d["producer"].pop("executorch")
        else:
            d["producer"]["executorch"] = version

    _rewrite_manifest(root, edit)


def test_runtime_version_is_the_exporters(executorch_bundle: Path) -> None:
    """The bundles the tests export come from the executorch the app's runtime is pinned to."""
    produced = json.loads((executorch_bundle / "manifest.json").read_text())["producer"]["executorch"]
    assert produced == RUNTIME


@pytest.mark.parametrize(
    ("producer", "expect"),
    [
        (RUNTIME, "OK"),
        (RUNTIME + "+cpu", "OK"),
        ("1.4.1", "OK"),
        ("1.0.0", "OK"),
        ("1.5.2", "ERR edge.pte was written by executorch 1.5.2, newer than this app's runtime " + RUNTIME),
        ("1.6.0rc1", "ERR edge.pte was written by executorch 1.6.0rc1, newer than this app's runtime"),
        ("2.0.0", "ERR edge.pte was written by executorch 2.0.0, this app's runtime is ExecuTorch " + RUNTIME + " (another major version)"),
        ("0.7.0", "(another major version)"),
        ("not installed", "ERR edge.pte was written by executorch 'not installed' (producer.executorch), not a release"),
        (None, "ERR bundle"),
    ],
)
def test_java_refuses_programs_from_an_executorch_its_runtime_cannot_run(classes: Path, executorch_bundle: Path, tmp_path: Path,
                                                                          producer: str | None, expect: str) -> None:
    root = _copy_bundle(executorch_bundle, tmp_path / "b")
    _set_producer(root, producer)
    out = java(classes, "bundle", str(root), RUNTIME).strip()
    if expect == "OK":
        assert out.startswith("OK "), out
    else:
        assert out.startswith("ERR ") and expect.removeprefix("ERR ") in out, out
    if producer is None:
        assert "producer.executorch is missing" in out


def test_java_bundle_pins(classes: Path, executorch_bundle: Path) -> None:
    sha = hashlib.sha256((executorch_bundle / "manifest.json").read_bytes()).hexdigest()
    assert java(classes, "bundle", str(executorch_bundle), RUNTIME, "0" * 64, sha.upper()).startswith("OK ")
    out = java(classes, "bundle", str(executorch_bundle), RUNTIME, "0" * 64).strip()
    assert out.startswith("ERR ") and f"its manifest (sha256 {sha}) is not one of the 1 pinned manifest(s)" in out, out
    out = java(classes, "bundle", str(executorch_bundle), RUNTIME, "abc").strip()
    assert out == "ERR manifest pin 'abc' is not a hex SHA-256 (64 hex digits)", out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server handing out the files of one directory (where a phone would download a bundle)."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), lambda *a: _Quiet(*a, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{httpd.server_address[1]}/bundle/", root
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_java_downloads_verifies_and_installs_a_bundle(classes: Path, executorch_bundle: Path, file_server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = file_server
    shutil.copytree(executorch_bundle, served / "bundle")
    for server_file in ("server.onnx", "server.pt2"):  # the phone does not fetch the server half
        (served / "bundle" / server_file).unlink()
    dest = tmp_path / "installed"
    out = java(classes, "install", url, str(dest), RUNTIME).strip()
    assert out == f"OK {load_bundle(executorch_bundle).tables.table_id.hex()}"
    assert sorted(p.name for p in dest.iterdir()) == ["edge.pte", "manifest.json", "tables.safetensors"]
    installed = (dest / "manifest.json").read_bytes()

    def refused(expect: str, *pins: str) -> None:
        out = java(classes, "install", url, str(dest), RUNTIME, *pins).strip()
        assert out.startswith("ERR bundle from " + url + " refused") and expect in out, out
        # the refused download left the installed bundle as it was, and no staging directory behind
        assert (dest / "manifest.json").read_bytes() == installed
        assert java(classes, "bundle", str(dest), RUNTIME).startswith("OK ")
        assert not (tmp_path / "installed.staging").exists() and not (tmp_path / "installed.old").exists()

    refused("is not one of the 1 pinned manifest(s)", "0" * 64)
    _set_producer(served / "bundle", "1.99.0")  # a program for a newer runtime: refused before the swap
    refused("newer than this app's runtime")
    _set_producer(served / "bundle", RUNTIME)
    _flip_byte(served / "bundle" / "edge.pte", 100)
    refused("file edge.pte is corrupted or was replaced")


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("https://example.org:8443/bundle/", "OK"),
        ("http://10.0.2.2:8000", "OK"),
        ("HTTP://LOCALHOST:8000", "OK"),
        ("http://192.168.1.20:8000", "plain HTTP to 192.168.1.20 is not allowed"),
        ("file:///sdcard/bundle", "file:// is not supported"),
        ("content://media/external/1", "content:// is not supported"),
        ("ftp://example.org/b", "ftp:// is not supported"),
        ("example.org:8000", "has no scheme"),
        ("", "server URL is empty"),
        ("https://", "names no host"),
        ("https://user:pw@example.org/", "carries a user name or password"),
        ("http://[::1", "is not a valid URL"),
    ],
)
def test_java_url_schemes(classes: Path, url: str, expect: str) -> None:
    out = java(classes, "urls", "10.0.2.2,localhost,127.0.0.1", url).strip()
    assert out == "OK" if expect == "OK" else (out.startswith("ERR ") and expect in out), out


def test_java_bundle_sync_decisions(classes: Path) -> None:
    """Which bundle the app loads on start and on every return to the screen (manifest hashes a, b, c)."""
    cases = {  # (loaded, refused, installed, assets, assets last installed)
        ("-", "-", "-", "a", "-"): "INSTALL_FROM_ASSETS",  # first start
        ("a", "-", "a", "a", "a"): "KEEP",  # back from the camera, gallery or Settings: no re-hash
        ("a", "-", "b", "a", "a"): "LOAD_INSTALLED",  # Settings installed another bundle
        ("-", "-", "b", "a", "a"): "LOAD_INSTALLED",  # started again with a downloaded bundle
        ("-", "b", "b", "a", "a"): "KEEP",  # the installed bundle was refused: not verified again on every return
        ("b", "-", "b", "c", "a"): "INSTALL_FROM_ASSETS",  # an app update ships new tables
        ("-", "-", "-", "-", "-"): "NONE",
        ("-", "-", "b", "-", "-"): "LOAD_INSTALLED",  # no bundle in the assets, one downloaded
    }
    for args, want in cases.items():
        assert java(classes, "sync", *args).strip() == want, args


def test_java_reads_exif_orientation_as_pillow_does(classes: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    files, want = [], []
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        exif[0x010F] = "maker"  # another tag before it in the directory
        path = tmp_path / f"o{orientation}.jpg"
        Image.fromarray(rng.integers(0, 256, size=(6, 10, 3), dtype=np.uint8), "RGB").save(path, "JPEG", exif=exif)
        files.append(path)
        with Image.open(path) as img:
            want.append(img.getexif().get(0x0112, 1))
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (4, 4)).save(plain, "JPEG")
    png = tmp_path / "x.png"
    Image.new("RGB", (4, 4)).save(png, "PNG")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00MM\x00*\x00\x00\x00\x08")
    files += [plain, png, garbage]
    want += [1, 1, 1]
    got = [int(v) for v in java(classes, "exif", *map(str, files)).split()]
    assert got == want == list(range(1, 9)) + [1, 1, 1]


# -- end to end through serve.py -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(executorch_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("serve-token")
    (tmp / "token").write_text(TOKEN + "\n")
    with ServerProcess(executorch_bundle, tmp / "serve.log", ["--token-file", str(tmp / "token")]) as srv:
        yield srv


@pytest.fixture(scope="module")
def edge_outputs(executorch_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes], list[int]]:
    """Held-out images through the Python edge client: latents and task logits as files, and the Python
    codec's bitstreams and task masks for them."""
    from training.config import load_config
    from training.data import build_datasets

    cfg = load_config(ROOT / "training" / "configs" / "tiny.yaml", [f"data.synthetic.test_size={HELD_OUT}"])
    _, _, test, _, _ = build_datasets(cfg, splits=("test",))
    assert len(test) == HELD_OUT
    rt = EdgeRuntime(executorch_bundle)
    out = tmp_path_factory.mktemp("edge-outputs")
    latents, logits, bitstreams, masks = [], [], [], []
    for i in range(HELD_OUT):
        y, t = rt.run_model(rt.preprocess(test.pil(i)))
        mask = rt.bundle.task_mask(t)
        latents.append(y)
        logits.append(t)
        masks.append(mask)
        bitstreams.append(codec.encode(codec.quantize(y, rt.bundle.tables), mask, rt.bundle.tables))
    np.stack(latents).astype("<f4").tofile(out / "latents.f32")
    np.stack(logits).astype("<f4").tofile(out / "task_logits.f32")
    for i, b in enumerate(bitstreams):
        (out / f"py_{i:04d}.mtb").write_bytes(b)
    return out, bitstreams, masks


def _parse_predictions(text: str) -> tuple[list[tuple[list[str], dict[str, list[str]]]], tuple[int, int]]:
    preds, sizes = [], (0, 0)
    for line in text.splitlines():
        parts = line.split(" ")
        if parts[0] == "PRED":
            active = [t for t in parts[2].split(",") if t]
            labels = {k: v.split("|") for k, v in (p.split("=", 1) for p in parts[3:])}
            preds.append((active, labels))
        elif parts[0] == "BYTES":
            sizes = (int(parts[1]), int(parts[2]))
        else:
            raise AssertionError(f"unexpected runner output: {line}")
    return preds, sizes


def test_java_client_end_to_end_matches_python(classes: Path, executorch_bundle: Path, server: ServerProcess, edge_outputs: tuple[Path, list[bytes], list[int]]) -> None:
    out, py_bitstreams, py_masks = edge_outputs
    assert java(classes, "encode", str(executorch_bundle), str(out), str(HELD_OUT)).strip() == f"{HELD_OUT} encoded"
    java_bits = [(out / f"java_{i:04d}.mtb").read_bytes() for i in range(HELD_OUT)]
    assert java_bits == py_bitstreams  # byte for byte, every image
    assert [int(v) for v in (out / "java_masks.txt").read_text().split()] == py_masks
    files = [str(out / f"java_{i:04d}.mtb") for i in range(HELD_OUT)]
    preds, (sent, received) = _parse_predictions(java(classes, "infer", str(executorch_bundle), server.url, TOKEN, "16", *files))
    bundle = load_bundle(executorch_bundle)
    labels = {t: bundle.labels(t) for t in bundle.task_names}
    with KServeClient(server.url, token=TOKEN) as client:
        py_preds, _ = request_predictions(client, bundle.manifest.model_name, py_bitstreams, bundle.task_names, labels, top_k=2)
    assert len(preds) == HELD_OUT
    assert preds == [(p.active_tasks, {t: tp.labels for t, tp in p.tasks.items()}) for p in py_preds]
    assert sum(len(labels) for _, labels in preds) > 0
    # the request bodies hold the JSON headers and, per image, a 4-byte length and the bitstream
    assert sent > sum(4 + len(b) for b in java_bits) and received > 0


def _infer(classes: Path, bundle: Path, url: str, token: str, *files: Path) -> list[str]:
    return java(classes, "infer", str(bundle), url, token, "16", *map(str, files)).strip().split(" ", 3)


def test_java_client_explains_each_server_refusal(classes: Path, executorch_bundle: Path, server: ServerProcess, edge_outputs: tuple[Path, list[bytes], list[int]], tmp_path: Path) -> None:
    out, py_bitstreams, _ = edge_outputs
    good = out / "py_0000.mtb"

    status = _infer(classes, executorch_bundle, server.url, "wrong-token", good)
    assert status[:3] == ["REJECTED", "401", "unauthorized"] and "check the token in Settings" in status[3], status

    other = codec.EntropyTables.load(VECTORS / "tables.safetensors")
    c, h, w = load_bundle(executorch_bundle).latent_shape
    foreign = tmp_path / "foreign.mtb"
    foreign.write_bytes(codec.encode(np.zeros((other.num_channels, h, w), dtype=np.int32), 1, other))
    status = _infer(classes, executorch_bundle, server.url, TOKEN, foreign)
    assert status[:3] == ["REJECTED", "409", "table_mismatch"] and "the app's bundle and the server's bundle differ" in status[3], status

    corrupt = tmp_path / "corrupt.mtb"
    data = bytearray(py_bitstreams[0])
    data[-1] ^= 0x55
    corrupt.write_bytes(bytes(data))
    status = _infer(classes, executorch_bundle, server.url, TOKEN, corrupt)
    assert status[:3] == ["REJECTED", "400", "codec"] and "could not decode a bitstream" in status[3], status


def test_java_client_reports_413_from_an_image_limit(classes: Path, executorch_bundle: Path, edge_outputs: tuple[Path, list[bytes], list[int]], tmp_path: Path) -> None:
    out, _, _ = edge_outputs
    with ServerProcess(executorch_bundle, tmp_path / "serve.log", ["--max-request-images", "1"]) as srv:
        status = _infer(classes, executorch_bundle, srv.url, "", out / "py_0000.mtb", out / "py_0001.mtb")
    assert status[:3] == ["REJECTED", "413", "too_large"] and "over the server's size or image-count limit" in status[3], status


class _Unavailable(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"error": "model is loading", "kind": "unavailable"}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_java_client_retries_503_and_refused_connections_a_bounded_number_of_times(classes: Path, executorch_bundle: Path, edge_outputs: tuple[Path, list[bytes], list[int]]) -> None:
    out, _, _ = edge_outputs
    httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Unavailable)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        status = _infer(classes, executorch_bundle, f"http://{LOOPBACK}:{httpd.server_address[1]}", "", out / "py_0000.mtb")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert status[:3] == ["UNREACHABLE", "3", "unavailable"], status  # the runner allows 2 retries
    assert _Unavailable.hits == 3
    assert "HTTP 503: model is loading" in status[3] and "starting or shutting down" in status[3], status

    status = _infer(classes, executorch_bundle, f"http://{LOOPBACK}:{free_port()}", "", out / "py_0000.mtb")
    assert status[:3] == ["UNREACHABLE", "3", "-"] and "check the server URL in Settings" in status[3], status


# -- photos: subsampled decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "input_size", "sample"),
    [((8000, 6000), (224, 224), 8), ((4000, 3000), (224, 224), 4), ((640, 427), (224, 224), 1), ((447, 447), (224, 224), 1),
     ((896, 896), (224, 224), 2), ((895, 4000), (224, 224), 1), ((1, 1), (32, 32), 1), ((6000, 8000), (24, 40), 64)],
)
def test_java_subsample_keeps_twice_the_input_size(classes: Path, size: tuple[int, int], input_size: tuple[int, int], sample: int) -> None:
    w, h = size
    s, preview = (int(v) for v in java(classes, "subsample", str(w), str(h), str(input_size[0]), str(input_size[1])).split())
    assert s == sample
    assert w // s >= min(w, 2 * input_size[1]) and h // s >= min(h, 2 * input_size[0])  # at least twice the input, when the photo has it
    assert s == 1 or w // (2 * s) < 2 * input_size[1] or h // (2 * s) < 2 * input_size[0]  # the largest such power of two
    assert max(w, h) // preview <= 1024 and (preview == 1 or max(w, h) // (preview // 2) > 1024)


def test_java_subsampled_input_stays_close_to_runtime_edge(classes: Path, tmp_path: Path) -> None:
    """The trade-off of subsampled decoding (benchmarks/android_subsample.py writes the measured numbers): the
    Java tensor from a photo subsampled to at least twice the input size, against runtime_edge.preprocess on
    the full photo."""
    pytest.importorskip("sklearn.datasets", reason="scikit-learn (its sample photos) is not installed on this platform")
    from benchmarks.android_subsample import measure, photos

    cases = measure(classes, photos(), (224, 224), tmp_path)
    assert [c.sample for c in cases] == [1, 1, 4]
    for c in cases:
        if c.sample == 1:
            assert c.max_levels == 0.0, c  # nothing subsampled: bit-identical
        else:
            assert c.mean_levels < 1.0 and c.max_levels <= 8, c


def test_java_turns_pixels_upright_as_pillow_does(classes: Path, tmp_path: Path) -> None:
    from PIL import ImageOps

    rng = np.random.default_rng(9)
    pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    lines, want = [], {}
    for o in range(1, 9):
        (tmp_path / f"o{o}.rgb").write_bytes(pixels.tobytes())
        lines.append(f"o{o} 7 5 {o}\n")
        img = Image.fromarray(pixels, "RGB")
        exif = img.getexif()
        exif[0x0112] = o
        img.info["exif"] = exif.tobytes()
        want[f"o{o}"] = np.asarray(ImageOps.exif_transpose(img))
    (tmp_path / "cases.txt").write_text("".join(lines))
    for line in java(classes, "upright", str(tmp_path)).split("\n")[:-1]:
        name, w, h = line.split()
        got = np.frombuffer((tmp_path / f"{name}.up.rgb").read_bytes(), dtype=np.uint8).reshape(int(h), int(w), 3)
        np.testing.assert_array_equal(got, want[name], err_msg=name)


def test_device_check_data_for_the_instrumented_test(executorch_bundle: Path, tmp_path: Path) -> None:
    """benchmarks/android_device_check.py writes what EdgeProgramTest compares on a phone: the device files and,
    per photo, runtime_edge's input, the Python edge client's outputs and bitstream."""
    pytest.importorskip("sklearn.datasets", reason="scikit-learn (its sample photos) is not installed on this platform")
    from benchmarks.android_device_check import write_device_check

    out = tmp_path / "device-check"
    names = write_device_check(executorch_bundle, out, 3)
    assert (out / "cases.txt").read_text().split() == names == ["photo0", "photo1", "photo2"]
    assert sorted(p.name for p in (out / "bundle").iterdir()) == ["edge.pte", "manifest.json", "tables.safetensors"]
    rt = EdgeRuntime(executorch_bundle)
    h, w = rt.bundle.manifest.preprocessing.input_size
    for name in names:
        x = np.fromfile(out / f"{name}.input.f32", dtype="<f4").reshape(1, 3, h, w)
        latent, logits = rt.run_model(x)
        np.testing.assert_array_equal(np.fromfile(out / f"{name}.latent.f32", dtype="<f4"), latent.reshape(-1))
        np.testing.assert_array_equal(np.fromfile(out / f"{name}.logits.f32", dtype="<f4"), logits)
        _, mask = codec.decode_latent((out / f"{name}.mtb").read_bytes(), rt.bundle.tables)
        assert mask == rt.bundle.task_mask(logits)
