"""The IDX file format (MNIST's): parsing, validation with clear errors, and a shared cache.

Plain or gzip-compressed files (detected from the content, not the suffix). Every
malformed file raises :class:`DataFormatError` naming the file, what was expected and
what was found.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from robustness.core.validation import ParameterError

# IDX type byte -> element dtype; multi-byte types are big-endian on disk.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"



class DataFormatError(ParameterError):
    """A data file exists but its content is malformed; the message names the file.

    A :class:`ParameterError` (hence a :class:`ValueError`), so code that reports bad user
    input catches it too.
    """


def bad_file_error(what: str, path: Path | str, expected: str, got: str) -> DataFormatError:
    """The standard message, adapted to file content: what, where, expected, received."""
    return DataFormatError(f"{what} {path} must be {expected}. Got {got} instead.")


def _parse_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (gzip detected by its magic bytes); may return a read-only view."""
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise bad_file_error("The gzip-compressed IDX file", path, "a complete gzip stream",
                            f"a truncated or corrupt one ({exc})") from None
    what = "The IDX file"
    if len(raw) < 4:
        raise bad_file_error(what, path, "at least a 4-byte header",
                        f"{len(raw)} bytes (file truncated)")
    type_code, ndim = raw[2], raw[3]
    if raw[0] != 0 or raw[1] != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise bad_file_error(what, path, "an IDX file whose magic number is 00 00 TT DD (TT a type "
                        "code in 08/09/0b/0c/0d/0e, DD >= 1 dimensions)",
                        f"magic bytes {raw[:4].hex(' ')} (not an IDX file)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise bad_file_error(what, path, f"a {header}-byte header for {ndim} dimensions",
                        f"{len(raw)} bytes (file truncated)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[type_code]
    count = math.prod(dims)
    expected, actual = count * dtype.itemsize, len(raw) - header
    if actual != expected:
        problem = "file truncated" if actual < expected else "trailing bytes: corrupt file"
        raise bad_file_error(what, path, f"{expected} data bytes for shape {dims} of {dtype.name}",
                        f"{actual} ({problem})")
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)
    if dtype.itemsize > 1:
        array = array.astype(dtype.newbyteorder("="))  # big-endian on disk -> native
    return array


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    Parameters
    ----------
    path
        The file. Compression is detected from the content, not the suffix.

    Returns
    -------
    numpy.ndarray
        A fresh, writable array of the shape ``(d1, ..., dn)`` stored in the header, in
        native byte order: ``(N, H, W)`` uint8 for image files, ``(N,)`` uint8 for labels.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    DataFormatError
        Bad magic number, unknown type code, truncated or over-long data, corrupt gzip.
        The message names ``path``.
    """
    array = _parse_idx(Path(path))
    return array if array.flags.writeable else array.copy()


@functools.lru_cache(maxsize=8)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """Parsed IDX file, keyed on (path, mtime, size) so a rewritten file is re-read.

    Read-only: the cache is shared, callers must convert into new arrays.
    """
    del mtime_ns, size  # only part of the cache key
    array = _parse_idx(Path(path))
    array.flags.writeable = False
    return array


def read_idx_shared(path: Path) -> np.ndarray:
    """The cached, read-only parse of ``path`` (callers copy into new arrays)."""
    st = path.stat()
    return _read_idx_cached(str(path), st.st_mtime_ns, st.st_size)
