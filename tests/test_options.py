"""bltdata.options: click options and argparse arguments derived from one dataclass declaration."""
import argparse
import dataclasses

import click
import pytest
from click.testing import CliRunner

from bltdata.options import Option, add_arguments, check_options, click_options, option, values_of


@dataclasses.dataclass
class Sample:
    name: list[str] = option(positional=True, metavar="NAME", help="Names.")
    size: int = option(3, min=1, max=9, help="A size.")
    ratio: float | None = option(None, min=0.5, help="A ratio.", default_text="none at all")
    kind: str = option("a", choices=("a", "b"), help="A kind.")
    loud: bool = option(False, flags=("-l", "--loud"), help="Shout.")

    def __post_init__(self):
        check_options(self)


def _click_command(seen: dict):
    @click.command()
    @click.argument("name", nargs=-1)
    @click_options(Sample)
    def command(name, **options):
        seen.update(Sample(name=list(name), **values_of(Sample, options)).__dict__)
    return command


def _parser():
    parser = argparse.ArgumentParser(prog="sample")
    add_arguments(parser, Sample)
    return parser


def test_both_parsers_give_the_same_values():
    seen = {}
    argv = ["x", "y", "--size", "9", "--ratio", "0.5", "--kind", "b", "-l"]
    assert CliRunner().invoke(_click_command(seen), argv).exit_code == 0
    parsed = Sample(**vars(_parser().parse_args(argv)))
    assert seen == parsed.__dict__ == {"name": ["x", "y"], "size": 9, "ratio": 0.5, "kind": "b", "loud": True}


def test_defaults_and_help():
    seen = {}
    assert CliRunner().invoke(_click_command(seen), ["x"]).exit_code == 0
    assert seen == Sample(name=["x"]).__dict__ == Sample(**vars(_parser().parse_args(["x"]))).__dict__
    click_help = CliRunner().invoke(_click_command({}), ["--help"]).output
    argparse_help = _parser().format_help()
    for text in ("A size.", "[default: none at all]", "1<=x<=9", "x>=0.5", "Shout."):
        assert text in click_help and text in argparse_help, text


@pytest.mark.parametrize("argv, flag", [(["--size", "0"], "--size"), (["--size", "10"], "--size"),
                                        (["--ratio", "0.25"], "--ratio"), (["--kind", "c"], "--kind")])
def test_out_of_bounds_refused_by_both(argv, flag, capsys):
    result = CliRunner().invoke(_click_command({}), ["x", *argv])
    assert result.exit_code == 2 and flag in result.output
    with pytest.raises(SystemExit) as exit_:
        _parser().parse_args(["x", *argv])
    assert exit_.value.code == 2 and flag in capsys.readouterr().err
    value = argv[1]
    with pytest.raises(ValueError, match=flag):
        Sample(name=["x"], **{flag[2:]: float(value) if flag == "--ratio" else
                              (int(value) if flag == "--size" else value)})


def test_a_field_without_an_option_is_refused():
    @dataclasses.dataclass
    class Forgotten:
        size: int = option(3, help="A size.")
        extra: int = 0

    with pytest.raises(TypeError, match="Forgotten.extra"):
        click_options(Forgotten)
    with pytest.raises(TypeError, match="Forgotten.extra"):
        add_arguments(argparse.ArgumentParser(), Forgotten)


def test_unsupported_types_and_mutable_defaults_are_refused():
    @dataclasses.dataclass
    class Odd:
        table: dict = option(None, help="A table.")

    with pytest.raises(TypeError, match="Odd.table"):
        click_options(Odd)
    with pytest.raises(TypeError, match="mutable"):
        option([], help="A list.")


def test_flags_and_range_text():
    assert Option(help="h").flag("batch_bytes") == "--batch-bytes"
    assert Option(help="h", flags=("-o", "--output")).flag("output") == "--output"
    assert Option(help="h", positional=True, metavar="INPUT").flag("inputs") == "INPUT"
    texts = [Option(help="h", min=1).range_text(), Option(help="h", max=5).range_text(),
             Option(help="h", min=0, max=9).range_text(), Option(help="h").range_text()]
    assert texts == ["x>=1", "x<=5", "0<=x<=9", ""]


@pytest.mark.parametrize("field, value, message", [("size", 2.0, "an integer"), ("size", True, "an integer"),
                                                   ("ratio", "x", "a number"), ("ratio", float("nan"), "a number"),
                                                   ("loud", 1, "True or False"), ("name", "x", "a list of strings")])
def test_values_of_the_wrong_type_are_refused_naming_the_flag(field, value, message):
    values = {"name": ["x"], field: value}
    flag = "NAME" if field == "name" else f"--{field}"
    with pytest.raises(ValueError, match=f"{flag} must be {message}"):
        Sample(**values)
