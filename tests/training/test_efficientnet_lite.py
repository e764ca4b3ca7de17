"""EfficientNet-Lite with Google's ImageNet weights as a teacher, and the sample photos it labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchdistill.core.forward_hook import ForwardHookManager

from training.checkpoint import CheckpointError, load_state_dict_file
from training.config import ConfigError, load_config
from training.data import DatasetError
from training.data.photos import SAMPLE_PHOTOS, TEST_VIEWS, check_split, load_photo, photo_items
from training.models import create_model
from training.models import efficientnet_lite

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
ARCH = "efficientnet_lite0"


@pytest.fixture(scope="module")
def packaged_state() -> dict[str, torch.Tensor]:
    return load_state_dict_file(efficientnet_lite.packaged_weights(ARCH))


def test_packaged_weights_load_strictly_and_match_the_reference_implementation() -> None:
    reference_lib = pytest.importorskip("efficientnet_lite_pytorch", reason="the reference implementation is a dev dependency")
    path = efficientnet_lite.packaged_weights(ARCH)
    reference = reference_lib.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path)).eval()
    model = efficientnet_lite.pretrained(ARCH)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in model.parameters()) == 4_652_008


@pytest.mark.parametrize("damage", ["missing", "unknown", "shape"])
def test_weights_that_do_not_fit_are_refused(packaged_state: dict[str, torch.Tensor], tmp_path: Path, damage: str) -> None:
    state = dict(packaged_state)
    if damage == "missing":
        del state["_blocks.3._project_conv.weight"]
    elif damage == "unknown":
        state["_blocks.3._se_reduce.weight"] = torch.zeros(4, 96, 1, 1)
    else:
        state["_fc.bias"] = torch.zeros(999)
    path = tmp_path / "lite0.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=str(path)):
        efficientnet_lite.pretrained(ARCH, path)


def test_cut_reproduces_the_intact_network_layer_and_logits() -> None:
    teacher = create_model(
        "teacher_efficientnet_lite", arch=ARCH, distill_layer="blocks.3", task_class_indices=[list(range(1000))], weights="package"
    )
    assert (teacher.distill_channels, teacher.distill_stride, teacher.num_classes) == (80, 16, 1000)
    intact = efficientnet_lite.pretrained(ARCH)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    hooks = ForwardHookManager(torch.device("cpu"))
    hooks.add_hook(intact, "blocks.3", requires_input=False, requires_output=True)
    with torch.no_grad():
        logits = intact(x)
        layer = hooks.pop_io_dict()["blocks.3"]["output"]
        torch.testing.assert_close(teacher.head(x), layer)
        torch.testing.assert_close(teacher(x)[0], logits)
    with pytest.raises(ValueError, match="no layer 'blocks9'"):
        create_model("teacher_efficientnet_lite", arch=ARCH, distill_layer="blocks9", task_class_indices=[[0, 1]], weights="package")


def test_unknown_variant_is_named() -> None:
    with pytest.raises(ValueError, match="efficientnet_lite7"):
        efficientnet_lite.build("efficientnet_lite7")


def test_photos_hold_out_whole_photos() -> None:
    cfg = load_config(CONFIGS / "effnet_lite0_224.yaml")
    photos_cfg = cfg["data"]["photos"]
    photos = {name: load_photo(name) for name in SAMPLE_PHOTOS}
    assert all(p.mode == "RGB" for p in photos.values())
    train = photo_items("train", photos_cfg, 0, photos)
    test = photo_items("test", photos_cfg, 0, photos)
    assert {i.photo for i in train}.isdisjoint(photos_cfg["test"])
    assert len(train) == (len(SAMPLE_PHOTOS) - len(photos_cfg["test"])) * photos_cfg["train_crops"]
    assert [i.view for i in test] == list(TEST_VIEWS) * len(photos_cfg["test"])
    assert train == photo_items("train", photos_cfg, 0, photos)  # drawn once from the seed
    assert train != photo_items("train", photos_cfg, 1, photos)
    for item in train:
        w, h = photos[item.photo].size
        left, top, right, bottom = item.box
        assert 0 <= left < right <= w and 0 <= top < bottom <= h


@pytest.mark.parametrize(
    "test, message",
    [
        (["motorcycle_left"], "one scene"),
        (["kitten"], "unknown sample photo 'kitten'"),
        (["coffee", "coffee"], "twice"),
        (list(SAMPLE_PHOTOS), "none is left"),
    ],
)
def test_bad_hold_out_is_refused(test: list[str], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        check_split(test)


def test_photos_need_a_pretrained_teacher() -> None:
    with pytest.raises(ConfigError, match="teacher.kind 'cnn'"):
        load_config(CONFIGS / "effnet_lite0_tiny.yaml", ["teacher.kind=cnn"])
    with pytest.raises(ConfigError, match=r"crop_scale must be \[low, high\]"):
        load_config(CONFIGS / "effnet_lite0_tiny.yaml", ["data.photos.crop_scale=[0.9, 0.2]"])


@pytest.mark.heavy
def test_tiny_config_trains_and_exports_with_the_teacher_preprocessing(tmp_path: Path) -> None:
    """The tiny variant end to end: teacher labels, both stages, checkpoint and bundle manifest record
    Google's preprocessing, and the teacher is rebuilt from the checkpoint without the weights package."""
    from codec.bundle import read_manifest
    from export.split import main as split_main
    from training.build import load_model
    from training.train import main as train_main

    out = tmp_path / "run"
    assert train_main(["--config", str(CONFIGS / "effnet_lite0_tiny.yaml"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher"]["task_accuracy"]["imagenet"] == 1.0  # labels are the teacher's own answers
    assert metrics["stage2"]["images"] == 28 and metrics["stage2"]["bytes_per_image"] > 0
    expected = {"input_size": [64, 64], "mean": [127 / 255] * 3, "std": [128 / 255] * 3}
    teacher, meta = load_model(out / "teacher.safetensors", "teacher")
    assert meta["model"]["name"] == "teacher_efficientnet_lite" and "weights" not in meta["model"]["kwargs"]
    for key, value in expected.items():
        assert meta["preprocessing"][key] == pytest.approx(value)
    model, _ = load_model(out / "stage2.safetensors", "stage2")  # the device's stem is still the teacher's first layers
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model.client.stem.pretrained and torch.equal(model.client.stem.eval()(x), teacher.eval().head_layers[:3](x))
    bundle = tmp_path / "bundle"
    assert (
        split_main(
            [
                "--checkpoint",
                str(out / "stage2.safetensors"),
                "--target",
                "onnx",
                "--out",
                str(bundle),
                "--calibration-samples",
                "8",
                "--check-samples",
                "8",
            ]
        )
        == 0
    )
    pre = read_manifest(bundle).preprocessing.to_dict()
    for key, value in expected.items():
        assert pre[key] == pytest.approx(value)
