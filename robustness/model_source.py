"""What ``--model`` (and a gate's ``model =``) can name, loaded into one ``nn.Module``.

Three kinds, told apart by what the name points at:

* a **checkpoint** written by ``robustness train`` (a ``.safetensors`` file or a run
  directory holding ``model.safetensors``);
* a trained **ensemble** directory (``ensemble.json`` beside ``members/``, written by
  ``ensembles.train_members`` or ``robustness experiment ensembles`` under
  ``OUT/members/SAMPLING``), combined with ``aggregation`` (mean, max, vote, logit_mean)
  from its first ``members`` members;
* a user's own architecture, ``pkg.module:factory``: the factory is imported from the
  user's environment (the working directory included) and called with no arguments; it
  returns an ``nn.Module`` whose weights are loaded from ``weights`` (safetensors, never
  unpickled). A weights file
  written by :func:`robustness.checkpoint.save_checkpoint` keeps its metadata and checksum.

Each comes with :class:`~robustness.checkpoint.CheckpointMeta` where one is known, so
commands can test on the model's held-out split; an ensemble's training data is checked
by digest (:func:`check_training_split`).
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustness.checkpoint import FORMAT, CheckpointMeta, load_checkpoint, read_meta
from robustness.core.validation import ParameterError, invalid

FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
KINDS = ("checkpoint", "ensemble", "factory")


@dataclass(frozen=True)
class LoadedModel:
    """A model as ``--model`` named it.

    Attributes
    ----------
    model
        In eval mode.
    meta
        What is known about it (``None``: a factory model with plain weights, which
        records neither its data nor its input shape).
    kind
        ``"checkpoint"``, ``"ensemble"`` or ``"factory"``.
    name
        How reports call it (the path or ``pkg.module:factory``).
    train_digest
        For ensembles: SHA-256 of the tensors the members were trained on.
    info
        Provenance for reports (``model_info``).
    """

    model: nn.Module
    meta: CheckpointMeta | None
    kind: str
    name: str
    train_digest: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


def is_factory(spec: str | os.PathLike[str]) -> bool:
    """``pkg.module:factory`` (and not an existing path)."""
    text = str(spec)
    return bool(FACTORY.match(text)) and not Path(text).exists()


def load_model(spec: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None,
               aggregation: str | None = None, members: int | None = None,
               owner: str = "load_model", option: str = "model") -> LoadedModel:
    """Load what ``spec`` names (see the module docstring).

    Parameters
    ----------
    spec
        Checkpoint path, ensemble directory, or ``pkg.module:factory``.
    weights
        The safetensors weights of a factory model (required for one, refused otherwise).
    aggregation
        For ensembles (default ``"mean"``); refused for single models.
    members
        For ensembles: use the first ``members`` members (default all).
    owner, option
        How errors name the command and option (``"robustness evaluate"``, ``"--model"``).

    Raises
    ------
    ParameterError
        A name of the wrong kind, a missing or unusable file, options that do not apply.
    CheckpointError
        A corrupt or tampered checkpoint.
    """
    text = str(spec)
    if is_factory(text):
        if aggregation is not None or members is not None:
            raise invalid(owner, "--aggregation" if aggregation is not None else "--members",
                          "left out: it applies to ensemble directories only", text)
        return _load_factory(text, weights, owner, option)
    if weights is not None:
        raise invalid(owner, "--weights", f"left out: {option} {text} is not a "
                      f"'pkg.module:factory' (--weights goes with a factory)", str(weights))
    path = Path(text)
    from ensembles.members import MANIFEST

    if path.is_dir() and (path / MANIFEST).is_file():
        return _load_ensemble(path, aggregation, members, owner)
    if aggregation is not None or members is not None:
        raise invalid(owner, "--aggregation" if aggregation is not None else "--members",
                      f"left out: {text} is a single model, not an ensemble directory (with "
                      f"{MANIFEST})", aggregation if aggregation is not None else members)
    model, meta = load_checkpoint(path)
    return LoadedModel(model=model, meta=meta, kind="checkpoint", name=text,
                       info={"checkpoint": text, **meta.to_dict()})


def _load_ensemble(path: Path, aggregation: str | None, members: int | None,
                   owner: str) -> LoadedModel:
    import json

    from ensembles.members import MANIFEST, load_members, member_path

    agg = aggregation or "mean"
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        ensemble = load_members(path, members, aggregation=agg)
    except ParameterError as e:
        raise invalid(owner, "--model", "an ensemble directory with its members saved",
                      f"{path} ({e})", raw=True) from None
    except (OSError, json.JSONDecodeError) as e:
        raise invalid(owner, "--model", f"an ensemble directory with a readable {MANIFEST}",
                      f"{path} ({e})", raw=True) from None
    # Metadata only: the members were already built and verified by load_members.
    first_meta = read_meta(member_path(path, 0))
    n = len(ensemble.members)
    meta = CheckpointMeta(
        architecture=f"ensemble of {n} {manifest.get('architecture', '?')} ({agg})",
        input_shape=first_meta.input_shape, num_classes=first_meta.num_classes,
        classes=first_meta.classes, dataset="", seed=manifest.get("seed"),
        versions=first_meta.versions,
        extra={"ensemble": str(path), "members": n, "aggregation": agg,
               "plan": manifest.get("plan"), "epochs": manifest.get("epochs")})
    info = {"ensemble": str(path), **meta.to_dict()}
    return LoadedModel(model=ensemble, meta=meta, kind="ensemble", name=str(path),
                       train_digest=manifest.get("data_digest"), info=info)


def _load_factory(spec: str, weights: str | os.PathLike[str] | None, owner: str,
                  option: str) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    if weights is None:
        raise invalid(owner, "--weights", f"given: {option} {spec} builds an untrained model; "
                      f"--weights FILE.safetensors holds its trained weights", None)
    import sys

    if "" not in sys.path and os.getcwd() not in sys.path:
        # As `uvicorn module:app` does: a module beside the user is found without PYTHONPATH.
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise invalid(owner, option, "an importable 'pkg.module:factory' (is the module on "
                      "PYTHONPATH or installed?)", f"{spec!r} ({e})", raw=True) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise invalid(owner, option, f"'pkg.module:factory' naming a callable in {module_name}",
                      f"{spec!r} ({attr!r} is {'missing' if factory is None else 'not callable'})",
                      raw=True)
    try:
        model = factory()
    except Exception as e:  # the user's code: say whose failure it is
        raise invalid(owner, option, "a factory that can be called with no arguments",
                      f"{spec!r}, which raised {type(e).__name__}: {e}", raw=True) from None
    if not isinstance(model, nn.Module):
        raise invalid(owner, option, "a factory returning a torch.nn.Module",
                      f"{spec!r}, which returned {type(model).__name__}", raw=True)
    file = Path(weights)
    if not file.is_file():
        raise invalid(owner, "--weights", "an existing .safetensors file", str(file), raw=True)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            ours = (f.metadata() or {}).get("format") == FORMAT  # save_checkpoint's header
    except (SafetensorError, OSError) as e:
        raise invalid(owner, "--weights", "a safetensors file", f"{file} ({e})",
                      raw=True) from None
    meta: CheckpointMeta | None = None
    if ours:  # metadata and checksum verified, weights fitted to the user's module
        model, meta = load_checkpoint(file, model=model)
    else:
        from safetensors.torch import load_file

        state = load_file(str(file))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise invalid(owner, "--weights", f"weights that fit {spec} (every parameter and "
                          f"buffer, same shapes)", f"{file}: {first}", raw=True) from None
        if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
            raise invalid(owner, "--weights", "finite weights", f"{file} with NaN or inf "
                          "values", raw=True)
    model.eval()
    info = {"factory": spec, "weights": str(file), "description": type(model).__name__,
            **(meta.to_dict() if meta is not None else {})}
    return LoadedModel(model=model, meta=meta, kind="factory", name=spec, info=info)


def for_data(loaded: LoadedModel, data_name: str,
             split_seed: int | None = None) -> CheckpointMeta | None:
    """The metadata the data split is chosen by: an ensemble is taken to have been trained
    on ``data_name`` split with its manifest's seed (or ``split_seed``), which
    :func:`check_training_split` then verifies by digest."""
    if loaded.kind == "ensemble" and loaded.meta is not None:
        seed = loaded.meta.seed if split_seed is None else split_seed
        return replace(loaded.meta, dataset=data_name, seed=seed)
    return loaded.meta


def check_training_split(loaded: LoadedModel, x_train: torch.Tensor, y_train: torch.Tensor,
                         *, owner: str, seed: int) -> None:
    """Refuse an ensemble whose members were not trained on exactly ``(x_train, y_train)``:
    only then is the test split known to hold none of their training images."""
    if loaded.kind != "ensemble" or loaded.train_digest is None:
        return
    from ensembles.members import data_digest

    if data_digest(x_train, y_train) != loaded.train_digest:
        raise invalid(owner, "--data", f"the data the ensemble in {loaded.name} was trained "
                      f"on (its members' training tensors differ from this dataset's training "
                      f"split with seed {seed}, so its test split may hold their training "
                      f"images; pass --split-seed with the seed the data was split with)",
                      "other data", raw=True)


def probe(loaded: LoadedModel, x: torch.Tensor, num_classes: int, *, owner: str,
          option: str = "--model") -> None:
    """Run the model on a couple of images: it must map ``(N, C, H, W)`` to ``(N, K)``;
    errors name ``option``, the option the model came from."""
    try:
        with torch.no_grad():
            out = loaded.model(x[:2])
    except Exception as e:  # the user's model on our data: name both
        raise invalid(owner, option, f"a model that accepts images of shape "
                      f"{tuple(x.shape[1:])}", f"{loaded.name}, which raised "
                      f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                      raw=True) from None
    if not isinstance(out, torch.Tensor) or out.shape != (len(x[:2]), num_classes):
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else \
            type(out).__name__
        raise invalid(owner, option, f"a model returning logits of shape (N, {num_classes}) "
                      f"for this data", f"{loaded.name}, which returned {got}", raw=True)


__all__ = ["KINDS", "LoadedModel", "check_training_split", "for_data", "is_factory",
           "load_model", "probe"]
