"""IDX files (MNIST, Fashion-MNIST, KMNIST): a strict reader and a small writer.

Format (LeCun's MNIST page): two zero bytes, a dtype code byte, a byte giving the number of
dimensions ``d``, then ``d`` big-endian uint32 sizes, then the data in big-endian order.
The reader checks every part and the exact byte count, so a truncated or corrupt file fails
with a ``ValueError`` that names the file and says what was wrong, instead of yielding a
silently short or garbled array. Files may be gzip-compressed (``.gz``) or plain. The sizes the
header gives are checked against ``_limits.MAX_FILE_BYTES`` and ``MAX_TOTAL_BYTES`` before the
data is read; gzip streams are decompressed incrementally, never far past what the header needs.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from . import _limits
from ._limits import clip, short_repr

__all__ = ["read_idx", "write_idx", "DataWriteError", "IDX_FILES", "find_idx_files", "load_idx_dir"]

# dtype code -> big-endian numpy dtype
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}

# The four standard files, by role, without extension.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class DataWriteError(OSError, ValueError):
    """A data file that could not be written: an ``OSError`` (same errno) whose ``filename`` is the file,
    and a ``ValueError`` so that the lab prints it as one line, ``mixlab: <file>: <reason>``."""


def _read_exact(f, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the stream)."""
    parts, got = [], 0
    while got < n:
        block = f.read(min(n - got, 1 << 22))
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


def _count_rest(f, limit: int) -> int:
    """How many bytes are left in ``f``, counted up to ``limit + 1`` (read in blocks, not kept)."""
    count = 0
    while count <= limit:
        block = f.read(min(1 << 20, limit + 1 - count))
        if not block:
            break
        count += len(block)
    return count


def read_idx(path: str | os.PathLike, budget: _limits.ByteBudget | None = None) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a native-endian numpy array.

    The header is read first: a file whose header shape needs more than ``_limits.MAX_FILE_BYTES``
    (64 MiB), or more than ``budget`` has left, is refused before its data is read; a gzip file is
    decompressed incrementally, never past the size the header gives (plus the cap, to report
    trailing bytes), so a small ``.gz`` holding gigabytes of zeros is not expanded in memory.

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.
        budget: the bytes the whole dataset may still read (``_limits.MAX_TOTAL_BYTES``).

    Returns:
        An array of the file's dtype and shape (e.g. uint8 ``(60000, 28, 28)``).

    Raises:
        ValueError: bad magic number, unknown dtype code, a data size that does not match
            the header (the message names the file and both byte counts), a corrupt gzip
            stream, or a size above the caps.
    """
    path = Path(path)
    with open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        if not gz:
            return _read_idx_stream(path, raw, os.fstat(raw.fileno()).st_size, budget)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                return _read_idx_stream(path, f, None, budget)
        except (EOFError, OSError, zlib.error) as e:  # truncated stream, bad CRC, bad deflate data
            raise ValueError(f"IDX file {path}: corrupt or truncated gzip data ({clip(e)})") from None


def _read_idx_stream(path: Path, f, size: int | None, budget) -> np.ndarray:
    """The IDX reader proper: ``f`` is the (decompressed) stream, ``size`` its length when known."""
    head = _read_exact(f, 4)
    if len(head) < 4:
        raise ValueError(f"IDX file {path}: {len(head)} bytes, too short for the 4-byte magic number")
    zero, code, ndim = head[:2], head[2], head[3]
    if zero != b"\x00\x00" or code not in _DTYPES:
        raise ValueError(
            f"IDX file {path}: bad magic number 0x{head.hex()}; expected 0x0000 followed by a "
            f"dtype code in {sorted(hex(c) for c in _DTYPES)} and the number of dimensions"
        )
    header = 4 + 4 * ndim
    sizes = _read_exact(f, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise ValueError(f"IDX file {path}: header says {ndim} dimensions ({header} header bytes) "
                         f"but the file has only {4 + len(sizes)} bytes")
    dims = struct.unpack(f">{ndim}I", sizes)
    dtype = _DTYPES[code]
    expected = int(np.prod(dims, dtype=object)) * dtype.itemsize  # exact: no int64 overflow for 255 dims
    shape = short_repr(tuple(dims))
    if size is not None:  # a plain file: its size says everything before any data is read
        found = size - header
        if found != expected:
            what = "truncated" if found < expected else "trailing bytes"
            raise ValueError(f"IDX file {path}: header shape {shape} of {dtype.name} needs {expected} "
                             f"data bytes, found {found} ({what})")
    _limits.check_file_bytes(f"IDX file {path}", header + expected,
                             detail=f" by its header shape {shape} of {dtype.name}")
    (budget or _limits.ByteBudget()).take(f"IDX file {path}", header + expected)
    data = _read_exact(f, expected)
    if len(data) < expected:
        raise ValueError(f"IDX file {path}: header shape {shape} of {dtype.name} needs {expected} "
                         f"data bytes, found {len(data)} (truncated)")
    if size is None:
        extra = _count_rest(f, _limits.MAX_FILE_BYTES)
        if extra:
            found = f"more than {expected + extra - 1}" if extra > _limits.MAX_FILE_BYTES else str(expected + extra)
            raise ValueError(f"IDX file {path}: header shape {shape} of {dtype.name} needs {expected} "
                             f"data bytes, found {found} (trailing bytes)")
    arr = np.frombuffer(data, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``).

    Written atomically (temporary file, then ``os.replace``). A failed write (a full disk, a
    file-size limit) removes the temporary file and raises :class:`DataWriteError` naming ``path``.
    """
    array = np.asarray(array)
    key = array.dtype.newbyteorder("=")
    if key not in _CODES:
        raise TypeError(f"write_idx: array dtype must be one of uint8, int8, int16, int32, float32, "
                        f"float64, got {array.dtype}")
    code = _CODES[key]
    payload = (struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
               + array.astype(_DTYPES[code], copy=False).tobytes())
    path = Path(path)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except OSError as e:  # a full disk, a file-size limit, a read-only folder: name the file, leave no .tmp
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise DataWriteError(e.errno, f"cannot write the IDX file ({e.strerror or clip(e)})", str(path)) from None


def find_idx_files(directory: str | os.PathLike) -> dict[str, Path] | None:
    """The four standard IDX files in ``directory`` (``.gz`` or plain), or None if any is missing."""
    directory = Path(directory)
    found = {}
    for role, stem in IDX_FILES.items():
        for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
            if (directory / name).is_file():
                found[role] = directory / name
                break
        else:
            return None
    return found


def load_idx_dir(files: dict[str, Path], num_classes: int | None = None) -> dict:
    """Read the four files into uint8 images ``(N, 1, H, W)`` and int64 labels, checked for agreement.

    Checked (``ValueError`` naming the file, ``TypeError`` for non-integer labels): at least one
    image per split, of at least 1x1 pixels, the same size in both splits; one label per image;
    labels in ``0..num_classes-1`` (when given); every test class present in the training labels.
    """
    budget = _limits.ByteBudget()
    arrays = {role: read_idx(path, budget) for role, path in files.items()}
    out = {}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        xf, yf = files[f"x_{split}"], files[f"y_{split}"]
        if x.ndim != 3 or x.dtype != np.uint8:
            raise ValueError(f"IDX file {xf}: expected uint8 images (N, H, W), got {x.dtype} {x.shape}")
        if len(x) == 0:
            raise ValueError(f"IDX file {xf}: holds 0 images; expected at least one {split} image")
        if x.shape[1] < 1 or x.shape[2] < 1:
            raise ValueError(f"IDX file {xf}: images of {x.shape[1]}x{x.shape[2]} pixels (H x W); expected a "
                             "height and width of at least 1")
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"IDX file {yf}: expected {len(x)} labels (one per image "
                             f"in {xf.name}), got shape {y.shape}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"IDX file {yf}: labels must be integers, got {y.dtype} (IDX dtype code "
                            f"0x{_CODES.get(y.dtype, 0):02x}); expected uint8 (0x08)")
        if num_classes is not None:
            bad = np.flatnonzero((y < 0) | (y >= num_classes))
            if len(bad):
                raise ValueError(f"IDX file {yf}: label {int(y[bad[0]])} at index {int(bad[0])} is outside "
                                 f"0..{num_classes - 1} ({num_classes} classes; {len(bad)} such label(s))")
        out[f"x_{split}"] = x[:, None]  # (N, 1, H, W)
        out[f"y_{split}"] = y.astype(np.int64)
    if out["x_train"].shape[2:] != out["x_test"].shape[2:]:
        (th, tw), (sh, sw) = out["x_train"].shape[2:], out["x_test"].shape[2:]
        raise ValueError(f"IDX file {files['x_test']}: test images are {sh}x{sw} (H x W) but the training images "
                         f"in {files['x_train'].name} are {th}x{tw}; both splits must have the same size")
    only_test = np.setdiff1d(out["y_test"], out["y_train"])
    if len(only_test):
        raise ValueError(f"IDX file {files['y_test']}: class {int(only_test[0])} is in the test labels but not in "
                         f"the training labels ({files['y_train'].name}); every class needs training examples "
                         f"({len(only_test)} such class(es): {only_test[:10].tolist()})")
    return out
