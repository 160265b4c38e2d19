"""CIFAR-10 python pickle batches, read with a restricted unpickler.

The official ``cifar-10-batches-py`` files are Python 2 pickles of dicts holding a uint8
numpy array ``data`` (10000, 3072), a list ``labels`` and some strings. Plain ``pickle.load``
would run whatever a crafted file asks for (``__reduce__`` can call ``os.system``), so
``SafeUnpickler.find_class`` admits only numpy's array reconstruction: ``_reconstruct``
(old and new module path), ``_frombuffer`` (what protocol-5 pickles of arrays use),
``ndarray``, ``dtype``, and ``_codecs.encode`` (how Python 3 writes bytes into protocol-2
pickles). Dicts, lists, strings and numbers need no ``find_class`` at all. Anything else
raises :class:`CIFARPickleError` before any of the file's objects is called: a ``ValueError``
naming the file, like every other bad data file (the lab prints it as one line), and a
``pickle.UnpicklingError`` too.

Even those few callables are handed out only in guarded form, because each can make far more
data than the file holds: ``numpy.ndarray(shape, dtype, buffer, offset, strides)`` called
directly gives a zero-strided view, so a few hundred bytes decode as 100,000 images (six such
files: 600,000 images, 2.8 GB once concatenated); ``_reconstruct`` with a large shape allocates
it; ``_codecs.encode`` with ``hex``/``base64``/... nests into an exponential blow-up. So
``ndarray`` is only a type tag for ``_reconstruct`` (calling it is refused), ``_reconstruct``
accepts only the ``(0,)`` shape numpy writes (``__setstate__`` then fills it from bytes that
must match the shape exactly), ``dtype`` only plain numeric types, ``_codecs.encode`` only a
``str`` to ``latin1``; ``__setstate__`` (BUILD) reaches only numpy arrays of raw bytes and
plain dtypes (a crafted dtype state can flag ``uint8`` as holding Python objects), and a list
is refused as soon as it grows past ``MAX_ROWS`` items (hence Python's own unpickler class,
whose opcodes can be checked: about 0.1 s slower per 10,000-row batch, paid once before the
cache). After loading, a batch's ``data`` must be a C-contiguous array (no
views, no zero strides) of at most ``MAX_ROWS`` rows whose size does not exceed the bytes
read, and its ``labels`` a list (or integer array) of at most ``MAX_ROWS`` Python ints.

The unpickler's work is bounded too (see :class:`SafeUnpickler`): containers nested more than
``MAX_PICKLE_DEPTH`` (16) deep, or a load whose opcodes plus objects put into containers (a
shared reference counted each time) pass ``MAX_PICKLE_WORK`` (1 million), are refused before the
work is done: 200 bytes of ``t = (t, t)`` nested 64 times are 2**64 tuples to hash as a dict key.
Every value a message shows goes through ``_limits.short_repr`` (at most 120 characters).
Files (and tar members) above ``_limits.MAX_FILE_BYTES`` (64 MiB), or adding up to more than
``_limits.MAX_TOTAL_BYTES`` (512 MiB), are refused unread.

The class count is the largest label of the batches + 1: the class names (``label_names`` of
``batches.meta`` when present, else the ten CIFAR-10 names) must cover every label, and names
beyond the largest label are dropped (with a warning when ``batches.meta`` listed them), so a
``batches.meta`` of 100 names never makes a 100-class model for labels 0..9.

Batches are read from a folder (or its ``cifar-10-batches-py/``) or straight from the official
``cifar-10-python.tar.gz``. Train comes from ``data_batch_1`` .. ``data_batch_5``, test from ``test_batch``
(a common tutorial bug reads ``test_batch`` for both splits).
"""
from __future__ import annotations

import codecs
import io
import lzma
import numbers
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from . import _limits
from ._cache import cached, source_signature
from ._limits import clip, short_list, short_name, short_repr

__all__ = ["SafeUnpickler", "CIFARPickleError", "safe_load", "find_cifar_batches", "partial_cifar_batches",
           "missing_batches_error", "load_cifar_batches", "TRAIN_BATCHES"]

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_NAMES = (*TRAIN_BATCHES, "test_batch")
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


MAX_ROWS = 100_000  # rows per batch and list length; official batches hold 10,000
MAX_PICKLE_DEPTH = 16  # containers inside containers; a CIFAR batch nests 2 (dict > list), numpy's args 2
MAX_PICKLE_WORK = 1_000_000  # opcodes + objects put into containers (shared ones each time): a 10,000-row batch
#                              with its file names ~150,000 (protocol 2); one at the file cap (~21,800 rows) ~330,000
_CONTAINERS = (tuple, list, dict, set, frozenset)
_DTYPE_NAMES = {"b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8", "bool", "uint8", "int8",
                "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64"}


class CIFARPickleError(pickle.UnpicklingError, ValueError):
    """A CIFAR file the safe unpickler refused or could not read, with the file's path in the message.

    A ``ValueError`` like every other bad data file the readers report (``mixlab`` prints it as one
    line, status 2), and a ``pickle.UnpicklingError`` for callers that catch that.
    """


class _NdarrayTag:
    """Stands for ``numpy.ndarray`` inside a pickle: a type tag for ``_reconstruct``, never called."""

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(
            "refusing to call numpy.ndarray directly (it can make an array view with zero strides, far "
            "larger than the file; numpy's own pickles go through _reconstruct or _frombuffer)")


_NDARRAY = _NdarrayTag()


def _guard_reconstruct(real):
    def _reconstruct(subtype, shape, dtype):
        if subtype is not _NDARRAY or tuple(shape) != (0,):
            raise pickle.UnpicklingError(
                f"refusing numpy _reconstruct({'ndarray' if subtype is _NDARRAY else type(subtype).__name__}, "
                f"shape {short_repr(shape)}): numpy pickles "
                "write a plain ndarray of shape (0,) and fill it from the file's bytes")
        return real(np.ndarray, (0,), dtype)
    return _reconstruct


def _guard_frombuffer(real):
    def _frombuffer(buf, dtype, shape, order, axis_order=None):
        if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)) or not isinstance(dtype, np.dtype) \
                or dtype.kind not in "biuf":
            raise pickle.UnpicklingError("refusing numpy _frombuffer of anything but bytes of a numeric dtype")
        return real(buf, dtype, shape, order, axis_order)
    return _frombuffer


def _dtype(name, align=False, copy=True):
    if not isinstance(name, str) or name not in _DTYPE_NAMES:
        raise pickle.UnpicklingError(f"refusing numpy dtype {short_repr(name)}: only plain integer, float and "
                                     "bool types")
    return np.dtype(name, align, copy)


def _encode(obj, encoding="utf-8", errors="strict"):
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "latin_1"):
        raise pickle.UnpicklingError(
            f"refusing _codecs.encode({type(obj).__name__}, {short_repr(encoding)}): pickles write bytes as a str "
            "encoded to latin1, nothing else")
    return codecs.encode(obj, "latin1", errors)


def _check_build(inst, state) -> None:
    """BUILD (``__setstate__``) is admitted only for the arrays and dtypes numpy pickles make."""
    if isinstance(inst, np.dtype):
        if not isinstance(state, tuple) or not all(v is None or type(v) in (int, str) for v in state):
            raise pickle.UnpicklingError("refusing a numpy dtype state with fields or sub-arrays: only plain "
                                         "integer, float and bool types")
    elif isinstance(inst, np.ndarray):
        dtype = state[-3] if isinstance(state, tuple) and len(state) in (4, 5) else None
        if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in "biuf" \
                or not isinstance(state[-1], (bytes, bytearray, str)):
            raise pickle.UnpicklingError("refusing a numpy array state that is not raw bytes of a plain integer, "
                                         "float or bool type")
    else:
        raise pickle.UnpicklingError(f"refusing to set the state of a {type(inst).__name__}: a CIFAR batch needs "
                                     "it only for numpy arrays and dtypes")


class SafeUnpickler(pickle._Unpickler):  # the Python unpickler: its opcodes can be checked one by one
    """An unpickler that only reconstructs numpy arrays and plain built-in containers
    (through the guarded callables described in the module notes). Lists longer than
    ``MAX_ROWS`` are refused while they are read; ``__setstate__`` only reaches numpy arrays of
    raw bytes and plain dtypes (a crafted dtype state could flag ``uint8`` as holding objects).

    Work is bounded before it is done. Each container (tuple, list, dict, set, frozenset) gets a
    weight, the number of objects in it counted as ``repr`` or ``hash`` walks it (a reference shared
    n times counts n times), and a depth; a container deeper than ``MAX_PICKLE_DEPTH`` is refused,
    and so is the load once its opcodes plus the weights put into containers pass
    ``MAX_PICKLE_WORK`` (checked before the items are put in, i.e. before a key is hashed). A
    container may not change once it is inside another (plain data pickles never do that), so the
    weights stay exact: 64 levels of ``t = (t, t)`` are 200 bytes of pickle and 2**64 tuples to hash.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._work = 0
        self._sizes: dict[int, list] = {}  # id(container) -> [container, weight, depth, inside another]

    # ---- accounting -----------------------------------------------------------------------------
    def _charge(self, amount: int) -> None:
        self._work += amount
        if self._work > MAX_PICKLE_WORK:
            raise pickle.UnpicklingError(
                f"more than {MAX_PICKLE_WORK} objects built, a shared reference counted each time it is used (a "
                "CIFAR batch of 10000 rows builds about 150000; the limit is mixlab_lab.data._cifar.MAX_PICKLE_WORK)")

    def _entry(self, v):
        """``[v, weight, depth, inside another]`` for a container, None for anything else. An empty
        container is registered here, when first used, so that a file of empty lists costs no more
        than the lists."""
        e = self._sizes.get(id(v))
        if e is None and type(v) in _CONTAINERS:  # not registered yet: an empty one (EMPTY_LIST, ...)
            e = self._sizes[id(v)] = [v, 1, 1, False]
        return e

    def _put_in(self, items) -> tuple[int, int]:
        """Weight and depth of ``items`` about to go into a container: charged, marked as inside."""
        weight = depth = 0
        for v in items:
            e = self._entry(v)
            if e is None:
                weight += 1
            else:
                e[3] = True
                weight += e[1]
                depth = max(depth, e[2])
        if depth + 1 > MAX_PICKLE_DEPTH:
            raise pickle.UnpicklingError(
                f"objects nested more than {MAX_PICKLE_DEPTH} levels deep (a CIFAR batch nests 2; the limit is "
                "mixlab_lab.data._cifar.MAX_PICKLE_DEPTH)")
        self._charge(weight)
        return weight, depth

    def _built(self, items):
        """Run before an opcode that makes a container of ``items``; registers it afterwards."""
        weight, depth = self._put_in(items)
        return lambda: self._register(self.stack[-1], weight + 1, depth + 1)

    def _register(self, obj, weight: int, depth: int) -> None:
        self._sizes[id(obj)] = [obj, weight, depth, False]

    def _grow(self, target, items) -> None:
        """Run before an opcode that puts ``items`` into the existing container ``target``."""
        e = self._entry(target)
        if e is None:
            return  # not a container: the opcode itself fails
        if e[3]:
            raise pickle.UnpicklingError(f"a {type(target).__name__} changed after it was put inside another object "
                                         "(pickles of plain data never do this)")
        if any(v is target for v in items):
            raise pickle.UnpicklingError(f"a {type(target).__name__} that holds itself")
        weight, depth = self._put_in(items)
        e[1] += weight
        e[2] = max(e[2], depth + 1)

    def _marked(self):
        """The container under the last MARK (APPENDS, SETITEMS, ADDITEMS), or None."""
        return self.metastack[-1][-1] if self.metastack and self.metastack[-1] else None

    # ---- containers made ------------------------------------------------------------------------
    def _make(opcode, items):  # noqa: N805 (a class-body helper)
        base = pickle._Unpickler.dispatch[opcode[0]]

        def load(self):
            register = self._built(items(self))
            base(self)
            register()
        return load

    dispatch[pickle.TUPLE[0]] = _make(pickle.TUPLE, lambda u: u.stack)
    dispatch[pickle.TUPLE1[0]] = _make(pickle.TUPLE1, lambda u: u.stack[-1:])
    dispatch[pickle.TUPLE2[0]] = _make(pickle.TUPLE2, lambda u: u.stack[-2:])
    dispatch[pickle.TUPLE3[0]] = _make(pickle.TUPLE3, lambda u: u.stack[-3:])
    dispatch[pickle.LIST[0]] = _make(pickle.LIST, lambda u: u.stack)
    dispatch[pickle.DICT[0]] = _make(pickle.DICT, lambda u: u.stack)
    dispatch[pickle.FROZENSET[0]] = _make(pickle.FROZENSET, lambda u: u.stack)
    del _make  # empty containers (EMPTY_LIST...) are registered when first used: see _entry

    # ---- containers filled ----------------------------------------------------------------------
    def _check_list(self):
        top = self.stack[-1]
        if isinstance(top, list) and len(top) > MAX_ROWS:
            raise pickle.UnpicklingError(f"a list of more than {MAX_ROWS} items (a CIFAR batch holds 10000 rows)")

    def load_append(self):
        if len(self.stack) >= 2:
            self._grow(self.stack[-2], self.stack[-1:])
        pickle._Unpickler.load_append(self)
        self._check_list()
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        self._grow(self._marked(), self.stack)
        pickle._Unpickler.load_appends(self)
        self._check_list()
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self):
        if len(self.stack) >= 3:
            self._grow(self.stack[-3], self.stack[-2:])
        pickle._Unpickler.load_setitem(self)
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        self._grow(self._marked(), self.stack)
        pickle._Unpickler.load_setitems(self)
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self):
        self._grow(self._marked(), self.stack)
        pickle._Unpickler.load_additems(self)
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_build(self):
        inst, state = self.stack[-2], self.stack[-1]
        _check_build(inst, state)
        pickle._Unpickler.load_build(self)
        if isinstance(inst, np.dtype) and (inst.flags != 0 or inst.names is not None or inst.subdtype is not None
                                           or inst.kind not in "biuf"):
            raise pickle.UnpicklingError(f"refusing numpy dtype state {short_repr(state)}: only plain integer, "
                                         "float and bool types")
    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            if name == "ndarray":
                return _NDARRAY
            if name == "dtype":
                return _dtype
            if name == "encode":
                return _encode
            real = super().find_class(module, name)
            return _guard_reconstruct(real) if name == "_reconstruct" else _guard_frombuffer(real)
        raise pickle.UnpicklingError(
            f"refusing to load {short_name(module, 60)}.{short_name(name, 60)}: a CIFAR batch holds only numpy "
            "arrays, lists, dicts, strings and numbers (the file may be crafted or not a CIFAR batch)")


def _counted(op):
    def run(self):
        self._charge(1)
        op(self)
    return run


SafeUnpickler.dispatch = {code: _counted(op) for code, op in SafeUnpickler.dispatch.items()}


def safe_load(path: Path, data: bytes | None = None) -> object:
    """Unpickle ``path`` (or ``data`` read from it) with ``SafeUnpickler``, ``encoding='latin1'``.

    A refused, malformed or otherwise unreadable pickle raises :class:`CIFARPickleError` (a
    ``ValueError`` and a ``pickle.UnpicklingError``) naming ``path``, on one line, whatever the
    unpickler or numpy raised inside."""
    if data is None:
        data = Path(path).read_bytes()
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise CIFARPickleError(f"CIFAR file {path}: {clip(e)}") from None
    except Exception as e:  # whatever a damaged or crafted stream makes the unpickler or numpy raise
        raise CIFARPickleError(f"CIFAR file {path}: not a readable pickle ({type(e).__name__}: {clip(e)})") from None


def _get(d: dict, key: str):
    """``d[key]`` whether the file's keys are str or bytes."""
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    return None


def _int_labels(path: str, labels) -> np.ndarray:
    """The ``labels`` entry as int64: a list of Python ints or an integer numpy array, nothing else."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise TypeError(f"CIFAR file {path}: labels must be integers, got a {labels.dtype} array of "
                            f"shape {labels.shape}")
        if len(labels) > MAX_ROWS:
            raise ValueError(f"CIFAR file {path}: {len(labels)} labels, more than the {MAX_ROWS} a batch may hold")
        return labels.astype(np.int64)
    if not isinstance(labels, list):
        raise TypeError(f"CIFAR file {path}: labels must be a list of integers, got {type(labels).__name__}")
    if len(labels) > MAX_ROWS:
        raise ValueError(f"CIFAR file {path}: {len(labels)} labels, more than the {MAX_ROWS} a batch may hold")
    for i, v in enumerate(labels):
        if type(v) is not int and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
            raise TypeError(f"CIFAR file {path}: labels must be integers, got {type(v).__name__} {short_repr(v)} "
                            f"at index {i}")
    try:
        return np.array(labels, dtype=np.int64)
    except OverflowError:
        raise ValueError(f"CIFAR file {path}: a label does not fit in int64 "
                         f"(range {short_repr(min(labels))}..{short_repr(max(labels))})") from None


def _read_batch(path: str, blob: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch: images uint8 ``(n, 3, 32, 32)`` and labels int64 ``(n,)``, checked."""
    d = safe_load(path, blob)
    if not isinstance(d, dict):
        raise ValueError(f"CIFAR file {path}: expected a dict with 'data' and 'labels', got {type(d).__name__}")
    data, labels = _get(d, "data"), _get(d, "labels")
    if not isinstance(data, np.ndarray) or labels is None:
        raise ValueError(f"CIFAR file {path}: expected keys 'data' (numpy array) and 'labels', "
                         f"found keys {short_list(d)}")
    # a crafted pickle can describe an array larger than the file (a broadcast view); refuse before use
    if not data.flags.c_contiguous or data.nbytes > len(blob):
        raise ValueError(f"CIFAR file {path}: 'data' is not a plain array stored in the file (shape "
                         f"{data.shape}, strides {data.strides}, {data.nbytes} bytes from a {len(blob)}-byte "
                         "file); expected a C-contiguous uint8 array (n, 3072)")
    if data.ndim >= 1 and len(data) > MAX_ROWS:
        raise ValueError(f"CIFAR file {path}: {len(data)} rows, more than the {MAX_ROWS} a batch may hold "
                         "(official batches hold 10000)")
    labels = _int_labels(path, labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"CIFAR file {path}: expected uint8 data (n, 3072) and n labels, got data "
                         f"{data.dtype} {data.shape} and {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def find_cifar_batches(location: Path) -> Path | None:
    """Where the batches are: the folder holding ``data_batch_1..5`` and ``test_batch`` (itself or
    its ``cifar-10-batches-py``), or a tarball whose first members are such batches
    (the official ``cifar-10-python.tar.gz``); None otherwise."""
    for d in (location, location / "cifar-10-batches-py"):
        if d.is_dir() and all((d / n).is_file() for n in _NAMES):
            return d
    if _limits.is_tarball(location):
        try:
            with _limits.open_tar_stream(location, f"CIFAR tarball {location}") as ts:
                for _, m in zip(range(20), ts.members()):  # peek: the batches come first in the official archive
                    if m.isfile() and m.name.rsplit("/", 1)[-1] in _NAMES:
                        return location
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError):
            return None  # not readable as CIFAR batches; the image-tree reader reports the error
    return None


def partial_cifar_batches(location: Path) -> Path | None:
    """A folder (``location`` or its ``cifar-10-batches-py``) holding some of the six batches but
    not all; None otherwise."""
    for d in (location, location / "cifar-10-batches-py"):
        if d.is_dir() and any((d / n).is_file() for n in _NAMES):
            return d
    return None


def missing_batches_error(folder: Path) -> FileNotFoundError:
    """The error for a folder of CIFAR batches with some missing: it names them."""
    missing = [n for n in _NAMES if not (folder / n).is_file()]
    found = [n for n in _NAMES if (folder / n).is_file()]
    return FileNotFoundError(f"CIFAR batches in {folder}: {folder / missing[0]} is missing (expected data_batch_1..5 "
                             f"and test_batch; missing {', '.join(missing)}; found {', '.join(found)})")


def _read_sources(where: Path) -> dict[str, tuple[str, bytes]]:
    """``{batch name: (display path, bytes)}`` for the six batches and ``batches.meta`` if present
    (each file's size checked against the caps of ``_limits`` before it is read)."""
    wanted = (*_NAMES, "batches.meta")
    budget = _limits.ByteBudget()
    if where.is_dir():
        found = {}
        for n in wanted:
            if (where / n).is_file():
                found[n] = (str(where / n), _limits.read_capped(where / n, f"CIFAR file {where / n}", budget))
        return found
    found = {}
    try:
        with _limits.open_tar_stream(where, f"CIFAR tarball {where}") as ts:
            for m in ts.members():
                base = m.name.rsplit("/", 1)[-1]
                if m.isfile() and base in wanted and base not in found:
                    budget.take(f"CIFAR tarball {where}: member '{short_name(m.name)}'", m.size)
                    found[base] = (f"{where}:{short_name(m.name)}", ts.tf.extractfile(m).read())
            ts.check_end()  # read on to the end: a cut or a failed CRC is refused, not half-read
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
        raise ValueError(f"CIFAR tarball {where}: corrupt or truncated ({type(e).__name__}: {clip(e)})") from None
    missing = [n for n in _NAMES if n not in found]
    if missing:
        raise ValueError(f"CIFAR tarball {where}: missing members {missing}")
    return found


def _class_names(sources: dict, default: list[str]) -> list[str]:
    """``label_names`` of ``batches.meta`` when present (a non-empty list of strings), else ``default``."""
    if "batches.meta" not in sources:
        return list(default)
    path = sources["batches.meta"][0]
    meta = safe_load(*sources["batches.meta"])
    names = _get(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or len(names) > MAX_ROWS \
            or not all(isinstance(n, (str, bytes)) for n in names):
        raise ValueError(f"CIFAR file {path}: expected 'label_names', a non-empty list of class names, got "
                         f"{type(names).__name__ if names is not None else 'no label_names'}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _check_labels(where: Path, sources: dict, parts: list, classes: list[str], from_meta: bool) -> None:
    """Every label in ``0..len(classes)-1`` (naming the batch, and ``batches.meta`` when it set the count);
    every class of ``test_batch`` present in the training batches."""
    num = len(classes)
    for n, (_, y) in zip(_NAMES, parts):
        bad = np.flatnonzero((y < 0) | (y >= num))
        if len(bad):
            path = sources[n][0]
            if from_meta and y[bad[0]] >= num:
                raise ValueError(f"CIFAR file {sources['batches.meta'][0]}: lists {num} class names (label_names) "
                                 f"but {path} holds label {int(y[bad[0]])} (row {int(bad[0])}); labels must be "
                                 f"in 0..{num - 1}")
            raise ValueError(f"CIFAR file {path}: label {int(y[bad[0]])} at row {int(bad[0])} is outside "
                             f"0..{num - 1} ({num} classes); labels must be class ids in [0, {num})")
    if sum(len(p[1]) for p in parts[:5]) == 0:
        raise ValueError(f"CIFAR batches in {where}: the training batches data_batch_1..5 hold no rows; "
                         "expected at least one training image")
    if len(parts[5][1]) == 0:
        raise ValueError(f"CIFAR file {sources['test_batch'][0]}: the test batch holds no rows; expected at "
                         "least one test image")
    seen = set(np.unique(np.concatenate([p[1] for p in parts[:5]])).tolist())
    only_test = [c for c in np.unique(parts[5][1]).tolist() if c not in seen]
    if only_test:
        raise ValueError(f"CIFAR file {sources['test_batch'][0]}: class {only_test[0]} "
                         f"({short_repr(classes[only_test[0]])}) is in the test batch but in no training batch "
                         f"(data_batch_1..5); every class needs training examples ({len(only_test)} such class(es): "
                         f"{only_test[:10]})")


def load_cifar_batches(location: Path, *, cache_dir, default_classes: list[str]) -> dict:
    """Read the five training batches and the test batch into uint8 tensors (cached)."""
    where = find_cifar_batches(location)
    files = [where / n for n in (*_NAMES, "batches.meta") if (where / n).is_file()] if where.is_dir() else [where]

    def build() -> dict:
        sources = _read_sources(where)
        parts = [_read_batch(*sources[n]) for n in _NAMES]
        classes = _class_names(sources, default_classes)
        from_meta = "batches.meta" in sources
        _check_labels(where, sources, parts, classes, from_meta=from_meta)
        entry = {
            "x_train": torch.from_numpy(np.concatenate([p[0] for p in parts[:5]])),  # (50000, 3, 32, 32)
            "y_train": torch.from_numpy(np.concatenate([p[1] for p in parts[:5]])),
            "x_test": torch.from_numpy(np.ascontiguousarray(parts[5][0])),
            "y_test": torch.from_numpy(parts[5][1]),
            "source": str(where.resolve()),
        }
        top = max(int(p[1].max()) for p in parts if len(p[1]))  # labels are checked: 0 <= top < len(classes)
        if top + 1 < len(classes):  # the labels set the class count; names beyond it are dropped
            if from_meta:
                entry["warnings"] = [
                    f"CIFAR file {sources['batches.meta'][0]}: lists {len(classes)} class names (label_names) but "
                    f"the labels of the batches are 0..{top}; the class count is {top + 1}, taken from the labels "
                    f"(the names after {short_repr(classes[top], 40)} are dropped)"]
            classes = classes[:top + 1]
        return {**entry, "classes": classes}
    return cached("cifar-pickle", {"files": source_signature(files)}, build, cache_dir)
