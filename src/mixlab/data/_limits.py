"""Bounded text for the data readers' error messages.

A bad data file ends in one ``ValueError`` (or ``TypeError``) whose message names the file; the
CLI prints it as one line. A message that shows a value from the file (a label, a key, a shape,
a cell) must stay short whatever the file holds: a crafted pickle can hold shared nested lists
whose ``repr`` is hundreds of megabytes, a CSV cell can be 128 KiB, a tar member name has no
length limit. :func:`short_repr` is the only way a reader shows such a value, and :func:`clip`
bounds any text (also a library's error message) to one line of at most ``MAX_TEXT_CHARS``.
"""
from __future__ import annotations

import builtins
import reprlib
from itertools import islice

__all__ = ["short_repr", "short_name", "short_list", "clip", "bound_message", "MAX_REPR_CHARS", "MAX_TEXT_CHARS",
           "MAX_MESSAGE_CHARS"]

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
            return super().repr1(x, level)
        except Exception:  # a repr that fails must not hide the error being reported
            return f"<{type(x).__name__} object>"


_REPR = _ShortRepr()


def clip(text, limit: int = MAX_TEXT_CHARS) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space), cut to at
    most ``limit`` characters with a note of how much was cut."""
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
