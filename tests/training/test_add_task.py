"""Adding a task to a deployed model: replay buffer, EWC, model expansion, and both addition paths on the
tiny config (the deployed model is the session's tiny Stage 2 checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.build import load_model
from training.config import ConfigError, load_config
from training.continual import (
    AddedTasksObjective,
    EWCPenalty,
    ReplayBuffer,
    ReplayMix,
    Subset,
    ewc_parameter_names,
    fisher_diagonal,
    split_by_tasks,
)
from training.data import MultiTaskDataset, SyntheticMultiTask, preprocessing_meta
from training.models.added_tasks import AddedTaskServer, expand_client, extend_model
from training.task_addition import run_addition

TINY = Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.yaml"
ALL = "[shape,orientation,count,texture]"


def _config(base: Path, *extra: str) -> dict:
    sets = [
        f"data.synthetic.tasks={ALL}",
        f"add_task.base_checkpoint={base}",
        "data.batch_size=16",
        "add_task.replay_size=16",
        "add_task.fisher_samples=8",
        "add_task.epochs=1",
        "add_task.export_target=null",
        *extra,
    ]
    return load_config(TINY, sets)


def _four_task_data(n: int = 64) -> MultiTaskDataset:
    src = SyntheticMultiTask(n, 32, 0, "train", ["shape", "orientation", "count", "texture"])
    return MultiTaskDataset(src, preprocessing_meta((32, 32), [0.5] * 3, [0.25] * 3), cache=True)


def test_ewc_penalty_is_zero_at_the_anchor_and_grows_away_from_it() -> None:
    anchor = {"a": torch.randn(3, 4), "b": torch.randn(5)}
    fisher = {"a": torch.rand(3, 4), "b": torch.zeros(5)}
    ewc = EWCPenalty(anchor, fisher, weight=10.0)
    assert float(ewc(anchor)) == 0.0
    moved = {"a": anchor["a"] + 0.1, "b": anchor["b"]}
    assert float(ewc(moved)) > 0.0
    # zero Fisher: moving that parameter costs nothing
    assert float(ewc({"a": anchor["a"], "b": anchor["b"] + 5.0})) == 0.0
    # a grown layer is penalised on its old slice only
    grown = {"a": torch.cat([anchor["a"], torch.randn(2, 4)]), "b": anchor["b"]}
    assert float(ewc(grown)) == 0.0
    grown["a"][0, 0] += 1.0
    assert float(ewc(grown)) > 0.0
    with pytest.raises(ValueError, match="shape"):
        EWCPenalty({"a": torch.zeros(2)}, {"a": torch.zeros(3)}, 1.0)


def test_replay_buffer_holds_old_task_images_only_and_is_seeded() -> None:
    data = _four_task_data()
    new, old = split_by_tasks(data, [3])
    assert new and old and sorted(new + old) == list(range(len(data)))
    buffer = ReplayBuffer(data, old, 10, seed=1)
    assert len(buffer) == 10 and set(buffer.indices) <= set(old)
    assert all(float(data[i][2][3]) == 0.0 for i in buffer.indices)
    assert buffer.indices == ReplayBuffer(data, old, 10, seed=1).indices
    assert buffer.indices != ReplayBuffer(data, old, 10, seed=2).indices
    with pytest.raises(ValueError, match="only"):
        ReplayBuffer(data, old, len(old) + 1, seed=0)
    mix = ReplayMix(data, new, buffer, fraction=0.5)
    assert len(mix) == 2 * len(new)
    sources = [mix.source_index(i) for i in range(len(mix))]
    assert sources[: len(new)] == new and set(sources[len(new) :]) <= set(buffer.indices)
    # the replay part cycles through the whole buffer
    assert set(sources[len(new) :]) == set(buffer.indices) or len(new) < len(buffer)
    with pytest.raises(ValueError, match="fraction"):
        ReplayMix(data, new, buffer, fraction=1.0)


def test_expanded_client_computes_what_the_deployed_one_did(tiny_checkpoint: Path) -> None:
    model, _ = load_model(tiny_checkpoint, stage="stage2")
    client = model.client.eval()
    grown = expand_client(client, 1).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        y, logits = client(x)
        y2, logits2 = grown(x)
    assert logits2.shape == (4, client.num_tasks + 1)
    torch.testing.assert_close(logits2[:, : client.num_tasks], logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(y2, y, rtol=0, atol=1e-5)


def test_fisher_diagonal_is_nonnegative_and_covers_the_named_parameters(tiny_checkpoint: Path) -> None:
    model, _ = load_model(tiny_checkpoint, stage="stage2")
    names = ["client.encoder.project.weight", "server.tails.0.head.weight", "client.stem.layers.0.0.weight"]
    data = Subset(_four_task_data(16), range(6), [0, 1, 2])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fisher = fisher_diagonal(model, data, names)
    assert set(fisher) == set(names)
    assert all(bool((f >= 0).all()) and float(f.sum()) > 0 for f in fisher.values())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_ewc_anchors_the_named_modules_only(tiny_checkpoint: Path) -> None:
    model, _ = load_model(tiny_checkpoint, stage="stage2")
    names = ewc_parameter_names(model, ["encoder", "decoders"])
    assert names and all(n.startswith(("client.encoder.", "server.decoders.")) for n in names)
    assert {n for n, _ in model.named_parameters() if n.startswith(("client.encoder.", "server.decoders."))} == set(names)
    every = ewc_parameter_names(model, ["encoder", "task_detector", "film_generator", "decoders", "tails"])
    assert not any(n.startswith(("client.stem.", "entropy_bottleneck.")) for n in every)
    assert len(every) == sum(1 for n, _ in model.named_parameters() if not n.startswith(("client.stem.", "entropy_bottleneck.")))
    with pytest.raises(ValueError, match="stem"):
        ewc_parameter_names(model, ["stem"])


@pytest.fixture(scope="module")
def server_addition(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("add_server")
    return out, run_addition(_config(tiny_checkpoint, "add_task.mode=server"), out)


def test_server_only_addition_leaves_every_deployed_tensor_bit_identical(tiny_checkpoint: Path, server_addition) -> None:
    out, metrics = server_addition
    result = metrics["server"]
    assert result["deployed_tensors_identical"] and result["deployed_tensors_differing"] == []
    assert result["tables_sha256"]["identical"]
    assert all(v == 0.0 for v in result["change"]["old_task_points"].values())
    assert result["before"]["bytes_per_image"] == result["after"]["bytes_per_image"]
    base, _ = load_model(tiny_checkpoint, stage="stage2")
    added, meta = load_model(metrics["checkpoint"], stage="stage2")
    assert isinstance(added.server, AddedTaskServer) and meta["edge_tasks"] == 3 and meta["added_tasks"] == ["texture"]
    assert meta["versions"] == {"edge": 1, "server": 2}
    base_state, added_state = base.state_dict(), added.state_dict()
    for name, tensor in base_state.items():
        key = name.replace("server.", "server.base.", 1) if name.startswith("server.") else name
        assert torch.equal(added_state[key], tensor), name
    y_hat = torch.randn(2, base.client.latent_channels, 4, 4)
    with torch.no_grad():
        old, new = base.server(y_hat), added.server(y_hat)
    assert len(new) == 4 and all(torch.equal(a, b) for a, b in zip(old, new[:3]))
    assert json.loads((out / "metrics.json").read_text())["mode"] == "server"


@pytest.mark.slow
def test_full_addition_changes_the_tables_and_compares_with_naive_fine_tuning(tiny_checkpoint: Path, tmp_path: Path) -> None:
    metrics = run_addition(_config(tiny_checkpoint, "add_task.mode=full", "add_task.head_epochs=1"), tmp_path)
    full = metrics["full"]
    assert full["heads"]["epochs"] == 1 and "ce" in full["heads"]["last_epoch"]
    assert set(full) >= {"before", "replay_ewc", "naive"}
    for method in ("replay_ewc", "naive"):
        assert not full[method]["tables_sha256"]["identical"]
        assert set(full[method]["after"]["task_accuracy"]) == {"shape", "orientation", "count", "texture"}
        model, meta = load_model(metrics["checkpoints"][method], stage="stage2")
        assert model.client.num_tasks == 4 and meta["versions"] == {"edge": 2, "server": 2}
    assert full["replay"]["buffer_images"] == 16
    assert full["ewc"]["modules"] == ["encoder", "task_detector", "film_generator", "decoders", "tails"]
    assert full["ewc"]["anchored_parameters"] > 0


def test_bad_addition_configs_are_rejected(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="base_checkpoint"):
        run_addition(_config(tiny_checkpoint, "add_task.base_checkpoint=null"), tmp_path / "runs" / "added")
    assert not (tmp_path / "runs").exists()  # a failed run leaves no empty output folder
    with pytest.raises(ConfigError, match="first tasks"):
        run_addition(_config(tiny_checkpoint, "data.synthetic.tasks=[texture,shape,orientation,count]"), tmp_path)
    with pytest.raises(ConfigError, match="adds no task"):
        run_addition(_config(tiny_checkpoint, "data.synthetic.tasks=[shape,orientation,count]"), tmp_path)
    with pytest.raises(ConfigError, match="init_from"):
        run_addition(_config(tiny_checkpoint, "add_task.init_from=texture"), tmp_path)
    with pytest.raises(ConfigError, match="replay_fraction"):
        _config(tiny_checkpoint, "add_task.replay_fraction=1.0")
    with pytest.raises(ConfigError, match="add_task.mode"):
        _config(tiny_checkpoint, "add_task.mode=edge")
    with pytest.raises(ConfigError, match="ewc_modules"):
        _config(tiny_checkpoint, "add_task.ewc_modules=[stem]")


def test_head_warm_up_trains_the_added_heads_only(tiny_checkpoint: Path) -> None:
    base, _ = load_model(tiny_checkpoint, stage="stage2")
    model = extend_model(base, [4], "full")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    objective = AddedTasksObjective(model.server.decoders[3:], model.server.tails[3:])
    opt = torch.optim.SGD([p for g in objective.param_groups(0.1, 0.0) for p in g["params"]], lr=0.1)
    model.eval()
    with torch.no_grad():
        y_hat, _ = model.client(torch.randn(8, 3, 32, 32))
    loss, logs = objective(y_hat, torch.randint(0, 4, (8, 1)), torch.ones(8, 1))
    loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("server.decoders.3.", "server.tails.3.")) for n in changed), changed
    assert set(logs) == {"ce"}
