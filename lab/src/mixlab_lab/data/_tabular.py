"""Tabular and scikit-learn readers: the bundled digits / wine / breast-cancer / iris sets, and CSV.

Each reader returns an unsplit ``{"x", "y", "classes", "source"}`` entry; the caller makes
the seeded stratified split. Features stay raw float64 here: standardisation with the
*training* statistics happens after the split and the options.
"""
from __future__ import annotations

import codecs
import csv
import io
import itertools
import math
import os
from array import array
from pathlib import Path

import numpy as np
import torch

from . import _limits
from ._limits import clip, short_list, short_repr

__all__ = ["SKLEARN_SETS", "load_sklearn", "load_csv"]

# mixlab name -> scikit-learn loader function name
SKLEARN_SETS = {"digits": "load_digits", "wine": "load_wine", "breast-cancer": "load_breast_cancer",
                "iris": "load_iris"}


def load_sklearn(name: str) -> dict:
    """One of scikit-learn's bundled sets (shipped inside its wheel, no download).

    ``digits`` becomes uint8 images ``(1797, 1, 8, 8)``: the 0..16 grey levels scaled to 0..255
    (``round(v * 255 / 16)``); the others float64 features ``(N, F)``.
    """
    try:
        from sklearn import datasets as skd
    except ImportError as e:
        raise ImportError(f"dataset {name!r} needs scikit-learn: pip install scikit-learn "
                          "(or pip install scikit-learn)") from e
    loader = SKLEARN_SETS[name]
    bunch = getattr(skd, loader)()
    y = torch.as_tensor(np.asarray(bunch.target), dtype=torch.int64)
    if name == "digits":
        x = torch.from_numpy(np.rint(np.asarray(bunch.images) * (255.0 / 16.0)).astype(np.uint8))[:, None]
        classes = [str(c) for c in bunch.target_names]
    else:
        x = torch.as_tensor(np.asarray(bunch.data, dtype=np.float64))
        classes = [str(c) for c in bunch.target_names]
    return {"x": x, "y": y, "classes": classes, "source": f"sklearn.datasets.{loader}"}


def split_csv_spec(data_dir, label_column: str | None) -> tuple[Path, str | None]:
    """Accept ``path::column`` in ``data_dir``; an explicit ``label_column`` must agree with it."""
    text = os.fspath(data_dir)
    if "::" in text:
        text, col = text.rsplit("::", 1)
        if label_column is not None and label_column != col:
            raise ValueError(f"label_column={short_repr(label_column)} disagrees with the column {short_repr(col)} "
                             f"given in data_dir {short_repr(os.fspath(data_dir), 240)}")
        label_column = col
    return Path(text), label_column


def _parse_float(text: str, path: Path, row: int, column: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"CSV {path}: row {row}, feature column {short_repr(column)}: expected a number, "
                         f"got {short_repr(text)} (only the label column may hold text)") from None


def _canonical_label(text: str) -> tuple[str, bool | None]:
    """``(class name, is_integer)``: a number is written canonically, so ``1``, ``1.0``, ``01`` and
    ``1e0`` are one class ``"1"``; ``is_integer`` is None for text. NaN / infinity give ``("", None)``
    (a missing value)."""
    try:
        v = float(text)
    except ValueError:
        return text, None
    if not math.isfinite(v):
        return "", None
    if v.is_integer():
        return str(int(v)), True
    return repr(v), False


def _label_names(raw: list[str]) -> tuple[list[str], dict[str, int]]:
    """Sorted distinct labels (numerically when all are numbers) and their ids 0..n-1."""
    distinct = set(raw)
    try:
        order = sorted(distinct, key=float)
    except ValueError:
        order = sorted(distinct)
    return order, {name: i for i, name in enumerate(order)}


def _check_label_column(path: Path, label_column: str, header: list[str], raw: list[str], labels: list[str],
                        integer: list) -> None:
    """Refuse a label column that looks continuous: a non-integer number in an all-number column, or
    more distinct values than half the rows."""
    how = (f"pick the label column with label_column='<name>' (CLI: --data-dir '{path}::<name>'); "
           f"columns: {short_list(header, 12)}")
    if all(i is not None for i in integer) and not all(integer):
        r = integer.index(False)
        raise ValueError(f"CSV {path}: label column {short_repr(label_column)} looks continuous: row {r + 2} holds "
                         f"the non-integer number {short_repr(raw[r])}; class labels must be names or integers; {how}")
    distinct = len(set(labels))
    if distinct > len(labels) / 2:
        raise ValueError(f"CSV {path}: label column {short_repr(label_column)} has {distinct} distinct values in "
                         f"{len(labels)} rows (more than half the rows), so it looks continuous or like an "
                         f"identifier, not a class label; {how}")


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark; anything else is refused naming
    the encoding problem (a UTF-16/32 byte-order mark, NUL bytes, the first byte that is not UTF-8)."""
    data = _limits.read_capped(path, f"CSV {path}")  # its size checked first: _limits.MAX_FILE_BYTES
    for boms, name in (((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE), "UTF-32"),
                       ((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE), "UTF-16")):
        if data.startswith(boms):
            raise ValueError(f"CSV {path}: {name} text (it starts with a {name} byte-order mark); save it as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise ValueError(f"CSV {path}: holds NUL bytes (the first at offset {nul}, line {line}): a binary file, or "
                         "UTF-16/32 text without a byte-order mark; expected UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"CSV {path}: not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} (line {line}) "
                         "is not valid UTF-8 (Latin-1 or Windows-1252 text?); save it as UTF-8") from None


def _rows(path: Path, text: str, delimiter: str):
    """The non-blank rows; a row the csv module refuses is a ``ValueError`` naming the file and line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if "field larger than field limit" in str(e):
                raise ValueError(f"CSV {path}: line {reader.line_num}: a field longer than {csv.field_size_limit()} "
                                 "characters (the csv module's field_size_limit); expected numbers and one label "
                                 "column") from None
            raise ValueError(f"CSV {path}: line {reader.line_num}: not readable as CSV ({clip(e)})") from None
        if row and any(cell.strip() for cell in row):
            yield row


def load_csv(path: Path, label_column: str | None) -> dict:
    """A CSV file with a header row; every column but the label column must be numeric.

    Args:
        path: the ``.csv`` file, UTF-8 (a byte-order mark is allowed; UTF-16/32, NUL bytes and
            other encodings are refused naming the problem), at most ``_limits.MAX_FILE_BYTES``;
            the delimiter is whichever of ``,`` ``;`` or tab occurs most in the header line.
        label_column: header name of the label column; None takes the last column.

    Returns:
        ``{"x": float64 (N, F), "y": int64 (N,), "classes", "source", "features"}``; labels are
        the sorted distinct values of the label column mapped to 0..n-1. Numbers are class
        *names* here, written canonically (``1``, ``1.0`` and ``01`` are the one class ``"1"``;
        ``-1``/``1`` are two classes ``"-1"``, ``"1"``), so no label can fall outside
        ``0..n-1``.

    Raises:
        ValueError (naming the file, and the row or column): an empty, NaN or infinite label
        cell; a label column that looks continuous (a non-integer number when every label is a
        number, or more distinct values than half the rows), with how to pick another column.
    """
    if not path.is_file():
        raise FileNotFoundError(f"dataset 'csv': no file at {path}. Pass data_dir='path/to/file.csv' "
                                "(optionally 'file.csv::label_column'), a CSV with a header row.")
    text = _read_text(path)
    first = io.StringIO(text, newline="").readline()
    # the header's most frequent of , ; tab is the delimiter (',' when none occurs)
    delimiter = max(",;\t", key=lambda d: (first.count(d), d == ","))
    rows = _rows(path, text, delimiter)
    head, row1 = next(rows, None), next(rows, None)
    if row1 is None:
        raise ValueError(f"CSV {path}: expected a header row and at least one data row, got "
                         f"{0 if head is None else 1} rows")
    header = [h.strip() for h in head]
    if label_column is None:
        label_column = header[-1]
    if label_column not in header:
        raise ValueError(f"CSV {path}: label_column {short_repr(label_column)} is not in the header "
                         f"{short_list(header, 12)}")
    li = header.index(label_column)
    features = [h for i, h in enumerate(header) if i != li]
    if not features:
        raise ValueError(f"CSV {path}: no feature columns besides the label column {short_repr(label_column)}")
    xs, labels, raw, integer = array("d"), [], [], []  # features as 8-byte floats, not Python objects
    for r, row in enumerate(itertools.chain([row1], rows), start=2):
        if len(row) != len(header):
            raise ValueError(f"CSV {path}: row {r} has {len(row)} fields, the header has {len(header)}")
        cell = row[li].strip()
        label, is_int = _canonical_label(cell)
        if not label:
            raise ValueError(f"CSV {path}: row {r}, label column {short_repr(label_column)}: expected a class label, "
                             f"got {'an empty cell' if not cell else short_repr(cell)} (a missing label); fill or "
                             "drop the row")
        raw.append(cell)
        labels.append(label)
        integer.append(is_int)
        xs.extend(_parse_float(v, path, r, header[i]) for i, v in enumerate(row) if i != li)
    x = torch.from_numpy(np.frombuffer(xs, dtype=np.float64).reshape(len(labels), len(features)).copy())
    if not torch.isfinite(x).all():
        raise ValueError(f"CSV {path}: features hold NaN or infinite values; fill or drop them first")
    _check_label_column(path, label_column, header, raw, labels, integer)
    classes, ids = _label_names(labels)
    y = torch.tensor([ids[v] for v in labels], dtype=torch.int64)
    return {"x": x, "y": y, "classes": classes, "source": str(path.resolve()), "features": features}
