"""Build-time helpers of the docs site: a Griffe extension and MkDocs hooks (one file, two roles).

Griffe extension (``mkdocs.yml``: ``plugins.mkdocstrings...options.extensions``):

- **reST roles become cross-references.** mixlab's docstrings are Google style with Sphinx roles
  (``:class:`~mixlab.regions.Box```, ``:func:`mix```, ``:meth:`loss```...). Each role is resolved
  the way Sphinx would (the docstring's own scope outwards: class, module, parent packages; then an
  absolute path; then a public name that is unique in the package) to the object's canonical path,
  and rewritten as an *optional* autorefs reference: a link when that object has an entry in the
  API reference, inline code when it has none (a private helper, torch), so a dangling role never
  fails ``mkdocs build --strict``. ``~`` shows the last component, ``!`` never links, ``text <target>``
  sets the text, ``func``/``meth`` get ``()`` as in Sphinx.
- **Re-exports are listed, not rendered twice.** A public module that re-exports (``__all__``) an
  object defined in another public module (``mixlab.MixUp`` is ``mixlab.methods.mixup.MixUp``)
  gets a table of those names linking to the one entry, instead of a second copy of its docs.

MkDocs hooks (``mkdocs.yml``: ``hooks``), read from the method registry at build time:

- ``<!-- registry-table -->`` (docs/methods.md): the table of ``mixlab.methods.available()``, with each
  method's "when to use it" line (``@register(..., when=...)``; a method without one fails ``--strict``).
- ``<!-- registry-modules -->`` (docs/api/methods.md): one ``::: mixlab.methods.<module>`` per
  module of the ``mixlab.methods`` package, registered methods' modules first.

So a new method needs no docs edit: its module's docstrings are the reference, its registration (with its
``when=`` line) the table row.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
import pkgutil
import re
import sys
from collections import defaultdict
from html import escape

log = logging.getLogger("mkdocs.hooks.mixlab_docs")

# --------------------------------------------------------------------------- reST roles

ROLE_RE = re.compile(r":(?:py:)?(?P<role>class|func|meth|mod|data|attr|exc|obj|const|type):`(?P<body>[^`]+)`")
_EXPLICIT_RE = re.compile(r"(?s)(?P<title>.*\S)\s*<(?P<target>[^<>]+)>")


def parse_role(role: str, body: str) -> tuple[str, str, bool]:
    """``(text, lookup, link)`` of a role: the text shown, the dotted name to resolve, whether to link."""
    m = _EXPLICIT_RE.fullmatch(body.strip())
    title, target = (" ".join(m["title"].split()), m["target"]) if m else (None, body)
    target = "".join(target.split())
    link = not target.startswith("!")
    target = target.lstrip("!")
    short = target.startswith("~")
    target = target.lstrip("~")
    lookup = target[:-2] if target.endswith("()") else target
    lookup = lookup.lstrip(".")
    if title is None:
        title = lookup.rsplit(".", 1)[-1] if short else target
        if role in ("func", "meth") and not title.endswith(")"):
            title += "()"
    return title, lookup, link


def code(text: str) -> str:
    """``text`` as a Markdown code span (longer fences if it holds backticks)."""
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def xref(text: str, identifier: str | None) -> str:
    """An optional autorefs link to ``identifier`` showing ``text`` as code: a link if the identifier
    has an entry anywhere on the site, else just the code (autorefs does not warn for optional ones)."""
    if not identifier:
        return code(text)
    return f'<autoref identifier="{escape(identifier)}" optional>{code(text)}</autoref>'


def convert_roles(text: str, resolve) -> str:
    """Replace every reST role in ``text``; ``resolve(dotted_name)`` gives a canonical path or ``None``."""
    def sub(m):
        title, lookup, link = parse_role(m["role"], m["body"])
        return xref(title, resolve(lookup) if link and lookup else None)
    return ROLE_RE.sub(sub, text)


_PARAM_SECTION_RE = re.compile(r"(?P<indent>[ \t]*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments"
                               r"|Other Parameters|Attributes):[ \t]*$")


def move_stray_items(text: str) -> str:
    """Move an item of a Google ``Args:``-like section that is not a ``name: description`` pair (``Other
    arguments as MixUp.``) to a paragraph after the section, where it reads as text instead of failing
    to parse. (Before roles were converted, a role's own colon made such a line a bogus parameter.)"""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        m = _PARAM_SECTION_RE.fullmatch(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        base = len(m["indent"])
        section, stray, item_indent = [], [], None
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > base):
            line = lines[i]
            indent = len(line) - len(line.lstrip())
            if line.strip() and item_indent is None:
                item_indent = indent
            if line.strip() and indent == item_indent:
                target = section if ":" in line else stray
            section_or_stray = target if line.strip() else section
            section_or_stray.append(line)
            i += 1
        trailing = []
        while section and not section[-1].strip():
            trailing.append(section.pop())
        out.extend(section)
        if stray:
            out.append("")
            out.extend(" " * base + s.strip() for s in stray)
        out.extend(trailing)
    return "\n".join(out)


def first_sentence(doc: str) -> str:
    """The first paragraph of a docstring, up to its first full stop (joined onto one line)."""
    para = " ".join(inspect.cleandoc(doc or "").split("\n\n", 1)[0].split())
    m = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bal)(?<!\bvs)\.(?=\s|$)", para)
    return para[: m.end()].strip() if m else para


def _is_public_path(path: str) -> bool:
    return not any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in path.split("."))


# --------------------------------------------------------------------------- Griffe extension

try:
    import griffe
except ImportError:  # the hooks below need no griffe
    griffe = None


if griffe is not None:

    def _final(obj):
        """The object an alias points to (``None`` if it cannot be resolved: an external package)."""
        try:
            return obj.final_target if obj.is_alias else obj
        except Exception:  # AliasResolutionError, CyclicAliasError, a module not loaded
            return None

    def _members(obj) -> dict:
        try:
            return obj.all_members if obj.is_class else obj.members
        except Exception:  # unresolvable base classes
            return obj.members

    def _walk(obj):
        """Every object defined (not imported) in ``obj``, ``obj`` first."""
        yield obj
        for member in list(obj.members.values()):
            if not member.is_alias:
                yield from _walk(member)

    class Resolver:
        """Sphinx-like lookup of a dotted name seen in the docstring of ``ctx``."""

        def __init__(self, pkg):
            self.collection = pkg.modules_collection
            self.by_name = defaultdict(set)
            for obj in _walk(pkg):
                if _is_public_path(obj.path):
                    self.by_name[obj.name].add(obj.path)

        def follow(self, obj, names):
            for name in names:
                obj = _final(obj)
                if obj is None:
                    return None
                obj = _members(obj).get(name)
                if obj is None:
                    return None
            return _final(obj)

        def find(self, name: str, ctx):
            parts = name.split(".")
            scope = ctx if (ctx.is_class or ctx.is_module) else ctx.parent
            while scope is not None:  # the docstring's scope outwards
                if parts[0] in _members(scope):
                    found = self.follow(scope, parts)
                    if found is not None:
                        return found
                scope = scope.parent
            try:  # an absolute path
                found = self.follow(self.collection[parts[0]], parts[1:])
            except Exception:
                found = None
            if found is None and len(self.by_name.get(parts[0], ())) == 1:  # a unique public name
                (path,) = self.by_name[parts[0]]
                found = self.follow(self.collection[path.split(".")[0]], path.split(".")[1:] + parts[1:])
            if found is None and len(parts) > 1:  # a name a package provides lazily (mixlab.data.load_dataset)
                prefix = ".".join(parts[:-1]) + "."
                paths = [p for p in self.by_name.get(parts[-1], ()) if p.startswith(prefix)]
                if len(paths) == 1:
                    found = self.follow(self.collection[parts[0]], paths[0].split(".")[1:])
            return found

        def resolve(self, name: str, ctx) -> str | None:
            found = self.find(name, ctx)
            return None if found is None else found.path

    class MixlabDocs(griffe.Extension):
        """Lists each public module's re-exports and turns reST roles into cross-references."""

        def on_package(self, *, pkg, **kwargs) -> None:
            resolver = Resolver(pkg)
            for obj in _walk(pkg):
                if obj.is_module and _is_public_path(obj.path):
                    self.list_reexports(obj, resolver)
            n = unresolved = 0
            for obj in _walk(pkg):
                doc = obj.docstring
                if doc is None or not ROLE_RE.search(doc.value):
                    continue
                misses = []

                def resolve(name, obj=obj, misses=misses):
                    path = resolver.resolve(name, obj)
                    if path is None:
                        misses.append(name)
                    return path

                doc.value = move_stray_items(convert_roles(doc.value, resolve))
                doc.__dict__.pop("parsed", None)  # parsed lazily by mkdocstrings; drop a stale parse
                n += 1
                unresolved += len(misses)
                if misses:
                    log.debug("mixlab_docs: %s: roles not found (shown as code): %s", obj.path, ", ".join(misses))
            log.info("mixlab_docs: reST roles converted in %d docstrings of %s (%d names not found, shown as code)",
                     n, pkg.path, unresolved)

        @staticmethod
        def list_reexports(mod, resolver) -> None:
            """Hide names re-exported from another public module (they are documented there) and append
            a table linking to them. Names ``__all__`` lists but Griffe cannot see (a lazy module
            ``__getattr__``) are looked up by name."""
            rows = []
            for name in [str(e) for e in (mod.exports or [])]:
                member = mod.members.get(name)
                if member is None:
                    target = resolver.find(name, mod)
                elif member.is_alias:
                    target = _final(member)
                    if target is None or not _is_public_path(target.path) or target.parent is mod:
                        continue
                    member.public = False  # rendered in its own module
                elif member.is_module:
                    target = member
                else:
                    continue  # defined here: rendered here
                if target is None:
                    continue
                kind = target.kind.value if hasattr(target.kind, "value") else str(target.kind)
                summary = first_sentence(target.docstring.value if target.docstring else "").replace("|", "\\|")
                rows.append(f"| {xref(name, target.path)} | {kind} | {summary} |")
            if not rows:
                return
            table = "\n".join(["**Exported here, documented with their module:**", "",
                               "| name | kind | summary |", "| --- | --- | --- |", *rows])
            if mod.docstring is None:
                mod.docstring = griffe.Docstring(table, parent=mod)
            else:
                mod.docstring.value = f"{mod.docstring.value.rstrip()}\n\n{table}"
                mod.docstring.__dict__.pop("parsed", None)


# --------------------------------------------------------------------------- MkDocs hooks

REGISTRY_TABLE = "<!-- registry-table -->"
REGISTRY_MODULES = "<!-- registry-modules -->"


def _import_mixlab(config):
    try:
        return importlib.import_module("mixlab.methods")
    except ImportError:  # not installed: the repository's source tree
        sys.path.insert(0, os.path.join(os.path.dirname(config["config_file_path"]), "src"))
        return importlib.import_module("mixlab.methods")


def _canonical(obj) -> str:
    return obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{obj.__qualname__}"


def _runtime_resolver(cls):
    """Resolve a role's name seen in ``cls``'s docstring by importing: the class, its module, mixlab."""
    import mixlab

    module = sys.modules[cls.__module__]

    def resolve(name: str):
        head, *rest = name.split(".")
        for scope in (cls, module, mixlab):
            obj = getattr(scope, head, None)
            for part in rest:
                obj = getattr(obj, part, None)
            if obj is not None and hasattr(obj, "__qualname__" if not inspect.ismodule(obj) else "__name__"):
                return _canonical(obj)
        try:
            return _canonical(importlib.import_module(name))
        except ImportError:
            return None
    return resolve


def registry_table(methods) -> str:
    """The Markdown table of every registered method, in registration order, with its "when to use it" line
    (``register(..., when=...)``); a method without one is logged as a warning, which fails ``--strict``."""
    rows = ["| method | class | takes alpha | inputs | needs | task | summary | when to use it |",
            "| --- | --- | :---: | --- | --- | --- | --- | --- |"]
    for name in methods.available():
        info = methods.get(name)
        cls = f"[`{info.cls.__name__}`][{_canonical(info.cls)}]"
        if info.options:
            cls += " " + code(", ".join(f"{k}={v!r}" for k, v in info.options.items()))
        summary = convert_roles(info.summary, _runtime_resolver(info.cls)).replace("|", "\\|")
        when = getattr(info, "when", "").strip()
        if not when:
            log.warning("mixlab_docs: method %r has no 'when to use it' line: register(%r, ..., when=...)", name, name)
        when = convert_roles(when, _runtime_resolver(info.cls)).replace("|", "\\|") or "-"
        rows.append(f"| `{name}` | {cls} | {'yes' if info.alpha else 'no'} | {', '.join(info.inputs)} | "
                    f"{', '.join(info.needs) or '-'} | {info.task} | {summary} | {when} |")
    return "\n".join(rows)


def registry_modules(methods) -> str:
    """``::: module`` for every module of ``mixlab.methods``: registered methods' modules first."""
    mods = []
    for name in methods.available():
        mod = methods.get(name).cls.__module__
        if mod not in mods:
            mods.append(mod)
    for m in sorted(pkgutil.iter_modules(methods.__path__), key=lambda m: m.name):
        mod = f"{methods.__name__}.{m.name}"
        if not m.name.startswith("_") and mod not in mods:
            mods.append(mod)
    return "\n\n".join(f"::: {mod}" for mod in mods)


def on_page_markdown(markdown: str, *, page, config, files):
    if REGISTRY_TABLE in markdown:
        markdown = markdown.replace(REGISTRY_TABLE, registry_table(_import_mixlab(config)))
    if REGISTRY_MODULES in markdown:
        markdown = markdown.replace(REGISTRY_MODULES, registry_modules(_import_mixlab(config)))
    return markdown
