"""How fast is our t-SNE against scikit-learn's default, at equal quality?

Run as ``python benchmarks/bench_tsne.py [--out runs/bench/tsne.json]`` (a few minutes on
2 cores). Features: the penultimate layer of the reference ConvNet (briefly trained) on
all 5,000 ``mnist`` images and their FGSM (eps 0.3) versions: 10,000 points, the kind of
input ``robustness tsne`` embeds. In one process, alternating, it times:

* ours: :func:`reports.tsne.tsne` (openTSNE, FFT then Barnes-Hut gradients, PCA init);
* scikit-learn's default ``TSNE(init="pca")`` (Barnes-Hut).

Quality: each library reports a KL divergence for its own affinities, which are not the
same P. Both embeddings are therefore also scored under one P (openTSNE's perplexity-30
affinities) with the exact KL(P || Q), Q over all pairs. Target: time ratio ours /
scikit-learn <= 0.35 with the common KL within 5%. Also printed: ours on 5,000 points
(target < 60 s), and the CPU features the run had.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attacks.gradient import FGSM
from reports.tsne import tsne
from robustness.bench import Timing, at_most, machine_line, print_targets, write_record
from robustness.data import load_dataset
from robustness.embed import features
from robustness.models import build_model
from robustness.train import train


def exact_kl(x: np.ndarray, y: np.ndarray, perplexity: float = 30.0) -> float:
    """KL(P || Q) with P = openTSNE's perplexity affinities of ``x``, Q exact over all pairs."""
    from openTSNE.affinity import PerplexityBasedNN

    p = PerplexityBasedNN(x, perplexity=perplexity, n_jobs=1, random_state=0,
                          verbose=False).P.tocoo()
    p_sum = p.data.sum()
    z = 0.0
    for start in range(0, len(y), 1000):  # normaliser of Q, in row blocks
        d2 = ((y[start:start + 1000, None, :] - y[None, :, :]) ** 2).sum(-1)
        w = 1.0 / (1.0 + d2)
        z += w.sum()
    z -= len(y)  # the diagonal: w_ii = 1
    d2 = ((y[p.row] - y[p.col]) ** 2).sum(-1)
    q = (1.0 / (1.0 + d2)) / z
    pij = p.data / p_sum
    return float((pij * np.log(pij / q)).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench/tsne.json"))
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of each, alternating (default: %(default)s)")
    args = parser.parse_args(argv)
    threads = os.cpu_count() or 1
    print(machine_line())

    data = load_dataset("mnist")
    model = build_model("convnet", data.input_shape, data.num_classes, seed=0)
    train(model, data.x_train, data.y_train, epochs=2, seed=0, progress=False)
    x = torch.cat([data.x_train, data.x_test])
    y = torch.cat([data.y_train, data.y_test])
    x_adv = FGSM(eps=0.3)(model.eval(), x, y).x_adv
    feats = features(model, torch.cat([x, x_adv])).numpy()
    print(f"{len(feats)} points, {feats.shape[1]} features")

    from sklearn.manifold import TSNE

    def ours() -> tuple[np.ndarray, float]:
        e = tsne(feats, seed=0, backend="opentsne", n_jobs=threads)
        return e.points, e.kl_divergence

    def sklearn_default() -> tuple[np.ndarray, float]:
        model = TSNE(init="pca", random_state=0)
        return model.fit_transform(feats), float(model.kl_divergence_)

    times: dict[str, list[float]] = {"ours (openTSNE)": [], "scikit-learn TSNE": []}
    outputs: dict[str, Any] = {}
    for _ in range(args.repeats):
        for name, fn in (("ours (openTSNE)", ours), ("scikit-learn TSNE", sklearn_default)):
            start = time.perf_counter()
            points, own_kl = fn()
            times[name].append(time.perf_counter() - start)
            outputs[name] = (points, own_kl)
            print(f"  {name}: {times[name][-1]:.1f} s", flush=True)
    rows = {}
    for name, ts in times.items():
        points, own_kl = outputs[name]
        rows[name] = {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
                      "own_kl": own_kl, "common_kl": exact_kl(feats, points.astype(np.float64))}
    ours_row, sk = rows["ours (openTSNE)"], rows["scikit-learn TSNE"]
    ratio = Timing(tuple(times["ours (openTSNE)"])) / Timing(tuple(times["scikit-learn TSNE"]))
    kl_gap = ours_row["common_kl"] / sk["common_kl"] - 1
    half = feats[::2].copy()
    start = time.perf_counter()
    tsne(half, seed=0)
    five_k = time.perf_counter() - start

    print(f"\nt-SNE of {len(feats)} points, median of {args.repeats} (min-max):")
    for name, r in rows.items():
        print(f"  {name:20s} {r['median_s']:7.1f} s ({r['min_s']:.1f}-{r['max_s']:.1f})  "
              f"own KL {r['own_kl']:.3f}  common KL {r['common_kl']:.3f}")
    targets = [
        at_most(f"t-SNE of {len(feats)} points, ours / scikit-learn", ratio, 0.35),
        at_most("t-SNE common KL, ours vs scikit-learn", kl_gap, 0.05,
                note=f"KL {ours_row['common_kl']:.3f} vs {sk['common_kl']:.3f}"),
        at_most(f"t-SNE of {len(half)} points", five_k, 60, unit=" s"),
    ]
    print_targets(targets)
    write_record(args.out, "tsne", targets, points=len(feats), rows=rows,
                 ratio=ratio.summary(), kl_gap=kl_gap, seconds_5000=five_k)
    print(f"Wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
