"""Checkpoints: metadata round trip; truncated, tampered, foreign or mismatched files refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from robustness.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from robustness.models import build_model

META = CheckpointMeta(architecture="lenet", input_shape=(1, 8, 8), num_classes=10,
                      classes=tuple("0123456789"), dataset="digits", seed=3, accuracy=0.97,
                      extra={"epochs": 2})


@pytest.fixture
def saved(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    model = build_model("lenet", (1, 8, 8), 10, seed=3).eval()
    return model, save_checkpoint(model, tmp_path / "run", META)


def test_round_trip_restores_weights_and_metadata(saved: tuple[torch.nn.Module, Path]) -> None:
    model, path = saved
    loaded, meta = load_checkpoint(path)
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert meta.architecture == "lenet" and meta.input_shape == (1, 8, 8)
    assert meta.classes == META.classes and meta.seed == 3 and meta.accuracy == 0.97
    assert meta.extra == {"epochs": 2}
    assert "torch" in meta.versions and "python" in meta.versions
    assert read_meta(path) == meta


def test_directory_path_means_model_safetensors(tmp_path: Path) -> None:
    model = build_model("mlp", (1, 8, 8), 10)
    (tmp_path / "run").mkdir()
    written = save_checkpoint(model, tmp_path / "run", META.__class__(
        architecture="mlp", input_shape=(1, 8, 8), num_classes=10))
    assert written == tmp_path / "run" / "model.safetensors"
    assert load_checkpoint(tmp_path / "run")[1].architecture == "mlp"
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["model.safetensors"]


def test_truncated_file_is_refused(saved: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    data = saved[1].read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(bad)


def test_tampered_weights_fail_the_integrity_check(saved: tuple[torch.nn.Module, Path],
                                                    tmp_path: Path) -> None:
    data = bytearray(saved[1].read_bytes())
    data[-3] ^= 0x01  # flip one bit in the last tensor
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="integrity check"):
        load_checkpoint(bad)


def test_tampered_metadata_fails_the_integrity_check(saved: tuple[torch.nn.Module, Path],
                                                     tmp_path: Path) -> None:
    from safetensors import safe_open

    with safe_open(saved[1], framework="pt") as f:
        header = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["meta"])
    meta["accuracy"] = 0.999
    header["meta"] = json.dumps(meta, sort_keys=True)
    bad = tmp_path / "edited.safetensors"
    save_file(tensors, bad, metadata=header)
    with pytest.raises(CheckpointError, match="integrity check"):
        load_checkpoint(bad)


def test_foreign_safetensors_and_missing_files_are_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a robustness checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    pickle = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickle)
    with pytest.raises(CheckpointError, match="not a readable safetensors checkpoint"):
        load_checkpoint(pickle)


def test_weights_that_do_not_fit_the_model(saved: tuple[torch.nn.Module, Path]) -> None:
    with pytest.raises(CheckpointError, match=r"do not fit the model \(MLP, declared "
                                              r"architecture 'lenet'"):
        load_checkpoint(saved[1], model=build_model("mlp", (1, 8, 8), 10))


def test_custom_module_needs_an_instance(tmp_path: Path) -> None:
    class Custom(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    path = save_checkpoint(Custom(), tmp_path / "c.safetensors",
                           CheckpointMeta("custom:Custom", (1, 8, 8), 10))
    with pytest.raises(CheckpointError, match="pass an instance"):
        load_checkpoint(path)
    _, meta = load_checkpoint(path, model=Custom())
    assert meta.architecture == "custom:Custom"
