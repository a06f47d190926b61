"""``--model`` beyond checkpoints: trained ensemble directories and a user's own architecture
(``pkg.module:factory`` + safetensors weights), in the CLI and in gates."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import save_file

from ensembles.members import train_members
from robustness.cli import main
from robustness.data import Dataset
from robustness.evaluation import evaluate
from robustness.gates import Gate, GateConfigError, Threshold
from robustness.model_source import load_model
from robustness.train import train

FACTORY_MODULE = """
from torch import nn


def small() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def wrong() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))


def not_a_module():
    return 3
"""


@pytest.fixture(scope="module")
def ensemble_dir(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three bootstrapped MLP members on digits' training split (seed 0)."""
    out = tmp_path_factory.mktemp("ens") / "members"
    train_members(digits, 3, plan="bootstrap", architecture="mlp", seed=0, epochs=2,
                  out_dir=out, progress=False)
    return out


@pytest.fixture()
def factory(tmp_path: Path, digits: Dataset, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user module on sys.path and trained plain-safetensors weights for ``small``."""
    (tmp_path / "user_models.py").write_text(textwrap.dedent(FACTORY_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("user_models", None)
    import user_models  # type: ignore[import-not-found]

    model = user_models.small()
    train(model, digits.x_train, digits.y_train, epochs=3, seed=0, progress=False)
    weights = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return weights


def test_an_ensemble_directory_is_evaluated_like_any_model(
        ensemble_dir: Path, digits: Dataset, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_model(ensemble_dir, aggregation="max", members=2)
    assert loaded.kind == "ensemble" and len(loaded.model.members) == 2  # type: ignore[arg-type]
    assert loaded.model.aggregation == "max"
    args = ["evaluate", "--model", str(ensemble_dir), "--data", "digits", "--attacks",
            "fgsm", "--eps", "0.1", "--n", "60", "--no-checks"]
    assert main([*args, "--aggregation", "max", "--out", str(tmp_path / "max")]) == 0
    report = json.loads((tmp_path / "max" / "report.json").read_text())
    assert report["provenance"]["model"]["extra"]["aggregation"] == "max"
    assert report["provenance"]["dataset"]["split"].endswith("seed 0")
    # Same figures as evaluate() on the ensemble built in Python.
    direct = evaluate(load_model(ensemble_dir, aggregation="max").model, digits, ["fgsm"],
                      [0.1], n=60, seed=0, checks=False)
    assert report["worst_case"][0]["robust_accuracy"] == direct.worst(0.1).robust_accuracy
    # The members' training data is checked: another split would test on training images.
    code = main([*args, "--split-seed", "1", "--out", str(tmp_path / "bad")])
    assert code == 2 and "trained on" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_users_own_architecture_with_safetensors_weights(
        factory: Path, digits: Dataset, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_model("user_models:small", weights=factory)
    assert loaded.kind == "factory" and loaded.meta is None
    assert main(["evaluate", "--model", "user_models:small", "--weights", str(factory),
                 "--data", "digits", "--attacks", "fgsm,pgd(steps=5)", "--eps", "0.1",
                 "--n", "60", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().out
    assert "does not record the data it was trained on" in out  # said, not silent
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["provenance"]["model"]["factory"] == "user_models:small"
    assert 0 < report["clean_accuracy"] and report["worst_case"][0]["robust_accuracy"] < \
        report["clean_accuracy"]
    assert main(["tsne", "--model", "user_models:small", "--weights", str(factory), "--data",
                 "digits", "--attack", "fgsm", "--eps", "0.2", "--n", "60", "--out",
                 str(tmp_path / "t")]) == 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--model", "user_models:small"], "'--weights' parameter"),
    (["--model", "user_models:nope", "--weights", "W"], "'nope' is missing"),
    (["--model", "user_models:not_a_module", "--weights", "W"], "returned int"),
    (["--model", "no_such_module_xyz:small", "--weights", "W"], "No module named"),
    (["--model", "user_models:wrong", "--weights", "W"], "weights that fit user_models:wrong"),
    (["--model", "user_models:small", "--weights", "W", "--aggregation", "max"],
     "'--aggregation' parameter"),
])
def test_bad_model_options_are_one_line_exit_2(
        factory: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
        message: str) -> None:
    extra = [str(factory) if a == "W" else a for a in extra]
    code = main(["evaluate", *extra, "--data", "digits", "--attacks", "fgsm", "--eps", "0.1",
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x").exists()


def test_single_checkpoints_refuse_ensemble_options(
        ensemble_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    member = ensemble_dir / "members" / "member-000.safetensors"
    code = main(["evaluate", "--model", str(member), "--aggregation", "vote", "--data", "digits",
                 "--attacks", "fgsm", "--eps", "0.1", "--out", str(tmp_path / "x")])
    assert code == 2 and "is a single model" in capsys.readouterr().err


def test_gates_take_ensemble_directories_and_factories(
        ensemble_dir: Path, factory: Path, tmp_path: Path) -> None:
    gate = Gate(name="ensemble", thresholds=(Threshold(robust_accuracy=0.3, eps=0.05),),
                model=ensemble_dir, data="digits", aggregation="vote", budget="fast", n=100,
                allow_findings=("input-gradients",))
    result = gate.run()
    assert result.report.provenance["model"]["extra"]["aggregation"] == "vote"
    assert result.report.n_samples == 100
    toml = tmp_path / "gates.toml"
    toml.write_text(textwrap.dedent(f"""
        [[gate]]
        name = "mine"
        model = "user_models:small"
        weights = "{factory.name}"
        data = "digits"
        eps = 0.05
        robust_accuracy = 0.3
        n = 100
    """))
    from robustness.gates.config import load_gate_file

    (loaded,) = load_gate_file(toml).gates
    assert loaded.model == "user_models:small" and Path(loaded.weights) == factory
    assert loaded.run().report.provenance["model"]["factory"] == "user_models:small"
    with pytest.raises(GateConfigError, match="weights"):
        Gate(name="no-weights", thresholds=(Threshold(robust_accuracy=0.1, eps=0.1),),
             model="user_models:small", data="digits", n=100).run()
