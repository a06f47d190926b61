"""``robustness tsne``: t-SNE of penultimate features, clean vs adversarial, with the
low-density scores that measure what the picture shows."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robustness.cli.common import (
    add_checkpoint_option,
    add_data_options,
    add_out_option,
    add_seed_option,
    add_split_seed_option,
    as_typed,
    load_model_and_data,
)
from robustness.core.argtypes import count_or_all, number, positive_int


def add_tsne_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness tsne`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "tsne", help="t-SNE of clean vs adversarial features, and how far off the data "
                     "adversarial examples lie",
        description="Embed the penultimate-layer features (input of the last nn.Linear, or "
                    "--layer) of clean test images and their successful adversarial versions "
                    "with t-SNE, and measure in the original feature space how far they lie "
                    "from the clean training data: the median distance to the k-th nearest "
                    "clean training feature (adversarial / clean, bootstrap 95% CI) and the "
                    "fraction of points whose k nearest training neighbours mostly disagree "
                    "with the model. Writes OUT/tsne.json, OUT/tsne.png, OUT/tsne.safetensors "
                    "and OUT/report.html.")
    add_checkpoint_option(p)
    add_data_options(p)
    p.add_argument("--attack", default="pgd",
                   help="attack spec, e.g. 'pgd', 'pgd(steps=40)', 'fgsm', 'pgd-l2' "
                        "(default: %(default)s)")
    p.add_argument("--eps", type=number, required=True,
                   help="the attack's budget in its norm, e.g. 0.3")
    p.add_argument("--n", type=count_or_all, default=2000,
                   help="points to embed: n/2 clean test images and their adversarial "
                        "versions ('all': every test image); more than twice the test split "
                        "is an error (default: %(default)s)")
    p.add_argument("--layer", default=None,
                   help="module name (as in model.named_modules()) whose output is the "
                        "feature (default: the input of the last nn.Linear)")
    p.add_argument("--include-fooling", action="store_true",
                   help="also evolve one fooling image per class from noise and embed them")
    # reports.tsne.BACKENDS, spelled out: the CLI stays numpy-free at import.
    p.add_argument("--backend", choices=("auto", "opentsne", "sklearn"), default="auto",
                   help="t-SNE implementation (default: openTSNE when installed, else "
                        "scikit-learn)")
    p.add_argument("--k", type=positive_int, default=10,
                   help="neighbours for the density scores (default: %(default)s)")
    p.add_argument("--perplexity", type=number, default=None,
                   help="t-SNE perplexity (default: 30, or (points - 1) / 3 when fewer)")
    add_seed_option(p, "the attack, t-SNE and the bootstrap")
    add_split_seed_option(p)
    add_out_option(p)
    return p


def cmd_tsne(args: argparse.Namespace) -> int:
    """``robustness tsne``: all-or-nothing into ``--out``."""
    from robustness.core.io import run_directory

    with run_directory(args.out, overwrite=args.overwrite) as out:
        return _tsne(args, out)


def _tsne(args: argparse.Namespace, out: Path) -> int:
    from attacks.registry import parse_attack_spec
    from reports.page import write_run_page
    from robustness.core.validation import invalid
    from robustness.tsne import check_tsne_options, run_tsne

    owner = "robustness tsne"
    with as_typed(f"--attack {args.attack!r}", f"--eps {args.eps:g}"):
        spec = parse_attack_spec(args.attack)  # a typo fails before anything loads
        if "eps" in spec.kwargs:
            raise invalid(owner, "--attack", f"a spec without its own eps (--eps {args.eps:g} "
                          f"sets the budget)", spec.label)
        spec.build(args.eps, seed=args.seed)
    loaded, data = load_model_and_data(args, "tsne")
    assert data is not None
    what = loaded.meta.architecture if loaded.meta else type(loaded.model).__name__
    have = len(data.x_test)
    n = 2 * have if args.n is None else args.n
    if n > 2 * have:
        raise invalid(owner, "--n", f"at most {2 * have} points ({have} test images of "
                      f"{data.name} and their adversarial versions), or 'all'", args.n)
    if n < 8:
        raise invalid(owner, "--n", "at least 8 points", n)
    check_tsne_options(loaded.model, n, layer=args.layer, perplexity=args.perplexity,
                       backend=args.backend, owner=owner, prefix="--")
    print(f"t-SNE of {args.model} ({what}) on {n // 2} {data.name} test images "
          f"and their {spec.label} eps {args.eps:g} adversarial versions:")
    result = run_tsne(loaded.model, data, attack=args.attack, eps=args.eps, n=n, layer=args.layer,
                      include_fooling=args.include_fooling, backend=args.backend, k=args.k,
                      perplexity=args.perplexity, seed=args.seed,
                      model_name=f"{args.model} ({what})", echo=print)
    result.save(out)
    write_run_page(out, name=args.out.name)
    print(f"Wrote {args.out}/tsne.json, tsne.png, tsne.safetensors and report.html")
    return 0
