"""oneclass/cli/command.py converts plain option values as typer's pydantic layer does, and
`oneclass extract-patches` then imports neither pydantic nor rich (benchmarks/extract.py)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import typer.main

from oneclass.cli import command
from oneclass.cli.main import COMMANDS, build

coercion = pytest.importorskip("typer._coercion")  # typer >= 0.25: pydantic behind every option

VALUES = ["0", "7", "-3", "-0", "007", "+5", " 12", "1_000", "12.0", "1e3", "0.05", ".5", "5.", "-0.25",
          "3.14159265358979", "nan", "inf", "abc", "", "\u0661\u0662", "9" * 25, "a b", "../x", "~/x", "-",
          "/", "/etc", "/nonexistent/x", "a\udcffb", 3, 2.5, True]


def _outcome(runtime, value, param, ctx):
    try:
        result = runtime.coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # noqa: BLE001 - the refusal is what is compared
        return "refused", type(exc).__name__, str(exc)
    shown = "nan" if isinstance(result, float) and math.isnan(result) else repr(result)
    return "taken", type(result), shown


@pytest.mark.parametrize("name", list(COMMANDS))
def test_direct_values_are_what_typer_makes_of_them(name):
    group = typer.main.get_command(build(name))
    cmd = group.commands[name]
    ctx = cmd.context_class(cmd, info_name=name)
    direct = 0
    for param in cmd.get_params(ctx):
        if not hasattr(param, "type_descriptor"):
            continue
        param._runtime_param = None
        command._direct(param)
        if param._runtime_param is None:
            continue  # left to typer
        direct += 1
        ours = param._runtime_param
        typers = coercion.build_runtime_param(param.type_descriptor)
        multi = param.multiple or param.nargs == -1
        for value in VALUES + [None]:
            value = (value,) if multi and value is not None else value
            assert _outcome(ours, value, param, ctx) == _outcome(typers, value, param, ctx), (name, param.name, value)
    assert direct, name


def test_extract_patches_imports_neither_pydantic_nor_rich(tmp_path):
    code = ("import sys\n"
            "from oneclass.cli.main import run\n"
            f"sys.argv = ['oneclass', 'extract-patches', '--set', 'dataset.normal=1', '--set', "
            f"'dataset.anomalous=1', '--size', '32', '--out', {str(tmp_path / 'store')!r}, '-q']\n"
            "try:\n    run()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print(sorted(m for m in ('pydantic', 'rich') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(tmp_path / "store"), "[]"]
