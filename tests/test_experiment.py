"""The ensemble experiment: verdict statistics, published-number mapping, a real tiny run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ensembles.experiment import _published, verdicts
from ensembles.results import ExperimentResult, ResultsSchemaError
from robustness.cli import main
from robustness.core.stats import sign_test
from robustness.data import Dataset


def test_sign_test_matches_the_binomial_distribution() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 5) == 1.0
    assert sign_test(10, 0) == pytest.approx(2 / 1024)  # two-sided, 2 * 0.5**10
    assert sign_test(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test(2, 8) == sign_test(8, 2)


def _outcome(bits: str) -> torch.Tensor:
    return torch.tensor([b == "1" for b in bits])


def test_verdicts_pool_paired_outcomes_and_need_significance() -> None:
    # Max right where mean is wrong on 12 images, never the reverse: significant.
    strong = {("uniform", 5, False, "max", "transfer"): _outcome("1" * 12 + "0" * 8),
              ("uniform", 5, False, "mean", "transfer"): _outcome("0" * 20)}
    v = verdicts(strong)["transfer"]
    assert v["answer"] == "yes" and v["max_beats_mean"] is True
    assert (v["max_right_mean_wrong"], v["mean_right_max_wrong"], v["pairs"]) == (12, 0, 20)
    assert "max beats mean? yes" in v["line"]
    # A one-image edge is not evidence.
    weak = {("uniform", 5, False, "max", "adaptive"): _outcome("1000"),
            ("uniform", 5, False, "mean", "adaptive"): _outcome("0000")}
    assert verdicts(weak)["adaptive"]["answer"] == "no detectable difference"
    reverse = {("bootstrap", 5, False, "max", "genetic"): _outcome("0" * 12),
               ("bootstrap", 5, False, "mean", "genetic"): _outcome("1" * 12)}
    assert verdicts(reverse)["genetic"]["answer"] == "no, mean beats max"
    assert verdicts(reverse)["transfer"]["answer"] == "not measured"


def test_published_numbers_sit_beside_the_matching_rows() -> None:
    assert _published("uniform", 5, "max", False) == 0.27
    assert _published("bootstrap", 25, "max", False) == 0.45
    assert _published("subsample", 50, "max", False) == 0.57  # what the original code ran
    assert _published("subsample", 50, "max", True) == 0.55
    assert _published("bootstrap", 50, "mean", False) == 0.24
    assert _published("uniform", 50, "vote", False) is None
    assert _published("uniform", 10, "max", False) is None


TINY = ["experiment", "ensembles", "--members", "1,2", "--samplings",
        "uniform,bootstrap", "--n", "60", "--n-adaptive", "20", "--n-genetic", "10",
        "--generations", "5", "--pgd-steps", "5", "--epochs", "1", "--precision", "fp32"]


@pytest.fixture(scope="module")
def small_mnist(mnist: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 training and 200 test images of `mnist` as an `.npz` dataset: the six models of
    a tiny run train in a quarter of the time, through the same code as `--data mnist`."""
    path = tmp_path_factory.mktemp("small-mnist") / "mnist-1000.npz"
    np.savez(path, x=mnist.x_train[:1000].numpy(), y=mnist.y_train[:1000].numpy(),
             x_test=mnist.x_test[:200].numpy(), y_test=mnist.y_test[:200].numpy())
    return path


def _tiny_run(out: Path, data: Path) -> dict[str, Any]:
    assert main([*TINY, "--data", str(data), "--out", str(out)]) == 0
    result: dict[str, Any] = json.loads((out / "results.json").read_text())
    return result


def test_the_original_recipe_is_the_original_codes() -> None:
    from ensembles.experiment import ExperimentConfig

    original = ExperimentConfig(recipe="original")
    assert original.single_model_training("baseline") == {
        "optimizer": "adadelta", "lr": 0.1, "epochs": 14, "label_smoothing": 0.1}
    assert original.single_model_training("adversarially_trained")["label_smoothing"] == 0.0
    assert ExperimentConfig().single_model_training("baseline")["optimizer"] == "adam"
    from robustness.core.validation import ParameterError

    with pytest.raises(ParameterError, match="'recipe' parameter of experiment ensembles"):
        ExperimentConfig(recipe="cleverhans")


def test_a_tiny_experiment_runs_end_to_end(tmp_path: Path, small_mnist: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main([*TINY, "--data", str(small_mnist), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    rows = result["ensembles"]
    # 2 samplings x (N=1, N=2, N=2 + baseline) x 3 aggregations.
    assert len(rows) == 18
    assert {r["aggregation"] for r in rows} == {"mean", "max", "vote"}
    for r in rows:
        for key in ("clean", "transfer", "adaptive"):  # every accuracy with its 95% CI
            low, high = r[f"{key}_ci"]
            assert 0.0 <= low <= r[key] <= high <= 1.0
        # Robust accuracy counts a sample only if it is also classified correctly.
        assert r["transfer"] <= r["clean"]
        # The adaptive number is the per-sample worst case over its two attacks, and
        # white-box PGD at eps 0.3 breaks undefended one-epoch ConvNets and their ensembles.
        assert set(r["adaptive_by_attack"]) == {"pgd(steps=5)", "adaptive-pgd(steps=5)"}
        assert r["adaptive"] < 0.5 and min(r["adaptive_by_attack"].values()) < 0.5
        assert (r["genetic"] is None) == (r["n_members"] != 2)  # genetic: largest N only
    # A one-member ensemble is its member, whatever the aggregation.
    for sampling in ("uniform", "bootstrap"):
        ones = [r for r in rows if r["sampling"] == sampling and r["n_members"] == 1]
        member = next(m for m in result["members"]
                      if m["sampling"] == sampling and m["n_members"] == 1)
        assert len(ones) == 3
        for r in ones:
            assert r["transfer"] == pytest.approx(member["mean_member_transfer"])
        # Every member's own accuracies are stored (the spread the report draws), and the
        # summaries agree with them: the first N members make the N-member ensemble.
        both = next(m for m in result["members"]
                    if m["sampling"] == sampling and m["n_members"] == 2)
        assert len(both["member_transfer"]) == len(both["member_clean"]) == 2
        assert both["member_transfer"][:1] == member["member_transfer"]
        assert both["best_member_transfer"] == max(both["member_transfer"])
        assert both["mean_member_clean"] == pytest.approx(sum(both["member_clean"]) / 2)
    assert set(result["verdicts"]) == {"transfer", "adaptive", "genetic"}
    # Like for like (issue 11.7): the FGSM-trained model's own FGSM number is measured at
    # the training eps, where the published 0.71 was; every difference is listed.
    adv = result["single_models"]["adversarially_trained"]
    assert adv["eps"]["fgsm_own"] == result["config"]["train_eps"] == 0.3
    assert result["published"]["eps"]["adv_own_fgsm"] == 0.3
    aspects = {d["aspect"]: d["here"] for d in result["published"]["differences"]}
    assert set(aspects) == {"data", "training recipe", "budgets", "attacks", "ensembles"}
    assert "1,000 training / 200 test" in aspects["data"] and "idx:DIR" in aspects["data"]
    md = (out / "results.md").read_text()
    assert "a re-measurement, not a reproduction" in md and "| published eps |" in md
    loaded = ExperimentResult.load(out)  # validates against the JSON schema
    assert loaded.to_dict() == result
    for model in loaded.single_models.values():
        for key, value in model.items():
            if not key.endswith("_ci") and key != "eps":  # eps: the budget of each measure
                assert model[f"{key}_ci"][0] <= value <= model[f"{key}_ci"][1]
    assert result["single_models"]["baseline"]["clean"] > 0.5
    markdown = (out / "results.md").read_text()
    assert markdown.count("max beats mean?") == 3 and "| published |" in markdown
    assert "max beats mean?" in printed
    assert (out / "baseline_adversarials.safetensors").exists()
    # The run's own page (issue 13): verdicts first, the accuracy-vs-N figure embedded.
    page = (out / "report.html").read_text()
    assert "max beats mean?" in page.split('id="runs"')[0]
    assert 'alt="accuracy against the number of ensemble members' in page
    # Its members evaluate like any model: the directory is a --model.
    member_dir = out / "members" / "uniform"
    assert main(["evaluate", "--model", str(member_dir), "--aggregation", "max", "--data",
                 str(small_mnist), "--attacks", "fgsm", "--eps", "0.1", "--n",
                 "20", "--no-checks", "--out", str(tmp_path / "ens-eval")]) == 0
    # A fresh directory: everything was trained in this run, nothing reused.
    assert result["resumed"] == {"baseline": False, "adversarially_trained": False,
                                 "members": {"uniform": [False, False],
                                             "bootstrap": [False, False]}}


@pytest.mark.slow
def test_a_second_run_reuses_every_model_and_gives_the_same_numbers(tmp_path: Path,
                                                                    small_mnist: Path) -> None:
    first = _tiny_run(tmp_path / "run", small_mnist)
    again = _tiny_run(tmp_path / "run", small_mnist)
    assert again["resumed"] == {"baseline": True, "adversarially_trained": True,
                                "members": {"uniform": [True, True], "bootstrap": [True, True]}}
    assert [r["transfer"] for r in again["ensembles"]] == \
        [r["transfer"] for r in first["ensembles"]]


@pytest.mark.parametrize(("extra", "message"), [
    (["--members", "0"], "argument --members: expected ensemble sizes >= 1"),
    (["--samplings", "bagging"], "argument --samplings: expected a comma-separated subset"),
    (["--eps", "0"], "argument --eps: expected a number in (0, 1]"),
    (["--members", "5", "--genetic-members", "7"],
     "The '--genetic-members' parameter of robustness experiment ensembles must be sizes "
     "among members"),
    (["--data", "digits"], "ConvNet must have H, W >= 27"),
])
def test_bad_experiment_arguments_exit_2_without_writing(
        extra: list[str], message: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "X"
    with pytest.raises(SystemExit) as info:
        sys.exit(main(["experiment", "ensembles", "--out", str(out), *extra]))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_experiment_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["experiment", "ensembles", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--members", "--quick", "--out", "--eps", "--genetic-members", "--samplings"):
        assert flag in text
    for line in text.split("options:")[1].split("\n  -")[1:]:
        assert len(line.split()) > 2, f"option without help text: {line!r}"


def test_results_that_break_the_schema_are_refused() -> None:
    with pytest.raises(ResultsSchemaError, match=r"results\.json is not a valid"):
        ExperimentResult.from_dict({"schema_version": 1, "experiment": "ensembles"})


def test_an_experiment_on_worker_processes_gives_the_numbers_of_a_local_run(
        tmp_path: Path, small_mnist: Path, one_thread: None) -> None:
    def numbers(result: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in result.items()
                if k not in ("timings_s", "seconds", "backend", "versions")}

    # One torch thread here (the single models are trained and attacked by the driver) and
    # in each worker: the condition for bit-identical numbers.
    local = _tiny_run(tmp_path / "local", small_mnist)
    assert main([*TINY, "--data", str(small_mnist), "--out", str(tmp_path / "workers"),
                 "--backend", "processes", "--workers", "2"]) == 0
    workers = json.loads((tmp_path / "workers" / "results.json").read_text())
    assert numbers(workers) == numbers(local)
    assert workers["backend"] == {"backend": "processes", "workers": 2,
                                  "threads_per_worker": 1}
    # Where the time went: the attack phase's wall time, and each plan's task seconds.
    assert set(workers["timings_s"]) == {
        "baseline", "adversarially_trained", "train_uniform", "train_bootstrap",
        "evaluate", "evaluate_uniform", "evaluate_bootstrap"}
