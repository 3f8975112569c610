"""Generate roff man pages from the CLI itself, so they cannot drift from it.

    python -m oneclass.cli.manpage man/      # writes man/oneclass.1, man/oneclass-<cmd>.1
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from oneclass import __version__


def _escape(text: str) -> str:
    lines = []
    for line in text.replace("\\", "\\\\").replace("-", "\\-").splitlines():
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(lines)


def _paragraphs(text: str) -> str:
    blocks = [" ".join(b.split()) for b in (text or "").strip().split("\n\n") if b.strip()]
    return "\n.PP\n".join(_escape(b) for b in blocks)


def _page(name: str, invocation: str, command, ctx) -> str:
    usage = " ".join(command.collect_usage_pieces(ctx))
    help_text = command.help or ""
    summary = " ".join(help_text.strip().split("\n\n")[0].split()) if help_text.strip() else name
    parts = [
        f'.TH "{name.upper()}" 1 "" "oneclass {__version__}" "oneclass manual"',
        ".SH NAME", f"{_escape(name)} \\- {_escape(summary)}",
        ".SH SYNOPSIS", f".B {_escape(invocation)}\n{_escape(usage)}",
        ".SH DESCRIPTION", _paragraphs(help_text),
    ]
    options = [p for p in command.get_params(ctx) if p.get_help_record(ctx)]
    if options:
        parts.append(".SH OPTIONS")
        for param in options:
            flags, text = param.get_help_record(ctx)
            parts += [".TP", f".B {_escape(flags)}", _escape(" ".join(text.split()))]
    if hasattr(command, "commands"):
        parts.append(".SH COMMANDS")
        for sub_name, sub in sorted(command.commands.items()):
            parts += [".TP", f".B {_escape(sub_name)}",
                      _escape(" ".join((sub.help or "").strip().split("\n\n")[0].split()))]
    parts += [".SH SEE ALSO", "oneclass(1)"] if name != "oneclass" else []
    return "\n".join(p for p in parts if p) + "\n"


def pages() -> dict[str, str]:
    """File name → roff text for the whole command tree."""
    from oneclass.cli.main import app

    root = typer.main.get_command(app)
    out: dict[str, str] = {}

    # typer may vendor click, so the context class is taken from the command itself
    def walk(words: list[str], command, parent) -> None:
        ctx = command.context_class(command, info_name=words[-1], parent=parent,
                                    terminal_width=80, max_content_width=80)
        name = "-".join(words)
        out[f"{name}.1"] = _page(name, " ".join(words), command, ctx)
        if hasattr(command, "commands"):
            for sub_name, sub in command.commands.items():
                walk([*words, sub_name], sub, ctx)

    walk(["oneclass"], root, None)
    return out


def main(argv: list[str]) -> None:
    target = Path(argv[0] if argv else "man")
    target.mkdir(exist_ok=True)
    for stale in target.glob("*.1"):
        stale.unlink()
    for filename, text in pages().items():
        (target / filename).write_text(text)
        print(target / filename)


if __name__ == "__main__":
    main(sys.argv[1:])
