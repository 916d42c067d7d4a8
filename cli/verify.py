"""`bltdata verify` and `bltdata inspect`: check and summarise shard directories."""
import json

import click


@click.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
def verify(path: str, as_json: bool):
    """Check a shard directory (or one shard): checksums, schema, metadata, row invariants.

    PATH is the directory `bltdata patch -o` wrote, its `data/` (the manifest is found one
    level up), or one shard file. `data/` must hold only the listed shards. Exits 0 when everything holds, 1 when a problem was found (each is printed with its
    file and, for row problems, the row and doc_id).

    \b
    Example:
      bltdata verify out/shards
    """
    from bltdata import shards

    problems = shards.validate(path)
    if as_json:
        click.echo(json.dumps({"ok": not problems, "problems": [
            {"file": p.file, "row": p.row, "doc_id": p.doc_id, "message": p.message} for p in problems]}, indent=1))
    else:
        for p in problems:
            click.echo(str(p), err=True)
        if not problems:
            summary = shards.summarize(path)
            click.echo(f"ok: {summary['shards']} shard(s), {summary['documents']:,} documents, "
                       f"{summary['bytes']:,} bytes, {summary['patches']:,} patches")
    raise SystemExit(1 if problems else 0)


@click.command("inspect")
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_(path: str, as_json: bool):
    """Summarise a shard directory or one shard: documents, bytes, patches, metadata.

    \b
    Example:
      bltdata inspect out/shards --json
    """
    from bltdata import shards

    try:
        summary = shards.summarize(path)
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=1, sort_keys=True))
        return
    mean = summary["mean_patch_bytes"]
    rows = [
        ("shards", f"{summary['shards']:,}"), ("documents", f"{summary['documents']:,}"),
        ("bytes", f"{summary['bytes']:,}"), ("patches", f"{summary['patches']:,}"),
        ("mean bytes/patch", "-" if mean is None else f"{mean:.3f}"),
        ("row groups", f"{summary['row_groups']:,}"), ("size on disk", f"{summary['size']:,}"),
        ("rejected", "-" if summary["rejected"] is None else f"{summary['rejected']:,}"),
        ("patcher", json.dumps(summary["patcher"], sort_keys=True)),
        ("entropy model", json.dumps(summary["entropy_model"], sort_keys=True)),
    ]
    for key, value in rows:
        click.echo(f"{key:<17} {value}")


COMMANDS = [verify, inspect_]
