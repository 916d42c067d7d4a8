"""`bltdata blt ...`: import released BLT weights, export to transformers, count parameters."""
import json

import click

from bltdata.patch_config import DEFAULT_THRESHOLD

LAYOUTS = ("hf", "reference")


@click.group("blt")
def blt():
    """BLT checkpoints: import the reference / transformers layouts, export, parameter counts.

    \b
    Example:
      bltdata blt import path/to/blt-1b-hf -o runs/blt-1b          # config.json + model.safetensors
      bltdata blt export runs/blt-1b --format hf -o out/blt-1b-hf
      bltdata blt params --preset blt-1b
    """


def _library_errors():
    return (FileNotFoundError, ValueError, KeyError)


@blt.command("import")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--format", "layout", type=click.Choice(("auto",) + LAYOUTS), default="auto", show_default=True,
              help="hf: config.json + model.safetensors (BltForCausalLM); reference: params.json + consolidated.pth.")
@click.option("--entropy-model", type=click.Path(exists=True, file_okay=False),
              help="reference layout: the released entropy model directory (params.json + consolidated.pth).")
@click.option("--threshold", type=float, default=DEFAULT_THRESHOLD, show_default=True,
              help="reference layout: entropy threshold θ recorded for the run (hf: read from config.json).")
def import_(src, output, layout, entropy_model, threshold):
    """Import a released BLT into a run directory that `bltdata eval` / `generate` read.

    \b
    Example:
      bltdata blt import blt-1b-hf/ -o runs/blt-1b
      bltdata blt import blt_1b/ --format reference --entropy-model entropy_model/ -o runs/blt-1b
    """
    from pathlib import Path

    from bltdata.convert import blt_checkpoint

    if layout == "auto":
        layout = "reference" if (Path(src) / "params.json").is_file() else "hf"
    try:
        if layout == "hf":
            out = blt_checkpoint.import_hf(src, output)
        else:
            out = blt_checkpoint.import_reference(src, output, entropy_model, threshold)
    except _library_errors() as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{src} ({layout}) -> {out}")


@blt.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option("--format", "layout", type=click.Choice(("hf",)), default="hf", show_default=True)
@click.option("--checkpoint", help="Checkpoint name under checkpoints/ [default: latest].")
def export(run_dir, output, layout, checkpoint):
    """Export a run's BLT (and its entropy model) as a transformers BltForCausalLM directory.

    Only a BLT with the released wiring exports (decoder_source next_byte, double
    cross-attention residual, no global norm, no decoder start state, max pooling).

    \b
    Example:
      bltdata blt export runs/blt-1b --format hf -o out/blt-1b-hf
    """
    from bltdata.convert import blt_checkpoint

    try:
        out = blt_checkpoint.export_hf(run_dir, output, checkpoint)
    except _library_errors() as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{run_dir} -> {out} ({layout})")


@blt.command("params")
@click.option("--preset", "presets", multiple=True, help="Preset(s) to count [default: blt-1b and blt-7b].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def params(presets, as_json):
    """Parameters per component of BLT presets (built on the meta device: no memory).

    \b
    Example:
      bltdata blt params --preset blt-1b --preset blt-7b
    """
    import torch

    from bltdata.blt.config import preset
    from bltdata.blt.model import BLT, parameter_breakdown

    result = {}
    for name in presets or ("blt-1b", "blt-7b"):
        try:
            with torch.device("meta"):
                result[name] = parameter_breakdown(BLT(preset(name)))
        except (ValueError, TypeError) as err:
            raise click.ClickException(f"{name}: {err}") from None
    if as_json:
        click.echo(json.dumps(result))
        return
    for name, counts in result.items():
        click.echo(f"{name}: {sum(counts.values()):,} parameters")
        for component, count in counts.items():
            click.echo(f"  {component:20s} {count:>15,}")


COMMANDS = [blt]
