"""What the toolkit needs of a method class, checked without building one.

:func:`check_method_class` looks only at the class (no torch, no data), so the registry
can run it on every plugin it loads: a third-party method that lacks part of the
protocol then fails at load with one line naming it, instead of deep inside a run.
:func:`oneclass.testing.check_method` runs it first, then builds, trains and scores the
method. The constructor's shape is written here and in ``oneclass.testing`` only.
"""

from __future__ import annotations

import dataclasses
import inspect

from oneclass.errors import OneclassError
from oneclass.recipe import hint_problems

SUPERVISION = ("unsupervised", "semi-supervised", "supervised")
REQUIRED = ("fit", "score", "state_dict", "load_state_dict")  # methods every class has
OPTIONAL = ("embed", "explain")  # None, or a method
CONSTRUCTOR = ("params", "in_shape")  # cls(params, in_shape)


def method_class_problems(cls, name: str | None = None) -> list[str]:
    """What ``cls`` lacks to be a method (empty when nothing); ``name`` is the name it is
    registered under, which its ``name`` attribute must repeat."""
    if not isinstance(cls, type):
        return [f"not a class but {type(cls).__name__} {cls!r}"]
    problems = []
    declared = getattr(cls, "name", None)
    if not isinstance(declared, str) or not declared:
        problems.append("no `name` (the kebab-case name it is registered under)")
    elif name is not None and declared != name:
        problems.append(f"its `name` is {declared!r}, registered as {name!r}")
    supervision = getattr(cls, "supervision", None)
    if supervision not in SUPERVISION:
        problems.append(f"`supervision` is {supervision!r}, not one of {', '.join(SUPERVISION)}")
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and dataclasses.is_dataclass(params)):
        problems.append("no `Params` dataclass (its recipe parameters)")
    else:
        required = [f.name for f in dataclasses.fields(params) if f.init
                    and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if required:
            problems.append(f"`Params` fields without a default: {', '.join(required)}")
        unreadable = hint_problems(params)
        if unreadable:
            problems.append(f"`Params` types a recipe cannot give: {', '.join(unreadable)}")
        ignored = getattr(cls, "ignored_params", None)
        unknown = [k for k in ignored() if k not in params.__dataclass_fields__] if callable(ignored) else []
        if unknown:
            problems.append(f"`ignored_params` names what `Params` lacks: {', '.join(unknown)}")
        ignored_at = getattr(cls, "ignored_at", None)
        if callable(ignored_at) and not required:
            unknown = [k for k in ignored_at(params()) if k not in params.__dataclass_fields__]
            if unknown:
                problems.append(f"`ignored_at` names what `Params` lacks: {', '.join(unknown)}")
    for attr in REQUIRED:
        if not callable(getattr(cls, attr, None)):
            problems.append(f"no `{attr}` method")
    for attr in OPTIONAL:
        value = getattr(cls, attr, None)
        if value is not None and not callable(value):
            problems.append(f"`{attr}` is neither None nor a method")
    try:
        inspect.signature(cls).bind(*CONSTRUCTOR)
    except TypeError:
        problems.append(f"its constructor does not take ({', '.join(CONSTRUCTOR)})")
    except ValueError:
        pass  # no signature to read (a C-level class): left to the first build
    return problems


def check_method_class(cls, where: str, name: str | None = None) -> None:
    """One :class:`OneclassError` line, ``where: not a oneclass method: ...``, when ``cls``
    lacks part of the protocol."""
    problems = method_class_problems(cls, name)
    if problems:
        raise OneclassError(f"{where}: not a oneclass method: {'; '.join(problems)}")
