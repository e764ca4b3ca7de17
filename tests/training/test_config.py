"""Config composition and validation: errors name the file (or override) and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import ConfigError, fingerprint, load_config
from training.train import main as train_main

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["default.yaml", "demo.yaml", "tiny.yaml"])
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    assert cfg["data"]["kind"] == "synthetic" and cfg["stage1"]["beta"] >= 0


def test_base_composition_and_overrides(tmp_path: Path) -> None:
    base = CONFIGS / "default.yaml"
    child = _write(tmp_path / "child.yaml", f"base: {base}\nstage1:\n  beta: 0.25\n")
    cfg = load_config(child, ["stage2.beta=0.5", "data.synthetic.tasks=[shape, count]"])
    default = load_config(base)
    assert cfg["stage1"]["beta"] == 0.25 and cfg["stage2"]["beta"] == 0.5
    assert cfg["stage1"]["lr"] == default["stage1"]["lr"]  # untouched keys come from the base
    assert cfg["data"]["synthetic"]["tasks"] == ["shape", "count"]
    assert fingerprint(cfg, ["teacher"]) == fingerprint(default, ["teacher"])
    assert fingerprint(cfg, ["stage1"]) != fingerprint(default, ["stage1"])


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yaml", f"base: {CONFIGS / 'default.yaml'}\nstage1:\n  betta: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "stage1.betta" in str(err.value)


def test_wrong_type_names_file_and_key(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.yaml", f"base: {CONFIGS / 'default.yaml'}\nteacher:\n  epochs: three\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(bad) in str(err.value) and "teacher.epochs" in str(err.value) and "integer" in str(err.value)
    bad.write_text(f"base: {CONFIGS / 'default.yaml'}\ndata:\n  mean: [0.5, 0.5]\n")
    with pytest.raises(ConfigError, match="data.mean must have exactly 3"):
        load_config(bad)
    bad.write_text(f"base: {CONFIGS / 'default.yaml'}\namp: 1\n")
    with pytest.raises(ConfigError, match="amp must be true or false"):
        load_config(bad)


def test_errors_in_a_base_file_name_that_file(tmp_path: Path) -> None:
    base = _write(tmp_path / "base.yaml", f"base: {CONFIGS / 'default.yaml'}\nmodel:\n  latent_channels: -4\n")
    child = _write(tmp_path / "child.yaml", "base: base.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    assert str(base) in str(err.value) and "model.latent_channels" in str(err.value)


def test_override_errors_name_the_override() -> None:
    with pytest.raises(ConfigError, match=r"--set stage9.beta=1: unknown key 'stage9'"):
        load_config(CONFIGS / "tiny.yaml", ["stage9.beta=1"])
    with pytest.raises(ConfigError, match=r"--set stage1.beta=high: stage1.beta must be a number"):
        load_config(CONFIGS / "tiny.yaml", ["stage1.beta=high"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(CONFIGS / "tiny.yaml", ["stage1.beta"])


def test_missing_invalid_and_incomplete_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = _write(tmp_path / "broken.yaml", "stage1: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    lonely = _write(tmp_path / "lonely.yaml", "seed: 1\n")
    with pytest.raises(ConfigError, match="missing keys"):
        load_config(lonely)
    missing_base = _write(tmp_path / "mb.yaml", "base: gone.yaml\n")
    with pytest.raises(ConfigError, match="gone.yaml does not exist"):
        load_config(missing_base)


def test_cli_reports_config_errors_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = _write(tmp_path / "bad.yaml", f"base: {CONFIGS / 'tiny.yaml'}\nstage2:\n  bogus: 1\n")
    assert train_main(["--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "stage2.bogus" in err and str(bad) in err


def test_a_teacher_stem_needs_a_teacher_cut_by_name() -> None:
    with pytest.raises(ConfigError, match="model.stem_layer"):
        load_config(CONFIGS / "demo.yaml", ["model.stem_layer=blocks.0"])
