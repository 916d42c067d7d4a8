"""Entry point of the `bltdata` command line: the click group and its sub-commands."""
import click
from bltdata import __version__

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bltdata")
def main():
    """bltdata: patch byte corpora for BLT.

    \b
    Example:
      bltdata demo
    """

@main.command()
def hello():
    """Say hi.

    \b
    Example:
      bltdata hello
    """
    print("hi")
