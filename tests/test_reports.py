"""Reports: run directories read from files alone, paired comparisons, the HTML page.

Two really trained digits MLPs (one well trained, one barely) are evaluated with real
attacks on the same test samples; the report must pair them per sample, get the sign-test
p-values a hand computation gets, call a model against itself "no difference", and survive
missing or corrupt files without a traceback. The page is opened in a real browser
(Debian's chromium driven by Playwright) when one is installed.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from reports.compare import compare_pair, pairing_problem
from reports.markdown import write_report
from reports.page import build_report, read_runs
from reports.runs import Run, RunReadError, read_run
from robustness.cli import main
from robustness.data import Dataset
from robustness.evaluation import evaluate
from robustness.models import build_model
from robustness.train import train

CHROMIUM = Path("/usr/bin/chromium")
ATTACKS = ["fgsm", "pgd(steps=5)"]
EPS = [0.05, 0.1]


def exact_sign_p(a: int, b: int) -> float:
    """Two-sided exact sign test by hand: 2 * P(X <= min(a, b)), X ~ Bin(a + b, 1/2)."""
    n = a + b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(a, b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


@pytest.fixture(scope="module")
def evaluated(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run directories of two evaluated MLPs (10 epochs and 1 epoch) on the same 150 samples."""
    root = tmp_path_factory.mktemp("runs")
    dirs = {}
    for name, epochs in (("strong", 10), ("weak", 1)):
        model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
        train(model, digits.x_train, digits.y_train, epochs=epochs, seed=0, progress=False)
        report = evaluate(model.eval(), digits, ATTACKS, EPS, n=150, seed=0)
        dirs[name] = root / name
        dirs[name].mkdir()
        write_report(report, dirs[name])
    return dirs


def _copy(run: Path, tmp_path: Path, name: str) -> Path:
    dest = tmp_path / name
    shutil.copytree(run, dest)
    return dest


def test_sign_test_matches_hand_computed_p_values() -> None:
    # Runs built from masks alone: 1 vs 9 discordant samples, and 3 vs 5, among 20.
    def run(title: str, mask: list[bool]) -> Run:
        return Run(kind="evaluate", path=Path(title), title=title, data={},
                   masks={("pgd", 0.1, "linf"): mask})

    a = [True] * 1 + [False] * 9 + [True] * 5 + [False] * 5
    b = [False] * 1 + [True] * 9 + [True] * 5 + [False] * 5
    (row,) = compare_pair(run("a", a), run("b", b))
    assert (row.a_only, row.b_only, row.n) == (1, 9, 20)
    assert row.p_value == pytest.approx(22 / 1024)  # 2 * (C(10,0) + C(10,1)) / 2^10
    assert row.significant and "b is more robust than a" in row.sentence()

    c = [True] * 3 + [False] * 5 + [True] * 12
    d = [False] * 3 + [True] * 5 + [True] * 12
    (row,) = compare_pair(run("c", c), run("d", d))
    assert row.p_value == pytest.approx(186 / 256)  # 2 * (1 + 8 + 28 + 56) / 2^8
    assert not row.significant and "no difference" in row.sentence()


def test_two_models_on_the_same_samples_are_compared_per_sample(
        evaluated: dict[str, Path], tmp_path: Path) -> None:
    doc = build_report([evaluated["strong"], evaluated["weak"]], tmp_path / "out")
    assert not doc["not_paired"], doc["not_paired"]
    # Every attack and the worst case, at every eps.
    assert {(c["attack"], c["eps"]) for c in doc["comparisons"]} == {
        (a, e) for a in ["fgsm", "pgd(steps=5)", "worst case"] for e in EPS}
    strong = read_run(evaluated["strong"])
    weak = read_run(evaluated["weak"])
    for c in doc["comparisons"]:
        key = (c["attack"], c["eps"], c["norm"])
        ma, mb = strong.masks[key], weak.masks[key]
        a_only = sum(x and not y for x, y in zip(ma, mb, strict=True))
        b_only = sum(y and not x for x, y in zip(ma, mb, strict=True))
        assert (c["a_only"], c["b_only"]) == (a_only, b_only)
        assert c["p_value"] == pytest.approx(exact_sign_p(a_only, b_only))
        assert c["significant"] == (c["p_value"] < 0.05 and a_only != b_only)
    # The masks come from samples.safetensors and agree with the report's own bit strings.
    assert strong.report is not None
    assert strong.masks[("worst case", 0.1, "linf")] == strong.report.robust_mask(
        "worst case", 0.1)
    # The verdict names the significant worst-case differences.
    worst = [c for c in doc["comparisons"] if c["attack"] == "worst case" and c["significant"]]
    for c in worst:
        assert any(c["b"] in line and "significantly more robust" in line
                   for line in doc["verdict"]), doc["verdict"]
    for name in ("report.html", "report.md", "report.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == doc


def test_a_model_compared_with_itself_shows_no_difference(
        evaluated: dict[str, Path], tmp_path: Path) -> None:
    twin = _copy(evaluated["strong"], tmp_path, "strong-again")
    doc = build_report([evaluated["strong"], twin], tmp_path / "out")
    assert doc["comparisons"]
    for c in doc["comparisons"]:
        assert (c["a_only"], c["b_only"], c["p_value"], c["significant"]) == (0, 0, 1.0, False)
        assert "no difference" in c["sentence"]
    assert all("no detectable difference" in line for line in doc["verdict"]), doc["verdict"]


def test_a_cascade_run_is_not_paired_with_a_full_one_and_its_rows_say_cascade(
        evaluated: dict[str, Path], digits: Dataset, tmp_path: Path) -> None:
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    train(model, digits.x_train, digits.y_train, epochs=10, seed=0, progress=False)
    cascade = evaluate(model.eval(), digits, ATTACKS, EPS, n=150, seed=0, cascade=True)
    write_report(cascade, tmp_path / "cascade")
    runs = read_runs([evaluated["strong"], tmp_path / "cascade"])
    assert "cascade evaluation" in pairing_problem(*runs)
    doc = build_report([evaluated["strong"], tmp_path / "cascade"], tmp_path / "out")
    assert not doc["comparisons"] and doc["not_paired"]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "pgd(steps=5) (cascade after fgsm)" in html


def test_runs_on_different_samples_are_not_paired_and_say_why(
        evaluated: dict[str, Path], digits: Dataset, tmp_path: Path) -> None:
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    other = evaluate(model.eval(), digits, ATTACKS, EPS, n=100, seed=0)
    write_report(other, tmp_path / "n100")
    runs = read_runs([evaluated["strong"], tmp_path / "n100"])
    assert "different samples (n = 150 vs 100)" in pairing_problem(*runs)
    # Same size, other images: the digest tells them apart.
    x, y = digits.x_test[150:300], digits.y_test[150:300]
    shifted = evaluate(model.eval(), (x, y), ATTACKS, EPS, seed=0)
    write_report(shifted, tmp_path / "shifted")
    runs = read_runs([evaluated["strong"], tmp_path / "shifted"])
    assert "different data" in pairing_problem(*runs) or "samples" in pairing_problem(*runs)
    doc = build_report([evaluated["strong"], tmp_path / "shifted"], tmp_path / "out")
    assert not doc["comparisons"] and doc["not_paired"][0]["reason"]
    assert "not compared per sample" in " ".join(doc["verdict"])


def test_a_report_regenerates_from_the_files_alone(
        evaluated: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a report must not run a model or an attack")

    monkeypatch.setattr(torch.nn.Module, "__call__", forbidden)
    monkeypatch.setattr("robustness.checkpoint.load_checkpoint", forbidden)
    first = build_report([evaluated["strong"], evaluated["weak"]], tmp_path / "a")
    again = build_report([evaluated["strong"], evaluated["weak"]], tmp_path / "b")
    assert first == again


def test_missing_or_corrupt_files_are_named_on_the_page(
        evaluated: dict[str, Path], tmp_path: Path) -> None:
    # samples.safetensors corrupt: named, and the report's own bit strings still pair.
    corrupt = _copy(evaluated["strong"], tmp_path, "corrupt")
    (corrupt / "samples.safetensors").write_bytes(b"not a safetensors file")
    # samples.safetensors missing and no bit strings (a schema-1 report): not paired.
    old = _copy(evaluated["weak"], tmp_path, "old")
    (old / "samples.safetensors").unlink()
    data = json.loads((old / "report.json").read_text())
    data["schema_version"] = 1
    data.pop("clean_samples")
    for row in data["results"] + data["worst_case"]:
        row.pop("robust_samples", None)
    (old / "report.json").write_text(json.dumps(data))
    doc = build_report([corrupt, old, evaluated["strong"]], tmp_path / "out")
    problems = {r["title"]: r["problems"] for r in doc["runs"]}
    assert any("samples.safetensors cannot be read" in p for p in problems["corrupt"])
    assert any("no per-sample outcomes" in p for p in problems["old"])
    reasons = {(u["a"], u["b"]): u["reason"] for u in doc["not_paired"]}
    assert "per-sample" in reasons[("corrupt", "old")]
    assert any(c["a"] == "corrupt" and c["b"] == "strong" for c in doc["comparisons"])
    page = (tmp_path / "out" / "report.html").read_text()
    assert "samples.safetensors cannot be read" in page


def test_nothing_usable_is_one_clear_error(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "report.json").write_text("{ truncated")
    with pytest.raises(RunReadError, match=r"report\.json cannot be read as JSON"):
        read_run(broken)
    assert main(["report", str(broken), str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "report.json cannot be read as JSON" in err[0], err
    assert "nothing does not exist" in err[0]
    assert not (tmp_path / "out").exists()


def test_report_command_and_evaluate_write_the_page(
        evaluated: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(evaluated["strong"]), str(evaluated["weak"]),
                 "--out", str(tmp_path / "cmp"), "--title", "strong vs weak"]) == 0
    out = capsys.readouterr().out
    assert "paired comparison(s)" in out and "highest: strong" in out
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "<title>strong vs weak</title>" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert page.count('<img src="data:image/png;base64,') >= 1


def test_attack_and_fool_runs_render_their_images(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "2",
                 "--no-progress", "--out", str(model)]) == 0
    assert main(["attack", "--model", str(model), "--data", "digits", "--attack", "pgd",
                 "--eps", "0.1", "--n", "12", "--out", str(tmp_path / "a")]) == 0
    assert main(["fool", "--model", str(model), "--generations", "3", "--population", "10",
                 "--classes", "0,1", "--out", str(tmp_path / "f")]) == 0
    capsys.readouterr()
    doc = build_report([tmp_path / "a", tmp_path / "f"], tmp_path / "rep")
    assert [r["kind"] for r in doc["runs"]] == ["attack", "fool"]
    assert all(not r["problems"] for r in doc["runs"]), doc["runs"]
    page = (tmp_path / "rep" / "report.html").read_text()
    assert 'alt="clean images, their adversarial versions and the perturbations' in page
    assert 'alt="fooling images evolved for f, one per class"' in page
    assert page.count("<figcaption>") == page.count("<img ")  # every image has a caption


def test_the_member_spread_panel_draws_every_stored_member() -> None:
    import io

    from PIL import Image

    from reports.experiment_figures import _member_spread, accuracy_vs_members_png

    row = {"sampling": "uniform", "n_members": 3, "with_baseline": False, "aggregation": "mean",
           "clean": 0.9, "clean_ci": [0.85, 0.93], "transfer": 0.3, "transfer_ci": [0.25, 0.35],
           "adaptive": 0.0, "adaptive_ci": [0.0, 0.02]}
    old = {"ensembles": [row], "members": [
        {"sampling": "uniform", "n_members": 3, "best_member_transfer": 0.3,
         "mean_member_transfer": 0.2, "mean_member_clean": 0.88}]}
    new = {"ensembles": [row], "members": [
        {**old["members"][0], "member_transfer": [0.1, 0.2, 0.3],
         "member_clean": [0.87, 0.88, 0.89]},
        {"sampling": "uniform", "n_members": 1, "member_transfer": [0.1],
         "member_clean": [0.87]}]}
    # Older results (no per-member lists) still draw, without the spread panel.
    assert _member_spread(old) == {}
    assert _member_spread(new) == {"uniform": {"clean": [0.87, 0.88, 0.89],
                                               "transfer": [0.1, 0.2, 0.3]}}
    widths = [Image.open(io.BytesIO(accuracy_vs_members_png(d) or b"")).width
              for d in (old, new)]
    assert widths[1] > widths[0]  # one more panel


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed "
                    "(apt-get install chromium; .ci/run installs it)")
def test_the_page_renders_in_a_real_browser(evaluated: dict[str, Path], tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    build_report([evaluated["strong"], evaluated["weak"]], tmp_path / "cmp")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page()  # the page has no script; JS only for our checks
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto((tmp_path / "cmp" / "report.html").as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete, e.naturalWidth, e.alt])")
            page.screenshot(path=str(tmp_path / "cmp" / "screenshot.png"), full_page=True)
            verdict = page.locator("#verdict").inner_text()
        finally:
            browser.close()
    assert not errors, errors
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert "Verdict" in verdict and "highest" in verdict
    assert images and all(done and width > 0 and alt for done, width, alt in images), images
    assert (tmp_path / "cmp" / "screenshot.png").stat().st_size > 0
