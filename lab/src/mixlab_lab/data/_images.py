"""Image folders and tarballs, decoded once into uint8 tensors (cached on disk).

Layouts understood (a single enclosing top folder, e.g. ``cifar10-jpg/``, is skipped):

* ``{train,test}/<class>/<file>``: the official split (``valid`` or ``val`` stand in for a
  missing ``test``, as in fastai's MNIST_SAMPLE); other top-level folders are ignored.
* ``<class>/<file>``: one folder per class, no split (the caller makes a seeded split).
* any folder of images with ``label_regex``: the label is group 1 of the regex searched in
  the file name (the whole match when it has no group), e.g. the Oxford-IIIT Pets naming
  ``r"^(.+)_\\d+\\.jpg$"``; no split. Every image must match.

Class names are the sorted distinct folder names (or regex labels), so labels follow
alphabetical order like torchvision's ``ImageFolder``. Images are converted to one common
form: all grey-level images give 1 channel, otherwise RGB (alpha dropped, palettes expanded,
grey images repeated to 3 channels). Pixels are uint8 0..255: a 16-bit image keeps its high
byte (``v >> 8``, as Pillow does for 16-bit RGB; a 12-bit TIFF ``v >> 4``), a 32-bit integer
image is scaled by its type's range (unsigned ``v >> 24``; signed ``v >> 23``, negative values
refused), a float image must hold values in [0, 1] (``round(v * 255)``; NaN, infinity or values
outside refused). Sizes are kept if all images agree; otherwise every image is resized with
PIL's bilinear filter to the most common size ``(W, H)``.
Decoding uses PIL in a pool of (at most) 2 threads, straight into the output tensor; the
source is read sequentially (a tarball in one pass) and every header is read before any pixel
is decoded.

Refused, with a ``ValueError`` naming the file (image paths, ``<tarball>:<member>`` in a
tarball), before the bytes are read or the pixels decoded (see ``_limits`` for the caps): a file
or tar member above ``_limits.MAX_FILE_BYTES`` (64 MiB), files adding up to more than
``MAX_TOTAL_BYTES`` (512 MiB), a tarball decompressing to more than ``MAX_ARCHIVE_BYTES``
(4 GiB); an image of more than ``_limits.MAX_IMAGE_PIXELS`` pixels or of more than
``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's decompression-bomb limit: its warning is made an
error), images adding up to more than ``MAX_TOTAL_PIXELS``, as stored or once resized to their
common size; a file Pillow cannot decode; a zero-height or zero-width image; a ``label_regex``
whose group 1 takes no part in the match or captures nothing. When the training and test images
of a ``{train,test}`` tree have different (most common) sizes, all are resized to the overall
most common size and a warning says so.
"""
from __future__ import annotations

import io
import lzma
import os
import re
import tarfile
import warnings
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from . import _limits
from ._cache import cached, source_signature
from ._limits import clip, short_list, short_name, short_repr

__all__ = ["IMAGE_EXTENSIONS", "is_image_tree", "is_tarball", "load_image_tree", "decode_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_TEST_NAMES = ("test", "valid", "val")
_GREY = {"1", "L", "LA", "La"}  # 8-bit grey modes; 16-bit, 32-bit and float ones: _high_depth
_CHUNK = 512
def is_tarball(path: Path) -> bool:
    """True for an existing ``.tar``, ``.tar.gz``, ``.tgz`` (or other tarfile-readable) file, or a
    damaged compressed one (reading it then says so); never raises."""
    return _limits.is_tarball(path)


def is_image_tree(location: Path) -> bool:
    """A tarball, or a folder with a ``train/`` subfolder (directly or under one top folder)."""
    if is_tarball(location):
        return True
    return location.is_dir() and ((location / "train").is_dir() or any(
        (d / "train").is_dir() for d in location.iterdir() if d.is_dir()))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def _read_sources(location: Path, budget: _limits.ByteBudget) -> tuple[list[tuple[str, ...]], list[bytes]]:
    """Relative path parts and raw bytes of every image file under a folder or in a tarball (each
    file's size checked against the caps before it is read)."""
    parts, blobs = [], []
    if location.is_dir():
        for p in sorted(location.rglob("*")):
            if p.is_file() and _is_image(p.name):
                parts.append(p.relative_to(location).parts)
                blobs.append(_limits.read_capped(p, f"image file {short_name(p, 240)}", budget))
    else:
        what = f"tarball {location}"
        try:
            with _limits.open_tar_stream(location, what) as ts:  # streaming: one sequential pass over the archive
                for m in ts.members():
                    if m.isfile() and _is_image(m.name):
                        budget.take(f"{what}: member '{short_name(m.name)}'", m.size)
                        parts.append(tuple(q for q in m.name.split("/") if q not in ("", ".")))
                        blobs.append(ts.tf.extractfile(m).read())
                ts.check_end()
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as e:
            raise ValueError(f"tarball {location}: corrupt or truncated ({type(e).__name__}: {clip(e)})") from None
        order = sorted(range(len(parts)), key=parts.__getitem__)
        parts, blobs = [parts[i] for i in order], [blobs[i] for i in order]
    if not parts:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {location}")
    return parts, blobs


def _display(location: Path, parts: tuple[str, ...]) -> str:
    """How a message names one image: its path, or ``<tarball>:<member>`` (the middle of a long name cut)."""
    rel = "/".join(parts)
    return short_name(str(location / rel) if location.is_dir() else f"{location}:{rel}", 240)


def _strip_top(parts: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Drop enclosing folders shared by every file (never a split name, never a lone class folder)."""
    while (len({p[0] for p in parts}) == 1 and parts[0][0] not in ("train", *_TEST_NAMES)
           and all(len(p) > 1 for p in parts) and any(len(p) > 2 for p in parts)):
        parts = [p[1:] for p in parts]
    return parts


def _labels(location: Path, parts, label_regex: str | None):
    """``(split_of_each or None, label_name_of_each, keep_mask)`` from the layout."""
    if label_regex is not None:
        try:
            rx = re.compile(label_regex)
        except re.error as e:
            raise ValueError(f"label_regex {short_repr(label_regex)} is not a valid regular expression: "
                             f"{clip(e)}") from None
        names = []
        for p in parts:
            m = rx.search(p[-1])
            if m is None:
                raise ValueError(f"label_regex {short_repr(label_regex)} does not match the file name "
                                 f"{short_repr(p[-1])} "
                                 f"(in {location}); every image needs a label")
            label = m.group(1) if rx.groups else m.group(0)
            if not label:
                what = "group 1 takes no part in the match" if label is None else "the label it captures is empty"
                raise ValueError(f"label_regex {short_repr(label_regex)} matches the file name "
                                 f"{short_repr(p[-1])} (in {location}) but "
                                 f"{what}; every image needs a non-empty label (make group 1 required)")
            names.append(label)
        return None, names, [True] * len(parts)
    parts = _strip_top(parts)
    tops = {p[0] for p in parts if len(p) == 3}
    test = next((t for t in _TEST_NAMES if t in tops), None)
    if "train" in tops and test is not None:
        keep = [len(p) == 3 and p[0] in ("train", test) for p in parts]
        names = [p[1] if k else "" for p, k in zip(parts, keep)]
        return ["train" if p[0] == "train" else "test" for p in parts], names, keep
    if all(len(p) == 2 for p in parts):
        return None, [p[0] for p in parts], [True] * len(parts)
    example = "/".join(next(p for p in parts if len(p) != 2))
    raise ValueError(f"image folder {location}: expected {{train,test}}/<class>/<file> or <class>/<file> "
                     f"(or pass label_regex for a flat folder); found e.g. '{short_name(example)}'")


def _bomb(name: str, detail) -> ValueError:
    from PIL import Image
    return ValueError(f"image {name}: {clip(detail)}; refused as a possible decompression bomb (limit "
                      f"PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels)")


def _int_format(img) -> tuple[int, bool]:
    """``(bits, signed)`` of a mode ``"I"`` image: a TIFF says it (BitsPerSample, SampleFormat 2 =
    signed); other formats (PNG, PGM) use mode ``"I"`` for unsigned 16-bit samples."""
    if img.format == "TIFF":
        tags = getattr(img, "tag_v2", {})
        bits, fmt = tags.get(258, (32,)), tags.get(339, 1)
        bits = bits[0] if isinstance(bits, tuple) else bits
        fmt = fmt[0] if isinstance(fmt, tuple) else fmt
        return int(bits), fmt == 2
    return 16, False


def _high_depth(img, name: str) -> np.ndarray:
    """A 16-bit, 32-bit integer or float grey image scaled to uint8 (see the module notes), or a
    ``ValueError`` naming the image when its values lie outside the range its type implies."""
    mode = img.mode
    if mode.startswith("I;16"):  # unsigned 16-bit: the high byte, as Pillow does for 16-bit RGB
        bits = _int_format(img)[0] if img.format == "TIFF" else 16  # a 12-bit TIFF is read into I;16 unscaled
        return (np.asarray(img) >> max(min(bits, 16) - 8, 0)).astype(np.uint8)
    if mode == "F":
        arr = np.array(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise ValueError(f"image {name}: float pixels hold NaN or infinite values; expected values in [0, 1]")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            raise ValueError(f"image {name}: float pixels span {lo:g}..{hi:g}; mixlab reads float images as "
                             "values in [0, 1] (scaled by 255); rescale the file to [0, 1] or save it as 8-bit")
        arr *= 255
        return np.rint(arr, out=arr).astype(np.uint8)
    if mode != "I":
        raise ValueError(f"image {name}: unsupported pixel mode {short_repr(mode)}; expected 8-bit, 16-bit, "
                         "32-bit or float pixels")
    bits, signed = _int_format(img)
    arr = np.array(img)  # int32 (an unsigned 32-bit TIFF wraps: read its bits as uint32)
    if signed:
        lo = int(arr.min()) if arr.size else 0
        if lo < 0:
            raise ValueError(f"image {name}: signed {bits}-bit pixels hold negative values (min {lo}); mixlab "
                             f"scales 0..{2 ** (bits - 1) - 1} to 0..255 and has no place for negative values")
        arr >>= bits - 9
        return arr.astype(np.uint8)
    if bits == 32:
        return (arr.view(np.uint32) >> 24).astype(np.uint8)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi >= 1 << bits:
        raise ValueError(f"image {name}: {bits}-bit pixels span {lo}..{hi}, outside 0..{(1 << bits) - 1}")
    arr >>= bits - 8
    return arr.astype(np.uint8)


def _channels(mode: str) -> int:
    """Channels an image of this Pillow mode decodes to: 1 for grey levels, else 3 (RGB)."""
    return 1 if mode in _GREY or mode.startswith("I") or mode == "F" else 3


def _open(blob: bytes, name: str):
    """``(image, width, height)`` from the header alone (nothing decoded yet), or a ``ValueError``
    naming the image: unreadable, zero-sized, over Pillow's bomb limit or ``MAX_IMAGE_PIXELS``."""
    from PIL import Image
    try:
        img = Image.open(io.BytesIO(blob))  # reads from memory: nothing to close; only the header so far
        w, h = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb(name, e) from None
    except Exception as e:  # Pillow raises many types for a damaged header (OSError, SyntaxError, struct.error...)
        raise ValueError(f"image {name}: cannot be decoded ({type(e).__name__}: {clip(e)})") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and w * h > limit:  # also when another thread's filters let the warning pass
        raise _bomb(name, f"{w}x{h} = {w * h} pixels")
    _limits.check_image_pixels(name, w, h)
    if w < 1 or h < 1:
        raise ValueError(f"image {name}: {w}x{h} pixels; expected a width and height of at least 1")
    return img, w, h


def _decode_one(blob: bytes, name: str) -> np.ndarray:
    """One image as uint8 ``(H, W, C)``, C 1 or 3 (see the module notes)."""
    from PIL import Image
    img, w, h = _open(blob, name)
    try:
        if img.mode.startswith("I") or img.mode == "F":
            arr = _high_depth(img, name)
        else:
            if img.mode not in ("L", "RGB"):
                img = img.convert("L" if img.mode in _GREY else "RGB")
            arr = np.asarray(img)  # decodes; ~2x faster than a convert() copy for 32x32 JPEGs
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _bomb(name, e) from None
    except ValueError as e:
        if str(e).startswith(f"image {name}:"):
            raise
        raise ValueError(f"image {name}: cannot be decoded ({type(e).__name__}: {clip(e)})") from None
    except Exception as e:  # a damaged stream: OSError, SyntaxError, EOFError, struct.error, IndexError...
        raise ValueError(f"image {name}: cannot be decoded ({type(e).__name__}: {clip(e)})") from None
    if arr.shape[:2] != (h, w):
        raise ValueError(f"image {name}: decoded to shape {arr.shape}, its header says {w}x{h} pixels")
    return arr[:, :, None] if arr.ndim == 2 else arr  # (H, W, C)


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    out = np.asarray(img.resize(size, Image.Resampling.BILINEAR))
    return out[:, :, None] if out.ndim == 2 else out


def _common_size(sizes) -> tuple[int, int]:
    """The most common ``(W, H)``."""
    return Counter(sizes).most_common(1)[0][0]


def _decode_all(blobs: list[bytes], names: list[str], workers: int, where: str):
    """``(uint8 tensor (N, C, H, W), [(W, H) of each image as stored])``.

    First every header is read (in order): each image is checked against the per-image caps and
    the running total of pixels against ``MAX_TOTAL_PIXELS``, and so is the output (N images at
    the most common size), all before any pixel is decoded. Then the images are decoded by
    ``workers`` threads straight into the output, resized where their size differs."""
    from PIL import Image
    if not blobs:
        raise ValueError(f"{where}: no images to decode")
    with warnings.catch_warnings():  # Pillow's bomb warning becomes an error (worker threads see these filters)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        sizes, channels, total = [], 1, 0
        for blob, name in zip(blobs, names):
            img, w, h = _open(blob, name)
            total += w * h
            if total > _limits.MAX_TOTAL_PIXELS:
                raise ValueError(f"image {name}: its {w}x{h} pixels bring the images to {total} pixels, above the "
                                 f"limit of {_limits.MAX_TOTAL_PIXELS} pixels per dataset "
                                 "(mixlab_lab.data._limits.MAX_TOTAL_PIXELS); not decoded")
            sizes.append((w, h))
            channels = max(channels, _channels(img.mode))
        width, height = _common_size(sizes)
        if len(sizes) * width * height > _limits.MAX_TOTAL_PIXELS:
            raise ValueError(f"{where}: {len(sizes)} images resized to the most common size {width}x{height} make "
                             f"{len(sizes) * width * height} pixels, above the limit of {_limits.MAX_TOTAL_PIXELS} "
                             "pixels per dataset (mixlab_lab.data._limits.MAX_TOTAL_PIXELS); not decoded")
        out = np.empty((len(blobs), channels, height, width), dtype=np.uint8)

        def work(idx):
            for i in idx:
                a = _decode_one(blobs[i], names[i])
                if a.shape[2] > channels:
                    raise ValueError(f"image {names[i]}: decoded to {a.shape[2]} channels, its header said {channels}")
                out[i] = (a if a.shape[:2] == (height, width) else _resize(a, (width, height))).transpose(2, 0, 1)
        chunks = [range(i, min(i + _CHUNK, len(blobs))) for i in range(0, len(blobs), _CHUNK)]
        workers = max(1, min(workers, os.cpu_count() or 1, len(chunks)))
        if workers == 1:
            for c in chunks:
                work(c)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(work, chunks))
    return torch.from_numpy(out), sizes  # a grey (1, H, W) broadcast to 3 channels when others are RGB


def decode_images(blobs: list[bytes], names: list[str], *, workers: int = 2) -> torch.Tensor:
    """Decode encoded images into one uint8 tensor ``(N, C, H, W)`` (see the module notes)."""
    return _decode_all(blobs, names, workers, "images")[0]


def _build(location: Path, label_regex: str | None) -> dict:
    parts, blobs = _read_sources(location, _limits.ByteBudget())
    split, names, keep = _labels(location, parts, label_regex)
    idx = [i for i, k in enumerate(keep) if k]
    classes = sorted({names[i] for i in idx})
    lookup = {c: j for j, c in enumerate(classes)}
    x, stored = _decode_all([blobs[i] for i in idx], [_display(location, parts[i]) for i in idx], 2,
                            f"image folder {location}")
    del blobs
    y = torch.tensor([lookup[names[i]] for i in idx], dtype=torch.int64)
    entry = {"classes": classes, "source": str(location.resolve())}
    if split is None:
        return {**entry, "x": x, "y": y}
    train_classes = {names[i] for i in idx if split[i] == "train"}
    test_only = sorted({names[i] for i in idx if split[i] != "train"} - train_classes)
    if test_only:
        test_dir = next(parts[i][-3] for i in idx if split[i] != "train")
        first = short_name(test_only[0], 60)
        raise ValueError(f"image folder {location}: class '{first}' has images in {test_dir}/ but none in "
                         f"train/ ({len(test_only)} such class(es): {short_list(test_only, 5)}); every class needs "
                         f"training images (add train/{first}/ or remove {test_dir}/{first}/)")
    is_train = torch.tensor([split[i] == "train" for i in idx])
    sizes = {s: _common_size([a for a, i in zip(stored, idx) if (split[i] == "train") == (s == "train")])
             for s in ("train", "test") if any((split[i] == "train") == (s == "train") for i in idx)}
    if len(set(sizes.values())) > 1:
        (tw, th), (sw, sh) = sizes["train"], sizes["test"]
        w, h = _common_size(stored)
        entry["warnings"] = [f"image folder {location}: training images are mostly {tw}x{th} but test images "
                             f"mostly {sw}x{sh}; all images resized to {w}x{h}"]
    return {**entry, "x_train": x[is_train], "y_train": y[is_train], "x_test": x[~is_train], "y_test": y[~is_train]}


def load_image_tree(location: Path, *, cache_dir, label_regex: str | None, name: str) -> dict:
    """Read a folder or tarball of images into uint8 tensors, through the disk cache."""
    key = {"source": source_signature([location]), "label_regex": label_regex}
    return cached(f"{name}-images", key, lambda: _build(location, label_regex), cache_dir)
