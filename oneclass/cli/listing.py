"""``oneclass list``: the registered datasets and methods."""

from __future__ import annotations

import dataclasses
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
            plugin = reg.get(name)
            layout = getattr(plugin, "layout", "")
            if layout:
                print(textwrap.indent(layout.rstrip(), "    "))
            # datasets declare Options (dataset.<key>), methods Params (method.<key>)
            for attr, label in (("Options", "options"), ("Params", "parameters")):
                options = getattr(plugin, attr, None)
                if options is not None and dataclasses.fields(options):
                    defaults = ", ".join(f"{f.name}={_default(f)!r}" for f in dataclasses.fields(options))
                    print(f"    {label}: {defaults}")
            if reg.kind == "method":
                print(f"    supervision: {plugin.supervision}; validation set: {plugin.uses_validation}")
            print()


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return None


@app.command("datasets", epilog=epilog("oneclass list datasets"))
def datasets(verbose: bool = VERBOSE) -> None:
    """List dataset plugins, one per line: name and description."""
    _print(registry.datasets, verbose)


@app.command("methods", epilog=epilog("oneclass list methods"))
def methods(verbose: bool = VERBOSE) -> None:
    """List method plugins, one per line: name and description."""
    _print(registry.methods, verbose)
