"""``robustness tsne``: penultimate-layer features of clean and adversarial test images,
their 2-D t-SNE embedding, and the low-density scores that measure what the picture shows.

``n`` counts the points of the embedding: ``n // 2`` clean test images and their
adversarial versions. Adversarial points are the attack's **successful** adversarial
versions of test images the model classified correctly (an unsuccessful attempt is, to
the model, still a clean image); fooling images (``include_fooling``) are unbounded
images evolved from noise, one per class. Scores are computed in the original feature
space against the clean training features (:func:`reports.tsne.density_scores`); the
embedding is for the eye only.

A run directory holds ``tsne.json`` (scores, counts, configuration, provenance),
``tsne.png`` (three panels) and ``tsne.safetensors`` (embedding, labels, predictions and
kinds per point), so a report re-renders it without running anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reports.tsne import (
    BACKENDS,
    DensityScores,
    Embedding,
    density_scores,
    tsne,
    tsne_figure_png,
    write_png,
)
from robustness.core.io import write_json, write_tensors
from robustness.core.modes import predict
from robustness.core.provenance import run_environment
from robustness.core.validation import check_choice, check_int, did_you_mean, invalid
from robustness.data import Dataset
from robustness.embed import features, penultimate_layer

OWNER = "run_tsne"
KINDS = ("clean", "adversarial", "fooling")
TSNE_FORMAT = "robustness-tsne"
TSNE_VERSION = 1
MAX_TRAIN = 10_000  # clean training features the densities are measured against


@dataclass
class TsneRun:
    """What :func:`run_tsne` measured (``to_dict`` is ``tsne.json``)."""

    scores: DensityScores
    embedding: Embedding
    labels: np.ndarray  # (N,) true class (fooling: the class evolved for)
    predictions: np.ndarray  # (N,)
    kinds: np.ndarray  # (N,) str: clean / adversarial / fooling
    class_names: list[str]
    info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (``tsne.json``)."""
        e = self.embedding
        return {"format": TSNE_FORMAT, "version": TSNE_VERSION, **self.info,
                "scores": self.scores.to_dict(), "lines": self.scores.lines(),
                "embedding": {"backend": e.backend, "perplexity": e.perplexity,
                              "kl_divergence": e.kl_divergence, "seconds": e.seconds,
                              "seed": e.seed, "points": len(e.points)},
                "counts": {k: int((self.kinds == k).sum()) for k in KINDS}}

    def save(self, directory: str | Path) -> None:
        """Write ``tsne.json``, ``tsne.png`` and ``tsne.safetensors`` into ``directory``."""
        out = Path(directory)
        codes = np.array([KINDS.index(k) for k in self.kinds], dtype=np.int64)
        write_tensors(out / "tsne.safetensors", {
            "embedding": torch.from_numpy(np.ascontiguousarray(self.embedding.points)),
            "labels": torch.from_numpy(self.labels.astype(np.int64)),
            "predictions": torch.from_numpy(self.predictions.astype(np.int64)),
            "kinds": torch.from_numpy(codes)}, metadata={"kinds": ",".join(KINDS)})
        info = self.info
        title = (f"{info['model']}: penultimate features ({info['layer']}) of clean and "
                 f"{info['attack']} eps {info['eps']:g} adversarial {info['dataset']} images")
        write_png(out / "tsne.png", tsne_figure_png(
            self.embedding.points, self.labels, self.kinds, self.class_names, title=title))
        write_json(out / "tsne.json", self.to_dict())


def check_tsne_options(model: nn.Module, n: int, *, layer: str | None = None,
                       perplexity: float | None = None, backend: str = "auto",
                       owner: str = OWNER, prefix: str = "") -> None:
    """Refuse a bad ``layer``, ``perplexity`` or ``backend`` before any attack runs.

    ``n`` is the most points the embedding can get; ``prefix`` is ``"--"`` when the names
    are command-line options.
    """
    if layer is not None:
        modules = [name for name, _ in model.named_modules() if name]
        if layer not in modules:
            raise invalid(owner, f"{prefix}layer", "the name of one of the model's modules "
                          f"(model.named_modules()){did_you_mean(layer, modules)}", layer)
    if perplexity is not None and not 1.0 <= perplexity <= (n - 1) / 3.0:
        raise invalid(owner, f"{prefix}perplexity", f"a number in [1, (points - 1) / 3] = "
                      f"[1, {(n - 1) / 3.0:g}] for {n} points (each point needs about 3 x "
                      f"perplexity neighbours)", perplexity)
    check_choice(owner, f"{prefix}backend", backend, BACKENDS)


def run_tsne(model: nn.Module, data: Dataset, *, attack: str = "pgd", eps: float = 0.3,
             n: int = 2000, layer: str | None = None, include_fooling: bool = False,
             backend: str = "auto", k: int = 10, perplexity: float | None = None,
             seed: int = 0, model_name: str = "model", echo: Any = None) -> TsneRun:
    """Features, t-SNE and low-density scores of clean vs adversarial test images.

    Parameters
    ----------
    model
        A classifier ``(N, C, H, W) -> (N, K)``.
    data
        The dataset: its first ``n // 2`` test images are embedded; up to 10,000 training
        images are the clean reference for the densities.
    attack
        An attack spec of :mod:`attacks.registry` (``"pgd"``, ``"pgd(steps=40)"``, ...).
    eps
        Its budget, in the attack's norm.
    n
        Points to embed: the first ``n // 2`` test images and their adversarial versions
        (the successful ones), so ``n = 2000`` uses 1,000 test images.
    layer
        ``None``: the penultimate layer (input of the last ``nn.Linear``); else a module name.
    include_fooling
        Also evolve one fooling image per class from noise and embed them.
    backend, perplexity
        t-SNE backend (``auto``/``opentsne``/``sklearn``) and perplexity (default from n).
    k
        Neighbours for the density scores.
    seed
        Seeds the attack, t-SNE and the bootstrap.
    """
    from attacks.registry import parse_attack_spec

    say = echo or (lambda *_: None)
    check_int(OWNER, "n", n, low=8, high=2 * len(data.x_test) + 1)
    check_tsne_options(model, n, layer=layer, perplexity=perplexity, backend=backend)
    images = n // 2
    spec = parse_attack_spec(attack)
    if "eps" in spec.kwargs:
        raise invalid(OWNER, "attack", "a spec without its own eps (the budget is eps)",
                      spec.label)
    atk = spec.build(eps, seed=seed)
    layer_name = penultimate_layer(model) if layer is None else layer
    x, y = data.x_test[:images], data.y_test[:images]
    start = time.perf_counter()
    clean_pred = predict(model, x).argmax(1)
    batch = atk(model, x, y)
    keep = batch.success & (clean_pred == y)
    x_adv, y_adv = batch.x_adv[keep], y[keep]
    say(f"{spec.label} eps {eps:g}: {int(keep.sum())} of {int((clean_pred == y).sum())} "
        f"correctly classified test images broken ({time.perf_counter() - start:.1f} s)")
    if int(keep.sum()) == 0:
        raise invalid(OWNER, "attack", f"an attack that breaks at least one image at eps "
                      f"{eps:g} (nothing to embed as adversarial)", spec.label)
    parts_x, parts_y, parts_kind = [x, x_adv], [y, y_adv], ["clean", "adversarial"]
    if include_fooling:
        from attacks.fooling import FoolingImages

        fooled = FoolingImages(seed=seed).generate(model, data.input_shape)
        parts_x.append(fooled.images.to(x.dtype))
        parts_y.append(torch.as_tensor(list(fooled.classes), dtype=torch.int64))
        parts_kind.append("fooling")
        say(f"fooling images: {int(fooled.reached.sum())} of {len(fooled.classes)} classes "
            f"reached {fooled.target_confidence} confidence")
    x_all = torch.cat(parts_x)
    kinds = np.concatenate([np.full(len(p), kind) for p, kind in zip(parts_x, parts_kind,
                                                                     strict=True)])
    labels = torch.cat(parts_y).numpy()
    # Features and predictions from the same forward passes.
    feats_t, logits = features(model, x_all, layer=layer, with_logits=True)
    feats, preds = feats_t.numpy(), logits.argmax(1).numpy()
    x_train = data.x_train[:MAX_TRAIN]
    train_feats = features(model, x_train, layer=layer)
    assert isinstance(train_feats, torch.Tensor)
    adv = kinds == "adversarial"
    clean = kinds == "clean"
    scores = density_scores(train_feats.numpy(), data.y_train[:MAX_TRAIN].numpy(), feats[clean],
                            preds[clean], feats[adv], preds[adv], k=k, seed=seed)
    for line in scores.lines():
        say(line)
    if perplexity is not None and perplexity > (len(feats) - 1) / 3.0:
        raise invalid(OWNER, "perplexity", f"at most (points - 1) / 3 = "
                      f"{(len(feats) - 1) / 3.0:g}: only {len(feats)} points are left to "
                      f"embed ({int(adv.sum())} successful adversarial)", perplexity)
    emb = tsne(feats, seed=seed, backend=backend, perplexity=perplexity)
    say(f"t-SNE ({emb.backend}) of {len(feats)} points in {emb.seconds:.1f} s, KL divergence "
        f"{emb.kl_divergence:.3f}")
    info = {"model": model_name, "dataset": data.name, "data": data.to_dict_meta(),
            "attack": spec.label, "eps": float(eps), "norm": atk.norm, "n": n,
            "test_images": images,
            "layer": layer_name if layer is None else layer,
            "feature_dim": int(feats.shape[1]), "include_fooling": include_fooling,
            "success_rate": float(batch.success.float().mean()),
            "clean_accuracy": float((clean_pred == y).float().mean()),
            "seed": seed, "seconds": time.perf_counter() - start,
            "versions": run_environment()}
    return TsneRun(scores=scores, embedding=emb, labels=labels, predictions=preds, kinds=kinds,
                   class_names=list(data.classes), info=info)


__all__ = ["KINDS", "TsneRun", "run_tsne"]
