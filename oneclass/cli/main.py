"""``oneclass``: the entry point, shared options and error handling."""

from __future__ import annotations

import importlib
import sys
import warnings

import typer

from oneclass import __version__
from oneclass.cli.command import Command, Group
from oneclass.cli.manpage import epilog
from oneclass.errors import OneclassError

# command name -> "module:function" under oneclass.cli, in the order --help lists them.
# A command's module is imported only when the command is built: `oneclass extract-patches
# ...` builds that one command (run() below), not the modules of the others and what they
# import (rich's console, the run-folder readers).
COMMANDS = {
    "extract-patches": "extract:extract_patches",
    "train": "train:train",
    "score": "score:score",
    "evaluate": "evaluate:evaluate",
    "tsne": "tsne:tsne",
    "explain": "explain:explain",
    "sweep": "sweep:sweep",
}
GROUPS = {"list": "listing:app"}


def _version(value: bool) -> None:
    if value:
        print(f"oneclass {__version__}")
        raise typer.Exit()


def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Semi-supervised one-class classification (anomaly detection) of images.

    Stages read and write files: extract-patches writes a patch store from a dataset,
    train a run folder from a recipe, score a score table from a run and new patches,
    evaluate metrics from score tables or runs, tsne a latent-space map of a run,
    explain figures of the most anomalous items beside their anomaly maps, sweep a
    grid of recipe values x seeds as run folders (locally or on Slurm).
    Tables go to stdout, progress and summaries to stderr. `oneclass COMMAND --help`
    (or man oneclass-COMMAND) tells more of each command.
    """


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(f"oneclass.cli.{module}"), name)


def build(only: str | None = None) -> typer.Typer:
    """The ``oneclass`` app: every command, or with ``only`` that command alone (the same
    group, callback and options, so what follows the command's name parses, helps and
    fails as in the whole app)."""
    # --help prints click's plain help: the same option records as the man pages (typer's rich
    # help labels flags <bool> and swallows [default: ...] in help strings), and the epilogs
    # (examples, exit status, environment, files) come from oneclass/cli/manpage.py, as the
    # man pages' sections do. The description is main's docstring above.
    app = typer.Typer(
        name="oneclass",
        cls=Group,
        epilog=epilog("oneclass"),
        rich_markup_mode=None,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(main)
    for name, target in COMMANDS.items():
        if only in (None, name):
            app.command(name, cls=Command, epilog=epilog(f"oneclass {name}"))(_load(target))
    for name, target in GROUPS.items():
        if only in (None, name):
            app.add_typer(_load(target), name=name)
    return app


def __getattr__(name: str):
    if name == "app":  # the whole app, for the man pages and tests; built once
        globals()["app"] = build()
        return globals()["app"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _click_errors() -> tuple[type, type]:
    """click's UsageError and ClickException, by way of typer's public BadParameter (typer
    vendors click in newer releases, so ``import click`` may find nothing or another copy)."""
    bases = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
    return bases["UsageError"], bases["ClickException"]


def _who() -> str:
    """``oneclass``, or under torchrun with N > 1 on ranks other than 0 ``oneclass[rank R]``,
    so that the same refusal printed by every rank reads as one."""
    import os

    rank = os.environ.get("RANK", "0") if os.environ.get("WORLD_SIZE", "1") not in ("", "1") else "0"
    return "oneclass" if rank == "0" else f"oneclass[rank {rank}]"


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line like the errors' (Python's shows a source path and line)."""
    kind = "" if category is UserWarning else f"{category.__name__}: "
    print(f"{_who()}: warning: {kind}{message}", file=sys.stderr)


def run() -> None:
    warnings.showwarning = _warning_line
    usage_error, click_error = _click_errors()
    first = sys.argv[1] if len(sys.argv) > 1 else None
    app = build(first if first in COMMANDS or first in GROUPS else None)
    try:
        code = app(standalone_mode=False)
    except usage_error as exc:  # a mistyped command line: one line, as every other error
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `oneclass` or `oneclass list`
            exc.show()
            sys.exit(exc.exit_code)
        command = exc.ctx.command_path if exc.ctx is not None else "oneclass"
        print(f"oneclass: error: {exc.format_message()} (see {command} --help)", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click_error as exc:
        print(f"oneclass: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except RuntimeError as exc:
        if type(exc).__name__ != "Abort":  # click's Ctrl-C outside train, which handles its own
            raise
        print("oneclass: interrupted", file=sys.stderr)
        sys.exit(130)
    except OneclassError as exc:
        print(f"{_who()}: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a read or write the commands did not foresee: still one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"oneclass: error: {where}{exc.strerror or exc}", file=sys.stderr)
        sys.exit(1)
    if code == 130:  # typer caught a Ctrl-C itself (train handles its own, naming its checkpoint)
        print("oneclass: interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
