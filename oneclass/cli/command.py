"""The commands' click classes: typer's, whose plain option values skip typer's pydantic layer.

typer 0.29 converts every option value through a pydantic TypeAdapter, built per
parameter on first use: importing pydantic and building the adapters was ~70 ms of the
~0.5 s that `oneclass extract-patches` took on the nanofibre grid (benchmarks/extract.py).
Here the values whose conversion is certain are converted directly, to what the adapter
returns for them: ASCII decimal integers (int), plain decimals (float), booleans (a
--flag/--no-flag pair left unset is None, not False), strings, paths (through typer's
own path checks, handed a ``Path`` so that they skip pydantic) and lists of strings.
Every other value, and every parameter with a parser, bounds or another type, goes to
typer's adapter as before, so a refused value gets typer's own message
(tests/test_cli_values.py compares the two). Where typer has no such layer (older
releases convert with click's types) nothing changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from typer.core import TyperCommand, TyperGroup

try:
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import coerce_cli_path
except ImportError:  # typer before 0.25: click's types, no pydantic
    RuntimeParam = None

_INT = re.compile(r"-?[0-9]{1,18}")
_FLOAT = re.compile(r"-?[0-9]{1,10}(\.[0-9]{1,12})?")  # float() and pydantic both round correctly
_UNSURE = object()


def _to_int(value, param, ctx):
    if type(value) is int or (type(value) is str and _INT.fullmatch(value)):
        return int(value)
    return _UNSURE


def _to_float(value, param, ctx):
    if type(value) is float or (type(value) is str and _FLOAT.fullmatch(value)):
        return float(value)
    return _UNSURE


def _to_bool(value, param, ctx):
    return value if type(value) is bool else _UNSURE


def _to_str(value, param, ctx):
    return value if type(value) is str else _UNSURE


def _to_path(value, param, ctx):
    if type(value) is str:
        value = Path(value)
    elif not isinstance(value, Path):
        return _UNSURE
    return coerce_cli_path(value, param.type_descriptor.parameter_info, path_type=Path, param=param, ctx=ctx)


def _to_strs(value, param, ctx):
    if isinstance(value, (list, tuple)) and all(type(v) is str for v in value):
        return list(value)
    return _UNSURE


_CONVERT = {int: _to_int, float: _to_float, bool: _to_bool, str: _to_str, Path: _to_path,
            list[str]: _to_strs}

if RuntimeParam is not None:
    @dataclass(frozen=True)
    class _Direct(RuntimeParam):
        convert: Callable[[Any, Any, Any], Any]

        def _coerce_value(self, value, param, ctx):
            result = self.convert(value, param, ctx)
            if result is _UNSURE:
                return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)
            return result


def _direct(param) -> None:
    if RuntimeParam is None or getattr(param, "_runtime_param", True) is not None:
        return  # not typer's parameter with a lazy runtime converter, or already built
    descriptor = getattr(param, "type_descriptor", None)
    info = getattr(descriptor, "parameter_info", None)
    convert = _CONVERT.get(getattr(descriptor, "annotation", None))
    if convert is None or getattr(descriptor, "file_annotation", True) is not None:
        return
    special = ("parser", "min", "max", "clamp") + (("path_type",) if convert is _to_path else ())
    if any(getattr(info, name, True) is not None and getattr(info, name) is not False for name in special):
        return  # typer's adapter does more than convert
    param._runtime_param = _Direct(parameter_info=info, annotation=descriptor.annotation, convert=convert)


class _DirectValues:
    def parse_args(self, ctx, args: list[str]) -> list[str]:
        for param in self.get_params(ctx):  # --help too: a typer option of its own
            _direct(param)
        return super().parse_args(ctx, args)


class Command(_DirectValues, TyperCommand):
    """typer's command; its options' plain values are converted without pydantic."""


class Group(_DirectValues, TyperGroup):
    """typer's group; its options' plain values are converted without pydantic."""
