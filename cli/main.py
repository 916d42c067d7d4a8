"""Entry point of the `bltdata` command line: the click group and its sub-commands.

Each command group lives in its own small module under `bltdata.cli`; modules import only
click and the standard library at the top so that `bltdata --help` stays fast (torch,
apache_beam, numba and pyarrow are imported inside the commands that need them).
"""
import logging

import click

from bltdata import __version__


class _Group(click.Group):
    """The `bltdata` group: a command that needs a missing extra prints one line naming it (exit 2)."""

    def invoke(self, ctx: click.Context):
        from bltdata.extras import missing_extra

        try:
            return super().invoke(ctx)
        except ImportError as error:
            missing = missing_extra(error)
            if missing is None:
                raise
            click.echo(f"Error: bltdata {ctx.invoked_subcommand} {missing}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bltdata")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int):
    """bltdata: patch byte corpora for the Byte Latent Transformer (BLT).

    Reads raw corpora as bytes, scores every byte with a small entropy model, cuts the bytes
    into patches and writes Parquet shards with a manifest; then loads the shards into
    PyTorch to train a BLT.

    \b
    Examples:
      bltdata demo                                   # embedded corpus end to end
      bltdata patch corpus/ -o shards/ --workers 2   # patch your own corpus
      bltdata verify shards/
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_drop_beam_noise)


# Notices Beam logs on every local run that say nothing about the job: the optional Google
# Cloud clients are absent (only Dataflow needs them), and memory use cannot be sampled.
_BEAM_NOISE = ("apitools not found", "Resource module is not available")


def _drop_beam_noise(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(_BEAM_NOISE)


# Command registration: one line per command module (keep sorted by module name).


def _register(module_name: str) -> None:
    """Add every command listed in ``bltdata.cli.<module_name>.COMMANDS`` to the group."""
    import importlib

    module = importlib.import_module(f"bltdata.cli.{module_name}")
    for command in module.COMMANDS:
        main.add_command(command)


# One line per command module; each module defines COMMANDS = [click commands/groups].
_register("blt")
_register("verify")
_register("patch")
_register("entropy")
_register("tools")
_register("train")
