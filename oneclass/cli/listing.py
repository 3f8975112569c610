"""``oneclass list``: the registered datasets and methods."""

from __future__ import annotations

import dataclasses
import inspect
import re
import textwrap

import typer

from oneclass import registry
from oneclass.cli.manpage import epilog

app = typer.Typer(help="List the registered datasets or methods.", epilog=epilog("oneclass list"),
                  rich_markup_mode=None, no_args_is_help=True)

VERBOSE = typer.Option(False, "--verbose", "-v",
                       help="Also show each plugin's folder layout and options or parameters.")


def _print(reg: registry.Registry, verbose: bool) -> None:
    rows = reg.describe()
    if not rows:
        print(f"(no {reg.kind}s installed)")
        return
    width = max(len(name) for name, _, _ in rows)
    for name, description, origin in rows:
        suffix = "" if origin == "built-in" else f"  [{origin}]"
        print(f"{name:<{width}}  {description}{suffix}")
        if verbose:
            _details(reg, reg.get(name))


def _details(reg: registry.Registry, plugin) -> None:
    """The folder layout (datasets), supervision and use of validation (methods), and a
    table of the recipe keys: name, default, meaning (from the Options/Params comments)."""
    layout = getattr(plugin, "layout", "")
    if layout:
        print(textwrap.indent(layout.rstrip(), "    "))
    if reg.kind == "method":
        print(f"    supervision: {plugin.supervision}; validation set: {plugin.uses_validation}")
    # datasets declare Options (dataset.<key>), methods Params (method.<key>)
    attr, section = ("Params", "method") if reg.kind == "method" else ("Options", "dataset")
    options = getattr(plugin, attr, None)
    ignored = set(getattr(plugin, "ignored_params", tuple)())  # a method's variant may leave some out
    fields = [f for f in dataclasses.fields(options) if f.name not in ignored] if options is not None else []
    if fields:
        docs = field_docs(options)
        rows = [(f"{section}.{f.name}", _shown(_default(f)), docs.get(f.name, "")) for f in fields]
        key_width = max(len(r[0]) for r in rows)
        value_width = min(max(len(r[1]) for r in rows), 24)
        for key, value, doc in rows:
            print(f"    {key:<{key_width}}  {value:<{value_width}}  {doc}".rstrip())
    print()


_FIELD = re.compile(r"^\s*(\w+)\s*:[^=#]+(?:=[^#]*)?(?:#\s*(.*))?$")


def field_docs(options: type) -> dict[str, str]:
    """Each field's comment in the dataclass source: the one on its line, or the comment
    lines just above it; a subclass's comment wins over its base's."""
    docs: dict[str, str] = {}
    for cls in reversed(options.__mro__[:-1]):
        try:
            lines = inspect.getsource(cls).splitlines()[1:]
        except (OSError, TypeError):
            continue
        above: list[str] = []
        inline = None  # (field, indentation) of a field line that ended in a comment
        for line in lines:
            stripped = line.strip()
            indent = len(line) - len(line.lstrip())
            if stripped.startswith("#"):
                text = stripped.lstrip("# ").rstrip()
                if inline and indent > inline[1]:  # the inline comment goes on below it
                    docs[inline[0]] += " " + text
                else:
                    above.append(text)
                    inline = None
                continue
            match = _FIELD.match(line)
            inline = None
            if match and match.group(1) in options.__dataclass_fields__:
                doc = match.group(2) or " ".join(above)
                if doc:
                    docs[match.group(1)] = doc.strip()
                if match.group(2):
                    inline = (match.group(1), indent)
            above = []
    return docs


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return None


def _shown(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) + "}"
    return "null" if value is None else str(value)


@app.command("datasets", epilog=epilog("oneclass list datasets"))
def datasets(verbose: bool = VERBOSE) -> None:
    """List dataset plugins, one per line: name and description."""
    _print(registry.datasets, verbose)


@app.command("methods", epilog=epilog("oneclass list methods"))
def methods(verbose: bool = VERBOSE) -> None:
    """List method plugins, one per line: name and description."""
    _print(registry.methods, verbose)
