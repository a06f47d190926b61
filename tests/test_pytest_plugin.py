"""The pytest plugin, run as a user runs it: pytest on the example project.

The model is the session's trained ConvNet saved once as a checkpoint (the inner runs
never train). Every run on the example project is made twice: in this process in the
default suite (torch, the data and the attacks are loaded already, so a run costs its
evaluation only), and in a fresh interpreter, exactly as a user's CI runs it, in the slow
suite (``nox -s e2e``). Checks that need a fresh interpreter (``--help``, an inert plugin,
usage errors) always get one.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from torch import nn

from robustness.checkpoint import CheckpointMeta, save_checkpoint
from robustness.data import Dataset

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ci-gate"
N = "60"  # images per inner gate: a trained model's figures are clear, runs stay quick
GATE_TEST = "test_robustness.py::test_convnet_resists_small_linf_perturbations"
RunPytest = Callable[..., pytest.RunResult]


@pytest.fixture(scope="session")
def checkpoint(trained_convnet: nn.Module, mnist: Dataset,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's trained ConvNet saved as a checkpoint, as `robustness train` would."""
    path = tmp_path_factory.mktemp("plugin-model") / "model.safetensors"
    return save_checkpoint(trained_convnet, path, CheckpointMeta(
        architecture="convnet", input_shape=mnist.input_shape, num_classes=mnist.num_classes,
        classes=mnist.classes, dataset="mnist", seed=0))


@pytest.fixture
def example(pytester: pytest.Pytester, checkpoint: Path) -> pytest.Pytester:
    """examples/ci-gate copied into the pytester directory, with the trained model in place."""
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True)
    (pytester.path / "model").mkdir()
    shutil.copy(checkpoint, pytester.path / "model" / "model.safetensors")
    return pytester


@pytest.fixture(scope="session")
def loaded(checkpoint: Path) -> None:
    """Import here everything a gate run imports, by running a tiny gate.

    An in-process pytest run unloads, when it ends, the modules first imported during it
    (the evaluation engine, the attacks, ...); importing them again would make new classes,
    and objects made earlier in this session would no longer be instances of them.
    """
    from robustness.gates import Gate, Threshold, results_document

    result = Gate(name="warm-up", thresholds=(Threshold(robust_accuracy=0.0, eps=0.1),),
                  model=checkpoint, n=20).run()
    assert result.status == "passed", result.explain()
    result.verdicts[0].explain()
    results_document([result])


@pytest.fixture(params=[pytest.param("inprocess"),
                        pytest.param("subprocess", marks=pytest.mark.slow)])
def runpytest(request: pytest.FixtureRequest, example: pytest.Pytester) -> RunPytest:
    """pytest on the example project: in this process (default suite) or a fresh one (slow)."""
    if request.param == "subprocess":
        return example.runpytest_subprocess
    request.getfixturevalue("loaded")
    return example.runpytest_inprocess


def test_help_lists_the_robustness_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["robustness gates (robustness_gate fixture, "
                                 "@pytest.mark.robustness):"])
    for option in ("--robustness-budget=*", "--robustness-n=N", "--robustness-seed=SEED",
                   "--robustness-rule=*", "--robustness-json=PATH", "--robustness-baseline=PATH",
                   "--robustness-update-baseline", "--robustness-max-drop=DROP",
                   "--robustness-skip", "--robustness-only", "--robustness-backend=*",
                   "--robustness-ray-address=ADDRESS", "--robustness-ray-cpus-per-task=N"):
        result.stdout.fnmatch_lines([f"  {option}*"])


def test_plugin_is_inert_in_a_suite_without_gates(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import sys

        def test_plain():
            # the plugin is loaded (entry point) but has imported nothing heavy
            assert "robustness.gates.pytest_plugin" in sys.modules
            assert "torch" not in sys.modules
        """)
    result = pytester.runpytest_subprocess("--strict-markers")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*robustness gates*")


def test_example_gate_passes_and_lists_its_figures(example: pytest.Pytester,
                                                   runpytest: RunPytest) -> None:
    example.makepyfile(test_other="def test_not_a_gate():\n    pass\n")
    result = runpytest("--robustness-n", N, "--robustness-json", "out.json",
                       "--robustness-only")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines([
        "*= robustness gates =*",
        f"PASSED    {GATE_TEST}  worst case @ eps 0.1: * [[]*, *]: upper * >= 0.450 "
        f"(n={N}, resolution +-*, clean *, * s)",
        "json: out.json",
    ])
    doc = json.loads((example.path / "out.json").read_text())
    assert doc["format"] == "robustness-gates" and doc["passed"] is True
    (gate,) = doc["gates"]
    assert gate["name"] == GATE_TEST and gate["status"] == "passed" and gate["n"] == int(N)
    assert gate["setup"]["attacks"] == ["fgsm", "pgd(steps=10)"]
    assert gate["verdicts"][0]["rule"] == "upper"
    assert gate["verdicts"][0]["figure"]["attack"] == "worst case"


def test_failing_gates_explain_themselves(example: pytest.Pytester,
                                          runpytest: RunPytest) -> None:
    example.makepyfile(test_strict="""
        import pytest
        from robustness.gates import Threshold

        pytestmark = pytest.mark.robustness(model="model/model.safetensors")

        @pytest.mark.robustness(eps=0.1, robust_accuracy=0.99)
        def test_gate_too_strict(robustness_gate):
            robustness_gate.check()

        @pytest.mark.robustness(eps=0.1, robust_accuracy=0.2, rule="point")
        def test_extra_assertion(robustness_gate):
            report = robustness_gate.check()
            assert report >= Threshold(robust_accuracy=0.97, eps=0.1, attack="fgsm")
        """)
    # -vv: pytest truncates long assertion explanations locally (never on CI)
    result = runpytest("test_strict.py", "-vv", "--robustness-n", N)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "E*GateFailure: Robustness gate 'test_strict.py::test_gate_too_strict' FAILED: "
        "threshold robust_accuracy >= 0.990 at eps 0.1 (worst case)",
        "E*threshold robust_accuracy >= 0.990 failed by *: 95% CI upper bound * < 0.990",
        f"E*measured: robust accuracy *, 95% CI [[]*, *] at eps 0.1 (worst case over fgsm, "
        f"pgd(steps=10)); n = {N}; clean accuracy *",
        "E*rule 'upper': fail only when even the upper bound of the 95% Wilson CI is below "
        "the threshold",
        "E*worst attack at eps 0.1: pgd(steps=10) (robust accuracy *",
        "E*| attack *| threat model | * | robust acc | 95% CI *",
        "E*| fgsm *| white-box *",
        "E*| pgd(steps=10) *| white-box *",
        "E*| worst case *| all *",
    ])
    result.stdout.fnmatch_lines([
        "E*assert report >= Threshold(robust_accuracy=0.97, eps=0.1, attack='fgsm', "
        "max_drop=None, rule='upper', norm=None)",
        "E*Robustness threshold FAILED: robust_accuracy >= 0.970 at eps 0.1 (fgsm)",
        "E*threshold robust_accuracy >= 0.970 failed by *: 95% CI upper bound * < 0.970",
        f"E*n = {N}*",
        "E*| worst case *",
    ])
    result.stdout.fnmatch_lines([
        "*= robustness gates =*",
        "FAILED    test_strict.py::test_gate_too_strict  worst case @ eps 0.1: *: upper * < "
        "0.990, failed by *",
        "PASSED    test_strict.py::test_extra_assertion  worst case @ eps 0.1: *: point * >= "
        "0.200*",
    ])


@pytest.mark.parametrize(("marker", "message"), [
    ("eps=0.1, robust_acc=0.5",
     "ERROR: @pytest.mark.robustness on test_bad.py::test_gate got an unknown key "
     "'robust_acc' (did you mean 'robust_accuracy'?)*"),
    ("eps=0.1, robust_accuracy=1.5",
     "ERROR: The 'robust_accuracy' parameter of @pytest.mark.robustness on "
     "test_bad.py::test_gate must be a finite float in the range [[]0, 1]. Got 1.5 instead."),
])
def test_bad_marker_argument_is_a_usage_error(pytester: pytest.Pytester, marker: str,
                                              message: str) -> None:
    pytester.makepyfile(test_bad=f"""
        import pytest

        @pytest.mark.robustness({marker})
        def test_gate(robustness_gate):
            robustness_gate.check()
        """)
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_skip_option_skips_gates_only(example: pytest.Pytester, runpytest: RunPytest) -> None:
    example.makepyfile(test_other="def test_not_a_gate():\n    pass\n")
    result = runpytest("--robustness-skip", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * robustness gates skipped (--robustness-skip)"])
    result.stdout.no_fnmatch_line("*= robustness gates =*")


@pytest.mark.parametrize(("source", "args", "message"), [
    ("import pytest\n\n@pytest.mark.robustness(eps=0.1, robust_accuracy=0.5)\n"
     "def test_gate():\n    pass\n", (),
     "ERROR: test_usage.py::test_gate has @pytest.mark.robustness but does not request the "
     "robustness_gate fixture that runs the gate*"),
    ("def test_gate(robustness_gate):\n    pass\n", (),
     "ERROR: test_usage.py::test_gate uses the robustness_gate fixture but declares no gate*"),
    ("def test_plain():\n    pass\n", ("--robustness-update-baseline",),
     "ERROR: --robustness-update-baseline needs --robustness-baseline PATH*"),
    ("def test_plain():\n    pass\n", ("--robustness-skip", "--robustness-only"),
     "ERROR: --robustness-skip and --robustness-only exclude each other."),
    ("def test_plain():\n    pass\n", ("--robustness-ray-cpus-per-task", "2"),
     "ERROR: The '--robustness-ray-cpus-per-task' parameter of pytest must be given only "
     "with --robustness-backend ray. Got 2 instead."),
])
def test_misuse_is_a_usage_error(pytester: pytest.Pytester, source: str, args: tuple[str, ...],
                                 message: str) -> None:
    pytester.makepyfile(test_usage=source)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_backend_ray_without_ray_is_one_usage_line_saying_how_to_install_it(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import sys\nsys.modules['ray'] = None  # as without the extra\n")
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("--robustness-backend", "ray")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --robustness-backend ray needs Ray, which is not "
                                 "installed: pip install 'robustness-harness[[]ray[]]'*"])


def test_config_errors_are_not_robustness_failures(example: pytest.Pytester,
                                                   runpytest: RunPytest) -> None:
    example.makepyfile(test_config="""
        import pytest
        from robustness.models import build_model

        @pytest.mark.robustness(model="nowhere/model.safetensors", eps=0.1,
                                robust_accuracy=0.5)
        def test_missing_checkpoint(robustness_gate):
            robustness_gate.check()

        @pytest.mark.robustness(model="model/model.safetensors", data="digits", eps=0.1,
                                robust_accuracy=0.5)
        def test_wrong_data(robustness_gate):
            robustness_gate.check()

        @pytest.mark.robustness(data="mnist", eps=0.1, robust_accuracy=0.5)
        def test_untrained(robustness_gate):
            robustness_gate.check(build_model("convnet", (1, 28, 28), 10, seed=0))

        @pytest.mark.robustness(model="model/model.safetensors", eps=0.1, robust_accuracy=0.5)
        def test_forgot_to_check(robustness_gate):
            pass
        """)
    result = runpytest("test_config.py", "--robustness-n", "300")
    # test_forgot_to_check passes its call and errors at teardown
    result.assert_outcomes(errors=3, failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_forgot_to_check*",
        "test_config.py::test_forgot_to_check declares the robustness gate "
        "'test_config.py::test_forgot_to_check' but never called robustness_gate.check(): the "
        "gate did not run.",
    ])
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_missing_checkpoint*",
        "E*GateConfigError: Robustness gate 'test_config.py::test_missing_checkpoint' is "
        "misconfigured: the model is not a usable trained checkpoint: No checkpoint at *",
    ])
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_wrong_data*",
        "E*GateConfigError: *the data does not match the model: its images have shape "
        "(1, 8, 8) but the checkpoint expects (1, 28, 28)*",
    ])
    result.stdout.fnmatch_lines([
        "E*GateConfigError: Robustness gate 'test_config.py::test_untrained' is "
        "misconfigured: the model looks untrained: clean accuracy *",
    ])
    result.stdout.no_fnmatch_line("*GateFailure*")
    result.stdout.fnmatch_lines(["*= robustness gates =*", "ERROR     *configuration error*"])


def test_baseline_regressions_are_collected_and_fail_the_session(
        example: pytest.Pytester, runpytest: RunPytest) -> None:
    example.makepyfile(test_small_eps="""
        import pytest

        @pytest.mark.robustness(name="convnet-eps-0.05", model="model/model.safetensors",
                                eps=0.05)
        def test_small_eps(robustness_gate):
            robustness_gate.check()
        """)
    args = ("--robustness-n", N, "--robustness-baseline", "baseline.json")
    record = runpytest(*args, "--robustness-update-baseline")
    record.assert_outcomes(passed=2)
    record.stdout.fnmatch_lines(["baseline: recorded 2 gate(s) in baseline.json"])

    # Both models "used to be" more robust: raise every stored figure.
    path = example.path / "baseline.json"
    doc = json.loads(path.read_text())
    assert set(doc["gates"]) == {GATE_TEST, "convnet-eps-0.05"}
    for entry in doc["gates"].values():
        for fig in entry["figures"]:
            fig["robust_accuracy"] = min(1.0, fig["robust_accuracy"] + 0.3)
    path.write_text(json.dumps(doc))

    result = runpytest(*args, "--robustness-json", "out.json")
    result.assert_outcomes(passed=2)  # every threshold holds; the drops fail the session
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*= robustness gates =*",
        f"REGRESSED {GATE_TEST}  worst case @ eps 0.1: *; REGRESSED worst case @ eps 0.1: * "
        f"-> * (max_drop 0.050)*",
        "baseline: baseline.json: 2 of 2 gate(s) compared",
        "*= RobustnessRegression =*",
        "2 robustness regression(s) against the baseline baseline.json:",
        f"  - {GATE_TEST}: worst case robust accuracy at linf eps 0.1 dropped from * (baseline) "
        f"to *; drop * exceeds max_drop 0.050, by point estimates * (rule 'upper')",
        "  - convnet-eps-0.05: worst case robust accuracy at linf eps 0.05 dropped from * "
        "exceeds max_drop 0.000, * (rule 'upper')",
    ])
    doc = json.loads((example.path / "out.json").read_text())
    assert doc["passed"] is False and len(doc["regressions"]) == 2
