"""Caps on what the dataset readers read and decode, and bounded text for their error messages.

Caps (module constants: raise one by assigning it, e.g. ``mixlab_lab.data._limits.MAX_FILE_BYTES =
256 << 20``, before loading). Exceeding one is a ``ValueError`` naming the file and the cap,
raised before the bytes are read or the pixels decoded: sizes come from the file system, tar
headers, IDX headers and image headers, and compressed streams are read incrementally.

* ``MAX_FILE_BYTES`` (64 MiB): one file read into memory, after decompression: an image file, a
  tar member, a CIFAR batch (official: 30 MiB), an IDX file (MNIST's largest: 45 MiB), a CSV file.
* ``MAX_TOTAL_BYTES`` (512 MiB): all the files one dataset reads into memory together.
* ``MAX_ARCHIVE_BYTES`` (4 GiB): a tarball's decompressed stream, members skipped included;
  ``MAX_TAR_HEADER_BYTES`` (1 MiB): one pax or GNU long-name header inside it.
* ``MAX_IMAGE_PIXELS`` (2**25, about 33.5 million): one image's width x height; Pillow's own
  decompression-bomb limit ``PIL.Image.MAX_IMAGE_PIXELS`` applies too.
* ``MAX_TOTAL_PIXELS`` (2**28, about 268 million: 805 MB as RGB uint8): the images of one dataset,
  as stored and once resized to their common size.

A bad data file ends in one ``ValueError`` (or ``TypeError``) whose message names the file; the
CLI prints it as one line. A message that shows a value from the file (a label, a key, a shape,
a cell) must stay short whatever the file holds: a crafted pickle can hold shared nested lists
whose ``repr`` is hundreds of megabytes, a CSV cell can be 128 KiB, a tar member name has no
length limit. :func:`short_repr` is the only way a reader shows such a value, and :func:`clip`
bounds any text (also a library's error message) to one line of at most ``MAX_TEXT_CHARS``.
"""
from __future__ import annotations

import builtins
import bz2
import contextlib
import gzip
import lzma
import os
import reprlib
import tarfile
import zlib
from itertools import islice
from pathlib import Path

__all__ = ["MAX_FILE_BYTES", "MAX_TOTAL_BYTES", "MAX_ARCHIVE_BYTES", "MAX_TAR_HEADER_BYTES", "MAX_IMAGE_PIXELS",
           "MAX_TOTAL_PIXELS", "check_file_bytes", "ByteBudget", "read_capped", "open_tar_stream", "is_tarball",
           "check_image_pixels",
           "short_repr", "short_name", "short_list", "clip", "bound_message", "MAX_REPR_CHARS", "MAX_TEXT_CHARS",
           "MAX_MESSAGE_CHARS"]

MAX_FILE_BYTES = 64 << 20
MAX_TOTAL_BYTES = 512 << 20
MAX_ARCHIVE_BYTES = 4 << 30
MAX_TAR_HEADER_BYTES = 1 << 20
MAX_IMAGE_PIXELS = 1 << 25
MAX_TOTAL_PIXELS = 1 << 28

MAX_REPR_CHARS = 120  # one value shown in a message
MAX_TEXT_CHARS = 400  # one piece of text (a library's message, a header list) shown in a message
MAX_MESSAGE_CHARS = 2000  # a whole message, as load_dataset lets it out (a safety net: readers stay far below)


class _ShortRepr(reprlib.Repr):
    """``reprlib`` with every container walked lazily: no sorting of dicts and sets (a crafted key
    can make comparisons expensive), bytes and ints cut before they are formatted."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 3, 60, 60, 40
        self.maxtuple = self.maxlist = self.maxarray = self.maxdict = self.maxset = self.maxfrozenset = 10

    def _items(self, x, level, n, left, right):
        if not x:
            return left + right
        if level <= 0:
            return left + "..." + right
        parts = [self.repr1(v, level - 1) for v in islice(x, n)]
        if len(x) > n:
            parts.append("...")
        return left + ", ".join(parts) + right

    def repr_tuple(self, x, level):
        return self._items(x, level, self.maxtuple, "(", ",)" if len(x) == 1 else ")")

    def repr_list(self, x, level):
        return self._items(x, level, self.maxlist, "[", "]")

    def repr_set(self, x, level):
        return self._items(x, level, self.maxset, "{", "}") if x else "set()"

    def repr_frozenset(self, x, level):
        return self._items(x, level, self.maxfrozenset, "frozenset({", "})")

    def repr_dict(self, x, level):
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        parts = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}" for k, v in islice(x.items(), self.maxdict)]
        if len(x) > self.maxdict:
            parts.append("...")
        return "{" + ", ".join(parts) + "}"

    def repr_bytes(self, x, level):
        s = builtins.repr(bytes(x[:self.maxstring]))
        return s if len(x) <= self.maxstring else s[:-1] + "..." + s[-1]

    repr_bytearray = repr_bytes

    def repr_int(self, x, level):
        if x.bit_length() > 128:  # str() of a huge int is slow, and refused past 4300 digits
            return f"<int of {x.bit_length()} bits>"
        return builtins.repr(x)

    def repr1(self, x, level):
        try:
            if isinstance(x, str) and type(x) is not str:  # numpy.str_ and the like: cut too, not repr()'d whole
                return self.repr_str(x, level)
            if isinstance(x, (bytes, bytearray)) and type(x) not in (bytes, bytearray):
                return self.repr_bytes(x, level)
            return super().repr1(x, level)
        except Exception:  # a repr that fails must not hide the error being reported
            return f"<{type(x).__name__} object>"


_REPR = _ShortRepr()


def clip(text, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space), cut to at
    most ``limit`` characters followed by ``... (cut)`` when longer."""
    text = str(text)
    if len(text) > 4 * limit:  # split() below walks the whole text: cut first
        text = text[:4 * limit]
        cut = True
    else:
        cut = False
    text = " ".join(text.split())
    if len(text) > limit or cut:
        return text[:limit] + " ... (cut)"
    return text


def short_name(name, limit: int = MAX_REPR_CHARS) -> str:
    """A file or member name on one line: its middle cut when longer than ``limit`` (the end, where
    the file's own name is, stays), newlines and other control characters escaped."""
    name = str(name)
    if len(name) > limit:
        half = (limit - 5) // 2
        name = f"{name[:half]}[...]{name[-half:]}"
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in name)


def short_list(values, n: int = 8, each: int = 40) -> str:
    """The first ``n`` of ``values`` (any iterable, read lazily), each a :func:`short_repr` of at most
    ``each`` characters, as ``[a, b, ...]``."""
    items = list(islice(values, n + 1))
    shown = ", ".join(short_repr(v, each) for v in items[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"


def short_repr(value, limit: int = MAX_REPR_CHARS) -> str:
    """A ``repr`` of ``value`` of at most about ``limit`` characters, computed in bounded time
    (at most 10 items per container and 3 levels are visited, long strings and bytes are cut)."""
    return clip(_REPR.repr(value), limit)


def bound_message(e: BaseException) -> None:
    """Make the message of a ``ValueError`` / ``TypeError`` one line of at most ``MAX_MESSAGE_CHARS``
    characters, in place (its type and traceback stay); other exceptions are left alone."""
    if not isinstance(e, (ValueError, TypeError)) or isinstance(e, (OSError, UnicodeError)):
        return
    text = str(e)
    if len(text) > MAX_MESSAGE_CHARS or "\n" in text or "\r" in text:
        e.args = (clip(text, MAX_MESSAGE_CHARS),)


# ----- caps on bytes --------------------------------------------------------------------------------

def _human(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.3g} {unit}"
    return f"{n} B"


def check_file_bytes(what: str, size: int, *, detail: str = "") -> None:
    """Refuse one file of more than ``MAX_FILE_BYTES`` (``what`` names it) before reading it."""
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{what}: {size} bytes ({_human(size)}){detail}, above the "
                         f"limit of {MAX_FILE_BYTES} bytes ({_human(MAX_FILE_BYTES)}) per file "
                         "(mixlab_lab.data._limits.MAX_FILE_BYTES); not read")


class ByteBudget:
    """The bytes one dataset reads into memory: each file is checked against ``MAX_FILE_BYTES``,
    their sum against ``MAX_TOTAL_BYTES``, before the file is read."""

    def __init__(self):
        self.total = 0

    def take(self, what: str, size: int) -> None:
        check_file_bytes(what, size)
        self.total += size
        if self.total > MAX_TOTAL_BYTES:
            raise ValueError(f"{what}: its {size} bytes bring the data read to {self.total} bytes, above the limit of "
                             f"{MAX_TOTAL_BYTES} bytes ({_human(MAX_TOTAL_BYTES)}) per dataset "
                             "(mixlab_lab.data._limits.MAX_TOTAL_BYTES); not read")


def read_capped(path, what: str, budget: ByteBudget | None = None) -> bytes:
    """The bytes of ``path``: its size is checked against the caps (``budget``, or a fresh one)
    before reading, and no more than that size is read (a file growing meanwhile is refused)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        (budget or ByteBudget()).take(what, size)
        data = f.read(size)
        if f.read(1):
            raise ValueError(f"{what}: grew while it was read (it had {size} bytes); not read")
    return data


class _CappedTarInfo(tarfile.TarInfo):
    """Refuses a pax or GNU long-name header above ``MAX_TAR_HEADER_BYTES`` before ``tarfile`` reads it
    whole into memory (its size is the header's own claim)."""

    def _proc_member(self, tf):
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                         tarfile.SOLARIS_XHDTYPE) and self.size > MAX_TAR_HEADER_BYTES:
            raise tarfile.HeaderError(f"an extended header (names, attributes) of {self.size} bytes, above the limit "
                                      f"of {MAX_TAR_HEADER_BYTES} bytes (mixlab_lab.data._limits.MAX_TAR_HEADER_BYTES)")
        return super()._proc_member(tf)


class _CountedReader:
    """The decompressed stream ``tarfile`` reads, refused past ``MAX_ARCHIVE_BYTES``."""

    def __init__(self, f, what: str):
        self._f, self._what, self.count = f, what, 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n if n is not None and 0 <= n <= 1 << 24 else 1 << 24)
        self.count += len(data)
        if self.count > MAX_ARCHIVE_BYTES:
            raise ValueError(f"{self._what}: decompresses to more than {MAX_ARCHIVE_BYTES} bytes "
                             f"({_human(MAX_ARCHIVE_BYTES)}), the limit per archive "
                             "(mixlab_lab.data._limits.MAX_ARCHIVE_BYTES); not read further")
        return data


class TarStream:
    """One sequential pass over a tarball (see :func:`open_tar_stream`)."""

    def __init__(self, tf: tarfile.TarFile, reader: _CountedReader, location: Path, what: str, compressed: bool):
        self.tf, self._reader, self._location, self._what, self._compressed = tf, reader, location, what, compressed

    def members(self):
        """The members, each checked to end within ``MAX_ARCHIVE_BYTES`` of decompressed stream
        before the pass moves over it (a skipped member is decompressed all the same)."""
        for m in self.tf:
            end = m.offset_data + m.size
            if end > MAX_ARCHIVE_BYTES:
                raise ValueError(f"{self._what}: member '{short_name(m.name)}' ends {end} bytes into the decompressed "
                                 f"archive, above the limit of {MAX_ARCHIVE_BYTES} bytes ({_human(MAX_ARCHIVE_BYTES)}) "
                                 "per archive (mixlab_lab.data._limits.MAX_ARCHIVE_BYTES); not read")
            yield m

    def check_end(self) -> None:
        """Raise ``EOFError`` (or the decompressor's error) when the archive read to its end was cut.

        A stream cut at a member boundary looks like a complete archive to ``tarfile`` (it takes the
        missing header for the end), so a truncated download would silently lose its last members:
        a compressed archive is read on to its end-of-stream marker (gzip, bzip2, xz check it), and
        an uncompressed one must still hold the end-of-archive blocks after its last member."""
        if self._compressed:
            while self._reader.read(1 << 22):
                pass
        elif self._location.stat().st_size < self.tf.offset + 1024:
            raise EOFError("the archive ends without its end-of-archive blocks")


@contextlib.contextmanager
def open_tar_stream(location: Path, what: str):
    """Open a tarball (plain, gzip, bzip2 or xz, by its first bytes) for one sequential pass with the
    caps on: its decompressed stream within ``MAX_ARCHIVE_BYTES``, long-name and pax headers
    within ``MAX_TAR_HEADER_BYTES``. ``what`` names it in messages (e.g. ``"tarball <path>"``)."""
    with contextlib.ExitStack() as stack:
        raw = stack.enter_context(open(location, "rb"))
        magic = raw.read(6)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            dec = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        elif magic[:3] == b"BZh":
            dec = stack.enter_context(bz2.BZ2File(raw))
        elif magic == b"\xfd7zXZ\x00":
            dec = stack.enter_context(lzma.LZMAFile(raw))
        else:
            dec = None
        reader = _CountedReader(dec if dec is not None else raw, what)
        tf = stack.enter_context(tarfile.open(fileobj=reader, mode="r|", tarinfo=_CappedTarInfo))
        yield TarStream(tf, reader, Path(location), what, dec is not None)


def is_tarball(path: Path) -> bool:
    """True for an existing file ``tarfile`` reads as an archive (plain, gzip, bzip2 or xz), and for
    any gzip, bzip2 or xz file that does not read as one (damaged: its reader then reports it as
    corrupt or truncated, naming it); False otherwise. Unlike ``tarfile.is_tarfile`` it never
    raises (a damaged gzip stream made that raise EOFError) and reads the first header within the
    caps."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with open_tar_stream(path, f"tarball {path}"):
            return True
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError, ValueError):
        try:
            with open(path, "rb") as f:
                magic = f.read(6)
        except OSError:
            return False
        return magic[:2] == b"\x1f\x8b" or magic[:3] == b"BZh" or magic == b"\xfd7zXZ\x00"


# ----- caps on pixels -------------------------------------------------------------------------------

def check_image_pixels(name: str, w: int, h: int) -> None:
    """Refuse one image of more than ``MAX_IMAGE_PIXELS`` pixels (from its header, before decoding)."""
    if w * h > MAX_IMAGE_PIXELS:
        raise ValueError(f"image {name}: {w}x{h} = {w * h} pixels, above the limit of {MAX_IMAGE_PIXELS} pixels per "
                         "image (mixlab_lab.data._limits.MAX_IMAGE_PIXELS); not decoded")
