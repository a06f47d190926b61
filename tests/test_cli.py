"""The `robustness` command: help for every option, clear errors for bad arguments, real runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from ensembles.sampling import PLANS
from robustness.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from robustness.cli import main
from robustness.cli.experiment import SAMPLING_NAMES
from robustness.data import Dataset, load_dataset


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robustness.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_help_lists_every_command() -> None:
    result = run("--help")
    assert result.returncode == 0
    commands = result.stdout.split("COMMAND\n")[1].split("options:")[0]
    names = [line.split()[0] for line in commands.splitlines() if line.startswith("    ")
             and not line.startswith("     ")]
    assert names == ["train", "demo", "attack", "evaluate", "fool", "list-attacks", "gate",
                     "experiment", "report", "tsne", "dadc", "collect", "bench"]


def test_parsing_every_command_does_not_import_torch() -> None:
    # `robustness --help` and usage errors answer at once: torch loads only when a command runs.
    code = ("import sys; from robustness.cli import build_parser; p = build_parser(); "
            "p.format_help(); "
            "p.parse_args(['experiment', 'ensembles', '--out', 'X', '--members', '2,5', "
            "'--samplings', 'uniform,bootstrap', '--eps', '0.1']); "
            "p.parse_args(['evaluate', '--model', 'M', '--data', 'mnist', '--attacks', 'fgsm', "
            "'--eps', '0.1,0.2', '--out', 'X']); "
            "p.parse_args(['fool', '--model', 'M', '--classes', '0,7', '--out', 'X']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr


def test_sampling_names_agree_with_the_sampling_plans() -> None:
    assert SAMPLING_NAMES == PLANS


@pytest.mark.parametrize("command", ["train", "demo", "attack", "evaluate", "fool"])
def test_help_explains_every_option(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    parser_actions = [line for line in result.stdout.splitlines() if line.strip().startswith("--")]
    assert parser_actions, result.stdout
    for line in result.stdout.split("options:")[1].split("\n  -")[1:]:
        # every option line carries a description after its flags
        assert len(line.split()) > 2, f"option without help text: {line!r}"


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--data", "mnist", "--epochs", "0", "--out", "X"],
     "argument --epochs: expected a positive integer; got 0"),
    (["train", "--data", "mnist", "--epochs", "two", "--out", "X"],
     "argument --epochs: expected a positive integer; got 'two'"),
    (["train", "--data", "mnist", "--model", "resnet", "--out", "X"],
     "argument --model: invalid choice: 'resnet'"),
    (["train", "--data", "mnist"], "the following arguments are required: --out"),
    (["train", "--data", "imagenet", "--out", "X"],
     "The 'name' parameter of load_dataset must be one of 'mnist'"),
    (["train", "--data", "digits", "--model", "convnet", "--out", "X"],
     "ConvNet must have H, W >= 27"),
    (["train", "--data", "fashion-mnist", "--data-root", "/nonexistent", "--out", "X"],
     "apt-get install dataset-fashion-mnist"),
    (["train", "--data", "mnist", "--lr", "-1", "--out", "X"],
     "The 'lr' parameter of train must be a finite float in the range (0"),
    (["demo", "--eps", "0.1,abc"], "argument --eps: expected comma-separated numbers"),
    # Errors of the function behind a command name the option typed, not its parameter.
    (["demo", "--eps", "0,0.1", "--out", "X"],
     "argument --eps: expected comma-separated budgets > 0"),
    (["demo", "--eps", "0.5,1.5", "--out", "X"],
     "The '--eps' parameter of robustness demo must be a finite float in the range (0, 1]"),
    (["demo", "--n", "5000", "--epochs", "1", "--out", "X"],
     "The '--n' parameter of robustness demo must be at most 1000"),
    (["fool", "--model", "M", "--classes", "1,x", "--out", "X"],
     "argument --classes: expected comma-separated integers"),
    (["fool", "--model", "/nonexistent.safetensors", "--out", "X"],
     "No checkpoint at /nonexistent.safetensors"),
    (["attack", "--model", "/nonexistent.safetensors", "--data", "mnist", "--attack", "pgd",
      "--eps", "0.3", "--out", "X"], "No checkpoint at /nonexistent.safetensors"),
])
def test_bad_arguments_give_one_clear_line_and_exit_2(
        args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        sys.exit(main(args))
    assert info.value.code == 2
    err = capsys.readouterr().err
    # One line: the error, with no usage block before it, no second error, no log output.
    usage, prefix, error = err.partition(f"robustness {args[0]}: error: ")
    assert prefix and message in error, err
    assert not usage.strip() and len(err.strip().splitlines()) == 1, err  # one line
    assert ": error: " not in error, err
    assert not (tmp_path / "X").exists()  # nothing half-written


def test_train_writes_a_loadable_checkpoint(tmp_path: Path) -> None:
    result = run("train", "--data", "digits", "--model", "mlp", "--epochs", "3",
                 "--out", str(tmp_path / "run"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    _, meta = load_checkpoint(tmp_path / "run")
    report = json.loads((tmp_path / "run" / "train.json").read_text())
    assert meta.dataset == "digits" and meta.architecture == "mlp"
    assert report["test_accuracy"] == pytest.approx(meta.accuracy)
    assert report["test_accuracy"] > 0.8
    assert len(report["history"]["loss"]) == 3


def test_fool_evolves_confident_images_for_a_trained_checkpoint(
        trained_convnet: nn.Module, mnist: Dataset, tmp_path: Path) -> None:
    save_checkpoint(trained_convnet, tmp_path / "model", CheckpointMeta(
        architecture="convnet", input_shape=mnist.input_shape, num_classes=10,
        classes=mnist.classes, dataset="mnist"))
    result = run("fool", "--model", str(tmp_path / "model"), "--classes", "0,7",
                 "--encoding", "lowres", "--target-confidence", "0.99",
                 "--out", str(tmp_path / "fool"))
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "fool" / "fooling.json").read_text())
    assert summary["classes"] == [0, 7] and summary["all_reached"]
    assert min(summary["confidence"]) >= 0.99
    assert (tmp_path / "fool" / "fooling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images = load_file(str(tmp_path / "fool" / "fooling.safetensors"))["images"]
    assert images.shape == (2, *mnist.input_shape)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    # The images really are classified as claimed with that confidence.
    probs = torch.softmax(trained_convnet(images), 1)
    assert probs[0, 0] >= 0.99 and probs[1, 7] >= 0.99


def test_evaluate_cascade_option_writes_cascade_rows(tmp_path: Path) -> None:
    trained = run("train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--seed", "0",
                  "--out", str(tmp_path / "run"), "--no-progress")
    assert trained.returncode == 0, trained.stderr
    result = run("evaluate", "--model", str(tmp_path / "run"), "--data", "digits", "--attacks",
                 "fgsm,pgd(steps=3)", "--eps", "0.1,0.2", "--n", "60", "--cascade",
                 "--out", str(tmp_path / "eval"))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["provenance"]["cascade"] is True
    rows = {(r["attack"], r["eps"]): r for r in report["results"]}
    for eps in (0.1, 0.2):
        assert rows[("fgsm", eps)]["cascade_after"] == []
        pgd = rows[("pgd(steps=3)", eps)]
        assert pgd["cascade_after"] == ["fgsm"]
        # PGD attacked only what FGSM left robust, and its row is the worst case.
        robust_after_fgsm = round(rows[("fgsm", eps)]["robust_accuracy"] * 60)
        assert pgd["n_attacked"] == robust_after_fgsm
        (worst,) = [w for w in report["worst_case"] if w["eps"] == eps]
        assert pgd["robust_samples"] == worst["robust_samples"]
    assert "cascade after fgsm" in (tmp_path / "eval" / "report.md").read_text()
    assert any(f["check"] == "cascade" for f in report["findings"])


def test_evaluate_never_tests_on_the_checkpoints_training_images(tmp_path: Path) -> None:
    """--seed seeds the attacks; the split stays the one the model was trained with."""
    trained = run("train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--seed", "0",
                  "--out", str(tmp_path / "run"), "--no-progress")
    assert trained.returncode == 0, trained.stderr
    for seed, data in (("1", "digits"), ("1", " Digits ")):
        out = tmp_path / f"eval-{seed}-{data.strip()}"
        result = run("evaluate", "--model", str(tmp_path / "run"), "--data", data, "--attacks",
                     "fgsm", "--eps", "0.1", "--n", "20", "--seed", seed, "--no-checks",
                     "--out", str(out))
        assert result.returncode == 0, result.stderr
        report = json.loads((out / "report.json").read_text())
        assert report["provenance"]["dataset"]["split"] == load_dataset("digits", seed=0).split
        assert report["provenance"]["seed"] == 1  # the attacks still use --seed
    # An explicit split seed that would put training images into the test set is refused.
    refused = run("evaluate", "--model", str(tmp_path / "run"), "--data", "digits", "--attacks",
                  "fgsm", "--eps", "0.1", "--n", "20", "--split-seed", "1", "--no-checks",
                  "--out", str(tmp_path / "refused"))
    assert refused.returncode == 2
    assert "'--split-seed' parameter of robustness must be 0, the seed the checkpoint was " \
           "trained with on digits" in refused.stderr
    assert not (tmp_path / "refused").exists()
