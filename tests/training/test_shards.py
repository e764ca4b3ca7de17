"""WebDataset shards as a data source (and the converter from a folder tree), and timm teachers."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.training.test_folder import make_tree
from training.build import load_model
from training.checkpoint import CheckpointError
from training.config import ConfigError, load_config
from training.data import DatasetError, build_datasets
from training.data.shards import expand_urls, main as shards_main
from training.models import create_model
from training.pipeline import run

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def shard_cfg(shards: Path, tree: Path, *extra: str, train: str | None = None) -> dict:
    return load_config(
        CONFIGS / "tiny.yaml",
        [
            "data.kind=webdataset",
            f"data.webdataset.train={train or shards / 'train-000000.tar'}",
            f"data.webdataset.val={shards / 'val-{000000..000001}.tar'}",
            f"data.webdataset.task_map={tree / 'tasks.yaml'}",
            *extra,
        ],
    )


@pytest.fixture()
def shards(tmp_path: Path) -> tuple[Path, Path]:
    tree = make_tree(tmp_path / "tree")
    out = tmp_path / "shards"
    assert shards_main(["--root", str(tree), "--task-map", str(tree / "tasks.yaml"), "--out", str(out), "--max-per-shard", "10"]) == 0
    return tree, out


def test_converter_writes_shards_that_read_back_as_the_folder_does(shards: tuple[Path, Path]) -> None:
    tree, out = shards
    assert sorted(p.name for p in out.iterdir()) == ["train-000000.tar", "train-000001.tar", "val-000000.tar", "val-000001.tar"]
    with tarfile.open(out / "train-000000.tar") as tar:
        assert sorted(tar.getnames()[:2]) == ["000000000.cls", "000000000.png"]
    from tests.training.test_folder import folder_cfg

    folder = build_datasets(folder_cfg(tree))
    sharded = build_datasets(shard_cfg(out, tree, train=str(out / "train-*.tar")))
    assert sharded[3] == folder[3] and sharded[4] == folder[4]  # tasks, preprocessing
    for split in range(3):  # train, val, test (val doubles as test)
        assert len(sharded[split]) == len(folder[split]) == 16
        for i in (0, 7, 15):
            for a, b in zip(sharded[split][i], folder[split][i]):
                assert torch.equal(a, b)


def test_shard_patterns_and_errors_name_the_problem(shards: tuple[Path, Path], tmp_path: Path) -> None:
    tree, out = shards
    assert expand_urls(str(out / "train-{000000..000001}.tar")) == [str(out / "train-000000.tar"), str(out / "train-000001.tar")]
    assert expand_urls("https://example.org/s-{0..1}.tar") == ["https://example.org/s-0.tar", "https://example.org/s-1.tar"]
    with pytest.raises(DatasetError, match="no such file .*train-000009.tar"):
        expand_urls(str(out / "train-00000{0,9}.tar"))
    with pytest.raises(DatasetError, match="no file matches"):
        expand_urls(str(out / "test-*.tar"))
    # one shard holds only some classes
    with pytest.raises(DatasetError, match=r"no samples of classes \['bus'\]"):
        build_datasets(shard_cfg(out, tree), splits=("train",))
    broken = tmp_path / "broken.tar"
    broken.write_bytes(b"not a tar file" * 100)
    with pytest.raises(DatasetError, match="broken.tar"):
        build_datasets(shard_cfg(out, tree, train=str(broken)), splits=("train",))
    with pytest.raises(ConfigError, match="needs data.webdataset.train"):
        load_config(CONFIGS / "tiny.yaml", ["data.kind=webdataset"])
    assert shards_main(["--root", str(tmp_path / "nowhere"), "--task-map", str(tree / "tasks.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()  # a failed conversion leaves no empty --out


def _timm_weights(path: Path, num_classes: int = 15) -> Path:
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=num_classes)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_timm_teacher_loads_local_weights_and_is_cut_at_the_named_layer(tmp_path: Path) -> None:
    weights = _timm_weights(tmp_path / "effnet.safetensors")
    kwargs = {"arch": "test_efficientnet", "distill_layer": "blocks.1", "task_class_indices": [[11, 12], [13, 14]], "input_size": [32, 32]}
    teacher = create_model("teacher_timm", **kwargs, weights=str(weights))
    x = torch.randn(2, 3, 32, 32)
    logits = teacher(x)
    assert [t.shape for t in logits] == [(2, 2), (2, 2)]
    assert teacher.distill_stride in (4, 8) and teacher.head(x).shape[1] == teacher.distill_channels
    with pytest.raises(ConfigError, match="teacher.arch .no_such_net.: not a timm architecture"):
        create_model("teacher_timm", **{**kwargs, "arch": "no_such_net"}, weights=str(weights))
    with pytest.raises(CheckpointError, match="no such file"):
        create_model("teacher_timm", **kwargs, weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match="no classifier weight 'fc.weight' for timm test_resnet"):
        create_model("teacher_timm", **{**kwargs, "arch": "test_resnet"}, weights=str(weights))
    with pytest.raises(CheckpointError, match="do not fit test_efficientnet_gn"):
        create_model("teacher_timm", **{**kwargs, "arch": "test_efficientnet_gn"}, weights=str(weights))


def test_pipeline_on_shards_with_a_timm_teacher(shards: tuple[Path, Path], tmp_path: Path) -> None:
    tree, out = shards
    weights = _timm_weights(tmp_path / "effnet.safetensors")
    cfg = shard_cfg(
        out,
        tree,
        "teacher.kind=timm",
        "teacher.arch=test_efficientnet",
        f"teacher.weights={weights}",
        "teacher.distill_layer=blocks.1",
        "ablations.no_film=false",
        "ablations.oracle=false",
        "data.batch_size=16",
        train=str(out / "train-*.tar"),
    )
    metrics = run(cfg, tmp_path / "run")
    assert sorted(metrics["stage2"]["task_accuracy"]) == ["animals", "things", "vehicles"]
    model, meta = load_model(metrics["checkpoint"], "stage2")  # rebuilt from the metadata, without the weights file
    assert meta["model"]["kwargs"]["teacher"]["name"] == "teacher_timm"
    assert [o.shape[1] for o in model(torch.randn(2, 3, 32, 32))["out"]] == [2, 2, 2]


def test_shards_command_runs_as_a_module_without_warnings() -> None:
    """``python -m training.data.shards``: the package must not import the module it is about to run."""
    proc = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "training.data.shards", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0 and "RuntimeWarning" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("usage: python -m training.data.shards")
