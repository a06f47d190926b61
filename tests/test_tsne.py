"""t-SNE and low-density scores: features by hook, scores against a brute-force computation,
the claim on a really trained and really attacked model, and the command's run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reports.page import build_report
from reports.tsne import default_perplexity, density_scores, tsne
from robustness.cli import main
from robustness.core.validation import ParameterError
from robustness.data import Dataset
from robustness.embed import features, penultimate_layer
from robustness.models import build_model
from robustness.train import train
from robustness.tsne import run_tsne


@pytest.fixture(scope="module")
def mlp(digits: Dataset) -> nn.Module:
    model = build_model("mlp", digits.input_shape, digits.num_classes, seed=0)
    train(model, digits.x_train, digits.y_train, epochs=10, seed=0, progress=False)
    return model.eval()


def test_features_are_the_input_of_the_last_linear(mlp: nn.Module, digits: Dataset) -> None:
    name = penultimate_layer(mlp)
    last = dict(mlp.named_modules())[name]
    assert isinstance(last, nn.Linear)
    x = digits.x_test[:7]
    f = features(mlp, x, batch_size=3)  # batches are stitched in order
    assert f.shape == (7, last.in_features)
    # Feeding the features to the last layer gives exactly the model's logits.
    torch.testing.assert_close(last(f), mlp(x), rtol=1e-5, atol=1e-5)
    mlp.train()
    features(mlp, x)
    assert mlp.training  # mode restored
    mlp.eval()
    with pytest.raises(ParameterError, match="'layer' parameter"):
        features(mlp, x, layer="no-such-layer")


def test_density_scores_match_a_brute_force_computation() -> None:
    rng = np.random.default_rng(0)
    train_x = rng.normal(size=(300, 5)).astype(np.float32)
    train_y = (train_x[:, 0] > 0).astype(np.int64)
    clean = rng.normal(size=(40, 5)).astype(np.float32)
    far = rng.normal(loc=3.0, size=(30, 5)).astype(np.float32)  # off the training data
    clean_pred, far_pred = (clean[:, 0] > 0).astype(int), np.zeros(30, dtype=int)
    s = density_scores(train_x, train_y, clean, clean_pred, far, far_pred, k=7, seed=1)

    def kth(points: np.ndarray) -> np.ndarray:
        d = np.linalg.norm(points[:, None, :] - train_x[None], axis=2)
        return np.sort(d, axis=1)[:, 6]

    def disagree(points: np.ndarray, pred: np.ndarray) -> float:
        d = np.linalg.norm(points[:, None, :] - train_x[None], axis=2)
        nearest = np.argsort(d, axis=1)[:, :7]
        return float(((train_y[nearest] == pred[:, None]).sum(1) <= 3).mean())

    assert s.median_distance_clean == pytest.approx(np.median(kth(clean)), rel=1e-5)
    assert s.median_distance_adversarial == pytest.approx(np.median(kth(far)), rel=1e-5)
    assert s.ratio == pytest.approx(np.median(kth(far)) / np.median(kth(clean)), rel=1e-5)
    assert s.ratio_ci_low <= s.ratio <= s.ratio_ci_high and s.ratio_ci_low > 1.5
    assert s.disagreement_clean.value == pytest.approx(disagree(clean, clean_pred))
    assert s.disagreement_adversarial.value == pytest.approx(disagree(far, far_pred))
    # Points drawn like the training data are not "low density".
    same = density_scores(train_x, train_y, clean, clean_pred, clean[::-1].copy(),
                          clean_pred[::-1].copy(), k=7)
    assert same.ratio == pytest.approx(1.0) and same.ratio_ci_low <= 1.0 <= same.ratio_ci_high


@pytest.mark.parametrize("backend", ["opentsne", "sklearn"])
def test_tsne_backends_separate_clusters_and_are_seeded(backend: str) -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(60, 20)), rng.normal(loc=8.0, size=(60, 20))])
    a = tsne(x, seed=3, backend=backend)
    b = tsne(x, seed=3, backend=backend)
    assert a.points.shape == (120, 2) and a.backend == backend
    np.testing.assert_allclose(a.points, b.points, rtol=1e-4, atol=1e-4)
    c0, c1 = a.points[:60].mean(0), a.points[60:].mean(0)
    spread = max(a.points[:60].std(0).max(), a.points[60:].std(0).max())
    assert np.linalg.norm(c0 - c1) > 3 * spread  # the two clusters stay apart
    assert a.perplexity == default_perplexity(120) == 30.0
    with pytest.raises(ParameterError, match="'perplexity' parameter"):
        tsne(x, backend=backend, perplexity=100)


def test_threaded_ffts_give_openTSNE_the_same_embedding_and_numpy_is_left_alone(
        digits: Dataset) -> None:
    from openTSNE import TSNE
    from openTSNE._matrix_mul import matrix_mul

    from reports.tsne import _threaded_fft

    x = digits.x_train.flatten(1).numpy().astype(np.float32)

    def fit() -> np.ndarray:
        return np.asarray(TSNE(initialization="pca", random_state=0, n_jobs=2, n_iter=100,
                               neighbors="exact").fit(x))

    plain = fit()
    with _threaded_fft(2):
        assert matrix_mul.np is not np and matrix_mul.np.fft.rfft2 is not np.fft.rfft2
        threaded = fit()
    assert matrix_mul.np is np  # restored
    np.testing.assert_array_equal(threaded, plain)  # the same transforms, line by line


@pytest.mark.parametrize("method", ["bh", "fft"])
def test_phase_by_phase_fit_is_openTSNEs_own_fit(digits: Dataset, method: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Our fit runs openTSNE's two phases itself to pick each one's gradient method. With
    # the same method in both phases it must be TSNE.fit exactly, or we changed t-SNE.
    from openTSNE import TSNE
    from threadpoolctl import threadpool_limits

    import reports.tsne as ours

    x = digits.x_train.flatten(1).numpy().astype(np.float32)
    monkeypatch.setattr(ours, "OPENTSNE_ITERATIONS", 60)
    if method == "fft":  # both phases FFT: as at more than BARNES_HUT_POINTS points
        monkeypatch.setattr(ours, "FFT_EARLY_POINTS", 0)
        monkeypatch.setattr(ours, "BARNES_HUT_POINTS", 0)
    got = tsne(x, seed=0, n_jobs=1, backend="opentsne").points
    with threadpool_limits(limits=1):
        want = TSNE(initialization="pca", random_state=0, n_jobs=1, n_iter=60,
                    neighbors="exact", negative_gradient_method=method,
                    **(ours.SMALL_MAP if method == "bh" else {})).fit(x)
    np.testing.assert_array_equal(got, np.asarray(want, dtype=np.float32))


def test_adversarial_examples_lie_in_low_density_regions(mlp: nn.Module,
                                                         digits: Dataset) -> None:
    result = run_tsne(mlp, digits, attack="pgd(steps=10)", eps=0.1, n=240, backend="sklearn")
    s = result.scores
    counts = result.to_dict()["counts"]
    assert counts["clean"] == 120 and counts["adversarial"] == s.n_adversarial > 20
    # The original's claim, measured: adversarial features sit farther from the clean
    # training data than clean test features do, and their neighbours disagree with the
    # (fooled) prediction far more often.
    assert s.ratio_ci_low > 1.0, s.lines()
    assert s.disagreement_adversarial.ci_low > s.disagreement_clean.ci_high, s.lines()
    assert result.embedding.points.shape == (counts["clean"] + counts["adversarial"], 2)


def test_tsne_command_writes_a_run_a_report_can_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "3", "--no-progress",
                 "--out", str(tmp_path / "m")]) == 0
    out = tmp_path / "t"
    assert main(["tsne", "--model", str(tmp_path / "m"), "--data", "digits", "--attack", "fgsm",
                 "--eps", "0.1", "--n", "120", "--backend", "sklearn", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ratio" in printed and "mostly disagree" in printed
    doc = json.loads((out / "tsne.json").read_text())
    assert doc["format"] == "robustness-tsne" and doc["test_images"] == 60
    assert {"ratio", "ratio_ci_low", "ratio_ci_high", "disagreement_clean",
            "disagreement_adversarial"} <= set(doc["scores"])
    for name in ("tsne.png", "tsne.safetensors", "report.html"):
        assert (out / name).stat().st_size > 0
    page = build_report([out], tmp_path / "rep")
    assert any("ratio" in line for line in page["verdict"])
    # Bad input: one line, exit 2, nothing written.
    assert main(["tsne", "--model", str(tmp_path / "m"), "--data", "digits", "--eps", "0.1",
                 "--n", "100000", "--out", str(tmp_path / "bad")]) == 2
    assert main(["tsne", "--model", str(tmp_path / "m"), "--data", "digits", "--eps", "0.1",
                 "--attack", "pgdd", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "'--n' parameter" in err and "did you mean" in err
    assert not (tmp_path / "bad").exists()
    # t-SNE options are checked, under their option names, before any attack runs.
    for option, value, expected in (("--layer", "net.99", "the name of one of the model's"),
                                    ("--perplexity", "50", "for 120 points"),
                                    ("--perplexity", "0.5", "a number in [1,")):
        assert main(["tsne", "--model", str(tmp_path / "m"), "--data", "digits", "--eps", "0.1",
                     "--n", "120", option, value, "--out", str(tmp_path / "bad")]) == 2
        captured = capsys.readouterr()
        assert f"'{option}' parameter of robustness tsne" in captured.err, captured.err
        assert expected in captured.err and "broken" not in captured.out
        assert not (tmp_path / "bad").exists()
