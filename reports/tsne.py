"""t-SNE views of hidden features and the number behind the picture: low-density scores.

The original ensemble experiment argued with t-SNE plots that "adversarial instances lie
in low-probability regions". A picture cannot be checked, and distances in a t-SNE map
mean little, so the claim is measured in the **original feature space**:

* **low-density ratio**: for each point, the distance to its k-th nearest clean
  *training* feature (a k-NN density estimate: larger = sparser). The figure is the median
  over adversarial points divided by the median over clean test points, with a bootstrap
  95% interval (both sets resampled). Above 1: adversarial points sit where training
  data is sparse.
* **neighbour disagreement**: the fraction of points whose k nearest clean training
  neighbours mostly (more than half) carry a label other than the model's prediction, for
  clean test points and for adversarial points, with Wilson intervals.

Neighbour search is scikit-learn's ``NearestNeighbors``; the embedding is openTSNE (FFT
gradients) with scikit-learn's ``TSNE`` as the fallback, both PCA-initialised and seeded.

openTSNE runs as its ``TSNE.fit`` does, with settings of ours, each measured by
``benchmarks/bench_tsne.py`` and on 2,000-20,000 of its features (2 cores):

* exact neighbours up to :data:`EXACT_NEIGHBOURS` points (scikit-learn's brute force,
  faster than Annoy there and exact);
* each phase with the faster of its two gradient methods. FFT interpolation costs about
  the same per iteration whatever the number of points, but its grid grows with the
  map's span; Barnes-Hut costs O(N log N). Early exaggeration keeps the map small: FFT
  from :data:`FFT_EARLY_POINTS` points (at 5,000 on one thread 3.8 s against 6.7 s),
  Barnes-Hut below (2,000: 2.6 s against 3.1 s). The normal phase spreads the map:
  Barnes-Hut up to :data:`BARNES_HUT_POINTS` points (10,000 on 2 threads: 12 s against
  16 s, and a lower KL divergence, 1.787 against 1.803 under one common P), FFT above
  (15,000: 18 s against 27 s);
* up to :data:`BARNES_HUT_POINTS` points, 100 rather than 250 iterations of early
  exaggeration and Barnes-Hut's theta 0.6 rather than 0.5. At 10,000 points (KL under one
  common P; 10-NN preservation; 10-NN class accuracy in the map): 250 / 0.5 gave 19.3 s,
  1.790, 0.474, 0.713; 100 / 0.6 gives 14-15.5 s, 1.794, 0.473, 0.710. Larger maps keep
  openTSNE's 250 (a longer exaggeration matters more as N grows);
* 300 rather than 500 normal iterations;
* FFTs on every thread (:func:`_threaded_fft`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import time
import types
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustness.core.io import atomic_write
from robustness.core.stats import wilson_interval
from robustness.core.validation import check_choice, check_int, invalid

OWNER = "tsne"
BACKENDS = ("auto", "opentsne", "sklearn")
OPENTSNE_ITERATIONS = 300  # after 250 of early exaggeration; openTSNE's default is 500
EXACT_NEIGHBOURS = 20_000  # above this, openTSNE's approximate (Annoy) neighbour search
FFT_EARLY_POINTS = 5_000  # from this, FFT gradients in early exaggeration (else Barnes-Hut)
BARNES_HUT_POINTS = 10_000  # up to this, Barnes-Hut gradients after it (else FFT), and:
SMALL_MAP: dict[str, Any] = {"early_exaggeration_iter": 100, "theta": 0.6}  # openTSNE's: 250, 0.5


@contextlib.contextmanager
def _threaded_fft(workers: int) -> Iterator[None]:
    """Run openTSNE's FFTs on ``workers`` threads for the duration of a fit.

    openTSNE's compiled FFT-gradient module calls ``numpy.fft`` (one thread) through its
    module-global ``np``; in the late iterations those FFTs were half the time. Here that
    one module's ``np`` is, until the block ends, numpy with ``fft`` replaced by
    :mod:`scipy.fft` given ``workers`` (the same pocketfft, each line transformed as
    before, so the same numbers). numpy itself is never touched. An openTSNE built
    otherwise (with FFTW, or a future layout) is left as it is.
    """
    try:
        from openTSNE._matrix_mul import matrix_mul
    except ImportError:
        matrix_mul = None
    if workers <= 1 or matrix_mul is None or getattr(matrix_mul, "np", None) is not np:
        yield
        return
    import scipy.fft

    # The four transforms openTSNE calls, each on ``workers`` threads.
    fft = types.SimpleNamespace(**{name: functools.partial(getattr(scipy.fft, name),
                                                           workers=workers)
                                   for name in ("rfft2", "irfft2", "fft", "ifft")})

    class _Numpy(types.ModuleType):

        def __getattr__(self, name: str) -> Any:
            return getattr(np, name)

    proxy = _Numpy("numpy")
    proxy.fft = fft  # type: ignore[attr-defined]
    matrix_mul.np = proxy
    try:
        yield
    finally:
        matrix_mul.np = np


def default_perplexity(n: int) -> float:
    """30 (the usual default) where ``n`` allows it, else ``(n - 1) / 3`` (each point needs
    about 3 x perplexity neighbours)."""
    return float(min(30.0, max(1.0, (n - 1) / 3.0)))


def _opentsne_available() -> bool:
    try:
        import openTSNE  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Embedding:
    """A 2-D t-SNE embedding and how it was made."""

    points: np.ndarray  # (N, 2) float32
    backend: str
    perplexity: float
    kl_divergence: float  # as reported by the backend for its own affinities
    seconds: float
    seed: int


def tsne(features: np.ndarray, *, seed: int = 0, backend: str = "auto",
         perplexity: float | None = None, n_jobs: int | None = None) -> Embedding:
    """Embed ``features`` in 2-D with t-SNE.

    Parameters
    ----------
    features
        ``(N, D)`` floats, N >= 4.
    seed
        Seeds the PCA initialisation and the optimiser.
    backend
        ``"opentsne"``, ``"sklearn"`` or ``"auto"`` (openTSNE when installed).
    perplexity
        Default :func:`default_perplexity` of N.
    n_jobs
        Threads. Default: 1 below 10,000 points, else ``os.cpu_count()``: a second thread
        gains little on small maps, and spinning OpenMP/BLAS threads that compete with
        other work on 2 cores were measured here to make t-SNE 10-25x slower.

    Returns
    -------
    Embedding
        ``points`` of shape ``(N, 2)``.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2 or len(x) < 4 or not np.isfinite(x).all():
        raise invalid(OWNER, "features", "a finite (N, D) array with N >= 4",
                      f"shape {x.shape}" + ("" if np.isfinite(x).all() else " with NaN/inf"),
                      raw=True)
    check_int(OWNER, "seed", seed, low=0)
    backend = check_choice(OWNER, "backend", backend, BACKENDS)
    if backend == "auto":
        backend = "opentsne" if _opentsne_available() else "sklearn"
    perp = default_perplexity(len(x)) if perplexity is None else float(perplexity)
    if perplexity is not None and not 1.0 <= perp <= (len(x) - 1) / 3.0:
        raise invalid(OWNER, "perplexity", f"a number in [1, (N - 1) / 3] (N = {len(x)} "
                      f"points: each needs about 3 x perplexity neighbours)", perp)
    jobs = n_jobs or (1 if len(x) < 10_000 else os.cpu_count() or 1)
    check_int(OWNER, "n_jobs", jobs, low=1)
    from threadpoolctl import threadpool_limits

    start = time.perf_counter()
    with threadpool_limits(limits=jobs):
        points, kl = _fit(x, backend, perp, seed, jobs)
    return Embedding(points=points, backend=backend, perplexity=perp, kl_divergence=kl,
                     seconds=time.perf_counter() - start, seed=seed)


def _fit(x: np.ndarray, backend: str, perp: float, seed: int,
         jobs: int) -> tuple[np.ndarray, float]:
    if backend == "opentsne":
        try:
            from openTSNE import TSNE as OpenTSNE
        except ImportError as e:
            raise invalid(OWNER, "backend", "an installed backend ('pip install openTSNE', or "
                          "backend='sklearn')", "'opentsne' (not installed)", raw=True) from e
        small = len(x) <= BARNES_HUT_POINTS
        model = OpenTSNE(perplexity=perp, initialization="pca", random_state=seed,
                         n_jobs=jobs, verbose=False, n_iter=OPENTSNE_ITERATIONS,
                         neighbors="exact" if len(x) <= EXACT_NEIGHBOURS else "auto",
                         **(SMALL_MAP if small else {}))
        # openTSNE's TSNE.fit, phase by phase, each with its faster gradient (see above).
        early = "fft" if len(x) >= FFT_EARLY_POINTS else "bh"
        late = "bh" if small else "fft"
        with _threaded_fft(jobs):
            emb = model.prepare_initial(x)
            emb.optimize(n_iter=model.early_exaggeration_iter,
                         exaggeration=model.early_exaggeration,
                         momentum=model.initial_momentum, negative_gradient_method=early,
                         inplace=True)
            emb.optimize(n_iter=model.n_iter, exaggeration=model.exaggeration,
                         momentum=model.final_momentum, negative_gradient_method=late,
                         inplace=True)
        return np.asarray(emb, dtype=np.float32), float(getattr(emb, "kl_divergence", 0.0))
    from sklearn.manifold import TSNE

    model = TSNE(perplexity=perp, init="pca", random_state=seed, n_jobs=jobs)
    return model.fit_transform(x).astype(np.float32), float(model.kl_divergence_)


@dataclass(frozen=True)
class Fraction:
    """A proportion with its 95% Wilson interval."""

    value: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class DensityScores:
    """Low-density scores of adversarial vs clean test points (see the module docstring)."""

    k: int
    n_train: int
    n_clean: int
    n_adversarial: int
    median_distance_clean: float
    median_distance_adversarial: float
    ratio: float  # median adversarial / median clean
    ratio_ci_low: float
    ratio_ci_high: float
    disagreement_clean: Fraction
    disagreement_adversarial: Fraction
    bootstrap: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-able."""
        return asdict(self)

    def lines(self) -> list[str]:
        """What the CLI prints and the page shows."""
        dc, da = self.disagreement_clean, self.disagreement_adversarial
        return [
            f"Distance to the {self.k}-th nearest clean training feature (median): adversarial "
            f"{self.median_distance_adversarial:.3g} vs clean test "
            f"{self.median_distance_clean:.3g}: ratio {self.ratio:.2f} [95% CI "
            f"{self.ratio_ci_low:.2f}, {self.ratio_ci_high:.2f}] "
            f"({self.n_adversarial} adversarial, {self.n_clean} clean test points)",
            f"Points whose {self.k} nearest clean training neighbours mostly disagree with the "
            f"model's prediction: clean test {dc.value:.3f} [{dc.ci_low:.3f}, {dc.ci_high:.3f}], "
            f"adversarial {da.value:.3f} [{da.ci_low:.3f}, {da.ci_high:.3f}]",
        ]


def _fraction(hits: np.ndarray) -> Fraction:
    n = len(hits)
    k = int(hits.sum())
    lo, hi = wilson_interval(k, n) if n else (0.0, 1.0)
    return Fraction(value=k / n if n else float("nan"), ci_low=lo, ci_high=hi, n=n)


def density_scores(train: np.ndarray, train_labels: np.ndarray, clean: np.ndarray,
                   clean_pred: np.ndarray, adversarial: np.ndarray, adversarial_pred: np.ndarray,
                   *, k: int = 10, bootstrap: int = 2000, seed: int = 0) -> DensityScores:
    """Low-density ratio and neighbour disagreement, in the original feature space.

    Parameters
    ----------
    train, train_labels
        Clean training features ``(M, D)`` and their labels ``(M,)``.
    clean, clean_pred
        Clean test features ``(N, D)`` and the model's predictions on them ``(N,)``.
    adversarial, adversarial_pred
        Adversarial features ``(A, D)`` and the model's predictions ``(A,)``.
    k
        Neighbours (default 10).
    bootstrap
        Resamples for the ratio's interval (percentile bootstrap, both sets resampled).
    seed
        Seeds the bootstrap.
    """
    from sklearn.neighbors import NearestNeighbors

    check_int(OWNER, "k", k, low=1, high=max(1, len(train)))
    check_int(OWNER, "bootstrap", bootstrap, low=100)
    if len(clean) == 0 or len(adversarial) == 0:
        raise invalid(OWNER, "adversarial", "at least one clean and one adversarial point",
                      f"{len(clean)} clean, {len(adversarial)} adversarial", raw=True)
    nn_index = NearestNeighbors(n_neighbors=k).fit(np.asarray(train, dtype=np.float32))
    labels = np.asarray(train_labels)

    def score(points: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dist, idx = nn_index.kneighbors(np.asarray(points, dtype=np.float32))
        agree = (labels[idx] == np.asarray(pred)[:, None]).sum(axis=1)
        return dist[:, -1], agree * 2 <= k  # "mostly disagree": at most half agree

    d_clean, dis_clean = score(clean, clean_pred)
    d_adv, dis_adv = score(adversarial, adversarial_pred)
    med_c, med_a = float(np.median(d_clean)), float(np.median(d_adv))
    rng = np.random.default_rng(seed)
    boot = np.empty(bootstrap)
    for i in range(bootstrap):
        bc = np.median(d_clean[rng.integers(0, len(d_clean), len(d_clean))])
        ba = np.median(d_adv[rng.integers(0, len(d_adv), len(d_adv))])
        boot[i] = ba / bc if bc > 0 else np.inf
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return DensityScores(
        k=k, n_train=len(train), n_clean=len(clean), n_adversarial=len(adversarial),
        median_distance_clean=med_c, median_distance_adversarial=med_a,
        ratio=med_a / med_c if med_c > 0 else float("inf"),
        ratio_ci_low=float(lo), ratio_ci_high=float(hi),
        disagreement_clean=_fraction(dis_clean), disagreement_adversarial=_fraction(dis_adv),
        bootstrap=bootstrap, seed=seed)


def tsne_figure_png(points: np.ndarray, labels: np.ndarray, kinds: np.ndarray,
                    class_names: Sequence[str], *, title: str = "") -> bytes:
    """Three panels: clean, adversarial (and fooling), both; coloured by true class.

    Parameters
    ----------
    points
        ``(N, 2)`` embedding.
    labels
        ``(N,)`` true class per point (for fooling images: the class they were evolved for).
    kinds
        ``(N,)`` strings: ``"clean"``, ``"adversarial"`` or ``"fooling"``.
    class_names
        Legend names, indexed by label.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(15, 5.2), layout="constrained")
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    colours = [f"C{i % 10}" for i in range(len(class_names))]
    marker = {"clean": ("o", 9, 0.55), "adversarial": ("x", 16, 0.8), "fooling": ("*", 90, 1.0)}
    panels = [("clean test images", {"clean"}), ("adversarial examples", {"adversarial",
                                                                          "fooling"}),
              ("both", {"clean", "adversarial", "fooling"})]
    for ax, (name, show) in zip(axes, panels, strict=True):
        for kind in ("clean", "adversarial", "fooling"):
            sel = kinds == kind
            if kind not in show or not sel.any():
                continue
            m, size, alpha = marker[kind]
            style: dict[str, Any] = {"edgecolors": "black", "linewidths": 0.6} \
                if kind == "fooling" else {"linewidths": 0.8 if m == "x" else 0.0}
            ax.scatter(points[sel, 0], points[sel, 1], s=size, marker=m, alpha=alpha,
                       c=[colours[int(c) % len(colours)] for c in labels[sel]], **style)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], marker="o", linestyle="", color=colours[i], label=str(c))
               for i, c in enumerate(class_names)]
    handles += [Line2D([], [], marker="o", linestyle="", color="grey", label="clean"),
                Line2D([], [], marker="x", linestyle="", color="grey", label="adversarial")]
    if (kinds == "fooling").any():
        handles.append(Line2D([], [], marker="*", linestyle="", color="grey",
                              markeredgecolor="black", label="fooling"))
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="true class")
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_png(path: str | os.PathLike[str], png: bytes) -> Path:
    """Write PNG bytes atomically."""
    def write(tmp: str) -> None:
        Path(tmp).write_bytes(png)

    return atomic_write(Path(path), write)


__all__ = ["BACKENDS", "DensityScores", "Embedding", "Fraction", "default_perplexity",
           "density_scores", "tsne", "tsne_figure_png", "write_png"]
