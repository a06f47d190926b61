"""``robustness fool``: evolve fooling images from noise (Nguyen et al. 2015) for a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robustness.cli.common import add_checkpoint_option, add_out_option, add_seed_option
from robustness.core.argtypes import int_list, number, positive_int


def add_fool_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness fool`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "fool", help="evolve fooling images from noise (Nguyen et al. 2015) for a checkpoint",
        description="Evolve, by MAP-Elites from random noise, one unrecognisable image per "
                    "class that the checkpoint classifies with at least --target-confidence. "
                    "Writes OUT/fooling.json (per class: confidence, generation reached, "
                    "queries), OUT/fooling.png (the grid) and OUT/fooling.safetensors (images).")
    add_checkpoint_option(p)
    p.add_argument("--classes", type=int_list, default=None,
                   help="comma-separated classes to fool, e.g. 0,3,7 (default: every class)")
    p.add_argument("--target-confidence", type=number, default=0.9999,
                   help="softmax probability each class must reach (default: %(default)s)")
    p.add_argument("--generations", type=positive_int, default=300,
                   help="maximum generations; the search stops once every class reached the "
                        "target (default: %(default)s)")
    p.add_argument("--population", type=positive_int, default=200,
                   help="candidates scored per generation, in one forward pass "
                        "(default: %(default)s)")
    p.add_argument("--encoding", choices=["direct", "lowres"], default="direct",
                   help="'direct' evolves every pixel (the paper's direct encoding); 'lowres' "
                        "evolves a 7x7 genome upsampled bilinearly, giving smoother images "
                        "(default: %(default)s)")
    add_seed_option(p, "the search")
    add_out_option(p)
    return p


def cmd_fool(args: argparse.Namespace) -> int:
    """``robustness fool``: all-or-nothing into ``--out``."""
    from robustness.core.io import run_directory

    with run_directory(args.out, overwrite=args.overwrite) as out:
        return _fool(args, out)


def _fool(args: argparse.Namespace, out: Path) -> int:
    import torch

    from attacks.fooling import FoolingImages
    from reports.figures import fooling_grid
    from robustness.cli.common import as_options, load_model_and_data
    from robustness.core.io import write_json, write_tensors

    loaded, _ = load_model_and_data(args, "fool", need_data=False)
    if loaded.meta is None:
        from robustness.core.validation import invalid

        raise invalid("robustness fool", "--weights", "a checkpoint written by save_checkpoint "
                      "(fooling images need the input shape the model was trained on, which "
                      "plain weights do not record)", str(args.weights), raw=True)
    model, meta = loaded.model, loaded.meta
    with as_options("FoolingImages", "robustness fool", ("classes", "population",
                    "generations", "target_confidence", "encoding", "seed")):
        search = FoolingImages(classes=args.classes, population=args.population,
                               generations=args.generations,
                               target_confidence=args.target_confidence,
                               encoding=args.encoding, seed=args.seed)
        result = search.generate(model, tuple(meta.input_shape))  # checks classes vs model
    names = list(meta.classes) if meta.classes else None
    summary = {**result.summary(), "search": repr(search), "checkpoint": str(args.model),
               "model": loaded.info}
    write_tensors(out / "fooling.safetensors",
                  {"images": result.images, "confidence": result.confidence,
                   "classes": torch.tensor(result.classes, dtype=torch.int64)})
    write_json(out / "fooling.json", summary)
    fooling_grid(result, out / "fooling.png")
    for i, c in enumerate(result.classes):
        label = names[c] if names and c < len(names) else str(c)
        when = (f"reached at generation {int(result.generations[i])}" if result.reached[i]
                else "not reached")
        print(f"  class {label:<12} confidence {float(result.confidence[i]):.6f}  {when}")
    print(f"{int(result.reached.sum())}/{len(result.classes)} classes reached "
          f"{result.target_confidence} in {result.model_calls} generations "
          f"({result.queries} queries, {result.wall_time_s:.1f} s).")
    print(f"Wrote {args.out}/fooling.json, fooling.png, fooling.safetensors")
    return 0
