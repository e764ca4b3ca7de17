"""The real-data path: ImageFolder trees with a task map, and torchvision teachers from local weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import functional as TF

from training.build import load_model
from training.checkpoint import CheckpointError
from training.config import load_config
from training.data import DatasetError, build_datasets, load_task_map
from training.models import create_model
from training.pipeline import near_chance, run

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
CLASSES = {"cat": 11, "dog": 12, "car": 13, "bus": 14}  # class -> index in the teacher's logits
TASK_MAP = """
tasks:
  - name: animals
    classes: [cat, dog]
  - name: vehicles
    classes: [car, bus]
  - name: things
    classes: [dog, bus]
teacher_index: {cat: 11, dog: 12, car: 13, bus: 14}
"""


def make_tree(root: Path, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{i}.png")
    (root / "tasks.yaml").write_text(TASK_MAP)
    return root


def folder_cfg(root: Path, *extra: str) -> dict:
    return load_config(
        CONFIGS / "tiny.yaml", ["data.kind=folder", f"data.folder.root={root}", f"data.folder.task_map={root / 'tasks.yaml'}", *extra]
    )


def test_folder_items_follow_the_task_map(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    train, val, test, tasks, pre = build_datasets(folder_cfg(root, "data.cache=false"))
    assert [t.name for t in tasks] == ["animals", "vehicles", "things"]
    assert len(train) == len(val) == len(test) == 16  # no test/ folder: val doubles as test
    by_class = {p.parent.name: (lab, vec) for p, lab, vec in train.source.samples}
    assert by_class["dog"][0].tolist() == [1, -1, 0] and by_class["dog"][1].tolist() == [1, 0, 1]
    assert by_class["car"][0].tolist() == [-1, 0, -1]
    x, labels, vector = train[0]
    assert x.shape == (3, 32, 32) and labels.dtype == torch.long and vector.dtype == torch.float32
    pil = train.pil(0)
    expected = TF.normalize(TF.to_tensor(pil.resize((32, 32), Image.BILINEAR)), pre["mean"], pre["std"])
    assert torch.equal(x, expected)


def test_empty_or_missing_class_folder_is_named(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    for f in (root / "train" / "car").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match=f"{root / 'train' / 'car'}: no images"):
        build_datasets(folder_cfg(root))
    (root / "train" / "car").rmdir()
    with pytest.raises(DatasetError, match=f"{root / 'train' / 'car'}: missing"):
        build_datasets(folder_cfg(root))


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    bad = root / "train" / "bus" / "9.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DatasetError, match=f"image {bad}: unreadable"):
        build_datasets(folder_cfg(root))  # cache=true reads every image up front
    train, *_ = build_datasets(folder_cfg(root, "data.cache=false"))
    index = [p for p, _, _ in train.source.samples].index(bad)
    with pytest.raises(DatasetError, match=str(bad)):
        train[index]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("tasks: [unclosed", "not valid YAML"),
        ("classes: [a, b]", "non-empty 'tasks' list"),
        ("tasks:\n  - name: a\n    classes: [x]\n", "at least 2 class names"),
        ("tasks:\n  - name: a\n    classes: [x, x]\n", "lists a class twice"),
        ("tasks:\n  - {name: a, classes: [x, y]}\n  - {name: a, classes: [y, z]}\n", "distinct"),
        ("tasks:\n  - {name: a, classes: [x, y]}\nextra: 1\n", "unknown keys"),
        ("tasks:\n  - {name: a, classes: [x, y]}\nteacher_index: {x: -1}\n", "non-negative"),
    ],
)
def test_bad_task_maps_are_named(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    with pytest.raises(DatasetError, match=problem) as err:
        load_task_map(path)
    assert str(path) in str(err.value)


def test_teacher_index_is_required_for_a_pretrained_teacher(tmp_path: Path) -> None:
    path = tmp_path / "tasks.yaml"
    path.write_text("tasks:\n  - {name: a, classes: [x, y]}\nteacher_index: {x: 3}\n")
    with pytest.raises(DatasetError, match=r"lacks classes \['y'\]"):
        load_task_map(path).teacher_indices("timm")


def test_torchvision_teacher_is_cut_at_the_named_layer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    full = torchvision.models.resnet18().eval()
    weights = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), weights)
    indices = [[11, 12], [13, 14], [12, 14]]
    teacher = create_model(
        "teacher_torchvision",
        arch="resnet18",
        distill_layer="layer2",
        task_class_indices=indices,
        input_size=(64, 64),
        weights=str(weights),
    ).eval()
    assert (teacher.distill_channels, teacher.distill_stride) == (128, 8)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = teacher.head(x)
        assert features.shape == (2, 128, 8, 8)
        logits = full(x)
        for t, (out, tail) in enumerate(zip(teacher.tail(features), teacher.task_tails())):
            assert torch.allclose(out, logits[:, indices[t]], atol=1e-5)
            assert torch.allclose(tail(features), out)


def test_torchvision_teacher_errors(tmp_path: Path) -> None:
    kwargs = {"distill_layer": "layer2", "task_class_indices": [[0, 1]], "input_size": (64, 64)}
    with pytest.raises(CheckpointError, match="no such file"):
        create_model("teacher_torchvision", arch="resnet18", weights=str(tmp_path / "none.pth"), **kwargs)
    wrong = tmp_path / "wrong.pth"
    state = torchvision.models.resnet18().state_dict()
    state.pop("fc.bias")
    torch.save(state, wrong)
    with pytest.raises(CheckpointError, match=f"{wrong}: do not fit resnet18"):
        create_model("teacher_torchvision", arch="resnet18", weights=str(wrong), **kwargs)
    with pytest.raises(ValueError, match="no layer 'layer9'"):
        create_model("teacher_torchvision", arch="resnet18", **{**kwargs, "distill_layer": "layer9"})
    # MobileNetV2 pools inside forward(), not in a child module: its children do not reproduce the output
    with pytest.raises(ValueError, match="cannot cut mobilenet_v2"):
        create_model("teacher_torchvision", arch="mobilenet_v2", **{**kwargs, "distill_layer": "features.6"})


def test_pipeline_on_a_folder_with_a_pretrained_torchvision_teacher(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_tree(tmp_path / "tree", per_class=8)
    weights = tmp_path / "mnv3.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in torchvision.models.mobilenet_v3_small().state_dict().items()}, str(weights))
    cfg = folder_cfg(
        root,
        "teacher.kind=torchvision",
        "teacher.arch=mobilenet_v3_small",
        f"teacher.weights={weights}",
        "teacher.distill_layer=features.3",
        "ablations.no_film=false",
        "data.batch_size=16",
    )
    with caplog.at_level(logging.INFO, logger="mantis.training"):
        metrics = run(cfg, tmp_path / "out")
    assert sorted(metrics["stage2"]["task_accuracy"]) == ["animals", "things", "vehicles"]
    # untrained ImageNet weights: the teacher's accuracy on val is printed before Stage 1, with a warning
    check = metrics["teacher_val"]
    assert check["split"] == "val" and check["images"] == 32 and check["chance"] == {"animals": 0.5, "vehicles": 0.5, "things": 0.5}
    assert check["near_chance"] == near_chance(check["task_accuracy"], load_task_map(root / "tasks.yaml").tasks)
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("teacher accuracy on the val split (32 images): animals ") for m in logged)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "near chance" in r.getMessage()]
    assert len(warned) == (1 if check["near_chance"] else 0)
    assert all(str(check["near_chance"]) in m and "teacher_index" in m for m in warned)
    model, meta = load_model(metrics["checkpoint"], "stage2")  # rebuilt without the weights file
    assert meta["model"]["kwargs"]["teacher"]["kwargs"]["task_class_indices"] == [[11, 12], [13, 14], [12, 14]]
    x = torch.randn(2, 3, 32, 32)
    assert [o.shape[1] for o in model(x)["out"]] == [2, 2, 2]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["checkpoint"] == metrics["checkpoint"]


def _pretrained_config(tmp_path: Path, *lines: str) -> Path:
    """A config file for a folder tree and a mobilenet_v3_small teacher from a local weights file."""
    from safetensors.torch import save_file

    root = make_tree(tmp_path / "tree")
    weights = tmp_path / "mnv3.safetensors"
    save_file({k: v.contiguous() for k, v in torchvision.models.mobilenet_v3_small().state_dict().items()}, str(weights))
    cfg = tmp_path / "own.yaml"
    cfg.write_text(
        "\n".join(
            [
                f"base: {CONFIGS / 'tiny.yaml'}",
                f"data: {{kind: folder, folder: {{root: {root}, task_map: {root / 'tasks.yaml'}}}}}",
                f"teacher: {{kind: torchvision, arch: mobilenet_v3_small, weights: {weights}, distill_layer: features.3}}",
                *lines,
            ]
        )
        + "\n"
    )
    return cfg


def test_wrong_distill_layer_is_an_error_line_and_leaves_no_out_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from training.train import main as train_main

    cfg = _pretrained_config(tmp_path)
    out = tmp_path / "runs" / "own"
    assert train_main(["--config", str(cfg), "--out", str(out), "--set", "teacher.distill_layer=features.30"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "teacher.distill_layer 'features.30'" in err and "features.3," in err and "classifier" in err
    assert not (tmp_path / "runs").exists()

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert train_main(["--config", str(cfg), "--out", str(mine), "--set", "teacher.arch=resnet9000"]) == 2
    assert "teacher.arch 'resnet9000'" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_missing_teacher_index_names_the_teacher_kind(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from training.train import main as train_main

    cfg = _pretrained_config(tmp_path)
    (tmp_path / "tree" / "tasks.yaml").write_text(TASK_MAP.split("teacher_index")[0])
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "teacher.kind 'torchvision' needs 'teacher_index'" in err
    assert not (tmp_path / "out").exists()


def test_near_chance_is_relative_to_the_number_of_classes() -> None:
    from training.data import TaskSpec

    tasks = [TaskSpec("pair", ("a", "b")), TaskSpec("ten", tuple("abcdefghij"))]
    assert near_chance({"pair": 0.55, "ten": 0.5}, tasks) == ["pair"]
    assert near_chance({"pair": 0.61, "ten": 0.27}, tasks) == ["ten"]
    assert near_chance({"pair": 0.9, "ten": 0.9}, tasks) == []
