"""``robustness attack``: attack a checkpoint and save the adversarial examples."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from robustness.cli.common import (
    add_checkpoint_option,
    add_data_options,
    add_n_option,
    add_out_option,
    add_seed_option,
    add_split_seed_option,
    as_typed,
    load_model_and_data,
    test_images,
)
from robustness.core.argtypes import budget


def add_attack_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``robustness attack`` on the ``robustness`` command's sub-parsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "attack", help="attack a trained checkpoint and save the adversarial examples",
        description="Attack a checkpoint on a dataset's test split. Writes OUT/adversarial."
                    "safetensors (x_adv, labels, predictions, success, norms), OUT/summary."
                    "json and OUT/grid.png.")
    add_checkpoint_option(p)
    add_data_options(p)
    p.add_argument("--attack", required=True,
                   help="attack name: fgsm, pgd, pgd-l2, genetic, torchattacks:NAME, "
                        "foolbox:NAME (see --list-attacks)")
    p.add_argument("--eps", type=budget, default=None,
                   help="perturbation budget in the attack's norm (required by bounded attacks; "
                        "not with --param eps=...)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="extra attack hyperparameter, repeatable, e.g. --param steps=40 "
                        "--param step_size=0.01 (values parsed as JSON where possible)")
    add_n_option(p, "attack")
    add_seed_option(p, "the attack and the data split (the checkpoint's own split when --data is "
                       "its training set, so no training image is tested)")
    add_split_seed_option(p)
    add_out_option(p)
    return p


def cmd_attack(args: argparse.Namespace) -> int:
    """``robustness attack``: all-or-nothing into ``--out``."""
    from robustness.core.io import run_directory

    with run_directory(args.out, overwrite=args.overwrite) as out:
        return _attack(args, out)


def _attack(args: argparse.Namespace, out: Path) -> int:
    from attacks.registry import make_attack, parse_attack_kwargs
    from reports.figures import image_grid
    from robustness.core.io import write_json, write_tensors
    from robustness.core.validation import EPS_EXPECTED, invalid

    # The attack first: a typo or a conflict fails before the checkpoint and data load.
    kwargs = parse_attack_kwargs(args.param, owner="robustness attack", name="--param")
    if "eps" in kwargs and args.eps is not None:
        raise invalid("robustness attack", "--param eps", f"left out: --eps {args.eps:g} "
                      f"already sets the budget", kwargs["eps"])
    if args.eps is not None:
        kwargs["eps"] = args.eps
    kwargs.setdefault("seed", args.seed)
    typed = [f"--attack {args.attack}"] + ([f"--eps {args.eps:g}"] if args.eps is not None
                                           else []) + [f"--param {p}" for p in args.param]
    with as_typed(*typed):
        attack = make_attack(args.attack, **kwargs)
    if "eps" not in kwargs and attack.eps is not None:
        raise invalid("robustness attack", "--eps", f"given: {args.attack} is a bounded attack "
                      f"(its budget in the {attack.norm} norm)", None)
    if args.eps is None and attack.eps is not None and attack.eps <= 0:  # --eps is checked
        raise invalid("robustness attack", "--param eps", EPS_EXPECTED, attack.eps)  # by argparse

    loaded, data = load_model_and_data(args, "attack")
    assert data is not None
    model = loaded.model
    n = test_images(args, data, "attack")
    x, y = data.x_test[:n], data.y_test[:n]
    batch = attack(model, x, y)
    summary = {**batch.summary(), "robust_accuracy": batch.robust_accuracy(y),
               "clean_accuracy": float((model(x).argmax(1) == y).float().mean()),
               "attack_name": args.attack, "checkpoint": str(args.model),
               "dataset": data.to_dict_meta(), "model": loaded.info}
    import torch

    with torch.no_grad():  # the prediction's probability, for the report's example grid
        confidence = torch.softmax(model(batch.x_adv), 1).gather(
            1, batch.predictions.view(-1, 1)).squeeze(1)
    tensors = {"x": x, "x_adv": batch.x_adv, "confidence": confidence,
               "labels": y, "predictions": batch.predictions,
               "success": batch.success, "perturbation_norm": batch.perturbation_norm,
               "queries": batch.queries}
    if batch.targets is not None:
        tensors["targets"] = batch.targets
    write_tensors(out / "adversarial.safetensors", tensors)
    write_json(out / "summary.json", summary)
    k = min(20, len(x))
    titles = [f"{int(a)}->{int(b)}" + (" ok" if s else "") for a, b, s in
              zip(y[:k], batch.predictions[:k], batch.success[:k], strict=True)]
    image_grid(out / "grid.png", batch.x_adv[:k], titles, columns=10,
               suptitle=f"{args.attack} eps={batch.eps}: label->prediction")
    print(f"{batch.attack} on {len(x)} {data.name} test images: clean accuracy "
          f"{summary['clean_accuracy']:.3f}, robust accuracy {summary['robust_accuracy']:.3f}, "
          f"success rate {summary['success_rate']:.3f}, median perturbation "
          f"{summary['median_perturbation']:.4f} ({batch.norm}), {batch.wall_time_s:.1f} s.")
    print(f"Wrote {args.out}/adversarial.safetensors, summary.json, grid.png")
    return 0
