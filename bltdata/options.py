"""Command-line options declared once, on dataclass fields, and derived for click and argparse.

A field made with :func:`option` carries its help text, its choices or numeric bounds and
its flags in ``metadata``; :func:`click_options` and :func:`add_arguments` turn the fields of
a dataclass into click options and argparse arguments with the same names, defaults, help
and bounds, and :func:`check_options` (called from the dataclass's ``__post_init__``)
enforces the same choices and bounds on objects built in Python. A field without an
option declaration is an error in both parsers, so a new field cannot be forgotten in one.
Only the standard library is imported here (click on use), so any layer can use it.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
import numbers
from dataclasses import dataclass


def is_integer(value) -> bool:
    """An int or numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """An int, float or numpy number, not a bool (numpy's bool is not a `numbers.Real`)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Option:
    """How one dataclass field appears on a command line."""

    help: str
    flags: tuple[str, ...] = ()  # default: ("--field-name",)
    choices: tuple | None = None
    min: float | None = None  # inclusive bounds of a number
    max: float | None = None
    default_text: str | None = None  # what the default means when it is None, for the help
    positional: bool = False  # one or more values without a flag (a list field)
    metavar: str | None = None  # of a positional: how help and messages name it
    directory: bool = False  # a directory path: an existing file is refused

    def flag(self, name: str) -> str:
        """The long flag (or the metavar of a positional), as error messages name the option."""
        if self.positional:
            return self.metavar or name.upper()
        return ([f for f in self.flags if f.startswith("--")] or [f"--{name.replace('_', '-')}"])[0]

    def all_flags(self, name: str) -> tuple[str, ...]:
        return self.flags or (f"--{name.replace('_', '-')}",)

    def range_text(self) -> str:
        """The bounds as click writes them (``x>=1``, ``0<=x<=9``), '' without bounds."""
        if self.min is None and self.max is None:
            return ""
        if self.max is None:
            return f"x>={self.min}"
        return f"x<={self.max}" if self.min is None else f"{self.min}<=x<={self.max}"


def option(default=dataclasses.MISSING, **spec) -> typing.Any:
    """A dataclass field with a default (none: the option is required) and its `Option` spec."""
    if default is not dataclasses.MISSING and isinstance(default, (list, dict, set)):
        raise TypeError("a mutable default needs a factory; declare the field without a default")
    return dataclasses.field(default=default, metadata={"option": Option(**spec)})


def spec_of(cls, f: dataclasses.Field) -> Option:
    """The field's `Option`; TypeError naming the class and field when it has none."""
    spec = f.metadata.get("option")
    if not isinstance(spec, Option):
        raise TypeError(f"{cls.__name__}.{f.name} declares no command-line option: make it with "
                        f"bltdata.options.option(default, help=...)")
    return spec


def value_type(cls, f: dataclasses.Field) -> type:
    """The field's scalar type: `float | None` → float, `list[str]` → str, `bool` → bool."""
    hint = typing.get_type_hints(cls)[f.name]
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0]
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if len(kinds) != 1 or kinds[0] not in (str, int, float, bool):
        raise TypeError(f"{cls.__name__}.{f.name}: an option must be str, int, float or bool (or Optional "
                        f"of one), not {hint}")
    return kinds[0]


def option_fields(cls) -> list[tuple[dataclasses.Field, Option, type]]:
    """(field, spec, scalar type) of every field of `cls`, in declaration order."""
    return [(f, spec_of(cls, f), value_type(cls, f)) for f in dataclasses.fields(cls)]


def check_options(obj) -> None:
    """ValueError naming the flag when a field of `obj` is not of its type, choices or bounds."""
    for f, spec, kind in option_fields(type(obj)):
        value = getattr(obj, f.name)
        if value is None and f.default is None:
            continue
        if not _is_kind(value, kind, spec):
            expected = f"a list of {_KIND_NAMES[kind][1]}" if spec.positional else _KIND_NAMES[kind][0]
            raise ValueError(f"{spec.flag(f.name)} must be {expected}; got {value!r}")
        if spec.choices is not None and value not in spec.choices:
            raise ValueError(f"{spec.flag(f.name)} must be one of {', '.join(map(str, spec.choices))}; "
                             f"got {value!r}")
        if kind in (int, float) and not _in_bounds(value, spec):
            raise ValueError(f"{spec.flag(f.name)} must be in the range {spec.range_text()}; got {value!r}")


_KIND_NAMES = {str: ("a string", "strings"), int: ("an integer", "integers"), float: ("a number", "numbers"),
               bool: ("True or False", "booleans")}


def _is_kind(value, kind: type, spec: Option) -> bool:
    if spec.positional:
        return isinstance(value, (list, tuple)) and all(_is_kind(v, kind, Option(help="")) for v in value)
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return is_integer(value)
    if kind is float:
        return is_real(value) and not math.isnan(value)
    return isinstance(value, (str, os.PathLike))


def _in_bounds(value, spec: Option) -> bool:
    return (spec.min is None or value >= spec.min) and (spec.max is None or value <= spec.max)


def values_of(cls, values: dict) -> dict:
    """The entries of `values` (parsed options by name) that are fields of `cls`."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: value for name, value in values.items() if name in names}


def _help(f: dataclasses.Field, spec: Option, *, argparse_help: bool) -> str:
    """The help text; argparse's gets the default and the range appended, as click shows them."""
    text = spec.help
    if f.default is None and spec.default_text:
        text += f" [default: {spec.default_text}]"
    if not argparse_help:
        return text
    if f.default not in (None, False, dataclasses.MISSING):
        text += f" [default: {f.default}]"
    if spec.range_text():
        text += f" [{spec.range_text()}]"
    return text.replace("%", "%%")


# ----------------------------------------------------------------------------- click


def click_options(cls, *, skip: typing.Collection[str] = ()):
    """A decorator adding one click option per field of `cls` (positional fields and `skip` left out)."""
    import click

    options = []
    for f, spec, kind in option_fields(cls):
        if spec.positional or f.name in skip:
            continue
        options.append(click.option(*spec.all_flags(f.name), f.name, **_click_settings(f, spec, kind)))

    def decorate(function):
        for add in reversed(options):
            function = add(function)
        return function
    return decorate


def _click_settings(f: dataclasses.Field, spec: Option, kind: type) -> dict:
    import click

    settings = {"help": _help(f, spec, argparse_help=False)}
    if f.default is dataclasses.MISSING:
        settings["required"] = True
    else:
        settings["default"] = f.default
        settings["show_default"] = f.default is not None and kind is not bool
    if kind is bool:
        settings["is_flag"] = True
    elif spec.choices is not None:
        settings["type"] = click.Choice(spec.choices)
    elif spec.directory:
        settings["type"] = click.Path(file_okay=False)
    elif spec.min is not None or spec.max is not None:
        settings["type"] = (click.IntRange if kind is int else click.FloatRange)(min=spec.min, max=spec.max)
    else:
        settings["type"] = kind
    return settings


# ----------------------------------------------------------------------------- argparse


def add_arguments(parser: argparse.ArgumentParser, cls, *, skip: typing.Collection[str] = ()) -> None:
    """One argparse argument per field of `cls`, with the names, defaults, help and bounds of `click_options`."""
    for f, spec, kind in option_fields(cls):
        if f.name in skip:
            continue
        settings = {"help": _help(f, spec, argparse_help=True)}
        if spec.positional:
            parser.add_argument(f.name, nargs="+", metavar=spec.flag(f.name), type=kind, **settings)
            continue
        settings["dest"] = f.name
        if f.default is dataclasses.MISSING:
            settings["required"] = True
        else:
            settings["default"] = f.default
        if kind is bool:
            settings["action"] = "store_true"
        else:
            settings["type"] = _argparse_type(f, spec, kind)
            settings["choices"] = spec.choices
        parser.add_argument(*spec.all_flags(f.name), **settings)


def _argparse_type(f: dataclasses.Field, spec: Option, kind: type):
    """The converter of one option: `kind`, refusing values out of bounds (and files for a directory)."""
    def convert(text: str):
        value = kind(text)
        if kind in (int, float) and not _in_bounds(value, spec):
            raise argparse.ArgumentTypeError(f"{value!r} is not in the range {spec.range_text()}")
        if spec.directory and os.path.isfile(text):
            raise argparse.ArgumentTypeError(f"directory {text!r} is a file")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its "invalid int value" message
    return convert
