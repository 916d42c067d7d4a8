"""Inspection commands: show, stats, plot, locate, head, repatch, export, import-blt-arrow.

Thin click wrappers over `bltdata.inspect`: each command parses its options, calls one
library function and prints the result (`--json` for scripts). Exit codes: 0 ok, 1 a
problem was found (missing file, skipped or rejected documents, bad data), 2 usage error.
Only click and the standard library are imported at module level.
"""
from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

import click

from bltdata import extras
from bltdata.patch_config import MODES

MAX_IDS_SHOWN = 20


@contextlib.contextmanager
def _errors():
    """Library errors → click errors: usage problems exit 2, data problems exit 1."""
    try:
        yield
    except FileExistsError as e:
        raise click.UsageError(str(e)) from None
    except (FileNotFoundError, ValueError, KeyError, IndexError, OSError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise click.ClickException(str(message)) from None


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=1, ensure_ascii=False, default=str))


def _pick(path: Path, index: int | None, doc_id: str | None, index_hint: str = "--row"):
    """The Location of --row / --doc (row 0 when neither is given); `index_hint` names the
    index as the user gave it in an out-of-range error (`locate` takes it as INDEX)."""
    from bltdata.inspect.locate import find_doc, locate

    if index is not None and doc_id is not None:
        raise click.UsageError("give --row or --doc, not both")
    with _errors():
        if doc_id is not None:
            return find_doc(path, doc_id)
        try:
            return locate(path, 0 if index is None else index)
        except IndexError as e:
            raise click.BadParameter(str(e), param_hint=index_hint) from None


def _threshold_of(location) -> float | None:
    from bltdata.shards import read_metadata

    patcher = read_metadata(location.shard).get("patcher") or {}
    return patcher.get("threshold") if patcher.get("mode") == "entropy" else None


def _truncate(data: bytes, lengths: list[int], max_bytes: int | None) -> tuple[bytes, list[int]]:
    if max_bytes is None or len(data) <= max_bytes:
        return data, lengths
    out, used = [], 0
    for n in lengths:
        if used >= max_bytes:
            break
        out.append(min(n, max_bytes - used))
        used += out[-1]
    return data[:max_bytes], out


# ----------------------------------------------------------------------------- show


@click.command("show")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--row", "index", type=int, help="Global 0-based document index (as `locate` counts). Default 0.")
@click.option("--doc", "doc_id", help="Show the document with this doc_id instead.")
@click.option("--entropies", "show_entropies", is_flag=True,
              help="Add a strip of per-byte entropies under each line (needs stored entropies).")
@click.option("--color/--no-color", default=None, help="Colour patches (default: when stdout is a terminal).")
@click.option("--max-bytes", type=click.IntRange(min=1), help="Show only the first N bytes.")
@click.option("--width", type=click.IntRange(min=10), default=100, show_default=True,
              help="Wrap width of the --entropies view.")
@click.option("--json", "as_json", is_flag=True, help="Print the document, its patches and location as JSON.")
def show(path, index, doc_id, show_entropies, color, max_bytes, width, as_json):
    """Draw one document with its patches.

    In a terminal patches get alternating colours; otherwise they are separated by `|`
    (a literal `|` or `\\` in the text is written `\\|`, `\\\\`). Bytes that are not valid
    UTF-8, and characters cut by a patch boundary, are shown escaped as \\xNN.

    \b
    Example:
      bltdata show shards/ --row 12
      bltdata show shards/ --doc "wiki:42" --entropies | less -R
    """
    from bltdata.inspect.locate import read_document
    from bltdata.inspect.render import render

    location = _pick(path, index, doc_id)
    columns = ["bytes", "patch_lengths"] + (["entropies"] if show_entropies or as_json else [])
    with _errors():
        row = read_document(location, columns)
    if show_entropies and row.get("entropies") is None:
        raise click.ClickException(f"{location.shard}: no stored entropies (patch with --store-entropies)")
    if as_json:
        return _show_json(location, row)
    data, lengths = _truncate(row["bytes"], row["patch_lengths"], max_bytes)
    color = sys.stdout.isatty() if color is None else color
    click.echo(_show_header(location, row, len(data)), color=color)
    body = render(data, lengths, color=color, entropies=row.get("entropies") if show_entropies else None,
                  threshold=_threshold_of(location), width=width)
    click.echo(body, nl=not body.endswith("\n"), color=color)


def _show_header(location, row, shown: int) -> str:
    n, p = len(row["bytes"]), len(row["patch_lengths"])
    mean = f"{n / p:.2f}" if p else "-"
    more = f" (showing the first {shown})" if shown < n else ""
    return (f"# doc_id {location.doc_id!r}  source {location.source}  index {location.index}\n"
            f"# {location.shard} row group {location.row_group} row {location.row}\n"
            f"# {n} bytes{more}, {p} patches, {mean} bytes/patch")


def _show_json(location, row) -> None:
    data, lengths = row["bytes"], row["patch_lengths"]
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    patches = [data[a:b].decode("utf-8", errors="backslashreplace") for a, b in zip(starts, starts[1:])]
    _echo_json({"location": location.to_dict(), "num_bytes": len(data),
                "text": data.decode("utf-8", errors="backslashreplace"),
                "valid_utf8": _is_utf8(data), "patch_lengths": lengths, "patches": patches,
                "entropies": row.get("entropies")})


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# ----------------------------------------------------------------------------- stats


@click.command("stats")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print every figure as JSON.")
@click.option("--by-source", is_flag=True, help="Add a table per input source.")
@click.option("--sample-shards", type=click.IntRange(min=1),
              help="Use only N shards, evenly spaced in manifest order (for very large corpora).")
def stats(path, as_json, by_source, sample_shards):
    """Distributions of bytes/doc, patches/doc, bytes/patch and entropies.

    Mean, std, quantiles (p1..p99) and a histogram of each, computed with polars over all
    shards (only the needed columns are read). The entropy distribution covers every
    stored value H[0..n] when the shards store entropies.

    \b
    Example:
      bltdata stats shards/
      bltdata stats shards/ --by-source --json > stats.json
    """
    extras.require("inspect", "polars")
    from bltdata.inspect.locate import list_shards
    from bltdata.inspect.stats import compute_stats, format_stats

    with _errors():
        shards = list_shards(path)
        if sample_shards and sample_shards < len(shards):
            step = len(shards) / sample_shards
            shards = [shards[int(i * step)] for i in range(sample_shards)]
        result = compute_stats(shards, by_source=by_source)
    if as_json:
        return _echo_json(result)
    click.echo(format_stats(result), nl=False)


# ----------------------------------------------------------------------------- plot


@click.command("plot")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="PNG file to write.")
@click.option("--row", "index", type=int, help="Plot the entropies of this document (global index); "
              "one of --row, --doc, --hist is required.")
@click.option("--doc", "doc_id", help="Plot the entropies of the document with this doc_id.")
@click.option("--hist", is_flag=True, help="Plot the patch-length histogram of the whole directory instead.")
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True,
              help="First byte of the window shown.")
@click.option("--max-bytes", type=click.IntRange(min=1), default=120, show_default=True,
              help="Bytes in the window shown.")
@click.option("--threshold", type=float, help="Threshold line to draw (default: the shard's θ in entropy mode).")
@click.option("--max-length", type=click.IntRange(min=1), help="--hist: end the x axis at N (lengths ≥ N share the last bar).  [default: "
              "just past the 99.5th percentile of the lengths]")
def plot(path, output, index, doc_id, hist, start, max_bytes, threshold, max_length):
    """Write a PNG: entropy per byte with θ and patch boundaries, or a patch-length histogram.

    The per-document figure is the one the BLT paper uses to explain entropy patching:
    the entropy of each byte, the global threshold as a dashed line, and a vertical line
    before every byte that starts a patch.

    \b
    Example:
      bltdata plot shards/ --row 3 -o doc3.png
      bltdata plot shards/ --hist --max-length 32 -o patch_lengths.png
    """
    extras.require("inspect")
    if hist and (index is not None or doc_id is not None):
        raise click.UsageError("--hist plots the whole directory; drop --row/--doc")
    if hist:
        return _plot_hist(path, output, max_length)
    if index is None and doc_id is None:
        raise click.UsageError("say what to plot: --row N or --doc ID (one document's entropies), "
                               "or --hist (the patch-length histogram)")
    from bltdata.inspect.locate import read_document
    from bltdata.inspect.plot import plot_entropies

    location = _pick(path, index, doc_id)
    with _errors():
        row = read_document(location, ["bytes", "patch_lengths", "entropies"])
        if row.get("entropies") is None:
            raise ValueError(f"{location.shard}: no stored entropies to plot (use --hist, "
                             f"or patch with --store-entropies)")
        theta = threshold if threshold is not None else _threshold_of(location)
        title = f"{location.doc_id} ({location.source}), {len(row['patch_lengths'])} patches"
        plot_entropies(output, row["bytes"], row["entropies"], row["patch_lengths"], threshold=theta,
                       start=start, max_bytes=max_bytes, title=title)
    click.echo(f"wrote {output}")


def _plot_hist(path, output, max_length):
    from bltdata.inspect.locate import list_shards
    from bltdata.inspect.plot import plot_patch_histogram
    from bltdata.inspect.stats import patch_length_counts

    with _errors():
        counts = patch_length_counts(list_shards(path))
        plot_patch_histogram(output, counts, max_length=max_length, title=f"patch lengths in {path}")
    click.echo(f"wrote {output}")


# ----------------------------------------------------------------------------- locate / head


@click.command("locate")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.argument("index", type=int, required=False)
@click.option("--doc", "doc_id", help="Find the document with this doc_id instead of an index.")
@click.option("--json", "as_json", is_flag=True, help="Print the location as JSON.")
def locate_cmd(path, index, doc_id, as_json):
    """Global document index (or doc id) → shard, row group, row, doc_id, source.

    The index is 0-based over the shards in manifest order, row by row — the order the
    data loader's document indices and `show --row` use.

    \b
    Example:
      bltdata locate shards/ 123456
      bltdata locate shards/ --doc "wiki:42" --json
    """
    if (index is None) == (doc_id is None):
        raise click.UsageError("give an INDEX or --doc ID (one of them)")
    location = _pick(path, index, doc_id, index_hint="INDEX")
    if as_json:
        return _echo_json(location.to_dict())
    for key, value in location.to_dict().items():
        click.echo(f"{key:<13}{value}")


@click.command("head")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("-n", "count", type=click.IntRange(min=0), default=10, show_default=True, help="Documents to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON (without the bytes).")
def head_cmd(path, count, as_json):
    """List the first documents: index, doc_id, source, bytes, patches and a preview.

    \b
    Example:
      bltdata head shards/ -n 5
    """
    from bltdata.inspect.locate import head
    from bltdata.inspect.render import render_plain

    with _errors():
        rows = head(path, count, ["doc_id", "source", "num_bytes", "num_patches", "bytes", "patch_lengths"])
    for row in rows:
        data, lengths = _truncate(row.pop("bytes"), row.pop("patch_lengths"), 60)
        row["preview"] = render_plain(data, lengths).replace("\n", "\\n")
    if as_json:
        return _echo_json(rows)
    click.echo(f"{'index':>8}  {'doc_id':<24} {'source':<28} {'bytes':>9} {'patches':>8}  preview")
    for r in rows:
        click.echo(f"{r['index']:>8}  {r['doc_id'][:24]:<24} {r['source'][-28:]:<28} {r['num_bytes']:>9} "
                   f"{r['num_patches']:>8}  {r['preview']}")


# ----------------------------------------------------------------------------- repatch


def _patcher_options(defaults: bool):
    """--mode/--threshold/... shared by repatch and import-blt-arrow."""
    options = [
        click.option("--mode", type=click.Choice(MODES), default="entropy" if defaults else None,
                     show_default=defaults, help="Patching mode (docs/design.md §3)."),
        click.option("--threshold", type=float, help="Global threshold θ in nats (entropy / monotonic)."),
        click.option("--target-patch-size", type=click.FloatRange(min=1.0, min_open=False),
                     help="Choose θ so the mean patch length on a sample is about S bytes."),
        click.option("--threshold-add", type=float, help="Extra relative threshold (entropy mode)."),
        click.option("--max-patch-length", type=click.IntRange(min=1), help="Split longer patches."),
        click.option("--patch-size", type=click.IntRange(min=1), help="Patch size of static mode."),
        click.option("--sample-bytes", type=click.IntRange(min=1), default=16 << 20, show_default=True,
                     help="Bytes sampled (first documents in order) for --target-patch-size."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f
    return decorate


def _overrides(mode, threshold, threshold_add, max_patch_length, patch_size) -> dict:
    given = {"mode": mode, "threshold": threshold, "threshold_add": threshold_add,
             "max_patch_length": max_patch_length, "patch_size": patch_size}
    return {k: v for k, v in given.items() if v is not None}


@click.command("repatch")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="New shard directory (must not exist or be empty).")
@_patcher_options(defaults=True)
@click.option("--drop-entropies", is_flag=True, help="Do not carry the stored entropies over.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary as JSON.")
def repatch(path, output, mode, threshold, target_patch_size, threshold_add, max_patch_length, patch_size,
            sample_bytes, drop_entropies, as_json):
    """New patch boundaries from stored entropies — no model needed.

    Writes a new shard directory with the same shard names, documents and order, the new
    boundaries, a new manifest, and the same guarantees as the pipeline (atomic files,
    manifest last, deterministic). Modes entropy/monotonic need shards written with
    --store-entropies and one of --threshold / --target-patch-size.

    \b
    Example:
      bltdata repatch shards/ -o shards_t2/ --threshold 2.0
      bltdata repatch shards/ -o shards_p6/ --target-patch-size 6 --max-patch-length 16
    """
    extras.require("patching")
    from bltdata.convert.repatch import repatch_directory
    from bltdata.patch_config import PatcherConfig

    if threshold is not None and target_patch_size is not None:
        raise click.UsageError("give --threshold or --target-patch-size, not both")
    if mode in ("entropy", "monotonic") and threshold is None and target_patch_size is None:
        raise click.UsageError(f"mode {mode} needs --threshold T or --target-patch-size S")
    with _errors():
        config = PatcherConfig.from_dict(_overrides(mode, threshold, threshold_add, max_patch_length, patch_size))
        result = repatch_directory(path, output, config, target_patch_size=target_patch_size,
                                   sample_bytes=sample_bytes, keep_entropies=not drop_entropies)
    summary = result.to_dict()
    if as_json:
        return _echo_json(summary)
    mean = summary["bytes"] / summary["patches"] if summary["patches"] else 0.0
    click.echo(f"wrote {summary['shards']} shards to {output}: {summary['documents']} documents, "
               f"{summary['patches']} patches ({mean:.3f} bytes/patch)")
    click.echo("patcher " + json.dumps(summary["patcher"], indent=2, ensure_ascii=False, default=str))


# ----------------------------------------------------------------------------- export / import


def _report_problems(kind: str, records: list[dict], allowed: bool, flag: str) -> None:
    """Name skipped/rejected documents on stderr; exit 1 unless the flag allows them."""
    if not records:
        return
    ids = ", ".join(str(r.get("doc_id")) for r in records[:MAX_IDS_SHOWN])
    more = f" and {len(records) - MAX_IDS_SHOWN} more" if len(records) > MAX_IDS_SHOWN else ""
    click.echo(f"{kind} {len(records)} documents: {ids}{more}", err=True)
    click.echo(f"  first reason: {records[0].get('reason')}", err=True)
    if not allowed:
        click.echo(f"  (exit status 1; pass {flag} to accept this)", err=True)
        click.get_current_context().exit(1)


@click.command("export")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["blt-arrow"]), default="blt-arrow", show_default=True,
              help="Output layout: the reference BLT's Arrow IPC files.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Directory to write (must not exist or be empty).")
@click.option("--name", default="bltdata", show_default=True,
              help="Dataset name in the file names <name>.chunk.<k>.jsonl.shard_<i>.arrow.")
@click.option("--chunks", type=click.IntRange(min=1), default=1, show_default=True,
              help="Spread the shards over K chunks (shard i → chunk i mod K).")
@click.option("--reference-columns-only", is_flag=True,
              help="Write only sample_id/text/entropies (drops the source and boundary columns that "
                   "make import exact).")
@click.option("--allow-skipped", is_flag=True, help="Exit 0 even if documents had to be skipped.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary (with every skipped doc id) as JSON.")
def export(path, fmt, output, name, chunks, reference_columns_only, allow_skipped, as_json):
    """Export shards to the reference BLT's Arrow layout so its trainer can read them.

    One Arrow IPC file per shard (`sample_id`, `text`, `entropies` with one float16 per
    token BOS..EOS: H[0..n] then 0) plus the `.complete` markers the reference looks for.
    Documents that are not valid UTF-8 cannot be stored as text: they are skipped and
    listed (exit status 1 unless --allow-skipped). Needs stored entropies.

    \b
    Example:
      bltdata export shards/ --format blt-arrow -o preprocess/mydata/entropy_model/ --name mydata
    """
    extras.require("patching")
    from bltdata.convert.blt_arrow import export_blt_arrow

    with _errors():
        result = export_blt_arrow(path, output, name=name, chunks=chunks,
                                  reference_columns_only=reference_columns_only)
    if as_json:
        _echo_json(result.to_dict())
    else:
        click.echo(f"wrote {len(result.files)} files, {result.documents} documents to {output}")
    _report_problems("skipped (not valid UTF-8)", result.skipped, allow_skipped, "--allow-skipped")


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _expand_arrow_inputs(inputs: tuple[Path, ...]) -> list[Path]:
    files = []
    for p in inputs:
        if p.is_dir():
            found = sorted(p.glob("*.arrow"), key=_natural_key)
            if not found:
                raise click.BadParameter(f"{p}: no *.arrow files", param_hint="FILES")
            files += found
        else:
            files.append(p)
    return files


@click.command("import-blt-arrow")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="New shard directory (must not exist or be empty).")
@_patcher_options(defaults=False)
@click.option("--entropy-model-name", help="Name of the entropy model that made the entropies (metadata).")
@click.option("--allow-rejected", is_flag=True, help="Exit 0 even if rows were rejected.")
@click.option("--json", "as_json", is_flag=True, help="Print a summary (with every rejected row) as JSON.")
def import_blt_arrow_cmd(files, output, mode, threshold, target_patch_size, threshold_add, max_patch_length,
                         patch_size, sample_bytes, entropy_model_name, allow_rejected, as_json):
    """Import reference BLT Arrow files (sample_id, text, entropies) as bltdata shards.

    One shard per input file (directories: their *.arrow files in shard order). Patches
    come from the files' entropies: files exported by bltdata keep their exact boundaries
    unless a patcher option is given; otherwise the recorded patcher (or entropy mode with
    the default θ) is applied, with any options given. Rows whose entropies do not match
    their text (n + 2 values per document) are rejected into rejected/ (exit status 1
    unless --allow-rejected).

    \b
    Example:
      bltdata import-blt-arrow preprocess/mydata/entropy_model/ -o shards/ --threshold 1.34
    """
    extras.require("patching")
    from bltdata.convert.blt_arrow import ImportOptions, import_blt_arrow

    if threshold is not None and target_patch_size is not None:
        raise click.UsageError("give --threshold or --target-patch-size, not both")
    model = {"name": entropy_model_name, "preset": None, "sha256": None} if entropy_model_name else None
    options = ImportOptions(overrides=_overrides(mode, threshold, threshold_add, max_patch_length, patch_size),
                            target_patch_size=target_patch_size, sample_bytes=sample_bytes, entropy_model=model)
    with _errors():
        result = import_blt_arrow(_expand_arrow_inputs(files), output, options)
    summary = result.to_dict()
    if as_json:
        _echo_json(summary)
    else:
        click.echo(f"wrote {summary['shards']} shards, {summary['documents']} documents, "
                   f"{summary['patches']} patches to {output}; patcher {summary['patcher']}")
    _report_problems("rejected", result.rejected, allow_rejected, "--allow-rejected")


COMMANDS = [show, stats, plot, locate_cmd, head_cmd, repatch, export, import_blt_arrow_cmd]
