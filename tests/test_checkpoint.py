"""Tests of the checkpoint files: round trip (tied weights, buffers, RNG states), atomic writes,
detection of truncated/corrupt files, fall-back to the previous checkpoint, and pruning."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from pseudovideo.checkpoint import (
    CheckpointError,
    checkpoint_name,
    find_latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)


class TiedNet(nn.Module):
    """Embedding and output layer sharing one weight, plus a buffer (like a VQ codebook)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.out = nn.Linear(3, 5, bias=False)
        self.out.weight = self.embed.weight  # tied
        self.register_buffer("codebook", torch.randn(4, 3))


def _state() -> dict:
    optimizer = torch.optim.AdamW(nn.Linear(2, 2).parameters(), lr=1e-3, betas=(0.9, 0.99))
    np_state = np.random.get_state()
    return {
        "optimizer": optimizer.state_dict(),
        "rng": [{"torch_cpu": torch.get_rng_state(), "python": random.getstate(),
                 "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)), "cuda": None}],
        "world_size": 1,
    }


def _save(root, step, net=None, **kwargs):
    return save_checkpoint(root, step, model=net or TiedNet(), state=_state(), **kwargs)


def test_round_trip_restores_tied_weights_buffers_and_state(tmp_path):
    torch.manual_seed(0)
    net, ema = TiedNet(), TiedNet()
    saved_state = _state()
    path = save_checkpoint(tmp_path, 12, model=net, ema=ema, state=saved_state, config_dict={"train": {"steps": 3}})
    assert path == tmp_path / "step_0000012"
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.safetensors", "ema.safetensors", "state.pt", "config.yaml"}
    assert manifest["files"]["state.pt"]["bytes"] == (path / "state.pt").stat().st_size

    net2, ema2 = TiedNet(), TiedNet()
    state = load_checkpoint(path, model=net2, ema=ema2)
    for a, b in ((net, net2), (ema, ema2)):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key
    assert net2.out.weight is net2.embed.weight  # still tied after loading
    assert state["step"] == 12 and state["world_size"] == 1
    assert torch.equal(state["rng"][0]["torch_cpu"], saved_state["rng"][0]["torch_cpu"])
    assert torch.equal(state["rng"][0]["numpy_keys"], saved_state["rng"][0]["numpy_keys"])
    assert state["rng"][0]["python"] == saved_state["rng"][0]["python"]
    random.setstate(state["rng"][0]["python"])  # loads back as a valid Python RNG state
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.99)


def test_interrupted_write_leaves_no_partial_folder(tmp_path):
    _save(tmp_path, 1)
    bad_state = {"optimizer": {}, "unpicklable": lambda: None}  # torch.save fails after the weights are written
    with pytest.raises(Exception):
        save_checkpoint(tmp_path, 2, model=TiedNet(), state=bad_state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000001"]
    assert find_latest_checkpoint(tmp_path) == tmp_path / "step_0000001"


def test_stale_temporary_folder_is_ignored_and_pruned(tmp_path):
    _save(tmp_path, 1)
    stale = tmp_path / ".tmp_step_0000002_999999999"  # what a killed writer leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    _save(tmp_path, 2, keep_last=5)
    assert not stale.exists()


@pytest.mark.parametrize(
    "damage, name, words",
    [
        ("truncate", "state.pt", "truncated"),
        ("flip", "model.safetensors", "corrupt"),
        ("delete", "model.safetensors", "missing"),
        ("delete", "manifest.json", "incomplete"),
        ("garble", "manifest.json", "corrupt"),
        ("empty-entry", "manifest.json", "corrupt"),
    ],
)
def test_damaged_checkpoint_raises_checkpoint_error_naming_the_file(tmp_path, damage, name, words):
    path = _save(tmp_path, 3)
    target = path / name
    data = target.read_bytes()
    if damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        target.write_bytes(data[:-5] + bytes([data[-5] ^ 0x01]) + data[-4:])
    elif damage == "delete":
        target.unlink()
    elif damage == "empty-entry":
        target.write_text('{"files": {"model.safetensors": {}}}')
    else:
        target.write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{name}.*{words}|{words}.*{name}") as info:
        load_checkpoint(path, model=TiedNet())
    assert str(target) in str(info.value)


def test_latest_falls_back_to_previous_intact_checkpoint_with_a_warning(tmp_path):
    _save(tmp_path, 1)
    _save(tmp_path, 2)
    newest = _save(tmp_path, 3)
    state = (newest / "state.pt").read_bytes()
    (newest / "state.pt").write_bytes(state[:10])
    with pytest.warns(UserWarning, match="step_0000003"):
        assert find_latest_checkpoint(tmp_path) == tmp_path / "step_0000002"
    assert resolve_checkpoint(tmp_path.parent / "x", tmp_path / "step_0000001") == tmp_path / "step_0000001"

    for _, path in list_checkpoints(tmp_path):
        (path / "manifest.json").unlink()
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="no intact checkpoint"):
        find_latest_checkpoint(tmp_path)
    assert find_latest_checkpoint(tmp_path / "empty") is None


def test_saving_a_step_again_replaces_it_and_keep_last_prunes_oldest(tmp_path):
    torch.manual_seed(1)
    first, second = TiedNet(), TiedNet()
    _save(tmp_path, 5, first)
    _save(tmp_path, 5, second)
    loaded = TiedNet()
    load_checkpoint(tmp_path / "step_0000005", model=loaded)
    assert torch.equal(loaded.embed.weight, second.embed.weight)
    for step in (6, 7, 8):
        _save(tmp_path, step, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [7, 8]
    assert prune_checkpoints(tmp_path, 1) == [tmp_path / "step_0000007"]
    with pytest.raises(ValueError, match="keep_last"):
        prune_checkpoints(tmp_path, 0)


def test_wrong_architecture_and_missing_checkpoint_are_clear_errors(tmp_path):
    path = _save(tmp_path / "checkpoints", 1)  # tmp_path is the run folder
    with pytest.raises(CheckpointError, match="does not fit the"):
        load_checkpoint(path, model=nn.Linear(3, 5))
    with pytest.raises(CheckpointError, match="ema.safetensors"):
        load_checkpoint(path, ema=TiedNet())  # saved without an EMA
    with pytest.raises(FileNotFoundError, match="step_0000009.*step_0000001"):
        resolve_checkpoint(tmp_path, 9)
    assert resolve_checkpoint(tmp_path, 1) == resolve_checkpoint(tmp_path, checkpoint_name(1)) == path
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_checkpoint(tmp_path / "nothing")
    verify_checkpoint(path)
